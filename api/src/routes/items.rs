//! The catalog: listing, the main page, item detail (counting views), admin writes.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use billing::items::{
    ImportFormat, ImportReport, ItemDetail, ItemInput, ItemPatch, ItemSummary, ListQuery, MainPage,
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{AdminUser, ApiJson, ApiPath, ApiQuery, ClientIp};
use crate::AppState;
use billing::audit::Actor;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(main_page))
        .routes(routes!(detail))
        .routes(routes!(create))
        .routes(routes!(update, delete))
        .merge(
            // Catalog files are far bigger than API requests.
            OpenApiRouter::new()
                .routes(routes!(import))
                .layer(axum::extract::DefaultBodyLimit::max(IMPORT_LIMIT_BYTES)),
        )
}

const IMPORT_LIMIT_BYTES: usize = 64 * 1024 * 1024;

#[derive(Serialize, ToSchema)]
pub struct ItemPage {
    pub items: Vec<ItemSummary>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

/// Items for sale, filtered and sorted; ties by id, so paging is stable.
#[utoipa::path(get, operation_id = "list_items", path = "/api/items", tag = "catalog", params(ListQuery),
    responses(
        (status = 200, body = ItemPage),
        (status = 400, body = ErrorBody, description = "malformed_request (e.g. min_price=abc)"),
        (status = 422, body = ErrorBody, description = "validation_failed: page < 1, size outside 1–100, unknown category or sort, min_price > max_price (rejected, not swapped)"),
    ))]
async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    Ok(json_text(billing::items::list(&state.ctx, query).await?))
}

/// JSON that billing already rendered (cached pages are served as stored).
fn json_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The storefront's main page: the 9 best sellers and the 9 deepest discounts.
#[utoipa::path(get, operation_id = "main_page", path = "/api/items/main", tag = "catalog",
    responses((status = 200, body = MainPage)))]
async fn main_page(State(state): State<AppState>) -> ApiResult<Response> {
    Ok(json_text(billing::items::main_page(&state.ctx).await?))
}

/// One item; counts a unique view per client IP per day.
#[utoipa::path(get, operation_id = "get_item", path = "/api/items/{id}", tag = "catalog", params(("id" = i64, Path)),
    responses((status = 200, body = ItemDetail), (status = 404, body = ErrorBody)))]
async fn detail(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ItemDetail>> {
    Ok(Json(billing::items::detail(&state.ctx, id, ip).await?))
}

/// Create an item (categories are classified from `main_function`).
#[utoipa::path(post, operation_id = "create_item", path = "/api/admin/items", tag = "admin", security(("bearer" = [])),
    request_body = ItemInput,
    responses(
        (status = 201, body = ItemDetail),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "validation_failed"),
    ))]
async fn create(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiJson(input): ApiJson<ItemInput>,
) -> ApiResult<impl IntoResponse> {
    let item = billing::items::create(&state.ctx, &Actor::api(admin.0.user_id), input).await?;
    let location = format!("/api/items/{}", item.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(item),
    ))
}

/// Change an item; cached pages are invalidated.
#[utoipa::path(patch, operation_id = "update_item", path = "/api/admin/items/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = ItemPatch,
    responses(
        (status = 200, body = ItemDetail),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    ))]
async fn update(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(patch): ApiJson<ItemPatch>,
) -> ApiResult<Json<ItemDetail>> {
    Ok(Json(
        billing::items::update(&state.ctx, &Actor::api(admin.0.user_id), id, patch).await?,
    ))
}

/// Delete an item (soft: carts and orders show it as unavailable).
#[utoipa::path(delete, operation_id = "delete_item", path = "/api/admin/items/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn delete(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    billing::items::delete(&state.ctx, &Actor::api(admin.0.user_id), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Bulk import: JSON lines (`application/x-ndjson`) or CSV with a header row (`text/csv`),
/// the same fields as item creation. All lines are validated first; one bad line rejects
/// the whole import (422, fields named `line N: field`) and nothing is written.
#[utoipa::path(post, operation_id = "import_items", path = "/api/admin/items/import", tag = "admin", security(("bearer" = [])),
    request_body(content = String, content_type = "application/x-ndjson"),
    responses(
        (status = 201, body = ImportReport),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 415, body = ErrorBody, description = "unsupported_media_type"),
        (status = 422, body = ErrorBody, description = "validation_failed"),
    ))]
async fn import(
    State(state): State<AppState>,
    admin: AdminUser,
    headers: HeaderMap,
    body: String,
) -> ApiResult<(StatusCode, Json<ImportReport>)> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let format = match media.as_str() {
        "application/x-ndjson" | "application/jsonl" | "application/json" => {
            ImportFormat::JsonLines
        }
        "text/csv" => ImportFormat::Csv,
        _ => return Err(ApiError::UnsupportedMediaType),
    };
    let report =
        billing::items::import(&state.ctx, &Actor::api(admin.0.user_id), &body, format).await?;
    Ok((StatusCode::CREATED, Json(report)))
}
