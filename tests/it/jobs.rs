//! The job runtime through the real `pillivery-worker` binary: exactly-once claims,
//! crash recovery by lease, bad rows, database restarts, graceful stop, uniqueness.

use std::time::Duration;

use crate::helpers::jobs::{count, enqueue_probes, probe, runs, wait_drained, wait_until};
use crate::helpers::test_db;
use crate::helpers::worker_proc::WorkerProcess;

#[tokio::test]
async fn a_rolled_back_enqueue_leaves_nothing_and_a_committed_one_runs_once() {
    let (url, db) = test_db().await;
    let mut tx = db.begin().await.unwrap();
    billing::jobs::enqueue(&mut tx, &probe("rolled-0".into(), 0), chrono::Utc::now())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM fang_tasks").await, 0);

    let mut tx = db.begin().await.unwrap();
    billing::jobs::enqueue(&mut tx, &probe("committed-0".into(), 0), chrono::Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut worker = WorkerProcess::spawn(&url, &[]);
    worker.wait_live().await;
    wait_drained(&db, Duration::from_secs(20)).await;
    // Give a duplicate run every chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs(&db, "committed").await, (1, 1));
    assert_eq!(runs(&db, "rolled").await, (0, 0));
}

#[tokio::test]
async fn five_thousand_tasks_on_two_workers_run_exactly_once_each() {
    let (url, db) = test_db().await;
    enqueue_probes(&db, "bulk", 5_000, 0).await;
    let env = [("PILLIVERY__WORKER__CONCURRENCY", "64")];
    let mut a = WorkerProcess::spawn(&url, &env);
    let mut b = WorkerProcess::spawn(&url, &env);
    a.wait_live().await;
    b.wait_live().await;
    wait_drained(&db, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs(&db, "bulk").await, (5_000, 5_000));
    // Both workers took part.
    let workers = count(
        &db,
        "SELECT count(DISTINCT worker) FROM job_probe_runs WHERE probe_key LIKE 'bulk-%'",
    )
    .await;
    assert_eq!(workers, 2, "a:\n{}\nb:\n{}", a.logs(), b.logs());

    let metrics = a.metrics().await;
    for name in [
        "jobs_claimed_total",
        "jobs_finished_total{task=\"diag.probe\",outcome=\"succeeded\"}",
        "job_run_seconds_bucket",
        "job_start_delay_seconds_bucket",
        "job_queue_depth",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    crate::helpers::db::assert_no_session_left_in_transaction(&db).await;
}

#[tokio::test]
async fn a_killed_workers_tasks_run_once_after_their_leases_expire() {
    let (url, db) = test_db().await;
    let env = [
        ("PILLIVERY__WORKER__LEASE_MS", "1500"),
        ("PILLIVERY__WORKER__REAP_INTERVAL_MS", "200"),
    ];
    let mut doomed = WorkerProcess::spawn(&url, &env);
    doomed.wait_live().await;
    enqueue_probes(&db, "crash", 200, 2_000).await;
    wait_until("all 200 in flight", Duration::from_secs(10), || async {
        count(
            &db,
            "SELECT count(*) FROM fang_tasks WHERE state = 'in_progress'",
        )
        .await
            == 200
    })
    .await;
    doomed.signal("-KILL");
    doomed.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(
        runs(&db, "crash").await,
        (0, 0),
        "killed before any finished"
    );

    let mut rescuer = WorkerProcess::spawn(&url, &env);
    rescuer.wait_live().await;
    wait_drained(&db, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs(&db, "crash").await, (200, 200));
    let reaped = count(
        &db,
        "SELECT count(*) FROM job_probe_runs WHERE probe_key LIKE 'crash-%'",
    )
    .await;
    assert_eq!(reaped, 200);
    crate::helpers::db::assert_no_session_left_in_transaction(&db).await;
}

#[tokio::test]
async fn undecodable_rows_fail_with_a_reason_and_the_worker_carries_on() {
    let (url, db) = test_db().await;
    for _ in 0..2 {
        sqlx::query(
            "INSERT INTO fang_tasks (metadata) VALUES ('{\"type\": \"no.such.task\", \"x\": 1}')",
        )
        .execute(&db)
        .await
        .unwrap();
    }
    enqueue_probes(&db, "good", 50, 0).await;
    let mut worker = WorkerProcess::spawn(&url, &[]);
    worker.wait_live().await;
    wait_drained(&db, Duration::from_secs(20)).await;
    assert_eq!(runs(&db, "good").await, (50, 50));
    let failed: Vec<(String,)> =
        sqlx::query_as("SELECT error_message FROM fang_tasks WHERE state = 'failed' ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(failed.len(), 2);
    for (reason,) in failed {
        assert!(reason.contains("no.such.task"), "{reason}");
    }
    // Still alive and still working.
    assert!(worker.is_running());
    enqueue_probes(&db, "after", 5, 0).await;
    wait_drained(&db, Duration::from_secs(20)).await;
    assert_eq!(runs(&db, "after").await, (5, 5));
}

#[tokio::test]
async fn cutting_every_worker_connection_mid_run_is_survived() {
    let (url, db) = test_db().await;
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&db)
        .await
        .unwrap();
    enqueue_probes(&db, "cut", 600, 20).await;
    let mut worker = WorkerProcess::spawn(&url, &[("PILLIVERY__WORKER__CONCURRENCY", "16")]);
    worker.wait_live().await;
    for round in 0..3 {
        wait_until("progress", Duration::from_secs(20), || async {
            runs(&db, "cut").await.1 >= 100 * (round + 1)
        })
        .await;
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name = 'pillivery') t",
        )
        .bind(&name)
        .fetch_one(&db)
        .await
        .unwrap();
        assert!(killed > 0, "no worker connection to cut");
    }
    wait_drained(&db, Duration::from_secs(60)).await;
    let (_, distinct) = runs(&db, "cut").await;
    assert_eq!(distinct, 600, "{}", worker.logs());
    assert!(worker.is_running(), "{}", worker.logs());
    crate::helpers::db::assert_no_session_left_in_transaction(&db).await;
}

