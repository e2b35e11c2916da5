// Account numbers are typed by people, so they carry a Luhn check digit: a
// mistyped digit or swapped neighbours is caught before money goes to the
// wrong account instead of after.

use std::fmt;

use crate::error::LedgerError;

/// Total digits in an account number, check digit included.
const LEN: usize = 12;

const WRONG_LENGTH: &str = "account number must be 12 digits";
const WRONG_CHECK_DIGIT: &str = "account number check digit is wrong; please re-check the number";

/// Twelve ASCII digits whose last digit is the Luhn check digit of the first eleven.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountNumber(String);

impl AccountNumber {
    /// Accepts "123456789012", "1234 5678 9012" or "1234-5678-9012" (single
    /// spaces or dashes between digits; surrounding whitespace is trimmed).
    pub fn parse(input: &str) -> Result<AccountNumber, LedgerError> {
        let mut digits = String::with_capacity(LEN);
        let mut previous_was_digit = false;
        let mut chars = input.trim().chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() {
                if digits.len() == LEN {
                    return Err(LedgerError::BadInput(WRONG_LENGTH.into()));
                }
                digits.push(c);
                previous_was_digit = true;
            } else if (c == ' ' || c == '-')
                && previous_was_digit
                && chars.peek().is_some_and(char::is_ascii_digit)
            {
                previous_was_digit = false;
            } else {
                return Err(LedgerError::BadInput(WRONG_LENGTH.into()));
            }
        }
        if digits.len() != LEN {
            return Err(LedgerError::BadInput(WRONG_LENGTH.into()));
        }

