//! Retention: deletes what is only history (delivered outbox events with their deliveries
//! and attempts, old failed jobs, per-day view counts, probe runs) once older than
//! `retention.*`, in small batches, each its own short statement, so no lock is held for
//! long and a backlog is worked off over several runs. Money records (orders, payments,
//! charge attempts, checkouts, subscriptions) and the audit log are never touched.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::error::Result;
use crate::Ctx;

/// What one run deleted, by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub outbox_events: u64,
    pub webhook_deliveries: u64,
    pub failed_jobs: u64,
    pub item_view_days: u64,
    pub job_probe_runs: u64,
}

/// The tables pruned in batches of their own (delivered events go with their deliveries).
#[derive(Debug, Clone, Copy)]
enum Table {
    FailedJobs,
    ViewDays,
    ProbeRuns,
}

/// `maintenance.prune`: every table past its retention, up to `retention.max_batches`
/// batches each.
///
/// Events and probe runs are walked in primary-key order, which is their time order (ids
/// are handed out as rows are written), from where the last batch of this run stopped:
/// each batch reads its own rows and those it must keep, not the ones already deleted. A
/// time index (the BRIN of migration 22) cannot skip those: its ranges still cover the
/// emptied pages, and once freed space is reused they cover everything (measured: 34,000
/// pages read for a batch of 1,000 events after 300,000 were pruned).
pub async fn prune(ctx: &Ctx) -> Result<Pruned> {
    let r = &ctx.settings.retention;
    let now = ctx.clock.now();
    let days = |d: u32| now - Duration::days(i64::from(d));
    let batch = i64::from(r.batch_size);
    let full = |n: u64| n >= u64::from(r.batch_size);
    let mut conn = ctx.db.acquire().await?;
    let mut out = Pruned::default();
    let mut after = 0;
    for _ in 0..r.max_batches {
        let b = delivered_events(&mut conn, days(r.delivered_events_days), after, batch).await?;
        out.outbox_events += b.events;
        out.webhook_deliveries += b.deliveries;
        match b.last {
            Some(last) if full(b.events) => after = last,
            _ => break,
        }
    }
    let view_cutoff = ctx
        .settings
        .subscriptions
        .time_zone
        .local_date(days(r.view_days_days));
    for table in [Table::FailedJobs, Table::ViewDays, Table::ProbeRuns] {
        let mut after = 0;
        for _ in 0..r.max_batches {
            let n = match table {
                Table::FailedJobs => {
                    failed_jobs(&mut conn, days(r.failed_jobs_days), batch).await?
                }
                Table::ViewDays => view_days(&mut conn, view_cutoff, batch).await?,
                Table::ProbeRuns => {
                    let (n, last) =
                        probe_runs(&mut conn, days(r.probe_runs_days), after, batch).await?;
                    after = last.unwrap_or(after);
                    n
                }
            };
            match table {
                Table::FailedJobs => out.failed_jobs += n,
                Table::ViewDays => out.item_view_days += n,
                Table::ProbeRuns => out.job_probe_runs += n,
            }
            if !full(n) {
                break;
            }
        }
    }
    for (table, n) in [
        ("outbox_events", out.outbox_events),
        ("webhook_deliveries", out.webhook_deliveries),
        ("failed_jobs", out.failed_jobs),
        ("item_view_days", out.item_view_days),
        ("job_probe_runs", out.job_probe_runs),
    ] {
        metrics::counter!("retention_pruned_total", "table" => table).increment(n);
    }
    if out != Pruned::default() {
        tracing::info!(?out, "pruned what is past its retention");
    }
    Ok(out)
}

/// One batch of [`delivered_events`].
struct EventBatch {
    events: u64,
    deliveries: u64,
    /// The highest event id deleted, where the next batch starts.
    last: Option<i64>,
}

/// Up to `batch` events with ids above `after`, created before `before`, that nothing
/// still waits on — not queued for dispatch, every delivery delivered — with their
/// deliveries (attempts cascade), lowest ids first. Rows another transaction holds are
/// skipped this time.
///
/// The two checks are scalar subqueries, probed per candidate through the tables' keys:
/// written as `NOT EXISTS`, Postgres turns them into anti-joins and, under the `LIMIT`,
/// plans one scan of every delivery per batch (measured with 2.1 M deliveries: 1.08 s of
/// a 1.15 s batch; probed, the batch takes 93 ms).
async fn delivered_events(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    after: i64,
    batch: i64,
) -> Result<EventBatch> {
    let r = sqlx::query!(
        r#"WITH doomed AS (
             SELECT e.id FROM outbox_events e
             WHERE e.id > $3 AND e.created_at < $1
               AND NOT (SELECT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.event_id = e.id))
               AND NOT (SELECT EXISTS (SELECT 1 FROM webhook_deliveries d
                                       WHERE d.event_id = e.id AND d.state <> 'delivered'))
             ORDER BY e.id
             LIMIT $2
             FOR UPDATE SKIP LOCKED
           ), deliveries AS (
             DELETE FROM webhook_deliveries d USING doomed WHERE d.event_id = doomed.id
             RETURNING d.id
           ), events AS (
             DELETE FROM outbox_events e USING doomed WHERE e.id = doomed.id RETURNING e.id
           )
           SELECT (SELECT count(*) FROM events) AS "events!",
                  (SELECT count(*) FROM deliveries) AS "deliveries!",
                  (SELECT max(id) FROM events) AS "last""#,
        before,
        batch,
        after
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(EventBatch {
        events: r.events as u64,
        deliveries: r.deliveries as u64,
        last: r.last,
    })
}

async fn failed_jobs(conn: &mut PgConnection, before: DateTime<Utc>, batch: i64) -> Result<u64> {
    let n = sqlx::query!(
        "DELETE FROM fang_tasks WHERE id IN (
           SELECT id FROM fang_tasks WHERE state = 'failed' AND updated_at < $1
           LIMIT $2 FOR UPDATE SKIP LOCKED)",
        before,
        batch
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n)
}

async fn view_days(conn: &mut PgConnection, before: chrono::NaiveDate, batch: i64) -> Result<u64> {
    let n = sqlx::query!(
        "DELETE FROM item_view_days WHERE ctid IN (
           SELECT ctid FROM item_view_days WHERE day < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        before,
        batch
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n)
}

/// Up to `batch` probe runs with ids above `after` that ran before `before`, lowest ids
/// first; how many, and the highest id deleted.
async fn probe_runs(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    after: i64,
    batch: i64,
) -> Result<(u64, Option<i64>)> {
    let r = sqlx::query!(
        r#"WITH doomed AS (
             DELETE FROM job_probe_runs WHERE id IN (
               SELECT id FROM job_probe_runs WHERE id > $3 AND ran_at < $1
               ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING id
           )
           SELECT count(*) AS "n!", max(id) AS "last" FROM doomed"#,
        before,
        batch,
        after
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((r.n as u64, r.last))
}
