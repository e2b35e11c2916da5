//! The one error type of the banking rules.
//!
//! Every variant corresponds to one public error code of the contract; the
//! API maps them in exactly one place. `Internal` carries the cause for the
//! logs only: its text never reaches a client.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LedgerError {
    /// No valid access token, or a used/rotated/revoked refresh token.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated but not allowed (e.g. a customer calling an admin operation).
    #[error("{0}")]
    Forbidden(String),
    /// Does not exist, or exists but is not the viewer's: existence is not leaked.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The input is malformed or violates a rule of the request itself.
    #[error("{0}")]
    BadInput(String),
    /// Wrong email or password; deliberately does not say which.
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("verify your email address before moving money")]
    EmailNotVerified,
    #[error("insufficient funds: available balance is lower than the amount")]
    InsufficientFunds,
    #[error("account is frozen")]
    AccountFrozen,
    #[error("account is closed")]
    AccountClosed,
    #[error("source and destination accounts use different currencies")]
    CurrencyMismatch,
    #[error("{0}")]
    LimitExceeded(String),
    #[error("this idempotencyKey was already used with different input")]
    IdempotencyConflict,
    #[error("too many requests; try again later")]
    RateLimited,
    #[error("the provider is unavailable; try again later")]
    ProviderUnavailable,
    /// A bug or an infrastructure failure; logged, never shown.
    #[error("internal error")]
    Internal(String),
}

impl LedgerError {
    /// The contract's `extensions.code` for this error.
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::Unauthenticated(_) => "UNAUTHENTICATED",
            LedgerError::Forbidden(_) => "FORBIDDEN",
            LedgerError::NotFound(_) => "NOT_FOUND",
            LedgerError::BadInput(_) => "BAD_USER_INPUT",
            LedgerError::InvalidCredentials => "INVALID_CREDENTIALS",
            LedgerError::EmailTaken => "EMAIL_TAKEN",
            LedgerError::EmailNotVerified => "EMAIL_NOT_VERIFIED",
            LedgerError::InsufficientFunds => "INSUFFICIENT_FUNDS",
            LedgerError::AccountFrozen => "ACCOUNT_FROZEN",
            LedgerError::AccountClosed => "ACCOUNT_CLOSED",
            LedgerError::CurrencyMismatch => "CURRENCY_MISMATCH",
            LedgerError::LimitExceeded(_) => "LIMIT_EXCEEDED",
            LedgerError::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            LedgerError::RateLimited => "RATE_LIMITED",
            LedgerError::ProviderUnavailable => "PROVIDER_UNAVAILABLE",
            LedgerError::Internal(_) => "INTERNAL",
        }
    }

    pub fn bad_input(msg: impl Into<String>) -> Self {
        LedgerError::BadInput(msg.into())
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        LedgerError::Internal(cause.to_string())
    }
}

impl From<sea_orm::DbErr> for LedgerError {
    fn from(e: sea_orm::DbErr) -> Self {
        LedgerError::Internal(format!("database: {e}"))
    }
}

pub type LedgerResult<T> = Result<T, LedgerError>;
