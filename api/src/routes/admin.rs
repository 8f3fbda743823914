//! Operator routes (role `admin`).

use axum::extract::State;
use axum::Json;
use billing::page::{Page, PageRequest};
use billing::users::UserFilter;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{AdminUser, ApiQuery};
use crate::routes::users::UserResponse;
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_users))
}

#[derive(Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<UserResponse>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

impl From<Page<billing::users::User>> for UserPage {
    fn from(p: Page<billing::users::User>) -> Self {
        let p = p.map(UserResponse::from);
        Self {
            items: p.items,
            page: p.page,
            size: p.size,
            total: p.total,
        }
    }
}

/// Search accounts.
#[utoipa::path(get, path = "/api/admin/users", tag = "admin", security(("bearer" = [])),
    params(UserFilter, PageRequest),
    responses(
        (status = 200, body = UserPage),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "forbidden: not an admin"),
        (status = 422, body = ErrorBody, description = "validation_failed (page, size)"),
    ))]
async fn list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(filter): ApiQuery<UserFilter>,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> ApiResult<Json<UserPage>> {
    let users = billing::users::list(&state.ctx, filter, page).await?;
    Ok(Json(users.into()))
}
