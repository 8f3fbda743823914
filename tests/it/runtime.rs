//! The job runtime in-process, where the test drives the clock: schedules, retries,
//! timeouts and periodic chains.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use billing::clock::{Clock, ManualClock};
use billing::jobs::{Job, Outcome, Task};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::oneshot;
use worker::tasks::{Perform, Registry};

use rand::Rng;

use crate::helpers::jobs::{count, probe, runs, wait_until};
use crate::helpers::{test_db, test_settings};

struct Running {
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.handle.await.unwrap().unwrap();
    }
}

fn start_runtime(
    url: &str,
    clock: Arc<dyn billing::clock::Clock>,
    periodic: Vec<Job>,
    tune: impl FnOnce(&mut billing::Settings),
) -> Running {
    let mut settings = test_settings(url);
    settings.worker.poll_interval_ms = Duration::from_millis(50);
    settings.worker.reap_interval_ms = Duration::from_millis(100);
    tune(&mut settings);
    settings.validate().unwrap();
    let ctx = billing::Ctx::new(settings, clock).unwrap();
    let cfg = worker::runtime::RuntimeConfig::from_settings(&ctx.settings.worker);
    let (tx, rx) = oneshot::channel();
    let registry = Registry::standard().with::<TxProbe>().with::<Tick>();
    let handle = tokio::spawn(worker::runtime::run(ctx, cfg, registry, periodic, async {
        let _ = rx.await;
    }));
    Running {
        stop: Some(tx),
        handle,
    }
}

