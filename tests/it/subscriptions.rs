//! Recurring billing against pgsim with the real worker runtime on a simulated clock:
//! cycles charged on their local dates, the dunning schedule, infrastructure failures that
//! never count as declines, hard declines that end dunning at once, ambiguous charges
//! reconciled from the SID status, customers'
//! edits and their schedule rules, and the routes' answers to bad input.

use billing::ids::{SubscriptionId, UserId};
use billing::subscriptions::{Patch, SubscriptionStatus};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::expect_error;
use crate::helpers::sim::{kst, Billing, NewSub};

// A customer's edits of products and receiver, through the API.
mod edits;
// Recovery and resubscribe checkouts, through the API.
mod recovery;

/// A 30-day subscription of 2 × a 10,000-won item, paid on 1 January 10:00 in Seoul.
async fn monthly(b: &Billing) -> (SubscriptionId, UserId, i64) {
    let user = b.user().await;
    let item = b.item(10_000).await;
    let id = b
        .subscription(NewSub {
            user,
            items: vec![(item, 2)],
            period_days: 30,
            paid_at: kst(2027, 1, 1, 10, 0),
        })
        .await;
    (id, user, item)
}

async fn set_period(
    ctx: &billing::Ctx,
    user: UserId,
    id: SubscriptionId,
    days: i32,
) -> billing::subscriptions::Subscription {
    let patch = Patch {
        period_days: Some(days),
        ..Default::default()
    };
    billing::subscriptions::update(ctx, user, id, patch)
        .await
        .unwrap()
}

/// (cycle, attempt, status, started_at, failure_code) of the subscription's attempts.
type AttemptRow = (i32, i32, String, DateTime<Utc>, Option<String>);

async fn attempts(b: &Billing, id: SubscriptionId) -> Vec<AttemptRow> {
    sqlx::query_as(
        "SELECT cycle, attempt, status, started_at, failure_code FROM charge_attempts
         WHERE subscription_id = $1 ORDER BY id",
    )
    .bind(id.0)
    .fetch_all(&b.db)
    .await
    .unwrap()
}

async fn events(b: &Billing, id: SubscriptionId) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_type FROM outbox_events
         WHERE aggregate_type = 'subscription' AND aggregate_id = $1 ORDER BY id",
    )
    .bind(id.0)
    .fetch_all(&b.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_product_off_sale_is_left_out_and_a_subscription_with_none_on_sale_ends() {
    let mut b = Billing::start(|_| {}).await;
    let user = b.user().await;
    let (kept, dropped) = (b.item(10_000).await, b.item(7_000).await);
    let both = b
        .subscription(NewSub {
            user,
            items: vec![(kept, 2), (dropped, 1)],
            period_days: 30,
            paid_at: kst(2027, 1, 1, 10, 0),
        })
        .await;
    let only_dropped = b
        .subscription(NewSub {
            user,
            items: vec![(dropped, 3)],
            period_days: 30,
            paid_at: kst(2027, 1, 1, 10, 0),
        })
        .await;
    sqlx::query("UPDATE items SET selling = false WHERE id = $1")
        .bind(dropped)
        .execute(&b.db)
        .await
        .unwrap();
    b.start_worker();
    b.run_until(kst(2027, 2, 1, 0, 0)).await;
    b.stop_worker().await;

    // The cycle is charged for what is still sold, and its order has only that line.
    let charges = b.ledger("charge").await;
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0]["amount"], 20_000);
    let lines: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT oi.item_id, oi.quantity FROM order_items oi JOIN orders o ON o.id = oi.order_id
         WHERE o.subscription_id = $1 AND o.cycle = 2",
    )
    .bind(both.0)
    .fetch_all(&b.db)
    .await
    .unwrap();
    assert_eq!(lines, vec![(kept, 2)]);
    // Nothing left to sell: no attempt, no call to KakaoPay, the subscription ends.
    assert!(attempts(&b, only_dropped).await.is_empty());
    let s = b.sub(only_dropped).await;
    assert_eq!(s.status, SubscriptionStatus::Canceled);
    assert_eq!(s.cancel_reason.as_deref(), Some("items_unavailable"));
    assert_eq!(
        events(&b, only_dropped).await,
        vec!["subscription.created", "subscription.canceled"]
    );
}

