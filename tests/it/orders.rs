//! Placing and reading orders without a worker: what is written in the placing
//! transaction, totals from current prices, cart checkouts, idempotency keys, bad input
//! (4xx and nothing written), ownership, paging, `?wait`, and canceling before payment.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::fixtures;
use crate::helpers::jobs::count;
use crate::helpers::{error_fields, expect_error, spawn_app, TestApp};

fn receiver() -> Value {
    json!({"name": "홍길동", "phone": "010-1234-5678", "city": "Seoul",
           "detail_address": "1 Sejong-daero, 101-1001"})
}

fn one_time(lines: Value) -> Value {
    json!({"kind": "one_time", "lines": lines, "receiver": receiver()})
}

async fn place(app: &TestApp, token: &str, body: &Value, key: Option<&str>) -> Response {
    let mut req = app.post_json("/api/orders", body).bearer_auth(token);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.unwrap()
}

async fn place_ok(app: &TestApp, token: &str, body: &Value) -> Value {
    let resp = place(app, token, body, None).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "place {body}");
    resp.json().await.unwrap()
}

async fn get(app: &TestApp, token: &str, path: &str) -> Response {
    app.get(path).bearer_auth(token).send().await.unwrap()
}

async fn get_json(app: &TestApp, token: &str, path: &str) -> Value {
    let resp = get(app, token, path).await;
    assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
    resp.json().await.unwrap()
}

