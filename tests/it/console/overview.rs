//! The overview's worker figures: each `pillivery-worker` process reports its breaker and
//! counters to Postgres, and the console shows them per worker (alive, breaker, PG
//! calls/s, in flight) with the jobs finished and failed in the last hour.

use std::sync::Arc;
use std::time::Duration;

use billing::clock::{Clock, ManualClock};
use billing::pg::BreakerState;
use billing::workers::{Lifecycle, Report, WorkerStatus};
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgPool;

use super::{console_admin, console_sign_in, with_role};
use crate::helpers::jobs::{count, wait_until};
use crate::helpers::stack::Stack;
use crate::helpers::{test_db, test_settings};

const PATIENCE: Duration = Duration::from_secs(30);

/// A hand-written report: worker id (`host:pid:…`), started (seconds before `now`),
/// state, breaker, at (seconds before `now`), PG calls, jobs finished, jobs failed.
type Row = (
    &'static str,
    i64,
    &'static str,
    &'static str,
    i64,
    i64,
    i64,
    i64,
);

async fn reported(db: &PgPool, now: DateTime<Utc>, rows: &[Row]) {
    let ago = |secs: i64| now - chrono::Duration::seconds(secs);
    for &(worker, started, state, breaker, at, pg_calls, finished, failed) in rows {
        sqlx::query(
            "INSERT INTO worker_reports (worker_id, at, started_at, host, pid, state, interval_ms,
                                         breaker, pg_calls, jobs_finished, jobs_failed, in_flight)
             VALUES ($1, $2, $3, split_part($1, ':', 1), split_part($1, ':', 2)::int, $4, 5000,
                     $5, $6, $7, $8, 3)",
        )
        .bind(worker)
        .bind(ago(at))
        .bind(ago(started))
        .bind(state)
        .bind(breaker)
        .bind(pg_calls)
        .bind(finished)
        .bind(failed)
        .execute(db)
        .await
        .unwrap();
    }
}

fn by_id<'a>(workers: &'a [WorkerStatus], id: &str) -> &'a WorkerStatus {
    workers
        .iter()
        .find(|w| w.worker_id == id)
        .unwrap_or_else(|| panic!("{id} not in {workers:#?}"))
}

#[tokio::test]
async fn worker_statuses_take_rates_from_the_last_two_reports_and_totals_from_the_hour() {
    let (_, db) = test_db().await;
    // Postgres keeps microseconds: edges must be exact.
    let now = Utc::now().trunc_subsecs(6);
    let (steady, before, after) = ("a:100:steady", "b:200:old", "b:201:new");
    let (stopped, edge, gone) = ("c:300:stopped", "d:400:edge", "e:500:gone");
    #[rustfmt::skip]
    reported(&db, now, &[
        // A long-running worker: its report just before the hour does not count, its
        // hour's first does; 100 PG calls between its last two reports 5 s apart.
        (steady, 10_000, "running", "closed", 3_700, 0, 90, 0),
        (steady, 10_000, "running", "closed", 3_590, 200, 100, 1),
        (steady, 10_000, "running", "closed", 7, 1_000, 350, 3),
        (steady, 10_000, "running", "open", 2, 1_100, 400, 4),
        // A restart: the old process went silent 20 minutes ago, the new one (a new id)
        // started 19 minutes ago and counts from zero.
        (before, 10_000, "running", "closed", 2_400, 50, 70, 0),
        (before, 10_000, "running", "closed", 1_200, 60, 80, 2),
        (after, 1_140, "running", "half_open", 1, 9, 30, 0),
        // Stopped cleanly 10 s ago.
        (stopped, 600, "running", "closed", 15, 5, 5, 0),
        (stopped, 600, "stopped", "closed", 10, 5, 6, 0),
        // Window edges: last seen exactly an hour ago is in; a second more is out.
        (edge, 5_000, "running", "closed", 3_600, 1, 7, 0),
        (gone, 5_000, "running", "closed", 3_601, 1, 7, 0),
    ]).await;

    let mut conn = db.acquire().await.unwrap();
    let (workers, finished) = billing::workers::statuses(&mut conn, now).await.unwrap();
    let ids: Vec<&str> = workers.iter().map(|w| w.worker_id.as_str()).collect();
    // Alive first, then by host and start.
    assert_eq!(ids, [steady, after, before, stopped, edge], "{workers:#?}");

    let s = by_id(&workers, steady);
    assert!(s.alive);
    assert_eq!(s.lifecycle, Lifecycle::Running);
    assert_eq!(s.breaker, BreakerState::Open);
    assert_eq!(s.pg_calls_per_sec, Some(20.0));
    assert_eq!(
        (s.jobs_finished_last_hour, s.jobs_failed_last_hour),
        (300, 3)
    );
    assert_eq!((s.host.as_str(), s.pid, s.in_flight), ("a", 100, 3));

    let old = by_id(&workers, before);
    assert!(!old.alive, "silent for 20 minutes");
    assert_eq!(old.pg_calls_per_sec, None);
    assert_eq!(
        (old.jobs_finished_last_hour, old.jobs_failed_last_hour),
        (10, 2)
    );
    let new = by_id(&workers, after);
    assert!(new.alive);
    assert_eq!(new.breaker, BreakerState::HalfOpen);
    assert_eq!(new.pg_calls_per_sec, None, "one report: no rate yet");
    assert_eq!(new.jobs_finished_last_hour, 30);

    let st = by_id(&workers, stopped);
    assert!(!st.alive);
    assert_eq!(st.lifecycle, Lifecycle::Stopped);
    assert_eq!(st.jobs_finished_last_hour, 6);

    let e = by_id(&workers, edge);
    assert_eq!(
        e.jobs_finished_last_hour, 0,
        "its one report is the hour's first"
    );
    assert_eq!(finished, 300 + 10 + 30 + 6);
}

