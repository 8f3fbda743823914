//! The billing engine at scale: a simulated year of 1,000 subscriptions against a faulty
//! pgsim with random customer edits (period, quantities, products, address, skip, pause,
//! resume, cancel) and customers who pay a failing renewal through its recovery link (or
//! abandon the checkout), and a burst of 5,000 due charges across two worker
//! processes that keep being killed. Both end by reconciling our records with pgsim's
//! ledger to the won.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use billing::clock::Clock;
use billing::ids::{SubscriptionId, UserId};
use billing::subscriptions::{Patch, Policy};
use chrono::{DateTime, NaiveDate, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::sim::{Billing, NewSub};
use crate::helpers::worker_proc::WorkerProcess;

/// Our succeeded attempts and pgsim's charges must be the same set of (partner order
/// id, amount); returns how many there were.
async fn ledger_matches_succeeded_attempts(db: &PgPool, charges: &[Value]) -> usize {
    let ours: Vec<(String, i64)> = sqlx::query_as(
        "SELECT partner_order_id, amount FROM charge_attempts WHERE status = 'succeeded'",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let ours: HashMap<String, i64> = ours.into_iter().collect();
    let mut theirs: HashMap<String, i64> = HashMap::new();
    for c in charges {
        let id = c["partner_order_id"].as_str().unwrap().to_owned();
        let dup = theirs.insert(id.clone(), c["amount"].as_i64().unwrap());
        assert!(dup.is_none(), "pgsim charged partner_order_id {id} twice");
    }
    assert_eq!(
        ours.len(),
        theirs.len(),
        "succeeded attempts vs ledger charges"
    );
    assert_eq!(ours, theirs, "ledger and succeeded attempts differ");
    let won_ours: i64 = ours.values().sum();
    let won_theirs: i64 = theirs.values().sum();
    assert_eq!(won_ours, won_theirs);
    ours.len()
}

/// Every DB-level "exactly once" fact at once.
async fn no_double_charges(db: &PgPool) {
    let doubles: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM charge_attempts WHERE status = 'succeeded'
                               GROUP BY subscription_id, cycle HAVING count(*) > 1) d",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(doubles, 0, "a cycle charged twice");
    let orders: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM orders WHERE subscription_id IS NOT NULL
                               GROUP BY subscription_id, cycle HAVING count(*) > 1) d",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(orders, 0, "a cycle with two orders");
    let cycle_orders: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM charge_attempts WHERE status = 'succeeded'),
                (SELECT count(*) FROM orders WHERE subscription_id IS NOT NULL AND cycle >= 2)",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(
        cycle_orders.0, cycle_orders.1,
        "charged cycles vs their orders"
    );
}

/// What the year's recovering customers did.
#[derive(Debug, Default)]
struct Recoveries {
    /// Checkouts started through a recovery link.
    started: usize,
    /// Links that no longer opened (used, expired, or the cycle paid meanwhile).
    gone: usize,
    /// Buyers who quit at KakaoPay.
    abandoned: usize,
}

