//! The console's jobs pages: the queue by state, pool and task with each job's error; one
//! job with its arguments; retry one failed job or every failed job of a pool, and cancel
//! a waiting one where nothing waits on it (`billing::tasks::cancel_policy`).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use billing::audit::Actor;
use billing::jobs::{Cancel, JobDetail, JobFilter, JobState};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::listing::{excerpt, filters, nonempty, pretty};
use super::listing::{paging, query_string, Pager};
use super::{done, page, Action, Chrome, ConsoleError, Done, NoFields, Viewer};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/jobs", get(list))
        .route("/admin/jobs/retry-failed", post(retry_failed_of_type))
        .route("/admin/jobs/{id}", get(show))
        .route("/admin/jobs/{id}/retry", post(retry))
        .route("/admin/jobs/{id}/cancel", post(cancel))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    state: Option<String>,
    task_type: Option<String>,
    name: Option<String>,
    page: Option<String>,
    size: Option<String>,
    done: Option<String>,
}

/// A job's id from the path: anything but a uuid is a page that does not exist.
fn job_id(raw: &str) -> Result<Uuid, ConsoleError> {
    raw.parse().map_err(|_| billing::Error::NotFound.into())
}

/// One line of the list.
struct Row {
    id: Uuid,
    name: String,
    task_type: String,
    state: String,
    retries: i32,
    max_retries: i32,
    scheduled_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    error: String,
}

#[derive(Template)]
#[template(path = "console/jobs.html")]
struct ListPage<'a> {
    chrome: Chrome<'a>,
    rows: Vec<Row>,
    pager: Pager,
    states: Vec<&'static str>,
    pools: Vec<String>,
    names: Vec<&'static str>,
    state: String,
    task_type: String,
    name: String,
    size: i64,
    /// How many failed jobs of one pool "Retry all" would queue (offered only there).
    retry_all: Option<i64>,
}

impl ListPage<'_> {
    fn href(&self, page: i64) -> String {
        let (page, size) = (page.to_string(), self.size.to_string());
        let qs = query_string(&[
            ("state", &self.state),
            ("task_type", &self.task_type),
            ("name", &self.name),
            ("page", &page),
            ("size", &size),
        ]);
        format!("/admin/jobs?{qs}")
    }
}

/// `GET /admin/jobs?state=&task_type=&name=&page=`: newest first.
pub async fn list(
    State(state): State<AppState>,
    Viewer(me): Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    let filter = JobFilter {
        state: nonempty(q.state),
        task_type: nonempty(q.task_type),
        name: nonempty(q.name),
    };
    let request = paging(q.page.as_deref(), q.size.as_deref())?;
    let jobs = billing::jobs::list(&state.ctx, &filter, request).await?;
    let pager = Pager::of(&jobs);
    let size = jobs.size;
    let rows = jobs
        .items
        .into_iter()
        .map(|j| Row {
            id: j.id,
            name: j.name.unwrap_or_default(),
            task_type: j.task_type,
            state: j.state,
            retries: j.retries,
            max_retries: j.max_retries,
            scheduled_at: j.scheduled_at,
            updated_at: j.updated_at,
            error: excerpt(j.error_message.as_deref(), 120),
        })
        .collect();
    let mut pools = billing::tasks::pools(&state.ctx.settings.worker);
    if let Some(t) = &filter.task_type {
        if !pools.contains(t) {
            pools.push(t.clone());
        }
    }
    let retry_all = (filter.state.as_deref() == Some("failed")
        && filter.task_type.is_some()
        && filter.name.is_none()
        && jobs.total > 0)
        .then_some(jobs.total);
    Ok(page(&ListPage {
        chrome: Chrome::new(&me, "jobs").with_notice(q.done.as_deref()),
        rows,
        pager,
        states: JobState::ALL.iter().map(|s| s.as_str()).collect(),
        pools,
        names: billing::tasks::CATALOGUE.iter().map(|k| k.name).collect(),
        state: filter.state.unwrap_or_default(),
        task_type: filter.task_type.unwrap_or_default(),
        name: filter.name.unwrap_or_default(),
        size,
        retry_all,
    }))
}

