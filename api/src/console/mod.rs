//! The operator console at `/admin`: server-rendered pages (askama templates, compiled with
//! the crate) over the same `billing` calls as the JSON admin routes, behind a cookie
//! session with CSRF-checked forms. Admins act; operators only look.
//!
//! Pages are plain HTML forms and links, so they work without script; one small script
//! (`static/console.js`, served from here: no build step, no third-party origin) refreshes
//! the overview's figures. The content security policy allows nothing else.

mod audit;
mod error;
mod jobs;
mod listing;
mod orders;
mod overview;
mod session;
mod subscriptions;
mod users;
mod webhooks;

use askama::Template;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use billing::sessions::ConsoleSession;

pub use error::ConsoleError;
pub use session::{Action, NoFields, Viewer};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/sign-in",
            get(session::sign_in_form).post(session::sign_in),
        )
        .route("/admin/sign-out", post(session::sign_out))
        .route("/admin", get(overview::show))
        .route("/admin/overview/live", get(overview::live))
        .route("/admin/static/console.css", get(stylesheet))
        .route("/admin/static/console.js", get(script))
        .merge(subscriptions::routes())
        .merge(orders::routes())
        .merge(jobs::routes())
        .merge(webhooks::routes())
        .merge(users::routes())
        .merge(audit::routes())
        .layer(axum::middleware::map_response(security_headers))
}

/// What every console page shows around its content: who is signed in (and the CSRF
/// token their forms carry), which section is open, and the outcome of the last action.
pub struct Chrome<'a> {
    pub me: &'a ConsoleSession,
    pub section: &'static str,
    pub notice: Option<&'static str>,
}

impl<'a> Chrome<'a> {
    pub fn new(me: &'a ConsoleSession, section: &'static str) -> Self {
        Self {
            me,
            section,
            notice: None,
        }
    }

    /// With the message a finished action asked its redirect to show (`?done=`): only the
    /// messages listed in [`notice`], so a crafted link cannot put words on the page.
    pub fn with_notice(mut self, done: Option<&str>) -> Self {
        self.notice = done.and_then(notice);
        self
    }
}

/// The `?done=` of a page an action redirected to.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub struct Done {
    pub done: Option<String>,
}

/// The messages an action's redirect can show, by the code it puts in `?done=`.
fn notice(code: &str) -> Option<&'static str> {
    Some(match code {
        "skipped" => "The next charge was skipped.",
        "paused" => "The subscription is paused.",
        "resumed" => "The subscription is resumed.",
        "canceled" => "The subscription is canceled.",
        "period_changed" => "The period was changed.",
        "reconcile_queued" => "Reconciliation was queued; the charge's outcome will follow.",
        "refund_requested" => "The refund was requested; KakaoPay is being asked.",
        "job_retried" => "The job was queued to run again.",
        "jobs_retried" => "The failed jobs were queued to run again.",
        "jobs_retried_some_skipped" => {
            "The failed jobs were queued to run again, except those an identical queued job \
             already covers (they stay failed)."
        }
        "no_failed_jobs" => {
            "No failed job of that type could be retried (an identical job is already queued)."
        }
        "job_canceled" => "The job was canceled.",
        "endpoint_created" => "The endpoint was created.",
        "endpoint_updated" => "The endpoint was updated.",
        "secret_rotated" => "The secret was rotated.",
        "redelivered" => "The delivery was queued again.",
        "redelivered_dead" => "The dead deliveries were queued again.",
        "no_dead_deliveries" => {
            "No dead delivery to redeliver (a disabled endpoint's stay dead until it is enabled)."
        }
        "access_changed" => "The account's access was changed.",
        _ => return None,
    })
}

/// A rendered page (200), or the error page if the template failed.
pub fn page<T: Template>(template: &T) -> Response {
    render(template).into_response()
}

pub fn render<T: Template>(template: &T) -> Result<axum::response::Html<String>, ConsoleError> {
    template
        .render()
        .map(axum::response::Html)
        .map_err(|e| ConsoleError::Render(e.to_string()))
}

/// Where an action sends the browser afterwards: back to `to` (a console path), with the
/// notice to show. 303, so a reload does not post again.
pub fn done(to: &str, notice_code: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    see_other(&format!("{to}{sep}done={notice_code}"))
}

pub fn see_other(to: &str) -> Response {
    let mut response = axum::http::StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// Every console answer: nothing from elsewhere runs, nothing frames it, and pages (which
/// carry customers' details) are not cached.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../static/console.css"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../static/console.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Template helpers.
pub mod filters {
    use chrono::{DateTime, Utc};

    /// A time as operators read it: UTC, to the second.
    pub fn when(t: &DateTime<Utc>, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(t.format("%Y-%m-%d %H:%M:%S").to_string())
    }

    /// An optional time, or a dash.
    pub fn when_opt(t: &Option<DateTime<Utc>>, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "—".to_owned()))
    }

    /// KRW with thousands separators (₩12,300).
    pub fn won(amount: &i64, _: &dyn askama::Values) -> askama::Result<String> {
        let digits = amount.unsigned_abs().to_string();
        let mut out = String::with_capacity(digits.len() + 4);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        Ok(format!("{}₩{out}", if *amount < 0 { "−" } else { "" }))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn won_groups_thousands() {
            let v = askama::NO_VALUES;
            assert_eq!(super::won(&0, v).unwrap(), "₩0");
            assert_eq!(super::won(&12_300, v).unwrap(), "₩12,300");
            assert_eq!(super::won(&1_234_567, v).unwrap(), "₩1,234,567");
            assert_eq!(super::won(&-500, v).unwrap(), "−₩500");
        }
    }
}
