//! The HTTP surface (contract §1, §3, §4, §6): health, metrics, GraphiQL
//! with self-hosted assets, GraphQL error codes for bad documents and
//! variables, body limits, and the committed `schema.graphql`.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_200() {
    let app = TestApp::spawn().await;
    for path in ["/healthz", "/readyz"] {
        let response = app.get(path, "*/*").await;
        assert_eq!(response.status(), 200, "GET {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_200_in_embedded_mode() {
    let app = TestApp::builder().sqlite().spawn().await;
    assert_eq!(app.get("/readyz", "*/*").await.status(), 200);
    assert_eq!(app.get("/healthz", "*/*").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_corebank_series() {
    let app = TestApp::spawn().await;
    // One request so that request-driven series exist.
    app.me_raw(None).await;
    let text = app.metrics().await;
    assert!(
        text.contains("corebank_"),
        "no corebank_ series in /metrics:\n{text:.2000}"
    );
    assert!(
        metric_value(&text, "corebank_db_statements_total").is_some(),
        "no corebank_db_statements_total sample in /metrics:\n{text:.2000}"
    );
}

/// Values of `attr="..."` / `attr='...'` attributes in an HTML page.
fn attribute_values(html: &str, attr: &str) -> Vec<String> {
    let lower = html.to_lowercase();
    let needle = format!("{attr}=");
    let mut values = Vec::new();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(&needle) {
        let start = from + pos;
        from = start + needle.len();
        let preceded_by_space = start > 0 && lower.as_bytes()[start - 1].is_ascii_whitespace();
        if !preceded_by_space {
            continue;
        }
        let rest = &html[from..];
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            let value: String = rest
                .chars()
                .take_while(|c| !c.is_ascii_whitespace() && *c != '>')
                .collect();
            values.push(value);
            continue;
        };
        if let Some(end) = rest[1..].find(quote) {
            values.push(rest[1..1 + end].to_string());
        }
    }
    values
}

/// Fails when a page or stylesheet points the browser at another host.
fn assert_no_foreign_references(what: &str, text: &str, patterns: &[&str]) {
    let lower = text.to_lowercase();
    for pattern in patterns {
        assert!(
            !lower.contains(pattern),
            "{what} references an external host ({pattern:?}); every asset must be self-hosted"
        );
    }
}

const HTML_PATTERNS: &[&str] = &[
    "src=\"http",
    "src='http",
    "href=\"http",
    "href='http",
    "url(http",
    "url(\"http",
    "url('http",
    "src=\"//",
    "href=\"//",
    "from \"http",
    "from 'http",
    "from\"http",
    "import(\"http",
    "import('http",
    "@import \"http",
    "@import url(http",
];

const CSS_PATTERNS: &[&str] = &[
    "url(http",
    "url(\"http",
    "url('http",
    "url(//",
    "@import \"http",
    "@import url(http",
];

const JS_PATTERNS: &[&str] = &[
    "from\"http",
    "from \"http",
    "from 'http",
    "import(\"http",
    "import('http",
    "import\"http",
    "import \"http",
];

/// Loads a GraphiQL page and every asset it references from corebank itself.
async fn check_graphiql_page(app: &TestApp, path: &str) {
    let response = app.get(path, "text/html").await;
    assert_eq!(response.status(), 200, "GET {path} as a browser");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/html"),
        "GET {path}: content-type {content_type}"
    );
    let html = response.text().await.unwrap();
    assert!(
        html.to_lowercase().contains("graphiql"),
        "GET {path} is not GraphiQL:\n{html:.1000}"
    );
    assert_no_foreign_references(path, &html, HTML_PATTERNS);

    let mut assets = HashSet::new();
    for value in attribute_values(&html, "src")
        .into_iter()
        .chain(attribute_values(&html, "href"))
    {
        let value = value.trim().to_string();
        assert!(
            !value.to_lowercase().starts_with("http") && !value.starts_with("//"),
            "{path} references an external asset {value:?}"
        );
        if value.is_empty()
            || value.starts_with('#')
            || value.starts_with("data:")
            || value.starts_with("blob:")
            || value.starts_with("javascript:")
        {
            continue;
        }
        let absolute = if value.starts_with('/') {
            value
        } else {
            format!("/{}", value.trim_start_matches("./"))
        };
        assets.insert(absolute);
    }
    assert!(
        html.to_lowercase().contains("<script"),
        "GraphiQL needs a script (inline or self-hosted)"
    );
    for asset in assets {
        let response = app.get(&asset, "*/*").await;
        assert_eq!(response.status(), 200, "asset {asset} referenced by {path}");
        let body = response.text().await.unwrap_or_default();
        let name = asset.split('?').next().unwrap_or_default();
        if name.ends_with(".css") {
            assert_no_foreign_references(&asset, &body, CSS_PATTERNS);
        } else if name.ends_with(".js") || name.ends_with(".mjs") {
            assert_no_foreign_references(&asset, &body, JS_PATTERNS);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_is_served_at_the_root_with_self_hosted_assets() {
    let app = TestApp::spawn().await;
    check_graphiql_page(&app, "/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_is_served_on_get_graphql_for_browsers() {
    let app = TestApp::spawn().await;
    check_graphiql_page(&app, "/graphql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_document_is_graphql_parse_failed() {
    let app = TestApp::spawn().await;
    let resp = app.gql(None, "{ me { id ", json!({})).await;
    expect_code(&resp, "GRAPHQL_PARSE_FAILED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_field_is_graphql_validation_failed() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let resp = app
        .gql(user.token(), "{ me { id noSuchField } }", json!({}))
        .await;
    expect_code(&resp, "GRAPHQL_VALIDATION_FAILED");
    let resp = app
        .gql(user.token(), "{ noSuchRootField }", json!({}))
        .await;
    expect_code(&resp, "GRAPHQL_VALIDATION_FAILED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncoercible_variables_are_bad_user_input() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let account = app.open_account(&user, "CHECKING", "USD").await;

    // A JSON number for Decimal.
    let resp = app.deposit_raw(&user, &account.id, 100, &key()).await;
    expect_code(&resp, "BAD_USER_INPUT");
    let resp = app.deposit_raw(&user, &account.id, 12.5, &key()).await;
    expect_code(&resp, "BAD_USER_INPUT");

    // An unknown enum value.
    let resp = app
        .gql(
            user.token(),
            "mutation O($k: AccountKind!) { openAccount(input: {kind: $k, currency: \"USD\"}) { id } }",
            json!({ "k": "PLATINUM" }),
        )
        .await;
    expect_code(&resp, "BAD_USER_INPUT");
    assert_eq!(app.account(&user, &account.id).await["balance"], "0.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_body_is_refused() {
    let app = TestApp::spawn().await;
    let body = json!({
        "query": "query Q($x: String) { __typename }",
        "variables": { "x": "a".repeat(2 * 1024 * 1024) },
    })
    .to_string();
    let result = app
        .http
        .post(app.url("/graphql"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(body)
        .send()
        .await;
    match result {
        Ok(response) => {
            let status = response.status();
            if status != 413 {
                let text = response.text().await.unwrap_or_default();
                let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
                    panic!("a 2 MiB body got {status} with a non-JSON body: {text:.300}")
                });
                let value = check_response(value);
                assert!(
                    !error_codes(&value).is_empty() && value["data"].is_null(),
                    "a 2 MiB body must be refused (413 or an error), got {status}: {value:.300}"
                );
            }
        }
        Err(e) => {
            // A server that answers 413 before reading the whole body may
            // close the connection under the client's feet; that is a refusal
            // as long as the server is still up.
            eprintln!("2 MiB body: transport error {e}; checking the server is alive");
        }
    }
    // A fresh client: the pooled connection may be the one the server just
    // closed after its 413, and reusing it fails on the client side.
    let health = reqwest::Client::new()
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /healthz after the oversized body failed: {e}"));
    assert_eq!(health.status(), 200, "the server survives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_graphql_matches_the_served_schema() {
    let committed_path = repo_root().join("schema.graphql");
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; regenerate with `cargo run -p api -- --print-schema > schema.graphql`",
            committed_path.display()
        )
    });
    let mut command = tokio::process::Command::new(api_binary());
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "JWT_SECRET",
        "BIND_ADDR",
        "SMTP_URL",
    ] {
        command.env_remove(var);
    }
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        command.arg("--print-schema").kill_on_drop(true).output(),
    )
    .await
    .expect("api --print-schema finishes within 60 s")
    .expect("run api --print-schema");
    assert!(
        output.status.success(),
        "api --print-schema failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).expect("schema is UTF-8");
    let normalize = |s: &str| s.replace("\r\n", "\n").trim().to_string();
    assert!(
        normalize(&printed) == normalize(&committed),
        "schema.graphql differs from the schema the server serves; \
         regenerate with `cargo run -p api -- --print-schema > schema.graphql`"
    );
}

/// Runs a binary with only `env` from the contract's configuration and
/// returns its exit status and combined output; fails if it keeps running.
async fn run_to_exit(
    binary: std::path::PathBuf,
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String) {
    let mut command = tokio::process::Command::new(&binary);
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "REDIS_PREFIX",
        "BIND_ADDR",
        "JWT_SECRET",
        "SMTP_URL",
        "MAIL_FROM",
        "EMAIL_VERIFICATION",
        "BOOTSTRAP_ADMIN_EMAIL",
        "BOOTSTRAP_ADMIN_PASSWORD",
        "PUBLIC_URL",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied()).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} with {env:?} is still running after 30 s; invalid configuration must fail fast",
                binary.display()
            )
        })
        .expect("run binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_fails_fast_naming_the_variable() {
    // The database does not exist: a server that touched it before checking
    // its configuration would fail with another message.
    let missing_db = format!(
        "postgres://postgres:postgres@127.0.0.1:5432/cb_t_missing_{}",
        uuid::Uuid::new_v4().simple()
    );
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let bind = format!("127.0.0.1:{port}");
    let sqlite = format!(
        "sqlite://{}/cb-config-{}.db?mode=rwc",
        std::env::temp_dir().display(),
        uuid::Uuid::new_v4().simple()
    );
    let redis = test_redis_url();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "JWT_SECRET",
            vec![
                ("DATABASE_URL", &missing_db),
                ("REDIS_URL", &redis),
                ("BIND_ADDR", &bind),
            ],
        ),
        (
            "JWT_SECRET",
            vec![
                ("DATABASE_URL", &missing_db),
                ("REDIS_URL", &redis),
                ("BIND_ADDR", &bind),
                ("JWT_SECRET", "too-short"),
            ],
        ),
        (
            "EMAIL_VERIFICATION",
            vec![
                ("DATABASE_URL", &sqlite),
                ("BIND_ADDR", &bind),
                ("EMAIL_VERIFICATION", "sometimes"),
            ],
        ),
        (
            "DATABASE_URL",
            vec![
                ("DATABASE_URL", "mysql://localhost/corebank"),
                ("BIND_ADDR", &bind),
            ],
        ),
    ];
    for (variable, env) in cases {
        let (status, output) = run_to_exit(api_binary(), &env).await;
        assert!(!status.success(), "api started with {env:?}:\n{output}");
        assert!(
            output.contains(variable),
            "api with {env:?} must name {variable}:\n{output}"
        );
    }
    // The worker needs Redis.
    let secret = "0123456789abcdef0123456789abcdef0123456789abcdef";
    let (status, output) = run_to_exit(
        worker_binary(),
        &[("DATABASE_URL", &missing_db), ("JWT_SECRET", secret)],
    )
    .await;
    assert!(
        !status.success(),
        "worker started without REDIS_URL:\n{output}"
    );
    assert!(
        output.contains("REDIS_URL"),
        "worker without REDIS_URL must name it:\n{output}"
    );
    let leftover = sqlite
        .trim_start_matches("sqlite://")
        .trim_end_matches("?mode=rwc")
        .to_string();
    let _ = std::fs::remove_file(leftover);
}

