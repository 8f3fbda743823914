//! Claiming: each pool claims due tasks in batches as its slots free up (urgent first,
//! every fifth claim in due order) and starts each run registered for heartbeat and
//! shutdown.

use std::sync::Arc;
use std::time::Duration;

use billing::jobs::{self, ClaimOrder, Claimed};
use chrono::Utc;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::*;

pub(super) async fn claim_loop(
    inner: Arc<Inner>,
    pool: PoolConfig,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(pool.concurrency));
    let mut backoff = Duration::from_millis(100);
    let mut claims: u64 = 0;
    loop {
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut permits = vec![first];
        while permits.len() < inner.cfg.claim_batch {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let now = inner.ctx.clock.now();
        // Urgent work first, except on every FIFO_EVERY-th claim, which takes due work in
        // due order so bulk work keeps moving under a stream of urgent work.
        claims += 1;
        let order = if claims % jobs::FIFO_EVERY == 0 {
            ClaimOrder::Due
        } else {
            ClaimOrder::Priority
        };
        let claimed = async {
            let mut conn = inner.ctx.db.acquire().await?;
            jobs::claim(
                &mut conn,
                &inner.cfg.worker_id,
                now,
                inner.cfg.lease,
                &pool.filter,
                permits.len() as i64,
                order,
            )
            .await
        }
        .await;
        match claimed {
            Ok(tasks) => {
                backoff = Duration::from_millis(100);
                let got = tasks.len();
                if got > 0 {
                    metrics::counter!("jobs_claimed_total", "pool" => pool.name.clone())
                        .increment(got as u64);
                    metrics::histogram!("job_claim_batch_size", "pool" => pool.name.clone())
                        .record(got as f64);
                }
                for task in tasks {
                    let Some(permit) = permits.pop() else { break };
                    start(&inner, task, permit);
                }
                drop(permits);
                if got == 0 {
                    let idle = idle_sleep(&inner, &pool, now).await;
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(idle) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
            Err(e) => {
                drop(permits);
                metrics::counter!("worker_db_errors_total", "op" => "claim").increment(1);
                tracing::warn!(error = %e, pool = %pool.name, retry_in_ms = backoff.as_millis() as u64, "claim failed; pausing");
                if sleep_or_stop(backoff, &mut stop).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Sleep until the next scheduled task is due, but never longer than the poll interval.
pub(super) async fn idle_sleep(
    inner: &Inner,
    pool: &PoolConfig,
    now: chrono::DateTime<Utc>,
) -> Duration {
    let poll = inner.cfg.poll_interval;
    let next = async {
        let mut conn = inner.ctx.db.acquire().await.ok()?;
        jobs::next_due(&mut conn, &pool.filter).await.ok()?
    }
    .await;
    match next {
        Some(at) if at > now => (at - now).to_std().unwrap_or(poll).min(poll),
        Some(_) => Duration::from_millis(1),
        None => poll,
    }
}

pub(super) fn start(inner: &Arc<Inner>, task: Claimed, permit: OwnedSemaphorePermit) {
    let token = task.lease_token;
    let id = task.id;
    let runner = inner.clone();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = watch::channel(None);
    let handle = tokio::spawn(async move {
        // Starts only once registered, so it is always known to heartbeat and shutdown.
        if go_rx.await.is_err() {
            return;
        }
        let finish = super::execute::execute(&runner, task, stop_rx).await;
        finish_run(&runner, token, finish);
    });
    inner.lock_inflight().insert(
        token,
        InFlight {
            id,
            run: Some(RunControl {
                stop: stop_tx,
                abort: handle.abort_handle(),
            }),
            _slot: permit,
        },
    );
    let _ = go_tx.send(());
}

pub(super) fn finish_run(inner: &Inner, token: Uuid, finish: Finish) {
    if let Some(f) = inner.lock_inflight().get_mut(&token) {
        f.run = None;
    }
    if inner.finish_tx.send(finish).is_err() {
        tracing::error!(%token, "finalizer gone; the task's lease will expire and it will run again");
    }
}
