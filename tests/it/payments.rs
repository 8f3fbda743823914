//! One-time KakaoPay payments end to end, through the real binaries: the API, a worker and
//! the KakaoPay simulator (`pillivery-pgsim`). The buyer places an order, reads the
//! redirect URL, pays at the simulator and comes back; the worker's jobs ready, approve,
//! reconcile and refund. The simulator's ledger proves what money actually moved.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::expect_error;
use crate::helpers::fixtures;
use crate::helpers::jobs::wait_until;
use crate::helpers::stack::{self, Stack};

const PATIENCE: Duration = Duration::from_secs(30);

fn id_of(order: &Value) -> i64 {
    order["id"].as_i64().unwrap()
}

fn amount_of(order: &Value) -> i64 {
    order["total_amount"].as_i64().unwrap()
}

fn redirect_of(order: &Value) -> &str {
    order["payment"]["redirect_url"].as_str().unwrap()
}

/// Sales deltas of an order not yet folded into its items.
async fn pending_sales(db: &PgPool, order: i64) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM item_sales_deltas WHERE order_id = $1")
        .bind(order)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn sales(db: &PgPool, item: i64) -> i64 {
    sqlx::query_scalar("SELECT sales FROM items WHERE id = $1")
        .bind(item)
        .fetch_one(db)
        .await
        .unwrap()
}

/// Outbox events of one type about one order.
async fn events(db: &PgPool, order: i64, event_type: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT data FROM outbox_events
         WHERE aggregate_type = 'order' AND aggregate_id = $1 AND event_type = $2 ORDER BY id",
    )
    .bind(order)
    .bind(event_type)
    .fetch_all(db)
    .await
    .unwrap()
}

/// Jobs of one task type ever queued (finished ones are kept by the stack's worker).
async fn jobs_of(db: &PgPool, task: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM fang_tasks WHERE metadata->>'type' = $1")
        .bind(task)
        .fetch_one(db)
        .await
        .unwrap()
}

/// How many inquiries the payment needed (the API does not show it).
async fn reconcile_attempts(db: &PgPool, order: i64) -> i32 {
    sqlx::query_scalar("SELECT reconcile_attempts FROM payments WHERE order_id = $1")
        .bind(order)
        .fetch_one(db)
        .await
        .unwrap()
}

/// An auto-approving simulator's buyer pays the order: redirect followed, `paid` awaited.
async fn pay(stack: &Stack, token: &str, ready: &Value) -> Value {
    let (_, outcome) = stack.follow_redirect(redirect_of(ready)).await;
    assert_eq!(outcome["applied"], true, "{outcome}");
    stack
        .order_until(token, id_of(ready), "paid", PATIENCE)
        .await
}

#[tokio::test]
async fn paid_order_end_to_end() {
    let stack = Stack::start(&["--auto-approve"]).await;
    let token = stack.signup_and_login().await;
    let lutein = fixtures::item(&stack.db, "루테인 지아잔틴", 20_000, 10).await;
    let omega = fixtures::item(&stack.db, "오메가3", 15_000, 0).await;

    let placed = stack.place_order(&token, &[(lutein, 2), (omega, 1)]).await;
    // The 201 is the order as the request left it, however quick the worker is.
    assert_eq!(placed["status"], "pending_payment", "{placed}");
    let id = id_of(&placed);
    let amount = amount_of(&placed);
    assert_eq!(amount, 2 * 18_000 + 15_000);

    // The worker asks KakaoPay for the redirect while the client waits.
    let ready = stack.order(&token, id, 5).await;
    assert_eq!(ready["status"], "payment_ready", "{ready}");
    assert_eq!(ready["payment"]["status"], "ready");
    let redirect = redirect_of(&ready).to_owned();
    assert!(redirect.starts_with(&stack.pg_url), "{redirect}");
    assert!(ready["payment"]["redirect_mobile_url"].is_string());
    assert!(ready["payment"]["redirect_app_url"].is_string());

    // The buyer pays; KakaoPay sends them back to us and the worker approves.
    let started = Instant::now();
    let (_, back) = stack.follow_redirect(&redirect).await;
    assert_eq!(
        back,
        json!({"order_id": id, "status": "approving", "applied": true})
    );
    let paid = stack.order(&token, id, 5).await;
    let took = started.elapsed();
    assert_eq!(paid["status"], "paid", "{paid}");
    assert!(took < Duration::from_secs(2), "paid after {took:?}");
    assert_eq!(paid["payment"]["status"], "approved");
    assert!(paid["payment"]["approved_at"].is_string());
    assert!(paid["paid_at"].is_string());
    assert_eq!(paid["payment"]["redirect_url"], Value::Null, "{paid}");

    // Exactly one approval of the order's amount moved money.
    let ledger = stack.ledger().await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0]["kind"], "approve");
    assert_eq!(ledger[0]["amount"], amount);
    assert_eq!(ledger[0]["partner_order_id"], format!("pv-order-{id}"));

    // The follow-up jobs count the sales; the outbox announces the payment.
    wait_until("sales to be counted", PATIENCE, || async {
        sales(&stack.db, lutein).await == 2 && sales(&stack.db, omega).await == 1
    })
    .await;
    let paid_events = events(&stack.db, id, "order.paid").await;
    assert_eq!(paid_events.len(), 1);
    assert_eq!(paid_events[0]["total_amount"], amount);
    assert_eq!(paid_events[0]["status"], "paid");
}

