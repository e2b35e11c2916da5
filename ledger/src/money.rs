// Money is kept as whole minor units (cents, yen, fils) in an i64 so that no
// balance is ever rounded by floating point, and client input is parsed once
// at the edge into types that cannot hold an invalid amount or currency.

use std::fmt;
use std::ops::Neg;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::LedgerError;

/// Largest amount, in major units, that a client may ask to move at once.
pub const MAX_MAJOR_UNITS: i64 = 1_000_000_000_000;

/// Largest single deposit, in major units of the deposit's currency.
pub const DEPOSIT_LIMIT_MAJOR: i64 = 1_000_000;

// ISO 4217 codes we settle in, with their minor-unit exponent. A currency that
// is not here cannot be constructed, so `minor_digits` never has to guess.
const CURRENCIES: &[([u8; 3], u32)] = &[
    (*b"USD", 2),
    (*b"EUR", 2),
    (*b"GBP", 2),
    (*b"JPY", 0),
    (*b"CHF", 2),
    (*b"CAD", 2),
    (*b"AUD", 2),
    (*b"NZD", 2),
    (*b"SEK", 2),
    (*b"NOK", 2),
    (*b"DKK", 2),
    (*b"PLN", 2),
    (*b"CZK", 2),
    (*b"HUF", 2),
    (*b"INR", 2),
    (*b"CNY", 2),
    (*b"HKD", 2),
    (*b"SGD", 2),
    (*b"ZAR", 2),
    (*b"MXN", 2),
    (*b"BRL", 2),
    (*b"KRW", 0),
    (*b"ISK", 0),
    (*b"BHD", 3),
    (*b"KWD", 3),
    (*b"JOD", 3),
    (*b"OMR", 3),
    (*b"TND", 3),
];

fn bad(message: impl Into<String>) -> LedgerError {
    LedgerError::BadInput(message.into())
}

/// An ISO 4217 currency from the supported table, stored as its uppercase code.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a three-letter code, case-insensitively.
    pub fn parse(input: &str) -> Result<Currency, LedgerError> {
        let bytes = input.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_alphabetic) {
            return Err(bad("currency must be a 3-letter ISO 4217 code"));
        }
        let code = [
            bytes[0].to_ascii_uppercase(),
            bytes[1].to_ascii_uppercase(),
            bytes[2].to_ascii_uppercase(),
        ];
        if CURRENCIES.iter().any(|(known, _)| *known == code) {
            Ok(Currency(code))
        } else {
            // Safe to echo: it is exactly three ASCII letters.
            let shown = std::str::from_utf8(&code).unwrap_or("???");
            Err(bad(format!("unknown currency {shown}")))
        }
    }

    pub fn code(&self) -> &str {
        // Only built from ASCII letters, so this cannot fail.
        std::str::from_utf8(&self.0).expect("currency code is ASCII")
    }

    /// Number of decimal places in the currency's minor unit (USD 2, JPY 0, KWD 3).
    pub fn minor_digits(&self) -> u32 {
        CURRENCIES
            .iter()
            .find(|(code, _)| *code == self.0)
            .map(|(_, digits)| *digits)
            .expect("Currency is only constructed from the table")
    }

    /// Minor units per major unit: 100 for USD, 1 for JPY, 1000 for KWD.
    fn minor_per_major(&self) -> i64 {
        10_i64.pow(self.minor_digits())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// A signed number of minor units, without its currency. Balances of system
/// accounts may be zero or negative; amounts that clients send are always
/// positive because they go through [`Amount::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount {
    minor: i64,
}

impl Amount {
    pub const ZERO: Amount = Amount { minor: 0 };

    pub const fn from_minor(minor: i64) -> Amount {
        Amount { minor }
    }

    pub const fn minor(self) -> i64 {
        self.minor
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.minor.checked_add(other.minor).map(Amount::from_minor)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.minor.checked_sub(other.minor).map(Amount::from_minor)
    }

    pub fn checked_neg(self) -> Option<Amount> {
        self.minor.checked_neg().map(Amount::from_minor)
    }

