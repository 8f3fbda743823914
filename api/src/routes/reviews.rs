//! Reviews: an item's reviews (public), writing, editing and deleting one's own, and the
//! caller's list.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use billing::page::{Page, PageRequest};
use billing::reviews::{Review, ReviewInput, ReviewPatch, ReviewQuery};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_for_item, create))
        .routes(routes!(update, delete))
        .routes(routes!(list_mine))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewResponse {
    pub id: i64,
    pub item_id: i64,
    pub item_title: String,
    /// The writer's display name; null once the account is withdrawn.
    pub author: Option<String>,
    #[schema(minimum = 1, maximum = 5)]
    pub star: i16,
    pub content: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Review> for ReviewResponse {
    fn from(r: Review) -> Self {
        Self {
            id: r.id,
            item_id: r.item_id,
            item_title: r.item_title,
            author: r.author,
            star: r.star,
            content: r.content,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ReviewPage {
    pub items: Vec<ReviewResponse>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

impl From<Page<Review>> for ReviewPage {
    fn from(p: Page<Review>) -> Self {
        let p = p.map(ReviewResponse::from);
        Self {
            items: p.items,
            page: p.page,
            size: p.size,
            total: p.total,
        }
    }
}

/// An item's active reviews.
#[utoipa::path(get, path = "/api/items/{id}/reviews", tag = "reviews",
    params(("id" = i64, Path, description = "item id"), ReviewQuery, PageRequest),
    responses(
        (status = 200, body = ReviewPage),
        (status = 400, body = ErrorBody, description = "malformed_request (e.g. page=abc)"),
        (status = 404, body = ErrorBody, description = "not_found: no such item, or it was deleted"),
        (status = 422, body = ErrorBody, description = "validation_failed: unknown sort, page < 1, size outside 1–100"),
    ))]
async fn list_for_item(
    State(state): State<AppState>,
    ApiPath(item_id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<ReviewQuery>,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> ApiResult<Json<ReviewPage>> {
    let reviews = billing::reviews::list_for_item(&state.ctx, item_id, query, page).await?;
    Ok(Json(reviews.into()))
}

/// Review an item the caller bought (in one of their paid orders). One active review per
/// item; the item's star average and review count are updated in the same transaction.
#[utoipa::path(post, path = "/api/items/{id}/reviews", tag = "reviews", security(("bearer" = [])),
    params(("id" = i64, Path, description = "item id")),
    request_body = ReviewInput,
    responses(
        (status = 201, body = ReviewResponse),
        (status = 400, body = ErrorBody, description = "malformed_json"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "not_purchased: the item is in none of the caller's paid orders"),
        (status = 404, body = ErrorBody, description = "not_found: no such item, or it was deleted"),
        (status = 409, body = ErrorBody, description = "already_reviewed: the caller has an active review of this item"),
        (status = 422, body = ErrorBody, description = "validation_failed: star outside 1–5, content blank or over 1000 characters"),
    ))]
async fn create(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath(item_id): ApiPath<i64>,
    ApiJson(input): ApiJson<ReviewInput>,
) -> ApiResult<(StatusCode, Json<ReviewResponse>)> {
    let review = billing::reviews::create(&state.ctx, p.user_id, item_id, input).await?;
    Ok((StatusCode::CREATED, Json(review.into())))
}

/// Edit one's own review (star and/or content); the item's average is recomputed.
#[utoipa::path(patch, path = "/api/reviews/{id}", tag = "reviews", security(("bearer" = [])),
    params(("id" = i64, Path, description = "review id")),
    request_body = ReviewPatch,
    responses(
        (status = 200, body = ReviewResponse),
        (status = 400, body = ErrorBody, description = "malformed_json"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found: no such active review of the caller's (others' reviews are not found too)"),
        (status = 422, body = ErrorBody, description = "validation_failed: star outside 1–5, content blank or over 1000 characters"),
    ))]
async fn update(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(patch): ApiJson<ReviewPatch>,
) -> ApiResult<Json<ReviewResponse>> {
    let review = billing::reviews::update(&state.ctx, p.user_id, id, patch).await?;
    Ok(Json(review.into()))
}

/// Delete one's own review (soft); the item can then be reviewed again.
#[utoipa::path(delete, path = "/api/reviews/{id}", tag = "reviews", security(("bearer" = [])),
    params(("id" = i64, Path, description = "review id")),
    responses(
        (status = 204),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found: no such active review of the caller's (others' reviews are not found too)"),
    ))]
async fn delete(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    billing::reviews::delete(&state.ctx, p.user_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's active reviews, newest first.
#[utoipa::path(get, path = "/api/users/me/reviews", tag = "reviews", security(("bearer" = [])),
    params(PageRequest),
    responses(
        (status = 200, body = ReviewPage),
        (status = 400, body = ErrorBody, description = "malformed_request"),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "validation_failed: page < 1, size outside 1–100"),
    ))]
async fn list_mine(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> ApiResult<Json<ReviewPage>> {
    let reviews = billing::reviews::list_mine(&state.ctx, p.user_id, page).await?;
    Ok(Json(reviews.into()))
}
