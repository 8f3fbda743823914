//! The job runtime: claims tasks in batches, runs them with bounded concurrency under a
//! renewed lease, finalizes them in batches, re-queues what crashed workers left behind,
//! and stops gracefully.
//!
//! Correctness rests on the database: a claim is one `SKIP LOCKED` statement, and every
//! finalization presents the claim's lease token, so a worker that lost its lease (cut
//! off, paused, too slow) can never finish a task another worker now holds.
//!
//! A run is never cut inside a database transaction: its timeout, a lost lease and
//! shutdown are [`Stop`] requests that take effect between the task's transactions
//! (`billing::db::stop_between_transactions`), so what a task wrote either committed and
//! is reported or rolled back.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use billing::jobs::{self, Job, TypeFilter};
use billing::settings::WorkerSettings;
use chrono::Utc;

use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit};
use tokio::task::AbortHandle;
use uuid::Uuid;

use crate::tasks::{Registry, Runnable};

mod background;
mod claim;
mod execute;
mod finalize;

use background::{depth_metrics, heartbeat, listen, reaper, report_final, reporter};
use claim::claim_loop;
use finalize::finalizer;

pub use execute::jittered;

/// One pool of task slots and the task types it takes.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
    pub filter: TypeFilter,
    pub concurrency: usize,
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub worker_id: String,
    pub pools: Vec<PoolConfig>,
    pub claim_batch: usize,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub heartbeat: Duration,
    pub reap_interval: Duration,
    pub task_timeout: Duration,
    pub task_timeouts: HashMap<String, Duration>,
    /// Retry budgets by task name, over the one stored with each row.
    pub max_retries: HashMap<String, i32>,
    pub max_backoff: Duration,
    pub keep_finished: bool,
    pub shutdown_grace: Duration,
    /// How often the process writes its report for the console (`billing::workers`).
    pub report_interval: Duration,
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into())
}

impl RuntimeConfig {
    pub fn from_settings(s: &WorkerSettings) -> Self {
        let mut pools: Vec<PoolConfig> = s
            .pools
            .iter()
            .map(|(name, p)| PoolConfig {
                name: name.clone(),
                filter: TypeFilter {
                    include: Some(p.task_types.clone()),
                    exclude: Vec::new(),
                },
                concurrency: p.concurrency,
            })
            .collect();
        pools.push(PoolConfig {
            name: "default".into(),
            filter: TypeFilter {
                include: None,
                exclude: s
                    .pools
                    .values()
                    .flat_map(|p| p.task_types.clone())
                    .collect(),
            },
            concurrency: s.concurrency,
        });
        let short = Uuid::new_v4().simple().to_string();
        Self {
            worker_id: format!("{}:{}:{}", hostname(), std::process::id(), &short[..8]),
            pools,
            claim_batch: s.claim_batch,
            poll_interval: s.poll_interval_ms,
            lease: s.lease_ms,
            heartbeat: s.lease_ms / 3,
            reap_interval: s.reap_interval_ms,
            task_timeout: s.task_timeout_ms,
            task_timeouts: s.task_timeouts_ms.clone().into_iter().collect(),
            max_retries: s.max_retries.clone().into_iter().collect(),
            max_backoff: s.max_backoff_ms,
            keep_finished: s.keep_finished,
            shutdown_grace: s.shutdown_grace_ms,
            report_interval: s.report_interval_secs,
        }
    }
}

/// How a run ended, to be written back by the finalizer.
pub(super) enum Finish {
    Succeeded {
        id: Uuid,
        token: Uuid,
    },
    Retry {
        id: Uuid,
        token: Uuid,
        at: chrono::DateTime<Utc>,
        error: String,
    },
    Failed {
        id: Uuid,
        token: Uuid,
        error: String,
    },
    /// Nothing was attempted (the task said `Defer`): run again at `at`, no retry counted.
    Deferred {
        id: Uuid,
        token: Uuid,
        at: chrono::DateTime<Utc>,
        reason: String,
    },
    /// A periodic task: finalize and schedule its next occurrence in one transaction.
    Periodic {
        id: Uuid,
        token: Uuid,
        error: Option<String>,
        job: Box<Job>,
        next: chrono::DateTime<Utc>,
    },
    /// Stopped for shutdown between transactions: hand the claim back to the queue.
    Released {
        id: Uuid,
        token: Uuid,
    },
    /// Stopped because the lease was lost: the new holder finishes it; nothing to write.
    Abandoned {
        token: Uuid,
    },
    /// Sent last at shutdown: flush what came before, then stop.
    Shutdown,
}

