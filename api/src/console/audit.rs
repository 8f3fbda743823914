//! The console's audit log: every operator action, newest first, with who did it (their
//! e-mail), through which channel, on which row (linked to that row's console page) and
//! what it changed.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use billing::audit::Entry;
use serde::Deserialize;

use super::listing::{filters, nonempty, pretty};
use super::listing::{paging, query_string, Pager};
use super::{page, Chrome, ConsoleError, Viewer};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/audit", get(list))
}

/// The kinds of rows actions are taken on, for the filter.
const TARGET_TYPES: &[&str] = &[
    "job",
    "webhook_endpoint",
    "webhook_delivery",
    "user",
    "subscription",
    "order",
    "charge_attempt",
    "item",
    "migration",
];

/// The console page of an action's row, where there is one.
fn target_href(kind: &str, id: Option<&str>) -> Option<String> {
    let id = id?;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    Some(match kind {
        "job" => format!("/admin/jobs/{}", enc(id)),
        "webhook_delivery" => format!("/admin/deliveries/{}", enc(id)),
        "webhook_endpoint" => format!("/admin/deliveries?endpoint={}", enc(id)),
        "user" => format!("/admin/users?q={}", enc(id)),
        "subscription" => format!("/admin/subscriptions/{}", enc(id)),
        "order" => format!("/admin/orders/{}", enc(id)),
        _ => return None,
    })
}

/// One line of the log.
struct Row {
    e: Entry,
    channel: &'static str,
    target_href: Option<String>,
    details: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    target_type: Option<String>,
    target_id: Option<String>,
    page: Option<String>,
    size: Option<String>,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct ListPage<'a> {
    chrome: Chrome<'a>,
    rows: Vec<Row>,
    pager: Pager,
    target_types: &'static [&'static str],
    target_type: String,
    target_id: String,
    size: i64,
}

impl ListPage<'_> {
    fn href(&self, page: i64) -> String {
        let (page, size) = (page.to_string(), self.size.to_string());
        let qs = query_string(&[
            ("target_type", &self.target_type),
            ("target_id", &self.target_id),
            ("page", &page),
            ("size", &size),
        ]);
        format!("/admin/audit?{qs}")
    }
}

/// `GET /admin/audit?target_type=&target_id=&page=`.
pub async fn list(
    State(state): State<AppState>,
    Viewer(me): Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    let target_type = nonempty(q.target_type);
    let target_id = nonempty(q.target_id);
    let request = paging(q.page.as_deref(), q.size.as_deref())?;
    let log = billing::audit::list(
        &state.ctx,
        target_type.as_deref(),
        target_id.as_deref(),
        request,
    )
    .await?;
    let pager = Pager::of(&log);
    let size = log.size;
    let rows = log
        .items
        .into_iter()
        .map(|e| Row {
            channel: e.channel.as_str(),
            target_href: target_href(&e.target_type, e.target_id.as_deref()),
            details: pretty(&e.details),
            e,
        })
        .collect();
    Ok(page(&ListPage {
        chrome: Chrome::new(&me, "audit"),
        rows,
        pager,
        target_types: TARGET_TYPES,
        target_type: target_type.unwrap_or_default(),
        target_id: target_id.unwrap_or_default(),
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_link_to_their_pages() {
        let cases = [
            ("job", Some("0b8f"), Some("/admin/jobs/0b8f")),
            ("webhook_delivery", Some("7"), Some("/admin/deliveries/7")),
            ("user", Some("12"), Some("/admin/users?q=12")),
            ("subscription", Some("3"), Some("/admin/subscriptions/3")),
            ("order", Some("9"), Some("/admin/orders/9")),
            ("job", None, None),
            ("item", Some("4"), None),
            ("job", Some("a/../b"), Some("/admin/jobs/a%2F..%2Fb")),
        ];
        for (kind, id, want) in cases {
            assert_eq!(target_href(kind, id).as_deref(), want, "{kind} {id:?}");
        }
    }
}
