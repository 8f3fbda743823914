//! The API's one error type and the error envelope every failure is answered with.
//!
//! Codes are stable and documented (README "Error codes"). A 5xx never carries details:
//! those are logged here, once, with the request's span.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use billing::error::{Dependency, FieldError};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Billing(#[from] billing::Error),
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    #[error("malformed request: {0}")]
    MalformedRequest(String),
    #[error("expected a JSON body (content-type: application/json)")]
    UnsupportedMediaType,
    #[error("authentication required")]
    Unauthorized,
    #[error("not allowed")]
    Forbidden,
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("the request took too long")]
    Timeout,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code (see README, "Error codes").
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use billing::Error as B;
        match self {
            ApiError::Billing(e) => match e {
                B::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
                B::InvalidCharacters(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_characters"),
                B::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
                B::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                B::ItemUnavailable => (StatusCode::UNPROCESSABLE_ENTITY, "item_unavailable"),
                B::NotPurchased => (StatusCode::FORBIDDEN, "not_purchased"),
                B::AlreadyReviewed => (StatusCode::CONFLICT, "already_reviewed"),
                B::IdempotencyKeyReused => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
                }
                B::PaymentInProgress => (StatusCode::CONFLICT, "payment_in_progress"),
                B::AlreadyCanceled => (StatusCode::CONFLICT, "already_canceled"),
                B::AlreadyRefunded => (StatusCode::CONFLICT, "already_refunded"),
                B::OrderNotCancelable => (StatusCode::CONFLICT, "order_not_cancelable"),
                B::OrderNotPaid => (StatusCode::CONFLICT, "order_not_paid"),
                B::SubscriptionCanceled => (StatusCode::CONFLICT, "subscription_canceled"),
                B::SubscriptionNotActive => (StatusCode::CONFLICT, "subscription_not_active"),
                B::SubscriptionNotPaused => (StatusCode::CONFLICT, "subscription_not_paused"),
                B::ChargeInProgress => (StatusCode::CONFLICT, "charge_in_progress"),
                B::LastProduct => (StatusCode::UNPROCESSABLE_ENTITY, "last_product"),
                B::NothingToRecover => (StatusCode::CONFLICT, "nothing_to_recover"),
                B::RecoveryLinkGone => (StatusCode::GONE, "recovery_link_gone"),
                B::Gateway(_) => (StatusCode::BAD_GATEWAY, "payment_gateway_error"),
                B::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
                B::AccountWithdrawn => (StatusCode::FORBIDDEN, "account_withdrawn"),
                B::AccountDisabled => (StatusCode::FORBIDDEN, "account_disabled"),
                B::CannotChangeOwnAccess => (StatusCode::CONFLICT, "cannot_change_own_access"),
                B::JobNotCancelable { .. } => (StatusCode::CONFLICT, "job_not_cancelable"),
                B::ConsoleNotAllowed => (StatusCode::FORBIDDEN, "console_not_allowed"),
                B::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
                B::InvalidRefreshToken => (StatusCode::UNAUTHORIZED, "invalid_refresh_token"),
                B::RefreshTokenReused => (StatusCode::UNAUTHORIZED, "refresh_token_reused"),
                B::InvalidOAuthState => (StatusCode::BAD_REQUEST, "invalid_oauth_state"),
                B::InvalidSignupToken => (StatusCode::BAD_REQUEST, "invalid_signup_token"),
                B::UnknownOAuthProvider => (StatusCode::NOT_FOUND, "unknown_oauth_provider"),
                B::EmailRegisteredElsewhere => (StatusCode::CONFLICT, "email_already_registered"),
                B::OAuthProvider(_) => (StatusCode::BAD_GATEWAY, "oauth_provider_error"),
                B::Unavailable {
                    dependency: Dependency::OAuthProvider,
                    ..
                } => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "oauth_provider_unavailable",
                ),
                B::Unavailable { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "dependency_unavailable")
                }
                B::MigrationsDiverged(_) => (StatusCode::CONFLICT, "migrations_diverged"),
                B::Database(_) | B::Internal(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
                }
            },
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::MalformedRequest(_) => (StatusCode::BAD_REQUEST, "malformed_request"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::RouteNotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "request_timeout"),
        }
    }

    /// What a client may be told (a 5xx says nothing of its cause).
    pub(crate) fn public_message(&self, status: StatusCode) -> String {
        match self {
            _ if status.is_server_error()
                && !matches!(
                    self,
                    ApiError::Billing(billing::Error::Unavailable { .. }) | ApiError::Timeout
                ) =>
            {
                "internal error".into()
            }
            ApiError::Billing(billing::Error::Unavailable { dependency, .. }) => {
                format!("{} is unavailable; try again shortly", dependency.name())
            }
            // The provider's own words may carry internals; keep them in the log.
            ApiError::Billing(billing::Error::OAuthProvider(_)) => {
                "the login provider refused the request".into()
            }
            other => other.to_string(),
        }
    }
}

impl ApiError {
    /// The one log line of a failure, where it becomes an answer.
    pub(crate) fn log(&self, status: StatusCode, code: &str) {
        if status.is_server_error() || status == StatusCode::BAD_GATEWAY {
            tracing::error!(error = %self, error.debug = ?self, code, "request failed");
        } else {
            tracing::debug!(error = %self, code, "request rejected");
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        self.log(status, code);
        let fields = match &self {
            ApiError::Billing(billing::Error::Validation(f))
            | ApiError::Billing(billing::Error::InvalidCharacters(f))
            | ApiError::Billing(billing::Error::AlreadyExists(f)) => f.clone(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.public_message(status),
                fields,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_secs } = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs.max(1)),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
