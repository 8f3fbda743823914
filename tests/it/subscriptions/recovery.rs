//! Customers who fix a failing renewal themselves, through the real API, worker and pgsim:
//! the recovery link of `subscription.past_due` opens a fresh KakaoPay checkout that pays the
//! overdue cycle once, replaces the SID (the old one inactivated) and ends dunning; the
//! races between a dunning retry and a recovery approval, two checkouts, an abandoned one
//! and an ambiguous approval each end with exactly one charge of the cycle; a hard decline's
//! link and a customer's resubscribe restart the subscription on the day it is paid.

use billing::clock::Clock;
use billing::ids::{SubscriptionId, UserId};
use chrono::{DateTime, Utc};
use reqwest::header::{ACCEPT, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::sim::{kst, Billing, NewSub};
use crate::helpers::{expect_error, http_client, TestApp, TestUser, Tokens};

/// A customer's monthly subscription (2 × 10,000 won, paid 1 January 10:00 in Seoul) whose
/// SID KakaoPay declines softly (−782) from now on.
struct Customer {
    app: TestApp,
    owner: TestUser,
    id: SubscriptionId,
    old_sid: String,
}

async fn customer(b: &Billing) -> Customer {
    let app = b.api().await;
    let owner = app.signup().await;
    let item = b.item(10_000).await;
    let id = b
        .subscription(NewSub {
            user: UserId(owner.id),
            items: vec![(item, 2)],
            period_days: 30,
            paid_at: kst(2027, 1, 1, 10, 0),
        })
        .await;
    let old_sid = b.sid_of(id).await;
    b.set_sid_decline(&old_sid, json!({"error_code": -782}))
        .await;
    Customer {
        app,
        owner,
        id,
        old_sid,
    }
}

impl Customer {
    /// A fresh access token: simulated time outruns any token issued before it moved.
    async fn access(&self) -> String {
        let tokens: Tokens = self.app.login(&self.owner).await;
        tokens.access
    }
}

/// Cycle 2 is declined twice on 31 January (at once, then its immediate retry): past due,
/// the next retry on 1 February at 02:00.
async fn past_due(b: &Billing, c: &Customer) {
    b.run_until(kst(2027, 1, 31, 3, 0)).await;
    let s = b.sub(c.id).await;
    assert_eq!(
        s.status,
        billing::subscriptions::SubscriptionStatus::PastDue
    );
    assert_eq!(s.next_charge_at, Some(kst(2027, 2, 1, 2, 0)));
}

/// The data of the subscription's newest `event_type` event.
async fn event(b: &Billing, id: SubscriptionId, event_type: &str) -> Value {
    sqlx::query_scalar(
        "SELECT data FROM outbox_events WHERE aggregate_type = 'subscription'
           AND aggregate_id = $1 AND event_type = $2 ORDER BY id DESC LIMIT 1",
    )
    .bind(id.0)
    .bind(event_type)
    .fetch_one(&b.db)
    .await
    .unwrap()
}

/// Our route in a URL made with the configured public URL.
fn path_of(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    }
}

/// The checkout once its ready job ran: `ready`, with KakaoPay's page.
async fn when_ready(b: &Billing, app: &TestApp, checkout: &Value) -> Value {
    b.run_until_idle().await;
    let c = checkout_now(app, checkout).await;
    assert_eq!(c["status"], "ready", "{c}");
    c
}