/// Customers whose renewal is failing follow the latest recovery link the store mailed
/// them (the `recovery_url` of `subscription.past_due` or of a dunning cancellation): on a
/// given day 35 % of past-due ones and 10 % of dunning-canceled ones. The worker readies
/// each checkout; at KakaoPay 85 % of buyers approve and the rest quit. Returns the
/// subscriptions they touched (their calendars change) with the counts.
async fn customers_recover(b: &Billing, rng: &mut StdRng, r: &mut Recoveries) -> Vec<i64> {
    let links: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (e.aggregate_id) e.aggregate_id, s.status, e.data->>'recovery_url'
         FROM outbox_events e JOIN subscriptions s ON s.id = e.aggregate_id
         WHERE e.aggregate_type = 'subscription' AND e.data ? 'recovery_url'
           AND (s.status = 'past_due' OR (s.status = 'canceled'
                AND s.cancel_reason IN ('payment_failed', 'hard_decline', 'sid_unusable')))
         ORDER BY e.aggregate_id, e.id DESC",
    )
    .fetch_all(&b.db)
    .await
    .unwrap();
    let mut started = Vec::new();
    let mut touched = Vec::new();
    for (id, status, url) in links {
        let share = if status == "past_due" { 0.35 } else { 0.10 };
        if !rng.random_bool(share) {
            continue;
        }
        let token = url.rsplit('/').next().unwrap().to_owned();
        match billing::subscriptions::checkout::start_with_link(&b.ctx, &token).await {
            Ok(c) => {
                r.started += 1;
                touched.push(id);
                started.push(c.status_url.rsplit('/').next().unwrap().to_owned());
            }
            Err(billing::Error::RecoveryLinkGone | billing::Error::ChargeInProgress) => r.gone += 1,
            Err(e) => panic!("recovery of subscription {id}: {e:?}"),
        }
    }
    if started.is_empty() {
        return touched;
    }
    b.run_until_idle().await;
    let client = crate::helpers::http_client();
    for token in started {
        let c = billing::subscriptions::checkout::by_token(&b.ctx, &token, None)
            .await
            .unwrap();
        let Some(page) = c.redirect_url else {
            continue;
        };
        let action = if rng.random_bool(0.85) {
            "approve"
        } else {
            "cancel"
        };
        let page = page.split('?').next().unwrap();
        let resp = client.get(format!("{page}/{action}")).send().await.unwrap();
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        let pg_token = url::Url::parse(&location)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "pg_token")
            .map(|(_, v)| v.into_owned());
        let action = if action == "approve" {
            billing::payments::RedirectAction::Approve
        } else {
            r.abandoned += 1;
            billing::payments::RedirectAction::Cancel
        };
        billing::subscriptions::checkout::redirect(&b.ctx, &token, action, pg_token.as_deref())
            .await
            .unwrap();
    }
    touched
}

/// pgsim's ledger entries that took a customer's money for a cycle: recurring charges, and
/// the approvals of recovery and resubscribe checkouts (`pv-sco-…`).
async fn cycle_payments(b: &Billing) -> Vec<Value> {
    let mut out = b.ledger("charge").await;
    out.extend(b.ledger("approve").await.into_iter().filter(|e| {
        e["partner_order_id"]
            .as_str()
            .is_some_and(|p| p.starts_with("pv-sco-"))
    }));
    out
}

const SUBS: usize = 1_000;
const DAYS: i64 = 365;

