//! Every acknowledged write is durable, whatever the client does: requests whose clients
//! hang up at random moments (signups, orders, cart edits, payment approvals) leave no
//! session inside a transaction, every request that was answered 2xx/3xx left its rows,
//! and what the API answers afterwards is committed.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::db::assert_no_session_left_in_transaction;
use crate::helpers::{fixtures, signup_body, spawn_app_with, TestApp};

/// What one chaotic request was, and whether the API acknowledged it.
enum Sent {
    Signup { email: String },
    Order { key: String },
    CartAdd { user: usize, item: i64 },
    Approve { order: i64 },
}

/// Sends `req`, hanging up after a random 0–`max_ms` ms for three requests in four (the
/// fourth waits for its answer): `Some(status)` when an answer arrived.
async fn send_or_hang_up(req: reqwest::RequestBuilder, max_ms: u64) -> Option<(StatusCode, Value)> {
    let patience = {
        let mut rng = rand::rng();
        if rng.random_ratio(3, 4) {
            Some(Duration::from_micros(rng.random_range(0..=max_ms * 1_000)))
        } else {
            None
        }
    };
    let req = match patience {
        Some(d) => req.timeout(d),
        None => req,
    };
    let resp = req.send().await.ok()?;
    let status = resp.status();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Some((status, body))
}

fn receiver() -> Value {
    json!({"name": "홍길동", "phone": "010-1234-5678", "city": "Seoul",
           "detail_address": "1 Sejong-daero"})
}