#[tokio::test]
async fn a_report_is_written_as_of_the_clock_and_prunes_rows_older_than_two_hours() {
    let (url, db) = test_db().await;
    // Postgres keeps microseconds: edges must be exact.
    let now = Utc::now().trunc_subsecs(6);
    let clock = ManualClock::new(now);
    let ctx = billing::Ctx::new(test_settings(&url), Arc::new(clock.clone())).unwrap();
    let ago = |secs: i64| now - chrono::Duration::seconds(secs);
    let old = "x:1:old";
    #[rustfmt::skip]
    reported(&db, now, &[
        (old, 9_000, "running", "closed", 7_201, 1, 1, 0),
        (old, 9_000, "running", "closed", 7_199, 1, 1, 0),
    ]).await;

    let mut report = Report {
        worker_id: "y:2:new".into(),
        started_at: ago(60),
        host: "y".into(),
        pid: 2,
        lifecycle: Lifecycle::Running,
        interval: Duration::from_secs(5),
        breaker: BreakerState::Closed,
        pg_calls: 40,
        jobs_finished: 12,
        jobs_failed: 1,
        in_flight: 4,
    };
    let rows = || async {
        let rows: Vec<(String, DateTime<Utc>)> =
            sqlx::query_as("SELECT worker_id, at FROM worker_reports ORDER BY worker_id, at")
                .fetch_all(&db)
                .await
                .unwrap();
        rows.into_iter()
            .map(|(w, at)| (w, (now - at).num_seconds()))
            .collect::<Vec<_>>()
    };
    billing::workers::report(&ctx, &report).await.unwrap();
    let owned = |v: &[(&str, i64)]| -> Vec<(String, i64)> {
        v.iter().map(|(w, s)| (w.to_string(), *s)).collect()
    };
    assert_eq!(
        rows().await,
        owned(&[("x:1:old", 7_199), ("y:2:new", 0)]),
        "only what is older than two hours is pruned"
    );
    // The same instant again (a clock that did not move) overwrites rather than fails.
    report.pg_calls = 41;
    billing::workers::report(&ctx, &report).await.unwrap();
    clock.advance(chrono::Duration::seconds(5));
    report.pg_calls = 91;
    report.breaker = BreakerState::Open;
    billing::workers::report(&ctx, &report).await.unwrap();
    assert_eq!(
        rows().await,
        owned(&[("y:2:new", 0), ("y:2:new", -5)]),
        "two hours by the clock that reports"
    );

    let mut conn = db.acquire().await.unwrap();
    let (workers, finished) = billing::workers::statuses(&mut conn, clock.now())
        .await
        .unwrap();
    let w = by_id(&workers, "y:2:new");
    assert_eq!(w.pg_calls_per_sec, Some(10.0), "(91 - 41) calls in 5 s");
    assert_eq!(w.breaker, BreakerState::Open);
    assert_eq!(finished, 12);
}

/// The text of each cell of the workers table's row for one worker (tags stripped).
fn worker_row(html: &str) -> Option<Vec<String>> {
    let table = &html[html.find("<table id=\"workers\"")?..];
    let table = &table[..table.find("</table>")?];
    let row = &table[table.find("<tr data-worker=")?..];
    let row = &row[..row.find("</tr>")?];
    let mut cells = Vec::new();
    for cell in row.replace("<th", "<td").split("<td").skip(1) {
        let mut text = String::new();
        let mut in_tag = true;
        for c in cell.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => text.push(c),
                _ => {}
            }
        }
        cells.push(text.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    Some(cells)
}