// ---------------------------------------------------------------------------
// The contract's types, fields and arguments, checked by introspection.
// ---------------------------------------------------------------------------

/// `Type.field(arg: Type, ...): Type`; `{...}` is an input object whose
/// type name is free but whose fields are fixed.
const CONTRACT_FIELDS: &str = r#"
User.id: ID!
User.email: String!
User.fullName: String!
User.role: Role!
User.emailVerified: Boolean!
User.createdAt: DateTime!
User.accounts(first: Int, after: String): AccountConnection!
Account.id: ID!
Account.number: String!
Account.name: String
Account.kind: AccountKind!
Account.currency: String!
Account.status: AccountStatus!
Account.balance: Decimal!
Account.availableBalance: Decimal!
Account.owner: User!
Account.createdAt: DateTime!
Account.transfers(first: Int, after: String, status: TransferStatus): TransferConnection!
Party.accountNumber: String!
Party.holderName: String!
Party.account: Account
Transfer.id: ID!
Transfer.kind: TransferKind!
Transfer.status: TransferStatus!
Transfer.amount: Decimal!
Transfer.currency: String!
Transfer.source: Party
Transfer.destination: Party
Transfer.memo: String
Transfer.failureReason: String
Transfer.idempotencyKey: String
Transfer.createdAt: DateTime!
Transfer.settledAt: DateTime
Contact.id: ID!
Contact.name: String!
Contact.accountNumber: String!
Contact.createdAt: DateTime!
AuthPayload.accessToken: String!
AuthPayload.refreshToken: String!
AuthPayload.user: User!
Notification.id: ID!
Notification.kind: String!
Notification.subject: String!
Notification.body: String!
Notification.emailStatus: EmailStatus!
Notification.createdAt: DateTime!
AuditEntry.id: ID!
AuditEntry.actor: User!
AuditEntry.action: String!
AuditEntry.targetId: ID
AuditEntry.reason: String
AuditEntry.createdAt: DateTime!
TrialBalanceLine.currency: String!
TrialBalanceLine.customerTotal: Decimal!
TrialBalanceLine.systemTotal: Decimal!
TrialBalanceLine.net: Decimal!
Query.me: User!
Query.account(id: ID!): Account!
Query.accounts(first: Int, after: String): AccountConnection!
Query.transfer(id: ID!): Transfer!
Query.transfers(accountId: ID, status: TransferStatus, kind: TransferKind, first: Int, after: String): TransferConnection!
Query.contacts: [Contact!]!
Query.notifications(first: Int, after: String): NotificationConnection!
Query.users(search: String, first: Int, after: String): UserConnection!
Query.allAccounts(status: AccountStatus, first: Int, after: String): AccountConnection!
Query.allTransfers(status: TransferStatus, kind: TransferKind, first: Int, after: String): TransferConnection!
Query.auditLog(first: Int, after: String): AuditEntryConnection!
Query.trialBalance: [TrialBalanceLine!]!
Mutation.register(input: {email: String!, password: String!, fullName: String!}): AuthPayload!
Mutation.login(input: {email: String!, password: String!}): AuthPayload!
Mutation.refreshToken(refreshToken: String!): AuthPayload!
Mutation.logout(refreshToken: String!): Boolean!
Mutation.verifyEmail(token: String!): User!
Mutation.resendVerificationEmail: Boolean!
Mutation.openAccount(input: {kind: AccountKind!, currency: String!, name: String}): Account!
Mutation.closeAccount(id: ID!): Account!
Mutation.deposit(input: {accountId: ID!, amount: Decimal!, idempotencyKey: String!}): Transfer!
Mutation.withdraw(input: {accountId: ID!, amount: Decimal!, idempotencyKey: String!}): Transfer!
Mutation.transfer(input: {fromAccountId: ID!, toAccountNumber: String, toContactId: ID, amount: Decimal!, memo: String, idempotencyKey: String!}): Transfer!
Mutation.addContact(input: {name: String!, accountNumber: String!}): Contact!
Mutation.removeContact(id: ID!): Boolean!
Mutation.freezeAccount(id: ID!, reason: String!): Account!
Mutation.unfreezeAccount(id: ID!): Account!
Mutation.changeAccountKind(id: ID!, kind: AccountKind!): Account!
Mutation.reverseTransfer(id: ID!, reason: String!): Transfer!
Mutation.setUserRole(userId: ID!, role: Role!): User!
"#;

