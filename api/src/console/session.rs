//! Console sign-in and the two ways a request reaches a page: [`Viewer`] (any signed-in
//! admin or operator, for pages) and [`Action`] (an admin's form, its CSRF token checked,
//! for everything that changes a row).
//!
//! The session lives in Postgres (`billing::sessions::console_*`); the browser holds only
//! an HttpOnly, SameSite=Strict cookie (Secure outside dev and test). The sign-in form has
//! no session yet, so it is protected by a double-submit token instead.

use askama::Template;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use billing::sessions::ConsoleSession;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{render, see_other, ConsoleError};
use crate::error::ApiError;
use crate::extract::{cookie, Client};
use crate::AppState;

/// The session cookie's name: with `Secure`, the `__Host-` prefix also pins it to this
/// host and path `/` (browsers refuse it otherwise); plain HTTP (dev, test) cannot use it.
fn session_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-pv_console"
    } else {
        "pv_console"
    }
}

fn sign_in_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-pv_console_signin"
    } else {
        "pv_console_signin"
    }
}

fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// A signed-in admin or operator.
pub struct Viewer(pub ConsoleSession);

impl<S> FromRequestParts<S> for Viewer
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let secure = state.ctx.settings.console_cookie_secure();
        let next = if parts.method == Method::GET {
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/admin".to_owned())
        } else {
            "/admin".to_owned()
        };
        let Some(token) = cookie(&parts.headers, session_cookie(secure)) else {
            return Err(ConsoleError::SignInRequired { next });
        };
        let session = billing::sessions::console_session(&state.ctx, token)
            .await?
            .ok_or(ConsoleError::SignInRequired { next })?;
        tracing::Span::current().record("user_id", session.user_id.0);
        Ok(Viewer(session))
    }
}

/// An admin's console form: the session's CSRF token (field `csrf`) checked before
/// anything else is read, then the role, then the fields (`T`). Operators get 403.
pub struct Action<T> {
    pub session: ConsoleSession,
    pub form: T,
}

impl<S, T> FromRequest<S> for Action<T>
where
    AppState: FromRef<S>,
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ConsoleError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Viewer(session) = Viewer::from_request_parts(&mut parts, state).await?;
        if !same_origin(&parts.headers) {
            return Err(ConsoleError::CsrfFailed);
        }
        let req = Request::from_parts(parts, body);
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::MalformedRequest(e.body_text()))?;
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(&bytes).into_owned().collect();
        let csrf = pairs.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v);
        if !csrf.is_some_and(|t| session.csrf_matches(t)) {
            return Err(ConsoleError::CsrfFailed);
        }
        if !session.can_act() {
            return Err(ApiError::Forbidden.into());
        }
        let form = parse_fields(pairs)?;
        Ok(Action { session, form })
    }
}

/// A form's fields (but its CSRF token) as `T`: control characters refused (422
/// `invalid_characters`; newlines and tabs are text), wrong types 422 `validation_failed`.
fn parse_fields<T: DeserializeOwned>(pairs: Vec<(String, String)>) -> Result<T, ConsoleError> {
    let fields: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| k != "csrf").collect();
    if let Some((k, _)) = fields.iter().find(|(k, v)| {
        k.chars()
            .chain(v.chars())
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    }) {
        let field = k
            .chars()
            .filter(|c| !c.is_control())
            .take(50)
            .collect::<String>();
        return Err(
            billing::Error::InvalidCharacters(vec![billing::error::FieldError::new(
                field,
                "must not contain control characters",
            )])
            .into(),
        );
    }
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&fields)
        .finish();
    serde_urlencoded::from_str(&encoded).map_err(|e| {
        billing::Error::Validation(vec![billing::error::FieldError::new("form", e.to_string())])
            .into()
    })
}

/// A browser says where a form came from (`Origin`, or `Sec-Fetch-Site`); one from another
/// site is refused even before its token is looked at. Clients that send neither are
/// judged by the token alone.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Where to go after signing in: a console path only (never another site, `//host`).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if (n == "/admin" || n.starts_with("/admin/") || n.starts_with("/admin?"))
                && !n.contains("//")
                && !n.contains('\\')
                && !n.starts_with("/admin/sign-") =>
        {
            n
        }
        _ => "/admin",
    }
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage<'a> {
    token: &'a str,
    next: &'a str,
    email: &'a str,
    error: Option<&'a str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SignInQuery {
    next: Option<String>,
}