/// A figure shown as `<span … id="{id}">N</span>`.
fn figure(html: &str, id: &str) -> i64 {
    let at = html.find(&format!("id=\"{id}\">")).expect(id) + id.len() + 6;
    html[at..html[at..].find('<').unwrap() + at]
        .parse()
        .unwrap()
}

#[tokio::test]
async fn console_overview_shows_the_real_workers_breaker_calls_and_jobs_of_the_last_hour() {
    let s = Stack::start_with(
        &["--auto-approve"],
        &[("PILLIVERY__WORKER__REPORT_INTERVAL_SECS", "1")],
    )
    .await;
    // Work for the worker: one order paid through the PG (ready + approve), probes that
    // succeed, and one that fails for good.
    let token = s.signup_and_login().await;
    let item = crate::helpers::fixtures::item(&s.db, "밀크씨슬", 25_000, 0).await;
    let ready = s.ready_order(&token, &[(item, 1)]).await;
    let id = ready["id"].as_i64().unwrap();
    let (_, back) = s
        .follow_redirect(ready["payment"]["redirect_url"].as_str().unwrap())
        .await;
    assert_eq!(back["applied"], true, "{back}");
    s.order_until(&token, id, "paid", PATIENCE).await;
    let mut conn = s.db.acquire().await.unwrap();
    for i in 0..5 {
        let probe = billing::tasks::Probe::new(format!("overview-{i}"));
        billing::jobs::enqueue(&mut conn, &probe, Utc::now())
            .await
            .unwrap();
    }
    let doomed = billing::tasks::Probe {
        fail_runs: 1,
        max_retries: Some(0),
        ..billing::tasks::Probe::new("overview-doomed")
    };
    billing::jobs::enqueue(&mut conn, &doomed, Utc::now())
        .await
        .unwrap();
    drop(conn);

    let (_, admin) = console_admin(&s).await;
    let stats = s.pg_stats().await;
    let pg_sent: i64 = stats["requests"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(endpoint, _)| *endpoint != "buyer")
        .map(|(_, n)| n.as_i64().unwrap())
        .sum();
    assert!(pg_sent >= 2, "ready and approve at least: {stats}");
    // The stack keeps finished jobs as rows: what the worker reports must match them, and
    // the PG calls it reports are the calls the PG received.
    wait_until(
        "the overview to show the worker's work",
        PATIENCE,
        || async {
            let html = admin.page("/admin/overview/live").await;
            let finished = count(
                &s.db,
                "SELECT count(*) FROM fang_tasks WHERE state = 'finished'",
            )
            .await;
            let calls = count(&s.db, "SELECT max(pg_calls) FROM worker_reports").await;
            worker_row(&html).is_some_and(|cells| {
                cells[1].starts_with("running") && cells[2] == "closed" && cells[6] == "1"
            }) && figure(&html, "finished-jobs") == finished
                && figure(&html, "failed-jobs") == 1
                && calls == pg_sent
        },
    )
    .await;
    let html = admin.page("/admin/overview/live").await;
    let cells = worker_row(&html).unwrap();
    let host_pid = sqlx::query_scalar::<_, String>(
        "SELECT host || ':' || pid FROM worker_reports ORDER BY at DESC LIMIT 1",
    )
    .fetch_one(&s.db)
    .await
    .unwrap();
    assert_eq!(cells[0], host_pid);
    assert!(cells[1].starts_with("running"), "{cells:?}");
    assert!(
        cells[3].parse::<f64>().is_ok(),
        "PG calls/s of a live worker: {cells:?}"
    );
    assert!(
        html.contains("breaker-closed"),
        "the breaker has its status class"
    );
    // Some pair of its reports saw the calls happen (the rate is taken from such a pair).
    let rose: bool = sqlx::query_scalar(
        "SELECT coalesce(bool_or(pg_calls > prev), false) FROM (
           SELECT pg_calls, lag(pg_calls) OVER (ORDER BY at) AS prev FROM worker_reports) r",
    )
    .fetch_one(&s.db)
    .await
    .unwrap();
    assert!(rose);

    // An operator sees the same figures.
    let operator = with_role(&s, "operator").await;
    let html = console_sign_in(&s, &operator).await.page("/admin").await;
    assert!(html.contains("id=\"workers\""));

    // A clean stop is reported as such, not as a missing worker.
    s.worker.signal("-TERM");
    wait_until(
        "the overview to show the worker stopped",
        PATIENCE,
        || async {
            let html = admin.page("/admin/overview/live").await;
            worker_row(&html).is_some_and(|cells| cells[1].starts_with("stopped"))
        },
    )
    .await;
}
