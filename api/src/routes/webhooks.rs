//! Operator routes for webhooks (role `admin`): endpoints CRUD and secret rotation, the
//! deliveries lists, one delivery with its attempts, and redelivery.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use billing::ids::{DeliveryId, WebhookEndpointId};
use billing::page::{Page, PageRequest};
use billing::webhooks::{
    Delivery, DeliveryFilter, DeliveryState, Endpoint, EndpointPatch, EndpointWithSecret,
    NewEndpoint, RedeliverDead,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{AdminUser, ApiJson, ApiPath, ApiQuery, OperatorUser};
use crate::AppState;
use billing::audit::Actor;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_endpoint_deliveries))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(redeliver))
        .routes(routes!(redeliver_dead))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    pub items: Vec<Endpoint>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

impl From<Page<Delivery>> for DeliveryPage {
    fn from(p: Page<Delivery>) -> Self {
        Self {
            items: p.items,
            page: p.page,
            size: p.size,
            total: p.total,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Redelivered {
    /// How many dead deliveries were queued again.
    pub redelivered: u64,
}

/// Filters of one endpoint's deliveries.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct EndpointDeliveryFilter {
    pub state: Option<DeliveryState>,
    /// e.g. `order.paid`.
    pub event_type: Option<String>,
}

/// Register an endpoint. The answer carries its signing secret, shown only here and on
/// rotation. Unless `webhooks.allow_private_destinations`, a URL whose host is (or
/// resolves to) a loopback, private, link-local, CGNAT, metadata, multicast,
/// documentation or other non-public address is refused (`validation_failed` on `url`,
/// reason `destination refused: …`).
#[utoipa::path(post, path = "/api/admin/webhooks", tag = "admin", security(("bearer" = [])),
    request_body = NewEndpoint,
    responses(
        (status = 201, body = EndpointWithSecret),
        (status = 400, body = ErrorBody, description = "malformed_json"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "forbidden: not an admin"),
        (status = 422, body = ErrorBody, description = "validation_failed (url: not an absolute http(s) URL, or a refused destination; event_types, description, unknown fields)"),
    ))]
async fn create_endpoint(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiJson(new): ApiJson<NewEndpoint>,
) -> ApiResult<(StatusCode, Json<EndpointWithSecret>)> {
    let created = billing::webhooks::create(&state.ctx, &Actor::api(admin.0.user_id), new).await?;
    tracing::info!(admin = %admin.0.user_id, endpoint_id = %created.endpoint.id, "webhook endpoint created by admin");
    Ok((StatusCode::CREATED, Json(created)))
}

/// Every endpoint (without secrets).
#[utoipa::path(get, path = "/api/admin/webhooks", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, body = EndpointList),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "forbidden: not an admin"),
    ))]
async fn list_endpoints(
    State(state): State<AppState>,
    _operator: OperatorUser,
) -> ApiResult<Json<EndpointList>> {
    let items = billing::webhooks::list(&state.ctx).await?;
    Ok(Json(EndpointList { items }))
}

/// One endpoint, with its health (`failing_since`, `disabled_*`), without its secret.
#[utoipa::path(get, path = "/api/admin/webhooks/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses(
        (status = 200, body = Endpoint),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found"),
    ))]
async fn get_endpoint(
    State(state): State<AppState>,
    _operator: OperatorUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Endpoint>> {
    Ok(Json(
        billing::webhooks::get(&state.ctx, WebhookEndpointId(id)).await?,
    ))
}

/// Change the URL (under the same destination policy as registration), event types,
/// description, or enable/disable. Enabling clears the failure run.
#[utoipa::path(patch, path = "/api/admin/webhooks/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    request_body = EndpointPatch,
    responses(
        (status = 200, body = Endpoint),
        (status = 400, body = ErrorBody, description = "malformed_json"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found"),
        (status = 422, body = ErrorBody, description = "validation_failed (url: not an absolute http(s) URL, or a refused destination; event_types, description, unknown fields)"),
    ))]
async fn update_endpoint(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(patch): ApiJson<EndpointPatch>,
) -> ApiResult<Json<Endpoint>> {
    let endpoint = billing::webhooks::update(
        &state.ctx,
        &Actor::api(admin.0.user_id),
        WebhookEndpointId(id),
        patch,
    )
    .await?;
    tracing::info!(admin = %admin.0.user_id, endpoint_id = id, "webhook endpoint updated by admin");
    Ok(Json(endpoint))
}

/// Remove an endpoint with its deliveries.
#[utoipa::path(delete, path = "/api/admin/webhooks/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found"),
    ))]