#[derive(Template)]
#[template(path = "console/job.html")]
struct DetailPage<'a> {
    chrome: Chrome<'a>,
    job: JobDetail,
    name: String,
    arguments: String,
    /// Pages of the rows the job works on (its subscription, order, delivery).
    related: Vec<(String, String)>,
    cancel: Cancel,
}

/// `GET /admin/jobs/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Viewer(me): Viewer,
    Path(id): Path<String>,
    Query(q): Query<Done>,
) -> Result<Response, ConsoleError> {
    let id = job_id(&id)?;
    let job = billing::jobs::get(&state.ctx, id).await?;
    let arguments = pretty(&billing::jobs::arguments(&job.job.metadata));
    let related = related(&job.job.metadata);
    let cancel = billing::tasks::cancel_policy(job.job.name.as_deref().unwrap_or_default());
    Ok(page(&DetailPage {
        chrome: Chrome::new(&me, "jobs").with_notice(q.done.as_deref()),
        name: job.job.name.clone().unwrap_or_default(),
        job,
        arguments,
        related,
        cancel,
    }))
}

/// Links to the console pages of the rows a task's payload names.
fn related(metadata: &serde_json::Value) -> Vec<(String, String)> {
    let id = |key: &str| metadata.get(key).and_then(serde_json::Value::as_i64);
    let mut out = Vec::new();
    if let Some(s) = id("subscription_id") {
        out.push((
            format!("Subscription #{s}"),
            format!("/admin/subscriptions/{s}"),
        ));
    }
    if let Some(o) = id("order_id") {
        out.push((format!("Order #{o}"), format!("/admin/orders/{o}")));
    }
    if let Some(d) = id("delivery_id") {
        out.push((format!("Delivery #{d}"), format!("/admin/deliveries/{d}")));
    }
    out
}

/// `POST /admin/jobs/{id}/retry`: a failed job runs again now, with a fresh retry budget.
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Action { session, .. }: Action<NoFields>,
) -> Result<Response, ConsoleError> {
    let id = job_id(&id)?;
    billing::jobs::retry_failed(&state.ctx, &Actor::console(session.user_id), id).await?;
    Ok(done(&format!("/admin/jobs/{id}"), "job_retried"))
}

/// `POST /admin/jobs/{id}/cancel`: a waiting job of a kind nothing waits on is removed.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Action { session, .. }: Action<NoFields>,
) -> Result<Response, ConsoleError> {
    let id = job_id(&id)?;
    let job = billing::tasks::cancel(&state.ctx, &Actor::console(session.user_id), id).await?;
    let back = format!(
        "/admin/jobs?{}",
        query_string(&[("task_type", &job.task_type)])
    );
    Ok(done(&back, "job_canceled"))
}

#[derive(Deserialize)]
pub struct RetryAllForm {
    task_type: String,
}

/// `POST /admin/jobs/retry-failed`: every failed job of a pool runs again.
pub async fn retry_failed_of_type(
    State(state): State<AppState>,
    Action { session, form }: Action<RetryAllForm>,
) -> Result<Response, ConsoleError> {
    let r = billing::jobs::retry_failed_of_type(
        &state.ctx,
        &Actor::console(session.user_id),
        &form.task_type,
    )
    .await?;
    let back = format!(
        "/admin/jobs?{}",
        query_string(&[("state", "failed"), ("task_type", &form.task_type)])
    );
    let code = match (r.retried, r.skipped) {
        (0, _) => "no_failed_jobs",
        (_, 0) => "jobs_retried",
        _ => "jobs_retried_some_skipped",
    };
    Ok(done(&back, code))
}
