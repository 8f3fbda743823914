//! The outbox dispatcher every worker runs beside the job runtime: turns new outbox events
//! into webhook deliveries (and their jobs) and keeps the backlog and unknown-charge
//! gauges fresh. It is a loop, not a job, so events are picked up within
//! `dispatch_interval_ms` without a job per tick; several workers running it at once share
//! the work (`SKIP LOCKED`).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often the backlog gauges are recomputed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// Dispatches until `stop` resolves: again at once while batches come back full, else
/// every `dispatch_interval_ms`. Errors (Postgres down) are logged and retried on the next
/// tick; they never end the loop.
pub async fn run(ctx: billing::Ctx, stop: impl Future<Output = ()>) {
    let cfg = &ctx.settings.webhooks;
    let interval = cfg.dispatch_interval_ms;
    let batch = cfg.dispatch_batch;
    let mut gauges_at: Option<Instant> = None;
    tokio::pin!(stop);
    loop {
        let full = match billing::webhooks::dispatch(&ctx, batch).await {
            Ok(n) => i64::try_from(n).unwrap_or(i64::MAX) >= batch,
            Err(e) => {
                tracing::warn!(error = %e, "outbox dispatch failed; retrying");
                false
            }
        };
        if gauges_at.is_none_or(|at| at.elapsed() >= GAUGE_INTERVAL) {
            if let Err(e) = billing::webhooks::refresh_gauges(&ctx).await {
                tracing::warn!(error = %e, "webhook gauges not refreshed");
            }
            if let Err(e) = billing::subscriptions::refresh_gauges(&ctx).await {
                tracing::warn!(error = %e, "unknown-charge gauges not refreshed");
            }
            gauges_at = Some(Instant::now());
        }
        let pause = if full { Duration::ZERO } else { interval };
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!("outbox dispatcher stopped");
}
