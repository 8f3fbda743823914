//! The gateway-error policy end to end: a request KakaoPay rejects is sent once and fails
//! its job for operators (the customer's subscription stays due and is flagged); a
//! KakaoPay that refuses our credentials or address defers the work without failing any
//! customer's order or subscription. Recurring charges run in-process on a simulated
//! clock; the one-time flow runs through the real binaries.

use std::time::Duration;

use billing::subscriptions::SubscriptionStatus;
use serde_json::json;

use crate::helpers::fixtures;
use crate::helpers::sim::{kst, Billing, NewSub};
use crate::helpers::stack::Stack;

/// (state, retries, error) of the subscription's charge jobs.
async fn charge_jobs(b: &Billing, id: i64) -> Vec<(String, i32, Option<String>)> {
    sqlx::query_as(
        "SELECT state::text, retries, error_message FROM fang_tasks
         WHERE metadata->>'type' = 'subscription.charge'
           AND (metadata->>'subscription_id')::bigint = $1 ORDER BY created_at",
    )
    .bind(id)
    .fetch_all(&b.db)
    .await
    .unwrap()
}

async fn attempts(b: &Billing, id: i64) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT status, failure_code FROM charge_attempts WHERE subscription_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&b.db)
    .await
    .unwrap()
}

/// A 30-day subscription paid on 1 January; its cycle 2 falls due on 31 January 02:00.
async fn monthly(b: &Billing) -> billing::ids::SubscriptionId {
    let user = b.user().await;
    let item = b.item(10_000).await;
    b.subscription(NewSub {
        user,
        items: vec![(item, 2)],
        period_days: 30,
        paid_at: kst(2027, 1, 1, 10, 0),
    })
    .await
}

#[tokio::test]
async fn an_ip_refusal_on_a_recurring_charge_makes_one_gateway_call_and_defers_without_dunning() {
    let mut b = Billing::start(|_| {}).await;
    let id = monthly(&b).await;
    // KakaoPay's −798 "IP not allowed": our configuration, not the customer's card.
    b.set_knobs(json!({"decline_rate": 1.0, "decline_code": -798, "endpoints": ["subscription"]}))
        .await;
    b.start_worker();
    // Five simulated minutes past the due time: the deferred job comes round again and
    // again, and is refused by the misconfiguration hold without a call.
    b.run_until(kst(2027, 1, 31, 2, 5)).await;

    assert_eq!(b.pg_requests("subscription").await, 1);
    assert_eq!(
        attempts(&b, id.0).await,
        vec![("not_charged".to_owned(), Some("-798".to_owned()))]
    );
    let jobs = charge_jobs(&b, id.0).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let (state, retries, error) = &jobs[0];
    assert_eq!((state.as_str(), *retries), ("retried", 0), "{jobs:?}");
    assert!(
        error.as_deref().unwrap_or_default().contains("not sent"),
        "{jobs:?}"
    );
    let s = b.sub(id).await;
    assert_eq!(
        s.status,
        SubscriptionStatus::Active,
        "no dunning for our misconfiguration"
    );
    assert_eq!(s.cycle, 1, "the cycle stays due");
    assert!(b.ledger("charge").await.is_empty());
    b.stop_worker().await;
}

