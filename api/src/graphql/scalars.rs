//! `Decimal`, `DateTime` and `Date` as the contract defines them.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// An amount of money as a JSON string ("800000.00"). Input is kept as text
/// here; it is parsed against the account's currency by `ledger::money`,
/// because how many decimals are allowed depends on the currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decimal(pub String);

#[Scalar(name = "Decimal")]
impl ScalarType for Decimal {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(s) => Ok(Decimal(s)),
            _ => Err(InputValueError::custom(
                "Decimal must be a JSON string such as \"12.50\", not a number",
            )),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}

impl Decimal {
    pub fn format(minor: i64, currency: &str) -> Decimal {
        match ledger::money::Currency::parse(currency) {
            Ok(c) => Decimal(ledger::money::Amount::from_minor(minor).format(c)),
            Err(_) => Decimal(minor.to_string()),
        }
    }
}

/// RFC 3339 timestamp with offset.
#[derive(Clone, Debug)]
pub struct DateTime(pub chrono::DateTime<chrono::Utc>);

#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(s) => chrono::DateTime::parse_from_rfc3339(&s)
                .map(|d| DateTime(d.with_timezone(&chrono::Utc)))
                .map_err(|_| InputValueError::custom("DateTime must be RFC 3339")),
            _ => Err(InputValueError::custom("DateTime must be a string")),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }
}

/// A calendar date, YYYY-MM-DD.
#[derive(Clone, Debug)]
pub struct Date(pub chrono::NaiveDate);

#[Scalar(name = "Date")]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(s) => chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                .map(Date)
                .map_err(|_| InputValueError::custom("Date must be YYYY-MM-DD")),
            _ => Err(InputValueError::custom("Date must be a string")),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}
