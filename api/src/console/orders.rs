//! The console's orders: the search (id, customer e-mail or phone, status, kind), one
//! order's page (lines, totals, receiver, payment, a cycle order's charge attempts, events
//! with their webhook deliveries, audit entries) and an admin's refund of a paid order,
//! audited with the request.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use billing::audit::Actor;
use billing::ids::OrderId;
use billing::orders::operators::{FoundOrder, OrderFilter, OrderStory};
use billing::orders::{OrderKind, OrderStatus};
use serde::Deserialize;

use super::listing::filters;
use super::listing::{choice, paging, query_string, row_id, Pager};
use super::{done, page, Action, Chrome, ConsoleError, Done, NoFields, Viewer};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/orders", get(search))
        .route("/admin/orders/{id}", get(show))
        .route("/admin/orders/{id}/refund", post(refund))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SearchQuery {
    q: Option<String>,
    status: Option<String>,
    kind: Option<String>,
    page: Option<String>,
    size: Option<String>,
}

#[derive(Template)]
#[template(path = "console/orders.html")]
struct SearchPage<'a> {
    chrome: Chrome<'a>,
    q: String,
    status: String,
    kind: String,
    statuses: [&'static str; 8],
    kinds: [&'static str; 2],
    rows: Vec<FoundOrder>,
    pager: Pager,
    size: i64,
}

impl SearchPage<'_> {
    fn href(&self, page: i64) -> String {
        let (page, size) = (page.to_string(), self.size.to_string());
        let qs = query_string(&[
            ("q", &self.q),
            ("status", &self.status),
            ("kind", &self.kind),
            ("page", &page),
            ("size", &size),
        ]);
        format!("/admin/orders?{qs}")
    }
}

async fn search(
    State(state): State<AppState>,
    Viewer(me): Viewer,
    Query(q): Query<SearchQuery>,
) -> Result<Response, ConsoleError> {
    let status: Option<OrderStatus> = choice("status", q.status.as_deref())?;
    let kind: Option<OrderKind> = choice("kind", q.kind.as_deref())?;
    let filter = OrderFilter {
        q: q.q.clone().unwrap_or_default(),
        status,
        kind,
    };
    let request = paging(q.page.as_deref(), q.size.as_deref())?;
    let found = billing::orders::operators::search(&state.ctx, &filter, request).await?;
    Ok(page(&SearchPage {
        chrome: Chrome::new(&me, "orders"),
        q: filter.q.trim().to_owned(),
        status: status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        kind: kind.map(|k| k.as_str().to_owned()).unwrap_or_default(),
        statuses: [
            "pending_payment",
            "payment_ready",
            "approving",
            "paid",
            "payment_failed",
            "canceled",
            "refund_requested",
            "refunded",
        ],
        kinds: ["one_time", "subscription"],
        pager: Pager::of(&found),
        size: found.size,
        rows: found.items,
    }))
}

#[derive(Template)]
#[template(path = "console/order.html")]
struct OrderPage<'a> {
    chrome: Chrome<'a>,
    o: OrderStory,
}

async fn show(
    State(state): State<AppState>,
    Viewer(me): Viewer,
    Path(id): Path<String>,
    Query(q): Query<Done>,
) -> Result<Response, ConsoleError> {
    let id = OrderId(row_id(&id)?);
    let o = billing::orders::operators::story(&state.ctx, id).await?;
    Ok(page(&OrderPage {
        chrome: Chrome::new(&me, "orders").with_notice(q.done.as_deref()),
        o,
    }))
}

/// `POST /admin/orders/{id}/refund`: the customer's cancel of a paid order (refund
/// requested, `payment.cancel` queued), by an admin for them; anything but a paid order
/// is refused with the JSON API's 409 codes.
async fn refund(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Action { session, .. }: Action<NoFields>,
) -> Result<Response, ConsoleError> {
    let id = OrderId(row_id(&id)?);
    let actor = Actor::console(session.user_id);
    billing::orders::cancel(&state.ctx, &actor, id).await?;
    Ok(done(&format!("/admin/orders/{}", id.0), "refund_requested"))
}