#[tokio::test]
async fn a_rejected_charge_request_is_sent_once_fails_its_job_and_flags_the_subscription() {
    let mut b = Billing::start(|_| {}).await;
    let id = monthly(&b).await;
    // −701: KakaoPay rejects the request itself; sending it again cannot help.
    b.set_knobs(json!({"decline_rate": 1.0, "decline_code": -701, "endpoints": ["subscription"]}))
        .await;
    b.start_worker();
    b.run_until(kst(2027, 2, 3, 0, 0)).await;

    assert_eq!(b.pg_requests("subscription").await, 1);
    assert_eq!(
        attempts(&b, id.0).await,
        vec![("not_charged".to_owned(), Some("-701".to_owned()))]
    );
    let jobs = charge_jobs(&b, id.0).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let (state, retries, error) = &jobs[0];
    assert_eq!((state.as_str(), *retries), ("failed", 0), "{jobs:?}");
    let error = error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("permanent:") && error.contains("-701"),
        "{error}"
    );

    let s = b.sub(id).await;
    assert_eq!(
        s.status,
        SubscriptionStatus::Active,
        "a rejected request is no decline"
    );
    assert_eq!(s.cycle, 1, "the cycle stays due");
    let flag: (Option<String>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT attention_code, attention_since FROM subscriptions WHERE id = $1")
            .bind(id.0)
            .fetch_one(&b.db)
            .await
            .unwrap();
    assert_eq!(flag.0.as_deref(), Some("-701"));
    assert!(flag.1.is_some());
    // The owner's (and the operators') view says so.
    let attention = b
        .sub(id)
        .await
        .needs_attention
        .expect("flagged in the view");
    assert_eq!(attention.code, "-701");

    // Fixed at KakaoPay's end, an operator retries the job: charged, flag cleared.
    b.set_knobs(json!({"decline_rate": 0.0})).await;
    let job: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM fang_tasks WHERE metadata->>'type' = 'subscription.charge' AND state = 'failed'",
    )
    .fetch_one(&b.db)
    .await
    .unwrap();
    billing::jobs::retry_failed(&b.ctx, &billing::audit::Actor::cli(), job)
        .await
        .unwrap();
    b.run_until_idle().await;
    let s = b.sub(id).await;
    assert_eq!(s.cycle, 2);
    assert_eq!(b.ledger("charge").await.len(), 1);
    let code: Option<String> =
        sqlx::query_scalar("SELECT attention_code FROM subscriptions WHERE id = $1")
            .bind(id.0)
            .fetch_one(&b.db)
            .await
            .unwrap();
    assert_eq!(code, None);
    assert_eq!(b.sub(id).await.needs_attention, None);
    b.stop_worker().await;
}

async fn approve_jobs(db: &sqlx::PgPool) -> Vec<(String, i32)> {
    sqlx::query_as(
        "SELECT state::text, retries FROM fang_tasks WHERE metadata->>'type' = 'payment.approve'",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_refused_secret_key_on_approval_keeps_the_buyers_order_and_defers() {
    let stack = Stack::start(&["--auto-approve"]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "루테인", 20_000, 10).await;
    let ready = stack.ready_order(&token, &[(item, 1)]).await;
    let id = ready["id"].as_i64().unwrap();
    // HTTP 400 with −798 is what KakaoPay sends for a server address it does not allow.
    stack
        .set_knobs(json!({"decline_rate": 1.0, "decline_code": -798, "endpoints": ["approve"]}))
        .await;
    stack
        .follow_redirect(ready["payment"]["redirect_url"].as_str().unwrap())
        .await;
    crate::helpers::jobs::wait_until(
        "the approval to be deferred",
        Duration::from_secs(20),
        || async { approve_jobs(&stack.db).await == vec![("retried".to_owned(), 0)] },
    )
    .await;
    // Give a blind resend every chance to happen.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        approve_jobs(&stack.db).await,
        vec![("retried".to_owned(), 0)]
    );
    assert_eq!(stack.pg_requests("approve").await, 1);
    // The alert's counter moved.
    assert!(
        stack
            .worker_metric("pg_failures_total{action=\"defer_misconfigured\"}")
            .await
            >= 1.0
    );
    let order = stack.order(&token, id, 0).await;
    assert_eq!(order["status"], "approving", "{order}");
    assert!(order["payment"]["failure_code"].is_null(), "{order}");
}

#[tokio::test]
async fn a_rejected_approval_fails_the_order_with_the_pg_code_and_the_job_for_operators() {
    let stack = Stack::start(&["--auto-approve"]).await;
    let token = stack.signup_and_login().await;
    let item = fixtures::item(&stack.db, "오메가3", 20_000, 10).await;
    let ready = stack.ready_order(&token, &[(item, 1)]).await;
    let id = ready["id"].as_i64().unwrap();
    // −705: an invalid pg_token — a request error, not a decline.
    stack
        .set_knobs(json!({"decline_rate": 1.0, "decline_code": -705, "endpoints": ["approve"]}))
        .await;
    stack
        .follow_redirect(ready["payment"]["redirect_url"].as_str().unwrap())
        .await;
    let failed = stack
        .order_until(&token, id, "payment_failed", Duration::from_secs(20))
        .await;
    assert_eq!(failed["payment"]["failure_code"], "-705", "{failed}");
    crate::helpers::jobs::wait_until("the job to fail", Duration::from_secs(10), || async {
        approve_jobs(&stack.db).await == vec![("failed".to_owned(), 0)]
    })
    .await;
    assert_eq!(stack.pg_requests("approve").await, 1);
}
