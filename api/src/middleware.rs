//! Cross-cutting request handling: client IP, rate limits, timeouts, metrics.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tracing::Instrument;

use crate::error::ApiError;
use crate::extract::{client_ip, ClientIp};
use crate::AppState;

/// Per-client-IP limiters (one for every route, a stricter one for credential routes),
/// and one per account (login attempts for an e-mail, a user's conflicting profile edits).
pub struct Limiters {
    general: DefaultKeyedRateLimiter<IpAddr>,
    credentials: DefaultKeyedRateLimiter<IpAddr>,
    accounts: DefaultKeyedRateLimiter<String>,
}

/// What an account limiter counts.
pub enum AccountKey<'a> {
    /// A login attempt for this (normalized) e-mail.
    Login(&'a str),
    /// A profile edit of this user answered 409.
    ProfileConflict(i64),
}

impl Limiters {
    pub fn new(settings: &billing::settings::RateLimitSettings) -> Self {
        let nz = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
        let general =
            Quota::per_second(nz(settings.per_ip_per_sec)).allow_burst(nz(settings.per_ip_burst));
        let credentials =
            Quota::per_minute(nz(settings.login_per_min)).allow_burst(nz(settings.login_burst));
        let accounts = Quota::per_minute(nz(settings.per_account_per_min))
            .allow_burst(nz(settings.per_account_burst));
        Self {
            general: RateLimiter::keyed(general),
            credentials: RateLimiter::keyed(credentials),
            accounts: RateLimiter::keyed(accounts),
        }
    }

    /// Takes one from `key`'s account allowance; `RateLimited` once it is spent.
    pub fn check_account(&self, key: AccountKey<'_>) -> Result<(), ApiError> {
        let key = match key {
            AccountKey::Login(email) => format!("login:{email}"),
            AccountKey::ProfileConflict(user) => format!("conflict:{user}"),
        };
        check(&self.accounts, &key)
    }

    /// Forgets clients idle long enough to be back at full burst (bounds memory).
    pub fn prune(&self) {
        self.general.retain_recent();
        self.credentials.retain_recent();
        self.accounts.retain_recent();
    }
}

fn check<K>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), ApiError>
where
    K: std::hash::Hash + Eq + Clone,
{
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::RateLimited {
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        }
    })
}

/// Routes that take credentials get the stricter per-IP limit.
fn is_credential_route(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::POST
        && matches!(
            path,
            "/api/users"
                | "/api/auth/login"
                | "/api/auth/refresh"
                | "/api/auth/oauth/complete"
                | "/admin/sign-in"
        )
}

pub async fn client_ip_and_rate_limit(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let ip = client_ip(
        req.headers(),
        req.extensions().get::<ConnectInfo<SocketAddr>>(),
        &state.ctx.settings.api.trusted_proxies,
    );
    req.extensions_mut().insert(ip);
    tracing::Span::current().record("client_ip", tracing::field::display(ip.0));
    let limiters: &Arc<Limiters> = &state.limiters;
    let ClientIp(addr) = ip;
    if let Err(e) = check(&limiters.general, &addr) {
        return e.into_response();
    }
    if is_credential_route(req.method(), req.uri().path()) {
        if let Err(e) = check(&limiters.credentials, &addr) {
            return e.into_response();
        }
    }
    next.run(req).await
}

pub async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.ctx.settings.api.request_timeout_ms;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Runs the rest of the request (the handler and its database work) on a task of its own,
/// so that neither a client that disconnects nor the request timeout drops it halfway
/// through a transaction: it runs to its end, and what it wrote either commits or rolls
/// back as the handler decides. The request id and the span go with it; a panic becomes
/// a 500.
pub async fn run_to_completion(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let request_id = billing::telemetry::current_request_id();
    let handler = billing::telemetry::with_request_id(request_id, next.run(req))
        .instrument(tracing::Span::current());
    match state.handlers.spawn(handler).await {
        Ok(response) => response,
        Err(e) => {
            let what = if e.is_panic() {
                "panicked"
            } else {
                "was cancelled"
            };
            ApiError::Billing(billing::Error::Internal(format!("handler {what}"))).into_response()
        }
    }
}

/// `http_requests_total` and `http_request_duration_seconds` by matched route template,
/// method and status — every label from a bounded set: a method we do not serve is
/// `other`, a path no route matches is `unmatched`, so no request can grow `/metrics`.
pub async fn metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method()).to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The request path as logged: a token that is someone's key (a payment's or checkout's
/// return URL, a checkout's status URL, a recovery link) is replaced by `{token}`, so logs
/// never hold one — spent or not.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    const KEYED: [&str; 3] = [
        "/api/payments/kakaopay/",
        "/api/checkouts/",
        "/api/recovery/",
    ];
    match path.rsplit_once('/') {
        Some((head, last))
            if !last.is_empty()
                && KEYED.iter().any(|p| path.starts_with(p))
                && last != "kakaopay" =>
        {
            std::borrow::Cow::Owned(format!("{head}/{{token}}"))
        }
        _ => std::borrow::Cow::Borrowed(path),
    }
}

fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Whether a client's `X-Request-Id` is one we log and propagate as sent: 1–64 characters
/// of letters, digits and `-_.:` — a UUID, a ULID, a proxy's id — and nothing that could
/// forge a log line.
fn safe_request_id(v: &[u8]) -> bool {
    (1..=64).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Drops an unsafe `X-Request-Id` (too long, or with characters other than
/// [`safe_request_id`]'s) so that a fresh one is made for the request instead.
pub async fn sanitize_request_id(mut req: Request, next: Next) -> Response {
    let unsafe_id = req
        .headers()
        .get_all("x-request-id")
        .iter()
        .any(|v| !safe_request_id(v.as_bytes()))
        || req.headers().get_all("x-request-id").iter().count() > 1;
    if unsafe_id {
        req.headers_mut().remove("x-request-id");
    }
    next.run(req).await
}

/// The percent-decoded text of a URL part, for the control-character check.
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every text input of the URL — the path and each query parameter, percent-decoded —
/// refuses control characters with 422 `invalid_characters` (naming `path` or the
/// parameter) before any handler runs a query: a NUL byte would otherwise reach Postgres
/// (error 22021, a 500).
pub async fn strict_path_and_query(req: Request, next: Next) -> Response {
    // The console answers with its error page, the API with the JSON envelope.
    let console = req.uri().path().starts_with("/admin");
    let refused = |field: String| {
        let e = ApiError::Billing(billing::Error::InvalidCharacters(vec![
            billing::error::FieldError::new(field, "must not contain control characters"),
        ]));
        if console {
            crate::console::ConsoleError::from(e).into_response()
        } else {
            e.into_response()
        }
    };
    if percent_decoded(req.uri().path())
        .chars()
        .any(char::is_control)
    {
        return refused("path".to_owned());
    }
    if let Some(query) = req.uri().query() {
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k.chars().chain(v.chars()).any(char::is_control) {
                return refused(k.chars().filter(|c| !c.is_control()).take(50).collect());
            }
        }
    }
    next.run(req).await
}

/// Makes the request's `X-Request-Id` current while it is served, so the jobs it enqueues
/// carry it (`fang_tasks.request_id`) and their log lines name it.
pub async fn request_scope(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| safe_request_id(v.as_bytes()))
        .map(str::to_owned);
    billing::telemetry::with_request_id(id, next.run(req)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_and_plain() {
        let cases: &[(&[u8], bool)] = &[
            (b"3f1c9a2e-5b7d-4c1e-9f00-123456789abc", true),
            (b"01HZX3J5Q8K2M4N6P8R0T2V4W6", true),
            (b"req-42.edge:7", true),
            (b"", false),
            (&[b'a'; 65], false),
            (b"a b", false),
            (b"a\" user_id=1 admin", false),
            (b"id\x1b[31m", false),
        ];
        for (id, ok) in cases {
            assert_eq!(
                safe_request_id(id),
                *ok,
                "{:?}",
                String::from_utf8_lossy(id)
            );
        }
    }

    #[test]
    fn tokens_never_reach_the_log() {
        let cases = [
            (
                "/api/payments/kakaopay/approve/AbC-123_x",
                "/api/payments/kakaopay/approve/{token}",
            ),
            (
                "/api/checkouts/kakaopay/fail/AbC",
                "/api/checkouts/kakaopay/fail/{token}",
            ),
            ("/api/checkouts/AbC", "/api/checkouts/{token}"),
            ("/api/recovery/AbC", "/api/recovery/{token}"),
            ("/api/orders/12", "/api/orders/12"),
            ("/health/live", "/health/live"),
        ];
        for (path, logged) in cases {
            assert_eq!(loggable_path(path), logged);
        }
    }

    #[test]
    fn method_labels_are_bounded() {
        use axum::http::Method;
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"MDEADBEEF").unwrap()),
            "other"
        );
    }

    #[test]
    fn url_parts_are_percent_decoded_for_the_check() {
        assert_eq!(percent_decoded("/a%00b"), "/a\0b");
        assert_eq!(percent_decoded("%E1%84%80"), "\u{1100}");
        assert_eq!(percent_decoded("100%"), "100%");
        assert_eq!(percent_decoded("%zz"), "%zz");
    }
}
