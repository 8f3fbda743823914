//! The console's failures, answered as pages: a missing session sends the browser to sign
//! in; anything else is an error page with the same stable code and status the JSON API
//! would give, logged once here.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No console session (or it ended): sign in, then come back to `next`.
    #[error("sign-in required")]
    SignInRequired { next: String },
    /// A form without its session's CSRF token, or posted from another origin.
    #[error("the form's CSRF token is missing or wrong")]
    CsrfFailed,
    #[error("template: {0}")]
    Render(String),
}

impl From<billing::Error> for ConsoleError {
    fn from(e: billing::Error) -> Self {
        Self::Api(ApiError::Billing(e))
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    status: u16,
    code: &'a str,
    message: &'a str,
    /// Which input was refused and why (validation, characters, conflicts).
    fields: &'a [billing::error::FieldError],
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            ConsoleError::SignInRequired { next } => {
                let to = format!(
                    "/admin/sign-in?next={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                );
                return super::see_other(&to);
            }
            ConsoleError::CsrfFailed => {
                tracing::warn!("console form refused: CSRF token missing or wrong");
                (
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "This form is not from your console session (or the session changed). \
                     Reload the page and try again."
                        .to_owned(),
                )
            }
            ConsoleError::Render(e) => {
                tracing::error!(error = %e, "console page failed to render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "internal error".to_owned(),
                )
            }
            ConsoleError::Api(e) => {
                let (status, code) = e.status_and_code();
                e.log(status, code);
                (status, code, e.public_message(status))
            }
        };
        let fields: &[billing::error::FieldError] = match &self {
            ConsoleError::Api(ApiError::Billing(
                billing::Error::Validation(f)
                | billing::Error::InvalidCharacters(f)
                | billing::Error::AlreadyExists(f),
            )) => f,
            _ => &[],
        };
        let page = ErrorPage {
            status: status.as_u16(),
            code,
            message: &message,
            fields,
        };
        let body = page
            .render()
            .unwrap_or_else(|_| format!("{} {code}", status.as_u16()));
        (status, Html(body)).into_response()
    }
}
