//! The runtime's background loops: LISTEN wake-ups, lease renewal, reaping expired
//! leases, the queue-depth metrics, and the process's report for the console.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use billing::jobs;
use billing::workers::Lifecycle;
use tokio::sync::watch;
use uuid::Uuid;

use super::*;

pub(super) async fn listen(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
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

pub(super) async fn heartbeat(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
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

pub(super) async fn reaper(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
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

pub(super) async fn depth_metrics(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
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

/// Writes this process's report (`billing::workers`) every `report_interval`, and at once
/// when a stop begins; it goes on, as `stopping`, while runs drain, until the runtime ends
/// it. A failing report (Postgres down) is logged once, and never stops the worker.
pub(super) async fn reporter(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut failing = false;
    let mut stopping = false;
    loop {
        let lifecycle = if stopping || inner.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            Lifecycle::Stopping
        } else {
            Lifecycle::Running
        };
        match billing::workers::report(&inner.ctx, &inner.report(lifecycle)).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("worker reports written again");
            }
            Ok(()) => {}
            Err(e) => {
                metrics::counter!("worker_db_errors_total", "op" => "report").increment(1);
                if failing {
                    tracing::debug!(error = %e, "worker report failed again");
                } else {
                    failing = true;
                    tracing::warn!(error = %e, "could not write the worker report; the console shows this worker as missing until it can");
                }
            }
        }
        if stopping {
            tokio::time::sleep(inner.cfg.report_interval).await;
        } else {
            stopping = sleep_or_stop(inner.cfg.report_interval, &mut stop).await;
        }
    }
}

/// The last report, after the runtime stopped cleanly: the console shows the worker as
/// stopped rather than missing. Bounded, since the process is on its way out.
pub(super) async fn report_final(inner: &Inner) {
    let last = inner.report(Lifecycle::Stopped);
    let write = billing::workers::report(&inner.ctx, &last);
    match tokio::time::timeout(Duration::from_secs(2), write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "could not write the final worker report"),
        Err(_) => tracing::debug!("the final worker report timed out"),
    }
}
