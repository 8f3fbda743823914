//! Login, token refresh, logout and social login.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use billing::oauth::{CallbackOutcome, CallbackParams, CompleteInput};
use billing::sessions::TokenPair;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, AuthUser, Client};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(oauth_authorize))
        .routes(routes!(oauth_callback))
        .routes(routes!(oauth_complete))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct LoginRequest {
    #[schema(required = true)]
    pub email: String,
    #[schema(required = true)]
    pub password: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct RefreshRequest {
    #[schema(required = true)]
    pub refresh_token: String,
}

/// Log in with e-mail and password.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 401, body = ErrorBody, description = "invalid_credentials"),
        (status = 403, body = ErrorBody, description = "account_withdrawn"),
        (status = 429, body = ErrorBody, description = "rate_limited"),
        (status = 503, body = ErrorBody, description = "dependency_unavailable"),
    ))]
async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<TokenPair>> {
    Ok(Json(
        billing::sessions::login(&state.ctx, &req.email, &req.password, &client).await?,
    ))
}

/// Exchange a refresh token for a new pair (the old one is consumed; reusing it revokes
/// the whole session).
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 401, body = ErrorBody, description = "invalid_refresh_token or refresh_token_reused"),
        (status = 503, body = ErrorBody, description = "dependency_unavailable"),
    ))]
async fn refresh(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenPair>> {
    if req.refresh_token.is_empty() {
        return Err(billing::Error::validation("refresh_token", "is required").into());
    }
    Ok(Json(
        billing::sessions::refresh(&state.ctx, &req.refresh_token, &client).await?,
    ))
}

/// End this session: the access token and every refresh token of this login stop working.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
async fn logout(State(state): State<AppState>, AuthUser(p): AuthUser) -> ApiResult<StatusCode> {
    billing::sessions::logout(&state.ctx, &p).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start social login: redirects to the provider with a signed `state`.
#[utoipa::path(get, path = "/api/auth/oauth/{provider}/authorize", tag = "auth",
    params(("provider" = String, Path, description = "e.g. kakao, google")),
    responses((status = 303, description = "redirect to the provider"),
              (status = 404, body = ErrorBody, description = "unknown_oauth_provider")))]
async fn oauth_authorize(
    State(state): State<AppState>,
    Path(provider): Path<String>,
) -> ApiResult<Response> {
    let url = billing::oauth::authorize_url(&state.ctx, &provider)?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, url)]).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CallbackResponse {
    /// A returning user: the session's tokens.
    LoggedIn {
        #[serde(flatten)]
        tokens: TokenPair,
    },
    /// A first-time user: finish with `POST /api/auth/oauth/complete`.
    SignupRequired {
        signup_token: String,
        email: Option<String>,
    },
}

/// Where the provider sends the user back: checks `state`, exchanges the code.
#[utoipa::path(get, path = "/api/auth/oauth/{provider}/callback", tag = "auth",
    params(("provider" = String, Path), CallbackParams),
    responses(
        (status = 200, body = CallbackResponse),
        (status = 400, body = ErrorBody, description = "invalid_oauth_state"),
        (status = 409, body = ErrorBody, description = "email_already_registered"),
        (status = 502, body = ErrorBody, description = "oauth_provider_error"),
        (status = 503, body = ErrorBody, description = "oauth_provider_unavailable"),
    ))]
async fn oauth_callback(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    ApiQuery(params): ApiQuery<CallbackParams>,
) -> ApiResult<Json<CallbackResponse>> {
    Ok(Json(
        match billing::oauth::callback(&state.ctx, &provider, params).await? {
            CallbackOutcome::LoggedIn(tokens) => CallbackResponse::LoggedIn { tokens },
            CallbackOutcome::SignupRequired {
                signup_token,
                email,
            } => CallbackResponse::SignupRequired {
                signup_token,
                email,
            },
        },
    ))
}

/// Finish a first-time social signup with contact details.
#[utoipa::path(post, path = "/api/auth/oauth/complete", tag = "auth", request_body = CompleteInput,
    responses(
        (status = 201, body = TokenPair),
        (status = 400, body = ErrorBody, description = "invalid_signup_token"),
        (status = 409, body = ErrorBody, description = "already_exists or email_already_registered"),
        (status = 422, body = ErrorBody, description = "validation_failed"),
    ))]
async fn oauth_complete(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<CompleteInput>,
) -> ApiResult<(StatusCode, Json<TokenPair>)> {
    let tokens = billing::oauth::complete(&state.ctx, input).await?;
    Ok((StatusCode::CREATED, Json(tokens)))
}
