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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use billing::jobs::{self, ClaimOrder, Claimed, Job, Outcome, TypeFilter};
use billing::settings::WorkerSettings;
use chrono::Utc;
use rand::Rng;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use uuid::Uuid;

use crate::tasks::{Registry, Runnable};

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
    pub max_backoff: Duration,
    pub keep_finished: bool,
    pub shutdown_grace: Duration,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into())
}

impl RuntimeConfig {
    pub fn from_settings(s: &WorkerSettings) -> Self {
        let ms = Duration::from_millis;
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
            poll_interval: ms(s.poll_interval_ms),
            lease: ms(s.lease_ms),
            heartbeat: ms(s.lease_ms / 3),
            reap_interval: ms(s.reap_interval_ms),
            task_timeout: ms(s.task_timeout_ms),
            task_timeouts: s
                .task_timeouts_ms
                .iter()
                .map(|(k, v)| (k.clone(), ms(*v)))
                .collect(),
            max_backoff: ms(s.max_backoff_ms),
            keep_finished: s.keep_finished,
            shutdown_grace: ms(s.shutdown_grace_ms),
        }
    }
}

/// How a run ended, to be written back by the finalizer.
enum Finish {
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
const TRANSACTIONS_AT_EXIT: Duration = Duration::from_secs(5);

/// Why a run is asked to stop before its end. Honoured between the task's transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    TimedOut,
    LeaseLost,
    Shutdown,
}

/// Aborts the task's own spawned run when its runner is aborted: only the last resort of
/// a shutdown whose runs did not reach a safe point in time (the process is exiting, and
/// Postgres rolls back what the closed sessions left open).
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The runner's handles on a run in progress.
#[derive(Clone)]
struct RunControl {
    stop: watch::Sender<Option<Stop>>,
    abort: AbortHandle,
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

struct InFlight {
    id: Uuid,
    /// `None` once the run has ended and only its finalization is pending.
    run: Option<RunControl>,
    /// The pool slot: held until the outcome is written, so a slow database slows
    /// claiming instead of piling up unfinalized claims.
    _slot: OwnedSemaphorePermit,
}

struct Inner {
    ctx: billing::Ctx,
    cfg: RuntimeConfig,
    registry: Registry,
    /// Claims this worker holds, by lease token: renewed by the heartbeat until finalized.
    inflight: Mutex<HashMap<Uuid, InFlight>>,
    finish_tx: mpsc::UnboundedSender<Finish>,
    wakers: Vec<Arc<Notify>>,
    stopping: AtomicBool,
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
        registry,
        ctx,
        cfg,
        inflight: Mutex::new(HashMap::new()),
        finish_tx,
        wakers,
        stopping: AtomicBool::new(false),
    });
    tracing::info!(worker = %inner.cfg.worker_id, pools = inner.cfg.pools.len(), "job runtime starting");

    seed_periodic(&inner, &periodic).await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut background = tokio::task::JoinSet::new();
    background.spawn(listen(inner.clone(), stop_rx.clone()));
    background.spawn(heartbeat(inner.clone(), stop_rx.clone()));
    background.spawn(reaper(inner.clone(), stop_rx.clone()));
    background.spawn(depth_metrics(inner.clone(), stop_rx.clone()));
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
    tracing::info!("job runtime stopped");
    Ok(())
}

