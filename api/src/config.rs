//! Configuration from the environment, validated before anything starts.

use std::net::SocketAddr;

use worker::process::fail_config;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://corebank.db?mode=rwc";

#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub bind_addr: SocketAddr,
    pub jwt_secret: Option<String>,
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub email_verification_required: bool,
    pub bootstrap_admin: Option<(String, String)>,
    pub public_url: String,
    /// Run the workers in this process (always so without Redis).
    pub with_worker: bool,
    /// Introspection (and field-name suggestions in errors); off in production if wanted.
    pub introspection: bool,
    /// Serve the GraphiQL playground.
    pub graphiql: bool,
    /// GraphQL requests per minute per viewer (or per client address when anonymous).
    pub requests_per_minute: u64,
}

fn flag(name: &str, default: bool) -> bool {
    match var(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => default,
        Some("on" | "true" | "1" | "yes") => true,
        Some("off" | "false" | "0" | "no") => false,
        Some(_) => fail_config(name, "must be on or off"),
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    /// Reads and checks every variable; on the first bad one, prints one line
    /// naming it and exits, so nothing is half-started.
    pub fn from_env(with_worker_flag: bool) -> Config {
        let database_url = var("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        let is_postgres =
            database_url.starts_with("postgres://") || database_url.starts_with("postgresql://");
        if !is_postgres && !database_url.starts_with("sqlite:") {
            fail_config("DATABASE_URL", "must start with postgres:// or sqlite://");
        }
        let redis_url = var("REDIS_URL");
        if let Some(r) = &redis_url
            && !r.starts_with("redis://")
            && !r.starts_with("rediss://")
        {
            fail_config("REDIS_URL", "must start with redis:// or rediss://");
        }
        let redis_prefix = var("REDIS_PREFIX").unwrap_or_else(|| "corebank".into());
        if redis_prefix.contains(char::is_whitespace) {
            fail_config("REDIS_PREFIX", "must not contain whitespace");
        }
        let bind_addr: SocketAddr = var("BIND_ADDR")
            .unwrap_or_else(|| "127.0.0.1:8000".into())
            .parse()
            .unwrap_or_else(|_| fail_config("BIND_ADDR", "must be an address like 127.0.0.1:8000"));
        let jwt_secret = var("JWT_SECRET");
        match &jwt_secret {
            Some(s) if s.len() < 32 => fail_config("JWT_SECRET", "must be at least 32 bytes"),
            None if is_postgres => fail_config(
                "JWT_SECRET",
                "is required with PostgreSQL (at least 32 bytes; e.g. `openssl rand -hex 32`)",
            ),
            _ => {}
        }
        let smtp_url = var("SMTP_URL");
        if let Some(s) = &smtp_url
            && !s.starts_with("smtp://")
            && !s.starts_with("smtps://")
        {
            fail_config("SMTP_URL", "must start with smtp:// or smtps://");
        }
        let mail_from =
            var("MAIL_FROM").unwrap_or_else(|| "corebank <no-reply@corebank.local>".into());
        let email_verification_required = match var("EMAIL_VERIFICATION").as_deref() {
            None => smtp_url.is_some(),
            Some("required") => true,
            Some("optional") => false,
            Some(_) => fail_config("EMAIL_VERIFICATION", "must be `required` or `optional`"),
        };
        let bootstrap_admin = match (
            var("BOOTSTRAP_ADMIN_EMAIL"),
            var("BOOTSTRAP_ADMIN_PASSWORD"),
        ) {
            (Some(e), Some(p)) => {
                if ledger::email::Email::parse(&e).is_err() {
                    fail_config("BOOTSTRAP_ADMIN_EMAIL", "is not a valid email address");
                }
                if ledger::email::check_password_policy(&p).is_err() {
                    fail_config("BOOTSTRAP_ADMIN_PASSWORD", "must be at least 10 characters");
                }
                Some((e, p))
            }
            (None, None) => None,
            (Some(_), None) => fail_config(
                "BOOTSTRAP_ADMIN_PASSWORD",
                "is required with BOOTSTRAP_ADMIN_EMAIL",
            ),
            (None, Some(_)) => fail_config(
                "BOOTSTRAP_ADMIN_EMAIL",
                "is required with BOOTSTRAP_ADMIN_PASSWORD",
            ),
        };
        let public_url = var("PUBLIC_URL").unwrap_or_else(|| format!("http://{bind_addr}"));
        let with_worker = with_worker_flag || redis_url.is_none();
        let introspection = flag("GRAPHQL_INTROSPECTION", true);
        let graphiql = flag("GRAPHIQL", true);
        let requests_per_minute = match var("RATE_LIMIT_PER_MINUTE") {
            None => 1200,
            Some(v) => v.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| {
                fail_config("RATE_LIMIT_PER_MINUTE", "must be a positive whole number")
            }),
        };
        Config {
            database_url,
            redis_url,
            redis_prefix,
            bind_addr,
            jwt_secret,
            smtp_url,
            mail_from,
            email_verification_required,
            bootstrap_admin,
            public_url,
            with_worker,
            introspection,
            graphiql,
            requests_per_minute,
        }
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}
