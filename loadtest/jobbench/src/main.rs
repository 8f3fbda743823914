//! `pillivery-jobbench`: measures the job runtime against stock fang 0.11 on the same
//! table. Each subcommand prints one `RESULT name=value …` line last (DESIGN §11).
//! Run through `loadtest/bench-jobs.sh`, which prepares a database and adds pgbench.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use billing::tasks::{Noop, Probe};
use clap::{Parser, Subcommand};
use fang::typetag;
use sqlx::PgPool;

/// The `diag.noop` rows as stock fang runs them: fang's own task model (typetag-decoded
/// `AsyncRunnable`), so the comparison is the same rows on the same table.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct FangNoop {
    #[serde(default)]
    n: u64,
}

#[typetag::serde(name = "diag.noop")]
#[async_trait::async_trait]
impl fang::AsyncRunnable for FangNoop {
    async fn run(&self, _queue: &dyn fang::AsyncQueueable) -> Result<(), fang::FangError> {
        Ok(())
    }
}

#[derive(Parser)]
struct Cli {
    /// A migrated database that holds nothing else (the benchmark empties fang_tasks).
    #[arg(long, env = "PILLIVERY__DATABASE__URL")]
    database_url: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// No-op jobs drained by this runtime (one process).
    Ours {
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Tasks scheduled a day ahead, sitting in the queue while the jobs drain.
        #[arg(long, default_value_t = 0)]
        backlog: usize,
    },
    /// No-op jobs drained by stock fang: `AsyncQueue` + `AsyncWorkerPool` with 1 worker.
    Fang {
        #[arg(long, default_value_t = 5_000)]
        jobs: usize,
    },
    /// Enqueue-to-start latency with an idle worker (one job at a time).
    Latency {
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&cli.database_url)
        .await
        .context("connect")?;
    sqlx::query("TRUNCATE fang_tasks, job_probe_runs")
        .execute(&pool)
        .await?;
    match cli.command {
        Cmd::Ours {
            jobs,
            concurrency,
            batch,
            backlog,
        } => ours(&cli.database_url, &pool, jobs, concurrency, batch, backlog).await,
        Cmd::Fang { jobs } => stock_fang(&cli.database_url, &pool, jobs).await,
        Cmd::Latency { samples } => latency(&cli.database_url, &pool, samples).await,
    }
}

async fn fill(pool: &PgPool, n: usize) -> anyhow::Result<()> {
    let tasks: Vec<Noop> = (0..n as u64).map(|n| Noop { n }).collect();
    let mut conn = pool.acquire().await?;
    for chunk in tasks.chunks(5_000) {
        billing::jobs::enqueue_many(&mut conn, chunk, chrono::Utc::now()).await?;
    }
    Ok(())
}

/// Whether any job that is due (not the far-future backlog) is still in the table.
async fn any_left(pool: &PgPool) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM fang_tasks WHERE scheduled_at <= now() + interval '1 hour')",
    )
    .fetch_one(pool)
    .await?)
}