async fn state_of(db: &PgPool, key: &str) -> Option<(String, i32, Option<String>)> {
    sqlx::query_as(
        "SELECT state::text, retries, error_message FROM fang_tasks WHERE metadata->>'key' = $1",
    )
    .bind(key)
    .fetch_optional(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_scheduled_task_waits_for_the_runtimes_clock() {
    let (url, db) = test_db().await;
    let clock = ManualClock::new(chrono::Utc::now());
    let rt = start_runtime(&url, Arc::new(clock.clone()), Vec::new(), |_| {});
    let mut conn = db.acquire().await.unwrap();
    billing::jobs::enqueue_at(
        &mut conn,
        &probe("later-0".into(), 0),
        clock.now() + chrono::Duration::hours(1),
        clock.now(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(runs(&db, "later").await, (0, 0));
    clock.advance(chrono::Duration::minutes(61));
    wait_until(
        "the task to run once due",
        Duration::from_secs(5),
        || async { runs(&db, "later").await == (1, 1) },
    )
    .await;
    rt.stop().await;
}

#[tokio::test]
async fn failures_retry_with_backoff_until_success_or_the_budget_runs_out() {
    let (url, db) = test_db().await;
    let clock = ManualClock::new(chrono::Utc::now());
    let rt = start_runtime(&url, Arc::new(clock.clone()), Vec::new(), |_| {});
    let mut flaky = probe("flaky-0".into(), 0);
    flaky.fail_runs = 2;
    let mut doomed = probe("doomed-0".into(), 0);
    doomed.fail_runs = 100;
    doomed.max_retries = Some(1);
    let mut conn = db.acquire().await.unwrap();
    billing::jobs::enqueue(&mut conn, &flaky, clock.now())
        .await
        .unwrap();
    billing::jobs::enqueue(&mut conn, &doomed, clock.now())
        .await
        .unwrap();

    wait_until("first failures", Duration::from_secs(5), || async {
        matches!(state_of(&db, "flaky-0").await, Some((s, 1, _)) if s == "retried")
    })
    .await;
    // The retry waits for its backoff (1 s, jittered down to no less than half).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(state_of(&db, "flaky-0").await, Some((s, 1, _)) if s == "retried"));
    for _ in 0..3 {
        clock.advance(chrono::Duration::seconds(2));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_until(
        "the flaky task to succeed",
        Duration::from_secs(5),
        || async { state_of(&db, "flaky-0").await.is_none() },
    )
    .await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM job_probe_runs WHERE probe_key = 'flaky-0:failed'"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM job_probe_runs WHERE probe_key = 'flaky-0'"
        )
        .await,
        1
    );

    let (state, retries, error) = state_of(&db, "doomed-0").await.unwrap();
    assert_eq!((state.as_str(), retries), ("failed", 1));
    assert!(error.unwrap().contains("failing on purpose"));
    rt.stop().await;
}

#[tokio::test]
async fn a_task_over_its_timeout_is_stopped_and_recorded() {
    let (url, db) = test_db().await;
    let rt = start_runtime(
        &url,
        Arc::new(billing::clock::SystemClock),
        Vec::new(),
        |s| {
            s.worker
                .task_timeouts_ms
                .insert("diag.probe".into(), Duration::from_millis(100));
        },
    );
    let mut slow = probe("slow-0".into(), 3_000);
    slow.max_retries = Some(0);
    let mut conn = db.acquire().await.unwrap();
    billing::jobs::enqueue(&mut conn, &slow, chrono::Utc::now())
        .await
        .unwrap();
    wait_until("the timeout to fail it", Duration::from_secs(5), || async {
        matches!(state_of(&db, "slow-0").await, Some((s, _, _)) if s == "failed")
    })
    .await;
    let (_, _, error) = state_of(&db, "slow-0").await.unwrap();
    assert!(error.unwrap().contains("timed out after 100 ms"));
    assert_eq!(runs(&db, "slow").await, (0, 0));
    rt.stop().await;
}

/// A task that writes two rows in one transaction, pausing between them, and pauses
/// before and after it: where its timeout falls decides whether it stops before the
/// transaction or must let it finish first.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TxProbe {
    key: String,
    before_ms: u64,
    inside_ms: u64,
    after_ms: u64,
}

impl Task for TxProbe {
    const NAME: &'static str = "test.tx_probe";

    fn max_retries(&self) -> i32 {
        0
    }
}

#[async_trait]
impl Perform for TxProbe {
    async fn perform(&self, ctx: &billing::Ctx) -> Outcome {
        let run = async {
            tokio::time::sleep(Duration::from_millis(self.before_ms)).await;
            let mut tx = ctx.db.begin().await?;
            for (part, pause) in [("first", self.inside_ms), ("second", 0)] {
                sqlx::query("INSERT INTO job_probe_runs (probe_key, worker) VALUES ($1, 'tx')")
                    .bind(format!("{}:{part}", self.key))
                    .execute(&mut *tx)
                    .await?;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            tx.commit().await?;
            tokio::time::sleep(Duration::from_millis(self.after_ms)).await;
            Ok::<_, sqlx::Error>(())
        };
        match run.await {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::retry(e.to_string()),
        }
    }
}

async fn tx_probe_rows(db: &PgPool, key: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE probe_key = $1 || ':first'),
                count(*) FILTER (WHERE probe_key = $1 || ':second')
         FROM job_probe_runs",
    )
    .bind(key)
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_task_past_its_timeout_lets_its_open_transaction_commit_then_stops() {
    let (url, db) = test_db().await;
    let rt = start_runtime(
        &url,
        Arc::new(billing::clock::SystemClock),
        Vec::new(),
        |s| {
            s.worker
                .task_timeouts_ms
                .insert("test.tx_probe".into(), Duration::from_millis(100));
        },
    );
    let task = TxProbe {
        key: "held-0".into(),
        before_ms: 0,
        inside_ms: 400,
        after_ms: 5_000,
    };
    let started = std::time::Instant::now();
    let mut conn = db.acquire().await.unwrap();
    billing::jobs::enqueue(&mut conn, &task, chrono::Utc::now())
        .await
        .unwrap();
    wait_until("the timeout to fail it", Duration::from_secs(5), || async {
        matches!(state_of(&db, "held-0").await, Some((s, _, _)) if s == "failed")
    })
    .await;
    // Stopped right after its commit, not after the pause that follows it.
    assert!(started.elapsed() < Duration::from_secs(3));
    let (_, _, error) = state_of(&db, "held-0").await.unwrap();
    assert!(error.unwrap().contains("timed out after 100 ms"));
    assert_eq!(
        tx_probe_rows(&db, "held-0").await,
        (1, 1),
        "the transaction open at the deadline committed whole"
    );
    crate::helpers::db::assert_no_session_left_in_transaction(&db).await;
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_at_random_moments_leave_no_session_in_a_transaction_and_lose_no_write() {
    let (url, db) = test_db().await;
    // A small pool, so a connection a cut `BEGIN` poisoned would soon be reused.
    let rt = start_runtime(
        &url,
        Arc::new(billing::clock::SystemClock),
        Vec::new(),
        |s| {
            s.database.max_connections = 4;
            s.worker.concurrency = 16;
            s.worker
                .task_timeouts_ms
                .insert("test.tx_probe".into(), Duration::from_millis(3));
        },
    );
    let tasks: Vec<TxProbe> = {
        let mut rng = rand::rng();
        (0..400)
            .map(|i| TxProbe {
                key: format!("cut-{i}"),
                before_ms: rng.random_range(0..=4),
                inside_ms: rng.random_range(0..=2),
                after_ms: rng.random_range(0..=2),
            })
            .collect()
    };
    let mut conn = db.acquire().await.unwrap();
    billing::jobs::enqueue_many(&mut conn, &tasks, chrono::Utc::now())
        .await
        .unwrap();
    drop(conn);
    wait_until("every task to end", Duration::from_secs(60), || async {
        count(
            &db,
            "SELECT count(*) FROM fang_tasks WHERE metadata->>'type' = 'test.tx_probe'
             AND state NOT IN ('failed', 'finished')",
        )
        .await
            == 0
    })
    .await;
    crate::helpers::db::assert_no_session_left_in_transaction(&db).await;
    let mut timed_out = 0;
    let mut committed = 0;
    for t in &tasks {
        let rows = tx_probe_rows(&db, &t.key).await;
        assert!(
            rows == (0, 0) || rows == (1, 1),
            "{}: a transaction half written: {rows:?}",
            t.key
        );
        match state_of(&db, &t.key).await {
            // Finished means its transaction committed (finished tasks are deleted).
            None => assert_eq!(rows, (1, 1), "{} finished without its rows", t.key),
            Some((s, _, e)) => {
                assert_eq!(s, "failed");
                let e = e.unwrap_or_default();
                assert!(e.contains("timed out"), "{}: {e}", t.key);
                timed_out += 1;
            }
        }
        if rows == (1, 1) {
            committed += 1;
        }
    }
    assert!(timed_out > 50, "only {timed_out} of 400 hit their timeout");
    assert!(committed > 0);

    // Nothing written from now on can vanish into a stale transaction.
    crate::helpers::jobs::enqueue_probes(&db, "after", 100, 0).await;
    wait_until("the probes to run", Duration::from_secs(30), || async {
        runs(&db, "after").await.0 == 100
    })
    .await;
    crate::helpers::db::assert_no_session_left_in_transaction(&db).await;
    rt.stop().await;
}

/// A periodic task for these tests: records a run every second.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    key: String,
}

impl Task for Tick {
    const NAME: &'static str = "test.tick";

    fn unique(&self) -> bool {
        true
    }

    fn cron(&self) -> Option<&'static str> {
        Some("* * * * * *")
    }
}

#[async_trait]
impl Perform for Tick {
    async fn perform(&self, ctx: &billing::Ctx) -> Outcome {
        let p = probe(format!("{}-{}", self.key, uuid::Uuid::new_v4()), 0);
        Outcome::of_unit(billing::probes::run(ctx, &p).await)
    }
}

fn tick() -> Vec<Job> {
    vec![Job::of(&Tick { key: "tick".into() }).unwrap()]
}

#[tokio::test]
async fn a_periodic_task_runs_one_occurrence_at_a_time_across_the_fleet() {
    let (url, db) = test_db().await;
    let a = start_runtime(&url, Arc::new(billing::clock::SystemClock), tick(), |_| {});
    let b = start_runtime(&url, Arc::new(billing::clock::SystemClock), tick(), |_| {});
    let started = std::time::Instant::now();
    let mut most_live = 0;
    while started.elapsed() < Duration::from_millis(4_000) {
        let live = count(
            &db,
            "SELECT count(*) FROM fang_tasks WHERE metadata->>'type' = 'test.tick' AND state IN ('new','retried','in_progress')",
        )
        .await;
        most_live = most_live.max(live);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most_live, 1);
    let (n, _) = runs(&db, "tick").await;
    assert!((2..=6).contains(&n), "{n} runs in 4 s of a 1 s schedule");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_periodic_chain_survives_a_worker_dying_mid_run() {
    let (url, db) = test_db().await;
    // A worker claims the occurrence and dies holding it.
    let mut conn = db.acquire().await.unwrap();
    let now = chrono::Utc::now();
    billing::jobs::enqueue_at(&mut conn, &Tick { key: "tick".into() }, now, now)
        .await
        .unwrap();
    let claimed = billing::jobs::claim(
        &mut conn,
        "dead-worker",
        chrono::Utc::now(),
        Duration::from_millis(500),
        &Default::default(),
        10,
        billing::jobs::ClaimOrder::Priority,
    )
    .await
    .unwrap();
    assert_eq!(claimed.len(), 1);

    let rt = start_runtime(&url, Arc::new(billing::clock::SystemClock), tick(), |_| {});
    wait_until("the chain to resume", Duration::from_secs(10), || async {
        runs(&db, "tick").await.0 >= 2
    })
    .await;
    rt.stop().await;
    // Stopping hands back or finishes everything: nothing is left claimed.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM fang_tasks WHERE state = 'in_progress'"
        )
        .await,
        0
    );
    // The chain continues: the next occurrence is queued.
    assert_eq!(
        count(&db, "SELECT count(*) FROM fang_tasks WHERE metadata->>'type' = 'test.tick' AND state = 'new'").await,
        1
    );
}

