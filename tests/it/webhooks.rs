//! Outbox delivery to webhooks, end to end: a real receiver (an axum server in the test
//! that records every request and answers per a script), the real `pillivery-worker`
//! binary with a short retry schedule, and the admin API. Also the destination policy
//! (no private addresses unless allowed) and secret rotation with its overlap window.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use axum::Router;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::jobs::wait_until;
use crate::helpers::stack::Stack;
use crate::helpers::worker_proc::WorkerProcess;
use crate::helpers::{
    closed_port, error_fields, expect_error, fixtures, spawn_app, spawn_app_with, worker_cli,
    TestApp,
};
use billing::settings::Settings;

// ---- the receiver ----------------------------------------------------------------------

/// How the receiver answers one request.
#[derive(Debug, Clone)]
enum Answer {
    Status(u16),
    /// Answers `status` after `ms` (longer than the worker's timeout: a slow receiver).
    After {
        ms: u64,
        status: u16,
    },
    /// Answers `status` with this body.
    Body(u16, Arc<str>),
    /// 200 if `Pillivery-Signature` verifies with the secret given to
    /// [`Receiver::verify_with`], 401 otherwise: a receiver that checks signatures.
    Verified,
}

#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Log {
    requests: Vec<Received>,
}

#[derive(Clone)]
struct Script {
    log: Arc<Mutex<Log>>,
    answers: Arc<Vec<Answer>>,
    then: Answer,
    secret: Arc<Mutex<String>>,
}

struct Receiver {
    url: String,
    log: Arc<Mutex<Log>>,
    secret: Arc<Mutex<String>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(State(s): State<Script>, headers: HeaderMap, body: Bytes) -> (AxumStatus, String) {
    let signature = headers
        .get("pillivery-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let signed_ok = billing::webhooks::verify(&s.secret.lock().unwrap(), &signature, &body);
    let answer = {
        let mut log = s.log.lock().unwrap();
        let n = log.requests.len();
        log.requests.push(Received {
            headers,
            body,
            at: Instant::now(),
        });
        s.answers.get(n).cloned().unwrap_or_else(|| s.then.clone())
    };
    let (status, text) = match answer {
        Answer::Status(status) => (status, String::new()),
        Answer::After { ms, status } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (status, String::new())
        }
        Answer::Body(status, text) => (status, text.to_string()),
        Answer::Verified if signed_ok => (200, String::new()),
        Answer::Verified => (401, "bad signature".to_owned()),
    };
    (AxumStatus::from_u16(status).unwrap(), text)
}

impl Receiver {
    /// Listens on `port` (0: any): the `n`-th request gets `answers[n]`, later ones `then`.
    async fn start(port: u16, answers: Vec<Answer>, then: Answer) -> Receiver {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let secret = Arc::new(Mutex::new(String::new()));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Script {
                log: log.clone(),
                answers: Arc::new(answers),
                then,
                secret: secret.clone(),
            });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            log,
            secret,
            server,
        }
    }

    /// The secret [`Answer::Verified`] checks signatures with.
    fn verify_with(&self, secret: &str) {
        *self.secret.lock().unwrap() = secret.to_owned();
    }

    fn port(&self) -> u16 {
        url::Url::parse(&self.url).unwrap().port().unwrap()
    }

    fn requests(&self) -> Vec<Received> {
        self.log.lock().unwrap().requests.clone()
    }

    fn requests_for(&self, event_id: Uuid) -> Vec<Received> {
        let id = event_id.to_string();
        self.requests()
            .into_iter()
            .filter(|r| r.header("pillivery-event-id") == id)
            .collect()
    }
}

// ---- the system under test -------------------------------------------------------------

/// The API in-process, an admin's token, and one worker binary with `env` (short
/// schedules, timeouts) on top of a fast-polling base.
struct Setup {
    app: TestApp,
    admin: String,
}

impl Setup {
    async fn start() -> Setup {
        Self::start_with(|_| {}).await
    }

    /// [`Setup::start`] with the API's settings adjusted first.
    async fn start_with(configure: impl FnOnce(&mut Settings)) -> Setup {
        let app = spawn_app_with(configure).await;
        let (_, tokens) = app.admin().await;
        Setup {
            app,
            admin: tokens.access,
        }
    }

    fn worker(&self, env: &[(&str, &str)]) -> WorkerProcess {
        let mut all: Vec<(&str, &str)> = vec![
            ("PILLIVERY__ENVIRONMENT", "test"),
            (
                "PILLIVERY__REDIS__PREFIX",
                self.app.settings.redis.prefix.as_str(),
            ),
            ("PILLIVERY__WORKER__POLL_INTERVAL_MS", "100"),
            ("PILLIVERY__WEBHOOKS__DISPATCH_INTERVAL_MS", "100"),
        ];
        all.extend_from_slice(env);
        WorkerProcess::spawn(&self.app.database_url, &all)
    }
}

async fn create_endpoint(app: &TestApp, admin: &str, url: &str, types: &[&str]) -> Value {
    let resp = app
        .post_json(
            "/api/admin/webhooks",
            &json!({"url": url, "event_types": types, "description": "test receiver"}),
        )
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json().await.unwrap()
}