// Two runtime threads: the worker, pgsim and the harness share this process, and on one
// thread every statement of a busy 02:00 run waits its turn for the CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_year() {
    let seed: u64 = std::env::var("PV_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_124);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = Billing::start(|s| {
        s.database.max_connections = 30;
        s.worker.concurrency = 48;
        s.subscriptions.reconcile_window_secs = Duration::from_secs(120);
        s.subscriptions.review_after_secs = Duration::from_secs(3_600);
    })
    .await;
    // Follow-ups due within 5 simulated minutes of each other run together (the daily
    // 02:00 run itself starts exactly on time): a day is a few stops, not hundreds.
    b.granularity = chrono::Duration::minutes(5);
    let policy = billing::subscriptions::policy(&b.ctx).unwrap();
    let start = b.clock.now();

    let mut items = Vec::new();
    for _ in 0..40 {
        items.push(b.item(rng.random_range(5..=60) * 1_000).await);
    }
    let mut users = Vec::new();
    for _ in 0..300 {
        users.push(b.user().await);
    }
    let mut subs: Vec<(SubscriptionId, UserId)> = Vec::new();
    let mut sids = Vec::new();
    for _ in 0..SUBS {
        let user = users[rng.random_range(0..users.len())];
        let n = rng.random_range(1..=3);
        let mut lines: Vec<(i64, i32)> = Vec::new();
        while lines.len() < n {
            let item = items[rng.random_range(0..items.len())];
            if lines.iter().all(|l| l.0 != item) {
                lines.push((item, rng.random_range(1..=3)));
            }
        }
        let period = [7, 14, 30, 30, 30, 60, 90][rng.random_range(0..7)];
        let paid_at = start + chrono::Duration::minutes(rng.random_range(0..30 * 24 * 60));
        let (id, sid) = b
            .subscription_unregistered(NewSub {
                user,
                items: lines,
                period_days: period,
                paid_at,
            })
            .await;
        subs.push((id, user));
        sids.push((sid, user));
    }
    b.register_sids(&sids).await;
    // Recovery checkouts' approvals meet the same faults as recurring charges (a buyer's
    // decline, 5xx, an answer lost); their ready calls do not.
    b.set_knobs(json!({
        "decline_rate": 0.10, "server_error_rate": 0.05, "drop_rate": 0.01, "timeout_ms": 5,
        "endpoints": ["subscription", "approve"], "seed": seed,
    }))
    .await;
    b.start_worker();

    let began = Instant::now();
    let mut edited: HashSet<i64> = HashSet::new();
    let mut refused = 0;
    let mut edits = 0;
    let mut recoveries = Recoveries::default();
    for day in 0..DAYS {
        // Let the day's 02:00 run (and its retries and reconciliations) finish, then
        // customers act at noon.
        let noon = start + chrono::Duration::days(day) + chrono::Duration::hours(12);
        let d0 = Instant::now();
        b.run_until(noon).await;
        let d1 = Instant::now();
        let overdue: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM subscriptions s
             WHERE s.status IN ('active', 'past_due') AND s.next_charge_at <= $1
               AND NOT EXISTS (SELECT 1 FROM charge_attempts a WHERE a.subscription_id = s.id
                               AND a.status IN ('in_flight', 'unknown'))",
        )
        .bind(noon - chrono::Duration::hours(1))
        .fetch_one(&b.db)
        .await
        .unwrap();
        assert_eq!(overdue, 0, "charges left undone on day {day}");
        if day % 7 == 6 {
            b.vacuum().await;
        }
        let d2 = Instant::now();
        if std::env::var_os("PV_SIM_PROF").is_some() {
            use crate::helpers::sim::*;
            use std::sync::atomic::Ordering::Relaxed;
            eprintln!(
                "PROF day {day}: run_until {:.0} ms check+vacuum {:.1} ms stops {} busy {} idle_ms {:.0}",
                (d1 - d0).as_secs_f64() * 1e3,
                (d2 - d1).as_secs_f64() * 1e3,
                PROF_STOPS.swap(0, Relaxed),
                PROF_BUSY.swap(0, Relaxed),
                PROF_IDLE_US.swap(0, Relaxed) as f64 / 1e3,
            );
        }
        edited.extend(customers_recover(&b, &mut rng, &mut recoveries).await);
        for _ in 0..rng.random_range(0..=4) {
            let (id, user) = subs[rng.random_range(0..subs.len())];
            edited.insert(id.0);
            edits += 1;
            let ctx = &b.ctx;
            let r = match rng.random_range(0..100) {
                0..=24 => {
                    let patch = Patch {
                        period_days: Some([7, 14, 21, 30, 45, 60][rng.random_range(0..6)]),
                        ..Default::default()
                    };
                    billing::subscriptions::update(ctx, user, id, patch).await
                }
                25..=37 => {
                    let patch = Patch {
                        quantity: Some(rng.random_range(1..=4)),
                        ..Default::default()
                    };
                    billing::subscriptions::update(ctx, user, id, patch).await
                }
                38..=45 => {
                    // Moved house: the next cycles ship to the new address.
                    let patch = Patch {
                        receiver: Some(billing::orders::Receiver {
                            name: "김이사".into(),
                            phone: "010-2222-3333".into(),
                            city: "Busan".into(),
                            detail_address: format!("{} Haeundae-ro", rng.random_range(1..999)),
                        }),
                        ..Default::default()
                    };
                    billing::subscriptions::update(ctx, user, id, patch).await
                }
                46..=53 => {
                    // Takes one more product, or one fewer.
                    let have: Vec<i64> = billing::subscriptions::get(ctx, Some(user), id)
                        .await
                        .unwrap()
                        .lines
                        .iter()
                        .map(|l| l.item_id)
                        .collect();
                    let other = items[rng.random_range(0..items.len())];
                    let patch = if have.len() > 1 && rng.random_bool(0.5) {
                        Patch {
                            remove: Some(vec![have[rng.random_range(0..have.len())]]),
                            ..Default::default()
                        }
                    } else if !have.contains(&other) {
                        Patch {
                            add: Some(vec![billing::orders::LineInput {
                                item_id: other,
                                quantity: rng.random_range(1..=3),
                            }]),
                            ..Default::default()
                        }
                    } else {
                        Patch {
                            quantity: Some(rng.random_range(1..=4)),
                            ..Default::default()
                        }
                    };
                    billing::subscriptions::update(ctx, user, id, patch).await
                }
                54..=68 => billing::subscriptions::skip(ctx, user, id).await,
                69..=80 => billing::subscriptions::pause(ctx, user, id).await,
                81..=96 => billing::subscriptions::resume(ctx, user, id).await,
                _ => billing::subscriptions::cancel(ctx, user, id).await,
            };
            match r {
                Ok(_) => {}
                Err(
                    billing::Error::SubscriptionCanceled
                    | billing::Error::SubscriptionNotActive
                    | billing::Error::SubscriptionNotPaused
                    | billing::Error::ChargeInProgress,
                ) => refused += 1,
                Err(e) => panic!("edit of subscription {id} on day {day}: {e:?}"),
            }
        }
    }
    let end = start + chrono::Duration::days(DAYS);
    b.run_until(end).await;
    b.stop_worker().await;
    let elapsed = began.elapsed();

    // At most one successful charge per cycle; the ledger equals our records to the won.
    no_double_charges(&b.db).await;
    let charges = cycle_payments(&b).await;
    let n = ledger_matches_succeeded_attempts(&b.db, &charges).await;

    // Recovered customers paid through their checkouts, once each; every checkout ended.
    let checkouts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM subscription_checkouts GROUP BY status ORDER BY status",
    )
    .fetch_all(&b.db)
    .await
    .unwrap();
    let checkout = |s: &str| checkouts.iter().find(|x| x.0 == s).map_or(0, |x| x.1);
    assert!(
        checkout("succeeded") > 20,
        "customers recovered: {checkouts:?}"
    );
    assert!(checkout("abandoned") > 0, "some buyers quit: {checkouts:?}");
    assert_eq!(
        checkout("created") + checkout("approving"),
        0,
        "no checkout left in a worker's hands: {checkouts:?}"
    );
    let paid_by_checkout: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM charge_attempts a JOIN subscription_checkouts c ON c.id = a.checkout_id
         WHERE a.status = 'succeeded' AND c.status = 'succeeded' AND c.order_id = a.order_id",
    )
    .fetch_one(&b.db)
    .await
    .unwrap();
    assert_eq!(paid_by_checkout, checkout("succeeded"));
    // A recovered subscription's replaced SID is inactive at pgsim.
    let replaced: Vec<String> =
        sqlx::query_scalar("SELECT old_sid FROM subscription_checkouts WHERE old_sid IS NOT NULL")
            .fetch_all(&b.db)
            .await
            .unwrap();
    for sid in replaced.iter().take(20) {
        assert_eq!(b.sid_state(sid).await["status"], "INACTIVE", "{sid}");
    }

    // No canceled subscription charged after its cancellation.
    let after_cancel: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM charge_attempts a JOIN subscriptions s ON s.id = a.subscription_id
         WHERE s.status = 'canceled' AND a.started_at > s.canceled_at",
    )
    .fetch_one(&b.db)
    .await
    .unwrap();
    assert_eq!(after_cancel, 0);

    // Never two charges on one local day for a subscription.
    let charged: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT subscription_id, finished_at FROM charge_attempts WHERE status = 'succeeded'",
    )
    .fetch_all(&b.db)
    .await
    .unwrap();
    let mut days: HashSet<(i64, NaiveDate)> = HashSet::new();
    for (sub, at) in &charged {
        assert!(
            days.insert((*sub, policy.local_date(*at))),
            "subscription {sub} charged twice on {}",
            policy.local_date(*at)
        );
    }

    // Subscriptions nobody edited were charged exactly on anchor + k × period at 02:00,
    // every cycle up to the end, unless dunning canceled them.
    let untouched = check_untouched_schedules(&b.db, &policy, &edited, end).await;

    let stats: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM charge_attempts GROUP BY status ORDER BY status",
    )
    .fetch_all(&b.db)
    .await
    .unwrap();
    let by_state: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM subscriptions GROUP BY status ORDER BY status",
    )
    .fetch_all(&b.db)
    .await
    .unwrap();
    println!(
        "simulated_year seed={seed}: {SUBS} subscriptions × {DAYS} days in {:.1} s; {n} charges \
         ({} won); attempts {stats:?}; subscriptions {by_state:?}; {edits} edits ({refused} \
         refused); recoveries {recoveries:?}, checkouts {checkouts:?}; {untouched} untouched \
         subscriptions on schedule",
        elapsed.as_secs_f64(),
        charges
            .iter()
            .map(|c| c["amount"].as_i64().unwrap())
            .sum::<i64>()
    );
    assert!(
        n > 10_000,
        "a year of 1,000 subscriptions charges far more than {n}"
    );
    let count = |s: &str| stats.iter().find(|x| x.0 == s).map_or(0, |x| x.1);
    assert!(count("declined") > 500, "declines happened: {stats:?}");
    assert!(count("not_charged") > 100, "5xx were reconciled: {stats:?}");
    assert_eq!(
        count("unknown") + count("in_flight"),
        0,
        "all attempts decided"
    );
    crate::helpers::db::assert_no_session_left_in_transaction(&b.db).await;
}

