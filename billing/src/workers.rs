//! Worker reports: what each `pillivery-worker` process knows only in memory (its PG
//! breaker, calls sent, jobs finished and failed, runs in flight), written to Postgres
//! every few seconds, and the fleet's status the console reads back from those rows.
//!
//! Counters are cumulative since the process started and a restarted process reports
//! under a new id, so a rate is the difference of one worker's last two reports and a
//! last-hour total the difference between its latest report and its first of the hour
//! (all of it if the process started within the hour).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::error::Result;
use crate::pg::BreakerState;
use crate::Ctx;

/// Reports are kept this long: the last hour's totals need the hour's first report.
const KEEP: chrono::Duration = chrono::Duration::hours(2);
/// Most old rows one report prunes (a fleet's two hours are a few thousand rows).
const PRUNE_BATCH: i64 = 500;
/// A worker is missing after this many report intervals without a report.
const MISSED_REPORTS: i32 = 3;

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Running,
    /// SIGTERM received: no new claims, running tasks finishing.
    Stopping,
    /// Its last report, written after a clean exit of the job runtime.
    Stopped,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Running => "running",
            Lifecycle::Stopping => "stopping",
            Lifecycle::Stopped => "stopped",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "stopping" => Lifecycle::Stopping,
            "stopped" => Lifecycle::Stopped,
            _ => Lifecycle::Running,
        }
    }
}

/// One worker process's report about itself.
#[derive(Debug, Clone)]
pub struct Report {
    pub worker_id: String,
    pub started_at: DateTime<Utc>,
    pub host: String,
    pub pid: u32,
    pub lifecycle: Lifecycle,
    /// How often this process reports.
    pub interval: Duration,
    pub breaker: BreakerState,
    /// Cumulative since the process started.
    pub pg_calls: u64,
    pub jobs_finished: u64,
    pub jobs_failed: u64,
    pub in_flight: usize,
}

/// Writes `r` as of now, and prunes the fleet's reports older than two hours (a few rows
/// at a time, found by the `at` index; rows another worker is pruning are skipped, so
/// reporting workers never wait on each other).
pub async fn report(ctx: &Ctx, r: &Report) -> Result<()> {
    let now = ctx.clock.now();
    let mut conn = ctx.db.acquire().await?;
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    sqlx::query!(
        r#"WITH pruned AS (
             DELETE FROM worker_reports WHERE ctid = ANY (ARRAY(
               SELECT ctid FROM worker_reports WHERE at < $12
               ORDER BY at LIMIT $13 FOR UPDATE SKIP LOCKED)))
           INSERT INTO worker_reports (worker_id, at, started_at, host, pid, state, interval_ms,
                                       breaker, pg_calls, jobs_finished, jobs_failed, in_flight)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $14)
           ON CONFLICT (worker_id, at) DO UPDATE SET
             state = excluded.state, breaker = excluded.breaker,
             pg_calls = excluded.pg_calls, jobs_finished = excluded.jobs_finished,
             jobs_failed = excluded.jobs_failed, in_flight = excluded.in_flight"#,
        r.worker_id,
        now,
        r.started_at,
        r.host,
        i32::try_from(r.pid).unwrap_or(i32::MAX),
        r.lifecycle.as_str(),
        i32::try_from(r.interval.as_millis()).unwrap_or(i32::MAX),
        r.breaker.as_str(),
        int(r.pg_calls),
        int(r.jobs_finished),
        int(r.jobs_failed),
        now - KEEP,
        PRUNE_BATCH,
        i32::try_from(r.in_flight).unwrap_or(i32::MAX),
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A worker seen in the last hour, as of its latest report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerStatus {
    pub worker_id: String,
    pub host: String,
    pub pid: i32,
    pub started_at: DateTime<Utc>,
    pub last_report_at: DateTime<Utc>,
    pub lifecycle: Lifecycle,
    /// Reporting (within three of its intervals) and not stopped.
    pub alive: bool,
    /// Its breaker as last reported.
    pub breaker: BreakerState,
    /// Between its last two reports; `None` when it has only one or is not alive.
    pub pg_calls_per_sec: Option<f64>,
    pub in_flight: i32,
    pub jobs_finished_last_hour: i64,
    pub jobs_failed_last_hour: i64,
}

impl WorkerStatus {
    /// Seconds since its latest report (0 if the worker's clock is ahead).
    pub fn seconds_since_report(&self, now: &DateTime<Utc>) -> i64 {
        (*now - self.last_report_at).num_seconds().max(0)
    }
}