/// The `subscription.renewal_upcoming` events of a subscription: (cycle reminded, its
/// charge time, its amount).
async fn reminders(b: &Billing, id: SubscriptionId) -> Vec<(i64, String, i64)> {
    let rows: Vec<Value> = sqlx::query_scalar(
        "SELECT data FROM outbox_events WHERE aggregate_type = 'subscription'
           AND aggregate_id = $1 AND event_type = 'subscription.renewal_upcoming' ORDER BY id",
    )
    .bind(id.0)
    .fetch_all(&b.db)
    .await
    .unwrap();
    rows.iter()
        .map(|d| {
            (
                d["cycle"].as_i64().unwrap() + 1,
                d["next_charge_at"].as_str().unwrap().to_owned(),
                d["amount"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn renewals_are_reminded_three_days_ahead_once_per_cycle_whatever_the_reschedules() {
    let mut b = Billing::start(|_| {}).await;
    let (a, user_a, _) = monthly(&b).await;
    let (paused, user_p, _) = monthly(&b).await;
    let (skipped, user_k, _) = monthly(&b).await;
    let ctx = b.ctx.clone();
    let remind = || billing::subscriptions::remind_renewals(&ctx);
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    // Cycle 2 is due 31 January 02:00: four days ahead, nothing to remind yet.
    b.set_time(kst(2027, 1, 27, 1, 0)).await;
    assert_eq!(remind().await.unwrap(), 0);
    billing::subscriptions::pause(&b.ctx, user_p, paused)
        .await
        .unwrap();
    billing::subscriptions::skip(&b.ctx, user_k, skipped)
        .await
        .unwrap();

    // Three days ahead: only the subscription still due then, once.
    b.set_time(kst(2027, 1, 28, 3, 0)).await;
    assert_eq!(remind().await.unwrap(), 1);
    assert_eq!(remind().await.unwrap(), 0);
    assert_eq!(
        reminders(&b, a).await,
        vec![(2, at(kst(2027, 1, 31, 2, 0)), 20_000)]
    );
    // Skipped after its reminder, cycle 2 is not reminded again at its new date; the
    // subscription skipped earlier is reminded when its new date comes near.
    billing::subscriptions::skip(&b.ctx, user_a, a)
        .await
        .unwrap();
    b.set_time(kst(2027, 2, 27, 12, 0)).await;
    assert_eq!(remind().await.unwrap(), 1);
    assert_eq!(reminders(&b, a).await.len(), 1);
    assert_eq!(
        reminders(&b, skipped).await,
        vec![(2, at(kst(2027, 3, 2, 2, 0)), 20_000)]
    );

    // Both charged on 2 March; cycle 3 (1 April) is reminded on 29 March for both. The
    // paused subscription was never reminded.
    b.start_worker();
    b.run_until(kst(2027, 3, 3, 0, 0)).await;
    b.stop_worker().await;
    b.set_time(kst(2027, 3, 29, 2, 0)).await;
    assert_eq!(remind().await.unwrap(), 2);
    for id in [a, skipped] {
        assert_eq!(
            reminders(&b, id).await.last().unwrap(),
            &(3, at(kst(2027, 4, 1, 2, 0)), 20_000)
        );
    }
    assert!(reminders(&b, paused).await.is_empty());
}

#[tokio::test]
async fn each_cycle_is_charged_once_at_the_local_charge_time() {
    let mut b = Billing::start(|_| {}).await;
    let (id, _, item) = monthly(&b).await;
    let s = b.sub(id).await;
    assert_eq!(s.status, SubscriptionStatus::Active);
    assert_eq!(s.next_charge_at, Some(kst(2027, 1, 31, 2, 0)));
    assert_eq!(
        s.upcoming,
        vec![
            kst(2027, 1, 31, 2, 0),
            kst(2027, 3, 2, 2, 0),
            kst(2027, 4, 1, 2, 0)
        ]
    );
    b.start_worker();
    // A price change before cycle 3 is charged at the new price.
    b.run_until(kst(2027, 2, 1, 0, 0)).await;
    sqlx::query("UPDATE items SET origin_price = 12000 WHERE id = $1")
        .bind(item)
        .execute(&b.db)
        .await
        .unwrap();
    b.run_until(kst(2027, 3, 10, 0, 0)).await;

    let a = attempts(&b, id).await;
    assert_eq!(
        a,
        vec![
            (2, 1, "succeeded".into(), kst(2027, 1, 31, 2, 0), None),
            (3, 1, "succeeded".into(), kst(2027, 3, 2, 2, 0), None),
        ]
    );
    let charges = b.ledger("charge").await;
    let amounts: Vec<i64> = charges
        .iter()
        .map(|c| c["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![20_000, 24_000]);
    let orders: Vec<(i32, String, i64)> = sqlx::query_as(
        "SELECT cycle, status, total_amount FROM orders WHERE subscription_id = $1 ORDER BY cycle",
    )
    .bind(id.0)
    .fetch_all(&b.db)
    .await
    .unwrap();
    assert_eq!(
        orders,
        vec![
            (1, "paid".into(), 0),
            (2, "paid".into(), 20_000),
            (3, "paid".into(), 24_000)
        ]
    );
    let s = b.sub(id).await;
    assert_eq!(s.cycle, 3);
    assert_eq!(s.next_charge_at, Some(kst(2027, 4, 1, 2, 0)));
    assert_eq!(
        events(&b, id).await,
        vec![
            "subscription.created",
            "subscription.charged",
            "subscription.charged"
        ]
    );
    // Sales were counted for the charged cycles (2 units each), added at the next fold.
    assert_eq!(billing::items::fold_sales(&b.ctx).await.unwrap(), 4);
    let sales: i64 = sqlx::query_scalar("SELECT sales::bigint FROM items WHERE id = $1")
        .bind(item)
        .fetch_one(&b.db)
        .await
        .unwrap();
    assert_eq!(sales, 4);
    b.stop_worker().await;
}

#[tokio::test]
async fn five_declines_cancel_on_day_three_and_inactivate_the_sid() {
    let mut b = Billing::start(|_| {}).await;
    let (id, _, _) = monthly(&b).await;
    b.set_knobs(json!({"decline_rate": 1.0, "endpoints": ["subscription"]}))
        .await;
    assert_eq!(b.sub(id).await.dunning, None, "not in dunning while active");
    b.start_worker();
    // Declined on 31 January (twice) and 1 February: the customer sees where dunning
    // stands — two retries left, the next on 2 February, and KakaoPay's reason.
    b.run_until(kst(2027, 2, 1, 12, 0)).await;
    let s = b.sub(id).await;
    assert_eq!(s.status, SubscriptionStatus::PastDue);
    let d = s.dunning.expect("past_due shows its dunning");
    assert_eq!(
        (d.declines, d.retries_left, d.next_retry_at),
        (3, 2, Some(kst(2027, 2, 2, 2, 0)))
    );
    assert_eq!(d.last_failure_code.as_deref(), Some("-782"));
    assert!(d.last_failure_message.is_some());
    b.run_until(kst(2027, 2, 10, 0, 0)).await;

    let a = attempts(&b, id).await;
    let day = |d| kst(2027, 1, d, 2, 0);
    let got: Vec<(i32, String, DateTime<Utc>)> =
        a.iter().map(|x| (x.1, x.2.clone(), x.3)).collect();
    assert_eq!(got.len(), 5, "{got:?}");
    for (i, (n, status, at)) in got.iter().enumerate() {
        assert_eq!(*n, i as i32 + 1);
        assert_eq!(status, "declined");
        let expected = match i {
            0 | 1 => day(31),
            k => kst(2027, 2, (k - 1) as u32, 2, 0),
        };
        // Immediate retries run a few simulated milliseconds later at most.
        assert!(
            (*at - expected).num_seconds().abs() < 2,
            "attempt {n} at {at}, want {expected}"
        );
    }
    let s = b.sub(id).await;
    assert_eq!(s.status, SubscriptionStatus::Canceled);
    assert_eq!(s.cancel_reason.as_deref(), Some("payment_failed"));
    assert_eq!(s.dunning, None);
    assert!(s.canceled_at.unwrap() >= kst(2027, 2, 3, 2, 0));
    assert!(s.canceled_at.unwrap() < kst(2027, 2, 3, 2, 1));
    assert!(s.upcoming.is_empty());
    assert_eq!(b.ledger("charge").await.len(), 0);
    let sid = b.sid_of(id).await;
    assert_eq!(b.sid_state(&sid).await["status"], "INACTIVE");
    assert_eq!(
        events(&b, id).await,
        vec![
            "subscription.created",
            "subscription.past_due",
            "subscription.canceled"
        ]
    );
    let failure: String = sqlx::query_scalar(
        "SELECT failure_code FROM charge_attempts WHERE subscription_id = $1 LIMIT 1",
    )
    .bind(id.0)
    .fetch_one(&b.db)
    .await
    .unwrap();
    assert_eq!(failure, "-782");
    let canceled = event_data(&b, id, "subscription.canceled").await;
    assert_eq!(
        (&canceled["reason"], &canceled["failure_code"]),
        (&json!("payment_failed"), &json!("-782"))
    );
    b.stop_worker().await;
}

/// The data of the subscription's (only) event of `event_type`.
async fn event_data(b: &Billing, id: SubscriptionId, event_type: &str) -> Value {
    sqlx::query_scalar(
        "SELECT data FROM outbox_events
         WHERE aggregate_type = 'subscription' AND aggregate_id = $1 AND event_type = $2",
    )
    .bind(id.0)
    .bind(event_type)
    .fetch_one(&b.db)
    .await
    .unwrap()
}

/// (status, failure_code) of the subscription's attempts, in order.
async fn attempt_codes(b: &Billing, id: SubscriptionId) -> Vec<(String, Option<String>)> {
    attempts(b, id)
        .await
        .into_iter()
        .map(|a| (a.2, a.4))
        .collect()
}

#[tokio::test]
async fn a_hard_decline_cancels_at_once_while_a_soft_one_follows_the_schedule() {
    let mut b = Billing::start(|_| {}).await;
    let (hard, _, _) = monthly(&b).await;
    let (soft, _, _) = monthly(&b).await;
    // The hard one's SID belongs to someone else (−753) on every charge; every other charge
    // is declined softly (−782) twice, then goes through.
    let sid = b.sid_of(hard).await;
    b.set_sid_decline(&sid, json!({"error_code": -753})).await;
    b.set_knobs(json!({"decline_rate": 1.0, "endpoints": ["subscription"], "max_faults": 2}))
        .await;
    b.start_worker();
    b.run_until(kst(2027, 2, 5, 0, 0)).await;

    // Hard: one charge call, the attempt declined with the code, canceled at once without
    // the schedule's retries, the SID inactivated, the event carrying the code.
    assert_eq!(
        attempt_codes(&b, hard).await,
        vec![("declined".to_owned(), Some("-753".to_owned()))]
    );
    let s = b.sub(hard).await;
    assert_eq!(s.status, SubscriptionStatus::Canceled);
    assert_eq!(s.cancel_reason.as_deref(), Some("hard_decline"));
    let canceled_at = s.canceled_at.unwrap();
    assert!(canceled_at >= kst(2027, 1, 31, 2, 0) && canceled_at < kst(2027, 1, 31, 2, 1));
    assert!(s.upcoming.is_empty());
    assert_eq!(b.sid_state(&sid).await["status"], "INACTIVE");
    assert_eq!(
        events(&b, hard).await,
        vec!["subscription.created", "subscription.canceled"]
    );
    let canceled = event_data(&b, hard, "subscription.canceled").await;
    assert_eq!(
        (&canceled["reason"], &canceled["failure_code"]),
        (&json!("hard_decline"), &json!("-753"))
    );
    let no_job: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM fang_tasks WHERE metadata->>'type' = 'subscription.charge'
           AND (metadata->>'subscription_id')::bigint = $1 AND state IN ('new', 'retried')",
    )
    .bind(hard.0)
    .fetch_one(&b.db)
    .await
    .unwrap();
    assert_eq!(no_job, 0, "no retry may be left pending");

    // Soft: the schedule (declined, retried at once, declined, next day charged).
    let codes: Vec<_> = attempt_codes(&b, soft).await;
    assert_eq!(
        codes,
        vec![
            ("declined".to_owned(), Some("-782".to_owned())),
            ("declined".to_owned(), Some("-782".to_owned())),
            ("succeeded".to_owned(), None),
        ]
    );
    assert_eq!(b.sub(soft).await.status, SubscriptionStatus::Active);
    // One call for the hard one, three for the soft one.
    assert_eq!(b.pg_requests("subscription").await, 4);
    assert_eq!(b.ledger("charge").await.len(), 1);
    b.stop_worker().await;
}

#[tokio::test]
async fn a_success_during_dunning_returns_to_active_on_the_original_grid() {
    declined_twice_then_charged(-782).await;
}

/// A code KakaoPay's notes do not list is a soft decline: the same schedule as −782.
#[tokio::test]
async fn a_decline_code_kakaopay_does_not_list_is_soft() {
    declined_twice_then_charged(-789).await;
}

async fn declined_twice_then_charged(code: i64) {
    let mut b = Billing::start(|_| {}).await;
    let (id, _, _) = monthly(&b).await;
    // Declined twice (the first try and the immediate retry), then the next day's works.
    b.set_knobs(json!({"decline_rate": 1.0, "decline_code": code,
                       "endpoints": ["subscription"], "max_faults": 2}))
        .await;
    b.start_worker();
    b.run_until(kst(2027, 1, 31, 12, 0)).await;
    let s = b.sub(id).await;
    assert_eq!(s.status, SubscriptionStatus::PastDue);
    assert_eq!(s.next_charge_at, Some(kst(2027, 2, 1, 2, 0)));
    b.run_until(kst(2027, 2, 5, 0, 0)).await;
    let s = b.sub(id).await;
    assert_eq!(s.status, SubscriptionStatus::Active);
    assert_eq!(s.cycle, 2);
    // Cycle 3 stays on anchor + 2 × period, not "charged date + period".
    assert_eq!(s.next_charge_at, Some(kst(2027, 3, 2, 2, 0)));
    let code = code.to_string();
    assert_eq!(
        attempt_codes(&b, id).await,
        vec![
            ("declined".to_owned(), Some(code.clone())),
            ("declined".to_owned(), Some(code.clone())),
            ("succeeded".to_owned(), None),
        ]
    );
    assert_eq!(
        event_data(&b, id, "subscription.past_due").await["failure_code"],
        code.as_str()
    );
    assert_eq!(b.ledger("charge").await.len(), 1);
    assert_eq!(
        events(&b, id).await,
        vec![
            "subscription.created",
            "subscription.past_due",
            "subscription.charged"
        ]
    );
    b.stop_worker().await;
}

#[tokio::test]
async fn server_errors_and_refused_connections_never_count_as_declines() {
    let mut b = Billing::start(|s| {
        s.subscriptions.reconcile_window_secs = std::time::Duration::from_secs(60)
    })
    .await;
    let (id, _, _) = monthly(&b).await;
    // Three 5xx in a row: each sent charge is ambiguous, reconciled as "did not land" and
    // tried again — the subscription never becomes past_due.
    b.set_knobs(json!({"server_error_rate": 1.0, "endpoints": ["subscription"], "max_faults": 3}))
        .await;
    b.start_worker();
    b.run_until(kst(2027, 1, 31, 3, 0)).await;
    let a = attempts(&b, id).await;
    let statuses: Vec<&str> = a.iter().map(|x| x.2.as_str()).collect();
    assert_eq!(
        statuses,
        vec!["not_charged", "not_charged", "not_charged", "succeeded"]
    );
    assert!(events(&b, id)
        .await
        .iter()
        .all(|e| e != "subscription.past_due"));
    assert_eq!(b.ledger("charge").await.len(), 1);
    let s = b.sub(id).await;
    assert_eq!((s.status, s.cycle), (SubscriptionStatus::Active, 2));
    b.stop_worker().await;
}

#[tokio::test]
async fn a_charge_whose_answer_was_lost_is_found_by_the_sid_status_not_sent_again() {
    let mut b = Billing::start(|_| {}).await;
    let (id, _, _) = monthly(&b).await;
    b.set_knobs(
        json!({"drop_rate": 1.0, "timeout_ms": 10, "endpoints": ["subscription"], "max_faults": 1}),
    )
    .await;
    b.start_worker();
    b.run_until(kst(2027, 1, 31, 3, 0)).await;
    let a = attempts(&b, id).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].2, "succeeded");
    assert_eq!(b.ledger("charge").await.len(), 1);
    let s = b.sub(id).await;
    assert_eq!(s.cycle, 2);
    assert_eq!(s.next_charge_at, Some(kst(2027, 3, 2, 2, 0)));
    // The reconciled cycle's order matches the ledger.
    let total: i64 = sqlx::query_scalar(
        "SELECT total_amount FROM orders WHERE subscription_id = $1 AND cycle = 2",
    )
    .bind(id.0)
    .fetch_one(&b.db)
    .await
    .unwrap();
    assert_eq!(total, 20_000);
    b.stop_worker().await;
}

#[tokio::test]
async fn an_undecidable_charge_goes_to_the_review_list_and_blocks_new_attempts() {
    let mut b = Billing::start(|s| {
        s.subscriptions.reconcile_window_secs = std::time::Duration::from_secs(60);
        s.subscriptions.review_after_secs = std::time::Duration::from_secs(600);
        // The breaker's open time is real time; simulated minutes pass in milliseconds, so
        // it must not outlast the outage it reacts to.
        s.pg_guard.breaker_open_ms = std::time::Duration::from_millis(50);
    })
    .await;
    let (id, _, _) = monthly(&b).await;
    let app = b.api().await;
    // The charge meets a 5xx (sent, outcome unknown) and the SID status cannot be read
    // for a while either.
    b.set_knobs(json!({"server_error_rate": 1.0,
                       "endpoints": ["subscription", "manage/subscription/status"]}))
        .await;
    b.start_worker();
    b.run_until(kst(2027, 1, 31, 2, 20)).await;
    // Tokens expire by the same clock: the operator logs in at the simulated time.
    let (_, admin) = app.admin().await;
    let list: Value = app
        .get_json("/api/admin/charges/unknown?review=true", &admin.access)
        .await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["items"][0]["subscription_id"], id.0);
    assert_eq!(list["items"][0]["cycle"], 2);
    // Operators see it from the command line too.
    let out = crate::helpers::worker_cli(&b.url, &["charges", "unknown", "--review"]);
    assert!(out.contains("1 unknown charge(s)"), "{out}");
    assert!(
        out.contains(&format!("subscription={} ", id.0)) && out.contains("review since"),
        "{out}"
    );
    // No other attempt was made for the cycle meanwhile.
    assert_eq!(attempts(&b, id).await.len(), 1);
    assert_eq!(attempts(&b, id).await[0].2, "unknown");
    // The PG heals: the status shows no charge since the attempt, so it did not land; the
    // cycle is charged once, and the list empties.
    b.set_knobs(json!({"server_error_rate": 0.0})).await;
    b.run_until(kst(2027, 1, 31, 3, 0)).await;
    let statuses: Vec<String> = attempts(&b, id).await.into_iter().map(|a| a.2).collect();
    assert_eq!(statuses, vec!["not_charged", "succeeded"]);
    assert_eq!(b.ledger("charge").await.len(), 1);
    let (_, admin) = app.admin().await;
    let list: Value = app
        .get_json("/api/admin/charges/unknown", &admin.access)
        .await;
    assert_eq!(list["total"], 0);
    b.stop_worker().await;
}

#[tokio::test]
async fn an_operator_has_an_unknown_charge_decided_now_rather_than_after_its_backoff() {
    let mut b = Billing::start(|s| {
        s.subscriptions.reconcile_window_secs = std::time::Duration::from_secs(60);
        // The first inquiry would wait 30–60 minutes.
        s.payments.reconcile_min_backoff_ms = std::time::Duration::from_millis(3_600_000);
        s.payments.reconcile_max_backoff_ms = std::time::Duration::from_millis(3_600_000);
    })
    .await;
    let (id, _, _) = monthly(&b).await;
    // The cycle's charge meets one 5xx: sent, outcome unknown.
    b.set_knobs(json!({"server_error_rate": 1.0, "endpoints": ["subscription"], "max_faults": 1}))
        .await;
    b.start_worker();
    b.run_until(kst(2027, 1, 31, 2, 5)).await;
    b.stop_worker().await;
    // Tokens expire by the same clock, so the operator and the customer log in now.
    let app = b.api().await;
    let (_, admin) = app.admin().await;
    let customer = app.signup().await;
    let customer = app.login(&customer).await;
    assert_eq!(attempts(&b, id).await[0].2, "unknown");
    let list: Value = app
        .get_json("/api/admin/charges/unknown", &admin.access)
        .await;
    let attempt_id = list["items"][0]["attempt_id"].as_i64().unwrap();
    let db = b.db.clone();
    let inquiries = || async {
        sqlx::query_as::<_, (DateTime<Utc>, i32)>(
            "SELECT scheduled_at, (metadata->>'round')::int FROM fang_tasks
             WHERE metadata->>'type' = 'subscription.reconcile' AND state = 'new'",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    };
    let waiting = inquiries().await;
    assert_eq!(waiting.len(), 1);
    assert!(waiting[0].0 >= kst(2027, 1, 31, 2, 30), "{waiting:?}");
    let reconcile = |token: &str, attempt: i64| {
        app.request(
            Method::POST,
            &format!("/api/admin/charges/{attempt}/reconcile"),
        )
        .bearer_auth(token)
        .send()
    };

    // Customers cannot; an unknown id is a 404.
    expect_error(
        reconcile(&customer.access, attempt_id).await.unwrap(),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        reconcile(&admin.access, attempt_id + 1000).await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // With its inquiry gone (say, purged by hand), the command line queues a new one...
    sqlx::query("DELETE FROM fang_tasks WHERE metadata->>'type' = 'subscription.reconcile'")
        .execute(&b.db)
        .await
        .unwrap();
    let out =
        crate::helpers::worker_cli(&b.url, &["charges", "reconcile", &attempt_id.to_string()]);
    assert!(out.contains("queued"), "{out}");
    // ...and the route brings a waiting one forward instead of adding a second.
    let resp = reconcile(&admin.access, attempt_id).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["action"], "brought_forward", "{body}");
    let waiting = inquiries().await;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(
        waiting[0].0 <= billing::clock::Clock::now(&b.clock),
        "{waiting:?}"
    );
    assert_eq!(
        waiting[0].1, 1,
        "the next round of this attempt's inquiries"
    );

    // The fleet decides it within the same simulated minute: it did not land, so the
    // cycle is charged again, once.
    b.start_worker();
    b.run_until(kst(2027, 1, 31, 2, 6)).await;
    let statuses: Vec<String> = attempts(&b, id).await.into_iter().map(|a| a.2).collect();
    assert_eq!(statuses, vec!["not_charged", "succeeded"]);
    assert_eq!(b.ledger("charge").await.len(), 1);
    // Decided: nothing left to reconcile, and the request changes nothing.
    expect_error(
        reconcile(&admin.access, attempt_id).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(inquiries().await.is_empty());
    b.stop_worker().await;
}

#[tokio::test]
async fn schedule_rules_skip_period_change_pause_and_resume() {
    let mut b = Billing::start(|_| {}).await;
    let (id, user, _) = monthly(&b).await;
    b.start_worker();
    b.run_until(kst(2027, 1, 31, 12, 0)).await; // cycle 2 charged at 02:00 on 31 Jan
    let ctx = &b.ctx.clone();

    // Skip: the next charge moves one period forward.
    let s = billing::subscriptions::skip(ctx, user, id).await.unwrap();
    assert_eq!(s.next_charge_at, Some(kst(2027, 4, 1, 2, 0)));

    // A shorter period counts from the last charge (31 Jan + 14 days).
    let s = set_period(ctx, user, id, 14).await;
    assert_eq!(s.next_charge_at, Some(kst(2027, 2, 14, 2, 0)));
    assert_eq!(
        s.upcoming,
        vec![
            kst(2027, 2, 14, 2, 0),
            kst(2027, 2, 28, 2, 0),
            kst(2027, 3, 14, 2, 0)
        ]
    );

    // Pause: nothing is charged however long it lasts.
    let s = billing::subscriptions::pause(ctx, user, id).await.unwrap();
    assert_eq!(s.status, SubscriptionStatus::Paused);
    assert_eq!(s.next_charge_at, None);
    b.run_until(kst(2027, 3, 20, 15, 0)).await;
    assert_eq!(attempts(&b, id).await.len(), 1);

    // Resume late in the day: last + period is long past, so the charge runs now.
    let s = billing::subscriptions::resume(ctx, user, id).await.unwrap();
    assert_eq!(s.next_charge_at, Some(kst(2027, 3, 20, 15, 0)));
    b.run_until(kst(2027, 3, 21, 0, 0)).await;
    let a = attempts(&b, id).await;
    assert_eq!(a.len(), 2);
    assert_eq!(
        (a[1].0, a[1].2.as_str(), a[1].3),
        (3, "succeeded", kst(2027, 3, 20, 15, 0))
    );
    // The grid restarts from that charge's date.
    let s = b.sub(id).await;
    assert_eq!(s.next_charge_at, Some(kst(2027, 4, 3, 2, 0)));

    // A period change counts from the last charge (20 Mar + 7 days)…
    let s = set_period(ctx, user, id, 7).await;
    assert_eq!(s.next_charge_at, Some(kst(2027, 3, 27, 2, 0)));
    // …and when that date has already passed, the charge runs at once (the worker is
    // stopped so the 27 Mar run is missed).
    b.stop_worker().await;
    b.set_time(kst(2027, 4, 10, 9, 0)).await;
    let s = set_period(ctx, user, id, 10).await;
    assert_eq!(s.next_charge_at, Some(kst(2027, 4, 10, 9, 0)));
    // Only one live charge job exists, at the new time.
    let jobs: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT scheduled_at FROM fang_tasks WHERE metadata->>'type' = 'subscription.charge'
         AND state IN ('new', 'retried')",
    )
    .fetch_all(&b.db)
    .await
    .unwrap();
    assert_eq!(jobs, vec![kst(2027, 4, 10, 9, 0)]);
}

#[tokio::test]
async fn cancel_while_a_charge_is_in_flight_allows_that_charge_and_nothing_after() {
    let mut b = Billing::start(|_| {}).await;
    let (id, user, _) = monthly(&b).await;
    b.set_knobs(json!({"latency_ms": 700})).await;
    b.set_time(kst(2027, 1, 31, 2, 0)).await;
    b.start_worker();
    // Wait until the charge is at KakaoPay.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while attempts(&b, id).await.is_empty() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Rescheduling edits wait for the outcome; cancel does not.
    let err = billing::subscriptions::skip(&b.ctx, user, id)
        .await
        .unwrap_err();
    assert!(matches!(err, billing::Error::ChargeInProgress), "{err:?}");
    let s = billing::subscriptions::cancel(&b.ctx, user, id)
        .await
        .unwrap();
    assert_eq!(s.status, SubscriptionStatus::Canceled);
    b.run_until(kst(2027, 6, 1, 0, 0)).await;
    let a = attempts(&b, id).await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].2, "succeeded");
    assert_eq!(b.ledger("charge").await.len(), 1);
    let s = b.sub(id).await;
    assert_eq!((s.status, s.cycle), (SubscriptionStatus::Canceled, 2));
    assert_eq!(s.next_charge_at, None);
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE subscription_id = $1 AND cycle = 2")
            .bind(id.0)
            .fetch_one(&b.db)
            .await
            .unwrap();
    assert_eq!(orders, 1, "the charged cycle ships");
    assert_eq!(b.sid_state(&b.sid_of(id).await).await["status"], "INACTIVE");
    b.stop_worker().await;
}

#[tokio::test]
async fn the_sweep_enqueues_due_subscriptions_that_lack_a_job() {
    let mut b = Billing::start(|_| {}).await;
    let (id, _, _) = monthly(&b).await;
    // A job lost to an operator's cleanup.
    sqlx::query("DELETE FROM fang_tasks")
        .execute(&b.db)
        .await
        .unwrap();
    b.start_worker();
    b.run_until(kst(2027, 2, 2, 0, 0)).await;
    assert!(attempts(&b, id).await.is_empty());
    let n = billing::subscriptions::charge::sweep(&b.ctx, 100)
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Idempotent: the job is queued already.
    assert_eq!(
        billing::subscriptions::charge::sweep(&b.ctx, 100)
            .await
            .unwrap(),
        0
    );
    b.run_until(kst(2027, 2, 2, 1, 0)).await;
    let a = attempts(&b, id).await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].2, "succeeded");
    b.stop_worker().await;
}

#[tokio::test]
async fn the_routes_show_subscriptions_and_refuse_bad_edits() {
    let b = Billing::start(|_| {}).await;
    let app = b.api().await;
    let owner = app.signup().await;
    let tokens = app.login(&owner).await;
    let item = b.item(15_000).await;
    let id = b
        .subscription(NewSub {
            user: UserId(owner.id),
            items: vec![(item, 1)],
            period_days: 30,
            paid_at: kst(2027, 1, 1, 10, 0),
        })
        .await;
    let path = format!("/api/subscriptions/{}", id.0);

    let list: Value = app.get_json("/api/subscriptions", &tokens.access).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["id"], id.0);
    assert!(list["items"][0].get("attempts").is_none());
    let one: Value = app.get_json(&path, &tokens.access).await;
    assert_eq!(one["status"], "active");
    assert_eq!(one["next_amount"], 15_000);
    assert_eq!(one["next_charge_at"], "2027-01-30T17:00:00Z");
    assert_eq!(one["upcoming"].as_array().unwrap().len(), 3);
    assert_eq!(one["attempts"], json!([]));
    assert_eq!(one["lines"][0]["item_id"], item);

    let patch = |body: Value| {
        app.request(Method::PATCH, &path)
            .bearer_auth(&tokens.access)
            .json(&body)
    };
    for bad in [
        json!({"period_days": 0}),
        json!({"period_days": 366}),
        json!({"quantity": 0}),
        json!({"items": [{"item_id": 999999, "quantity": 1}]}),
        json!({}),
    ] {
        expect_error(
            patch(bad.clone()).send().await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    let body = expect_error(
        patch(json!({"period": 7})).send().await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(crate::helpers::error_fields(&body), vec!["period"]);
    // Nothing changed.
    let after: Value = app.get_json(&path, &tokens.access).await;
    assert_eq!(after["period_days"], 30);
    assert_eq!(after["lines"][0]["quantity"], 1);
    assert_eq!(after["next_charge_at"], one["next_charge_at"]);

    // Someone else's subscription does not exist for them.
    let other = app.signup().await;
    let other = app.login(&other).await;
    for (m, p) in [
        (Method::GET, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::POST, format!("{path}/pause")),
    ] {
        expect_error(
            app.request(m, &p)
                .bearer_auth(&other.access)
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    expect_error(
        app.request(Method::PATCH, &path)
            .bearer_auth(&other.access)
            .json(&json!({"quantity": 2}))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // A good edit, then states that refuse operations.
    let ok: Value = patch(json!({"quantity": 3, "period_days": 60}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok["lines"][0]["quantity"], 3);
    assert_eq!(ok["next_amount"], 45_000);
    assert_eq!(ok["next_charge_at"], "2027-03-01T17:00:00Z");
    expect_error(
        app.request(Method::POST, &format!("{path}/resume"))
            .bearer_auth(&tokens.access)
            .send()
            .await
            .unwrap(),
        StatusCode::CONFLICT,
        "subscription_not_paused",
    )
    .await;
    expect_error(
        app.request(Method::POST, &format!("{path}/rewind"))
            .bearer_auth(&tokens.access)
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let canceled: Value = app
        .request(Method::DELETE, &path)
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["cancel_reason"], "customer");
    for (m, p, body) in [
        (Method::DELETE, path.clone(), None),
        (Method::POST, format!("{path}/skip"), None),
        (Method::POST, format!("{path}/resume"), None),
        (Method::PATCH, path.clone(), Some(json!({"quantity": 1}))),
    ] {
        let mut r = app.request(m, &p).bearer_auth(&tokens.access);
        if let Some(body) = body {
            r = r.json(&body);
        }
        expect_error(
            r.send().await.unwrap(),
            StatusCode::CONFLICT,
            "subscription_canceled",
        )
        .await;
    }
    let after: Value = app.get_json(&path, &tokens.access).await;
    assert_eq!(after["lines"][0]["quantity"], 3);
    assert_eq!(after["status"], "canceled");
}

/// A preview's timeline as (event, its outcome or reason) pairs.
fn timeline_steps(body: &Value) -> Vec<(&str, &str)> {
    body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let detail = e["outcome"].as_str().or(e["reason"].as_str());
            (e["event"].as_str().unwrap(), detail.unwrap_or(""))
        })
        .collect()
}

#[tokio::test]
async fn the_what_if_preview_follows_the_dunning_policy() {
    let b = Billing::start(|_| {}).await;
    let (id, _, _) = monthly(&b).await;
    let app = b.api().await;
    let (_, admin) = app.admin().await;
    let preview = |body: Value| {
        app.post_json(&format!("/api/admin/subscriptions/{}/preview", id.0), &body)
            .bearer_auth(&admin.access)
    };
    let resp =
        preview(json!({"outcomes": ["declined", "declined", "declined", "declined", "declined"]}))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let t = body["timeline"].as_array().unwrap();
    let attempts: Vec<(&str, i64)> = t
        .iter()
        .filter(|e| e["event"] == "attempt")
        .map(|e| (e["at"].as_str().unwrap(), e["attempt"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        attempts,
        vec![
            ("2027-01-30T17:00:00Z", 1),
            ("2027-01-30T17:00:00Z", 2),
            ("2027-01-31T17:00:00Z", 3),
            ("2027-02-01T17:00:00Z", 4),
            ("2027-02-02T17:00:00Z", 5),
        ]
    );
    let canceled = t.iter().find(|e| e["event"] == "canceled").unwrap();
    assert_eq!(canceled["reason"], "payment_failed");
    assert_eq!(canceled["at"], "2027-02-02T17:00:00Z");
    assert!(t.iter().any(|e| e["event"] == "past_due"));

    let body: Value = preview(json!({"outcomes": ["declined", "approved"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events: Vec<&str> = body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        vec!["attempt", "past_due", "attempt", "active", "next_attempt"]
    );

    // A hard decline ends it at once, however many attempts the schedule has left;
    // `soft_decline` is `declined`.
    let outcomes = json!({"outcomes": ["soft_decline", "hard_decline", "approved"]});
    let resp = preview(outcomes).send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        timeline_steps(&body),
        vec![
            ("attempt", "soft_decline"),
            ("past_due", ""),
            ("attempt", "hard_decline"),
            ("canceled", "hard_decline"),
            ("sid_inactivated", ""),
        ]
    );
    assert_eq!(body["timeline"][4]["at"], "2027-01-30T17:00:00Z");

    // The customer pays through a recovery checkout while past due: dunning ends, a new
    // SID, and the next cycle keeps its date (2 March in Seoul, 30 days after cycle 2's).
    let outcomes = json!({"outcomes": ["soft_decline", "soft_decline", "recovery"]});
    let body: Value = preview(outcomes)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = body["timeline"].as_array().unwrap();
    assert_eq!(
        timeline_steps(&body),
        vec![
            ("attempt", "soft_decline"),
            ("past_due", ""),
            ("attempt", "soft_decline"),
            ("attempt", "recovery"),
            ("recovered", "checkout"),
            ("sid_replaced", ""),
            ("active", ""),
            ("next_attempt", ""),
        ]
    );
    assert_eq!(t[7]["cycle"], 3);
    assert_eq!(t[7]["at"], "2027-03-01T17:00:00Z");

    expect_error(
        preview(json!({"outcomes": ["maybe"]}))
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_error(
        preview(json!({"outcomes": []})).send().await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let user = app.signup().await;
    let user = app.login(&user).await;
    expect_error(
        app.post_json(
            &format!("/api/admin/subscriptions/{}/preview", id.0),
            &json!({"outcomes": ["approved"]}),
        )
        .bearer_auth(&user.access)
        .send()
        .await
        .unwrap(),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // The preview changed nothing.
    assert_eq!(b.sub(id).await.status, SubscriptionStatus::Active);
}