        let values: Vec<u8> = digits.bytes().map(|b| b - b'0').collect();
        if luhn_check_digit(&values[..LEN - 1]) != values[LEN - 1] {
            return Err(LedgerError::BadInput(WRONG_CHECK_DIGIT.into()));
        }
        Ok(AccountNumber(digits))
    }

    /// Draws eleven random digits (the first nonzero, so the number never
    /// looks truncated) and appends their check digit.
    pub fn generate(rng: &mut impl rand::Rng) -> AccountNumber {
        let mut values = [0_u8; LEN];
        values[0] = rng.random_range(1..=9);
        for value in &mut values[1..LEN - 1] {
            *value = rng.random_range(0..=9);
        }
        values[LEN - 1] = luhn_check_digit(&values[..LEN - 1]);
        AccountNumber(values.iter().map(|v| char::from(b'0' + v)).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Luhn check digit (0..=9) for `payload`, given as digit values 0..=9 (not
/// ASCII), most significant first.
pub fn luhn_check_digit(payload: &[u8]) -> u8 {
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            debug_assert!(d <= 9, "luhn_check_digit takes digit values, got {d}");
            let d = u32::from(d);
            // The digit next to the check digit is doubled, then every other one.
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn digits(s: &str) -> Vec<u8> {
        s.bytes().map(|b| b - b'0').collect()
    }

    fn with_check_digit(payload: &str) -> String {
        format!("{payload}{}", luhn_check_digit(&digits(payload)))
    }

    fn message(result: Result<AccountNumber, LedgerError>) -> String {
        match result {
            Err(LedgerError::BadInput(message)) => message,
            other => panic!("expected BadInput, got {other:?}"),
        }
    }

    #[test]
    fn computes_known_luhn_check_digits() {
        assert_eq!(luhn_check_digit(&digits("7992739871")), 3);
        assert_eq!(luhn_check_digit(&digits("4539148803436467")[..15]), 7);
        assert_eq!(luhn_check_digit(&digits("37828224631000")), 5);
        assert_eq!(luhn_check_digit(&digits("0")), 0);
        assert_eq!(luhn_check_digit(&digits("1")), 8);
        assert_eq!(luhn_check_digit(&[]), 0);
    }

    #[test]
    fn accepts_twelve_digits_with_a_valid_check_digit() {
        let number = with_check_digit("12345678901");
        let parsed = AccountNumber::parse(&number).unwrap();
        assert_eq!(parsed.as_str(), number);
        assert_eq!(parsed.to_string(), number);
    }

    #[test]
    fn accepts_spaces_or_dashes_between_digit_groups_and_surrounding_whitespace() {
        let number = with_check_digit("12345678901");
        let expected = AccountNumber::parse(&number).unwrap();
        let grouped_spaces = format!("{} {} {}", &number[..4], &number[4..8], &number[8..]);
        let grouped_dashes = format!("{}-{}-{}", &number[..4], &number[4..8], &number[8..]);
        let padded = format!("  {number}\n");
        for input in [grouped_spaces, grouped_dashes, padded] {
            assert_eq!(AccountNumber::parse(&input).unwrap(), expected, "{input:?}");
        }
    }

    #[test]
    fn rejects_separators_that_are_not_between_two_digits() {
        let number = with_check_digit("12345678901");
        for input in [
            format!("-{number}"),
            format!("{number}-"),
            format!("{}--{}", &number[..4], &number[4..]),
            format!("{}  {}", &number[..4], &number[4..]),
            format!("{} - {}", &number[..4], &number[4..]),
        ] {
            assert_eq!(
                message(AccountNumber::parse(&input)),
                "account number must be 12 digits",
                "{input:?}"
            );
        }
    }

    #[test]
    fn rejects_inputs_that_are_not_twelve_ascii_digits() {
        let number = with_check_digit("12345678901");
        for input in [
            String::new(),
            "   ".into(),
            number[..11].to_string(),
            format!("{number}0"),
            format!("{}a{}", &number[..6], &number[7..]),
            format!("{}.{}", &number[..6], &number[6..]),
            "١٢٣٤٥٦٧٨٩٠١٢".into(),
            "1".repeat(10_000),
        ] {
            assert_eq!(
                message(AccountNumber::parse(&input)),
                "account number must be 12 digits",
                "{input:?}"
            );
        }
    }

    #[test]
    fn rejects_a_wrong_check_digit() {
        let number = with_check_digit("12345678901");
        let last = number.as_bytes()[11] - b'0';
        let wrong = format!("{}{}", &number[..11], (last + 1) % 10);
        assert_eq!(
            message(AccountNumber::parse(&wrong)),
            "account number check digit is wrong; please re-check the number"
        );
    }

    #[test]
    fn generated_numbers_are_twelve_digits_with_a_nonzero_first_digit_and_parse_back() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let number = AccountNumber::generate(&mut rng);
            assert_eq!(number.as_str().len(), 12);
            assert!(number.as_str().bytes().all(|b| b.is_ascii_digit()));
            assert_ne!(number.as_str().as_bytes()[0], b'0');
            assert_eq!(AccountNumber::parse(number.as_str()).ok(), Some(number));
        }
    }

    #[test]
    fn generation_is_deterministic_for_a_seeded_rng() {
        let a = AccountNumber::generate(&mut StdRng::seed_from_u64(42));
        let b = AccountNumber::generate(&mut StdRng::seed_from_u64(42));
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_every_single_digit_typo_of_generated_numbers() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..300 {
            let number = AccountNumber::generate(&mut rng);
            let original = number.as_str().as_bytes();
            for position in 0..12 {
                for replacement in b'0'..=b'9' {
                    if replacement == original[position] {
                        continue;
                    }
                    let mut typo = original.to_vec();
                    typo[position] = replacement;
                    let typo = String::from_utf8(typo).unwrap();
                    assert!(AccountNumber::parse(&typo).is_err(), "{number} -> {typo}");
                }
            }
        }
    }

    #[test]
    fn rejects_every_adjacent_transposition_of_generated_numbers_except_09_and_90() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut checked = 0;
        for _ in 0..300 {
            let number = AccountNumber::generate(&mut rng);
            let original = number.as_str().as_bytes();
            for position in 0..11 {
                let (a, b) = (original[position], original[position + 1]);
                if a == b || matches!((a, b), (b'0', b'9') | (b'9', b'0')) {
                    continue;
                }
                let mut swapped = original.to_vec();
                swapped.swap(position, position + 1);
                let swapped = String::from_utf8(swapped).unwrap();
                assert!(
                    AccountNumber::parse(&swapped).is_err(),
                    "{number} -> {swapped}"
                );
                checked += 1;
            }
        }
        assert!(
            checked > 2000,
            "too few transpositions exercised: {checked}"
        );
    }
}
