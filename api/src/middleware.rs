//! Cross-cutting request handling: client IP, rate limits, timeouts, metrics.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tracing::Instrument;

use crate::error::ApiError;
use crate::extract::{client_ip, ClientIp};
use crate::AppState;

/// Per-client-IP limiters: one for every route, a stricter one for credential routes.
pub struct Limiters {
    general: DefaultKeyedRateLimiter<IpAddr>,
    credentials: DefaultKeyedRateLimiter<IpAddr>,
}

impl Limiters {
    pub fn new(settings: &billing::settings::RateLimitSettings) -> Self {
        let nz = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
        let general =
            Quota::per_second(nz(settings.per_ip_per_sec)).allow_burst(nz(settings.per_ip_burst));
        let credentials =
            Quota::per_minute(nz(settings.login_per_min)).allow_burst(nz(settings.login_burst));
        Self {
            general: RateLimiter::keyed(general),
            credentials: RateLimiter::keyed(credentials),
        }
    }

    /// Forgets clients idle long enough to be back at full burst (bounds memory).
    pub fn prune(&self) {
        self.general.retain_recent();
        self.credentials.retain_recent();
    }
}

fn check(limiter: &DefaultKeyedRateLimiter<IpAddr>, ip: &IpAddr) -> Result<(), ApiError> {
    limiter.check_key(ip).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::RateLimited {
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        }
    })
}

/// Routes that take credentials get the stricter per-IP limit.
fn is_credential_route(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::POST
        && matches!(
            path,
            "/api/users" | "/api/auth/login" | "/api/auth/refresh" | "/api/auth/oauth/complete"
        )
}

pub async fn client_ip_and_rate_limit(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let ip = client_ip(
        req.headers(),
        req.extensions().get::<ConnectInfo<SocketAddr>>(),
        &state.ctx.settings.api.trusted_proxies,
    );
    req.extensions_mut().insert(ip);
    tracing::Span::current().record("client_ip", tracing::field::display(ip.0));
    let limiters: &Arc<Limiters> = &state.limiters;
    let ClientIp(addr) = ip;
    if let Err(e) = check(&limiters.general, &addr) {
        return e.into_response();
    }
    if is_credential_route(req.method(), req.uri().path()) {
        if let Err(e) = check(&limiters.credentials, &addr) {
            return e.into_response();
        }
    }
    next.run(req).await
}

pub async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.ctx.settings.api.request_timeout_ms;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Runs the rest of the request (the handler and its database work) on a task of its own,
/// so that neither a client that disconnects nor the request timeout drops it halfway
/// through a transaction: it runs to its end, and what it wrote either commits or rolls
/// back as the handler decides. The request id and the span go with it; a panic becomes
/// a 500.
pub async fn run_to_completion(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let request_id = billing::telemetry::current_request_id();
    let handler = billing::telemetry::with_request_id(request_id, next.run(req))
        .instrument(tracing::Span::current());
    match state.handlers.spawn(handler).await {
        Ok(response) => response,
        Err(e) => {
            let what = if e.is_panic() {
                "panicked"
            } else {
                "was cancelled"
            };
            ApiError::Billing(billing::Error::Internal(format!("handler {what}"))).into_response()
        }
    }
}

/// `http_requests_total` and `http_request_duration_seconds` by matched route and status.
pub async fn metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Makes the request's `X-Request-Id` current while it is served, so the jobs it enqueues
/// carry it (`fang_tasks.request_id`) and their log lines name it.
pub async fn request_scope(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(128).collect::<String>());
    billing::telemetry::with_request_id(id, next.run(req)).await
}
