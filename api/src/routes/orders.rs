//! Orders and the KakaoPay redirects: place (idempotent by key), list, read (optionally
//! waiting for a state change), cancel/refund; the buyer's return from KakaoPay.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use billing::ids::OrderId;
use billing::orders::{NewOrder, Order, OrderStatus};
use billing::page::{Page, PageRequest};
use billing::payments::{RedirectAction, RedirectOutcome};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place_order, list_orders))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
        .routes(routes!(kakaopay_redirect))
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Set on a response that repeats what an earlier request with the same key created.
const REPLAYED: &str = "idempotent-replayed";

/// Place an order from explicit lines or a cart checkout. The order starts
/// `pending_payment`; a worker asks KakaoPay for the redirect URL (read it with
/// `GET /api/orders/{id}?wait=5`). With an `Idempotency-Key` header, repeating the same
/// request returns the same order (header `Idempotent-Replayed: true`) and creates nothing.
#[utoipa::path(post, path = "/api/orders", tag = "orders", security(("bearer" = [])),
    operation_id = "place_order",
    request_body = NewOrder,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1–255 visible ASCII characters; kept at least 24 h")),
    responses(
        (status = 201, body = Order),
        (status = 400, body = ErrorBody, description = "malformed_json"),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "validation_failed (unknown item, quantity, receiver, …), item_unavailable, idempotency_key_reused"),
    ))]
async fn place_order(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewOrder>,
) -> ApiResult<Response> {
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::Billing(billing::Error::validation(
                "Idempotency-Key",
                "must be visible ASCII",
            ))
        })?),
    };
    let placed = billing::orders::place(&state.ctx, p.user_id, &body, key).await?;
    let mut response = (StatusCode::CREATED, Json(placed.order)).into_response();
    if placed.replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListOrdersQuery {
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    #[serde(default = "one")]
    #[param(minimum = 1, default = 1)]
    pub page: i64,
    #[serde(default = "twenty")]
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub size: i64,
}

fn one() -> i64 {
    1
}

fn twenty() -> i64 {
    20
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<Order>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

impl From<Page<Order>> for OrderPage {
    fn from(p: Page<Order>) -> Self {
        Self {
            items: p.items,
            page: p.page,
            size: p.size,
            total: p.total,
        }
    }
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/api/orders", tag = "orders", security(("bearer" = [])),
    operation_id = "list_orders",
    params(ListOrdersQuery),
    responses(
        (status = 200, body = OrderPage),
        (status = 400, body = ErrorBody, description = "malformed_request: unknown status"),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
async fn list_orders(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiQuery(q): ApiQuery<ListOrdersQuery>,
) -> ApiResult<Json<OrderPage>> {
    let page = PageRequest {
        page: q.page,
        size: q.size,
    };
    Ok(Json(
        billing::orders::list(&state.ctx, p.user_id, q.status, page)
            .await?
            .into(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetOrderQuery {
    /// Seconds (0–10) to wait for a change while the order is `pending_payment`,
    /// `approving` or `refund_requested`; answered at once otherwise.
    #[param(minimum = 0, maximum = 10)]
    pub wait: Option<u64>,
}

/// One of the caller's orders with its payment (and, once ready, the redirect URLs).
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders", security(("bearer" = [])),
    operation_id = "get_order",
    params(("id" = i64, Path), GetOrderQuery),
    responses(
        (status = 200, body = Order),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found: no such order of yours"),
        (status = 422, body = ErrorBody, description = "validation_failed: wait above 10"),
    ))]
async fn get_order(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<GetOrderQuery>,
) -> ApiResult<Json<Order>> {
    let wait = q.wait.map(Duration::from_secs);
    if wait.is_some_and(|w| w > state.ctx.settings.payments.max_wait_secs) {
        return Err(billing::Error::validation("wait", "must be between 0 and 10 seconds").into());
    }
    Ok(Json(
        billing::orders::get(&state.ctx, &state.orders, p.user_id, OrderId(id), wait).await?,
    ))
}

/// Cancel an unpaid order, or ask for a refund of a paid one (`refund_requested`; a
/// worker refunds it at KakaoPay and the order becomes `refunded`).
#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    operation_id = "cancel_order",
    params(("id" = i64, Path)),
    responses(
        (status = 200, body = Order),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "already_canceled, already_refunded, payment_in_progress, order_not_cancelable"),
    ))]
async fn cancel_order(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Order>> {
    Ok(Json(
        billing::orders::cancel(&state.ctx, p.user_id, OrderId(id)).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RedirectQuery {
    /// Added by KakaoPay to the approval URL.
    pub pg_token: Option<String>,
}

/// Where KakaoPay sends the buyer back (`approve` with `pg_token`, `cancel`, `fail`). The
/// outcome is recorded (an approval is queued for a worker) and the buyer is redirected
/// to the storefront's result page with `order_id` and `result`; with
/// `Accept: application/json` the outcome is answered as JSON instead. A replayed
/// redirect changes nothing; an unknown token is 404.
#[utoipa::path(get, path = "/api/payments/kakaopay/{action}/{payment_token}", tag = "orders",
    operation_id = "kakaopay_redirect",
    params(
        ("action" = String, Path, description = "`approve`, `cancel` or `fail`"),
        ("payment_token" = String, Path, description = "the payment's unguessable token"),
        RedirectQuery,
    ),
    responses(
        (status = 200, body = RedirectOutcome, description = "with Accept: application/json"),
        (status = 303, description = "to the storefront result page"),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "validation_failed: approve without pg_token"),
    ))]
async fn kakaopay_redirect(
    State(state): State<AppState>,
    ApiPath((action, token)): ApiPath<(RedirectAction, String)>,
    ApiQuery(q): ApiQuery<RedirectQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let outcome =
        billing::payments::redirect(&state.ctx, &token, action, q.pg_token.as_deref()).await?;
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        return Ok(Json(outcome).into_response());
    }
    let mut url = url::Url::parse(&state.ctx.settings.payments.result_url)
        .map_err(|e| billing::Error::Internal(format!("payments.result_url: {e}")))?;
    url.query_pairs_mut()
        .append_pair("order_id", &outcome.order_id.to_string())
        .append_pair("result", outcome.status.as_str());
    Ok(Redirect::to(url.as_str()).into_response())
}
