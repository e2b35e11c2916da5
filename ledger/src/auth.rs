//! Identity: registration, passwords, access and refresh tokens, email verification.
//!
//! Access tokens are short-lived HS256 JWTs with the algorithm pinned and
//! `exp`, `iss`, `aud` required; each carries the user's `token_version` so
//! that a role change or a logout everywhere revokes tokens at once. Refresh
//! tokens are opaque random strings stored only as SHA-256 hashes, rotated on
//! every use; presenting a rotated token again revokes its whole family,
//! because that only happens when a token was stolen.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use chrono::{Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QuerySelect, Set, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use entity::{email_verification, refresh_token, setting, user};

use crate::db::{is_unique_violation, now};
use crate::email::{Email, FullName, check_password_policy};
use crate::notify;
use crate::{LedgerError, LedgerResult, Role, Viewer};

pub const ACCESS_TOKEN_TTL_SECS: i64 = 15 * 60;
pub const REFRESH_TOKEN_TTL_DAYS: i64 = 30;
pub const VERIFICATION_TTL_HOURS: i64 = 24;
const ISSUER: &str = "corebank";
const AUDIENCE: &str = "corebank-api";

/// Signing keys for access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    pub fn from_secret(secret: &[u8]) -> TokenKeys {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    role: String,
    /// The user's token_version when issued.
    tv: i32,
    iat: i64,
    exp: i64,
    iss: String,
    aud: String,
}

/// What login, register and refresh hand back.
#[derive(Clone, Debug)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    pub user: user::Model,
    /// Notifications created on the way (the verification email), to hand
    /// to the email queue after commit.
    pub events: Vec<crate::events::LedgerEvent>,
}

/// Settings that shape registration.
#[derive(Clone, Debug)]
pub struct IdentityPolicy {
    pub email_verification_required: bool,
    pub public_url: String,
}

pub async fn hash_password(password: String) -> LedgerResult<String> {
    // Argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(LedgerError::internal)
    })
    .await
    .map_err(LedgerError::internal)?
}

pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

/// A valid argon2id hash of a random password, verified against when the
/// email is unknown so that login takes the same time either way.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password(random_token().as_bytes())
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub fn issue_access_token(keys: &TokenKeys, user: &user::Model) -> LedgerResult<String> {
    let iat = Utc::now().timestamp();
    let claims = Claims {
        sub: user.id,
        role: user.role.clone(),
        tv: user.token_version,
        iat,
        exp: iat + ACCESS_TOKEN_TTL_SECS,
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
        .map_err(LedgerError::internal)
}

fn decode_access_token(keys: &TokenKeys, token: &str) -> LedgerResult<Claims> {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[AUDIENCE]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.leeway = 5;
    jsonwebtoken::decode::<Claims>(token, &keys.decoding, &v)
        .map(|d| d.claims)
        .map_err(|_| LedgerError::Unauthenticated("invalid or expired access token".into()))
}

/// Resolves a bearer token to the viewer, checking it was not revoked since.
pub async fn authenticate(
    db: &impl ConnectionTrait,
    keys: &TokenKeys,
    token: &str,
) -> LedgerResult<Viewer> {
    Ok(authenticate_until(db, keys, token).await?.0)
}

/// Like `authenticate`, also returning when the token expires (long-lived
/// connections end then).
pub async fn authenticate_until(
    db: &impl ConnectionTrait,
    keys: &TokenKeys,
    token: &str,
) -> LedgerResult<(Viewer, chrono::DateTime<Utc>)> {
    let claims = decode_access_token(keys, token)?;
    let expires_at = chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(Utc::now);
    let u = user::Entity::find_by_id(claims.sub)
        .one(db)
        .await?
        .ok_or_else(|| LedgerError::Unauthenticated("invalid or expired access token".into()))?;
    if u.token_version != claims.tv {
        return Err(LedgerError::Unauthenticated(
            "access token was revoked".into(),
        ));
    }
    Ok((
        Viewer {
            user_id: u.id,
            role: Role::parse(&u.role),
            email_verified: u.email_verified,
        },
        expires_at,
    ))
}

async fn new_session(
    db: &impl ConnectionTrait,
    keys: &TokenKeys,
    u: user::Model,
    family_id: Uuid,
) -> LedgerResult<Session> {
    let refresh = random_token();
    let t = now();
    refresh_token::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(u.id),
        family_id: Set(family_id),
        token_hash: Set(sha256_hex(&refresh)),
        expires_at: Set(t + Duration::days(REFRESH_TOKEN_TTL_DAYS)),
        used_at: Set(None),
        revoked_at: Set(None),
        created_at: Set(t),
    }
    .insert(db)
    .await?;
    Ok(Session {
        access_token: issue_access_token(keys, &u)?,
        refresh_token: refresh,
        user: u,
        events: Vec::new(),
    })
}

