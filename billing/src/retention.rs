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

/// The tables pruned row by row (delivered events go with their deliveries).
#[derive(Debug, Clone, Copy)]
enum Table {
    FailedJobs,
    ViewDays,
    ProbeRuns,
}

/// `maintenance.prune`: every table past its retention, up to `retention.max_batches`
/// batches each.
pub async fn prune(ctx: &Ctx) -> Result<Pruned> {
    let r = &ctx.settings.retention;
    let now = ctx.clock.now();
    let days = |d: u32| now - Duration::days(i64::from(d));
    let batch = i64::from(r.batch_size);
    let full = |n: u64| n >= u64::from(r.batch_size);
    let mut conn = ctx.db.acquire().await?;
    let mut out = Pruned::default();
    for _ in 0..r.max_batches {
        let (events, deliveries) =
            delivered_events(&mut conn, days(r.delivered_events_days), batch).await?;
        out.outbox_events += events;
        out.webhook_deliveries += deliveries;
        if !full(events) {
            break;
        }
    }
    let view_cutoff = ctx
        .settings
        .subscriptions
        .time_zone
        .local_date(days(r.view_days_days));
    for table in [Table::FailedJobs, Table::ViewDays, Table::ProbeRuns] {
        for _ in 0..r.max_batches {
            let n = match table {
                Table::FailedJobs => {
                    failed_jobs(&mut conn, days(r.failed_jobs_days), batch).await?
                }
                Table::ViewDays => view_days(&mut conn, view_cutoff, batch).await?,
                Table::ProbeRuns => probe_runs(&mut conn, days(r.probe_runs_days), batch).await?,
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

/// Up to `batch` events created before `before` that nothing still waits on — not queued
/// for dispatch, every delivery delivered — with their deliveries (attempts cascade).
/// Rows another transaction holds are skipped this time.
async fn delivered_events(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<(u64, u64)> {
    let r = sqlx::query!(
        r#"WITH doomed AS (
             SELECT e.id FROM outbox_events e
             WHERE e.created_at < $1
               AND NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.event_id = e.id)
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                               WHERE d.event_id = e.id AND d.state <> 'delivered')
             LIMIT $2
             FOR UPDATE SKIP LOCKED
           ), deliveries AS (
             DELETE FROM webhook_deliveries d USING doomed WHERE d.event_id = doomed.id
             RETURNING d.id
           ), events AS (
             DELETE FROM outbox_events e USING doomed WHERE e.id = doomed.id RETURNING e.id
           )
           SELECT (SELECT count(*) FROM events) AS "events!",
                  (SELECT count(*) FROM deliveries) AS "deliveries!""#,
        before,
        batch
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((r.events as u64, r.deliveries as u64))
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

async fn probe_runs(conn: &mut PgConnection, before: DateTime<Utc>, batch: i64) -> Result<u64> {
    let n = sqlx::query!(
        "DELETE FROM job_probe_runs WHERE id IN (
           SELECT id FROM job_probe_runs WHERE ran_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        before,
        batch
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n)
}
