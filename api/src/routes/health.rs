//! Liveness, readiness (Postgres and Redis) and Prometheus metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: &'static str,
    /// Per dependency: `ok` or what failed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<&'static str, String>,
}

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, body = Health)))]
async fn live() -> Json<Health> {
    Json(Health {
        status: "ok",
        checks: BTreeMap::new(),
    })
}

/// Postgres and Redis both answer; 503 names whichever does not.
///
/// While the Redis breaker is open the Redis check fails at once (`not tried: breaker
/// open …`); once its cool-down is over this check runs the probe that closes it.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let db = async {
        tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(state.ctx.db.pool()),
        )
        .await
        .map_err(|_| "timed out".to_owned())?
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let (db, kv) = tokio::join!(db, state.ctx.kv.ping());
    let mut checks = BTreeMap::new();
    checks.insert("postgres", db.err().unwrap_or_else(|| "ok".into()));
    checks.insert(
        "redis",
        kv.err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "ok".into()),
    );
    let healthy = checks.values().all(|v| v == "ok");
    if !healthy {
        tracing::warn!(?checks, "not ready");
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if healthy { "ready" } else { "unavailable" },
            checks,
        }),
    )
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        billing::telemetry::render_metrics(&state.metrics),
    )
}
