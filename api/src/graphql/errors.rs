//! The one place where errors become what clients see.

use async_graphql::{ErrorExtensions, ServerError};
use ledger::LedgerError;

/// Converts a domain error into a GraphQL error with the contract's code.
/// Internal causes are logged here and replaced by a generic message.
pub fn to_gql(e: LedgerError) -> async_graphql::Error {
    if let LedgerError::Internal(cause) = &e {
        tracing::error!(error = %cause, "internal error");
    }
    let code = e.code();
    async_graphql::Error::new(e.to_string()).extend_with(|_, ext| ext.set("code", code))
}

pub fn unauthenticated(msg: &str) -> async_graphql::Error {
    to_gql(LedgerError::Unauthenticated(msg.to_owned()))
}

/// `.gql()` instead of `?` on ledger results: a bare `?` would go through
/// async-graphql's blanket `From<Display>` and lose the code.
pub trait Gql<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> Gql<T> for Result<T, LedgerError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(to_gql)
    }
}

/// Gives every error that async-graphql produced itself (parse, validation,
/// coercion) a contract code, and hides anything that slipped through
/// without one.
pub fn assign_codes(errors: &mut [ServerError], document_parses: bool) {
    for err in errors.iter_mut() {
        let has_code = err
            .extensions
            .as_ref()
            .is_some_and(|e| e.get("code").is_some());
        if has_code {
            continue;
        }
        let msg = err.message.as_str();
        let code = if !document_parses {
            "GRAPHQL_PARSE_FAILED"
        } else if is_coercion_failure(msg) {
            "BAD_USER_INPUT"
        } else if err.path.is_empty() {
            "GRAPHQL_VALIDATION_FAILED"
        } else {
            tracing::error!(error = %msg, "resolver error without a code");
            err.message = "internal error".into();
            "INTERNAL"
        };
        let ext = err.extensions.get_or_insert_with(Default::default);
        ext.set("code", code);
    }
}

fn is_coercion_failure(msg: &str) -> bool {
    msg.contains("Invalid value for argument")
        || msg.contains("Failed to parse")
        || msg.contains("expected type")
        || msg.contains("Invalid value for variable")
        || (msg.starts_with("Variable") && msg.contains("Invalid value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ledger_error_gets_its_code() {
        let e = to_gql(LedgerError::InsufficientFunds);
        let code = e.extensions.unwrap().get("code").cloned();
        assert_eq!(code, Some(async_graphql::Value::from("INSUFFICIENT_FUNDS")));
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = to_gql(LedgerError::Internal(
            "relation \"accounts\" does not exist".into(),
        ));
        assert_eq!(e.message, "internal error");
    }
}