#[tokio::test]
async fn a_pool_takes_only_its_task_types_with_its_own_concurrency() {
    let (url, db) = test_db().await;
    let rt = start_runtime(
        &url,
        Arc::new(billing::clock::SystemClock),
        Vec::new(),
        |s| {
            s.worker.pools.insert(
                "solo".into(),
                billing::settings::WorkerPoolSettings {
                    task_types: vec!["solo".into()],
                    concurrency: 1,
                },
            );
        },
    );
    let mut conn = db.acquire().await.unwrap();
    for i in 0..3 {
        let mut p = probe(format!("solo-{i}"), 300);
        p.task_type = Some("solo".into());
        billing::jobs::enqueue(&mut conn, &p, chrono::Utc::now())
            .await
            .unwrap();
    }
    for i in 0..20 {
        billing::jobs::enqueue(
            &mut conn,
            &probe(format!("common-{i}"), 0),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    }
    let mut most_solo = 0;
    let started = std::time::Instant::now();
    while runs(&db, "solo").await.0 < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "solo pool stalled"
        );
        let solo = count(
            &db,
            "SELECT count(*) FROM fang_tasks WHERE state = 'in_progress' AND task_type = 'solo'",
        )
        .await;
        most_solo = most_solo.max(solo);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most_solo, 1, "the solo pool ran more than one at once");
    // The default pool was not held up behind the slow solo tasks.
    let common_done: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT max(ran_at) FROM job_probe_runs WHERE probe_key LIKE 'common-%'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let solo_done: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(ran_at) FROM job_probe_runs WHERE probe_key LIKE 'solo-%'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(common_done < solo_done);
    assert_eq!(runs(&db, "common").await, (20, 20));
    rt.stop().await;
}

