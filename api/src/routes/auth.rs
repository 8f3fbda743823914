//! Login, token refresh, logout and social login.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use billing::oauth::{CallbackOutcome, CallbackParams, CompleteInput};
use billing::sessions::TokenPair;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, ErrorBody};
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
    // Per account too: guessing one account's password from many addresses is limited.
    let email = billing::validate::normalize_email(&req.email);
    state
        .limiters
        .check_account(crate::middleware::AccountKey::Login(&email))?;
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

/// Start social login: redirects to the provider with a fresh `state` and PKCE challenge
/// (S256), and sets the HttpOnly cookie the callback must see.
#[utoipa::path(get, path = "/api/auth/oauth/{provider}/authorize", tag = "auth",
    params(("provider" = String, Path, description = "e.g. kakao, google")),
    responses((status = 303, description = "redirect to the provider",
                headers(("location" = String, description = "the provider's authorization URL"),
                        ("set-cookie" = String, description = "`pv_oauth_binding`: HttpOnly, SameSite=Lax, Secure outside dev, scoped to this provider's callback"))),
              (status = 404, body = ErrorBody, description = "unknown_oauth_provider"),
              (status = 503, body = ErrorBody, description = "dependency_unavailable")))]
async fn oauth_authorize(
    State(state): State<AppState>,
    Path(provider): Path<String>,
) -> ApiResult<Response> {
    let auth = billing::oauth::authorize(&state.ctx, &provider).await?;
    let cookie = binding_cookie(
        &state,
        &auth.binding,
        &auth.cookie_path,
        auth.max_age.as_secs(),
    );
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, auth.url),
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response())
}

/// The `Set-Cookie` line of the browser binding (`max_age` 0 clears it). Secure outside
/// dev, and in dev when the public URL is https; Lax so that the provider's top-level
/// redirect back carries it.
fn binding_cookie(state: &AppState, value: &str, path: &str, max_age: u64) -> String {
    let settings = &state.ctx.settings;
    let secure = settings.environment != billing::settings::Environment::Dev
        || settings.api.public_url.starts_with("https:");
    format!(
        "{}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        billing::oauth::BINDING_COOKIE,
        if secure { "; Secure" } else { "" }
    )
}

/// The browser binding the request carries, if any.
fn binding_from(headers: &HeaderMap) -> Option<String> {
    crate::extract::cookie(headers, billing::oauth::BINDING_COOKIE)
        .map(|value| value.trim_matches('"').to_owned())
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

/// Where the provider sends the user back: redeems `state` once, only from the browser
/// that started the login (its cookie), exchanges the code with the PKCE verifier. Every
/// answer clears the cookie.
#[utoipa::path(get, path = "/api/auth/oauth/{provider}/callback", tag = "auth",
    params(("provider" = String, Path), CallbackParams),
    responses(
        (status = 200, body = CallbackResponse),
        (status = 400, body = ErrorBody, description = "invalid_oauth_state: no state, unknown, expired, already used, another provider's, or without the cookie `authorize` set in this browser"),
        (status = 403, body = ErrorBody, description = "account_withdrawn"),
        (status = 404, body = ErrorBody, description = "unknown_oauth_provider"),
        (status = 409, body = ErrorBody, description = "email_already_registered"),
        (status = 422, body = ErrorBody, description = "validation_failed (no code)"),
        (status = 502, body = ErrorBody, description = "oauth_provider_error"),
        (status = 503, body = ErrorBody, description = "oauth_provider_unavailable or dependency_unavailable"),
    ))]
async fn oauth_callback(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<CallbackParams>,
) -> Response {
    let binding = binding_from(&headers);
    let outcome = billing::oauth::callback(&state.ctx, &provider, binding.as_deref(), params).await;
    let mut response = match outcome {
        Ok(CallbackOutcome::LoggedIn(tokens)) => {
            Json(CallbackResponse::LoggedIn { tokens }).into_response()
        }
        Ok(CallbackOutcome::SignupRequired {
            signup_token,
            email,
        }) => Json(CallbackResponse::SignupRequired {
            signup_token,
            email,
        })
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    };
    // The attempt is spent (or was never this browser's): forget it either way. Only for a
    // configured provider, whose callback path is known to be safe in a header.
    if let Some(path) = billing::oauth::cookie_path(&state.ctx, &provider) {
        if let Ok(clear) = HeaderValue::from_str(&binding_cookie(&state, "", &path, 0)) {
            response.headers_mut().append(header::SET_COOKIE, clear);
        }
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
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