const CONTRACT_ENUMS: &[(&str, &[&str])] = &[
    ("Role", &["CUSTOMER", "ADMIN"]),
    ("AccountKind", &["CHECKING", "SAVINGS"]),
    ("AccountStatus", &["ACTIVE", "FROZEN", "CLOSED"]),
    (
        "TransferKind",
        &[
            "TRANSFER",
            "DEPOSIT",
            "WITHDRAWAL",
            "BILL_PAYMENT",
            "REVERSAL",
        ],
    ),
    ("TransferStatus", &["PENDING", "COMPLETED", "FAILED"]),
    ("EmailStatus", &["NOT_SENT", "QUEUED", "SENT", "FAILED"]),
];

const CONNECTIONS: &[&str] = &[
    "AccountConnection",
    "TransferConnection",
    "NotificationConnection",
    "UserConnection",
    "AuditEntryConnection",
];

struct Signature {
    owner: String,
    field: String,
    args: Vec<(String, String)>,
    ret: String,
}

/// Splits on `sep` outside of braces.
fn split_top(text: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if c == sep && depth == 0 {
            parts.push(current.trim().to_string());
            current.clear();
        } else {
            current.push(c);
        }
    }
    if !current.trim().is_empty() {
        parts.push(current.trim().to_string());
    }
    parts
}