async fn order_ready_for_approval(app: &TestApp, token: &str, item: i64) -> (i64, String) {
    let resp = app
        .post_json(
            "/api/orders",
            &json!({"kind": "one_time", "lines": [{"item_id": item, "quantity": 1}],
                    "receiver": receiver()}),
        )
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let order = resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    // What the worker's `payment.ready` would have recorded (no worker runs here).
    let payment_token: String = sqlx::query_scalar(
        "UPDATE payments SET status = 'ready', tid = 'T' || lpad(order_id::text, 19, '0'),
                ready_at = now()
         WHERE order_id = $1 RETURNING token",
    )
    .bind(order)
    .fetch_one(&app.db)
    .await
    .unwrap();
    sqlx::query("UPDATE orders SET status = 'payment_ready' WHERE id = $1")
        .bind(order)
        .execute(&app.db)
        .await
        .unwrap();
    (order, payment_token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_clients_that_hang_up_mid_request() {
    // A small pool, so a connection poisoned by a cancelled BEGIN is soon reused.
    let app = spawn_app_with(|s| s.database.max_connections = 3).await;
    let items: Vec<i64> = {
        let mut v = Vec::new();
        for i in 0..4 {
            v.push(fixtures::item(&app.db, &format!("루테인 {i}"), 10_000, 10).await);
        }
        v
    };
    let mut shoppers = Vec::new();
    for _ in 0..3 {
        let user = app.signup().await;
        shoppers.push(app.login(&user).await.access);
    }
    let mut approvals = Vec::new();
    for i in 0..60 {
        approvals.push(order_ready_for_approval(&app, &shoppers[i % 3], items[0]).await);
    }

    // 12 waves of 50 concurrent requests of every kind, most of them hung up on within
    // the first few milliseconds, where their `BEGIN` is.
    let mut answered: Vec<(Sent, StatusCode, Value)> = Vec::new();
    let mut sent = 0;
    for wave in 0..12 {
        let mut requests = Vec::new();
        for i in 0..50 {
            let n = wave * 50 + i;
            let shopper = n % shoppers.len();
            let token = &shoppers[shopper];
            let (what, req, max_ms) = match n % 4 {
                0 => {
                    let body = signup_body();
                    let email = body["email"].as_str().unwrap().to_owned();
                    (
                        Sent::Signup { email },
                        app.post_json("/api/users", &body),
                        60,
                    )
                }
                1 => {
                    let key = format!("chaos-{n}-{}", uuid::Uuid::new_v4());
                    let body = json!({"kind": "one_time",
                        "lines": [{"item_id": items[n % items.len()], "quantity": 1}],
                        "receiver": receiver()});
                    let req = app
                        .post_json("/api/orders", &body)
                        .bearer_auth(token)
                        .header("Idempotency-Key", &key);
                    (Sent::Order { key }, req, 4)
                }
                2 => {
                    let item = items[n % items.len()];
                    let req = app
                        .post_json(
                            "/api/carts/normal/items",
                            &json!({"item_id": item, "quantity": 1}),
                        )
                        .bearer_auth(token);
                    (
                        Sent::CartAdd {
                            user: shopper,
                            item,
                        },
                        req,
                        4,
                    )
                }
                _ => {
                    let (order, payment_token) = &approvals[(n / 4) % approvals.len()];
                    let req = app
                        .request(
                            Method::GET,
                            &format!(
                                "/api/payments/kakaopay/approve/{payment_token}?pg_token=pg{n}"
                            ),
                        )
                        .header("Accept", "application/json");
                    (Sent::Approve { order: *order }, req, 4)
                }
            };
            sent += 1;
            requests.push(async move { (what, send_or_hang_up(req, max_ms).await) });
        }
        for (what, answer) in join_all(requests).await {
            if let Some((status, body)) = answer {
                answered.push((what, status, body));
            }
        }
    }
    assert!(
        answered.len() > 50 && answered.len() < sent,
        "{} of {sent} answered",
        answered.len()
    );

    // Whatever was still running when its client left has ended by now, and nothing
    // holds a session inside a transaction.
    assert_no_session_left_in_transaction(&app.db).await;

    // Every acknowledged write is there.
    let mut acked_adds: HashMap<(usize, i64), i64> = HashMap::new();
    let mut checked = 0;
    for (what, status, body) in &answered {
        if !(status.is_success() || status.is_redirection()) {
            continue;
        }
        checked += 1;
        match what {
            Sent::Signup { email } => {
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = $1")
                    .bind(email)
                    .fetch_one(&app.db)
                    .await
                    .unwrap();
                assert_eq!(n, 1, "signup of {email} answered {status} but left no user");
            }
            Sent::Order { key } => {
                let id = body["id"]
                    .as_i64()
                    .expect("an acknowledged order has an id");
                let found: Option<String> = sqlx::query_scalar(
                    "SELECT status FROM orders WHERE id = $1 AND idempotency_key = $2",
                )
                .bind(id)
                .bind(key)
                .fetch_optional(&app.db)
                .await
                .unwrap();
                assert!(
                    found.is_some(),
                    "order {id} answered {status} but is not there"
                );
                let job: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM fang_tasks t JOIN payments p
                         ON (t.metadata->>'payment_id')::bigint = p.id
                     WHERE p.order_id = $1",
                )
                .bind(id)
                .fetch_one(&app.db)
                .await
                .unwrap();
                assert_eq!(job, 1, "order {id} committed without its payment job");
            }
            Sent::CartAdd { user, item } => {
                *acked_adds.entry((*user, *item)).or_default() += 1;
            }
            Sent::Approve { order } => {
                let state: (String, String) = sqlx::query_as(
                    "SELECT o.status::text, p.status::text FROM orders o
                     JOIN payments p ON p.order_id = o.id WHERE o.id = $1",
                )
                .bind(order)
                .fetch_one(&app.db)
                .await
                .unwrap();
                assert_eq!(
                    state,
                    ("approving".to_owned(), "approving".to_owned()),
                    "approval of order {order} answered {status} but was not recorded"
                );
            }
        }
    }
    for ((user, item), acked) in &acked_adds {
        let cart = app.get_json("/api/carts/normal", &shoppers[*user]).await;
        let quantity = cart["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["item_id"] == *item)
            .map(|l| l["quantity"].as_i64().unwrap())
            .unwrap_or(0);
        assert!(
            quantity >= *acked,
            "shopper {user}'s cart holds {quantity} of item {item} after {acked} acknowledged adds"
        );
    }
    assert!(checked > 30, "only {checked} writes were acknowledged");

    // And what the API acknowledges from now on is committed: no pooled connection was
    // left inside a stranger's transaction.
    let mut emails = Vec::new();
    for _ in 0..30 {
        let body = signup_body();
        let resp = app.signup_with(&body).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        emails.push(body["email"].as_str().unwrap().to_owned());
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = ANY($1)")
        .bind(&emails)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 30, "signups answered 201 but missing");
    assert_no_session_left_in_transaction(&app.db).await;
}

/// The release check itself: a connection returned inside a transaction (here opened by
/// hand with a plain `BEGIN`, as a cancelled `Pool::begin` leaves it) is closed, not
/// handed to the next borrower, and the discard is counted.
#[tokio::test]
async fn a_connection_released_inside_a_transaction_is_discarded() {
    let url = crate::helpers::db::fresh_database().await;
    let mut settings = crate::helpers::test_settings(&url);
    settings.database.max_connections = 1;
    let pool = billing::db::pool(&settings.database).unwrap();
    {
        use sqlx::Executor;
        let mut conn = pool.acquire().await.unwrap();
        conn.execute("BEGIN").await.unwrap();
        conn.execute("INSERT INTO job_probe_runs (probe_key, worker) VALUES ('stale', 'x')")
            .await
            .unwrap();
    }
    // The only connection was closed: this one is new and outside any transaction.
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        billing::db::session_state(&mut conn).await.unwrap(),
        billing::db::SessionState::Idle
    );
    sqlx::query("INSERT INTO job_probe_runs (probe_key, worker) VALUES ('fresh', 'x')")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let other = sqlx::PgPool::connect(&url).await.unwrap();
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT probe_key FROM job_probe_runs ORDER BY probe_key")
            .fetch_all(&other)
            .await
            .unwrap();
    assert_eq!(
        keys,
        vec!["fresh".to_owned()],
        "the stale transaction rolled back"
    );
    assert_no_session_left_in_transaction(&other).await;
    // Aborted transactions are recognised too.
    {
        use sqlx::Executor;
        let mut conn = pool.acquire().await.unwrap();
        conn.execute("BEGIN").await.unwrap();
        assert!(conn.execute("SELECT 1/0").await.is_err());
        assert_eq!(
            billing::db::session_state(&mut conn).await.unwrap(),
            billing::db::SessionState::Aborted
        );
    }
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        billing::db::session_state(&mut conn).await.unwrap(),
        billing::db::SessionState::Idle
    );
}

/// The pools' server-side limits are in force on every session.
#[tokio::test]
async fn pooled_sessions_carry_statement_and_idle_transaction_timeouts() {
    let url = crate::helpers::db::fresh_database().await;
    let mut settings = crate::helpers::test_settings(&url);
    settings.database.statement_timeout_ms = Duration::from_millis(1_500);
    settings.database.idle_in_transaction_timeout_ms = Duration::from_millis(2_500);
    let pool = billing::db::pool(&settings.database).unwrap();
    let (statement, idle): (String, String) = sqlx::query_as(
        "SELECT current_setting('statement_timeout'),
                current_setting('idle_in_transaction_session_timeout')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((statement.as_str(), idle.as_str()), ("1500ms", "2500ms"));
    let err = sqlx::query("SELECT pg_sleep(3)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("57014"),
        "statement_timeout cancels: {err}"
    );
}
