//! Writing outcomes back: successes in batches, the rest one by one, each retried until
//! the database takes it; periodic tasks chained in the same transaction.

use std::sync::Arc;
use std::time::Duration;

use billing::jobs::{self, Job};
use chrono::Utc;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::*;

/// Writes outcomes back: successes in batches, the rest one by one; each retried until
/// the database takes it, so an outage delays finalization instead of losing it.
pub(super) async fn finalizer(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Finish>) {
    const BATCH: usize = 512;
    let mut buf: Vec<Finish> = Vec::new();
    let mut shutting_down = false;
    while !shutting_down {
        match rx.recv().await {
            Some(Finish::Shutdown) | None => shutting_down = true,
            Some(f) => buf.push(f),
        }
        while buf.len() < BATCH && !shutting_down {
            match rx.try_recv() {
                Ok(Finish::Shutdown) => shutting_down = true,
                Ok(f) => buf.push(f),
                Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(50);
        let mut attempts = 0;
        while !buf.is_empty() {
            match flush(&inner, &mut buf).await {
                Ok(()) => {}
                Err(e) => {
                    attempts += 1;
                    metrics::counter!("worker_db_errors_total", "op" => "finalize").increment(1);
                    tracing::warn!(error = %e, pending = buf.len(), "finalizing failed; retrying");
                    // At shutdown, give up eventually: leases expire and the tasks re-run.
                    if shutting_down && attempts > 20 {
                        tracing::error!(pending = buf.len(), "could not finalize before exit");
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Flushes `buf`, removing what was written; on error what is left is retried.
pub(super) async fn flush(inner: &Inner, buf: &mut Vec<Finish>) -> billing::Result<()> {
    let mut conn = inner.ctx.db.acquire().await?;
    let now = inner.ctx.clock.now();
    let successes: Vec<(Uuid, Uuid)> = buf
        .iter()
        .filter_map(|f| match f {
            Finish::Succeeded { id, token } => Some((*id, *token)),
            _ => None,
        })
        .collect();
    if !successes.is_empty() {
        let n = jobs::complete(&mut conn, &successes, inner.cfg.keep_finished, now).await?;
        if (n as usize) < successes.len() {
            let lost = successes.len() - n as usize;
            metrics::counter!("jobs_leases_lost_total").increment(lost as u64);
            tracing::warn!(
                lost,
                "finished tasks whose lease had been lost; left to their new holder"
            );
        }
        buf.retain(|f| !matches!(f, Finish::Succeeded { .. }));
        forget(inner, successes.iter().map(|s| s.1));
    }
    while let Some(f) = buf.first() {
        let token = f.token();
        let held = match f {
            Finish::Retry {
                id,
                token,
                at,
                error,
            } => jobs::run_again(&mut conn, *id, *token, *at, error, true, now).await?,
            Finish::Failed { id, token, error } => {
                jobs::fail(&mut conn, *id, *token, error, now).await?
            }
            Finish::Deferred {
                id,
                token,
                at,
                reason,
            } => jobs::run_again(&mut conn, *id, *token, *at, reason, false, now).await?,
            Finish::Periodic {
                id,
                token,
                error,
                job,
                next,
            } => {
                finish_periodic(
                    &mut conn,
                    *id,
                    *token,
                    error.as_deref(),
                    job,
                    *next,
                    inner.cfg.keep_finished,
                    now,
                )
                .await?
            }
            Finish::Released { id, token } => {
                jobs::release(&mut conn, &[(*id, *token)], now).await? == 1
            }
            Finish::Succeeded { .. } | Finish::Abandoned { .. } | Finish::Shutdown => true,
        };
        if !held {
            metrics::counter!("jobs_leases_lost_total").increment(1);
            tracing::warn!(?token, "outcome not recorded: the lease had been lost");
        }
        buf.remove(0);
        forget(inner, token.into_iter());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn finish_periodic(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    token: Uuid,
    error: Option<&str>,
    job: &Job,
    next: chrono::DateTime<Utc>,
    keep: bool,
    now: chrono::DateTime<Utc>,
) -> billing::Result<bool> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    let held = match error {
        None => jobs::complete(&mut tx, &[(id, token)], keep, now).await? == 1,
        Some(e) => jobs::fail(&mut tx, id, token, e, now).await?,
    };
    if held {
        jobs::insert(&mut tx, job, next, now).await?;
        tx.commit().await?;
    }
    Ok(held)
}

pub(super) fn forget(inner: &Inner, tokens: impl Iterator<Item = Uuid>) {
    let mut map = inner.lock_inflight();
    for t in tokens {
        map.remove(&t);
    }
}