#[tokio::test]
async fn five_concurrent_returns_from_kakaopay_approve_once() {
    let stack = Stack::start(&[]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "비타민D", 12_000, 0).await;
    let ready = stack.ready_order(&token, &[(item, 3)]).await;
    let id = id_of(&ready);

    // The buyer authenticates once; the same return URL then arrives five times at once
    // (double clicks, a reloading browser, KakaoPay's own retry).
    let approve_url = stack.buyer_approves(redirect_of(&ready)).await;
    let outcomes = join_all((0..5).map(|_| stack.return_from_pg(&approve_url))).await;
    let applied = outcomes.iter().filter(|o| o["applied"] == true).count();
    assert_eq!(applied, 1, "{outcomes:?}");
    for o in &outcomes {
        assert_eq!(o["order_id"], id);
    }

    let paid = stack.order_until(&token, id, "paid", PATIENCE).await;
    assert_eq!(paid["payment"]["status"], "approved");
    // A late one after payment changes nothing and says so.
    let late = stack.return_from_pg(&approve_url).await;
    assert_eq!(
        late,
        json!({"order_id": id, "status": "paid", "applied": false})
    );
    // Without asking for JSON the buyer lands on the storefront's result page.
    let resp = stack.client.get(&approve_url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(
        location.contains(&format!("order_id={id}")) && location.contains("result=paid"),
        "{location}"
    );

    // One approval at the PG, one approve job, one of each effect.
    assert_eq!(stack.pg_requests("approve").await, 1);
    let approvals = stack.ledger_of("approve").await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0]["amount"], amount_of(&ready));
    assert_eq!(jobs_of(&stack.db, "payment.approve").await, 1);
    assert_eq!(events(&stack.db, id, "order.paid").await.len(), 1);
    wait_until("sales to be counted", PATIENCE, || async {
        sales(&stack.db, item).await == 3
    })
    .await;
    // Counted by the paying transaction itself (no job) and folded once: nothing is left
    // to add, and the count stays at the 3 units bought.
    assert_eq!(jobs_of(&stack.db, "orders.count_sales").await, 0);
    assert_eq!(pending_sales(&stack.db, id).await, 0);
    assert_eq!(sales(&stack.db, item).await, 3);
}

#[tokio::test]
async fn a_lost_approve_response_is_reconciled_to_paid() {
    let stack = Stack::start(&["--auto-approve"]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "밀크씨슬", 30_000, 20).await;
    let ready = stack.ready_order(&token, &[(item, 1)]).await;
    let id = id_of(&ready);

    // KakaoPay approves, then the connection dies before its answer reaches us.
    stack
        .set_knobs(json!({"drop_rate": 1.0, "endpoints": ["approve"], "max_faults": 1}))
        .await;
    stack.follow_redirect(redirect_of(&ready)).await;

    let paid = stack.order_until(&token, id, "paid", PATIENCE).await;
    assert_eq!(paid["payment"]["status"], "approved");
    let stats = stack.pg_stats().await;
    assert_eq!(stats["faults_injected"]["drop"], 1, "{stats}");
    // Decided by inquiry, not by approving again.
    assert_eq!(stats["requests"]["approve"], 1, "{stats}");
    assert!(
        stats["requests"]["order"].as_i64().unwrap_or(0) >= 1,
        "{stats}"
    );
    assert!(reconcile_attempts(&stack.db, id).await >= 1);
    let approvals = stack.ledger_of("approve").await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0]["amount"], amount_of(&ready));
    assert_eq!(events(&stack.db, id, "order.paid").await.len(), 1);
}