async fn wait_empty(pool: &PgPool, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if !any_left(pool).await? {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < limit, "queue not drained in {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ctx_for(url: &str, tune: impl FnOnce(&mut billing::Settings)) -> anyhow::Result<billing::Ctx> {
    let mut settings = billing::Settings::default();
    settings.database.url = url.to_owned().into();
    settings.database.max_connections = 8;
    tune(&mut settings);
    settings.validate()?;
    Ok(billing::Ctx::new(
        settings,
        Arc::new(billing::clock::SystemClock),
    )?)
}

/// Our runtime running in this process until stopped.
struct Runtime {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Runtime {
    fn start(ctx: billing::Ctx) -> Self {
        let cfg = worker::runtime::RuntimeConfig::from_settings(&ctx.settings.worker);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let registry = worker::tasks::Registry::standard();
        let handle = tokio::spawn(worker::runtime::run(
            ctx,
            cfg,
            registry,
            Vec::new(),
            async {
                let _ = stopped.await;
            },
        ));
        Self { stop, handle }
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.handle.await?
    }
}

async fn ours(
    url: &str,
    pool: &PgPool,
    jobs: usize,
    concurrency: usize,
    batch: usize,
    backlog: usize,
) -> anyhow::Result<()> {
    if backlog > 0 {
        let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
        sqlx::query(
            "INSERT INTO fang_tasks (metadata, scheduled_at)
             SELECT jsonb_build_object('type', 'diag.noop', 'n', g), $2
             FROM generate_series(1, $1) g",
        )
        .bind(backlog as i64)
        .bind(tomorrow)
        .execute(pool)
        .await?;
    }
    fill(pool, jobs).await?;
    sqlx::query("ANALYZE fang_tasks").execute(pool).await?;
    let runtime = Runtime::start(ctx_for(url, |s| {
        s.worker.concurrency = concurrency;
        s.worker.claim_batch = batch;
    })?);
    let took = wait_empty(pool, Duration::from_secs(600)).await?;
    runtime.stop().await?;
    let rate = jobs as f64 / took.as_secs_f64();
    println!(
        "RESULT jobs={jobs} backlog={backlog} concurrency={concurrency} batch={batch} seconds={:.3} jobs_per_sec={rate:.0}",
        took.as_secs_f64()
    );
    Ok(())
}

async fn stock_fang(url: &str, pool: &PgPool, jobs: usize) -> anyhow::Result<()> {
    fill(pool, jobs).await?;
    sqlx::query("ANALYZE fang_tasks").execute(pool).await?;
    let mut queue = fang::asynk::async_queue::AsyncQueue::builder()
        .uri(url.to_owned())
        .max_pool_size(4u32)
        .build();
    queue.connect().await?;
    let mut workers: fang::asynk::async_worker_pool::AsyncWorkerPool<
        fang::asynk::async_queue::AsyncQueue,
    > = fang::asynk::async_worker_pool::AsyncWorkerPool::builder()
        .number_of_workers(1u32)
        .queue(queue)
        .build();
    let started = Instant::now();
    workers.start().await;
    let took = wait_empty(pool, Duration::from_secs(600)).await?;
    let _ = started;
    let rate = jobs as f64 / took.as_secs_f64();
    println!(
        "RESULT fang_jobs={jobs} fang_workers=1 seconds={:.3} fang_jobs_per_sec={rate:.0}",
        took.as_secs_f64()
    );
    Ok(())
}

async fn latency(url: &str, pool: &PgPool, samples: usize) -> anyhow::Result<()> {
    let runtime = Runtime::start(ctx_for(url, |_| {})?);
    // Let the runtime settle into its idle wait (LISTEN connected).
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Enqueued as the API does: on a `Tx`, whose commit hands the wake-up to this
    // process's sender (billing::wakeups).
    let db = billing::db::Db::new(pool.clone());
    for i in 0..samples {
        // The key carries the commit time; the run records its own start (ran_at).
        let mut tx = db.begin().await?;
        let sent = chrono::Utc::now().timestamp_micros();
        let probe = Probe::new(format!("lat-{i}-{sent}"));
        billing::jobs::enqueue(&mut tx, &probe, chrono::Utc::now()).await?;
        tx.commit().await?;
        // Idle between samples: each job finds the worker waiting.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    wait_empty(pool, Duration::from_secs(60)).await?;
    runtime.stop().await?;
    let lat: Vec<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM ran_at - to_timestamp(split_part(probe_key, '-', 3)::float8 / 1e6)) * 1000)::float8
         FROM job_probe_runs WHERE probe_key LIKE 'lat-%' ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    anyhow::ensure!(
        lat.len() == samples,
        "{} of {samples} samples ran",
        lat.len()
    );
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "RESULT samples={samples} latency_ms_p50={:.1} latency_ms_p90={:.1} latency_ms_p99={:.1} latency_ms_max={:.1}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat[lat.len() - 1]
    );
    Ok(())
}