pub async fn register(
    db: &DatabaseConnection,
    keys: &TokenKeys,
    policy: &IdentityPolicy,
    email: &str,
    password: &str,
    full_name: &str,
) -> LedgerResult<Session> {
    let email = Email::parse(email)?;
    check_password_policy(password)?;
    let full_name = FullName::parse(full_name)?;
    if user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(db)
        .await?
        .is_some()
    {
        return Err(LedgerError::EmailTaken);
    }
    let hash = hash_password(password.to_owned()).await?;
    let txn = db.begin().await?;
    let u = user::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(email.as_str().to_owned()),
        password_hash: Set(hash),
        full_name: Set(full_name.as_str().to_owned()),
        role: Set(Role::Customer.as_str().into()),
        email_verified: Set(false),
        token_version: Set(0),
        created_at: Set(now()),
    }
    .insert(&txn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            LedgerError::EmailTaken
        } else {
            e.into()
        }
    })?;
    let verification = issue_verification(&txn, &u, policy).await?;
    let mut session = new_session(&txn, keys, u, Uuid::now_v7()).await?;
    session.events.extend(verification);
    txn.commit().await?;
    tracing::info!(user.id = %session.user.id, user.email = %email.masked(), "user registered");
    Ok(session)
}

/// Creates a single-use verification token and records the email carrying it.
pub async fn issue_verification(
    db: &impl ConnectionTrait,
    u: &user::Model,
    policy: &IdentityPolicy,
) -> LedgerResult<Option<crate::events::LedgerEvent>> {
    let token = random_token();
    let t = now();
    email_verification::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(u.id),
        token_hash: Set(sha256_hex(&token)),
        expires_at: Set(t + Duration::hours(VERIFICATION_TTL_HOURS)),
        used_at: Set(None),
        created_at: Set(t),
    }
    .insert(db)
    .await?;
    let link = format!(
        "{}/verify-email?token={token}",
        policy.public_url.trim_end_matches('/')
    );
    let id = notify::record(
        db,
        u.id,
        "EMAIL_VERIFICATION",
        "Verify your corebank email address",
        &format!(
            "Hello {},\n\nconfirm your email address by opening this link within 24 hours:\n{link}\n\nOr call the verifyEmail mutation with token={token}\n",
            u.full_name
        ),
        &format!("verification:{}", Uuid::now_v7()),
    )
    .await?;
    Ok(
        id.map(|notification_id| crate::events::LedgerEvent::Notification {
            user_id: u.id,
            notification_id,
        }),
    )
}

pub async fn login(
    db: &DatabaseConnection,
    keys: &TokenKeys,
    email: &str,
    password: &str,
) -> LedgerResult<Session> {
    let found = match Email::parse(email) {
        Ok(e) => {
            user::Entity::find()
                .filter(user::Column::Email.eq(e.as_str()))
                .one(db)
                .await?
        }
        Err(_) => None,
    };
    let hash = found
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().into());
    let ok = verify_password(password.to_owned(), hash).await;
    match found {
        Some(u) if ok => new_session(db, keys, u, Uuid::now_v7()).await,
        _ => Err(LedgerError::InvalidCredentials),
    }
}

fn refresh_rejected() -> LedgerError {
    LedgerError::Unauthenticated("refresh token is invalid, used or revoked".into())
}