    /// Parses an amount of money a client wants to move: a plain positive
    /// decimal with no more decimals than `currency` has, at most
    /// [`MAX_MAJOR_UNITS`]. Never panics and never uses floats.
    pub fn parse(input: &str, currency: Currency) -> Result<Amount, LedgerError> {
        // Messages never echo the input: it may be arbitrarily long.
        if input.is_empty() {
            return Err(bad("amount is required"));
        }
        if input.chars().any(char::is_whitespace) {
            return Err(bad("amount must not contain spaces"));
        }
        if input.starts_with('-') {
            return Err(bad("amount must not be negative"));
        }
        if input.starts_with('+') {
            return Err(bad("amount must be written without a '+' sign"));
        }

        let (whole, fraction) = match input.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (input, None),
        };
        let is_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !is_digits(whole) || !fraction.is_none_or(is_digits) {
            return Err(bad(
                "amount must contain only digits and an optional decimal point, like 123.45",
            ));
        }
        if whole.is_empty() {
            return Err(bad("amount must have digits before the decimal point"));
        }
        let fraction = fraction.unwrap_or("");
        if input.ends_with('.') {
            return Err(bad("amount must have digits after the decimal point"));
        }

        let digits = currency.minor_digits();
        if fraction.len() > digits as usize {
            return Err(bad(match digits {
                0 => format!("{currency} does not allow decimal places"),
                1 => format!("{currency} allows at most 1 decimal place"),
                n => format!("{currency} allows at most {n} decimal places"),
            }));
        }

        let too_large = || {
            bad(format!(
                "amount must be at most {MAX_MAJOR_UNITS} {currency}"
            ))
        };
        // Accumulate whole digits, then append the fraction right-padded with
        // zeros to exactly `digits` places: "12.3" USD -> 1230.
        let padded_fraction = fraction
            .bytes()
            .chain(std::iter::repeat_n(b'0', digits as usize - fraction.len()));
        let mut minor: i64 = 0;
        for b in whole.bytes().chain(padded_fraction) {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or_else(too_large)?;
        }

        let max_minor = MAX_MAJOR_UNITS
            .checked_mul(currency.minor_per_major())
            .ok_or_else(too_large)?;
        if minor > max_minor {
            return Err(too_large());
        }
        if minor == 0 {
            return Err(bad("amount must be greater than zero"));
        }
        Ok(Amount { minor })
    }

    /// Formats with exactly the currency's number of decimals ("800000.00",
    /// "5" for JPY, "1.234" for KWD, "-12.30").
    pub fn format(&self, currency: Currency) -> String {
        let digits = currency.minor_digits();
        if digits == 0 {
            return self.minor.to_string();
        }
        let scale = 10_u64.pow(digits);
        // unsigned_abs so that i64::MIN formats instead of overflowing.
        let magnitude = self.minor.unsigned_abs();
        let sign = if self.minor < 0 { "-" } else { "" };
        format!(
            "{sign}{}.{:0width$}",
            magnitude / scale,
            magnitude % scale,
            width = digits as usize
        )
    }
}

impl Neg for Amount {
    type Output = Amount;

    fn neg(self) -> Amount {
        // Panic rather than wrap silently (release builds would wrap).
        self.checked_neg().expect("amount negation overflowed")
    }
}

/// Rejects a single deposit above [`DEPOSIT_LIMIT_MAJOR`] major units.
pub fn check_deposit_limit(amount: Amount, currency: Currency) -> Result<(), LedgerError> {
    let limit_minor = DEPOSIT_LIMIT_MAJOR * currency.minor_per_major();
    if amount.minor() > limit_minor {
        return Err(LedgerError::LimitExceeded(format!(
            "a single deposit is at most {DEPOSIT_LIMIT_MAJOR} {currency}"
        )));
    }
    Ok(())
}