#[tokio::test]
async fn sigterm_finishes_or_hands_back_in_flight_tasks_and_exits_0() {
    let (url, db) = test_db().await;
    // Half finish within the grace period, half do not.
    let quick: Vec<_> = (0..20).map(|i| probe(format!("quick-{i}"), 200)).collect();
    let slow: Vec<_> = (0..20).map(|i| probe(format!("slow-{i}"), 5_000)).collect();
    {
        let mut conn = db.acquire().await.unwrap();
        let all: Vec<_> = quick.iter().chain(slow.iter()).cloned().collect();
        billing::jobs::enqueue_many(&mut conn, &all, chrono::Utc::now())
            .await
            .unwrap();
    }
    let mut worker =
        WorkerProcess::spawn(&url, &[("PILLIVERY__WORKER__SHUTDOWN_GRACE_MS", "1500")]);
    worker.wait_live().await;
    wait_until("all in flight", Duration::from_secs(10), || async {
        count(
            &db,
            "SELECT count(*) FROM fang_tasks WHERE state = 'in_progress'",
        )
        .await
            == 40
    })
    .await;
    worker.signal("-TERM");
    let status = worker.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}\n{}", worker.logs());
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM fang_tasks WHERE state = 'in_progress'"
        )
        .await,
        0
    );
    assert_eq!(runs(&db, "quick").await, (20, 20));
    assert_eq!(runs(&db, "slow").await, (0, 0));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM fang_tasks WHERE state = 'new' AND retries = 0
             AND metadata->>'type' = 'diag.probe'"
        )
        .await,
        20,
        "the slow ones are back in the queue, no attempt counted"
    );
    // Nothing was lost: another worker finishes them.
    let mut next = WorkerProcess::spawn(&url, &[]);
    next.wait_live().await;
    wait_drained(&db, Duration::from_secs(30)).await;
    assert_eq!(runs(&db, "slow").await, (20, 20));
    crate::helpers::db::assert_no_session_left_in_transaction(&db).await;
}

#[tokio::test]
async fn concurrent_inserters_of_unique_tasks_leave_one_live_row_each() {
    let (_url, db) = test_db().await;
    let inserters = (0..8).map(|_| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut conn = db.acquire().await.unwrap();
            for i in 0..300 {
                let mut p = probe(format!("uniq-{i}"), 0);
                p.unique = true;
                billing::jobs::enqueue(&mut conn, &p, chrono::Utc::now())
                    .await
                    .unwrap();
            }
        })
    });
    for r in futures::future::join_all(inserters).await {
        r.unwrap();
    }
    assert_eq!(count(&db, "SELECT count(*) FROM fang_tasks").await, 300);
    // A finished unique task can be enqueued again.
    sqlx::query("DELETE FROM fang_tasks WHERE metadata->>'key' = 'uniq-0'")
        .execute(&db)
        .await
        .unwrap();
    let mut p = probe("uniq-0".into(), 0);
    p.unique = true;
    let mut conn = db.acquire().await.unwrap();
    let again = billing::jobs::enqueue(&mut conn, &p, chrono::Utc::now())
        .await
        .unwrap();
    assert!(matches!(again, billing::jobs::Enqueued::Inserted(_)));
    let dup = billing::jobs::enqueue(&mut conn, &p, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(dup, billing::jobs::Enqueued::AlreadyQueued(again.id()));
}