pub async fn refresh(
    db: &DatabaseConnection,
    keys: &TokenKeys,
    presented: &str,
) -> LedgerResult<Session> {
    let txn = crate::db::begin_write(db).await?;
    let row = refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(sha256_hex(presented)))
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or_else(refresh_rejected)?;
    let t = now();
    if row.used_at.is_some() || row.revoked_at.is_some() {
        if row.used_at.is_some() && row.revoked_at.is_none() {
            // A rotated token came back: someone holds a copy. End the family.
            refresh_token::Entity::update_many()
                .col_expr(
                    refresh_token::Column::RevokedAt,
                    sea_orm::sea_query::Expr::value(t),
                )
                .filter(refresh_token::Column::FamilyId.eq(row.family_id))
                .filter(refresh_token::Column::RevokedAt.is_null())
                .exec(&txn)
                .await?;
            txn.commit().await?;
            tracing::warn!(user.id = %row.user_id, "refresh token reuse; family revoked");
        }
        return Err(refresh_rejected());
    }
    if row.expires_at < t {
        return Err(refresh_rejected());
    }
    let u = user::Entity::find_by_id(row.user_id)
        .one(&txn)
        .await?
        .ok_or_else(refresh_rejected)?;
    let family = row.family_id;
    let mut used: refresh_token::ActiveModel = row.into();
    used.used_at = Set(Some(t));
    used.update(&txn).await?;
    let session = new_session(&txn, keys, u, family).await?;
    txn.commit().await?;
    Ok(session)
}

pub async fn logout(
    db: &DatabaseConnection,
    viewer: &Viewer,
    presented: &str,
) -> LedgerResult<bool> {
    let res = refresh_token::Entity::update_many()
        .col_expr(
            refresh_token::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(now()),
        )
        .filter(refresh_token::Column::TokenHash.eq(sha256_hex(presented)))
        .filter(refresh_token::Column::UserId.eq(viewer.user_id))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(res.rows_affected > 0)
}

