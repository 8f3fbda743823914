//! Pillivery's worker: the job runtime over fang's task model, the outbox dispatcher, and
//! the process around them (health/metrics server, periodic tasks, clean stop).

pub mod outbox;
pub mod queue;
pub mod runtime;
pub mod tasks;

use std::future::{Future, IntoFuture};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct WorkerState {
    pub ctx: billing::Ctx,
    pub metrics: PrometheusHandle,
}

pub fn health_router(state: WorkerState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// How long readiness waits for Postgres: a probe must answer before its own timeout,
/// and a database that takes longer than this is not ready for work.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn ready(State(state): State<WorkerState>) -> impl IntoResponse {
    let check = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(state.ctx.db.pool());
    let failure = match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {} ms", READY_TIMEOUT.as_millis())),
    };
    match failure {
        None => (
            StatusCode::OK,
            Json(serde_json::json!({"status": "ready", "checks": {"postgres": "ok"}})),
        ),
        Some(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable", "checks": {"postgres": e}})),
        ),
    }
}

async fn metrics(State(state): State<WorkerState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        billing::telemetry::render_metrics(&state.metrics),
    )
}

/// Periodic tasks every worker keeps chained (one occurrence at a time across the fleet).
pub fn periodic_tasks() -> billing::Result<Vec<billing::jobs::Job>> {
    use billing::jobs::Job;
    Ok(vec![
        Job::of(&billing::tasks::FlushViews {})?,
        Job::of(&billing::tasks::FoldSales {})?,
        Job::of(&billing::tasks::SubscriptionsSweep { limit: None })?,
        Job::of(&billing::tasks::RemindRenewals {})?,
        Job::of(&billing::tasks::PruneRetention {})?,
    ])
}

/// Runs the worker (job runtime + health server) until `shutdown` resolves.
pub async fn run(
    ctx: billing::Ctx,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = WorkerState {
        ctx: ctx.clone(),
        metrics: billing::telemetry::metrics_handle(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = tokio::spawn(
        axum::serve(listener, health_router(state))
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    let dispatcher = tokio::spawn(outbox::run(ctx.clone(), stopped(stop_rx.clone())));
    let cfg = runtime::RuntimeConfig::from_settings(&ctx.settings.worker);
    let jobs = tokio::spawn(runtime::run(
        ctx,
        cfg,
        tasks::Registry::standard(),
        periodic_tasks()?,
        stopped(stop_rx),
    ));
    shutdown.await;
    let _ = stop_tx.send(true);
    dispatcher.await?;
    jobs.await??;
    server.await??;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