fn sign_in_page(
    state: &AppState,
    next: &str,
    email: &str,
    error: Option<&str>,
    status: axum::http::StatusCode,
) -> Response {
    let secure = state.ctx.settings.console_cookie_secure();
    let token = billing::sessions::random_token();
    let page = SignInPage {
        token: &token,
        next,
        email,
        error,
    };
    match render(&page) {
        Ok(html) => {
            let mut response = (status, html).into_response();
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(sign_in_cookie(secure), &token, 3600, secure),
            );
            response
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /admin/sign-in`: the form, with a fresh double-submit token.
pub async fn sign_in_form(State(state): State<AppState>, Query(q): Query<SignInQuery>) -> Response {
    let next = safe_next(q.next.as_deref()).to_owned();
    sign_in_page(&state, &next, "", None, axum::http::StatusCode::OK)
}

#[derive(Deserialize)]
pub struct SignInForm {
    email: String,
    password: String,
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /admin/sign-in`: an admin or operator's e-mail and password → the session cookie,
/// then the page they were going to.
pub async fn sign_in(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let secure = state.ctx.settings.console_cookie_secure();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let form: SignInForm = match parse_fields(pairs) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let next = safe_next(form.next.as_deref()).to_owned();
    let expected = cookie(&headers, sign_in_cookie(secure));
    let token_ok = expected.is_some_and(|t| !t.is_empty() && t == form.token);
    if !token_ok || !same_origin(&headers) {
        return ConsoleError::CsrfFailed.into_response();
    }
    let email = billing::validate::normalize_email(&form.email);
    if let Err(e) = state
        .limiters
        .check_account(crate::middleware::AccountKey::Login(&email))
    {
        return ConsoleError::from(e).into_response();
    }
    let signed_in =
        billing::sessions::console_sign_in(&state.ctx, &form.email, &form.password, &client).await;
    let signed_in = match signed_in {
        Ok(s) => s,
        Err(e) => {
            let e = ApiError::Billing(e);
            let (status, code) = e.status_and_code();
            if status.is_server_error() {
                return ConsoleError::Api(e).into_response();
            }
            e.log(status, code);
            let message = e.public_message(status);
            return sign_in_page(&state, &next, &form.email, Some(&message), status);
        }
    };
    let ttl = state.ctx.settings.console.session_ttl_secs.as_secs();
    let mut response = see_other(&next);
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(session_cookie(secure), &signed_in.cookie, ttl, secure),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(sign_in_cookie(secure), "", 0, secure),
    );
    response
}

/// The fields of a form that is only a button (its CSRF token aside).
#[derive(Deserialize)]
pub struct NoFields {}

/// `POST /admin/sign-out` (any signed-in role; CSRF-checked like every form).
pub async fn sign_out(
    State(state): State<AppState>,
    Viewer(session): Viewer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    let csrf = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    if !same_origin(&headers) || !csrf.is_some_and(|t| session.csrf_matches(&t)) {
        return Err(ConsoleError::CsrfFailed);
    }
    billing::sessions::console_sign_out(&state.ctx, &session).await?;
    let secure = state.ctx.settings.console_cookie_secure();
    let mut response = see_other("/admin/sign-in");
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(session_cookie(secure), "", 0, secure),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_in_the_console() {
        assert_eq!(
            safe_next(Some("/admin/jobs?state=failed")),
            "/admin/jobs?state=failed"
        );
        assert_eq!(safe_next(Some("/admin")), "/admin");
        for bad in [
            "//evil.example/admin",
            "https://evil.example/admin",
            "/admin//evil.example",
            "/administrator",
            "/admin\\@evil",
            "/admin/sign-out",
            "/api/users/me",
        ] {
            assert_eq!(safe_next(Some(bad)), "/admin", "{bad}");
        }
        assert_eq!(safe_next(None), "/admin");
    }

    #[test]
    fn forms_from_another_origin_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h), "no Origin: judged by the token");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn form_fields_refuse_control_characters() {
        #[derive(Deserialize, Debug)]
        struct F {
            #[allow(dead_code)]
            note: String,
        }
        let ok: Result<F, _> = parse_fields(vec![
            ("csrf".into(), "x".into()),
            ("note".into(), "two\nlines".into()),
        ]);
        assert!(ok.is_ok());
        let bad: Result<F, _> = parse_fields(vec![("note".into(), "nul\0".into())]);
        assert!(matches!(
            bad,
            Err(ConsoleError::Api(ApiError::Billing(
                billing::Error::InvalidCharacters(_)
            )))
        ));
    }
}
