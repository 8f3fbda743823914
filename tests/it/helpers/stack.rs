//! The whole system as real processes: `pillivery-pgsim` (the KakaoPay simulator),
//! `pillivery-api` and one `pillivery-worker`, on a fresh database and Redis prefix, with
//! helpers that act as the buyer (place an order, follow KakaoPay's redirect) and read the
//! simulator's ledger. Everything is killed on drop; the logs are printed when a test
//! fails.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, LOCATION};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use super::api_proc::{ApiProcess, ChildProcess};
use super::worker_proc::WorkerProcess;
use super::{db, free_port, http_client, test_settings, TestApp};

/// The secret key the simulator requires and the API and worker present.
pub const SECRET_KEY: &str = "pv-e2e-secret-key";

pub struct Stack {
    /// The API as a client sees it (`base` is the API process), plus the database.
    pub app: TestApp,
    /// The simulator's base URL: KakaoPay's API, the buyer pages and `/__…` admin.
    pub pg_url: String,
    pgsim: ChildProcess,
    api: ApiProcess,
    pub worker: WorkerProcess,
}

impl Deref for Stack {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\n======== pillivery-pgsim ========\n{}\n======== pillivery-api ========\n{}\n======== pillivery-worker ========\n{}",
                self.pgsim.logs(),
                self.api.logs(),
                self.worker.logs()
            );
        }
    }
}

impl Stack {
    /// Starts the simulator (extra `pgsim_args` are its startup knobs, e.g.
    /// `--auto-approve`; a dropped or timed-out answer is held only 300 ms), the API on its
    /// own address (its `public_url`, so KakaoPay's redirects reach it) and one worker
    /// pointed at the simulator; returns once each answers its health check.
    pub async fn start(pgsim_args: &[&str]) -> Stack {
        Self::start_with(pgsim_args, &[]).await
    }

    /// [`Stack::start`] with extra settings for the worker (`PILLIVERY__…` pairs).
    pub async fn start_with(pgsim_args: &[&str], worker_settings: &[(&str, &str)]) -> Stack {
        let pg_port = free_port();
        let pg_url = format!("http://127.0.0.1:{pg_port}");
        let listen = format!("127.0.0.1:{pg_port}");
        let mut args = vec![
            "--listen",
            &listen,
            "--public-url",
            &pg_url,
            "--secret-key",
            SECRET_KEY,
            "--timeout-ms",
            "300",
        ];
        args.extend_from_slice(pgsim_args);
        let mut pgsim = ChildProcess::spawn("pillivery-pgsim", &args, |cmd| {
            cmd.env("RUST_LOG", "info");
        });

        let database_url = db::fresh_database().await;
        let prefix = format!("test:{}:", Uuid::new_v4().simple());
        let shared = [
            ("PILLIVERY__ENVIRONMENT", "test"),
            ("PILLIVERY__REDIS__PREFIX", prefix.as_str()),
            ("PILLIVERY__KAKAOPAY__BASE_URL", pg_url.as_str()),
            ("PILLIVERY__KAKAOPAY__SECRET_KEY", SECRET_KEY),
            ("PILLIVERY__PAYMENTS__RECONCILE_MIN_BACKOFF_MS", "100"),
            ("PILLIVERY__PAYMENTS__RECONCILE_MAX_BACKOFF_MS", "2000"),
        ];
        let mut api = ApiProcess::spawn(&database_url, &shared);
        let mut worker_env = shared.to_vec();
        worker_env.extend([
            // the approval/cancel/fail URLs handed to KakaoPay point at the API
            ("PILLIVERY__API__PUBLIC_URL", api.base.as_str()),
            ("PILLIVERY__WORKER__POLL_INTERVAL_MS", "100"),
            // finished jobs stay as rows, so tests can count what ran
            ("PILLIVERY__WORKER__KEEP_FINISHED", "true"),
        ]);
        worker_env.extend_from_slice(worker_settings);
        let mut worker = WorkerProcess::spawn(&database_url, &worker_env);

        pgsim
            .wait_ok(&format!("{pg_url}/__health"), Duration::from_secs(20))
            .await;
        api.wait_ready().await;
        worker.wait_live().await;

        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(5)
            .connect(&database_url)
            .await
            .unwrap();
        let mut settings = test_settings(&database_url);
        settings.api.public_url.clone_from(&api.base);
        settings.redis.prefix = prefix;
        settings.kakaopay.base_url.clone_from(&pg_url);
        let app = TestApp {
            base: api.base.clone(),
            client: http_client(),
            db: pool,
            settings: Arc::new(settings),
            database_url,
        };
        Stack {
            app,
            pg_url,
            pgsim,
            api,
            worker,
        }
    }