/// Records an outbox event as a state change would (its own transaction).
async fn record(app: &TestApp, event_type: &str, aggregate_id: i64) -> Uuid {
    let mut conn = app.db.acquire().await.unwrap();
    billing::outbox::record(
        &mut conn,
        billing::outbox::Event {
            event_type,
            aggregate_type: "order",
            aggregate_id,
            aggregate_version: 1,
            data: &json!({"order_id": aggregate_id, "status": "paid"}),
        },
    )
    .await
    .unwrap()
}

/// `GET path` until `done` holds for the answer; returns that answer.
async fn poll(
    app: &TestApp,
    admin: &str,
    path: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let got = app.get_json(path, admin).await;
        if done(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "timed out on {path}; last: {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The delivery of `event` (one endpoint per test), once it exists.
async fn delivery_of(app: &TestApp, admin: &str, event: Uuid) -> Value {
    let path = format!("/api/admin/deliveries?event_id={event}");
    let page = poll(app, admin, &path, Duration::from_secs(10), |p| {
        !p["items"][0].is_null()
    })
    .await;
    page["items"][0].clone()
}

/// Waits until the event's delivery is in `state`; returns it with its attempts.
async fn delivery_until(
    app: &TestApp,
    admin: &str,
    event: Uuid,
    state: &str,
    within: Duration,
) -> Value {
    let id = delivery_of(app, admin, event).await["id"].as_i64().unwrap();
    let path = format!("/api/admin/deliveries/{id}");
    poll(app, admin, &path, within, |d| d["state"] == state).await
}

fn statuses(delivery: &Value) -> Vec<Value> {
    delivery["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect()
}

// ---- the tests -------------------------------------------------------------------------

#[tokio::test]
async fn webhook_retried_on_schedule_then_delivered_signed() {
    let s = Setup::start().await;
    let receiver = Receiver::start(0, vec![Answer::Status(500); 3], Answer::Status(200)).await;
    let endpoint = create_endpoint(&s.app, &s.admin, &receiver.url, &["order.paid"]).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{endpoint}");
    let worker = s.worker(&[("PILLIVERY__WEBHOOKS__RETRY_SCHEDULE_SECS", "[0, 1, 1, 1]")]);

    let event = record(&s.app, "order.paid", 101).await;
    // not subscribed: no delivery
    let other = record(&s.app, "subscription.created", 102).await;
    let recorded_at = Instant::now();
    let delivered = delivery_until(
        &s.app,
        &s.admin,
        event,
        "delivered",
        Duration::from_secs(20),
    )
    .await;

    assert_eq!(delivered["attempts"], 4, "{delivered}");
    assert_eq!(delivered["round"], 1);
    assert_eq!(
        statuses(&delivered),
        vec![json!(500), json!(500), json!(500), json!(200)]
    );
    let log = delivered["attempt_log"].as_array().unwrap();
    assert!(log[..3]
        .iter()
        .all(|a| a["error"].as_str().unwrap().starts_with("HTTP 500")));
    assert!(log[3]["error"].is_null());

    // exactly four requests, at the schedule's offsets (0, +1 s, +1 s, +1 s)
    let got = receiver.requests_for(event);
    assert_eq!(got.len(), 4);
    assert!(
        got[0].at - recorded_at < Duration::from_secs(3),
        "first attempt {:?} after the event",
        got[0].at - recorded_at
    );
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(950) && gap < Duration::from_millis(2_500),
            "gap {gap:?} between attempts (schedule says 1 s)"
        );
    }

    // the body and headers a receiver relies on
    let r = &got[3];
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("pillivery-event-type"), "order.paid");
    let body = r.json();
    assert_eq!(body["id"], event.to_string());
    assert_eq!(body["type"], "order.paid");
    assert_eq!(body["aggregate_id"], 101);
    assert_eq!(body["aggregate_version"], 1);
    assert_eq!(body["data"]["order_id"], 101);
    assert!(body["created_at"].is_string(), "{body}");

    // the signature: t=<unix>,v1=<hex>; verifies with the endpoint's secret only
    let sig = r.header("pillivery-signature");
    let t: i64 = sig
        .strip_prefix("t=")
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((chrono::Utc::now().timestamp() - t).abs() < 60, "{sig}");
    for req in &got {
        assert!(billing::webhooks::verify(
            &secret,
            req.header("pillivery-signature"),
            &req.body
        ));
    }
    assert!(!billing::webhooks::verify(
        "whsec_someone_else",
        sig,
        &r.body
    ));
    // a receiver's own HMAC over "<t>.<body>" agrees
    {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(&r.body);
        let want = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("t={t},v1={want}"));
    }

    // no delivery of the unsubscribed type; GETs never show the secret
    let none = s
        .app
        .get_json(&format!("/api/admin/deliveries?event_id={other}"), &s.admin)
        .await;
    assert_eq!(none["total"], 0, "{none}");
    let id = endpoint["id"].as_i64().unwrap();
    let one = s
        .app
        .get_json(&format!("/api/admin/webhooks/{id}"), &s.admin)
        .await;
    assert!(one.get("secret").is_none(), "{one}");
    assert!(
        one["failing_since"].is_null(),
        "a success ends the failure run: {one}"
    );

    // the worker's metrics: outcomes, durations and the backlog gauges
    let metrics = worker.metrics().await;
    for line in [
        "webhook_deliveries_total{outcome=\"delivered\"} 1",
        "webhook_deliveries_total{outcome=\"failed\"} 3",
        "webhook_delivery_duration_seconds_count 4",
        "webhook_deliveries_dead 0",
        "outbox_oldest_undelivered_seconds ",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[tokio::test]
async fn webhook_dead_when_the_receiver_is_down_then_redelivered() {
    let s = Setup::start().await;
    let test_start = chrono::Utc::now();
    // nothing listens on the port yet: every attempt is a connection failure
    let (port, reserved) = closed_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let endpoint = create_endpoint(&s.app, &s.admin, &url, &["*"]).await;
    let endpoint_id = endpoint["id"].as_i64().unwrap();
    let _worker = s.worker(&[("PILLIVERY__WEBHOOKS__RETRY_SCHEDULE_SECS", "[0, 1]")]);

    let first = record(&s.app, "order.paid", 201).await;
    let second = record(&s.app, "order.refunded", 202).await;
    let dead = delivery_until(&s.app, &s.admin, first, "dead", Duration::from_secs(15)).await;
    delivery_until(&s.app, &s.admin, second, "dead", Duration::from_secs(15)).await;
    assert_eq!(dead["attempts"], 2, "{dead}");
    assert!(dead["dead_at"].is_string());
    let log = dead["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert!(
        log.iter().all(|a| a["status_code"].is_null()
            && a["error"]
                .as_str()
                .unwrap()
                .starts_with("connection failed")),
        "{dead}"
    );

    // visible in the lists (global and the endpoint's) and to the CLI
    let list = s
        .app
        .get_json("/api/admin/deliveries?state=dead", &s.admin)
        .await;
    assert_eq!(list["total"], 2, "{list}");
    let mine = s
        .app
        .get_json(
            &format!(
                "/api/admin/webhooks/{endpoint_id}/deliveries?state=dead&event_type=order.paid"
            ),
            &s.admin,
        )
        .await;
    assert_eq!(mine["total"], 1, "{mine}");
    assert_eq!(mine["items"][0]["event_id"], first.to_string());
    let out = worker_cli(
        &s.app.database_url,
        &["deliveries", "list", "--state", "dead"],
    );
    assert!(out.contains("2 delivery(ies)"), "{out}");
    assert!(out.contains(&first.to_string()), "{out}");

    // the receiver comes up; one redelivered by id, the rest by "dead since"
    drop(reserved);
    let receiver = Receiver::start(port, Vec::new(), Answer::Status(200)).await;
    let id = dead["id"].as_i64().unwrap();
    let resp = s
        .app
        .post_json(&format!("/api/admin/deliveries/{id}/redeliver"), &json!({}))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let again: Value = resp.json().await.unwrap();
    assert_eq!(again["round"], 2, "{again}");
    let delivered = delivery_until(
        &s.app,
        &s.admin,
        first,
        "delivered",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(delivered["attempts"], 1);
    // the history of the first round is kept
    assert_eq!(
        delivered["attempt_log"].as_array().unwrap().len(),
        3,
        "{delivered}"
    );

    let resp = s
        .app
        .post_json(
            "/api/admin/deliveries/redeliver",
            &json!({"since": test_start, "endpoint_id": endpoint_id}),
        )
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let n: Value = resp.json().await.unwrap();
    assert_eq!(n, json!({"redelivered": 1}));
    delivery_until(
        &s.app,
        &s.admin,
        second,
        "delivered",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(receiver.requests_for(first).len(), 1);
    assert_eq!(receiver.requests_for(second).len(), 1);
}

#[tokio::test]
async fn webhook_slow_receiver_times_out_and_is_retried() {
    let s = Setup::start().await;
    let receiver = Receiver::start(
        0,
        vec![Answer::After {
            ms: 2_000,
            status: 200,
        }],
        Answer::Status(204),
    )
    .await;
    create_endpoint(&s.app, &s.admin, &receiver.url, &["order.paid"]).await;
    let _worker = s.worker(&[
        ("PILLIVERY__WEBHOOKS__RETRY_SCHEDULE_SECS", "[0, 1]"),
        ("PILLIVERY__WEBHOOKS__TIMEOUT_MS", "500"),
    ]);

    let event = record(&s.app, "order.paid", 301).await;
    let delivered = delivery_until(
        &s.app,
        &s.admin,
        event,
        "delivered",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(delivered["attempts"], 2, "{delivered}");
    let log = delivered["attempt_log"].as_array().unwrap();
    assert!(log[0]["status_code"].is_null(), "{delivered}");
    assert!(
        log[0]["error"].as_str().unwrap().starts_with("timeout"),
        "{delivered}"
    );
    let took = log[0]["duration_ms"].as_i64().unwrap();
    assert!(
        (450..1_900).contains(&took),
        "the timeout cut it: {took} ms"
    );
    assert_eq!(log[1]["status_code"], 204);
    assert_eq!(receiver.requests_for(event).len(), 2);
}

#[tokio::test]
async fn webhook_delivered_after_kill_9_of_the_worker_mid_delivery() {
    let s = Setup::start().await;
    // the first request is held open far past the kill
    let receiver = Receiver::start(
        0,
        vec![Answer::After {
            ms: 30_000,
            status: 200,
        }],
        Answer::Status(200),
    )
    .await;
    create_endpoint(&s.app, &s.admin, &receiver.url, &["order.paid"]).await;
    let env = [
        ("PILLIVERY__WORKER__LEASE_MS", "1000"),
        ("PILLIVERY__WORKER__REAP_INTERVAL_MS", "200"),
        ("PILLIVERY__WEBHOOKS__TIMEOUT_MS", "60000"),
    ];
    let mut first = s.worker(&env);
    first.wait_live().await;

    let event = record(&s.app, "order.paid", 401).await;
    wait_until(
        "the first attempt to reach the receiver",
        Duration::from_secs(10),
        || async { !receiver.requests_for(event).is_empty() },
    )
    .await;
    first.signal("-9");
    first.wait_exit(Duration::from_secs(5)).await;
    let pending = delivery_of(&s.app, &s.admin, event).await;
    assert_eq!(pending["state"], "pending", "{pending}");

    let mut second = s.worker(&env);
    second.wait_live().await;
    let delivered = delivery_until(
        &s.app,
        &s.admin,
        event,
        "delivered",
        Duration::from_secs(20),
    )
    .await;
    // at least once: the receiver saw the same event id again
    let got = receiver.requests_for(event);
    assert!(got.len() >= 2, "{} request(s)", got.len());
    assert!(got.iter().all(|r| r.json()["id"] == event.to_string()));
    // the killed attempt recorded nothing; the re-run is attempt 1
    assert_eq!(delivered["attempts"], 1, "{delivered}");
    drop(second);
    crate::helpers::db::assert_no_session_left_in_transaction(&s.app.db).await;
}

#[tokio::test]
async fn webhook_order_paid_from_a_real_payment_end_to_end() {
    let stack = Stack::start(&["--auto-approve"]).await;
    let (_, admin) = stack.admin().await;
    let receiver = Receiver::start(0, Vec::new(), Answer::Status(200)).await;
    let endpoint = create_endpoint(&stack.app, &admin.access, &receiver.url, &["order.paid"]).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();

    let item = fixtures::item(&stack.db, "루테인", 20_000, 10).await;
    let token = stack.signup_and_login().await;
    let ready = stack.ready_order(&token, &[(item, 1)]).await;
    let order_id = ready["id"].as_i64().unwrap();
    let (_, outcome) = stack
        .follow_redirect(ready["payment"]["redirect_url"].as_str().unwrap())
        .await;
    assert_eq!(outcome["applied"], true, "{outcome}");
    stack
        .order_until(&token, order_id, "paid", Duration::from_secs(20))
        .await;

    wait_until(
        "order.paid at the receiver",
        Duration::from_secs(15),
        || async { !receiver.requests().is_empty() },
    )
    .await;
    let got = receiver.requests();
    let paid: Vec<&Received> = got
        .iter()
        .filter(|r| r.header("pillivery-event-type") == "order.paid")
        .collect();
    assert_eq!(paid.len(), 1, "only the subscribed type arrives");
    let body = paid[0].json();
    assert_eq!(body["type"], "order.paid");
    assert_eq!(body["aggregate_id"], order_id);
    assert!(billing::webhooks::verify(
        &secret,
        paid[0].header("pillivery-signature"),
        &paid[0].body
    ));
}

#[tokio::test]
async fn webhook_endpoint_disabled_after_failing_past_the_limit() {
    let s = Setup::start().await;
    let receiver = Receiver::start(0, Vec::new(), Answer::Status(503)).await;
    let endpoint = create_endpoint(&s.app, &s.admin, &receiver.url, &["order.paid"]).await;
    let id = endpoint["id"].as_i64().unwrap();
    let _worker = s.worker(&[
        (
            "PILLIVERY__WEBHOOKS__RETRY_SCHEDULE_SECS",
            "[0, 1, 1, 1, 1, 1]",
        ),
        ("PILLIVERY__WEBHOOKS__DISABLE_AFTER_SECS", "2"),
    ]);

    let event = record(&s.app, "order.paid", 501).await;
    let path = format!("/api/admin/webhooks/{id}");
    let ep = poll(&s.app, &s.admin, &path, Duration::from_secs(15), |ep| {
        ep["enabled"] == false
    })
    .await;
    assert_eq!(ep["disabled_reason"], "failing", "{ep}");
    assert!(ep["disabled_at"].is_string() && ep["failing_since"].is_string());
    assert!(ep.get("secret").is_none());

    // the operational event, in the outbox
    let events: Vec<(String, i64, Value)> = sqlx::query_as(
        "SELECT event_type, aggregate_id, data FROM outbox_events
         WHERE aggregate_type = 'webhook_endpoint'",
    )
    .fetch_all(&s.app.db)
    .await
    .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "webhook_endpoint.disabled");
    assert_eq!(events[0].1, id);
    assert_eq!(events[0].2["reason"], "failing");

    // the pending delivery's next job finds the endpoint disabled: dead, no more attempts
    let dead = delivery_until(&s.app, &s.admin, event, "dead", Duration::from_secs(10)).await;
    assert_eq!(dead["last_error"], "endpoint disabled", "{dead}");
    let attempts = receiver.requests_for(event).len();
    assert!((3..=4).contains(&attempts), "{attempts} attempts");

    // an operator enables it again: its health starts afresh
    let resp = s
        .app
        .request(reqwest::Method::PATCH, &path)
        .bearer_auth(&s.admin)
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ep: Value = resp.json().await.unwrap();
    assert_eq!(ep["enabled"], true);
    assert!(
        ep["failing_since"].is_null()
            && ep["disabled_at"].is_null()
            && ep["disabled_reason"].is_null(),
        "{ep}"
    );
}

#[tokio::test]
async fn webhook_routes_validate_input_and_never_show_the_secret() {
    let app = spawn_app().await;
    let (_, admin) = app.admin().await;
    let admin = admin.access;
    let user = app.signup().await;
    let customer = app.login(&user).await.access;
    let post =
        |path: &str, body: Value, token: &str| app.post_json(path, &body).bearer_auth(token).send();

    // customers may not
    let good = json!({"url": "https://partner.example/hooks", "event_types": ["order.paid"]});
    expect_error(
        post("/api/admin/webhooks", good.clone(), &customer)
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let resp = app
        .get("/api/admin/deliveries")
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;

    // bad input
    for (body, field) in [
        (
            json!({"url": "ftp://x.example/", "event_types": ["*"]}),
            "url",
        ),
        (json!({"url": "/relative", "event_types": ["*"]}), "url"),
        (
            json!({"url": "https://x.example/", "event_types": []}),
            "event_types",
        ),
        (
            json!({"url": "https://x.example/", "event_types": ["order.paid", "order.shipped"]}),
            "event_types[1]",
        ),
        (
            json!({"url": "https://x.example/", "event_types": ["*"], "secret": "mine"}),
            "secret",
        ),
        (json!({"event_types": ["*"]}), "body"),
    ] {
        let resp = post("/api/admin/webhooks", body.clone(), &admin)
            .await
            .unwrap();
        let err = expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(error_fields(&err), vec![field.to_owned()], "{body}: {err}");
    }

    // create, then every read leaves the secret out
    let resp = post("/api/admin/webhooks", good, &admin).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["enabled"], true);
    let list = app.get_json("/api/admin/webhooks", &admin).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&secret) && list["items"][0].get("secret").is_none());
    let one = app
        .get_json(&format!("/api/admin/webhooks/{id}"), &admin)
        .await;
    assert!(!one.to_string().contains(&secret), "{one}");

    // rotation shows a new secret, once
    let resp = post(
        &format!("/api/admin/webhooks/{id}/rotate-secret"),
        json!({}),
        &admin,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let rotated: Value = resp.json().await.unwrap();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);

    // PATCH: disable by hand, bad values, unknown fields
    let patch = |body: Value| {
        app.request(reqwest::Method::PATCH, &format!("/api/admin/webhooks/{id}"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    let resp = patch(json!({"enabled": false, "event_types": ["*"]}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let off: Value = resp.json().await.unwrap();
    assert_eq!(off["enabled"], false);
    assert_eq!(off["disabled_reason"], "operator");
    assert_eq!(off["event_types"], json!(["*"]));
    for (body, field) in [
        (json!({"url": "nope"}), "url"),
        (json!({"event_types": []}), "event_types"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let err = expect_error(
            patch(body).await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(error_fields(&err), vec![field.to_owned()], "{err}");
    }

    // bulk redelivery input
    let resp = post(
        "/api/admin/deliveries/redeliver",
        json!({"since": "2026-01-01T00:00:00Z"}),
        &admin,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"redelivered": 0})
    );
    for body in [
        json!({"since": "yesterday"}),
        json!({"since": "2026-01-01T00:00:00Z", "state": "dead"}),
        json!({}),
    ] {
        let resp = post("/api/admin/deliveries/redeliver", body, &admin)
            .await
            .unwrap();
        expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
    let resp = app
        .get("/api/admin/deliveries?state=lost")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "malformed_request").await;

    // unknown ids
    let missing = 987_654;
    for (method, path) in [
        (
            reqwest::Method::GET,
            format!("/api/admin/webhooks/{missing}"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/admin/webhooks/{missing}"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/admin/webhooks/{missing}/rotate-secret"),
        ),
        (
            reqwest::Method::GET,
            format!("/api/admin/webhooks/{missing}/deliveries"),
        ),
        (
            reqwest::Method::GET,
            format!("/api/admin/deliveries/{missing}"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/admin/deliveries/{missing}/redeliver"),
        ),
    ] {
        let resp = app
            .request(method.clone(), &path)
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    }
    let resp = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/admin/webhooks/{missing}"),
        )
        .bearer_auth(&admin)
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;

    // delete
    let resp = app
        .request(
            reqwest::Method::DELETE,
            &format!("/api/admin/webhooks/{id}"),
        )
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = app
        .get(&format!("/api/admin/webhooks/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;
}

// ---- destinations ----------------------------------------------------------------------

/// A bare TCP listener on 127.0.0.1 that counts the connections it accepts (and closes
/// them): proof that nothing even connected.
struct Listener {
    port: u16,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Listener {
    async fn start() -> Listener {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let server = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(conn);
            }
        });
        Listener {
            port,
            accepted,
            server,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Destinations the policy refuses, each with the reason it gives (`{port}` is a port
/// something listens on).
const REFUSED: &[(&str, &str)] = &[
    (
        "http://127.0.0.1:{port}/hook",
        "127.0.0.1 is a loopback address",
    ),
    ("http://10.0.0.1/", "10.0.0.1 is a private address"),
    (
        "http://169.254.169.254/latest/meta-data",
        "169.254.169.254 is a cloud metadata address",
    ),
    ("http://[::1]/", "::1 is a loopback address"),
    (
        "http://[::ffff:127.0.0.1]/",
        "::ffff:127.0.0.1 is a loopback address",
    ),
    (
        "http://[fd00:ec2::254]/",
        "fd00:ec2::254 is a cloud metadata address",
    ),
    (
        "http://100.64.0.1/",
        "100.64.0.1 is a shared (CGNAT) address",
    ),
    (
        "https://192.168.0.10:8443/x",
        "192.168.0.10 is a private address",
    ),
    // another spelling of 127.0.0.1
    (
        "http://2130706433:{port}/",
        "127.0.0.1 is a loopback address",
    ),
    // a name, judged by what it resolves to (here through /etc/hosts)
    (
        "http://localhost:{port}/hook",
        "localhost resolves to a loopback address",
    ),
];

#[tokio::test]
async fn webhook_private_destinations_refused_at_registration_unless_allowed() {
    let listener = Listener::start().await;
    let port = listener.port.to_string();
    let app = spawn_app_with(|s| s.webhooks.allow_private_destinations = false).await;
    let (_, admin) = app.admin().await;
    let admin = admin.access;
    let endpoints = |app: &TestApp| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_endpoints")
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };

    for (url, reason) in REFUSED {
        let url = url.replace("{port}", &port);
        let resp = app
            .post_json(
                "/api/admin/webhooks",
                &json!({"url": url, "event_types": ["*"]}),
            )
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        let err = expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(error_fields(&err), vec!["url".to_owned()], "{url}: {err}");
        assert_eq!(
            err["error"]["fields"][0]["reason"],
            format!("destination refused: {reason} (webhooks.allow_private_destinations is off)"),
            "{url}"
        );
    }
    assert_eq!(endpoints(&app).await, 0, "nothing written");

    // public destinations (and a name that does not resolve yet) are accepted, and no
    // registration connected anywhere
    let mut ids = Vec::new();
    for url in [
        "https://93.184.215.14/hook",
        "https://partner.example/hooks",
    ] {
        let created = create_endpoint(&app, &admin, url, &["*"]).await;
        ids.push(created["id"].as_i64().unwrap());
    }
    assert_eq!(listener.accepted(), 0);

    // PATCH is held to the same policy, and changes nothing when refused
    let path = format!("/api/admin/webhooks/{}", ids[0]);
    for url in ["http://[::1]/", "http://localhost/hook"] {
        let resp = app
            .request(reqwest::Method::PATCH, &path)
            .bearer_auth(&admin)
            .json(&json!({"url": url, "description": "moved"}))
            .send()
            .await
            .unwrap();
        let err = expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(error_fields(&err), vec!["url".to_owned()], "{err}");
    }
    let unchanged = app.get_json(&path, &admin).await;
    assert_eq!(unchanged["url"], "https://93.184.215.14/hook");
    assert_eq!(unchanged["description"], "test receiver");

    // with the setting on, every one of them is accepted
    let open = spawn_app().await;
    assert!(open.settings.webhooks.allow_private_destinations);
    let (_, open_admin) = open.admin().await;
    for (url, _) in REFUSED {
        create_endpoint(
            &open,
            &open_admin.access,
            &url.replace("{port}", &port),
            &["*"],
        )
        .await;
    }
    assert_eq!(endpoints(&open).await, REFUSED.len() as i64);
    assert_eq!(listener.accepted(), 0);
}

#[tokio::test]
async fn webhook_delivery_to_a_refused_destination_never_connects() {
    // registered while private destinations were allowed (the API's test settings) …
    let s = Setup::start().await;
    let receiver = Receiver::start(0, Vec::new(), Answer::Status(200)).await;
    let listener = Listener::start().await;
    let by_address = create_endpoint(&s.app, &s.admin, &receiver.url, &["order.paid"]).await;
    let by_name = create_endpoint(
        &s.app,
        &s.admin,
        &format!("http://localhost:{}/hook", listener.port),
        &["order.paid"],
    )
    .await;
    let mapped = create_endpoint(
        &s.app,
        &s.admin,
        &format!("http://[::ffff:127.0.0.1]:{}/hook", receiver.port()),
        &["order.paid"],
    )
    .await;
    // … delivered by a worker that refuses them
    let worker = s.worker(&[
        ("PILLIVERY__WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS", "false"),
        ("PILLIVERY__WEBHOOKS__RETRY_SCHEDULE_SECS", "[0, 1]"),
    ]);

    let event = record(&s.app, "order.paid", 601).await;
    let path = format!("/api/admin/deliveries?event_id={event}&state=dead");
    poll(&s.app, &s.admin, &path, Duration::from_secs(20), |p| {
        p["total"] == 3
    })
    .await;
    for (endpoint, error) in [
        (
            &by_address,
            "destination refused: 127.0.0.1 is a loopback address",
        ),
        (
            &by_name,
            "destination refused: localhost resolves to a loopback address",
        ),
        (
            &mapped,
            "destination refused: ::ffff:127.0.0.1 is a loopback address",
        ),
    ] {
        let id = endpoint["id"].as_i64().unwrap();
        let page = s
            .app
            .get_json(
                &format!("/api/admin/webhooks/{id}/deliveries?state=dead"),
                &s.admin,
            )
            .await;
        let delivery_id = page["items"][0]["id"].as_i64().unwrap();
        let dead = s
            .app
            .get_json(&format!("/api/admin/deliveries/{delivery_id}"), &s.admin)
            .await;
        // failed attempts on the schedule (two), no status, the reason as last_error
        assert_eq!(dead["attempts"], 2, "{dead}");
        assert_eq!(dead["last_error"], error, "{dead}");
        assert!(dead["last_status_code"].is_null(), "{dead}");
        let log = dead["attempt_log"].as_array().unwrap();
        assert_eq!(log.len(), 2, "{dead}");
        assert!(log
            .iter()
            .all(|a| a["error"] == error && a["status_code"].is_null()));
        let ep = s
            .app
            .get_json(&format!("/api/admin/webhooks/{id}"), &s.admin)
            .await;
        assert!(ep["failing_since"].is_string(), "counts as failing: {ep}");
    }
    // nothing reached the receiver, nothing even connected to the listener
    assert!(receiver.requests().is_empty());
    assert_eq!(listener.accepted(), 0);
    let metrics = worker.metrics().await;
    assert!(
        metrics.contains("webhook_deliveries_total{outcome=\"failed\"} 6"),
        "{metrics}"
    );
}

#[tokio::test]
async fn webhook_failing_answer_leaves_a_short_sanitized_excerpt() {
    let s = Setup::start().await;
    let body: String = format!(
        "<html>\r\n\x1b[2J\u{0}2026-12-01T00:00:00Z INFO admin=1 action=delete\n\u{202e}{}</html>",
        "internal details ".repeat(300)
    );
    let receiver = Receiver::start(0, Vec::new(), Answer::Body(500, body.into())).await;
    create_endpoint(&s.app, &s.admin, &receiver.url, &["order.paid"]).await;
    let _worker = s.worker(&[("PILLIVERY__WEBHOOKS__RETRY_SCHEDULE_SECS", "[0]")]);

    let event = record(&s.app, "order.paid", 701).await;
    let dead = delivery_until(&s.app, &s.admin, event, "dead", Duration::from_secs(15)).await;
    assert_eq!(dead["last_status_code"], 500, "{dead}");
    let last_error = dead["last_error"].as_str().unwrap();
    let attempt_error = dead["attempt_log"][0]["error"].as_str().unwrap();
    assert_eq!(last_error, attempt_error);
    assert!(
        last_error.starts_with(
            "HTTP 500: <html> [2J 2026-12-01T00:00:00Z INFO admin=1 action=delete internal details"
        ),
        "{last_error:?}"
    );
    assert_eq!(last_error.chars().count(), 200, "{last_error:?}");
    assert!(last_error.ends_with('…'), "{last_error:?}");
    assert!(
        !last_error
            .chars()
            .any(|c| c.is_control() || c == '\u{202e}'),
        "{last_error:?}"
    );
    assert_eq!(receiver.requests_for(event).len(), 1);
}

// ---- secret rotation -------------------------------------------------------------------

/// The `v1=` signatures of a `Pillivery-Signature` header.
fn signatures(header: &str) -> Vec<&str> {
    header
        .split(',')
        .filter_map(|p| p.strip_prefix("v1="))
        .collect()
}

#[tokio::test]
async fn webhook_secret_rotation_signs_with_both_secrets_during_the_overlap() {
    let overlap = Duration::from_secs(4);
    let s = Setup::start_with(|s| s.webhooks.secret_rotation_overlap_secs = overlap).await;
    // a receiver that accepts only what verifies under the secret it knows
    let receiver = Receiver::start(0, Vec::new(), Answer::Verified).await;
    let endpoint = create_endpoint(&s.app, &s.admin, &receiver.url, &["order.paid"]).await;
    let id = endpoint["id"].as_i64().unwrap();
    let old = endpoint["secret"].as_str().unwrap().to_owned();
    assert!(
        endpoint["previous_secret_expires_at"].is_null(),
        "{endpoint}"
    );
    receiver.verify_with(&old);
    let _worker = s.worker(&[("PILLIVERY__WEBHOOKS__RETRY_SCHEDULE_SECS", "[0, 60]")]);

    // before any rotation: one signature
    let before = record(&s.app, "order.paid", 801).await;
    delivery_until(
        &s.app,
        &s.admin,
        before,
        "delivered",
        Duration::from_secs(10),
    )
    .await;
    let got = receiver.requests_for(before);
    assert_eq!(signatures(got[0].header("pillivery-signature")).len(), 1);

    let resp = s
        .app
        .post_json(
            &format!("/api/admin/webhooks/{id}/rotate-secret"),
            &json!({}),
        )
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let rotated: Value = resp.json().await.unwrap();
    let rotated_at = chrono::Utc::now();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let until: chrono::DateTime<chrono::Utc> = rotated["previous_secret_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let window = (until - rotated_at).num_milliseconds();
    assert!((3_000..=4_000).contains(&window), "window {window} ms");

    // during the window the receiver still on the old secret accepts, first try
    let during = record(&s.app, "order.paid", 802).await;
    let delivered = delivery_until(
        &s.app,
        &s.admin,
        during,
        "delivered",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(delivered["attempts"], 1, "{delivered}");
    assert!(
        chrono::Utc::now() < until,
        "the test was too slow to be in the window"
    );
    let r = &receiver.requests_for(during)[0];
    let header = r.header("pillivery-signature");
    assert_eq!(signatures(header).len(), 2, "{header}");
    assert!(billing::webhooks::verify(&old, header, &r.body));
    assert!(billing::webhooks::verify(&new, header, &r.body));
    // the new secret's signature comes first, each one alone is what it signs
    let t = header.split(',').next().unwrap();
    assert!(billing::webhooks::verify(
        &new,
        &format!("{t},v1={}", signatures(header)[0]),
        &r.body
    ));
    assert!(billing::webhooks::verify(
        &old,
        &format!("{t},v1={}", signatures(header)[1]),
        &r.body
    ));

    // after the window only the new secret signs: the old-secret receiver refuses …
    let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(300)).await;
    let after = record(&s.app, "order.paid", 803).await;
    let path = format!("/api/admin/deliveries?event_id={after}");
    let page = poll(&s.app, &s.admin, &path, Duration::from_secs(10), |p| {
        p["items"][0]["attempts"] == 1
    })
    .await;
    assert_eq!(page["items"][0]["state"], "pending", "{page}");
    assert_eq!(page["items"][0]["last_status_code"], 401, "{page}");
    assert_eq!(page["items"][0]["last_error"], "HTTP 401: bad signature");
    let r = &receiver.requests_for(after)[0];
    let header = r.header("pillivery-signature");
    assert_eq!(signatures(header).len(), 1, "{header}");
    assert!(billing::webhooks::verify(&new, header, &r.body));
    assert!(!billing::webhooks::verify(&old, header, &r.body));
    // … and the old secret is no longer kept
    let ep = s
        .app
        .get_json(&format!("/api/admin/webhooks/{id}"), &s.admin)
        .await;
    assert!(ep["previous_secret_expires_at"].is_null(), "{ep}");
    let kept: Option<String> =
        sqlx::query_scalar("SELECT previous_secret FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .fetch_one(&s.app.db)
            .await
            .unwrap();
    assert_eq!(kept, None);

    // the receiver switches to the new secret: the retry is delivered
    receiver.verify_with(&new);
    let resp = s
        .app
        .post_json(
            &format!(
                "/api/admin/deliveries/{}/redeliver",
                page["items"][0]["id"].as_i64().unwrap()
            ),
            &json!({}),
        )
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    delivery_until(
        &s.app,
        &s.admin,
        after,
        "delivered",
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn webhook_secret_rotation_without_overlap_switches_at_once() {
    let s = Setup::start_with(|s| s.webhooks.secret_rotation_overlap_secs = Duration::ZERO).await;
    let receiver = Receiver::start(0, Vec::new(), Answer::Status(200)).await;
    let endpoint = create_endpoint(&s.app, &s.admin, &receiver.url, &["order.paid"]).await;
    let id = endpoint["id"].as_i64().unwrap();
    let old = endpoint["secret"].as_str().unwrap().to_owned();
    let rotated: Value = s
        .app
        .post_json(
            &format!("/api/admin/webhooks/{id}/rotate-secret"),
            &json!({}),
        )
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(rotated["previous_secret_expires_at"].is_null(), "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    let _worker = s.worker(&[]);

    let event = record(&s.app, "order.paid", 901).await;
    delivery_until(
        &s.app,
        &s.admin,
        event,
        "delivered",
        Duration::from_secs(10),
    )
    .await;
    let r = &receiver.requests_for(event)[0];
    let header = r.header("pillivery-signature");
    assert_eq!(signatures(header).len(), 1, "{header}");
    assert!(billing::webhooks::verify(&new, header, &r.body));
    assert!(!billing::webhooks::verify(&old, header, &r.body));
}