async fn release_with_retries(inner: &Inner, tokens: &[(Uuid, Uuid)]) {
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

async fn seed_periodic(inner: &Inner, periodic: &[Job]) {
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

fn task_name(metadata: &serde_json::Value) -> String {
    metadata
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("unknown")
        .to_owned()
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

async fn claim_loop(
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
async fn idle_sleep(inner: &Inner, pool: &PoolConfig, now: chrono::DateTime<Utc>) -> Duration {
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

fn start(inner: &Arc<Inner>, task: Claimed, permit: OwnedSemaphorePermit) {
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
        let finish = execute(&runner, task, stop_rx).await;
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

fn finish_run(inner: &Inner, token: Uuid, finish: Finish) {
    if let Some(f) = inner.lock_inflight().get_mut(&token) {
        f.run = None;
    }
    if inner.finish_tx.send(finish).is_err() {
        tracing::error!(%token, "finalizer gone; the task's lease will expire and it will run again");
    }
}

async fn execute(
    inner: &Arc<Inner>,
    claimed: Claimed,
    mut stop: watch::Receiver<Option<Stop>>,
) -> Finish {
    let name = task_name(&claimed.metadata);
    let delay = (inner.ctx.clock.now() - claimed.scheduled_at)
        .to_std()
        .unwrap_or_default();
    metrics::histogram!("job_start_delay_seconds", "task" => name.clone())
        .record(delay.as_secs_f64());
    let span = tracing::info_span!("job", job_id = %claimed.id, task = %name, attempt = claimed.retries + 1,
        request_id = claimed.request_id.as_deref().unwrap_or_default());

    let task: Arc<dyn Runnable> = match inner.registry.decode(&claimed.metadata) {
        Ok(t) => Arc::from(t),
        Err(e) => {
            metrics::counter!("jobs_finished_total", "task" => name.clone(), "outcome" => "undecodable")
                .increment(1);
            let error = e.to_string();
            span.in_scope(|| tracing::error!(%error, "task row failed"));
            return Finish::Failed {
                id: claimed.id,
                token: claimed.lease_token,
                error,
            };
        }
    };

    let timeout = inner
        .cfg
        .task_timeouts
        .get(&name)
        .copied()
        .unwrap_or(inner.cfg.task_timeout);
    // The task's transactions are counted, so a stop waits for the open one to end.
    let open = billing::db::OpenTransactions::default();
    let ctx = inner.ctx.counting_transactions(&open);
    let began = Instant::now();
    // Its own task, so a panic is caught as an error rather than killing the runner.
    let running = task.clone();
    let request_id = claimed.request_id.clone();
    let run =
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let work = billing::telemetry::with_request_id(request_id, async move {
                    running.run(&ctx).await
                });
                let stop = async {
                    tokio::select! {
                        () = tokio::time::sleep(timeout) => Stop::TimedOut,
                        s = stop.wait_for(Option::is_some) => match s {
                            Ok(s) => s.unwrap_or(Stop::Shutdown),
                            // The runner is gone: the process is going down.
                            Err(_) => Stop::Shutdown,
                        },
                    }
                };
                billing::db::stop_between_transactions(work, &open, stop).await
            },
            span.clone(),
        ));
    let _guard = AbortOnDrop(run.abort_handle());
    let outcome = match run.await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(Stop::TimedOut)) => Outcome::retry(format!(
            "timed_out: timed out after {} ms",
            timeout.as_millis()
        )),
        Ok(Err(Stop::LeaseLost)) => {
            record_outcome(&name, "abandoned");
            return Finish::Abandoned {
                token: claimed.lease_token,
            };
        }
        Ok(Err(Stop::Shutdown)) => {
            record_outcome(&name, "released");
            return Finish::Released {
                id: claimed.id,
                token: claimed.lease_token,
            };
        }
        Err(join) if join.is_panic() => Outcome::retry("panicked: task panicked"),
        Err(_) => Outcome::retry("cancelled: task was cancelled"),
    };
    let elapsed = began.elapsed();
    metrics::histogram!("job_run_seconds", "task" => name.clone()).record(elapsed.as_secs_f64());
    let now = inner.ctx.clock.now();

    // Periodic tasks chain their next occurrence whatever this one's outcome.
    if let Some(pattern) = task.cron() {
        if let Ok(next) = jobs::next_cron(pattern, now) {
            let error = match &outcome {
                Outcome::Done => None,
                Outcome::Retry { reason, .. }
                | Outcome::Defer { reason, .. }
                | Outcome::Fail { reason } => Some(reason.clone()),
            };
            record_outcome(
                &name,
                if error.is_some() {
                    "failed"
                } else {
                    "succeeded"
                },
            );
            return Finish::Periodic {
                id: claimed.id,
                token: claimed.lease_token,
                error,
                job: Box::new(Job::again(&claimed, task.unique(), Some(pattern))),
                next,
            };
        }
    }
    decide(inner, &claimed, &name, outcome, task.as_ref(), now)
}

fn record_outcome(name: &str, outcome: &'static str) {
    metrics::counter!("jobs_finished_total", "task" => name.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// What the runtime does with a run's outcome: the one place a job's fate is decided.
fn decide(
    inner: &Inner,
    claimed: &Claimed,
    name: &str,
    outcome: Outcome,
    task: &dyn Runnable,
    now: chrono::DateTime<Utc>,
) -> Finish {
    let (id, token) = (claimed.id, claimed.lease_token);
    match outcome {
        Outcome::Done => {
            record_outcome(name, "succeeded");
            Finish::Succeeded { id, token }
        }
        Outcome::Defer { after, reason } => {
            record_outcome(name, "deferred");
            tracing::debug!(job_id = %id, task = %name, %reason,
                retry_in_ms = after.as_millis() as u64, "task deferred");
            Finish::Deferred {
                id,
                token,
                at: now + chrono::Duration::from_std(after).unwrap_or_default(),
                reason,
            }
        }
        Outcome::Retry { after, reason } if claimed.retries < claimed.max_retries => {
            let delay = after.unwrap_or_else(|| {
                jittered(
                    task.backoff(claimed.retries.max(0) as u32),
                    inner.cfg.max_backoff,
                )
            });
            record_outcome(name, "retried");
            tracing::warn!(job_id = %id, task = %name, error = %reason, attempt = claimed.retries + 1,
                retry_in_ms = delay.as_millis() as u64, "task failed; will retry");
            Finish::Retry {
                id,
                token,
                at: now + chrono::Duration::from_std(delay).unwrap_or_default(),
                error: reason,
            }
        }
        Outcome::Retry { reason, .. } => {
            record_outcome(name, "failed");
            tracing::error!(job_id = %id, task = %name, error = %reason, attempts = claimed.retries + 1,
                "task failed for good: retries used up");
            Finish::Failed {
                id,
                token,
                error: reason,
            }
        }
        Outcome::Fail { reason } => {
            record_outcome(name, "rejected");
            tracing::error!(job_id = %id, task = %name, error = %reason, attempt = claimed.retries + 1,
                "task failed permanently; not retried");
            Finish::Failed {
                id,
                token,
                error: format!("permanent: {reason}"),
            }
        }
    }
}

/// Between half and all of the task's backoff (capped), so retries of a burst spread out.
pub fn jittered(base: Duration, cap: Duration) -> Duration {
    let base = base.min(cap);
    let half = base / 2;
    let spread = base.saturating_sub(half).as_millis() as u64;
    half + Duration::from_millis(rand::rng().random_range(0..=spread))
}

/// Writes outcomes back: successes in batches, the rest one by one; each retried until
/// the database takes it, so an outage delays finalization instead of losing it.
async fn finalizer(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Finish>) {
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
async fn flush(inner: &Inner, buf: &mut Vec<Finish>) -> billing::Result<()> {
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
            } => jobs::retry_at(&mut conn, *id, *token, *at, error, now).await?,
            Finish::Failed { id, token, error } => {
                jobs::fail(&mut conn, *id, *token, error, now).await?
            }
            Finish::Deferred {
                id,
                token,
                at,
                reason,
            } => jobs::defer(&mut conn, *id, *token, *at, reason, now).await?,
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
async fn finish_periodic(
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

fn forget(inner: &Inner, tokens: impl Iterator<Item = Uuid>) {
    let mut map = inner.lock_inflight();
    for t in tokens {
        map.remove(&t);
    }
}

async fn listen(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect_with(&inner.ctx.db).await?;
            l.listen(jobs::NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        }
        .await;
        let mut listener = match listener {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "LISTEN unavailable; polling meanwhile");
                if sleep_or_stop(Duration::from_secs(1), &mut stop).await {
                    return;
                }
                continue;
            }
        };
        loop {
            tokio::select! {
                n = listener.try_recv() => match n {
                    Ok(Some(_)) => {
                        for w in &inner.wakers {
                            w.notify_one();
                        }
                    }
                    // The connection dropped: wake everyone (something may have been
                    // missed) and reconnect.
                    Ok(None) | Err(_) => {
                        for w in &inner.wakers {
                            w.notify_one();
                        }
                        break;
                    }
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        if sleep_or_stop(Duration::from_millis(200), &mut stop).await {
            return;
        }
    }
}

async fn heartbeat(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        if sleep_or_stop(inner.cfg.heartbeat, &mut stop).await {
            return;
        }
        let claims: Vec<(Uuid, Uuid)> = inner
            .lock_inflight()
            .iter()
            .map(|(t, f)| (f.id, *t))
            .collect();
        if claims.is_empty() {
            continue;
        }
        let now = inner.ctx.clock.now();
        let result = async {
            let mut conn = inner.ctx.db.acquire().await?;
            jobs::extend_leases(&mut conn, &claims, now, inner.cfg.lease).await
        }
        .await;
        match result {
            Ok(lost) if !lost.is_empty() => {
                // Another worker may hold these now: stop running them here.
                let mut map = inner.lock_inflight();
                for (_, t) in &lost {
                    let running = map.get(t).and_then(|f| f.run.clone());
                    if let Some(run) = running {
                        run.stop(Stop::LeaseLost);
                        map.remove(t);
                        metrics::counter!("jobs_leases_lost_total").increment(1);
                        tracing::warn!(token = %t, "lease lost while running; task abandoned here");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                metrics::counter!("worker_db_errors_total", "op" => "heartbeat").increment(1);
                tracing::warn!(error = %e, "lease renewal failed");
            }
        }
    }
}

async fn reaper(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        if sleep_or_stop(inner.cfg.reap_interval, &mut stop).await {
            return;
        }
        let now = inner.ctx.clock.now();
        let result = async {
            let mut conn = inner.ctx.db.acquire().await?;
            jobs::reap_expired(&mut conn, now).await
        }
        .await;
        match result {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("jobs_leases_expired_total").increment(n);
                tracing::warn!(
                    count = n,
                    "re-queued tasks whose worker stopped renewing its lease"
                );
                for w in &inner.wakers {
                    w.notify_one();
                }
            }
            Err(e) => tracing::debug!(error = %e, "reaping failed"),
        }
    }
}

async fn depth_metrics(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut seen: Vec<(String, String)> = Vec::new();
    loop {
        if let Ok(rows) = jobs::stats(&inner.ctx).await {
            // Zero what disappeared, so a drained queue reads 0 rather than its last value.
            for (t, s) in &seen {
                if !rows.iter().any(|r| &r.task_type == t && &r.state == s) {
                    metrics::gauge!("job_queue_depth", "task_type" => t.clone(), "state" => s.clone()).set(0.0);
                }
            }
            // Per task type, the longest wait over its waiting states; 0 for a type that
            // drained (it was seen last time) or has nothing due.
            let mut lag: BTreeMap<String, f64> =
                seen.iter().map(|(t, _)| (t.clone(), 0.0)).collect();
            seen = rows
                .iter()
                .map(|r| (r.task_type.clone(), r.state.clone()))
                .collect();
            for r in rows {
                let longest = lag.entry(r.task_type.clone()).or_default();
                *longest = longest.max(r.lag_seconds);
                metrics::gauge!("job_queue_depth", "task_type" => r.task_type, "state" => r.state)
                    .set(r.count as f64);
            }
            for (t, secs) in lag {
                metrics::gauge!("job_queue_lag_seconds", "task_type" => t).set(secs);
            }
        }
        metrics::gauge!("jobs_in_flight").set(inner.running() as f64);
        if sleep_or_stop(Duration::from_secs(5), &mut stop).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_full_backoff_and_under_the_cap() {
        let cases = [
            (
                Duration::from_secs(8),
                Duration::from_secs(3600),
                4_000,
                8_000,
            ),
            (
                Duration::from_secs(1 << 20),
                Duration::from_secs(60),
                30_000,
                60_000,
            ),
            (Duration::from_secs(0), Duration::from_secs(60), 0, 0),
        ];
        for (base, cap, lo, hi) in cases {
            for _ in 0..200 {
                let d = jittered(base, cap).as_millis() as u64;
                assert!((lo..=hi).contains(&d), "{base:?} cap {cap:?} → {d}");
            }
        }
    }

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