    // ---- the customer ---------------------------------------------------------------------

    /// A fresh customer, logged in: the access token.
    pub async fn signup_and_login(&self) -> String {
        let user = self.signup().await;
        self.login(&user).await.access
    }

    /// `POST /api/orders` for a one-time order of `(item_id, quantity)` lines: the 201 body.
    pub async fn place_order(&self, token: &str, lines: &[(i64, i32)]) -> Value {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(item, qty)| json!({"item_id": item, "quantity": qty}))
            .collect();
        let body = json!({
            "kind": "one_time",
            "lines": lines,
            "receiver": {
                "name": "홍길동",
                "phone": "010-1234-5678",
                "city": "Seoul",
                "detail_address": "1 Sejong-daero",
            },
        });
        let resp = self
            .post_json("/api/orders", &body)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let order: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "place order: {order}");
        order
    }

    /// `GET /api/orders/{id}?wait={wait}`.
    pub async fn order(&self, token: &str, id: i64, wait: u64) -> Value {
        let resp = self
            .get(&format!("/api/orders/{id}?wait={wait}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let order: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "get order {id}: {order}");
        order
    }

    /// Reads the order (`?wait=5`, so changes arrive as they commit) until its status is
    /// `want`; fails after `within`.
    pub async fn order_until(&self, token: &str, id: i64, want: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let order = self.order(token, id, 5).await;
            if order["status"] == want {
                return order;
            }
            assert!(
                Instant::now() < deadline,
                "order {id} never became {want}; last: {order}"
            );
            // `?wait` answers at once in states the buyer has to move on from
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Places an order and waits until KakaoPay's redirect URL is there (`payment_ready`).
    pub async fn ready_order(&self, token: &str, lines: &[(i64, i32)]) -> Value {
        let placed = self.place_order(token, lines).await;
        let id = placed["id"].as_i64().unwrap();
        let ready = self
            .order_until(token, id, "payment_ready", Duration::from_secs(20))
            .await;
        let redirect = ready["payment"]["redirect_url"]
            .as_str()
            .unwrap_or_default();
        assert!(
            redirect.starts_with(&format!("{}/buyer/", self.pg_url)),
            "redirect_url of {ready}"
        );
        ready
    }

    /// `POST /api/orders/{id}/cancel`.
    pub async fn cancel(&self, token: &str, id: i64) -> Response {
        self.post_json(&format!("/api/orders/{id}/cancel"), &json!({}))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    // ---- the buyer at KakaoPay ------------------------------------------------------------

    /// What the buyer does with the order's `redirect_url` when the simulator runs with
    /// `--auto-approve`: opens the payment page, which sends them (302) to our approve route
    /// with a `pg_token`; that route is called with `Accept: application/json` (our own 303
    /// to the storefront is not followed). Returns the approve URL and its JSON outcome.
    pub async fn follow_redirect(&self, redirect_url: &str) -> (String, Value) {
        let approve_url = self.pg_redirect(redirect_url, "approve").await;
        let outcome = self.return_from_pg(&approve_url).await;
        (approve_url, outcome)
    }

    /// The buyer authenticates on the payment page without `--auto-approve` (the page's
    /// approve link): the approve URL with the `pg_token` KakaoPay sends them to, not
    /// followed.
    pub async fn buyer_approves(&self, redirect_url: &str) -> String {
        self.buyer_action(redirect_url, "approve").await
    }

    /// The buyer clicks `approve`, `cancel` (quits) or `fail` on the payment page: the URL
    /// of ours KakaoPay sends them back to, not followed.
    pub async fn buyer_action(&self, redirect_url: &str, action: &str) -> String {
        let page = redirect_url.split('?').next().unwrap();
        self.pg_redirect(&format!("{page}/{action}"), action).await
    }

    /// GETs a simulator page that must 302 to our `action` return route: the Location.
    async fn pg_redirect(&self, url: &str, action: &str) -> String {
        let resp = self.client.get(url).send().await.unwrap();
        let status = resp.status();
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::FOUND, "{url}: {body}");
        let location = location.unwrap();
        let ours = format!("{}/api/payments/kakaopay/{action}/", self.base);
        assert!(
            location.starts_with(&ours) && (action != "approve" || location.contains("pg_token=")),
            "KakaoPay sent the buyer to {location}"
        );
        location
    }

    /// The buyer's browser arriving at one of our KakaoPay return routes, asking for JSON:
    /// `{order_id, status, applied}`.
    pub async fn return_from_pg(&self, url: &str) -> Value {
        let resp = self
            .client
            .get(url)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        body
    }

    // ---- the simulator's admin ------------------------------------------------------------

    /// Every money movement the simulator recorded, in order.
    pub async fn ledger(&self) -> Vec<Value> {
        let v: Value = self.pg_admin_get("/__ledger").await;
        v["entries"].as_array().cloned().unwrap_or_default()
    }

    /// The ledger entries of one kind (`approve`, `charge`, `cancel`).
    pub async fn ledger_of(&self, kind: &str) -> Vec<Value> {
        self.ledger()
            .await
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .collect()
    }

    /// Changes some of the simulator's knobs (a partial JSON object).
    pub async fn set_knobs(&self, knobs: Value) {
        let resp = self
            .client
            .put(format!("{}/__knobs", self.pg_url))
            .json(&knobs)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "PUT /__knobs {knobs}: {body}");
    }

    /// Requests per endpoint, injected faults, faults left.
    pub async fn pg_stats(&self) -> Value {
        self.pg_admin_get("/__stats").await
    }

    /// Requests the simulator received at one KakaoPay endpoint (or `buyer`).
    pub async fn pg_requests(&self, endpoint: &str) -> i64 {
        self.pg_stats().await["requests"][endpoint]
            .as_i64()
            .unwrap_or(0)
    }

    /// KakaoPay API requests the simulator received in each second: `(unix second, n)`.
    pub async fn pg_per_second(&self) -> Vec<(i64, u64)> {
        self.pg_stats().await["per_second"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["at"].as_i64().unwrap(), s["requests"].as_u64().unwrap()))
            .collect()
    }

    // ---- the worker's metrics -------------------------------------------------------------

    /// The worker's `/metrics` page (Prometheus text).
    pub async fn worker_metrics(&self) -> String {
        self.worker.metrics().await
    }

    /// The sum of a worker metric's samples matching `series`: a name with optional
    /// labels, e.g. `jobs_finished_total{outcome="deferred"}` (see [`metric_sum`]).
    pub async fn worker_metric(&self, series: &str) -> f64 {
        metric_sum(&self.worker_metrics().await, series)
    }

    async fn pg_admin_get(&self, path: &str) -> Value {
        let resp = self
            .client
            .get(format!("{}{path}", self.pg_url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        resp.json().await.unwrap()
    }
}

/// The sum of the samples in a Prometheus text page whose series matches: the name, then
/// (if given) every `label="value"` pair in `labels`.
pub fn metric_sum(page: &str, series: &str) -> f64 {
    let (name, labels) = match series.split_once('{') {
        Some((n, l)) => (n, l.trim_end_matches('}')),
        None => (series, ""),
    };
    let wanted: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (n, rest) = key.split_once('{').unwrap_or((key, ""));
            (n == name && wanted.iter().all(|w| rest.contains(w)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}