#[tokio::test]
async fn a_declined_approval_fails_the_order_with_the_pgs_reason() {
    let stack = Stack::start(&["--auto-approve", "--decline-rate", "1.0"]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "프로바이오틱스", 25_000, 0).await;
    let ready = stack.ready_order(&token, &[(item, 2)]).await;
    let id = id_of(&ready);

    stack.follow_redirect(redirect_of(&ready)).await;
    let failed = stack
        .order_until(&token, id, "payment_failed", PATIENCE)
        .await;
    assert_eq!(failed["payment"]["status"], "failed");
    assert_eq!(failed["payment"]["failure_code"], "-780", "{failed}");
    let message = failed["payment"]["failure_message"].as_str().unwrap();
    assert!(message.contains("approval failure"), "{message}");
    assert_eq!(failed["paid_at"], Value::Null);

    let announced = events(&stack.db, id, "order.payment_failed").await;
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0]["failure_code"], "-780");
    assert!(stack.ledger().await.is_empty());
    assert_eq!(events(&stack.db, id, "order.paid").await.len(), 0);
    assert_eq!(pending_sales(&stack.db, id).await, 0);
    assert_eq!(sales(&stack.db, item).await, 0);
    // A failed order is final for the customer.
    expect_error(
        stack.cancel(&token, id).await,
        StatusCode::CONFLICT,
        "order_not_cancelable",
    )
    .await;
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_until_the_pg_heals() {
    let stack = Stack::start(&["--auto-approve"]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "마그네슘", 9_900, 0).await;
    let ready = stack.ready_order(&token, &[(item, 4)]).await;
    let id = id_of(&ready);

    // KakaoPay answers 500 to the next three calls, whatever they are, then heals.
    stack
        .set_knobs(json!({"server_error_rate": 1.0, "max_faults": 3}))
        .await;
    stack.follow_redirect(redirect_of(&ready)).await;

    let paid = stack.order_until(&token, id, "paid", PATIENCE).await;
    assert_eq!(paid["payment"]["status"], "approved");
    let stats = stack.pg_stats().await;
    assert_eq!(stats["faults_injected"]["server_error"], 3, "{stats}");
    assert_eq!(stats["faults_left"], 0, "{stats}");
    // The approve that got a 500 was not resent blindly: inquiries (retried with backoff
    // while they failed too) found it unprocessed, then it was approved once more.
    assert_eq!(stats["requests"]["approve"], 2, "{stats}");
    assert!(
        stats["requests"]["order"].as_i64().unwrap_or(0) >= 3,
        "{stats}"
    );
    let approvals = stack.ledger_of("approve").await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0]["amount"], amount_of(&ready));
    assert_eq!(events(&stack.db, id, "order.paid").await.len(), 1);
}

#[tokio::test]
async fn a_paid_order_is_refunded_once() {
    let stack = Stack::start(&["--auto-approve"]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "종합비타민", 40_000, 25).await;
    let ready = stack.ready_order(&token, &[(item, 1)]).await;
    let id = id_of(&ready);
    let amount = amount_of(&ready);
    pay(&stack, &token, &ready).await;

    let resp = stack.cancel(&token, id).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let asked: Value = resp.json().await.unwrap();
    assert_eq!(asked["status"], "refund_requested", "{asked}");

    let refunded = stack.order_until(&token, id, "refunded", PATIENCE).await;
    assert_eq!(refunded["payment"]["status"], "refunded");
    assert_eq!(refunded["payment"]["refunded_amount"], amount);
    assert!(refunded["refunded_at"].is_string());
    let cancels = stack.ledger_of("cancel").await;
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(cancels[0]["amount"], amount);
    assert_eq!(events(&stack.db, id, "order.refunded").await.len(), 1);

    // Asking again refunds nothing more.
    expect_error(
        stack.cancel(&token, id).await,
        StatusCode::CONFLICT,
        "already_refunded",
    )
    .await;
    assert_eq!(stack.ledger_of("cancel").await.len(), 1);
    assert_eq!(stack.pg_requests("cancel").await, 1);
    assert_eq!(jobs_of(&stack.db, "payment.cancel").await, 1);
}

