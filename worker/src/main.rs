//! `pillivery-worker`: one process of the worker fleet.

use std::sync::Arc;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = billing::Settings::load()?;
    billing::telemetry::init_tracing(&settings.log);
    let ctx = billing::Ctx::new(settings, Arc::new(billing::clock::SystemClock))?;
    // Connect once at start so a wrong URL is reported now, not at the first job.
    if let Err(e) = sqlx::query("SELECT 1").execute(&ctx.db).await {
        tracing::warn!(error = %e, "postgres not reachable yet; will keep trying");
    }
    let addr = ctx.settings.worker.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    tracing::info!(%addr, "pillivery-worker started");
    worker::run(ctx, listener, worker::shutdown_signal()).await?;
    tracing::info!("pillivery-worker stopped");
    Ok(())
}