fn parse_signature(line: &str) -> Signature {
    let (owner, rest) = line.split_once('.').expect("Type.field");
    let paren = rest.find('(');
    let colon = rest.find(':').expect("return type");
    let (field, args, ret) = match paren {
        Some(p) if p < colon => {
            let close = rest.rfind(')').expect("closing paren");
            let args = split_top(&rest[p + 1..close], ',')
                .into_iter()
                .map(|arg| {
                    let (name, ty) = arg.split_once(':').expect("arg: Type");
                    (name.trim().to_string(), ty.trim().to_string())
                })
                .collect();
            let ret = rest[close + 1..].trim().trim_start_matches(':').trim();
            (&rest[..p], args, ret)
        }
        _ => (&rest[..colon], Vec::new(), rest[colon + 1..].trim()),
    };
    Signature {
        owner: owner.trim().to_string(),
        field: field.trim().to_string(),
        args,
        ret: ret.to_string(),
    }
}

fn render_type(t: &Value) -> String {
    match t["kind"].as_str() {
        Some("NON_NULL") => format!("{}!", render_type(&t["ofType"])),
        Some("LIST") => format!("[{}]", render_type(&t["ofType"])),
        _ => t["name"].as_str().unwrap_or("?").to_string(),
    }
}

fn named_type(t: &Value) -> String {
    if t["ofType"].is_object() {
        named_type(&t["ofType"])
    } else {
        t["name"].as_str().unwrap_or("?").to_string()
    }
}