/// The checkout as its buyer sees it now, through its `status_url` (no login).
async fn checkout_now(app: &TestApp, checkout: &Value) -> Value {
    let resp = app
        .get(&path_of(checkout["status_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

/// The buyer clicks `action` on KakaoPay's page: the return URL of ours it is sent to.
async fn buyer_at_kakaopay(checkout: &Value, action: &str) -> String {
    let page = checkout["redirect_url"].as_str().unwrap();
    let page = page.split('?').next().unwrap();
    let resp = http_client()
        .get(format!("{page}/{action}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(
        location.contains(&format!("/api/checkouts/kakaopay/{action}/")),
        "{location}"
    );
    path_of(&location)
}

/// The buyer's browser arrives at our return route (asking for JSON).
async fn returns(app: &TestApp, path: &str) -> Value {
    let resp = app
        .get(path)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

async fn start_owner_checkout(c: &Customer, body: Option<Value>) -> reqwest::Response {
    let mut req = c
        .app
        .request(
            Method::POST,
            &format!("/api/subscriptions/{}/checkout", c.id.0),
        )
        .bearer_auth(c.access().await);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

/// The owner starts a checkout; once it is ready the buyer clicks `action` at KakaoPay:
/// the checkout and the return URL of ours the buyer is sent to.
async fn at_kakaopay(b: &Billing, c: &Customer, action: &str) -> (Value, String) {
    let checkout = when_ready(b, &c.app, &owner_checkout(c).await).await;
    let back = buyer_at_kakaopay(&checkout, action).await;
    (checkout, back)
}

async fn owner_checkout(c: &Customer) -> Value {
    let resp = start_owner_checkout(c, None).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json().await.unwrap()
}

/// (status, checkout_id is set) of the cycle's attempts, oldest first.
async fn attempts(b: &Billing, id: SubscriptionId, cycle: i32) -> Vec<(String, bool)> {
    sqlx::query_as(
        "SELECT status, checkout_id IS NOT NULL FROM charge_attempts
         WHERE subscription_id = $1 AND cycle = $2 ORDER BY id",
    )
    .bind(id.0)
    .bind(cycle)
    .fetch_all(&b.db)
    .await
    .unwrap()
}

async fn cycle_orders(b: &Billing, id: SubscriptionId, cycle: i32) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders WHERE subscription_id = $1 AND cycle = $2")
        .bind(id.0)
        .bind(cycle)
        .fetch_one(&b.db)
        .await
        .unwrap()
}

/// Pending or running charge jobs of the subscription.
async fn charge_jobs(b: &Billing, id: SubscriptionId) -> Vec<(i64, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT (metadata->>'cycle')::bigint, scheduled_at FROM fang_tasks
         WHERE metadata->>'type' = 'subscription.charge'
           AND (metadata->>'subscription_id')::bigint = $1
           AND state IN ('new', 'retried', 'in_progress') ORDER BY scheduled_at",
    )
    .bind(id.0)
    .fetch_all(&b.db)
    .await
    .unwrap()
}

/// What pgsim charged or approved for this customer (`approve` entries of checkouts,
/// `charge` entries of recurring charges), by partner user.
async fn money_taken(b: &Billing, c: &Customer) -> (usize, usize) {
    let mine = |e: &Value| {
        e["partner_order_id"].as_str().is_some_and(|p| {
            p.starts_with(&format!("pv-sub-{}-", c.id.0))
                || p.starts_with(&format!("pv-sco-{}-", c.id.0))
        })
    };
    (
        b.ledger("approve").await.iter().filter(|e| mine(e)).count(),
        b.ledger("charge").await.iter().filter(|e| mine(e)).count(),
    )
}

/// Waits (real time) until the subscription has an attempt in KakaoPay's hands.
async fn until_in_flight(b: &Billing, id: SubscriptionId) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM charge_attempts WHERE subscription_id = $1 AND status = 'in_flight'",
        )
        .bind(id.0)
        .fetch_one(&b.db)
        .await
        .unwrap();
        if n > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attempt went in flight"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The whole story the issue asks for: past due → the link in the event → a checkout
/// without a login → paid once, a new SID, the old one inactivated, the retry dropped, the
/// calendar kept; the link dead afterwards; the next cycle charged on the new SID.
#[tokio::test]
async fn a_past_due_customer_recovers_through_the_link_with_one_charge_and_a_new_sid() {
    let mut b = Billing::start(|_| {}).await;
    let c = customer(&b).await;
    b.start_worker();
    past_due(&b, &c).await;

    // The event carries a link; the owner's view shows the way back.
    let url = event(&b, c.id, "subscription.past_due").await["recovery_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let link = path_of(&url);
    assert!(
        link.starts_with("/api/recovery/") && link.len() > 50,
        "{link}"
    );
    let view: Value = c
        .app
        .get_json(&format!("/api/subscriptions/{}", c.id.0), &c.access().await)
        .await;
    assert_eq!(view["recovery"]["kind"], "recovery");
    assert_eq!(view["recovery"]["amount"], 20_000);
    assert_eq!(view["dunning"]["declines"], 2);
    assert_eq!(view["dunning"]["next_retry_at"], "2027-01-31T17:00:00Z");

    // The link, without a login: what it pays; then the checkout it starts.
    let shown: Value = c.app.get(&link).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (&shown["kind"], &shown["cycle"], &shown["amount"]),
        (&json!("recovery"), &json!(2), &json!(20_000))
    );
    let resp = c.app.request(Method::POST, &link).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let checkout: Value = resp.json().await.unwrap();
    assert_eq!(checkout["status"], "created");
    // Used once: a second use, and a look, are gone.
    let again = c.app.request(Method::POST, &link).send().await.unwrap();
    expect_error(again, StatusCode::GONE, "recovery_link_gone").await;

    let checkout = when_ready(&b, &c.app, &checkout).await;
    let back = buyer_at_kakaopay(&checkout, "approve").await;
    let approving = returns(&c.app, &back).await;
    assert_eq!(approving["status"], "approving");
    b.run_until_idle().await;

    let s = b.sub(c.id).await;
    assert_eq!(s.status, billing::subscriptions::SubscriptionStatus::Active);
    assert_eq!(s.cycle, 2);
    // The calendar is kept: cycle 3 is due 30 days after cycle 2's date, not the payment's.
    assert_eq!(s.next_charge_at, Some(kst(2027, 3, 2, 2, 0)));
    let new_sid = b.sid_of(c.id).await;
    assert_ne!(new_sid, c.old_sid);
    assert_eq!(b.sid_state(&c.old_sid).await["status"], "INACTIVE");
    assert_eq!(b.sid_state(&new_sid).await["status"], "ACTIVE");
    assert_eq!(
        attempts(&b, c.id, 2).await,
        vec![
            ("declined".to_owned(), false),
            ("declined".to_owned(), false),
            ("succeeded".to_owned(), true)
        ]
    );
    assert_eq!(cycle_orders(&b, c.id, 2).await, 1);
    assert_eq!(money_taken(&b, &c).await, (1, 0));
    // The dunning retry of 1 February is gone; cycle 3's charge is queued.
    let jobs = charge_jobs(&b, c.id).await;
    assert_eq!(jobs, vec![(3, kst(2027, 3, 2, 2, 0))]);
    let recovered = event(&b, c.id, "subscription.recovered").await;
    assert_eq!(
        (&recovered["cycle"], &recovered["status"]),
        (&json!(2), &json!("active"))
    );
    let done: Value = checkout_now(&c.app, &checkout).await;
    assert_eq!(done["status"], "succeeded");
    assert!(done["order_id"].is_i64());
    let gone = c.app.get(&link).send().await.unwrap();
    expect_error(gone, StatusCode::GONE, "recovery_link_gone").await;

    // The next cycle is charged once, on the new SID (the old one still declines).
    b.run_until(kst(2027, 3, 3, 0, 0)).await;
    let charges = b.ledger("charge").await;
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["sid"], new_sid);
    assert_eq!(b.sub(c.id).await.cycle, 3);
    b.stop_worker().await;
}

/// A dunning retry already at KakaoPay when the buyer approves: the approval waits for
/// its outcome. Declined → the approval pays the cycle; charged → the checkout is
/// superseded and never approved. Either way one charge of the cycle.
#[tokio::test]
async fn a_retry_at_kakaopay_when_the_buyer_approves_goes_first() {
    for retry_succeeds in [false, true] {
        let mut b = Billing::start(|_| {}).await;
        let c = customer(&b).await;
        b.start_worker();
        past_due(&b, &c).await;
        // KakaoPay's page lasts 15 minutes: the buyer comes just before the retry.
        b.run_until(kst(2027, 2, 1, 1, 55)).await;
        let (checkout, back) = at_kakaopay(&b, &c, "approve").await;
        if retry_succeeds {
            b.clear_sid_decline(&c.old_sid).await;
        }
        b.set_knobs(json!({"latency_ms": 800})).await;
        b.set_time(kst(2027, 2, 1, 2, 0)).await;
        until_in_flight(&b, c.id).await;
        returns(&c.app, &back).await;
        b.run_until_idle().await;
        b.set_knobs(json!({"latency_ms": 0})).await;
        b.run_until(kst(2027, 2, 1, 2, 5)).await;

        let a = attempts(&b, c.id, 2).await;
        let final_status: Value = checkout_now(&c.app, &checkout).await;
        if retry_succeeds {
            assert_eq!(a.last().unwrap(), &("succeeded".to_owned(), false), "{a:?}");
            assert_eq!(final_status["status"], "superseded");
            assert_eq!(money_taken(&b, &c).await, (0, 1));
            assert_eq!(b.sid_of(c.id).await, c.old_sid);
        } else {
            assert_eq!(a.last().unwrap(), &("succeeded".to_owned(), true), "{a:?}");
            assert_eq!(final_status["status"], "succeeded");
            assert_eq!(money_taken(&b, &c).await, (1, 0));
            assert_ne!(b.sid_of(c.id).await, c.old_sid);
        }
        assert_eq!(
            a.iter().filter(|(s, _)| s == "succeeded").count(),
            1,
            "{a:?}"
        );
        assert_eq!(cycle_orders(&b, c.id, 2).await, 1);
        let s = b.sub(c.id).await;
        assert_eq!(
            (s.status, s.cycle),
            (billing::subscriptions::SubscriptionStatus::Active, 2)
        );
        b.stop_worker().await;
    }
}

/// The other way: the approval is at KakaoPay when the retry falls due. The retry waits;
/// the approval pays the cycle; the retry is never sent.
#[tokio::test]
async fn an_approval_at_kakaopay_when_the_retry_falls_due_goes_first() {
    let mut b = Billing::start(|_| {}).await;
    let c = customer(&b).await;
    b.start_worker();
    past_due(&b, &c).await;
    b.run_until(kst(2027, 2, 1, 1, 55)).await;
    let (_, back) = at_kakaopay(&b, &c, "approve").await;
    // The retry would succeed if it were sent.
    b.clear_sid_decline(&c.old_sid).await;
    b.set_knobs(json!({"latency_ms": 800})).await;
    returns(&c.app, &back).await;
    until_in_flight(&b, c.id).await;
    b.set_time(kst(2027, 2, 1, 2, 0)).await;
    b.run_until_idle().await;
    b.set_knobs(json!({"latency_ms": 0})).await;
    b.run_until(kst(2027, 2, 2, 3, 0)).await;

    assert_eq!(money_taken(&b, &c).await, (1, 0));
    assert_eq!(
        b.pg_requests("subscription").await,
        2,
        "only the two declines of 31 January"
    );
    let a = attempts(&b, c.id, 2).await;
    assert_eq!(a.last().unwrap(), &("succeeded".to_owned(), true));
    assert_eq!(cycle_orders(&b, c.id, 2).await, 1);
    assert_eq!(
        b.sub(c.id).await.next_charge_at,
        Some(kst(2027, 3, 2, 2, 0))
    );
    b.stop_worker().await;
}

/// Two checkouts started and both approved at KakaoPay: one pays, the other is superseded
/// without being approved — whether the second buyer returns after the first was paid or
/// both return before either is approved.
#[tokio::test]
async fn two_checkouts_approved_charge_once() {
    for together in [false, true] {
        let mut b = Billing::start(|_| {}).await;
        let c = customer(&b).await;
        b.start_worker();
        past_due(&b, &c).await;
        let first = when_ready(&b, &c.app, &owner_checkout(&c).await).await;
        let second = when_ready(&b, &c.app, &owner_checkout(&c).await).await;
        let back_first = buyer_at_kakaopay(&first, "approve").await;
        let back_second = buyer_at_kakaopay(&second, "approve").await;
        returns(&c.app, &back_second).await;
        if together {
            // Both approvals queued: the one that records its attempt first is sent; the
            // other waits for it, then finds the cycle paid.
            returns(&c.app, &back_first).await;
        } else {
            b.run_until_idle().await;
            // The first was superseded when the second paid: the return changes nothing.
            let late = returns(&c.app, &back_first).await;
            assert_eq!(late["status"], "superseded");
        }
        b.run_until(kst(2027, 1, 31, 3, 10)).await;
        let statuses: Vec<String> = sqlx::query_scalar(
            "SELECT status FROM subscription_checkouts WHERE subscription_id = $1 ORDER BY id",
        )
        .bind(c.id.0)
        .fetch_all(&b.db)
        .await
        .unwrap();
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, vec!["succeeded", "superseded"], "{statuses:?}");
        assert_eq!(money_taken(&b, &c).await, (1, 0));
        assert_eq!(cycle_orders(&b, c.id, 2).await, 1);
        b.stop_worker().await;
    }
}

/// A buyer who quits at KakaoPay leaves the subscription past due: dunning goes on (the
/// retry is sent and charges), and the owner may start another checkout meanwhile.
#[tokio::test]
async fn an_abandoned_checkout_leaves_dunning_running() {
    let mut b = Billing::start(|_| {}).await;
    let c = customer(&b).await;
    b.start_worker();
    past_due(&b, &c).await;
    let (_, back) = at_kakaopay(&b, &c, "cancel").await;
    let quit = returns(&c.app, &back).await;
    assert_eq!(
        (&quit["status"], &quit["failure_code"]),
        (&json!("abandoned"), &json!("buyer_canceled"))
    );
    assert_eq!(
        b.sub(c.id).await.status,
        billing::subscriptions::SubscriptionStatus::PastDue
    );
    let view: Value = c
        .app
        .get_json(&format!("/api/subscriptions/{}", c.id.0), &c.access().await)
        .await;
    assert_eq!(view["recovery"]["checkout"]["status"], "abandoned");
    // The retry of 1 February goes to KakaoPay and succeeds.
    b.clear_sid_decline(&c.old_sid).await;
    b.run_until(kst(2027, 2, 1, 3, 0)).await;
    assert_eq!(money_taken(&b, &c).await, (0, 1));
    assert_eq!(
        b.sub(c.id).await.status,
        billing::subscriptions::SubscriptionStatus::Active
    );
    // Nothing left to recover.
    let resp = start_owner_checkout(&c, None).await;
    expect_error(resp, StatusCode::CONFLICT, "nothing_to_recover").await;
    b.stop_worker().await;
}

/// KakaoPay approves but the answer is lost: the attempt is unknown (no retry is sent
/// meanwhile), the order inquiry finds the approval, and it is applied once.
#[tokio::test]
async fn an_approval_whose_answer_was_lost_is_found_by_the_inquiry() {
    let mut b = Billing::start(|_| {}).await;
    let c = customer(&b).await;
    b.start_worker();
    past_due(&b, &c).await;
    let (_, back) = at_kakaopay(&b, &c, "approve").await;
    b.set_knobs(
        json!({"drop_rate": 1.0, "endpoints": ["approve"], "timeout_ms": 200, "max_faults": 1}),
    )
    .await;
    returns(&c.app, &back).await;
    b.run_until_idle().await;
    assert_eq!(
        attempts(&b, c.id, 2).await.last().unwrap(),
        &("unknown".to_owned(), true)
    );
    // The inquiry decides it before the retry's time; the retry is then dropped.
    b.run_until(kst(2027, 2, 1, 3, 0)).await;
    assert_eq!(b.pg_requests("subscription").await, 2);
    let s = b.sub(c.id).await;
    assert_eq!(s.status, billing::subscriptions::SubscriptionStatus::Active);
    assert_eq!(
        attempts(&b, c.id, 2).await.last().unwrap(),
        &("succeeded".to_owned(), true)
    );
    assert_eq!(money_taken(&b, &c).await, (1, 0));
    assert_eq!(cycle_orders(&b, c.id, 2).await, 1);
    assert_ne!(b.sid_of(c.id).await, c.old_sid);
    b.stop_worker().await;
}

/// A hard decline cancels at once; its event's link restarts the subscription, anchored on
/// the day it is paid. A customer's own cancellation is restarted by a resubscribe, with a
/// new period; it charges on its new anchor.
#[tokio::test]
async fn canceled_subscriptions_restart_on_the_day_they_are_paid() {
    let mut b = Billing::start(|_| {}).await;
    let hard = customer(&b).await;
    b.set_sid_decline(&hard.old_sid, json!({"error_code": -753}))
        .await;
    let quitter = customer(&b).await;
    b.clear_sid_decline(&quitter.old_sid).await;
    b.start_worker();
    b.run_until(kst(2027, 1, 31, 3, 0)).await;
    let canceled = event(&b, hard.id, "subscription.canceled").await;
    assert_eq!(canceled["reason"], "hard_decline");
    let link = path_of(canceled["recovery_url"].as_str().unwrap());

    // Five days later the customer follows the link.
    b.set_time(kst(2027, 2, 5, 15, 0)).await;
    let resp = hard.app.request(Method::POST, &link).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let checkout = when_ready(&b, &hard.app, &resp.json().await.unwrap()).await;
    assert_eq!(checkout["kind"], "recovery");
    let back = buyer_at_kakaopay(&checkout, "approve").await;
    returns(&hard.app, &back).await;
    b.run_until_idle().await;
    let s = b.sub(hard.id).await;
    assert_eq!(s.status, billing::subscriptions::SubscriptionStatus::Active);
    assert_eq!((s.cycle, s.cancel_reason.as_deref()), (2, None));
    assert_eq!(s.anchor_at, kst(2027, 2, 5, 15, 0));
    assert_eq!(s.next_charge_at, Some(kst(2027, 3, 7, 2, 0)));

    // The other customer cancels, then comes back with a 60-day period.
    let del = quitter
        .app
        .request(
            Method::DELETE,
            &format!("/api/subscriptions/{}", quitter.id.0),
        )
        .bearer_auth(quitter.access().await)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::OK);
    let resp = start_owner_checkout(&quitter, Some(json!({"period_days": 60}))).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let checkout: Value = resp.json().await.unwrap();
    assert_eq!(
        (&checkout["kind"], &checkout["period_days"]),
        (&json!("resubscribe"), &json!(60))
    );
    let checkout = when_ready(&b, &quitter.app, &checkout).await;
    let back = buyer_at_kakaopay(&checkout, "approve").await;
    returns(&quitter.app, &back).await;
    b.run_until_idle().await;
    let s = b.sub(quitter.id).await;
    assert_eq!(s.status, billing::subscriptions::SubscriptionStatus::Active);
    assert_eq!((s.period_days, s.cycle), (60, 3));
    assert_eq!(s.next_charge_at, Some(kst(2027, 4, 6, 2, 0)));
    assert_eq!(
        event(&b, quitter.id, "subscription.resubscribed").await["period_days"],
        60
    );

    // Both charge on their new anchors, on their new SIDs.
    b.run_until(kst(2027, 4, 7, 0, 0)).await;
    let new_hard_sid = b.sid_of(hard.id).await;
    let new_quitter_sid = b.sid_of(quitter.id).await;
    let charged: Vec<(String, String)> = b
        .ledger("charge")
        .await
        .iter()
        .map(|e| {
            (
                e["sid"].as_str().unwrap().to_owned(),
                e["at"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let on = |sid: &str| charged.iter().filter(|(s, _)| s == sid).count();
    // The quitter's cycle 2 (31 January, old SID), then cycle 4 on 6 April; the hard
    // decliner's cycle 3 on 7 March and cycle 4 on 6 April.
    assert_eq!(on(&quitter.old_sid), 1);
    assert_eq!(on(&new_quitter_sid), 1);
    assert_eq!(on(&new_hard_sid), 2);
    assert_eq!(b.sid_state(&quitter.old_sid).await["status"], "INACTIVE");
    b.stop_worker().await;
}

/// Bad input and the wrong party change nothing: an active subscription has nothing to
/// recover, a recovery keeps its period, someone else's subscription is not found, bad
/// bodies and unknown tokens are refused with stable codes.
#[tokio::test]
async fn the_checkout_routes_refuse_bad_input_and_change_nothing() {
    let mut b = Billing::start(|_| {}).await;
    let c = customer(&b).await;
    let stranger = c.app.signup().await;
    b.start_worker();
    let resp = start_owner_checkout(&c, None).await;
    expect_error(resp, StatusCode::CONFLICT, "nothing_to_recover").await;
    past_due(&b, &c).await;
    let path = format!("/api/subscriptions/{}/checkout", c.id.0);
    let cases: Vec<(Option<&str>, StatusCode, &str)> = vec![
        (
            Some(r#"{"period_days": 60}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Some(r#"{"period_days": 3}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Some(r#"{"period": 30}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Some(r#"{"period_days": "#),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
    ];
    for (body, status, code) in cases {
        let mut req = c
            .app
            .request(Method::POST, &path)
            .bearer_auth(c.access().await);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        expect_error(req.send().await.unwrap(), status, code).await;
    }
    let theirs = c
        .app
        .request(Method::POST, &path)
        .bearer_auth(c.app.login(&stranger).await.access)
        .send()
        .await
        .unwrap();
    expect_error(theirs, StatusCode::NOT_FOUND, "not_found").await;
    let anonymous = c.app.request(Method::POST, &path).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // Unknown tokens, and ones no token can be (a space), are not found — answered
    // before any query (control characters are refused earlier still:
    // tests/it/strict_input.rs).
    for bad in [
        "/api/recovery/not-a-real-token",
        "/api/checkouts/not-a-real-token",
        "/api/checkouts/a%20b",
        "/api/checkouts/kakaopay/fail/a%20bc",
        "/api/payments/kakaopay/fail/a%20bc",
    ] {
        expect_error(
            c.app.get(bad).send().await.unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    let forged = c
        .app
        .request(Method::POST, "/api/recovery/not-a-real-token")
        .send()
        .await
        .unwrap();
    expect_error(forged, StatusCode::NOT_FOUND, "not_found").await;
    let no_pg_token = c
        .app
        .get("/api/checkouts/kakaopay/approve/not-a-real-token")
        .send()
        .await
        .unwrap();
    expect_error(
        no_pg_token,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM subscription_checkouts")
        .fetch_one(&b.db)
        .await
        .unwrap();
    assert_eq!(n, 0, "no refused request wrote a checkout");
    b.stop_worker().await;
}

/// A worker that dies in the approve step, after recording the attempt: before KakaoPay
/// heard of it, or after KakaoPay approved but before the answer was recorded. The next
/// run finds its own attempt `in_flight`, makes it `unknown` and asks KakaoPay: approved →
/// applied once; not approved → approved now. One approval at KakaoPay either way.
#[tokio::test]
async fn an_approve_step_that_died_mid_way_is_reconciled_not_repeated() {
    for approved_before_crash in [false, true] {
        let mut b = Billing::start(|_| {}).await;
        let c = customer(&b).await;
        b.start_worker();
        past_due(&b, &c).await;
        let (checkout, back) = at_kakaopay(&b, &c, "approve").await;
        // The worker is gone before it ran the approval; its run is staged as far as the
        // crash got.
        b.stop_worker().await;
        returns(&c.app, &back).await;
        let (id, partner_order_id, amount, lines, tid, pg_token): (
            i64,
            String,
            i64,
            Value,
            String,
            String,
        ) = sqlx::query_as(
            "SELECT id, partner_order_id, amount, lines, tid, pg_token
             FROM subscription_checkouts WHERE token = $1",
        )
        .bind(checkout["status_url"].as_str().unwrap().rsplit('/').next())
        .fetch_one(&b.db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO charge_attempts (subscription_id, cycle, attempt, partner_order_id,
                                          amount, lines, started_at, checkout_id)
             VALUES ($1, 2, 3, $2, $3, $4, $5, $6)",
        )
        .bind(c.id.0)
        .bind(&partner_order_id)
        .bind(amount)
        .bind(&lines)
        .bind(b.clock.now())
        .bind(id)
        .execute(&b.db)
        .await
        .unwrap();
        if approved_before_crash {
            b.ctx
                .gateway
                .approve(&billing::pg::ApproveRequest {
                    kind: billing::pg::CidKind::Subscription,
                    tid,
                    partner_order_id,
                    partner_user_id: format!("pv-user-{}", c.owner.id),
                    pg_token,
                    expected_total: billing::money::Money(amount),
                })
                .await
                .unwrap();
        }
        b.start_worker();
        b.run_until(kst(2027, 1, 31, 3, 10)).await;

        assert_eq!(
            attempts(&b, c.id, 2).await.last().unwrap(),
            &("succeeded".to_owned(), true)
        );
        assert_eq!(
            money_taken(&b, &c).await,
            (1, 0),
            "one approval at KakaoPay"
        );
        assert_eq!(cycle_orders(&b, c.id, 2).await, 1);
        let s = b.sub(c.id).await;
        assert_eq!(s.status, billing::subscriptions::SubscriptionStatus::Active);
        assert_ne!(b.sid_of(c.id).await, c.old_sid);
        b.stop_worker().await;
    }
}