#[tokio::test]
async fn an_order_canceled_before_payment_ignores_a_late_approval() {
    let stack = Stack::start(&[]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "철분", 8_000, 0).await;
    let ready = stack.ready_order(&token, &[(item, 1)]).await;
    let id = id_of(&ready);

    // The buyer authenticates at KakaoPay, but the order is canceled before they return.
    let approve_url = stack.buyer_approves(redirect_of(&ready)).await;
    let resp = stack.cancel(&token, id).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let canceled: Value = resp.json().await.unwrap();
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert_eq!(canceled["payment"]["status"], "abandoned");

    let late = stack.return_from_pg(&approve_url).await;
    assert_eq!(
        late,
        json!({"order_id": id, "status": "canceled", "applied": false})
    );
    let still = stack.order(&token, id, 0).await;
    assert_eq!(still["status"], "canceled");
    assert_eq!(still["payment"]["status"], "abandoned");
    assert_eq!(jobs_of(&stack.db, "payment.approve").await, 0);
    assert_eq!(stack.pg_requests("approve").await, 0);
    assert!(stack.ledger().await.is_empty());
    assert_eq!(events(&stack.db, id, "order.canceled").await.len(), 1);
    expect_error(
        stack.cancel(&token, id).await,
        StatusCode::CONFLICT,
        "already_canceled",
    )
    .await;

    // A token we never issued is not found, whatever the action.
    for action in ["approve", "cancel", "fail"] {
        let resp = stack
            .get(&format!(
                "/api/payments/kakaopay/{action}/forged-token-0123456789?pg_token=abc"
            ))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn a_lost_refund_response_is_reconciled_to_refunded() {
    let stack = Stack::start(&["--auto-approve"]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "콜라겐", 50_000, 30).await;
    let ready = stack.ready_order(&token, &[(item, 2)]).await;
    let id = id_of(&ready);
    let amount = amount_of(&ready);
    pay(&stack, &token, &ready).await;

    // KakaoPay refunds, then the connection dies before its answer reaches us.
    stack
        .set_knobs(json!({"drop_rate": 1.0, "endpoints": ["cancel"], "max_faults": 1}))
        .await;
    assert_eq!(stack.cancel(&token, id).await.status(), StatusCode::OK);
    let refunded = stack.order_until(&token, id, "refunded", PATIENCE).await;
    assert_eq!(refunded["payment"]["refunded_amount"], amount);
    let stats = stack.pg_stats().await;
    assert_eq!(stats["faults_injected"]["drop"], 1, "{stats}");
    assert_eq!(stats["requests"]["cancel"], 1, "{stats}");
    let cancels = stack.ledger_of("cancel").await;
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(cancels[0]["amount"], amount);
    assert_eq!(events(&stack.db, id, "order.refunded").await.len(), 1);
}

#[tokio::test]
async fn a_refund_sent_again_after_it_landed_is_recognised_not_repeated() {
    let stack = Stack::start(&["--auto-approve"]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "프로폴리스", 30_000, 0).await;
    let ready = stack.ready_order(&token, &[(item, 1)]).await;
    let id = id_of(&ready);
    let amount = amount_of(&ready);
    pay(&stack, &token, &ready).await;

    // A refund already went through at KakaoPay but was never recorded here (a worker
    // died between KakaoPay's answer and its commit): our cancel arrives second.
    let tid: String = sqlx::query_scalar("SELECT tid FROM payments WHERE order_id = $1")
        .bind(id)
        .fetch_one(&stack.db)
        .await
        .unwrap();
    let direct = stack
        .client
        .post(format!("{}/online/v1/payment/cancel", stack.pg_url))
        .header("authorization", format!("SECRET_KEY {}", stack::SECRET_KEY))
        .json(
            &json!({"cid": "TC0ONETIME", "tid": tid, "cancel_amount": amount,
                      "cancel_tax_free_amount": 0}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), StatusCode::OK);

    assert_eq!(stack.cancel(&token, id).await.status(), StatusCode::OK);
    let refunded = stack.order_until(&token, id, "refunded", PATIENCE).await;
    assert_eq!(refunded["payment"]["refunded_amount"], amount);
    // KakaoPay refused the second cancel; the inquiry found the first: one refund moved.
    assert_eq!(stack.pg_requests("cancel").await, 2);
    assert!(stack.pg_requests("order").await >= 1);
    let cancels = stack.ledger_of("cancel").await;
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(events(&stack.db, id, "order.refunded").await.len(), 1);
}

#[tokio::test]
async fn a_timed_out_approve_is_reconciled_and_approved_once() {
    let stack = Stack::start(&["--auto-approve"]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "아연", 7_000, 0).await;
    let ready = stack.ready_order(&token, &[(item, 1)]).await;
    let id = id_of(&ready);

    // KakaoPay never answers (nor acts on) the first approve.
    stack
        .set_knobs(json!({"timeout_rate": 1.0, "endpoints": ["approve"], "max_faults": 1}))
        .await;
    stack.follow_redirect(redirect_of(&ready)).await;
    stack.order_until(&token, id, "paid", PATIENCE).await;
    let stats = stack.pg_stats().await;
    assert_eq!(stats["faults_injected"]["timeout"], 1, "{stats}");
    assert_eq!(stats["requests"]["approve"], 2, "{stats}");
    assert_eq!(stack.ledger_of("approve").await.len(), 1);
}

#[tokio::test]
async fn an_order_being_approved_cannot_be_canceled() {
    let stack = Stack::start(&["--auto-approve"]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "비오틴", 11_000, 0).await;
    let ready = stack.ready_order(&token, &[(item, 1)]).await;
    let id = id_of(&ready);

    stack.set_knobs(json!({"latency_ms": 1500})).await;
    let (_, back) = stack.follow_redirect(redirect_of(&ready)).await;
    assert_eq!(back["status"], "approving");
    expect_error(
        stack.cancel(&token, id).await,
        StatusCode::CONFLICT,
        "payment_in_progress",
    )
    .await;
    stack.order_until(&token, id, "paid", PATIENCE).await;
    assert_eq!(stack.ledger_of("approve").await.len(), 1);
}

#[tokio::test]
async fn a_cancel_racing_the_buyers_return_has_one_winner_and_no_error() {
    let stack = Stack::start(&[]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "코엔자임Q10", 21_000, 0).await;
    let mut orders = Vec::new();
    for _ in 0..10 {
        let ready = stack.ready_order(&token, &[(item, 1)]).await;
        let id = id_of(&ready);
        let approve_url = stack.buyer_approves(redirect_of(&ready)).await;
        // The customer cancels in one tab just as KakaoPay sends them back in another.
        let (cancel, back) = tokio::join!(stack.cancel(&token, id), async {
            stack
                .client
                .get(&approve_url)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
        });
        let (cancel_status, back_status) = (cancel.status(), back.status());
        let cancel_body = cancel.text().await.unwrap();
        let back_body = back.text().await.unwrap();
        assert!(
            !cancel_status.is_server_error() && !back_status.is_server_error(),
            "order {id}: cancel {cancel_status} {cancel_body}; return {back_status} {back_body}"
        );
        orders.push(id);
    }
    // Whoever won, the money at KakaoPay matches each order's final state.
    let mut finals = Vec::new();
    for id in orders {
        let deadline = Instant::now() + PATIENCE;
        let mut order = stack.order(&token, id, 5).await;
        while matches!(
            order["status"].as_str(),
            Some("approving" | "refund_requested")
        ) {
            assert!(Instant::now() < deadline, "order {id} stuck: {order}");
            order = stack.order(&token, id, 5).await;
        }
        finals.push((id, order));
    }
    let ledger = stack.ledger().await;
    for (id, order) in finals {
        let moved = |kind: &str| {
            ledger
                .iter()
                .filter(|e| e["kind"] == kind && e["partner_order_id"] == format!("pv-order-{id}"))
                .count()
        };
        let want = match order["status"].as_str().unwrap() {
            "canceled" => (0, 0),
            "paid" => (1, 0),
            "refunded" => (1, 1),
            other => panic!("order {id} ended {other}"),
        };
        assert_eq!((moved("approve"), moved("cancel")), want, "order {id}");
    }
}

#[tokio::test]
async fn the_buyer_quitting_or_failing_at_kakaopay_ends_the_order() {
    let stack = Stack::start(&[]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "루테인", 16_000, 0).await;

    // The buyer quits on KakaoPay's page.
    let ready = stack.ready_order(&token, &[(item, 1)]).await;
    let quit = id_of(&ready);
    let cancel_url = stack.buyer_action(redirect_of(&ready), "cancel").await;
    let back = stack.return_from_pg(&cancel_url).await;
    assert_eq!(
        back,
        json!({"order_id": quit, "status": "canceled", "applied": true})
    );
    let canceled = stack.order(&token, quit, 0).await;
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["payment"]["status"], "abandoned");
    assert_eq!(canceled["payment"]["failure_code"], "buyer_canceled");
    assert_eq!(events(&stack.db, quit, "order.canceled").await.len(), 1);

    // Another buyer's authentication fails there.
    let ready = stack.ready_order(&token, &[(item, 1)]).await;
    let failed = id_of(&ready);
    let fail_url = stack.buyer_action(redirect_of(&ready), "fail").await;
    let back = stack.return_from_pg(&fail_url).await;
    assert_eq!(
        back,
        json!({"order_id": failed, "status": "payment_failed", "applied": true})
    );
    let order = stack.order(&token, failed, 0).await;
    assert_eq!(order["status"], "payment_failed");
    assert_eq!(order["payment"]["status"], "failed");
    assert_eq!(order["payment"]["failure_code"], "buyer_payment_failed");
    assert_eq!(
        events(&stack.db, failed, "order.payment_failed")
            .await
            .len(),
        1
    );

    // Replays change nothing; no money moved.
    assert_eq!(stack.return_from_pg(&cancel_url).await["applied"], false);
    assert_eq!(stack.return_from_pg(&fail_url).await["applied"], false);
    assert_eq!(stack.pg_requests("approve").await, 0);
    assert!(stack.ledger().await.is_empty());
}

#[tokio::test]
async fn a_paid_subscription_order_creates_the_subscription_and_schedules_cycle_two() {
    let stack = Stack::start(&["--auto-approve"]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "밀크씨슬", 30_000, 0).await;
    let body = json!({
        "kind": "subscription",
        "period_days": 30,
        "lines": [{"item_id": item, "quantity": 2}],
        "receiver": {"name": "홍길동", "phone": "010-1234-5678", "city": "Seoul",
                     "detail_address": "1 Sejong-daero"},
    });
    let resp = stack
        .post_json("/api/orders", &body)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let placed: Value = resp.json().await.unwrap();
    let id = id_of(&placed);
    let ready = stack
        .order_until(&token, id, "payment_ready", PATIENCE)
        .await;
    stack.follow_redirect(redirect_of(&ready)).await;
    let paid = stack.order_until(&token, id, "paid", PATIENCE).await;
    let sub_id = paid["subscription_id"]
        .as_i64()
        .expect("linked to its subscription");
    assert_eq!(paid["cycle"], 1);

    let subs: Value = stack
        .get("/api/subscriptions")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(subs["total"], 1, "{subs}");
    let sub = &subs["items"][0];
    assert_eq!(sub["id"], sub_id);
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["period_days"], 30);
    assert_eq!(sub["cycle"], 1);
    assert_eq!(sub["first_order_id"], id);
    assert_eq!(sub["lines"][0]["quantity"], 2);
    // Cycle 2 is due 30 local days after the first payment, at 02:00 in Seoul (17:00 UTC).
    let next = sub["next_charge_at"].as_str().unwrap();
    assert!(next.ends_with("T17:00:00Z"), "{next}");
    // Exactly: the Seoul date of the payment + 30 days, at 02:00 Seoul time (UTC+9 all
    // year). A window of hours would not do: paid between 00:00 and 02:00 in Seoul, the
    // charge comes 30 days and up to 2 hours later.
    let paid_at = chrono::DateTime::parse_from_rfc3339(paid["paid_at"].as_str().unwrap()).unwrap();
    let next_at = chrono::DateTime::parse_from_rfc3339(next).unwrap();
    let seoul = chrono::FixedOffset::east_opt(9 * 3600).unwrap();
    let due = paid_at.with_timezone(&seoul).date_naive() + chrono::Days::new(30);
    let expected = due
        .and_hms_opt(2, 0, 0)
        .unwrap()
        .and_local_timezone(seoul)
        .unwrap();
    assert_eq!(next_at, expected, "paid at {paid_at}");

    // The SID from the approval is the subscription's, and its charge job is queued.
    let (sid, job_at): (Option<String>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT s.sid, t.scheduled_at FROM subscriptions s
         JOIN fang_tasks t ON t.metadata->>'type' = 'subscription.charge'
                          AND (t.metadata->>'subscription_id')::bigint = s.id
                          AND (t.metadata->>'cycle')::int = 2
         WHERE s.id = $1",
    )
    .bind(sub_id)
    .fetch_one(&stack.db)
    .await
    .unwrap();
    let ledger = stack.ledger_of("approve").await;
    assert_eq!(ledger[0]["sid"].as_str(), sid.as_deref());
    assert_eq!(job_at, next_at);
    let created = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM outbox_events WHERE event_type = 'subscription.created'
         AND aggregate_id = $1",
    )
    .bind(sub_id)
    .fetch_one(&stack.db)
    .await
    .unwrap();
    assert_eq!(created, 1);
}