/// An amount together with its currency, mostly for display ("12.30 USD").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    pub amount: Amount,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: Amount, currency: Currency) -> Money {
        Money { amount, currency }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount.format(self.currency), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    fn usd() -> Currency {
        cur("USD")
    }

    // LedgerError has no PartialEq, so tests compare variant and message.
    fn bad_input<T: std::fmt::Debug>(result: Result<T, LedgerError>) -> String {
        match result {
            Err(LedgerError::BadInput(message)) => message,
            other => panic!("expected BadInput, got {other:?}"),
        }
    }

    fn limit_exceeded<T: std::fmt::Debug>(result: Result<T, LedgerError>) -> String {
        match result {
            Err(LedgerError::LimitExceeded(message)) => message,
            other => panic!("expected LimitExceeded, got {other:?}"),
        }
    }

    // --- Currency ---

    #[test]
    fn parses_currency_codes_case_insensitively() {
        assert_eq!(cur("usd"), cur("USD"));
        assert_eq!(cur("uSd").code(), "USD");
        assert_eq!(cur("eur").to_string(), "EUR");
    }

    #[test]
    fn knows_the_minor_digits_of_every_listed_currency() {
        assert_eq!(cur("USD").minor_digits(), 2);
        assert_eq!(cur("JPY").minor_digits(), 0);
        assert_eq!(cur("KRW").minor_digits(), 0);
        assert_eq!(cur("ISK").minor_digits(), 0);
        assert_eq!(cur("KWD").minor_digits(), 3);
        assert_eq!(cur("BHD").minor_digits(), 3);
        for (code, digits) in CURRENCIES {
            let code = std::str::from_utf8(code).unwrap();
            assert_eq!(cur(code).minor_digits(), *digits, "{code}");
        }
    }

    #[test]
    fn every_required_currency_is_in_the_table() {
        for code in [
            "USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "NZD", "SEK", "NOK", "DKK", "PLN",
            "CZK", "HUF", "INR", "CNY", "HKD", "SGD", "ZAR", "MXN", "BRL", "KRW", "ISK", "BHD",
            "KWD", "JOD", "OMR", "TND",
        ] {
            assert!(Currency::parse(code).is_ok(), "{code}");
        }
    }

    #[test]
    fn rejects_unknown_currencies_naming_the_code() {
        assert_eq!(bad_input(Currency::parse("xyz")), "unknown currency XYZ");
    }

    #[test]
    fn rejects_currency_codes_that_are_not_three_ascii_letters() {
        for input in ["", "US", "USDD", "US1", " USD", "USD ", "U$D", "ÜSD", "ÜS"] {
            assert_eq!(
                bad_input(Currency::parse(input)),
                "currency must be a 3-letter ISO 4217 code",
                "{input:?}"
            );
        }
    }

    #[test]
    fn serializes_currency_as_its_code_string() {
        assert_eq!(serde_json::to_string(&cur("gbp")).unwrap(), "\"GBP\"");
        let back: Currency = serde_json::from_str("\"jpy\"").unwrap();
        assert_eq!(back, cur("JPY"));
    }

    #[test]
    fn refuses_to_deserialize_an_unknown_currency() {
        assert!(serde_json::from_str::<Currency>("\"ABC\"").is_err());
        assert!(serde_json::from_str::<Currency>("42").is_err());
    }

    // --- Amount::parse: accepted forms ---

    #[test]
    fn parses_whole_and_decimal_amounts_into_minor_units() {
        assert_eq!(Amount::parse("200000", usd()).unwrap().minor(), 20_000_000);
        assert_eq!(
            Amount::parse("200000.5", usd()).unwrap().minor(),
            20_000_050
        );
        assert_eq!(
            Amount::parse("200000.50", usd()).unwrap().minor(),
            20_000_050
        );
        assert_eq!(Amount::parse("0.01", usd()).unwrap().minor(), 1);
    }

    #[test]
    fn accepts_leading_zeros() {
        assert_eq!(Amount::parse("007.5", usd()).unwrap().minor(), 750);
        let many_zeros = format!("{}1", "0".repeat(200));
        assert_eq!(Amount::parse(&many_zeros, usd()).unwrap().minor(), 100);
    }

    #[test]
    fn scales_by_the_currency_exponent() {
        assert_eq!(Amount::parse("5", cur("JPY")).unwrap().minor(), 5);
        assert_eq!(Amount::parse("1.5", cur("KWD")).unwrap().minor(), 1500);
        assert_eq!(Amount::parse("1.234", cur("KWD")).unwrap().minor(), 1234);
    }

    // --- Amount::parse: rejected forms ---

    #[test]
    fn rejects_empty_input() {
        assert_eq!(bad_input(Amount::parse("", usd())), "amount is required");
    }

    #[test]
    fn rejects_whitespace_anywhere() {
        for input in [" ", " 5", "5 ", "1 000", "5\n", "\t5", "5\u{00A0}"] {
            assert_eq!(
                bad_input(Amount::parse(input, usd())),
                "amount must not contain spaces",
                "{input:?}"
            );
        }
    }

    #[test]
    fn rejects_negative_amounts() {
        assert_eq!(
            bad_input(Amount::parse("-5", usd())),
            "amount must not be negative"
        );
        assert_eq!(
            bad_input(Amount::parse("-0", usd())),
            "amount must not be negative"
        );
    }

    #[test]
    fn rejects_a_leading_plus_sign() {
        assert_eq!(
            bad_input(Amount::parse("+5", usd())),
            "amount must be written without a '+' sign"
        );
    }

    #[test]
    fn rejects_zero() {
        for input in ["0", "0.00", "000", "0.0"] {
            assert_eq!(
                bad_input(Amount::parse(input, usd())),
                "amount must be greater than zero",
                "{input:?}"
            );
        }
    }

    #[test]
    fn rejects_more_decimals_than_the_currency_allows() {
        assert_eq!(
            bad_input(Amount::parse("1.001", usd())),
            "USD allows at most 2 decimal places"
        );
        assert_eq!(
            bad_input(Amount::parse("1.500", usd())),
            "USD allows at most 2 decimal places"
        );
        assert_eq!(
            bad_input(Amount::parse("1.0001", cur("KWD"))),
            "KWD allows at most 3 decimal places"
        );
        assert_eq!(
            bad_input(Amount::parse("5.0", cur("JPY"))),
            "JPY does not allow decimal places"
        );
    }

    #[test]
    fn rejects_exponents_and_other_non_numeric_input() {
        for input in [
            "1e5", "1E5", "1.5e2", "abc", "1,000", "12a", "0x10", "1.2.3", "NaN", "inf", "١٢٣",
            "5$", "--5", "5-",
        ] {
            let message = bad_input(Amount::parse(input, usd()));
            assert!(
                message.starts_with("amount must"),
                "{input:?} gave {message:?}"
            );
        }
        assert_eq!(
            bad_input(Amount::parse("1e5", usd())),
            "amount must contain only digits and an optional decimal point, like 123.45"
        );
    }

    #[test]
    fn rejects_a_leading_or_trailing_decimal_point() {
        assert_eq!(
            bad_input(Amount::parse(".5", usd())),
            "amount must have digits before the decimal point"
        );
        assert_eq!(
            bad_input(Amount::parse("5.", usd())),
            "amount must have digits after the decimal point"
        );
        assert!(Amount::parse(".", usd()).is_err());
    }

    #[test]
    fn accepts_exactly_the_maximum_and_rejects_one_minor_unit_more() {
        assert_eq!(
            Amount::parse("1000000000000.00", usd()).unwrap().minor(),
            100_000_000_000_000
        );
        assert_eq!(
            bad_input(Amount::parse("1000000000000.01", usd())),
            "amount must be at most 1000000000000 USD"
        );
        assert!(Amount::parse("1000000000000", cur("KWD")).is_ok());
        assert!(Amount::parse("1000000000000.001", cur("KWD")).is_err());
        assert!(Amount::parse("1000000000001", cur("JPY")).is_err());
    }

    #[test]
    fn rejects_huge_inputs_without_panicking() {
        for input in [
            "99999999999999999999999",
            "9223372036854775807",
            "9223372036854775808",
            "92233720368547758.07",
            &"9".repeat(10_000),
        ] {
            assert_eq!(
                bad_input(Amount::parse(input, usd())),
                "amount must be at most 1000000000000 USD"
            );
        }
    }

    // --- Amount::format ---

    #[test]
    fn formats_with_exactly_the_currency_minor_digits() {
        assert_eq!(Amount::from_minor(80_000_000).format(usd()), "800000.00");
        assert_eq!(Amount::from_minor(5).format(cur("JPY")), "5");
        assert_eq!(Amount::from_minor(1234).format(cur("KWD")), "1.234");
        assert_eq!(Amount::from_minor(5).format(cur("KWD")), "0.005");
        assert_eq!(Amount::from_minor(-1230).format(usd()), "-12.30");
        assert_eq!(Amount::from_minor(-5).format(usd()), "-0.05");
        assert_eq!(Amount::from_minor(-5).format(cur("JPY")), "-5");
        assert_eq!(Amount::ZERO.format(usd()), "0.00");
    }

    #[test]
    fn formats_the_extreme_values_without_overflow() {
        assert_eq!(
            Amount::from_minor(i64::MIN).format(usd()),
            "-92233720368547758.08"
        );
        assert_eq!(
            Amount::from_minor(i64::MAX).format(usd()),
            "92233720368547758.07"
        );
    }

    #[test]
    fn formatting_round_trips_through_parse_for_positive_amounts() {
        for code in ["USD", "JPY", "KWD"] {
            let currency = cur(code);
            let max = MAX_MAJOR_UNITS * 10_i64.pow(currency.minor_digits());
            for minor in [
                1,
                5,
                10,
                99,
                100,
                101,
                1234,
                80_000_000,
                999_999_999,
                max - 1,
                max,
            ] {
                let amount = Amount::from_minor(minor);
                let text = amount.format(currency);
                assert_eq!(
                    Amount::parse(&text, currency).ok(),
                    Some(amount),
                    "{code} {text}"
                );
            }
        }
    }

    // --- Amount arithmetic ---

    #[test]
    fn checked_arithmetic_reports_overflow_instead_of_wrapping() {
        let one = Amount::from_minor(1);
        assert_eq!(one.checked_add(one), Some(Amount::from_minor(2)));
        assert_eq!(Amount::ZERO.checked_sub(one), Some(Amount::from_minor(-1)));
        assert_eq!(Amount::from_minor(i64::MAX).checked_add(one), None);
        assert_eq!(Amount::from_minor(i64::MIN).checked_sub(one), None);
        assert_eq!(Amount::from_minor(i64::MIN).checked_neg(), None);
    }

    #[test]
    fn negation_flips_the_sign() {
        assert_eq!(-Amount::from_minor(1230), Amount::from_minor(-1230));
        assert_eq!(-Amount::ZERO, Amount::ZERO);
    }

    #[test]
    fn orders_amounts_by_value() {
        assert!(Amount::from_minor(-1) < Amount::ZERO);
        assert!(Amount::from_minor(100) > Amount::from_minor(99));
    }

    // --- deposit limit ---

    #[test]
    fn allows_a_deposit_of_exactly_the_limit() {
        let limit = Amount::parse("1000000.00", usd()).unwrap();
        assert!(check_deposit_limit(limit, usd()).is_ok());
        let yen = Amount::parse("1000000", cur("JPY")).unwrap();
        assert!(check_deposit_limit(yen, cur("JPY")).is_ok());
    }

    #[test]
    fn rejects_a_deposit_above_the_limit_in_the_deposit_currency() {
        let over = Amount::parse("1000000.01", usd()).unwrap();
        assert_eq!(
            limit_exceeded(check_deposit_limit(over, usd())),
            "a single deposit is at most 1000000 USD"
        );
        let over_kwd = Amount::parse("1000000.001", cur("KWD")).unwrap();
        assert_eq!(
            limit_exceeded(check_deposit_limit(over_kwd, cur("KWD"))),
            "a single deposit is at most 1000000 KWD"
        );
    }

    // --- Money ---

    #[test]
    fn displays_money_as_amount_then_code() {
        assert_eq!(
            Money::new(Amount::from_minor(1230), usd()).to_string(),
            "12.30 USD"
        );
        assert_eq!(
            Money::new(Amount::from_minor(5), cur("JPY")).to_string(),
            "5 JPY"
        );
        assert_eq!(
            Money::new(Amount::from_minor(-1234), cur("KWD")).to_string(),
            "-1.234 KWD"
        );
    }
}