async fn cancel(app: &TestApp, token: &str, id: i64) -> Response {
    app.request(reqwest::Method::POST, &format!("/api/orders/{id}/cancel"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn user_token(app: &TestApp) -> (i64, String) {
    let user = app.signup().await;
    (user.id, app.login(&user).await.access)
}

/// Rows a rejected order must not leave behind.
async fn written(app: &TestApp) -> (i64, i64, i64, i64) {
    (
        count(&app.db, "SELECT count(*) FROM orders").await,
        count(&app.db, "SELECT count(*) FROM order_items").await,
        count(&app.db, "SELECT count(*) FROM payments").await,
        count(
            &app.db,
            "SELECT count(*) FROM fang_tasks WHERE metadata->>'type' = 'payment.ready'",
        )
        .await,
    )
}

#[tokio::test]
async fn an_order_is_written_with_its_payment_and_ready_job_at_current_prices() {
    let app = spawn_app().await;
    let (user_id, token) = user_token(&app).await;
    // 30,000 at 10 % off → 27,000; 12,345 at 0 % → 12,345.
    let a = fixtures::item(&app.db, "루테인 지아잔틴", 30_000, 10).await;
    let b = fixtures::item(&app.db, "칼슘 마그네슘", 12_345, 0).await;

    let order = place_ok(
        &app,
        &token,
        &one_time(json!([{"item_id": a, "quantity": 2}, {"item_id": b, "quantity": 1}])),
    )
    .await;
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(order["kind"], "one_time");
    assert_eq!(order["total_amount"], 2 * 27_000 + 12_345);
    assert_eq!(order["total_discount"], 2 * 3_000);
    assert_eq!(order["item_count"], 3);
    assert_eq!(order["lines"][0]["item_name"], "루테인 지아잔틴");
    assert_eq!(order["lines"][0]["unit_price"], 27_000);
    assert_eq!(order["lines"][0]["line_amount"], 54_000);
    assert_eq!(order["receiver"]["phone"], "01012345678");
    assert_eq!(order["payment"]["status"], "created");
    assert!(order["payment"]["redirect_url"].is_null());

    // A later price change does not touch the snapshot.
    sqlx::query("UPDATE items SET origin_price = 99000 WHERE id = $1")
        .bind(a)
        .execute(&app.db)
        .await
        .unwrap();
    let id = order["id"].as_i64().unwrap();
    let again: Value = get_json(&app, &token, &format!("/api/orders/{id}")).await;
    assert_eq!(again["total_amount"], order["total_amount"]);
    assert_eq!(again["lines"], order["lines"]);

    let (orders, lines, payments, jobs) = written(&app).await;
    assert_eq!((orders, lines, payments, jobs), (1, 2, 1, 1));
    let payment: (String, i64, String) =
        sqlx::query_as("SELECT partner_order_id, amount, token FROM payments WHERE order_id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(payment.0, format!("pv-order-{id}"));
    assert_eq!(payment.1, 66_345);
    assert!(
        payment.2.len() >= 40,
        "the payment token is long and random"
    );
    let owner: i64 = sqlx::query_scalar("SELECT user_id FROM orders WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(owner, user_id);
}

#[tokio::test]
async fn bad_input_is_refused_with_its_code_and_writes_nothing() {
    let app = spawn_app().await;
    let (_, token) = user_token(&app).await;
    let item = fixtures::item(&app.db, "오메가3", 20_000, 0).await;
    let off_sale = fixtures::item(&app.db, "단종 상품", 20_000, 0).await;
    sqlx::query("UPDATE items SET selling = false WHERE id = $1")
        .bind(off_sale)
        .execute(&app.db)
        .await
        .unwrap();
    let line = |id: i64, q: i64| json!([{"item_id": id, "quantity": q}]);

    let cases: Vec<(Value, StatusCode, &str, Option<&str>)> = vec![
        (
            one_time(line(999_999, 1)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("lines[0].item_id"),
        ),
        (
            one_time(line(item, 0)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("lines[0].quantity"),
        ),
        (
            one_time(line(item, 100)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("lines[0].quantity"),
        ),
        (
            one_time(json!([])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("lines"),
        ),
        (
            one_time(line(off_sale, 1)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "item_unavailable",
            None,
        ),
        (
            json!({"kind": "one_time", "lines": line(item, 1),
                   "receiver": {"name": "홍길동", "phone": "02-123-4567", "city": "Seoul", "detail_address": "1"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("receiver.phone"),
        ),
        (
            json!({"kind": "one_time", "lines": line(item, 1)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("receiver"),
        ),
        (
            json!({"kind": "subscription", "lines": line(item, 1), "receiver": receiver()}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("period_days"),
        ),
        (
            json!({"kind": "one_time", "lines": line(item, 1), "period_days": 30, "receiver": receiver()}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("period_days"),
        ),
        (
            json!({"kind": "weekly", "lines": line(item, 1), "receiver": receiver()}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("kind"),
        ),
        (
            json!({"kind": "one_time", "lines": [{"item_id": item, "quantity": 1}, {"item_id": item, "quantity": 2}],
                   "receiver": receiver()}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("lines[1].item_id"),
        ),
        (
            json!({"kind": "one_time", "from_cart": true, "receiver": receiver()}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("from_cart"),
        ),
    ];
    for (body, status, code, field) in cases {
        let resp = place(&app, &token, &body, None).await;
        let err = expect_error(resp, status, code).await;
        if let Some(field) = field {
            assert!(
                error_fields(&err).contains(&field.to_owned()),
                "{body} → {err}"
            );
        }
    }
    let malformed = app
        .request(reqwest::Method::POST, "/api/orders")
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"kind\": \"one_time\", ")
        .send()
        .await
        .unwrap();
    expect_error(malformed, StatusCode::BAD_REQUEST, "malformed_json").await;
    let anonymous = app
        .post_json("/api/orders", &one_time(line(item, 1)))
        .send()
        .await
        .unwrap();
    expect_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;

    assert_eq!(written(&app).await, (0, 0, 0, 0));
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_order_and_refuses_another_body() {
    let app = spawn_app().await;
    let (_, token) = user_token(&app).await;
    let item = fixtures::item(&app.db, "비타민C", 10_000, 0).await;
    let body = one_time(json!([{"item_id": item, "quantity": 1}]));

    let first = place(&app, &token, &body, Some("order-key-1")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    let replay = place(&app, &token, &body, Some("order-key-1")).await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], first["id"]);

    let other = one_time(json!([{"item_id": item, "quantity": 2}]));
    let reused = place(&app, &token, &other, Some("order-key-1")).await;
    expect_error(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;

    // Keys are per user: someone else's identical key is a new order.
    let (_, token2) = user_token(&app).await;
    let theirs: Value = place(&app, &token2, &body, Some("order-key-1"))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(theirs["id"], first["id"]);

    let bad_key = place(&app, &token, &body, Some("has space")).await;
    expect_error(
        bad_key,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(count(&app.db, "SELECT count(*) FROM orders").await, 2);
}

#[tokio::test]
async fn fifty_concurrent_identical_requests_make_one_order() {
    let app = spawn_app().await;
    let (_, token) = user_token(&app).await;
    let item = fixtures::item(&app.db, "프로바이오틱스", 25_000, 20).await;
    let body = one_time(json!([{"item_id": item, "quantity": 3}]));

    let responses = join_all((0..50).map(|_| place(&app, &token, &body, Some("burst-key")))).await;
    let mut ids = std::collections::BTreeSet::new();
    for resp in responses {
        assert_eq!(resp.status(), StatusCode::CREATED);
        let order: Value = resp.json().await.unwrap();
        ids.insert(order["id"].as_i64().unwrap());
    }
    assert_eq!(ids.len(), 1, "every response names the same order");
    assert_eq!(written(&app).await, (1, 1, 1, 1));
}

#[tokio::test]
async fn cart_checkouts_order_the_carts_lines_and_a_subscription_needs_one_period() {
    let app = spawn_app().await;
    let (_, token) = user_token(&app).await;
    let a = fixtures::item(&app.db, "밀크씨슬", 18_000, 0).await;
    let b = fixtures::item(&app.db, "홍삼", 40_000, 50).await;
    for (kind, body) in [
        ("normal", json!({"item_id": a, "quantity": 2})),
        (
            "subscription",
            json!({"item_id": a, "quantity": 1, "period_days": 30}),
        ),
        (
            "subscription",
            json!({"item_id": b, "quantity": 1, "period_days": 14}),
        ),
    ] {
        let resp = app
            .post_json(&format!("/api/carts/{kind}/items"), &body)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    let normal = place_ok(
        &app,
        &token,
        &json!({"kind": "one_time", "from_cart": true, "receiver": receiver()}),
    )
    .await;
    assert_eq!(normal["total_amount"], 36_000);
    assert_eq!(normal["lines"].as_array().unwrap().len(), 1);

    let mixed = place(
        &app,
        &token,
        &json!({"kind": "subscription", "from_cart": true, "receiver": receiver()}),
        None,
    )
    .await;
    let err = expect_error(mixed, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(error_fields(&err), vec!["period_days"]);

    let sub = place_ok(
        &app,
        &token,
        &json!({"kind": "subscription", "from_cart": true, "period_days": 14, "receiver": receiver()}),
    )
    .await;
    assert_eq!(sub["kind"], "subscription");
    assert_eq!(sub["period_days"], 14);
    assert_eq!(sub["total_amount"], 20_000);
    assert_eq!(sub["lines"][0]["item_id"], b);
    let cid: String = sqlx::query_scalar("SELECT cid_kind FROM payments WHERE order_id = $1")
        .bind(sub["id"].as_i64().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(cid, "subscription");
    // The cart is only emptied once the order is paid.
    assert_eq!(count(&app.db, "SELECT count(*) FROM cart_items").await, 3);
}

#[tokio::test]
async fn orders_are_private_listed_newest_first_and_filtered_by_status() {
    let app = spawn_app().await;
    let (_, token) = user_token(&app).await;
    let (_, stranger) = user_token(&app).await;
    let item = fixtures::item(&app.db, "아연", 9_000, 0).await;
    let mut ids = Vec::new();
    for q in 1..=3 {
        let o = place_ok(
            &app,
            &token,
            &one_time(json!([{"item_id": item, "quantity": q}])),
        )
        .await;
        ids.push(o["id"].as_i64().unwrap());
    }
    let cancel = app
        .request(
            reqwest::Method::POST,
            &format!("/api/orders/{}/cancel", ids[0]),
        )
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::OK);

    let page: Value = get_json(&app, &token, "/api/orders?page=1&size=2").await;
    assert_eq!(page["total"], 3);
    assert_eq!(crate::helpers::page_ids(&page), vec![ids[2], ids[1]]);
    let canceled: Value = get_json(&app, &token, "/api/orders?status=canceled").await;
    assert_eq!(crate::helpers::page_ids(&canceled), vec![ids[0]]);
    let unknown = get(&app, &token, "/api/orders?status=shipped").await;
    expect_error(unknown, StatusCode::BAD_REQUEST, "malformed_request").await;

    // Someone else's order is "not found", for reading and for canceling.
    let theirs = get(&app, &stranger, &format!("/api/orders/{}", ids[1])).await;
    expect_error(theirs, StatusCode::NOT_FOUND, "not_found").await;
    let cancel_theirs = app
        .request(
            reqwest::Method::POST,
            &format!("/api/orders/{}/cancel", ids[1]),
        )
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    expect_error(cancel_theirs, StatusCode::NOT_FOUND, "not_found").await;
    let empty: Value = get_json(&app, &stranger, "/api/orders").await;
    assert_eq!(empty["total"], 0);
    let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
        .bind(ids[1])
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "pending_payment");
}

#[tokio::test]
async fn canceling_before_payment_abandons_it_and_a_second_cancel_conflicts() {
    let app = spawn_app().await;
    let (_, token) = user_token(&app).await;
    let item = fixtures::item(&app.db, "코엔자임Q10", 15_000, 0).await;
    let order = place_ok(
        &app,
        &token,
        &one_time(json!([{"item_id": item, "quantity": 1}])),
    )
    .await;
    let id = order["id"].as_i64().unwrap();

    let resp = cancel(&app, &token, id).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let canceled: Value = resp.json().await.unwrap();
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["payment"]["status"], "abandoned");
    assert!(canceled["canceled_at"].is_string());
    let events = count(
        &app.db,
        "SELECT count(*) FROM outbox_events WHERE event_type = 'order.canceled'",
    )
    .await;
    assert_eq!(events, 1);

    let again = cancel(&app, &token, id).await;
    expect_error(again, StatusCode::CONFLICT, "already_canceled").await;
}

#[tokio::test]
async fn wait_returns_at_the_state_change_not_at_the_timeout() {
    let app = spawn_app().await;
    let (_, token) = user_token(&app).await;
    let item = fixtures::item(&app.db, "마그네슘", 11_000, 0).await;
    let order = place_ok(
        &app,
        &token,
        &one_time(json!([{"item_id": item, "quantity": 1}])),
    )
    .await;
    let id = order["id"].as_i64().unwrap();

    let too_long = get(&app, &token, &format!("/api/orders/{id}?wait=11")).await;
    expect_error(
        too_long,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    // Nothing changes: the wait runs out and the order is answered as it is.
    let started = Instant::now();
    let unchanged: Value = get_json(&app, &token, &format!("/api/orders/{id}?wait=1")).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(unchanged["status"], "pending_payment");

    // A cancel from another request wakes the waiter long before its 10 s.
    let waiter = {
        let client = app.client.clone();
        let url = app.url(&format!("/api/orders/{id}?wait=10"));
        let token = token.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let order: Value = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (started.elapsed(), order)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = cancel(&app, &token, id).await;
    assert_eq!(cancel.status(), StatusCode::OK);
    let (took, order) = waiter.await.unwrap();
    assert_eq!(order["status"], "canceled");
    assert!(
        took < Duration::from_secs(5),
        "woken by the change after {took:?}"
    );

    // Not transient: answered at once.
    let started = Instant::now();
    let done = get(&app, &token, &format!("/api/orders/{id}?wait=10")).await;
    assert_eq!(done.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn redirects_with_an_unknown_token_change_nothing() {
    let app = spawn_app().await;
    let (_, token) = user_token(&app).await;
    let item = fixtures::item(&app.db, "비오틴", 8_000, 0).await;
    place_ok(
        &app,
        &token,
        &one_time(json!([{"item_id": item, "quantity": 1}])),
    )
    .await;
    for action in ["approve", "cancel", "fail"] {
        let resp = app
            .get(&format!(
                "/api/payments/kakaopay/{action}/forged-token-123?pg_token=abc"
            ))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    }
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM payments")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(statuses, vec!["created"]);
}

#[tokio::test]
async fn the_request_id_follows_the_order_into_its_job() {
    let app = spawn_app().await;
    let (_, token) = user_token(&app).await;
    let item = fixtures::item(&app.db, "엽산", 7_000, 0).await;
    let resp = app
        .post_json(
            "/api/orders",
            &one_time(json!([{"item_id": item, "quantity": 1}])),
        )
        .bearer_auth(&token)
        .header("x-request-id", "req-7f3a-order")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["x-request-id"], "req-7f3a-order");
    let recorded: Option<String> = sqlx::query_scalar(
        "SELECT request_id FROM fang_tasks WHERE metadata->>'type' = 'payment.ready'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(recorded.as_deref(), Some("req-7f3a-order"));
}
