//! Outbox delivery to webhooks, end to end: a real receiver (an axum server in the test
//! that records every request and answers per a script), the real `pillivery-worker`
//! binary with a short retry schedule, and the admin API.

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
    error_fields, expect_error, fixtures, free_port, spawn_app, worker_cli, TestApp,
};

// ---- the receiver ----------------------------------------------------------------------

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Answers `status` after `ms` (longer than the worker's timeout: a slow receiver).
    After {
        ms: u64,
        status: u16,
    },
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
}

struct Receiver {
    url: String,
    log: Arc<Mutex<Log>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(State(s): State<Script>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    let answer = {
        let mut log = s.log.lock().unwrap();
        let n = log.requests.len();
        log.requests.push(Received {
            headers,
            body,
            at: Instant::now(),
        });
        s.answers.get(n).copied().unwrap_or(s.then)
    };
    let status = match answer {
        Answer::Status(status) => status,
        Answer::After { ms, status } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            status
        }
    };
    AxumStatus::from_u16(status).unwrap()
}

impl Receiver {
    /// Listens on `port` (0: any): the `n`-th request gets `answers[n]`, later ones `then`.
    async fn start(port: u16, answers: Vec<Answer>, then: Answer) -> Receiver {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Script {
                log: log.clone(),
                answers: Arc::new(answers),
                then,
            });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            log,
            server,
        }
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
        let app = spawn_app().await;
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
    let port = free_port();
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
