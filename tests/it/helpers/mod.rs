//! Test harness: `spawn_app()`, databases cloned from a template, sign-up/login helpers.

pub mod api_proc;
pub mod db;
pub mod fixtures;
pub mod sim;

pub mod jobs;
pub mod redis_proc;
pub mod stack;
pub mod worker_proc;

use std::net::SocketAddr;
use std::sync::Arc;

use billing::settings::{Environment, Settings};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

pub fn test_redis_url() -> String {
    std::env::var("PILLIVERY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A plain HTTP client (rustls needs its crypto provider chosen first).
pub fn http_client() -> reqwest::Client {
    billing::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Settings for one test: its own database and Redis prefix, generous rate limits,
/// webhooks to private addresses allowed.
pub fn test_settings(database_url: &str) -> Settings {
    let mut s = Settings {
        environment: Environment::Test,
        ..Settings::default()
    };
    s.database.url = database_url.to_owned().into();
    s.database.max_connections = 10;
    s.redis.url = test_redis_url().into();
    s.redis.prefix = format!("test:{}:", Uuid::new_v4().simple());
    s.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    s.rate_limit.per_ip_per_sec = 10_000;
    s.rate_limit.per_ip_burst = 10_000;
    s.rate_limit.login_per_min = 10_000;
    s.rate_limit.login_burst = 10_000;
    s.rate_limit.per_account_per_min = 10_000;
    s.rate_limit.per_account_burst = 10_000;
    // Test receivers listen on 127.0.0.1.
    s.webhooks.allow_private_destinations = true;
    s
}

/// A fresh migrated database and a pool on it.
pub async fn test_db() -> (String, sqlx::PgPool) {
    let url = db::fresh_database().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect(&url)
        .await
        .unwrap();
    (url, pool)
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: sqlx::PgPool,
    pub settings: Arc<Settings>,
    pub database_url: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the real API on `127.0.0.1:0`; `configure` adjusts the settings first.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(db::fresh_database().await, configure).await
}

/// The API on a Redis of its own (one a test may stop), failing Redis calls after 300 ms.
pub async fn spawn_app_on_redis(redis_url: String) -> TestApp {
    spawn_app_with(|s| {
        s.redis.url = redis_url.into();
        s.redis.timeout_ms = std::time::Duration::from_millis(300);
    })
    .await
}

/// [`spawn_app_with`] on an existing database (a second API process of the same store,
/// e.g. after a configuration change).
pub async fn spawn_app_on(database_url: String, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings(&database_url);
    configure(&mut settings);
    settings.validate().expect("test settings valid");
    if std::env::var_os("TEST_LOG").is_some() {
        billing::telemetry::init_tracing(&settings.log);
    }
    let ctx = billing::Ctx::new(settings, Arc::new(billing::clock::SystemClock)).unwrap();
    let listener = tokio::net::TcpListener::bind(ctx.settings.api.listen)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let state = api::AppState::new(ctx.clone());
    tokio::spawn(api::serve(listener, state, std::future::pending()));
    TestApp {
        base: format!("http://{addr}"),
        client: http_client(),
        db: ctx.db.pool().clone(),
        settings: ctx.settings.clone(),
        database_url,
    }
}

/// A signed-up user and the password it logs in with.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub email: String,
    pub password: String,
    pub display_name: String,
    pub phone: String,
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl Tokens {
    pub fn from_json(v: &Value) -> Self {
        Tokens {
            access: v["access_token"].as_str().expect("access_token").to_owned(),
            refresh: v["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
        }
    }
}

/// A valid signup body, unique per call.
pub fn signup_body() -> Value {
    let n: u32 = rand::random::<u32>() % 90_000_000 + 10_000_000;
    json!({
        "email": format!("user{n}@example.com"),
        "password": "Secret12!",
        "display_name": format!("user{n}"),
        "real_name": "홍길동",
        "phone": format!("010-{:04}-{:04}", n / 10_000, n % 10_000),
        "city": "Seoul",
        "detail_address": "1 Sejong-daero",
    })
}

/// The `id`s of a page's `items`, in order.
pub fn page_ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

/// Checks the error envelope and returns its body.
pub async fn expect_error(resp: Response, status: StatusCode, code: &str) -> Value {
    let got = resp.status();
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "status; body {body}");
    assert_eq!(body["error"]["code"], code, "code; body {body}");
    assert!(body["error"]["message"].is_string(), "message; body {body}");
    assert_eq!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
        "application/json"
    );
    body
}

/// The `field` names of an error envelope.
pub fn error_fields(body: &Value) -> Vec<String> {
    body["error"]["fields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl TestApp {
    /// A context of this app's settings (its database and Redis prefix) on the system
    /// clock, for calling `billing` directly as a worker would.
    pub fn ctx(&self) -> billing::Ctx {
        billing::Ctx::new(
            (*self.settings).clone(),
            Arc::new(billing::clock::SystemClock),
        )
        .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// `GET path` as the holder of `token`, expecting 200 and JSON.
    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        let resp = self.get(path).bearer_auth(token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        resp.json().await.unwrap()
    }

    /// `GET path` without a token, as text (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).send().await.unwrap().text().await.unwrap()
    }

    pub fn post_json(&self, path: &str, body: &Value) -> RequestBuilder {
        self.request(Method::POST, path).json(body)
    }

    pub async fn signup_with(&self, body: &Value) -> Response {
        self.post_json("/api/users", body).send().await.unwrap()
    }

    /// Signs up a fresh user (asserting 201).
    pub async fn signup(&self) -> TestUser {
        let body = signup_body();
        let resp = self.signup_with(&body).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let created: Value = resp.json().await.unwrap();
        TestUser {
            id: created["id"].as_i64().unwrap(),
            email: body["email"].as_str().unwrap().to_owned(),
            password: body["password"].as_str().unwrap().to_owned(),
            display_name: body["display_name"].as_str().unwrap().to_owned(),
            phone: created["phone"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn login_raw(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/api/auth/login",
            &json!({"email": email, "password": password}),
        )
        .send()
        .await
        .unwrap()
    }

    pub async fn login(&self, user: &TestUser) -> Tokens {
        let resp = self.login_raw(&user.email, &user.password).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 1800);
        Tokens::from_json(&body)
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json(
            "/api/auth/refresh",
            &json!({"refresh_token": refresh_token}),
        )
        .send()
        .await
        .unwrap()
    }

    pub async fn me(&self, access: &str) -> Response {
        self.get("/api/users/me")
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
    }

    /// A signed-up user made admin directly in the database, logged in.
    pub async fn admin(&self) -> (TestUser, Tokens) {
        let user = self.signup().await;
        sqlx::query("UPDATE users SET role = 'admin' WHERE id = $1")
            .bind(user.id)
            .execute(&self.db)
            .await
            .unwrap();
        let tokens = self.login(&user).await;
        (user, tokens)
    }

    /// A customer (not an admin) GETting `path` is refused with 403 `forbidden`.
    pub async fn refuses_customers(&self, path: &str) {
        let user = self.signup().await;
        let tokens = self.login(&user).await;
        let resp = self
            .get(path)
            .bearer_auth(&tokens.access)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    }

    pub async fn user_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }
}

/// A port nothing listens on right now (for child processes to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port nothing listens on, kept bound (without listening, and without
/// `SO_REUSEADDR`) by the returned socket so that no other test's server can take it in
/// the meantime: connections to it are refused until the socket is dropped. A port from
/// [`free_port`] can be taken by a parallel test, which then answers in its place.
pub fn closed_port() -> (u16, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (port, socket)
}

/// Path of a workspace binary built next to this test binary.
pub fn bin_path(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/it-xxxx → target/debug/<name>
    let dir = exe.parent().and_then(|p| p.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; `cargo build --workspace --bins` first (ops/test does)",
        path.display()
    );
    path
}

/// Runs an operator command of `pillivery-worker` against a test database and returns
/// what it printed; panics (with its output) if it fails.
pub fn worker_cli(database_url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(bin_path("pillivery-worker"))
        .args(args)
        .env("PILLIVERY__DATABASE__URL", database_url)
        .env("PILLIVERY__REDIS__URL", test_redis_url())
        .env("PILLIVERY__ENVIRONMENT", "test")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pillivery-worker {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
