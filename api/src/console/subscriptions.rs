//! The console's subscriptions: the search (id, customer e-mail or phone, status, unknown
//! charges), one subscription's page (facts, the timeline, the what-if preview) and the
//! actions an admin takes on the customer's behalf (skip, pause, resume, cancel, change
//! the period; "reconcile now" for an unknown charge), each audited with the change.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use billing::audit::Actor;
use billing::ids::SubscriptionId;
use billing::subscriptions::search::{Found, SearchFilter};
use billing::subscriptions::timeline::{Story, What};
use billing::subscriptions::{Outcome, SubscriptionStatus, TimelineEvent};
use serde::Deserialize;

use super::listing::filters;
use super::listing::{choice, paging, query_string, row_id, Pager};
use super::{done, page, Action, Chrome, ConsoleError, Viewer};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/subscriptions", get(search))
        .route("/admin/subscriptions/{id}", get(show))
        .route("/admin/subscriptions/{id}/{action}", post(act))
        .route(
            "/admin/subscriptions/{id}/attempts/{attempt_id}/reconcile",
            post(reconcile),
        )
}

// ---- the search ---------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SearchQuery {
    q: Option<String>,
    status: Option<String>,
    unknown: Option<String>,
    page: Option<String>,
    size: Option<String>,
}

#[derive(Template)]
#[template(path = "console/subscriptions.html")]
struct SearchPage<'a> {
    chrome: Chrome<'a>,
    q: String,
    status: String,
    unknown: bool,
    statuses: [&'static str; 4],
    rows: Vec<Found>,
    pager: Pager,
    size: i64,
}

impl SearchPage<'_> {
    fn href(&self, page: i64) -> String {
        let (page, size) = (page.to_string(), self.size.to_string());
        let unknown = if self.unknown { "1" } else { "" };
        let qs = query_string(&[
            ("q", &self.q),
            ("status", &self.status),
            ("unknown", unknown),
            ("page", &page),
            ("size", &size),
        ]);
        format!("/admin/subscriptions?{qs}")
    }
}

async fn search(
    State(state): State<AppState>,
    Viewer(me): Viewer,
    Query(q): Query<SearchQuery>,
) -> Result<Response, ConsoleError> {
    let status: Option<SubscriptionStatus> = choice("status", q.status.as_deref())?;
    let unknown = matches!(q.unknown.as_deref(), Some("1" | "true" | "on"));
    let filter = SearchFilter {
        q: q.q.clone().unwrap_or_default(),
        status,
        unknown_charge: unknown,
    };
    let request = paging(q.page.as_deref(), q.size.as_deref())?;
    let found = billing::subscriptions::search::search(&state.ctx, &filter, request).await?;
    Ok(page(&SearchPage {
        chrome: Chrome::new(&me, "subscriptions"),
        q: filter.q.trim().to_owned(),
        status: status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        unknown,
        statuses: ["active", "paused", "past_due", "canceled"],
        pager: Pager::of(&found),
        size: found.size,
        rows: found.items,
    }))
}

// ---- one subscription -----------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ShowQuery {
    done: Option<String>,
    /// The what-if preview's outcomes, comma- or space-separated.
    outcomes: Option<String>,
}

/// The what-if preview under the timeline: what was asked and what came back.
struct Preview {
    asked: String,
    result: Result<Vec<TimelineEvent>, String>,
}

#[derive(Template)]
#[template(path = "console/subscription.html")]
struct SubscriptionPage<'a> {
    chrome: Chrome<'a>,
    s: Story,
    preview: Option<Preview>,
    outcome_names: &'static str,
}

const OUTCOME_NAMES: &str =
    "approved, soft_decline (or declined), hard_decline, transient, ambiguous, recovery";

/// The preview's outcomes from the form: names separated by commas or spaces.
fn outcomes(raw: &str) -> Result<Vec<Outcome>, String> {
    raw.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(|w| {
            choice::<Outcome>("outcomes", Some(w))
                .ok()
                .flatten()
                .ok_or_else(|| format!("“{w}” is not an outcome; use {OUTCOME_NAMES}"))
        })
        .collect()
}