/// For each subscription never edited: its first attempts fall on the grid of its
/// anchor, and every grid date up to `end` was attempted (or the subscription ended by
/// dunning). Returns how many were checked.
async fn check_untouched_schedules(
    db: &PgPool,
    policy: &Policy,
    edited: &HashSet<i64>,
    end: DateTime<Utc>,
) -> usize {
    let subs: Vec<(i64, DateTime<Utc>, i32, String)> =
        sqlx::query_as("SELECT id, anchor_at, period_days, status FROM subscriptions")
            .fetch_all(db)
            .await
            .unwrap();
    let firsts: Vec<(i64, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT subscription_id, cycle, started_at FROM charge_attempts WHERE attempt = 1",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let mut by_sub: HashMap<i64, Vec<(i32, DateTime<Utc>)>> = HashMap::new();
    for (s, c, at) in firsts {
        by_sub.entry(s).or_default().push((c, at));
    }
    let mut checked = 0;
    for (id, anchor, period, status) in subs {
        if edited.contains(&id) {
            continue;
        }
        let mut got = by_sub.remove(&id).unwrap_or_default();
        got.sort();
        let anchor_day = policy.local_date(anchor);
        let mut want = Vec::new();
        for k in 1.. {
            let day = anchor_day + chrono::Days::new((k * period) as u64);
            let at = policy.slot(day);
            if at > end {
                break;
            }
            want.push((k + 1, at));
        }
        if status == "canceled" {
            // Ended by dunning: the grid holds up to the cycle that failed.
            want.truncate(got.len());
        }
        assert_eq!(
            got, want,
            "subscription {id} (every {period} days from {anchor})"
        );
        checked += 1;
    }
    assert!(
        checked > SUBS / 4,
        "most subscriptions stay unedited ({checked})"
    );
    checked
}

const CRASH_SUBS: i64 = 5_000;

#[tokio::test]
async fn billing_crash() {
    let b = Billing::start(|_| {}).await;
    b.set_knobs(json!({"latency_ms": 200})).await;
    // 5,000 subscriptions due now (real time: the workers are real processes).
    let users: Vec<i64> = {
        let mut v = Vec::new();
        for _ in 0..50 {
            v.push(b.user().await.0);
        }
        v
    };
    let item = b.item(19_900).await;
    let sids = crate::helpers::fixtures::due_subscriptions(&b.db, &users, item, CRASH_SUBS).await;
    let sids: Vec<(String, UserId)> = sids.into_iter().map(|(s, u)| (s, UserId(u))).collect();
    b.register_sids(&sids).await;

    let env = [
        ("PILLIVERY__ENVIRONMENT", "test"),
        ("PILLIVERY__KAKAOPAY__BASE_URL", b.pg.url.as_str()),
        (
            "PILLIVERY__KAKAOPAY__SECRET_KEY",
            crate::helpers::sim::SECRET,
        ),
        ("PILLIVERY__WORKER__CONCURRENCY", "100"),
        ("PILLIVERY__WORKER__LEASE_MS", "2000"),
        ("PILLIVERY__WORKER__REAP_INTERVAL_MS", "500"),
        ("PILLIVERY__WORKER__POLL_INTERVAL_MS", "200"),
        ("PILLIVERY__DATABASE__MAX_CONNECTIONS", "20"),
        ("PILLIVERY__SUBSCRIPTIONS__RECONCILE_SKEW_SECS", "1"),
        ("PILLIVERY__SUBSCRIPTIONS__RECONCILE_WINDOW_SECS", "3"),
        ("PILLIVERY__PAYMENTS__RECONCILE_MIN_BACKOFF_MS", "200"),
        ("PILLIVERY__PAYMENTS__RECONCILE_MAX_BACKOFF_MS", "2000"),
    ];
    let mut workers = vec![
        WorkerProcess::spawn(&b.url, &env),
        WorkerProcess::spawn(&b.url, &env),
    ];
    for w in &mut workers {
        w.wait_live().await;
    }
    // The billing run: the sweep enqueues every due subscription's charge, on the clock
    // the workers run on (real processes: real time).
    b.set_time(chrono::Utc::now()).await;
    let enqueued = billing::subscriptions::charge::sweep(&b.ctx, 100_000)
        .await
        .unwrap();
    assert_eq!(enqueued, CRASH_SUBS as u64);

    let charged = || crate::helpers::fixtures::charged_for_cycle_two(&b.db);
    let began = Instant::now();
    let mut kills = 0;
    let mut victim = 0;
    while charged().await < CRASH_SUBS {
        assert!(
            began.elapsed() < Duration::from_secs(240),
            "not all charged: {} of {CRASH_SUBS}",
            charged().await
        );
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        if charged().await >= CRASH_SUBS {
            break;
        }
        // kill -9 one worker mid-flight and start a new one in its place.
        workers[victim].signal("-KILL");
        workers[victim].wait_exit(Duration::from_secs(5)).await;
        kills += 1;
        workers[victim] = WorkerProcess::spawn(&b.url, &env);
        victim = 1 - victim;
    }
    let elapsed = began.elapsed();
    assert!(kills >= 2, "the run outlived only {kills} kills");

    // Exactly one charge per subscription at pgsim, none missing.
    let charges = b.ledger("charge").await;
    let mut per_sid: HashMap<String, usize> = HashMap::new();
    for c in &charges {
        *per_sid
            .entry(c["sid"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let doubled: Vec<_> = per_sid.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "charged twice: {doubled:?}");
    assert_eq!(
        per_sid.len() as i64,
        CRASH_SUBS,
        "every subscription charged"
    );
    no_double_charges(&b.db).await;
    let n = ledger_matches_succeeded_attempts(&b.db, &charges).await;
    assert_eq!(n as i64, CRASH_SUBS);
    let attempts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM charge_attempts GROUP BY status ORDER BY status",
    )
    .fetch_all(&b.db)
    .await
    .unwrap();
    println!(
        "billing_crash: {CRASH_SUBS} charges in {:.1} s with {kills} kill -9; attempts {attempts:?}",
        elapsed.as_secs_f64()
    );
    crate::helpers::db::assert_no_session_left_in_transaction(&b.db).await;
}
