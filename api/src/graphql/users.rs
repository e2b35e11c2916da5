//! Users and sessions: register, login, tokens, email verification.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use entity::user;

use super::access::{Access, access};
use super::accounts::Account;
use super::scalars::DateTime;
use super::{Conn, Gql, connection, state, viewer};
use ledger::page::PageRequest;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn from_str(s: &str) -> Role {
        if s == "ADMIN" {
            Role::Admin
        } else {
            Role::Customer
        }
    }
}

pub struct User(pub user::Model);

#[Object(directive = access::apply("OWNER_OR_ADMIN".into()))]
impl User {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn email(&self) -> &str {
        &self.0.email
    }
    async fn full_name(&self) -> &str {
        &self.0.full_name
    }
    async fn role(&self) -> Role {
        Role::from_str(&self.0.role)
    }
    async fn email_verified(&self) -> bool {
        self.0.email_verified
    }
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
    /// The user's accounts, newest first (the user themself or an admin).
    #[graphql(complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity + 1")]
    async fn accounts(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<Account>> {
        let v = viewer(ctx)?;
        if v.user_id != self.0.id && !v.is_admin() {
            return Err(super::errors::to_gql(ledger::LedgerError::NotFound("user")));
        }
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let rows = ledger::accounts::list(&state(ctx).db, Some(self.0.id), None, page)
            .await
            .gql()?;
        Ok(connection(rows, page.after.is_some(), Account))
    }
}

#[derive(SimpleObject)]
#[graphql(directive = access::apply("OWNER_OR_ADMIN".into()))]
pub struct AuthPayload {
    access_token: String,
    refresh_token: String,
    user: User,
}

impl From<ledger::auth::Session> for AuthPayload {
    fn from(s: ledger::auth::Session) -> Self {
        AuthPayload {
            access_token: s.access_token,
            refresh_token: s.refresh_token,
            user: User(s.user),
        }
    }
}

#[derive(InputObject)]
pub struct RegisterInput {
    email: String,
    password: String,
    full_name: String,
}

#[derive(InputObject)]
pub struct LoginInput {
    email: String,
    password: String,
}

#[derive(Default)]
pub struct UserQueries;

#[Object]
impl UserQueries {
    /// The signed-in user.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        let v = viewer(ctx)?;
        let u = user::Entity::find_by_id(v.user_id)
            .one(&state(ctx).db)
            .await
            .map_err(|e| super::errors::to_gql(e.into()))?
            .ok_or_else(|| super::unauthenticated("user no longer exists"))?;
        Ok(User(u))
    }
}

use sea_orm::EntityTrait;

#[derive(Default)]
pub struct UserMutations;

#[Object]
impl UserMutations {
    /// Creates a customer and signs them in. Public.
    #[graphql(guard = "Access::Public", directive = access::apply("PUBLIC".into()))]
    async fn register(
        &self,
        ctx: &Context<'_>,
        input: RegisterInput,
    ) -> async_graphql::Result<AuthPayload> {
        let s = state(ctx);
        let mut session = ledger::auth::register(
            &s.db,
            &s.keys,
            &s.identity,
            &input.email,
            &input.password,
            &input.full_name,
        )
        .await
        .gql()?;
        queue::after_commit(&s.queues, &s.events, std::mem::take(&mut session.events)).await;
        Ok(session.into())
    }

    /// Public. Fails with INVALID_CREDENTIALS whether the email exists or not.
    #[graphql(guard = "Access::Public", directive = access::apply("PUBLIC".into()))]
    async fn login(
        &self,
        ctx: &Context<'_>,
        input: LoginInput,
    ) -> async_graphql::Result<AuthPayload> {
        use crate::limits::{
            LOGIN_FAILURES_PER_ACCOUNT, LOGIN_FAILURES_PER_CLIENT, LOGIN_WINDOW, account_key,
        };
        let s = state(ctx);
        // Checked before the password: a locked account answers the same
        // whatever is typed, so guessing stops working for the window.
        let account = account_key(&input.email);
        let client = ctx
            .data_opt::<super::ClientIp>()
            .map(|ip| format!("login:ip:{}", ip.0));
        // Every attempt counts before the password is checked, so concurrent
        // guesses cannot all slip in under the limit; success resets.
        let mut limited = s.limiter.hit(&account, LOGIN_WINDOW).await > LOGIN_FAILURES_PER_ACCOUNT;
        if let Some(c) = &client {
            limited |= s.limiter.count(c, LOGIN_WINDOW).await >= LOGIN_FAILURES_PER_CLIENT;
        }
        if limited {
            return Err(super::errors::to_gql(ledger::LedgerError::RateLimited));
        }
        match ledger::auth::login(&s.db, &s.keys, &input.email, &input.password).await {
            Ok(session) => {
                s.limiter.reset(&account).await;
                Ok(session.into())
            }
            Err(e) => {
                if matches!(e, ledger::LedgerError::InvalidCredentials)
                    && let Some(c) = &client
                {
                    s.limiter.hit(c, LOGIN_WINDOW).await;
                }
                Err(super::errors::to_gql(e))
            }
        }
    }

    /// Public. Rotates: the presented token stops working.
    #[graphql(guard = "Access::Public", directive = access::apply("PUBLIC".into()))]
    async fn refresh_token(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> async_graphql::Result<AuthPayload> {
        let s = state(ctx);
        Ok(ledger::auth::refresh(&s.db, &s.keys, &refresh_token)
            .await
            .gql()?
            .into())
    }

    /// Revokes the given refresh token.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn logout(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> async_graphql::Result<bool> {
        let v = viewer(ctx)?;
        ledger::auth::logout(&state(ctx).db, &v, &refresh_token)
            .await
            .gql()
    }

    /// Signs out everywhere: revokes every refresh token and every access
    /// token issued so far.
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn logout_all(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let v = viewer(ctx)?;
        ledger::auth::logout_all(&state(ctx).db, &v).await.gql()
    }

    /// Public. Consumes the single-use token sent by email.
    #[graphql(guard = "Access::Public", directive = access::apply("PUBLIC".into()))]
    async fn verify_email(&self, ctx: &Context<'_>, token: String) -> async_graphql::Result<User> {
        Ok(User(
            ledger::auth::verify_email(&state(ctx).db, &token)
                .await
                .gql()?,
        ))
    }

    /// Sends a fresh verification email (at most one a minute).
    #[graphql(guard = "Access::Customer", directive = access::apply("CUSTOMER".into()))]
    async fn resend_verification_email(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let v = viewer(ctx)?;
        let s = state(ctx);
        let sent = ledger::auth::resend_verification(&s.db, &v, &s.identity)
            .await
            .gql()?;
        let any = sent.is_some();
        queue::after_commit(&s.queues, &s.events, sent.into_iter().collect()).await;
        Ok(any)
    }
}