#[tokio::test]
async fn a_claim_whose_lease_expired_cannot_be_finished_by_its_old_holder() {
    let (_url, db) = test_db().await;
    let mut conn = db.acquire().await.unwrap();
    billing::jobs::enqueue(&mut conn, &probe("lease-0".into(), 0), chrono::Utc::now())
        .await
        .unwrap();
    let t0 = chrono::Utc::now();
    let lease = Duration::from_secs(1);
    let filter = Default::default();
    let old = billing::jobs::claim(
        &mut conn,
        "old",
        t0,
        lease,
        &filter,
        1,
        billing::jobs::ClaimOrder::Priority,
    )
    .await
    .unwrap()
    .remove(0);
    // The old holder goes quiet; its lease runs out and someone else takes the task.
    let later = t0 + chrono::Duration::seconds(5);
    assert_eq!(
        billing::jobs::reap_expired(&mut conn, later).await.unwrap(),
        1
    );
    let new = billing::jobs::claim(
        &mut conn,
        "new",
        later,
        lease,
        &filter,
        1,
        billing::jobs::ClaimOrder::Priority,
    )
    .await
    .unwrap()
    .remove(0);
    assert_eq!(new.id, old.id);
    assert_eq!(new.retries, 1, "the expiry counted as an attempt");

    let stale = (old.id, old.lease_token);
    assert_eq!(
        billing::jobs::extend_leases(&mut conn, &[stale], later, lease)
            .await
            .unwrap(),
        vec![stale],
        "the old holder learns it lost the lease"
    );
    assert_eq!(
        billing::jobs::complete(&mut conn, &[stale], false, later)
            .await
            .unwrap(),
        0
    );
    assert!(
        !billing::jobs::fail(&mut conn, old.id, old.lease_token, "late", later)
            .await
            .unwrap()
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM fang_tasks WHERE state = 'in_progress'"
        )
        .await,
        1
    );
    assert_eq!(
        billing::jobs::complete(&mut conn, &[(new.id, new.lease_token)], false, later)
            .await
            .unwrap(),
        1
    );
    assert_eq!(count(&db, "SELECT count(*) FROM fang_tasks").await, 0);
}

#[tokio::test]
async fn finished_tasks_are_kept_when_configured() {
    let (url, db) = test_db().await;
    let rt = start_runtime(
        &url,
        Arc::new(billing::clock::SystemClock),
        Vec::new(),
        |s| {
            s.worker.keep_finished = true;
        },
    );
    let mut conn = db.acquire().await.unwrap();
    billing::jobs::enqueue(&mut conn, &probe("kept-0".into(), 0), chrono::Utc::now())
        .await
        .unwrap();
    wait_until("the task to finish", Duration::from_secs(5), || async {
        matches!(state_of(&db, "kept-0").await, Some((s, 0, None)) if s == "finished")
    })
    .await;
    assert_eq!(runs(&db, "kept").await, (1, 1));
    rt.stop().await;
}

