//! Wake-ups after commit (`billing::wakeups`): an enqueue on a `Tx` is announced by the
//! process's sender once the transaction commits, never from inside it, never for a
//! rollback, and a burst of commits is announced with far fewer NOTIFYs than jobs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use billing::jobs::NOTIFY_CHANNEL;
use sqlx::postgres::{PgListener, PgNotification};
use tokio::sync::oneshot;
use worker::tasks::Registry;

use crate::helpers::jobs::{count, probe, wait_until};
use crate::helpers::{test_db, test_settings};

fn ctx(url: &str, tune: impl FnOnce(&mut billing::Settings)) -> billing::Ctx {
    let mut settings = test_settings(url);
    tune(&mut settings);
    settings.validate().unwrap();
    billing::Ctx::new(settings, Arc::new(billing::clock::SystemClock)).unwrap()
}

async fn listener(url: &str, channel: &str) -> PgListener {
    let mut l = PgListener::connect(url).await.unwrap();
    l.listen(channel).await.unwrap();
    l
}

/// The next notification within `within`, if any.
async fn next(l: &mut PgListener, within: Duration) -> Option<PgNotification> {
    tokio::time::timeout(within, l.recv())
        .await
        .ok()
        .map(|n| n.unwrap())
}

/// Enqueues a probe due now on a `Tx` and commits; returns the writer's backend pid.
async fn enqueue_committed(ctx: &billing::Ctx, key: &str) -> i32 {
    let mut tx = ctx.db.begin().await.unwrap();
    let pid = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    billing::jobs::enqueue(&mut tx, &probe(key.into(), 0), chrono::Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    pid
}

#[tokio::test]
async fn jobs_a_rolled_back_enqueue_leaves_no_job_and_sends_no_wake_up() {
    let (url, db) = test_db().await;
    let ctx = ctx(&url, |_| {});
    let mut l = listener(&url, NOTIFY_CHANNEL).await;
    let now = chrono::Utc::now();

    let mut tx = ctx.db.begin().await.unwrap();
    billing::jobs::enqueue(&mut tx, &probe("rolled-back".into(), 0), now)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    // Dropped uncommitted: rolled back as well.
    let mut tx = ctx.db.begin().await.unwrap();
    billing::jobs::enqueue(&mut tx, &probe("dropped".into(), 0), now)
        .await
        .unwrap();
    drop(tx);

    assert!(
        next(&mut l, Duration::from_millis(500)).await.is_none(),
        "a rolled-back enqueue was announced"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM fang_tasks").await, 0);

    // The listener does hear a committed one: the silence above is not deafness.
    enqueue_committed(&ctx, "committed").await;
    let n = next(&mut l, Duration::from_secs(2))
        .await
        .expect("a committed enqueue is announced");
    assert_eq!(n.payload(), "common");
    assert!(next(&mut l, Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn jobs_the_wake_up_is_sent_after_the_commit_by_another_session() {
    let (url, db) = test_db().await;
    let ctx = ctx(&url, |_| {});
    let mut l = listener(&url, NOTIFY_CHANNEL).await;

    let writer = enqueue_committed(&ctx, "after-commit").await;
    let n = next(&mut l, Duration::from_secs(2))
        .await
        .expect("a committed enqueue is announced");
    // Inside the transaction, the NOTIFY would come from the writer's own session (and
    // take Postgres' notify lock through the writer's commit).
    assert_ne!(
        n.process_id() as i32,
        writer,
        "the wake-up was sent from inside the enqueueing transaction"
    );
    let sender: String =
        sqlx::query_scalar("SELECT application_name FROM pg_stat_activity WHERE pid = $1")
            .bind(n.process_id() as i32)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(sender, "pillivery-wakeups");

    // A job due later wakes nobody (the workers' timed sleep finds it).
    let mut tx = ctx.db.begin().await.unwrap();
    let now = chrono::Utc::now();
    billing::jobs::enqueue_at(
        &mut tx,
        &probe("later".into(), 0),
        now + chrono::Duration::hours(1),
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(next(&mut l, Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn jobs_a_burst_of_commits_sends_far_fewer_notifications_than_jobs() {
    let (url, db) = test_db().await;
    let ctx = ctx(&url, |s| s.database.max_connections = 20);
    let mut l = listener(&url, NOTIFY_CHANNEL).await;
    const JOBS: usize = 400;
    const WRITERS: usize = 20;

    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let ctx = ctx.clone();
        writers.spawn(async move {
            for i in 0..JOBS / WRITERS {
                let mut tx = ctx.db.begin().await.unwrap();
                let p = probe(format!("burst-{w}-{i}"), 0);
                billing::jobs::enqueue(&mut tx, &p, chrono::Utc::now())
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        });
    }
    while let Some(r) = writers.join_next().await {
        r.unwrap();
    }
    let mut heard = 0;
    while next(&mut l, Duration::from_millis(500)).await.is_some() {
        heard += 1;
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM fang_tasks").await,
        JOBS as i64
    );
    eprintln!("{heard} notifications for {JOBS} jobs");
    assert!(heard >= 1, "the burst was never announced");
    assert!(
        heard * 2 <= JOBS,
        "{heard} notifications for {JOBS} jobs: commits were not coalesced"
    );
}

#[tokio::test]
async fn jobs_an_enqueue_wakes_an_idle_worker_well_before_the_polling_interval() {
    let (url, db) = test_db().await;
    let ctx = ctx(&url, |s| {
        s.worker.poll_interval_ms = Duration::from_millis(1_000);
    });
    let cfg = worker::runtime::RuntimeConfig::from_settings(&ctx.settings.worker);
    let (stop, stopped) = oneshot::channel::<()>();
    let runtime = tokio::spawn(worker::runtime::run(
        ctx.clone(),
        cfg,
        Registry::standard(),
        Vec::new(),
        async {
            let _ = stopped.await;
        },
    ));
    // Idle: the LISTEN is up and every pool sleeps its polling interval.
    {
        let db = db.clone();
        wait_until("the worker to LISTEN", Duration::from_secs(5), || {
            let db = db.clone();
            async move {
                count(
                    &db,
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND query ILIKE 'LISTEN%pillivery_jobs%'",
                )
                .await
                    == 1
            }
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut took = Vec::new();
    for i in 0..5 {
        let key = format!("wake-{i}");
        enqueue_committed(&ctx, &key).await;
        let committed = Instant::now();
        let sql = format!("SELECT count(*) FROM job_probe_runs WHERE probe_key = '{key}'");
        let db = db.clone();
        wait_until("the probe to run", Duration::from_secs(5), || {
            let (db, sql) = (db.clone(), sql.clone());
            async move { count(&db, &sql).await == 1 }
        })
        .await;
        took.push(committed.elapsed());
        // Back to idle before the next one.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = stop.send(());
    runtime.await.unwrap().unwrap();
    took.sort();
    eprintln!("enqueue to run: {took:?}");
    // The check polls every 25 ms; a worker left to its 1 s poll would take ~0.5 s.
    assert!(
        took[2] < Duration::from_millis(200),
        "enqueue to run: {took:?} (median over the polling interval's reach)"
    );
}

/// A context made on one runtime and used on another (the first one gone) still sends:
/// its sender task is started again where it is needed.
#[test]
fn jobs_wake_ups_outlive_the_runtime_that_started_them() {
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let first = rt();
    let (url, ctx) = first.block_on(async {
        let (url, _db) = test_db().await;
        let ctx = ctx(&url, |_| {});
        enqueue_committed(&ctx, "first-runtime").await;
        (url, ctx)
    });
    drop(first);
    rt().block_on(async {
        let mut l = listener(&url, NOTIFY_CHANNEL).await;
        enqueue_committed(&ctx, "second-runtime").await;
        let n = next(&mut l, Duration::from_secs(2)).await;
        assert!(n.is_some(), "no wake-up after the first runtime ended");
    });
}