impl Finish {
    fn token(&self) -> Option<Uuid> {
        match self {
            Finish::Succeeded { token, .. }
            | Finish::Retry { token, .. }
            | Finish::Failed { token, .. }
            | Finish::Deferred { token, .. }
            | Finish::Periodic { token, .. }
            | Finish::Released { token, .. }
            | Finish::Abandoned { token } => Some(*token),
            Finish::Shutdown => None,
        }
    }
}

/// How long shutdown waits, after the grace period, for runs to leave their transactions.
pub(super) const TRANSACTIONS_AT_EXIT: Duration = Duration::from_secs(5);

/// Why a run is asked to stop before its end. Honoured between the task's transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    TimedOut,
    LeaseLost,
    Shutdown,
}

/// Aborts the task's own spawned run when its runner is aborted: only the last resort of
/// a shutdown whose runs did not reach a safe point in time (the process is exiting, and
/// Postgres rolls back what the closed sessions left open).
pub(super) struct AbortOnDrop(pub(super) AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The runner's handles on a run in progress.
#[derive(Clone)]
pub(super) struct RunControl {
    pub(super) stop: watch::Sender<Option<Stop>>,
    pub(super) abort: AbortHandle,
}

impl RunControl {
    /// The first stop asked for is the one the run reports.
    fn stop(&self, why: Stop) {
        self.stop.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(why);
                true
            } else {
                false
            }
        });
    }
}

pub(super) struct InFlight {
    pub(super) id: Uuid,
    /// `None` once the run has ended and only its finalization is pending.
    pub(super) run: Option<RunControl>,
    /// The pool slot: held until the outcome is written, so a slow database slows
    /// claiming instead of piling up unfinalized claims.
    pub(super) _slot: OwnedSemaphorePermit,
}

pub(super) struct Inner {
    pub(super) ctx: billing::Ctx,
    pub(super) cfg: RuntimeConfig,
    pub(super) registry: Registry,
    /// Claims this worker holds, by lease token: renewed by the heartbeat until finalized.
    pub(super) inflight: Mutex<HashMap<Uuid, InFlight>>,
    pub(super) finish_tx: mpsc::UnboundedSender<Finish>,
    pub(super) wakers: Vec<Arc<Notify>>,
    pub(super) stopping: AtomicBool,
    pub(super) started_at: chrono::DateTime<Utc>,
    /// Runs that succeeded, and runs that failed for good, since the process started
    /// (the worker's report; the metrics count every outcome by task).
    pub(super) finished: AtomicU64,
    pub(super) failed: AtomicU64,
}

impl Inner {
    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, InFlight>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn running(&self) -> usize {
        self.lock_inflight()
            .values()
            .filter(|f| f.run.is_some())
            .count()
    }