/// One worker's reports that the arithmetic needs.
#[derive(Debug, Clone)]
struct Reports {
    worker_id: String,
    host: String,
    pid: i32,
    started_at: DateTime<Utc>,
    lifecycle: Lifecycle,
    interval_ms: i32,
    breaker: BreakerState,
    in_flight: i32,
    /// (at, pg_calls, jobs_finished, jobs_failed) of the latest report…
    last: (DateTime<Utc>, i64, i64, i64),
    /// …of the one before it…
    prev: Option<(DateTime<Utc>, i64)>,
    /// …and of the hour's first (the latest itself if it is the only one).
    first: (i64, i64),
}

impl Reports {
    fn status(self, now: DateTime<Utc>) -> WorkerStatus {
        let hour_ago = now - chrono::Duration::hours(1);
        let (at, calls, finished, failed) = self.last;
        let missing_after =
            chrono::Duration::milliseconds(i64::from(self.interval_ms) * i64::from(MISSED_REPORTS));
        let alive = self.lifecycle != Lifecycle::Stopped && now - at <= missing_after;
        let rate = self.prev.and_then(|(prev_at, prev_calls)| {
            let secs = (at - prev_at).num_milliseconds() as f64 / 1000.0;
            (alive && secs > 0.0).then(|| (calls - prev_calls).max(0) as f64 / secs)
        });
        // A process started within the hour did all its work in it.
        let (base_finished, base_failed) = if self.started_at >= hour_ago {
            (0, 0)
        } else {
            self.first
        };
        WorkerStatus {
            worker_id: self.worker_id,
            host: self.host,
            pid: self.pid,
            started_at: self.started_at,
            last_report_at: at,
            lifecycle: self.lifecycle,
            alive,
            breaker: self.breaker,
            pg_calls_per_sec: rate,
            in_flight: self.in_flight,
            jobs_finished_last_hour: (finished - base_finished).max(0),
            jobs_failed_last_hour: (failed - base_failed).max(0),
        }
    }
}

