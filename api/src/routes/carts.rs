//! Carts: the caller's normal and subscription carts, their lines and computed totals.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use billing::carts::{AddLine, Cart, CartKind, CartLine, LinePatch};
use billing::money::Money;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, AuthUser};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_cart))
        .routes(routes!(add_line))
        .routes(routes!(update_line, remove_line))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CartLineResponse {
    pub item_id: i64,
    pub title: String,
    pub brand: String,
    pub thumbnail_url: Option<String>,
    pub quantity: i32,
    /// Subscription cart: ship every N days; null in the normal cart.
    pub period_days: Option<i32>,
    /// KRW, the item's current price before discount.
    #[schema(value_type = i64)]
    pub unit_origin_price: Money,
    #[schema(value_type = i64)]
    pub unit_discount: Money,
    /// The real price (origin − discount).
    #[schema(value_type = i64)]
    pub unit_price: Money,
    /// `unit_price × quantity`.
    #[schema(value_type = i64)]
    pub line_total: Money,
    /// False when the item was deleted or taken off sale: the line stays but counts in
    /// no total and cannot be ordered.
    pub available: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CartResponse {
    pub kind: CartKind,
    /// In the order they were first added.
    pub lines: Vec<CartLineResponse>,
    /// Units (sum of quantities) of the available lines.
    pub item_count: i64,
    /// Σ origin price × quantity over the available lines.
    #[schema(value_type = i64)]
    pub total_price: Money,
    /// Σ discount × quantity over the available lines.
    #[schema(value_type = i64)]
    pub total_discount: Money,
    /// Σ real price × quantity over the available lines (= total_price − total_discount).
    #[schema(value_type = i64)]
    pub payable: Money,
}

impl From<CartLine> for CartLineResponse {
    fn from(l: CartLine) -> Self {
        Self {
            item_id: l.item_id,
            title: l.title,
            brand: l.brand,
            thumbnail_url: l.thumbnail_url,
            quantity: l.quantity,
            period_days: l.period_days,
            unit_origin_price: l.unit_origin_price,
            unit_discount: l.unit_discount,
            unit_price: l.unit_price,
            line_total: l.line_total,
            available: l.available,
        }
    }
}

impl From<Cart> for CartResponse {
    fn from(c: Cart) -> Self {
        Self {
            kind: c.kind,
            lines: c.lines.into_iter().map(Into::into).collect(),
            item_count: c.totals.item_count,
            total_price: c.totals.total_price,
            total_discount: c.totals.total_discount,
            payable: c.totals.payable,
        }
    }
}

/// The caller's cart with totals from the items' current prices (empty if never used).
#[utoipa::path(get, path = "/api/carts/{kind}", tag = "carts", security(("bearer" = [])),
    params(("kind" = CartKind, Path, description = "`normal` or `subscription`")),
    responses(
        (status = 200, body = CartResponse),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found: kind is neither normal nor subscription"),
    ))]
async fn get_cart(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath(kind): ApiPath<CartKind>,
) -> ApiResult<Json<CartResponse>> {
    Ok(Json(
        billing::carts::get(&state.ctx, p.user_id, kind)
            .await?
            .into(),
    ))
}

/// Put an item in the cart. If it is already there, the quantity is added to the line's
/// (capped at 99) and, in the subscription cart, the period replaced. Answers the cart.
#[utoipa::path(post, path = "/api/carts/{kind}/items", tag = "carts", security(("bearer" = [])),
    params(("kind" = CartKind, Path, description = "`normal` or `subscription`")),
    request_body = AddLine,
    responses(
        (status = 200, body = CartResponse),
        (status = 400, body = ErrorBody, description = "malformed_json"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found: unknown kind, or the item does not exist or was deleted"),
        (status = 422, body = ErrorBody, description = "validation_failed: item_id missing, quantity outside 1–99, period_days missing or outside 7–365 in the subscription cart or present in the normal cart; item_unavailable: the item is taken off sale"),
    ))]
async fn add_line(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath(kind): ApiPath<CartKind>,
    ApiJson(input): ApiJson<AddLine>,
) -> ApiResult<Json<CartResponse>> {
    let cart = billing::carts::add(&state.ctx, p.user_id, kind, input).await?;
    Ok(Json(cart.into()))
}

/// Change a line's quantity (1–99) and, in the subscription cart, its period. Answers the cart.
#[utoipa::path(patch, path = "/api/carts/{kind}/items/{item_id}", tag = "carts",
    security(("bearer" = [])),
    params(("kind" = CartKind, Path, description = "`normal` or `subscription`"),
           ("item_id" = i64, Path)),
    request_body = LinePatch,
    responses(
        (status = 200, body = CartResponse),
        (status = 400, body = ErrorBody, description = "malformed_json"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found: unknown kind, or the item is not in the caller's cart"),
        (status = 422, body = ErrorBody, description = "validation_failed: quantity outside 1–99, period_days outside 7–365 or given in the normal cart"),
    ))]
async fn update_line(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath((kind, item_id)): ApiPath<(CartKind, i64)>,
    ApiJson(patch): ApiJson<LinePatch>,
) -> ApiResult<Json<CartResponse>> {
    let cart = billing::carts::update_line(&state.ctx, p.user_id, kind, item_id, patch).await?;
    Ok(Json(cart.into()))
}

/// Take a line out of the cart.
#[utoipa::path(delete, path = "/api/carts/{kind}/items/{item_id}", tag = "carts",
    security(("bearer" = [])),
    params(("kind" = CartKind, Path, description = "`normal` or `subscription`"),
           ("item_id" = i64, Path)),
    responses(
        (status = 204),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found: unknown kind, or the item is not in the caller's cart"),
    ))]
async fn remove_line(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath((kind, item_id)): ApiPath<(CartKind, i64)>,
) -> ApiResult<StatusCode> {
    billing::carts::remove_line(&state.ctx, p.user_id, kind, item_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