    /// Counts a run's outcome: the `jobs_finished_total` metric, and this process's
    /// successes and final failures for its report.
    fn record_outcome(&self, name: &str, outcome: &'static str) {
        metrics::counter!("jobs_finished_total", "task" => name.to_owned(), "outcome" => outcome)
            .increment(1);
        match outcome {
            "succeeded" => self.finished.fetch_add(1, Ordering::Relaxed),
            "failed" | "rejected" | "undecodable" => self.failed.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// What this process tells the console about itself.
    fn report(&self, lifecycle: billing::workers::Lifecycle) -> billing::workers::Report {
        billing::workers::Report {
            worker_id: self.cfg.worker_id.clone(),
            started_at: self.started_at,
            host: hostname(),
            pid: std::process::id(),
            lifecycle,
            interval: self.cfg.report_interval,
            breaker: self.ctx.pg_guard.state(),
            pg_calls: self.ctx.pg_guard.calls_sent(),
            jobs_finished: self.finished.load(Ordering::Relaxed),
            jobs_failed: self.failed.load(Ordering::Relaxed),
            in_flight: self.running(),
        }
    }
}

/// Runs the worker's job runtime until `shutdown` resolves, then drains: stops claiming,
/// lets in-flight tasks finish within the grace period, hands the rest back, flushes.
/// Rows are run through `registry`; `periodic` tasks (unique, with a cron pattern) are
/// seeded and kept chained.
pub async fn run(
    ctx: billing::Ctx,
    cfg: RuntimeConfig,
    registry: Registry,
    periodic: Vec<Job>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (finish_tx, finish_rx) = mpsc::unbounded_channel();
    let wakers: Vec<Arc<Notify>> = cfg.pools.iter().map(|_| Arc::new(Notify::new())).collect();
    let inner = Arc::new(Inner {
        started_at: ctx.clock.now(),
        registry,
        ctx,
        cfg,
        inflight: Mutex::new(HashMap::new()),
        finish_tx,
        wakers,
        stopping: AtomicBool::new(false),
        finished: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    tracing::info!(worker = %inner.cfg.worker_id, pools = inner.cfg.pools.len(), "job runtime starting");

    seed_periodic(&inner, &periodic).await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut background = tokio::task::JoinSet::new();
    background.spawn(listen(inner.clone(), stop_rx.clone()));
    background.spawn(heartbeat(inner.clone(), stop_rx.clone()));
    background.spawn(reaper(inner.clone(), stop_rx.clone()));
    background.spawn(depth_metrics(inner.clone(), stop_rx.clone()));
    background.spawn(reporter(inner.clone(), stop_rx.clone()));
    let finalizer = tokio::spawn(finalizer(inner.clone(), finish_rx));

    let mut claimers = tokio::task::JoinSet::new();
    for (i, pool) in inner.cfg.pools.iter().enumerate() {
        claimers.spawn(claim_loop(
            inner.clone(),
            pool.clone(),
            inner.wakers[i].clone(),
            stop_rx.clone(),
        ));
    }

    shutdown.await;
    tracing::info!("stopping: no new claims");
    inner.stopping.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    while claimers.join_next().await.is_some() {}

    let deadline = Instant::now() + inner.cfg.shutdown_grace;
    while inner.running() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past the grace period: each run stops at its next moment outside a transaction and
    // hands its claim back itself (`Finish::Released`). Transactions take milliseconds;
    // the bound only keeps the exit inside the service manager's stop timeout.
    for f in inner.lock_inflight().values() {
        if let Some(run) = &f.run {
            run.stop(Stop::Shutdown);
        }
    }
    let deadline = Instant::now() + TRANSACTIONS_AT_EXIT;
    while inner.running() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unfinished: Vec<(Uuid, Uuid)> = {
        let mut map = inner.lock_inflight();
        let claims: Vec<(Uuid, Uuid)> = map
            .iter()
            .filter(|(_, f)| f.run.is_some())
            .map(|(t, f)| (f.id, *t))
            .collect();
        for (_, t) in &claims {
            if let Some(f) = map.remove(t) {
                if let Some(run) = f.run {
                    tracing::error!(job_id = %f.id, "run still inside a transaction at exit; aborted");
                    run.abort.abort();
                }
            }
        }
        claims
    };
    if !unfinished.is_empty() {
        release_with_retries(&inner, &unfinished).await;
    }
    background.abort_all();
    let _ = inner.finish_tx.send(Finish::Shutdown);
    let _ = finalizer.await;
    report_final(&inner).await;
    tracing::info!("job runtime stopped");
    Ok(())
}

pub(super) async fn release_with_retries(inner: &Inner, tokens: &[(Uuid, Uuid)]) {
    for attempt in 0..10u32 {
        match inner.ctx.db.acquire().await {
            Ok(mut conn) => match jobs::release(&mut conn, tokens, inner.ctx.clock.now()).await {
                Ok(n) => {
                    tracing::info!(released = n, "handed unfinished tasks back to the queue");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, attempt, "release failed"),
            },
            Err(e) => tracing::warn!(error = %e, attempt, "release: no connection"),
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
    }
    tracing::error!(
        count = tokens.len(),
        "could not hand tasks back; their leases will expire and they will run again"
    );
}

pub(super) async fn seed_periodic(inner: &Inner, periodic: &[Job]) {
    for job in periodic {
        let name = job.name;
        if job.uniq_hash.is_none() || job.cron.is_none() {
            tracing::error!(task = %name, "periodic tasks must be unique and have a cron pattern; not seeded");
            continue;
        }
        // Retried below by the next start or by any other worker seeding the same task.
        let result = async {
            let now = inner.ctx.clock.now();
            let at = job.first_run(now)?;
            let mut conn = inner.ctx.db.acquire().await?;
            jobs::insert(&mut conn, job, at, now).await
        }
        .await;
        match result {
            Ok(e) => tracing::debug!(task = %name, ?e, "periodic task seeded"),
            Err(e) => tracing::warn!(task = %name, error = %e, "could not seed periodic task"),
        }
    }
}

pub(super) fn task_name(metadata: &serde_json::Value) -> String {
    metadata
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("unknown")
        .to_owned()
}

pub(super) async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_route_named_types_and_the_default_takes_the_rest() {
        let mut s = WorkerSettings::default();
        s.pools.insert(
            "pg".into(),
            billing::settings::WorkerPoolSettings {
                task_types: vec!["pg".into()],
                concurrency: 7,
            },
        );
        let cfg = RuntimeConfig::from_settings(&s);
        assert_eq!(cfg.pools.len(), 2);
        assert_eq!(cfg.pools[0].filter.include, Some(vec!["pg".to_owned()]));
        assert_eq!(cfg.pools[0].concurrency, 7);
        assert_eq!(cfg.pools[1].filter.include, None);
        assert_eq!(cfg.pools[1].filter.exclude, vec!["pg".to_owned()]);
        assert_eq!(cfg.heartbeat, cfg.lease / 3);
    }
}
