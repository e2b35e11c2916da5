//! The GraphQL schema: one file per domain noun, merged here.

pub mod access;
pub mod accounts;
pub mod admin;
pub mod bills;
pub mod errors;
pub mod loaders;
pub mod notifications;
pub mod scalars;
pub mod subscriptions;
pub mod transfers;
pub mod users;

use async_graphql::{Context, MergedObject, Schema};

use ledger::Viewer;

use crate::app::AppState;
pub use errors::{Gql, unauthenticated};

/// Limits against abusive documents (async-graphql has none by default).
/// Depth 15 is what GraphiQL's own introspection query needs (its `TypeRef`
/// fragment nests `ofType` nine levels); the README's deepest query uses 8.
/// Complexity counts every field, multiplied by `first` on lists, so that
/// nested pages cannot ask for a hundred thousand values.
pub const MAX_DEPTH: usize = 15;
pub const MAX_COMPLEXITY: usize = 5_000;

#[derive(MergedObject, Default)]
pub struct QueryRoot(
    users::UserQueries,
    accounts::AccountQueries,
    transfers::TransferQueries,
    notifications::NotificationQueries,
    admin::AdminQueries,
    bills::BillQueries,
);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    users::UserMutations,
    accounts::AccountMutations,
    transfers::TransferMutations,
    notifications::ContactMutations,
    admin::AdminMutations,
    bills::BillMutations,
);

pub type CoreSchema = Schema<QueryRoot, MutationRoot, subscriptions::SubscriptionRoot>;

pub fn build_schema(introspection: bool) -> CoreSchema {
    let builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        subscriptions::SubscriptionRoot::default(),
    )
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY);
    if introspection {
        builder.finish()
    } else {
        // Without introspection, "did you mean …" hints would leak the schema.
        builder
            .disable_introspection()
            .disable_suggestions()
            .finish()
    }
}

/// The SDL the server serves; `schema.graphql` must equal it.
pub fn sdl() -> String {
    build_schema(true).sdl()
}

/// The client's network address, for per-client limits.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub std::net::IpAddr);

/// The authentication outcome of one request or WebSocket connection.
#[derive(Clone, Debug)]
pub enum Auth {
    Anonymous,
    Invalid(String),
    Viewer(Viewer),
}

pub fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

/// The signed-in viewer, or `UNAUTHENTICATED`.
pub fn viewer(ctx: &Context<'_>) -> async_graphql::Result<Viewer> {
    match ctx.data_opt::<Auth>() {
        Some(Auth::Viewer(v)) => Ok(v.clone()),
        Some(Auth::Invalid(msg)) => Err(unauthenticated(msg)),
        _ => Err(unauthenticated(
            "sign in first: send Authorization: Bearer <accessToken>",
        )),
    }
}

pub fn admin(ctx: &Context<'_>) -> async_graphql::Result<Viewer> {
    let v = viewer(ctx)?;
    v.require_admin().gql()?;
    Ok(v)
}

pub fn parse_id(id: &async_graphql::ID, what: &'static str) -> async_graphql::Result<uuid::Uuid> {
    // A malformed id cannot name anything the viewer owns: same answer as a
    // well-formed id of someone else's object.
    uuid::Uuid::parse_str(id.as_str())
        .map_err(|_| errors::to_gql(ledger::LedgerError::NotFound(what)))
}

/// Extra fields every connection has.
#[derive(async_graphql::SimpleObject)]
#[graphql(directive = access::access::apply("OWNER_OR_ADMIN".into()))]
pub struct ConnectionTotal {
    pub total_count: i32,
}

pub type Conn<N> = async_graphql::connection::Connection<String, N, ConnectionTotal>;

/// Builds a Relay connection from a ledger page.
pub fn connection<T: ledger::page::Keyed, N: async_graphql::OutputType>(
    page: ledger::page::Page<T>,
    after_given: bool,
    node: impl Fn(T) -> N,
) -> Conn<N> {
    let mut c = async_graphql::connection::Connection::with_additional_fields(
        after_given,
        page.has_next_page,
        ConnectionTotal {
            total_count: page.total_count.min(i32::MAX as u64) as i32,
        },
    );
    c.edges.extend(page.items.into_iter().map(|t| {
        let cur = t.cursor().encode();
        async_graphql::connection::Edge::new(cur, node(t))
    }));
    c
}
