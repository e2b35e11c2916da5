//! Who may use what: a guard on every operation, declared in the schema.
//!
//! Every root field carries `Access` as its guard *and* an `@access(rule:)`
//! directive in the SDL, and every object type declares the rule of the
//! path that reaches it; a test walks the printed schema and fails on any
//! field or type without one. Object-level ownership (is this account the
//! viewer's?) is decided in the resolvers, which answer `NOT_FOUND` so that
//! existence is not leaked.

use async_graphql::{Context, Guard, TypeDirective};

use super::{Auth, errors::to_gql};
use ledger::LedgerError;

/// The access rule of a field or type, shown in the SDL.
/// Rules: `PUBLIC` (anyone), `CUSTOMER` (any signed-in user, acting on their
/// own objects), `OWNER_OR_ADMIN` (a type reachable only through fields
/// that checked ownership), `ADMIN`.
#[TypeDirective(location = "FieldDefinition", location = "Object")]
pub fn access(rule: String) {}

/// Guard for root fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    Customer,
    Admin,
}

impl Guard for Access {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match self {
            Access::Public => Ok(()),
            Access::Customer | Access::Admin => {
                let viewer = match ctx.data_opt::<Auth>() {
                    Some(Auth::Viewer(v)) => v,
                    Some(Auth::Invalid(msg)) => {
                        return Err(to_gql(LedgerError::Unauthenticated(msg.clone())));
                    }
                    _ => {
                        return Err(to_gql(LedgerError::Unauthenticated(
                            "sign in first: send Authorization: Bearer <accessToken>".into(),
                        )));
                    }
                };
                if *self == Access::Admin && !viewer.is_admin() {
                    return Err(to_gql(LedgerError::Forbidden(
                        "this operation is for administrators".into(),
                    )));
                }
                Ok(())
            }
        }
    }
}
