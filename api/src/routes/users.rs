//! Accounts: signup and the caller's own profile.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use billing::users::{ProfilePatch, Role, SignupInput, User, UserStatus};
use billing::validate::format_phone;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiJson, AuthUser};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(me, update_me, withdraw))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub id: i64,
    pub email: String,
    pub display_name: String,
    pub real_name: Option<String>,
    #[schema(example = "010-1234-5678")]
    pub phone: String,
    pub city: String,
    pub detail_address: String,
    /// Set for accounts created through social login.
    pub oauth_provider: Option<String>,
    pub role: Role,
    pub status: UserStatus,
    /// Set while an admin has disabled the account.
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserResponse {
    fn from(u: User) -> Self {
        Self {
            id: u.id.0,
            email: u.email,
            display_name: u.display_name,
            real_name: u.real_name,
            phone: format_phone(&u.phone),
            city: u.city,
            detail_address: u.detail_address,
            oauth_provider: u.oauth_provider,
            role: u.role,
            status: u.status,
            disabled_at: u.disabled_at,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// Sign up with e-mail and password.
#[utoipa::path(post, path = "/api/users", tag = "accounts", request_body = SignupInput,
    responses(
        (status = 201, body = UserResponse),
        (status = 400, body = ErrorBody, description = "malformed_json"),
        (status = 409, body = ErrorBody, description = "already_exists (fields name the duplicates)"),
        (status = 422, body = ErrorBody, description = "validation_failed"),
        (status = 429, body = ErrorBody, description = "rate_limited"),
    ))]
async fn signup(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<SignupInput>,
) -> ApiResult<impl IntoResponse> {
    let user = billing::users::signup(&state.ctx, input).await?;
    // The new account's own resource (its id is in the body).
    let location = "/api/users/me";
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(UserResponse::from(user)),
    ))
}

/// The caller's profile.
#[utoipa::path(get, path = "/api/users/me", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = UserResponse), (status = 401, body = ErrorBody)))]
async fn me(State(state): State<AppState>, AuthUser(p): AuthUser) -> ApiResult<Json<UserResponse>> {
    let user = billing::users::get(&state.ctx, p.user_id).await?;
    Ok(Json(user.into()))
}

/// Change profile fields (and, with `current_password`, the password: every other
/// session of the account then ends).
#[utoipa::path(patch, path = "/api/users/me", tag = "accounts", security(("bearer" = [])),
    request_body = ProfilePatch,
    responses(
        (status = 200, body = UserResponse),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "already_exists"),
        (status = 422, body = ErrorBody, description = "validation_failed, invalid_characters"),
        (status = 429, body = ErrorBody, description = "rate_limited: too many conflicting edits"),
    ))]
async fn update_me(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiJson(patch): ApiJson<ProfilePatch>,
) -> ApiResult<Json<UserResponse>> {
    match billing::accounts::update_profile(&state.ctx, &p, patch).await {
        Ok(user) => Ok(Json(user.into())),
        // A conflict says a phone number or display name is someone's: counted per user,
        // and past the allowance answered 429 instead, so they cannot be enumerated.
        Err(e @ billing::Error::AlreadyExists(_)) => {
            state
                .limiters
                .check_account(crate::middleware::AccountKey::ProfileConflict(p.user_id.0))?;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Withdraw the account: every session is revoked and later logins are refused.
#[utoipa::path(delete, path = "/api/users/me", tag = "accounts", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn withdraw(State(state): State<AppState>, AuthUser(p): AuthUser) -> ApiResult<StatusCode> {
    billing::accounts::withdraw(&state.ctx, p.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