const INTROSPECTION: &str = r#"
query Contract {
  __schema {
    queryType { name }
    mutationType { name }
    types {
      name kind
      fields { name type { ...T } args { name defaultValue type { ...T } } }
      inputFields { name defaultValue type { ...T } }
      enumValues { name }
    }
  }
}
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_has_every_type_field_and_argument_of_the_contract() {
    let app = TestApp::spawn().await;
    let user = app.register_random().await;
    let data = expect_data(app.gql(user.token(), INTROSPECTION, json!({})).await);
    let schema = &data["__schema"];
    let query_root = schema["queryType"]["name"].as_str().unwrap().to_string();
    let mutation_root = schema["mutationType"]["name"]
        .as_str()
        .expect("a mutation root")
        .to_string();
    let types: HashMap<String, Value> = schema["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t.clone()))
        .collect();

    let mut problems = Vec::new();
    for scalar in ["Decimal", "DateTime"] {
        if types.get(scalar).map(|t| t["kind"] == "SCALAR") != Some(true) {
            problems.push(format!("scalar {scalar} is missing"));
        }
    }
    for (name, values) in CONTRACT_ENUMS {
        let Some(t) = types.get(*name) else {
            problems.push(format!("enum {name} is missing"));
            continue;
        };
        let have: HashSet<&str> = t["enumValues"]
            .as_array()
            .map(|v| v.iter().filter_map(|e| e["name"].as_str()).collect())
            .unwrap_or_default();
        for value in *values {
            if !have.contains(value) {
                problems.push(format!("enum {name} lacks {value}"));
            }
        }
    }
    for name in CONNECTIONS {
        let Some(t) = types.get(*name) else {
            problems.push(format!("type {name} is missing"));
            continue;
        };
        let fields = &t["fields"];
        let field = |n: &str| {
            fields
                .as_array()
                .and_then(|f| f.iter().find(|x| x["name"] == n))
                .cloned()
        };
        for required in ["edges", "pageInfo", "totalCount"] {
            if field(required).is_none() {
                problems.push(format!("{name}.{required} is missing"));
            }
        }
        if let Some(edges) = field("edges") {
            let edge = types
                .get(&named_type(&edges["type"]))
                .cloned()
                .unwrap_or_default();
            for required in ["cursor", "node"] {
                if !edge["fields"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x["name"] == required))
                {
                    problems.push(format!("{name} edges lack {required}"));
                }
            }
        }
        if let Some(page_info) = field("pageInfo") {
            let page = types
                .get(&named_type(&page_info["type"]))
                .cloned()
                .unwrap_or_default();
            for required in ["hasNextPage", "endCursor"] {
                if !page["fields"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x["name"] == required))
                {
                    problems.push(format!("{name}.pageInfo lacks {required}"));
                }
            }
        }
    }

    for line in CONTRACT_FIELDS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let sig = parse_signature(line);
        let owner = match sig.owner.as_str() {
            "Query" => query_root.clone(),
            "Mutation" => mutation_root.clone(),
            other => other.to_string(),
        };
        let Some(t) = types.get(&owner) else {
            problems.push(format!("type {owner} is missing (for {line})"));
            continue;
        };
        let Some(field) = t["fields"]
            .as_array()
            .and_then(|f| f.iter().find(|x| x["name"] == sig.field.as_str()))
        else {
            problems.push(format!("{line}: field missing"));
            continue;
        };
        let ret = render_type(&field["type"]);
        if ret != sig.ret {
            problems.push(format!("{line}: returns {ret}"));
        }
        let served_args = field["args"].as_array().cloned().unwrap_or_default();
        for (name, ty) in &sig.args {
            let Some(arg) = served_args.iter().find(|a| a["name"] == name.as_str()) else {
                problems.push(format!("{line}: argument {name} missing"));
                continue;
            };
            if let Some(inner) = ty.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                let input = types
                    .get(&named_type(&arg["type"]))
                    .cloned()
                    .unwrap_or_default();
                if input["kind"] != "INPUT_OBJECT" {
                    problems.push(format!("{line}: {name} is not an input object"));
                    continue;
                }
                let served_fields = input["inputFields"].as_array().cloned().unwrap_or_default();
                let mut expected = HashSet::new();
                for input_field in split_top(inner, ',') {
                    let (fname, fty) = input_field.split_once(':').unwrap();
                    let (fname, fty) = (fname.trim(), fty.trim());
                    expected.insert(fname.to_string());
                    match served_fields.iter().find(|f| f["name"] == fname) {
                        None => problems.push(format!("{line}: input field {fname} missing")),
                        Some(f) if render_type(&f["type"]) != fty => problems.push(format!(
                            "{line}: input field {fname} is {}",
                            render_type(&f["type"])
                        )),
                        _ => {}
                    }
                }
                // Added input fields must not break existing clients.
                for f in &served_fields {
                    let fname = f["name"].as_str().unwrap_or_default();
                    if !expected.contains(fname)
                        && f["type"]["kind"] == "NON_NULL"
                        && f["defaultValue"].is_null()
                    {
                        problems.push(format!("{line}: added input field {fname} is required"));
                    }
                }
            } else if render_type(&arg["type"]) != *ty {
                problems.push(format!(
                    "{line}: argument {name} is {}",
                    render_type(&arg["type"])
                ));
            }
        }
        // Added arguments must not break existing clients.
        for arg in &served_args {
            let name = arg["name"].as_str().unwrap_or_default();
            if !sig.args.iter().any(|(n, _)| n == name)
                && arg["type"]["kind"] == "NON_NULL"
                && arg["defaultValue"].is_null()
            {
                problems.push(format!("{line}: added argument {name} is required"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the served schema departs from the contract:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn harness_helpers_are_right() {
    assert!(luhn_valid("79927398713"));
    assert!(!luhn_valid("79927398710"));
    assert_eq!(with_luhn_digit("7992739871"), "79927398713");
    assert_eq!(minor("750.00", 2), 75000);
    assert_eq!(minor("-0.05", 2), -5);
    assert_eq!(minor("1500", 0), 1500);
    assert_eq!(fmt_minor(75000, 2), "750.00");
    assert_eq!(fmt_minor(-5, 2), "-0.05");
    assert_eq!(fmt_minor(1500, 0), "1500");
    assert_eq!(
        base64url_decode("eyJhbGciOiJIUzI1NiJ9"),
        br#"{"alg":"HS256"}"#
    );
    assert_eq!(
        metric_value(
            "# HELP x\ncorebank_db_statements_total 12\ncorebank_db_statements_total_other 3\n",
            "corebank_db_statements_total"
        ),
        Some(12.0)
    );
    assert_eq!(
        metric_value(
            "corebank_db_statements_total{kind=\"a\"} 2\ncorebank_db_statements_total{kind=\"b\"} 3e0\n",
            "corebank_db_statements_total"
        ),
        Some(5.0)
    );
    let sig = parse_signature(
        "Mutation.transfer(input: {fromAccountId: ID!, toAccountNumber: String}): Transfer!",
    );
    assert_eq!(sig.field, "transfer");
    assert_eq!(sig.args.len(), 1);
    assert_eq!(
        sig.args[0].1,
        "{fromAccountId: ID!, toAccountNumber: String}"
    );
    assert_eq!(sig.ret, "Transfer!");
    let sig = parse_signature("Query.contacts: [Contact!]!");
    assert_eq!(
        (sig.field.as_str(), sig.ret.as_str()),
        ("contacts", "[Contact!]!")
    );
    assert_eq!(
        attribute_values(
            "<script src=\"/assets/a.js\"></script><link rel=x href='/b.css'>",
            "src"
        ),
        vec!["/assets/a.js".to_string()]
    );
    assert_eq!(
        attribute_values("<link rel=x href='/b.css'>", "href"),
        vec!["/b.css".to_string()]
    );
}