/// Revokes every session of the user: refresh tokens, and access tokens via
/// the token version they carry.
pub async fn logout_all(db: &DatabaseConnection, viewer: &Viewer) -> LedgerResult<bool> {
    let txn = db.begin().await?;
    refresh_token::Entity::update_many()
        .col_expr(
            refresh_token::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(now()),
        )
        .filter(refresh_token::Column::UserId.eq(viewer.user_id))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    user::Entity::update_many()
        .col_expr(
            user::Column::TokenVersion,
            sea_orm::sea_query::ExprTrait::add(
                sea_orm::sea_query::Expr::col(user::Column::TokenVersion),
                1,
            ),
        )
        .filter(user::Column::Id.eq(viewer.user_id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(true)
}

pub async fn verify_email(db: &DatabaseConnection, token: &str) -> LedgerResult<user::Model> {
    let txn = crate::db::begin_write(db).await?;
    let invalid =
        || LedgerError::bad_input("verification token is invalid, expired or already used");
    let row = email_verification::Entity::find()
        .filter(email_verification::Column::TokenHash.eq(sha256_hex(token.trim())))
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or_else(invalid)?;
    if row.used_at.is_some() || row.expires_at < now() {
        return Err(invalid());
    }
    let user_id = row.user_id;
    let mut used: email_verification::ActiveModel = row.into();
    used.used_at = Set(Some(now()));
    used.update(&txn).await?;
    let u = user::Entity::find_by_id(user_id)
        .one(&txn)
        .await?
        .ok_or_else(invalid)?;
    let mut am: user::ActiveModel = u.into();
    am.email_verified = Set(true);
    let u = am.update(&txn).await?;
    txn.commit().await?;
    Ok(u)
}

pub async fn resend_verification(
    db: &DatabaseConnection,
    viewer: &Viewer,
    policy: &IdentityPolicy,
) -> LedgerResult<Option<crate::events::LedgerEvent>> {
    let u = user::Entity::find_by_id(viewer.user_id)
        .one(db)
        .await?
        .ok_or(LedgerError::NotFound("user"))?;
    if u.email_verified {
        return Ok(None);
    }
    // At most one verification email per minute per user.
    let recent = email_verification::Entity::find()
        .filter(email_verification::Column::UserId.eq(u.id))
        .filter(email_verification::Column::CreatedAt.gt(now() - Duration::seconds(60)))
        .one(db)
        .await?;
    if recent.is_some() {
        return Err(LedgerError::RateLimited);
    }
    issue_verification(db, &u, policy).await
}

/// Creates the configured administrator if no user has that email yet.
pub async fn bootstrap_admin(
    db: &DatabaseConnection,
    email: &str,
    password: &str,
) -> LedgerResult<()> {
    let email = Email::parse(email)?;
    check_password_policy(password)?;
    if user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(db)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let hash = hash_password(password.to_owned()).await?;
    let res = user::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(email.as_str().to_owned()),
        password_hash: Set(hash),
        full_name: Set("Administrator".into()),
        role: Set(Role::Admin.as_str().into()),
        email_verified: Set(true),
        token_version: Set(0),
        created_at: Set(now()),
    }
    .insert(db)
    .await;
    match res {
        Ok(_) => {
            tracing::info!(user.email = %email.masked(), "bootstrap administrator created");
            Ok(())
        }
        // Another process created it at the same moment.
        Err(e) if is_unique_violation(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Embedded mode without JWT_SECRET: generate a key once and keep it in the
/// database so tokens survive restarts.
pub async fn stored_jwt_secret(db: &DatabaseConnection) -> LedgerResult<String> {
    const KEY: &str = "jwt_secret";
    if let Some(s) = setting::Entity::find_by_id(KEY.to_owned()).one(db).await? {
        return Ok(s.value);
    }
    let secret = format!("{}{}", random_token(), random_token());
    let res = setting::ActiveModel {
        key: Set(KEY.into()),
        value: Set(secret.clone()),
    }
    .insert(db)
    .await;
    match res {
        Ok(_) => Ok(secret),
        Err(e) if is_unique_violation(&e) => Ok(setting::Entity::find_by_id(KEY.to_owned())
            .one(db)
            .await?
            .map(|s| s.value)
            .ok_or_else(|| LedgerError::internal("jwt secret vanished"))?),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(tv: i32) -> user::Model {
        user::Model {
            id: Uuid::new_v4(),
            email: "a@example.com".into(),
            password_hash: String::new(),
            full_name: "A".into(),
            role: "CUSTOMER".into(),
            email_verified: true,
            token_version: tv,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn access_token_round_trips_and_expires_within_fifteen_minutes() {
        let keys = TokenKeys::from_secret(&[7u8; 32]);
        let u = user(3);
        let t = issue_access_token(&keys, &u).unwrap();
        let c = decode_access_token(&keys, &t).unwrap();
        assert_eq!(c.sub, u.id);
        assert_eq!(c.tv, 3);
        assert!(c.exp - c.iat <= 900);
    }

    #[test]
    fn token_signed_with_another_key_is_rejected() {
        let t = issue_access_token(&TokenKeys::from_secret(&[1u8; 32]), &user(0)).unwrap();
        let e = decode_access_token(&TokenKeys::from_secret(&[2u8; 32]), &t).unwrap_err();
        assert_eq!(e.code(), "UNAUTHENTICATED");
    }

    #[test]
    fn unsigned_token_is_rejected() {
        // header {"alg":"none","typ":"JWT"}
        let keys = TokenKeys::from_secret(&[1u8; 32]);
        let t = issue_access_token(&keys, &user(0)).unwrap();
        let payload = t.split('.').nth(1).unwrap();
        let forged = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(decode_access_token(&keys, &forged).is_err());
    }

    #[test]
    fn password_hash_verifies_only_the_right_password() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let h = rt
            .block_on(hash_password("correct horse battery".into()))
            .unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(rt.block_on(verify_password("correct horse battery".into(), h.clone())));
        assert!(!rt.block_on(verify_password("wrong horse battery".into(), h)));
    }
}
