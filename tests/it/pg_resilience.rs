//! The worker's protection of and from the PG, with real binaries and pgsim: the circuit
//! breaker through an outage, the seed's 20 %-5xx experiment, and the rate cap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::fixtures;
use crate::helpers::stack::Stack;

/// A `Ctx` on the stack's database (for the billing run's sweep), on real time.
fn ctx(s: &Stack) -> billing::Ctx {
    billing::Ctx::new((*s.settings).clone(), Arc::new(billing::clock::SystemClock)).unwrap()
}

/// `n` subscriptions due now, their SIDs registered at pgsim and their charges enqueued.
async fn billing_run(s: &Stack, n: i64) -> Vec<(String, i64)> {
    let mut users = Vec::new();
    for _ in 0..10 {
        users.push(fixtures::user(&s.db).await);
    }
    let item = fixtures::item(&s.db, "루테인 정기", 19_900, 0).await;
    let sids = fixtures::due_subscriptions(&s.db, &users, item, n).await;
    fixtures::register_sids(&s.client, &s.pg_url, &sids).await;
    let enqueued = billing::subscriptions::charge::sweep(&ctx(s), 100_000)
        .await
        .unwrap();
    assert_eq!(enqueued, n as u64);
    sids
}

async fn wait_charged(s: &Stack, n: i64, within: Duration) {
    let began = Instant::now();
    while fixtures::charged_for_cycle_two(&s.db).await < n {
        assert!(
            began.elapsed() < within,
            "only {} of {n} charged after {within:?}",
            fixtures::charged_for_cycle_two(&s.db).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Exactly one charge per SID at pgsim, for all of `sids`.
async fn one_charge_each(s: &Stack, sids: &[(String, i64)]) {
    let mut per_sid: HashMap<String, usize> = HashMap::new();
    for c in s.ledger_of("charge").await {
        *per_sid
            .entry(c["sid"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let doubled: Vec<_> = per_sid.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "charged twice: {doubled:?}");
    assert_eq!(per_sid.len(), sids.len(), "every subscription charged once");
}

async fn breaker_state(s: &Stack) -> f64 {
    s.worker_metric("pg_breaker_state").await
}

async fn wait_breaker(s: &Stack, want: f64, within: Duration) -> Instant {
    let began = Instant::now();
    loop {
        if breaker_state(s).await == want {
            return Instant::now();
        }
        assert!(
            began.elapsed() < within,
            "breaker never reached state {want} (0 closed, 1 half-open, 2 open)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_breaker_opens_on_a_failing_pg_defers_work_and_closes_when_it_heals() {
    const SUBS: i64 = 60;
    const ORDERS: usize = 8;
    let s = Stack::start_with(
        &["--auto-approve"],
        &[
            // the default breaker (40 calls, ≥ 20 judged, opens at 75 %), open 6 s
            ("PILLIVERY__PG_GUARD__BREAKER_OPEN_MS", "6000"),
            ("PILLIVERY__PG_GUARD__DEFER_JITTER_MS", "1000"),
            ("PILLIVERY__WORKER__CONCURRENCY", "100"),
            ("PILLIVERY__SUBSCRIPTIONS__RECONCILE_SKEW_SECS", "1"),
            ("PILLIVERY__SUBSCRIPTIONS__RECONCILE_WINDOW_SECS", "3"),
        ],
    )
    .await;
    // The outage: every answer takes 5 s, and 5xx ramp up to 75 % within 2 s.
    s.set_knobs(
        json!({"latency_ms": 5000, "ramp_kind": "server_error", "ramp_to": 0.75,
                       "ramp_secs": 2.0, "server_error_status": 500, "seed": 7}),
    )
    .await;
    let token = s.signup_and_login().await;
    let item = fixtures::item(&s.db, "오메가3", 25_000, 0).await;
    let mut orders = Vec::new();
    for _ in 0..ORDERS {
        orders.push(
            s.place_order(&token, &[(item, 1)]).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let sids = billing_run(&s, SUBS).await;

    let began = Instant::now();
    let opened = wait_breaker(&s, 2.0, Duration::from_secs(60)).await;
    let open_after = opened - began;
    let opened_unix = chrono::Utc::now().timestamp();
    // While open nothing reaches the PG: the whole seconds after the one it opened in,
    // up to just before the 6 s are over.
    tokio::time::sleep(Duration::from_millis(4_800).saturating_sub(opened.elapsed())).await;
    let quiet: Vec<(i64, u64)> = s
        .pg_per_second()
        .await
        .into_iter()
        .filter(|(at, n)| *at > opened_unix && *at < opened_unix + 4 && *n > 0)
        .collect();
    assert!(
        quiet.is_empty(),
        "requests reached pgsim while the breaker was open: {quiet:?}"
    );
    let page = s.worker_metrics().await;
    let refused = crate::helpers::stack::metric_sum(&page, "pg_calls_refused_total");
    let deferred =
        crate::helpers::stack::metric_sum(&page, r#"jobs_finished_total{outcome="deferred"}"#);
    assert!(
        refused > 0.0 && deferred > 0.0,
        "calls fail fast and work is deferred:\n{page}"
    );

    // The PG heals: trial calls close the breaker and the deferred work completes.
    s.set_knobs(json!({"latency_ms": 0, "ramp_to": 0.0, "server_error_rate": 0.0}))
        .await;
    wait_breaker(&s, 0.0, Duration::from_secs(60)).await;
    let page = s.worker_metrics().await;
    for to in ["open", "half_open", "closed"] {
        let n = crate::helpers::stack::metric_sum(
            &page,
            &format!(r#"pg_breaker_transitions_total{{to="{to}"}}"#),
        );
        assert!(n >= 1.0, "no transition to {to}:\n{page}");
    }
    wait_charged(&s, SUBS, Duration::from_secs(90)).await;
    one_charge_each(&s, &sids).await;
    for id in orders {
        let ready = s
            .order_until(&token, id, "payment_ready", Duration::from_secs(60))
            .await;
        s.follow_redirect(ready["payment"]["redirect_url"].as_str().unwrap())
            .await;
        s.order_until(&token, id, "paid", Duration::from_secs(60))
            .await;
    }

    // Nobody paid for the outage: no decline recorded, no subscription ever past due or
    // canceled (their events would be in the outbox), no order failed.
    let declined: i64 =
        sqlx::query_scalar("SELECT count(*) FROM charge_attempts WHERE status = 'declined'")
            .fetch_one(&s.db)
            .await
            .unwrap();
    let bad_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox_events
         WHERE event_type IN ('subscription.past_due', 'subscription.canceled',
                              'order.payment_failed')",
    )
    .fetch_one(&s.db)
    .await
    .unwrap();
    let not_active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM subscriptions WHERE status <> 'active'")
            .fetch_one(&s.db)
            .await
            .unwrap();
    assert_eq!((declined, bad_events, not_active), (0, 0, 0));
    // Deferring is not failing: no charge job used up a retry while the breaker refused it.
    let charge_retries: i32 = sqlx::query_scalar(
        "SELECT coalesce(max(retries), 0) FROM fang_tasks
         WHERE metadata->>'type' = 'subscription.charge'",
    )
    .fetch_one(&s.db)
    .await
    .unwrap();
    assert_eq!(charge_retries, 0);
    println!(
        "breaker: opened {:.1} s into the outage; {refused} calls refused, {deferred} jobs deferred; {SUBS} charges and {ORDERS} orders completed",
        open_after.as_secs_f64()
    );
    // For `loadtest/record` and loadtest/REPORT.md (DESIGN §11's RESULT line).
    println!(
        "RESULT name=breaker open_after_s={:.1} refused={refused} deferred={deferred} charges={SUBS} orders={ORDERS} charge_retries={charge_retries}",
        open_after.as_secs_f64()
    );
    crate::helpers::db::assert_no_session_left_in_transaction(&s.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_percent_5xx_100_concurrent_approvals_all_end_paid_once() {
    const ORDERS: usize = 100;
    let s = Stack::start_with(
        &["--auto-approve"],
        &[("PILLIVERY__WORKER__CONCURRENCY", "100")],
    )
    .await;
    let item = fixtures::item(&s.db, "비타민C", 12_000, 0).await;
    let mut tokens = Vec::new();
    for _ in 0..10 {
        tokens.push(s.signup_and_login().await);
    }
    // Orders get their KakaoPay page first; then the PG turns flaky for the approvals.
    let mut ready = Vec::new();
    for i in 0..ORDERS {
        let token = &tokens[i % tokens.len()];
        let order = s.ready_order(token, &[(item, 1 + (i % 3) as i32)]).await;
        ready.push((token.clone(), order));
    }
    s.set_knobs(json!({"server_error_rate": 0.2, "server_error_status": 500}))
        .await;
    let before: Value = s.pg_stats().await;
    let began = Instant::now();
    let approvals = ready.iter().map(|(token, order)| {
        let s = &s;
        async move {
            let id = order["id"].as_i64().unwrap();
            s.follow_redirect(order["payment"]["redirect_url"].as_str().unwrap())
                .await;
            let paid = s
                .order_until(token, id, "paid", Duration::from_secs(120))
                .await;
            (id, paid["total_amount"].as_i64().unwrap())
        }
    });
    let paid = futures::future::join_all(approvals).await;
    let elapsed = began.elapsed();
    let after: Value = s.pg_stats().await;

    // One approval per order at KakaoPay, for its amount.
    let approved = s.ledger_of("approve").await;
    assert_eq!(approved.len(), ORDERS, "one approval per order");
    let mut by_partner: HashMap<String, i64> = HashMap::new();
    for a in &approved {
        let prev = by_partner.insert(
            a["partner_order_id"].as_str().unwrap().to_owned(),
            a["amount"].as_i64().unwrap(),
        );
        assert!(prev.is_none(), "approved twice: {a}");
    }
    let ledger_total: i64 = by_partner.values().sum();
    let order_total: i64 = paid.iter().map(|(_, amount)| amount).sum();
    assert_eq!(ledger_total, order_total);

    let count = |v: &Value, ep: &str| v["requests"][ep].as_i64().unwrap_or(0);
    let calls: i64 = ["approve", "order"]
        .iter()
        .map(|ep| count(&after, ep) - count(&before, ep))
        .sum();
    let failed = after["faults_injected"]["server_error"]
        .as_i64()
        .unwrap_or(0)
        - before["faults_injected"]["server_error"]
            .as_i64()
            .unwrap_or(0);
    let approves = count(&after, "approve") - count(&before, "approve");
    let reconciled: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT metadata->>'payment_id') FROM fang_tasks
         WHERE metadata->>'type' = 'payment.reconcile'",
    )
    .fetch_one(&s.db)
    .await
    .unwrap();
    assert!(failed > 0, "the PG failed some calls");
    println!(
        "seed experiment: {ORDERS} concurrent approvals in {:.1} s; {calls} PG calls (approve + \
         inquiry), {failed} answered 5xx ({:.1} %); {approves} approve calls; {reconciled} orders \
         ({:.1} %) went through reconciliation; 0 orders ({:.1} %) ended unpaid \
         (seed: 4.16 % of operations failed all 3 retries, 0.6 % of all calls)",
        elapsed.as_secs_f64(),
        100.0 * failed as f64 / calls as f64,
        100.0 * reconciled as f64 / ORDERS as f64,
        0.0,
    );
    println!(
        "RESULT name=seed_experiment orders={ORDERS} seconds={:.1} pg_calls={calls} failed_5xx={failed} \
         failed_5xx_pct={:.1} reconciled_pct={:.1} unpaid_pct=0.0 double_approvals=0 \
         seed_retry_failure_pct=4.16 seed_overall_failure_pct=0.6",
        elapsed.as_secs_f64(),
        100.0 * failed as f64 / calls as f64,
        100.0 * reconciled as f64 / ORDERS as f64,
    );
    crate::helpers::db::assert_no_session_left_in_transaction(&s.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_1000_due_charges_never_exceeds_the_rate_cap_at_the_pg() {
    const SUBS: i64 = 1_000;
    const CAP: u64 = 50;
    // Calls that may start together: in any second at most CAP + BURST start.
    const BURST: u64 = 10;
    let s = Stack::start_with(
        &[],
        &[
            ("PILLIVERY__PG_GUARD__RATE_PER_SEC", "50"),
            ("PILLIVERY__PG_GUARD__RATE_BURST", "10"),
            ("PILLIVERY__WORKER__CONCURRENCY", "200"),
            // Far below demand: 200 charges wait for permits that take 4 s to come round,
            // so most waits run out and the work is deferred.
            ("PILLIVERY__PG_GUARD__MAX_WAIT_MS", "1500"),
            ("PILLIVERY__PG_GUARD__DEFER_JITTER_MS", "2000"),
        ],
    )
    .await;
    let sids = billing_run(&s, SUBS).await;
    let began = Instant::now();
    wait_charged(&s, SUBS, Duration::from_secs(120)).await;
    let elapsed = began.elapsed();
    one_charge_each(&s, &sids).await;
    // Permits come before anything is recorded: a wait that runs out defers the charge
    // untouched, so no attempt ever ends `not_charged` for want of a permit.
    let attempts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM charge_attempts GROUP BY status ORDER BY status",
    )
    .fetch_all(&s.db)
    .await
    .unwrap();
    assert_eq!(attempts, vec![("succeeded".to_owned(), SUBS)]);
    let deferred = s
        .worker_metric(r#"pg_calls_refused_total{reason="rate_capped"}"#)
        .await;
    assert!(
        deferred > 0.0,
        "no wait ran out: the cap was not far below demand"
    );
    let seconds = s.pg_per_second().await;
    let max = seconds.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let over: Vec<_> = seconds.iter().filter(|(_, n)| *n > CAP + BURST).collect();
    assert!(
        over.is_empty(),
        "more than {CAP} + {BURST} calls/s reached pgsim: {over:?}"
    );
    // A token bucket: over any span, at most the burst plus the cap per second.
    let total: u64 = seconds.iter().map(|(_, n)| *n).sum();
    let first = seconds.iter().map(|(at, _)| *at).min().unwrap_or(0);
    let last = seconds.iter().map(|(at, _)| *at).max().unwrap_or(0);
    let span = (last - first + 1) as u64;
    assert!(
        total <= CAP * span + BURST,
        "{total} calls in {span} s: over the cap on average"
    );
    // the cap was what limited the run (not an idle worker)
    assert!(max >= CAP * 8 / 10, "busiest second only {max}");
    let waited = s
        .worker_metric(r#"pg_permit_wait_seconds_count{permit="rate"}"#)
        .await;
    println!(
        "rate cap: {SUBS} charges in {:.1} s at ≤ {CAP}/s, burst {BURST} (busiest second {max}); {waited} rate waits",
        elapsed.as_secs_f64()
    );
    println!(
        "RESULT name=rate_cap charges={SUBS} cap_per_sec={CAP} burst={BURST} busiest_second={max} seconds={:.1}",
        elapsed.as_secs_f64()
    );
    crate::helpers::db::assert_no_session_left_in_transaction(&s.db).await;
}

/// A worker's concurrent charges share transactions (the rows a batch writes carry its
/// transaction id, `xmin`, and its start time), and a batch that fails on one bad row
/// reruns its charges one by one: every other subscription is charged exactly once, the
/// bad one is not finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_charges_share_transactions_and_a_bad_row_fails_only_its_own_charge() {
    const SUBS: i64 = 300;
    let s = Stack::start_with(&[], &[("PILLIVERY__WORKER__CONCURRENCY", "128")]).await;
    let mut users = Vec::new();
    for _ in 0..10 {
        users.push(fixtures::user(&s.db).await);
    }
    let item = fixtures::item(&s.db, "루테인 정기", 19_900, 0).await;
    let sids = fixtures::due_subscriptions(&s.db, &users, item, SUBS).await;
    fixtures::register_sids(&s.client, &s.pg_url, &sids).await;
    // The bad row: a succeeded attempt of cycle 2 already there, so finishing the new
    // one breaks `charge_attempts_one_success` — and fails whatever batch it is in.
    let bad: i64 = sqlx::query_scalar(
        "INSERT INTO charge_attempts (subscription_id, cycle, attempt, partner_order_id, amount,
                                      lines, started_at, status)
         SELECT id, 2, 1, 'pv-sub-bad', 19900, '[]', now(), 'succeeded'
         FROM subscriptions ORDER BY id LIMIT 1
         RETURNING subscription_id",
    )
    .fetch_one(&s.db)
    .await
    .unwrap();
    let enqueued = billing::subscriptions::charge::sweep(&ctx(&s), 100_000)
        .await
        .unwrap();
    assert_eq!(enqueued, SUBS as u64);
    wait_charged(&s, SUBS - 1, Duration::from_secs(120)).await;

    let orders: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT subscription_id, count(*) FROM orders WHERE cycle = 2 GROUP BY subscription_id",
    )
    .fetch_all(&s.db)
    .await
    .unwrap();
    assert_eq!(
        orders.len() as i64,
        SUBS - 1,
        "every good subscription has its order"
    );
    assert!(orders.iter().all(|(_, n)| *n == 1), "one order per cycle");
    assert!(
        orders.iter().all(|(sub, _)| *sub != bad),
        "the bad row's charge was not finished"
    );
    let (attempts, attempt_xacts, finishes): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT a.xmin::text), count(DISTINCT o.xmin::text)
         FROM charge_attempts a JOIN orders o ON o.id = a.order_id
         WHERE a.cycle = 2 AND a.status = 'succeeded'",
    )
    .fetch_one(&s.db)
    .await
    .unwrap();
    assert_eq!(attempts, SUBS - 1);
    // `a.xmin` is the finishing transaction (it updated the attempt), as is `o.xmin`.
    assert_eq!(
        attempt_xacts, finishes,
        "an order and its attempt commit together"
    );
    assert!(
        finishes * 3 < attempts,
        "{attempts} charges finished in {finishes} transactions: not batched"
    );
    // A start batch records its attempts with one statement, at one time. Start batches
    // fill less than finish batches: claimed jobs reach them one by one as their tasks
    // begin, where finishes arrive together from the gateway (seen on a quiet machine:
    // 299 charges started at 117 times, finished in under 100 transactions). Without
    // batching every charge starts at its own time.
    let start_times: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT started_at) FROM charge_attempts
         WHERE cycle = 2 AND subscription_id <> $1",
    )
    .bind(bad)
    .fetch_one(&s.db)
    .await
    .unwrap();
    assert!(
        start_times * 3 < attempts * 2,
        "{attempts} charges started at {start_times} distinct times: not batched"
    );
}
