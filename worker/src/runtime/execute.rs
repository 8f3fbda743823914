//! Running one claimed task: decode it through the registry, run it under its timeout
//! between transactions, and decide what its outcome means for the row (the one place).

use std::sync::Arc;
use std::time::{Duration, Instant};

use billing::jobs::{self, Claimed, Job, Outcome};
use chrono::Utc;
use rand::Rng;
use tokio::sync::watch;

use super::*;

pub(super) async fn execute(
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
            inner.record_outcome(&name, "undecodable");
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
            inner.record_outcome(&name, "abandoned");
            return Finish::Abandoned {
                token: claimed.lease_token,
            };
        }
        Ok(Err(Stop::Shutdown)) => {
            inner.record_outcome(&name, "released");
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
            inner.record_outcome(
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

/// What the runtime does with a run's outcome: the one place a job's fate is decided.
pub(super) fn decide(
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
            inner.record_outcome(name, "succeeded");
            Finish::Succeeded { id, token }
        }
        Outcome::Defer { after, reason } => {
            inner.record_outcome(name, "deferred");
            tracing::debug!(job_id = %id, task = %name, %reason,
                retry_in_ms = after.as_millis() as u64, "task deferred");
            Finish::Deferred {
                id,
                token,
                at: now + chrono::Duration::from_std(after).unwrap_or_default(),
                reason,
            }
        }
        Outcome::Retry { after, reason } if claimed.retries < budget(inner, claimed, name) => {
            let delay = after.unwrap_or_else(|| {
                jittered(
                    task.backoff(claimed.retries.max(0) as u32),
                    inner.cfg.max_backoff,
                )
            });
            inner.record_outcome(name, "retried");
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
            inner.record_outcome(name, "failed");
            tracing::error!(job_id = %id, task = %name, error = %reason, attempts = claimed.retries + 1,
                "task failed for good: retries used up");
            Finish::Failed {
                id,
                token,
                error: reason,
            }
        }
        Outcome::Fail { reason } => {
            inner.record_outcome(name, "rejected");
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

/// The task's retry budget: the configured one for its name, else its row's.
fn budget(inner: &Inner, claimed: &Claimed, name: &str) -> i32 {
    inner
        .cfg
        .max_retries
        .get(name)
        .copied()
        .unwrap_or(claimed.max_retries)
}

/// Between half and all of the task's backoff (capped), so retries of a burst spread out.
pub fn jittered(base: Duration, cap: Duration) -> Duration {
    let base = base.min(cap);
    let half = base / 2;
    let spread = base.saturating_sub(half).as_millis() as u64;
    half + Duration::from_millis(rand::rng().random_range(0..=spread))
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
}