/// The workers that reported in the hour before `now` (alive ones first, then by host and
/// start), and the jobs they finished in it, all together.
///
/// Per worker id its latest report, the one before and the hour's first are each one
/// probe of the primary key `(worker_id, at)`; the ids come from a skip scan of the same
/// index. So the cost follows the number of workers, not the thousands of rows a fleet's
/// hour of reports is.
pub async fn statuses(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<(Vec<WorkerStatus>, i64)> {
    let hour_ago = now - chrono::Duration::hours(1);
    let rows = sqlx::query!(
        r#"WITH RECURSIVE ids (worker_id) AS (
             (SELECT worker_id FROM worker_reports ORDER BY worker_id LIMIT 1)
             UNION ALL
             SELECT (SELECT r.worker_id FROM worker_reports r WHERE r.worker_id > ids.worker_id
                     ORDER BY r.worker_id LIMIT 1)
             FROM ids WHERE ids.worker_id IS NOT NULL)
           SELECT l.worker_id AS "worker_id!", l.host AS "host!", l.pid AS "pid!",
                  l.started_at AS "started_at!", l.state AS "state!",
                  l.interval_ms AS "interval_ms!", l.breaker AS "breaker!",
                  l.in_flight AS "in_flight!", l.at AS "at!", l.pg_calls AS "pg_calls!",
                  l.jobs_finished AS "jobs_finished!", l.jobs_failed AS "jobs_failed!",
                  p.at AS "prev_at?", p.pg_calls AS "prev_pg_calls?",
                  f.jobs_finished AS "first_finished!", f.jobs_failed AS "first_failed!"
           FROM ids
           CROSS JOIN LATERAL (
             SELECT * FROM worker_reports r WHERE r.worker_id = ids.worker_id
             ORDER BY r.at DESC LIMIT 1) l
           LEFT JOIN LATERAL (
             SELECT r.at, r.pg_calls FROM worker_reports r
             WHERE r.worker_id = ids.worker_id AND r.at < l.at
             ORDER BY r.at DESC LIMIT 1) p ON true
           CROSS JOIN LATERAL (
             SELECT r.jobs_finished, r.jobs_failed FROM worker_reports r
             WHERE r.worker_id = ids.worker_id AND r.at >= $1
             ORDER BY r.at LIMIT 1) f
           WHERE ids.worker_id IS NOT NULL AND l.at >= $1
           ORDER BY l.host, l.started_at, l.worker_id"#,
        hour_ago
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut workers: Vec<WorkerStatus> = rows
        .into_iter()
        .map(|r| {
            Reports {
                worker_id: r.worker_id,
                host: r.host,
                pid: r.pid,
                started_at: r.started_at,
                lifecycle: Lifecycle::parse(&r.state),
                interval_ms: r.interval_ms,
                // The table's check admits only the three names.
                breaker: BreakerState::parse(&r.breaker).unwrap_or(BreakerState::Closed),
                in_flight: r.in_flight,
                last: (r.at, r.pg_calls, r.jobs_finished, r.jobs_failed),
                prev: r.prev_at.zip(r.prev_pg_calls),
                first: (r.first_finished, r.first_failed),
            }
            .status(now)
        })
        .collect();
    workers.sort_by_key(|w| !w.alive);
    let finished = workers.iter().map(|w| w.jobs_finished_last_hour).sum();
    Ok((workers, finished))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn reports(started: i64, last_at: i64) -> Reports {
        Reports {
            worker_id: "h:1:a".into(),
            host: "h".into(),
            pid: 1,
            started_at: t(started),
            lifecycle: Lifecycle::Running,
            interval_ms: 5_000,
            breaker: BreakerState::Closed,
            in_flight: 2,
            last: (t(last_at), 1_000, 700, 9),
            prev: Some((t(last_at - 5), 900)),
            first: (100, 4),
        }
    }

    #[test]
    fn rates_come_from_the_last_two_reports_and_totals_from_the_hour() {
        let now = t(10_000);
        // started two hours ago, last report 2 s ago
        let s = reports(10_000 - 7_200, 9_998).status(now);
        assert!(s.alive);
        assert_eq!(s.pg_calls_per_sec, Some(20.0)); // 100 calls in 5 s
        assert_eq!(
            (s.jobs_finished_last_hour, s.jobs_failed_last_hour),
            (600, 5)
        );
        // started 59 minutes ago: everything it did is in the hour
        let s = reports(10_000 - 3_540, 9_998).status(now);
        assert_eq!(
            (s.jobs_finished_last_hour, s.jobs_failed_last_hour),
            (700, 9)
        );
        // started exactly an hour ago counts from zero too
        let s = reports(10_000 - 3_600, 9_998).status(now);
        assert_eq!(s.jobs_finished_last_hour, 700);
    }

    #[test]
    fn a_worker_is_missing_after_three_intervals_and_stopped_when_it_said_so() {
        let now = t(10_000);
        // exactly three intervals: still alive; one millisecond more is not
        assert!(reports(0, 10_000 - 15).status(now).alive);
        let s = reports(0, 10_000 - 16).status(now);
        assert!(!s.alive);
        assert_eq!(s.pg_calls_per_sec, None, "no rate for a silent worker");
        assert_eq!(s.seconds_since_report(&now), 16);
        // a dead worker's work in the hour still counts
        assert_eq!(s.jobs_finished_last_hour, 600);

        let mut stopped = reports(0, 9_999);
        stopped.lifecycle = Lifecycle::Stopped;
        assert!(!stopped.status(now).alive);
        let mut stopping = reports(0, 9_999);
        stopping.lifecycle = Lifecycle::Stopping;
        assert!(stopping.status(now).alive, "draining is still working");
    }

    #[test]
    fn a_single_report_has_no_rate_and_clock_skew_is_no_negative_age() {
        let now = t(10_000);
        let mut first = reports(9_990, 9_995);
        first.prev = None;
        first.first = (700, 9);
        let s = first.status(now);
        assert_eq!(s.pg_calls_per_sec, None);
        assert_eq!(s.jobs_finished_last_hour, 700);
        let ahead = reports(0, 10_003).status(now);
        assert_eq!(ahead.seconds_since_report(&now), 0);
        assert!(ahead.alive);
    }

    #[test]
    fn lifecycle_and_breaker_names_round_trip() {
        for l in [Lifecycle::Running, Lifecycle::Stopping, Lifecycle::Stopped] {
            assert_eq!(Lifecycle::parse(l.as_str()), l);
        }
        for b in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            assert_eq!(BreakerState::parse(b.as_str()), Some(b));
        }
        assert_eq!(BreakerState::parse("ajar"), None);
    }
}
