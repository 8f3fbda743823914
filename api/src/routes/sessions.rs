//! A customer's sessions: list them (device, address, last use), end one, or sign out
//! everywhere.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use billing::sessions::SessionView;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiPath, AuthUser};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions, end_all_sessions))
        .routes(routes!(end_session))
}

/// The caller's live sessions (one per login), the last used first; `current` marks the
/// one making this request.
#[utoipa::path(get, path = "/api/users/me/sessions", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = Vec<SessionView>), (status = 401, body = ErrorBody)))]
async fn list_sessions(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
) -> ApiResult<Json<Vec<SessionView>>> {
    Ok(Json(billing::sessions::list(&state.ctx, &p).await?))
}

/// End one of the caller's sessions (e.g. a lost phone's): its tokens stop working at once.
#[utoipa::path(delete, path = "/api/users/me/sessions/{id}", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "the session's id (a UUID)")),
    responses(
        (status = 204),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found: no live session of yours"),
    ))]
async fn end_session(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> ApiResult<StatusCode> {
    billing::sessions::end(&state.ctx, &p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Ended {
    /// How many sessions ended (this one included).
    pub ended: u64,
}

/// Sign out everywhere: every session of the caller ends, this one too.
#[utoipa::path(delete, path = "/api/users/me/sessions", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = Ended), (status = 401, body = ErrorBody)))]
async fn end_all_sessions(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
) -> ApiResult<Json<Ended>> {
    let ended = billing::sessions::end_all(&state.ctx, &p).await?;
    Ok(Json(Ended { ended }))
}
