//! Queue helpers: enqueue probes, count rows, wait for conditions.

use std::future::Future;
use std::time::{Duration, Instant};

use billing::tasks::Probe;
use sqlx::PgPool;

pub fn probe(key: String, sleep_ms: u64) -> Probe {
    Probe {
        sleep_ms,
        ..Probe::new(key)
    }
}

/// Enqueues `n` probes keyed `{prefix}-{i}` in large batches.
pub async fn enqueue_probes(db: &PgPool, prefix: &str, n: usize, sleep_ms: u64) {
    let probes: Vec<Probe> = (0..n)
        .map(|i| probe(format!("{prefix}-{i}"), sleep_ms))
        .collect();
    let mut conn = db.acquire().await.unwrap();
    for chunk in probes.chunks(1000) {
        let inserted = billing::jobs::enqueue_many(&mut conn, chunk, chrono::Utc::now())
            .await
            .unwrap();
        assert_eq!(inserted as usize, chunk.len());
    }
}

pub async fn count(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

/// Polls `check` until it holds; panics with `what` after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until no task is left in the queue but failed ones and the worker's own
/// periodic tasks (which always have their next occurrence queued).
pub async fn wait_drained(db: &PgPool, within: Duration) {
    wait_until("the queue to drain", within, || async {
        count(
            db,
            "SELECT count(*) FROM fang_tasks WHERE state <> 'failed'
             AND metadata->>'type' NOT IN ('items.flush_views', 'items.fold_sales', 'subscriptions.sweep',
                                           'subscriptions.remind_renewals', 'maintenance.prune')",
        )
        .await
            == 0
    })
    .await;
}

pub async fn runs(db: &PgPool, prefix: &str) -> (i64, i64) {
    let pattern = format!("{prefix}-%");
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT probe_key) FROM job_probe_runs WHERE probe_key LIKE $1",
    )
    .bind(pattern)
    .fetch_one(db)
    .await
    .unwrap()
}