async fn delete_endpoint(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    billing::webhooks::delete(
        &state.ctx,
        &Actor::api(admin.0.user_id),
        WebhookEndpointId(id),
    )
    .await?;
    tracing::info!(admin = %admin.0.user_id, endpoint_id = id, "webhook endpoint deleted by admin");
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret, shown in the answer. For `webhooks.secret_rotation_overlap_secs`
/// (24 h) deliveries carry a signature with the old secret too (until
/// `previous_secret_expires_at`), so the receiver can switch without a gap.
#[utoipa::path(post, path = "/api/admin/webhooks/{id}/rotate-secret", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses(
        (status = 200, body = EndpointWithSecret),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found"),
    ))]
async fn rotate_secret(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<EndpointWithSecret>> {
    let rotated = billing::webhooks::rotate_secret(
        &state.ctx,
        &Actor::api(admin.0.user_id),
        WebhookEndpointId(id),
    )
    .await?;
    tracing::info!(admin = %admin.0.user_id, endpoint_id = id, "webhook secret rotated by admin");
    Ok(Json(rotated))
}

/// One endpoint's deliveries, newest first.
#[utoipa::path(get, path = "/api/admin/webhooks/{id}/deliveries", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path), EndpointDeliveryFilter, PageRequest),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, body = ErrorBody, description = "malformed_request (an unknown state)"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found"),
        (status = 422, body = ErrorBody, description = "validation_failed (page, size)"),
    ))]
async fn list_endpoint_deliveries(
    State(state): State<AppState>,
    _operator: OperatorUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(filter): ApiQuery<EndpointDeliveryFilter>,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> ApiResult<Json<DeliveryPage>> {
    let endpoint = billing::webhooks::get(&state.ctx, WebhookEndpointId(id)).await?;
    let filter = DeliveryFilter {
        state: filter.state,
        endpoint_id: Some(endpoint.id),
        event_type: filter.event_type,
        event_id: None,
    };
    let p = billing::webhooks::list_deliveries(&state.ctx, filter, page).await?;
    Ok(Json(p.into()))
}

/// Deliveries by state, endpoint, event type or event id, newest first.
#[utoipa::path(get, path = "/api/admin/deliveries", tag = "admin", security(("bearer" = [])),
    params(DeliveryFilter, PageRequest),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, body = ErrorBody, description = "malformed_request (an unknown state, a bad id)"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "forbidden: not an admin"),
        (status = 422, body = ErrorBody, description = "validation_failed (page, size)"),
    ))]
async fn list_deliveries(
    State(state): State<AppState>,
    _operator: OperatorUser,
    ApiQuery(filter): ApiQuery<DeliveryFilter>,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> ApiResult<Json<DeliveryPage>> {
    let p = billing::webhooks::list_deliveries(&state.ctx, filter, page).await?;
    Ok(Json(p.into()))
}

/// One delivery with every attempt (`attempt_log`: status, error, timing).
#[utoipa::path(get, path = "/api/admin/deliveries/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses(
        (status = 200, body = Delivery),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found"),
    ))]
async fn get_delivery(
    State(state): State<AppState>,
    _operator: OperatorUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Delivery>> {
    Ok(Json(
        billing::webhooks::get_delivery(&state.ctx, DeliveryId(id)).await?,
    ))
}

/// Deliver again now with a fresh retry schedule, whatever the state (the attempt log is
/// kept).
#[utoipa::path(post, path = "/api/admin/deliveries/{id}/redeliver", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses(
        (status = 200, body = Delivery),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found"),
        (status = 422, body = ErrorBody, description = "validation_failed: the endpoint is disabled"),
    ))]
async fn redeliver(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Delivery>> {
    let d = billing::webhooks::redeliver(&state.ctx, &Actor::api(admin.0.user_id), DeliveryId(id))
        .await?;
    tracing::info!(admin = %admin.0.user_id, delivery_id = id, "delivery redelivered by admin");
    Ok(Json(d))
}

/// Redeliver every dead delivery that died since `since` (of enabled endpoints, or of
/// `endpoint_id` only).
#[utoipa::path(post, path = "/api/admin/deliveries/redeliver", tag = "admin", security(("bearer" = [])),
    request_body = RedeliverDead,
    responses(
        (status = 200, body = Redelivered),
        (status = 400, body = ErrorBody, description = "malformed_json"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "validation_failed (since, endpoint_id, unknown fields)"),
    ))]
async fn redeliver_dead(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiJson(req): ApiJson<RedeliverDead>,
) -> ApiResult<Json<Redelivered>> {
    let redelivered =
        billing::webhooks::redeliver_dead(&state.ctx, &Actor::api(admin.0.user_id), req).await?;
    tracing::info!(admin = %admin.0.user_id, redelivered, "dead deliveries redelivered by admin");
    Ok(Json(Redelivered { redelivered }))
}
