//! The console's first page: the queue, the workers, today's charges and what waits for an
//! operator; its figures refresh in place (`/admin/overview/live`) every few seconds.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use billing::overview::Overview;

use super::{filters, page, render, Chrome, ConsoleError, Done, Viewer};
use crate::AppState;

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage<'a> {
    chrome: Chrome<'a>,
    o: Overview,
    refresh_ms: u64,
}

#[derive(Template)]
#[template(path = "console/overview_live.html")]
struct OverviewLive {
    o: Overview,
}

pub async fn show(
    State(state): State<AppState>,
    Viewer(me): Viewer,
    Query(q): Query<Done>,
) -> Result<Response, ConsoleError> {
    let o = billing::overview::overview(&state.ctx).await?;
    Ok(page(&OverviewPage {
        chrome: Chrome::new(&me, "overview").with_notice(q.done.as_deref()),
        o,
        refresh_ms: u64::from(state.ctx.settings.console.overview_refresh_secs) * 1000,
    }))
}

/// The overview's figures alone, for the page's script to swap in.
pub async fn live(
    State(state): State<AppState>,
    Viewer(_me): Viewer,
) -> Result<axum::response::Html<String>, ConsoleError> {
    let o = billing::overview::overview(&state.ctx).await?;
    render(&OverviewLive { o })
}
