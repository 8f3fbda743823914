//! Pillivery's REST API: routers, extractors, middleware and DTOs over `billing`.

pub mod console;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod routes;
pub mod strict_json;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_scalar::{Scalar, Servable};

use crate::error::ApiError;
use crate::middleware::Limiters;

#[derive(Clone)]
pub struct AppState {
    pub ctx: billing::Ctx,
    pub limiters: Arc<Limiters>,
    pub metrics: PrometheusHandle,
    /// Wakes `GET /api/orders/{id}?wait=N` when the order changes.
    pub orders: billing::orders::OrderWatch,
    /// The handlers running on tasks of their own (`middleware::run_to_completion`);
    /// shutdown waits for them.
    pub handlers: tokio_util::task::TaskTracker,
}

impl AppState {
    pub fn new(ctx: billing::Ctx) -> Self {
        let limiters = Arc::new(Limiters::new(&ctx.settings.rate_limit));
        let orders = billing::orders::OrderWatch::start(ctx.db.pool().clone());
        Self {
            orders,
            handlers: tokio_util::task::TaskTracker::new(),
            ctx,
            limiters,
            metrics: billing::telemetry::metrics_handle(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Pillivery API", description = "Health-supplement store: accounts, catalog, orders, subscriptions billed through KakaoPay."),
    modifiers(&BearerAuth),
    tags(
        (name = "accounts"), (name = "auth"), (name = "catalog"), (name = "carts"), (name = "orders"), (name = "subscriptions"), (name = "reviews"), (name = "admin"), (name = "health"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::health::router())
        .merge(routes::users::router())
        .merge(routes::auth::router())
        .merge(routes::admin::router())
        .merge(routes::items::router())
        .merge(routes::carts::router())
        .merge(routes::orders::router())
        .merge(routes::reviews::router())
        .merge(routes::subscriptions::router())
        .merge(routes::checkouts::router())
        .merge(routes::sessions::router())
        .merge(routes::webhooks::router())
}

/// The OpenAPI document of every route (served at `/api-docs/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_router().split_for_parts().1;
    document_common_answers(&mut doc);
    doc
}

/// Adds to every operation the answers the shared layers give before (or around) its
/// handler, where the operation does not describe them itself: so the document lists
/// every status a route really answers (the API fuzz, `ops/fuzz-api`, checks it).
fn document_common_answers(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let answer = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            let params = op.parameters.clone().unwrap_or_default();
            let has = |place: ParameterIn| params.iter().any(|p| p.parameter_in == place);
            let mut common = vec![
                (
                    "422",
                    "invalid_characters: a control character in the path or a query parameter",
                ),
                ("429", "rate_limited"),
                ("503", "dependency_unavailable, request_timeout"),
            ];
            if op.request_body.is_some() {
                common.extend([
                    ("400", "malformed_json"),
                    ("413", "payload_too_large"),
                    ("415", "unsupported_media_type"),
                ]);
            }
            if has(ParameterIn::Query) {
                common.push((
                    "400",
                    "malformed_request: a query parameter that does not parse",
                ));
            }
            if has(ParameterIn::Path) {
                common.push((
                    "404",
                    "not_found (also a path parameter that does not parse)",
                ));
            }
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                common.push(("401", "no, invalid, expired or revoked access token"));
            }
            for (status, description) in common {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| answer(description));
            }
        }
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let (router, mut doc) = api_router().split_for_parts();
    document_common_answers(&mut doc);
    let doc_json = Arc::new(doc.clone());
    let settings = &state.ctx.settings.api;

    let router = router
        .route(
            "/api-docs/openapi.json",
            axum::routing::get(move || {
                let doc = doc_json.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .merge(Scalar::with_url("/api-docs", doc))
        .merge(console::router())
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Innermost first: these run per route, where the matched path is known.
        // Inside the timeout, so neither it nor a vanished client can cut a handler.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::run_to_completion,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::client_ip_and_rate_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::timeout,
        ))
        .layer(axum::middleware::from_fn(middleware::strict_path_and_query))
        .layer(axum::middleware::from_fn(middleware::metrics))
        .layer(axum::middleware::from_fn(middleware::request_scope))
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes));

    router
        .layer(
            ServiceBuilder::new()
                // An `X-Request-Id` we would not log as sent is replaced by a fresh one.
                .layer(axum::middleware::from_fn(middleware::sanitize_request_id))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request| {
                            let request_id = req
                                .extensions()
                                .get::<RequestId>()
                                .and_then(|id| id.header_value().to_str().ok())
                                .unwrap_or_default();
                            tracing::info_span!(
                                "request",
                                request_id = %request_id,
                                method = %req.method(),
                                path = %middleware::loggable_path(req.uri().path()),
                                client_ip = tracing::field::Empty,
                                user_id = tracing::field::Empty,
                            )
                        })
                        // Failures are logged once, where the error becomes a response.
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(cors(&settings.cors_origins)),
        )
        .with_state(state)
}

fn cors(origins: &[String]) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            REQUEST_ID,
        ])
        .expose_headers([REQUEST_ID, header::RETRY_AFTER, header::LOCATION])
        .max_age(Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        base.allow_origin(AllowOrigin::any())
    } else {
        let list: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
        base.allow_origin(list)
    }
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limiters = state.limiters.clone();
    let handlers = state.handlers.clone();
    // Handlers whose client left finish their writes in milliseconds; the bound keeps the
    // exit inside the service manager's stop timeout.
    let grace = Duration::from_secs(5);
    let pruner = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limiters.prune();
        }
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    pruner.abort();
    // Handlers whose client went away are still finishing their writes.
    handlers.close();
    if tokio::time::timeout(grace, handlers.wait()).await.is_err() {
        tracing::error!(
            running = handlers.len(),
            "handlers still running at exit; their open transactions roll back"
        );
    }
    result
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