/// When the probe `key` ran, by the database's clock (`job_probe_runs.ran_at`).
async fn ran_at(db: &PgPool, key: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("SELECT ran_at FROM job_probe_runs WHERE probe_key = $1")
        .bind(key)
        .fetch_optional(db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_work_overtakes_a_bulk_backlog_which_still_keeps_moving() {
    let (url, db) = test_db().await;
    // 5,000 due bulk jobs (the priority of `subscription.charge`), 20 ms each, 8 at a
    // time: about 12 s of work in front of anything queued behind it by due time.
    let bulk: Vec<billing::tasks::Probe> = (0..5_000)
        .map(|i| billing::tasks::Probe {
            priority: Some(billing::jobs::Priority::Bulk.as_i16()),
            ..probe(format!("bulk-{i}"), 20)
        })
        .collect();
    let mut conn = db.acquire().await.unwrap();
    for chunk in bulk.chunks(1_000) {
        billing::jobs::enqueue_many(&mut conn, chunk, chrono::Utc::now())
            .await
            .unwrap();
    }
    let rt = start_runtime(
        &url,
        Arc::new(billing::clock::SystemClock),
        Vec::new(),
        |s| s.worker.concurrency = 8,
    );
    wait_until(
        "the worker to be busy on the backlog",
        Duration::from_secs(10),
        || async { runs(&db, "bulk").await.0 >= 50 },
    )
    .await;

    // What a buyer or an undecided payment waits on (the priority of `payment.approve`
    // and the reconcile tasks), enqueued behind the whole backlog.
    for i in 0..5 {
        let urgent = billing::tasks::Probe {
            priority: Some(billing::jobs::Priority::Urgent.as_i16()),
            ..probe(format!("urgent-{i}"), 0)
        };
        let queued_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&db)
            .await
            .unwrap();
        billing::jobs::enqueue(&mut conn, &urgent, chrono::Utc::now())
            .await
            .unwrap();
        let key = format!("urgent-{i}");
        wait_until("the urgent job to run", Duration::from_secs(10), || async {
            ran_at(&db, &key).await.is_some()
        })
        .await;
        let waited = ran_at(&db, &key).await.unwrap() - queued_at;
        assert!(
            waited < chrono::Duration::seconds(1),
            "urgent job {i} started {waited} after it was queued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = count(
        &db,
        "SELECT count(*) FROM fang_tasks WHERE metadata->>'key' LIKE 'bulk-%'",
    )
    .await;
    assert!(
        left > 1_000,
        "the backlog was not in the way after all ({left} left)"
    );

    // A stream of urgent work never stops bulk work: every fifth claim is by due time.
    let before = runs(&db, "bulk").await.0;
    let stream: Vec<billing::tasks::Probe> = (0..400)
        .map(|i| billing::tasks::Probe {
            priority: Some(billing::jobs::Priority::Urgent.as_i16()),
            ..probe(format!("stream-{i}"), 20)
        })
        .collect();
    billing::jobs::enqueue_many(&mut conn, &stream, chrono::Utc::now())
        .await
        .unwrap();
    wait_until(
        "the urgent stream to drain",
        Duration::from_secs(30),
        || async { runs(&db, "stream").await.0 == 400 },
    )
    .await;
    let during = runs(&db, "bulk").await.0 - before;
    assert!(
        during >= 40,
        "only {during} bulk jobs ran beside 400 urgent ones"
    );
    rt.stop().await;
}

#[tokio::test]
async fn a_configured_retry_budget_overrides_the_tasks_own() {
    let (url, db) = test_db().await;
    let rt = start_runtime(
        &url,
        Arc::new(billing::clock::SystemClock),
        Vec::new(),
        |s| {
            s.worker.max_retries.insert("diag.probe".into(), 0);
        },
    );
    // The probe's own budget is 5; the configured one (0) decides.
    let mut doomed = probe("budget-0".into(), 0);
    doomed.fail_runs = 100;
    let mut conn = db.acquire().await.unwrap();
    billing::jobs::enqueue(&mut conn, &doomed, chrono::Utc::now())
        .await
        .unwrap();
    wait_until(
        "the task to fail for good",
        Duration::from_secs(5),
        || async { matches!(state_of(&db, "budget-0").await, Some((s, _, _)) if s == "failed") },
    )
    .await;
    let (_, retries, _) = state_of(&db, "budget-0").await.unwrap();
    assert_eq!(retries, 0);
    rt.stop().await;
}
