//! `diag.probe` runs: recorded per key so operators (and tests) can see what ran where.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::tasks::Probe;
use crate::Ctx;

/// Identifies this process in probe records.
pub fn worker_name() -> String {
    format!("pid-{}", std::process::id())
}

pub async fn run(ctx: &Ctx, probe: &Probe) -> Result<()> {
    if probe.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(probe.sleep_ms)).await;
    }
    let mut conn = ctx.db.acquire().await?;
    if probe.fail_runs > 0 {
        let failures = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM job_probe_runs WHERE probe_key = $1 || ':failed'"#,
            probe.key
        )
        .fetch_one(&mut *conn)
        .await?;
        if failures < i64::from(probe.fail_runs) {
            sqlx::query!(
                "INSERT INTO job_probe_runs (probe_key, worker) VALUES ($1 || ':failed', $2)",
                probe.key,
                worker_name()
            )
            .execute(&mut *conn)
            .await?;
            return Err(Error::Internal(format!(
                "probe {} failing on purpose ({} of {})",
                probe.key,
                failures + 1,
                probe.fail_runs
            )));
        }
    }
    sqlx::query!(
        "INSERT INTO job_probe_runs (probe_key, worker) VALUES ($1, $2)",
        probe.key,
        worker_name()
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