async fn show(
    State(state): State<AppState>,
    Viewer(me): Viewer,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, ConsoleError> {
    let id = SubscriptionId(row_id(&id)?);
    let s = billing::subscriptions::timeline::story(&state.ctx, id).await?;
    let preview = match q.outcomes.as_deref().map(str::trim) {
        Some(asked) if !asked.is_empty() => {
            let result = match outcomes(asked) {
                Ok(list) => billing::subscriptions::preview(&state.ctx, id, &list)
                    .await
                    .map_err(preview_refusal),
                Err(message) => Err(message),
            };
            Some(Preview {
                asked: asked.to_owned(),
                result,
            })
        }
        _ => None,
    };
    Ok(page(&SubscriptionPage {
        chrome: Chrome::new(&me, "subscriptions").with_notice(q.done.as_deref()),
        s,
        preview,
        outcome_names: OUTCOME_NAMES,
    }))
}

/// Why the engine would not preview, in the words (and code) the JSON API uses; a failure
/// of ours stays an error page.
fn preview_refusal(e: billing::Error) -> String {
    let e = crate::error::ApiError::Billing(e);
    let (status, code) = e.status_and_code();
    format!("{} ({code})", e.public_message(status))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ActForm {
    /// Only for `period`.
    period_days: Option<String>,
}

/// `POST /admin/subscriptions/{id}/{skip|pause|resume|cancel|period}`: an admin acts for
/// the customer; the edit and its audit entry commit together.
async fn act(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    Action { session, form }: Action<ActForm>,
) -> Result<Response, ConsoleError> {
    let id = SubscriptionId(row_id(&id)?);
    let actor = Actor::console(session.user_id);
    let ctx = &state.ctx;
    let notice = match action.as_str() {
        "skip" => billing::subscriptions::skip(ctx, &actor, id)
            .await
            .map(|_| "skipped"),
        "pause" => billing::subscriptions::pause(ctx, &actor, id)
            .await
            .map(|_| "paused"),
        "resume" => billing::subscriptions::resume(ctx, &actor, id)
            .await
            .map(|_| "resumed"),
        "cancel" => billing::subscriptions::cancel(ctx, &actor, id)
            .await
            .map(|_| "canceled"),
        "period" => {
            let days = form
                .period_days
                .as_deref()
                .map(str::trim)
                .and_then(|d| d.parse::<i32>().ok())
                .ok_or_else(|| {
                    billing::Error::validation("period_days", "must be a number of days (7–365)")
                })?;
            let patch = billing::subscriptions::Patch {
                period_days: Some(days),
                ..Default::default()
            };
            billing::subscriptions::update(ctx, &actor, id, patch)
                .await
                .map(|_| "period_changed")
        }
        _ => Err(billing::Error::NotFound),
    }?;
    Ok(done(&format!("/admin/subscriptions/{}", id.0), notice))
}

/// `POST /admin/subscriptions/{id}/attempts/{attempt_id}/reconcile`: "reconcile now" for
/// a charge whose outcome is unknown (audited with the request), back to the page.
async fn reconcile(
    State(state): State<AppState>,
    Path((id, attempt_id)): Path<(String, String)>,
    Action { session, .. }: Action<super::NoFields>,
) -> Result<Response, ConsoleError> {
    let id = row_id(&id)?;
    let attempt_id = row_id(&attempt_id)?;
    let actor = Actor::console(session.user_id);
    billing::subscriptions::charge::reconcile_now(&state.ctx, &actor, attempt_id).await?;
    Ok(done(
        &format!("/admin/subscriptions/{id}"),
        "reconcile_queued",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_outcomes_are_read_from_a_list() {
        assert_eq!(
            outcomes("declined, declined approved").unwrap(),
            vec![Outcome::Declined, Outcome::Declined, Outcome::Approved]
        );
        assert!(outcomes("approved, maybe").unwrap_err().contains("maybe"));
    }

    #[test]
    fn filters_and_paging_refuse_what_they_do_not_know() {
        assert_eq!(
            choice::<SubscriptionStatus>("status", Some("past_due")).unwrap(),
            Some(SubscriptionStatus::PastDue)
        );
        assert_eq!(
            choice::<SubscriptionStatus>("status", Some("")).unwrap(),
            None
        );
        assert!(choice::<SubscriptionStatus>("status", Some("gone")).is_err());
        assert!(paging(Some("x"), None).is_err());
        assert!(row_id("12a").is_err() && row_id("0").is_err() && row_id("7").is_ok());
        assert_eq!(
            query_string(&[("q", "a b@x"), ("status", ""), ("page", "2")]),
            "q=a+b%40x&page=2"
        );
    }
}
