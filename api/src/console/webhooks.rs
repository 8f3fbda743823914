//! The console's webhooks pages: endpoints (create, disable or enable, rotate the secret:
//! a new secret is shown once, on the answer to the action, and never again), deliveries
//! by state and endpoint, one delivery with its attempts, and redelivery of one or of
//! every dead one.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use billing::audit::Actor;
use billing::error::FieldError;
use billing::ids::{DeliveryId, WebhookEndpointId};
use billing::webhooks::{
    Delivery, DeliveryFilter, DeliveryState, Endpoint, EndpointPatch, NewEndpoint, RedeliverDead,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::listing::{choice, paging, query_string, row_id, Pager};
use super::listing::{excerpt, filters, nonempty};
use super::{done, page, render, Action, Chrome, ConsoleError, Done, NoFields, Viewer};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/webhooks", get(endpoints).post(create))
        .route("/admin/webhooks/{id}/enabled", post(set_enabled))
        .route("/admin/webhooks/{id}/rotate-secret", post(rotate_secret))
        .route("/admin/deliveries", get(deliveries))
        .route("/admin/deliveries/redeliver-dead", post(redeliver_dead))
        .route("/admin/deliveries/{id}", get(delivery))
        .route("/admin/deliveries/{id}/redeliver", post(redeliver))
}

/// An endpoint's line: never its secret, only whether a rotation's overlap is running.
struct EndpointRow {
    e: Endpoint,
    event_types: String,
    /// Until when the replaced secret still signs beside the new one.
    previous_signs_until: Option<DateTime<Utc>>,
}

impl EndpointRow {
    fn new(e: Endpoint, now: DateTime<Utc>) -> Self {
        Self {
            event_types: e.event_types.join(", "),
            previous_signs_until: e.previous_secret_expires_at.filter(|t| *t > now),
            e,
        }
    }
}

/// What the create form held, to show it again beside its errors.
#[derive(Default)]
struct CreateForm {
    url: String,
    description: String,
    event_types: Vec<String>,
    errors: Vec<FieldError>,
}

#[derive(Template)]
#[template(path = "console/webhooks.html")]
struct EndpointsPage<'a> {
    chrome: Chrome<'a>,
    rows: Vec<EndpointRow>,
    /// Every event type the form offers (`*` first), checked as the form had it.
    event_types: Vec<(&'static str, bool)>,
    form: CreateForm,
}

async fn endpoints_page(
    state: &AppState,
    chrome: Chrome<'_>,
    form: CreateForm,
) -> Result<axum::response::Html<String>, ConsoleError> {
    let now = state.ctx.clock.now();
    let rows = billing::webhooks::list(&state.ctx)
        .await?
        .into_iter()
        .map(|e| EndpointRow::new(e, now))
        .collect();
    let event_types = std::iter::once(billing::webhooks::ALL_EVENTS)
        .chain(billing::webhooks::EVENT_TYPES.iter().copied())
        .map(|t| (t, form.event_types.iter().any(|x| x == t)))
        .collect();
    render(&EndpointsPage {
        chrome,
        rows,
        event_types,
        form,
    })
}

/// `GET /admin/webhooks`: the endpoints and the form that adds one.
pub async fn endpoints(
    State(state): State<AppState>,
    Viewer(me): Viewer,
    Query(q): Query<Done>,
) -> Result<Response, ConsoleError> {
    let chrome = Chrome::new(&me, "webhooks").with_notice(q.done.as_deref());
    Ok(endpoints_page(&state, chrome, CreateForm::default())
        .await?
        .into_response())
}

#[derive(Template)]
#[template(path = "console/webhook_secret.html")]
struct SecretPage<'a> {
    chrome: Chrome<'a>,
    endpoint: Endpoint,
    secret: String,
}

/// The answer to create and rotate: the secret, this once (pages are never cached).
fn secret_page(
    me: &billing::sessions::ConsoleSession,
    notice: &str,
    created: billing::webhooks::EndpointWithSecret,
) -> Response {
    page(&SecretPage {
        chrome: Chrome::new(me, "webhooks").with_notice(Some(notice)),
        endpoint: created.endpoint,
        secret: created.secret,
    })
}

/// `POST /admin/webhooks`: `url`, `description`, and `event_types` once per type checked.
pub async fn create(
    State(state): State<AppState>,
    Action { session, form }: Action<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let new = NewEndpoint {
        url: field("url"),
        description: field("description"),
        event_types: form
            .iter()
            .filter(|(k, _)| k == "event_types")
            .map(|(_, v)| v.clone())
            .collect(),
    };
    let actor = Actor::console(session.user_id);
    match billing::webhooks::create(&state.ctx, &actor, new.clone()).await {
        Ok(created) => Ok(secret_page(&session, "endpoint_created", created)),
        // The form again, as it was, with what to fix.
        Err(billing::Error::Validation(errors)) => {
            let chrome = Chrome::new(&session, "webhooks");
            let form = CreateForm {
                url: new.url,
                description: new.description,
                event_types: new.event_types,
                errors,
            };
            let html = endpoints_page(&state, chrome, form).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, html).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct EnabledForm {
    enabled: bool,
}

/// `POST /admin/webhooks/{id}/enabled`: `enabled=false` stops deliveries to it (pending
/// ones die); `true` starts its health afresh.
pub async fn set_enabled(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Action { session, form }: Action<EnabledForm>,
) -> Result<Response, ConsoleError> {
    let id = row_id(&id)?;
    let patch = EndpointPatch {
        enabled: Some(form.enabled),
        ..Default::default()
    };
    billing::webhooks::update(
        &state.ctx,
        &Actor::console(session.user_id),
        WebhookEndpointId(id),
        patch,
    )
    .await?;
    Ok(done("/admin/webhooks", "endpoint_updated"))
}

/// `POST /admin/webhooks/{id}/rotate-secret`: the new secret, shown once.
pub async fn rotate_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Action { session, .. }: Action<NoFields>,
) -> Result<Response, ConsoleError> {
    let id = row_id(&id)?;
    let rotated = billing::webhooks::rotate_secret(
        &state.ctx,
        &Actor::console(session.user_id),
        WebhookEndpointId(id),
    )
    .await?;
    Ok(secret_page(&session, "secret_rotated", rotated))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DeliveriesQuery {
    state: Option<String>,
    endpoint: Option<String>,
    page: Option<String>,
    size: Option<String>,
    done: Option<String>,
}

/// A delivery's line.
struct DeliveryRow {
    d: Delivery,
    state: &'static str,
    error: String,
}

fn state_name(s: DeliveryState) -> &'static str {
    match s {
        DeliveryState::Pending => "pending",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Dead => "dead",
    }
}

/// The `endpoint` of a search or form: an endpoint's id.
fn endpoint_id(v: Option<&str>) -> Result<Option<WebhookEndpointId>, ConsoleError> {
    v.map(|e| {
        e.parse()
            .map(WebhookEndpointId)
            .map_err(|_| billing::Error::validation("endpoint", "an endpoint id").into())
    })
    .transpose()
}

#[derive(Template)]
#[template(path = "console/deliveries.html")]
struct DeliveriesPage<'a> {
    chrome: Chrome<'a>,
    rows: Vec<DeliveryRow>,
    pager: Pager,
    endpoints: Vec<Endpoint>,
    state: String,
    endpoint: String,
    size: i64,
    /// How many dead deliveries "Redeliver all dead" would queue (offered only there).
    redeliver_dead: Option<i64>,
}

impl DeliveriesPage<'_> {
    fn href(&self, page: i64) -> String {
        let (page, size) = (page.to_string(), self.size.to_string());
        let qs = query_string(&[
            ("state", &self.state),
            ("endpoint", &self.endpoint),
            ("page", &page),
            ("size", &size),
        ]);
        format!("/admin/deliveries?{qs}")
    }
}

/// `GET /admin/deliveries?state=&endpoint=&page=`: newest first.
pub async fn deliveries(
    State(state): State<AppState>,
    Viewer(me): Viewer,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Response, ConsoleError> {
    let state_filter: Option<DeliveryState> = choice("state", q.state.as_deref())?;
    let endpoint = nonempty(q.endpoint);
    let filter = DeliveryFilter {
        state: state_filter,
        endpoint_id: endpoint_id(endpoint.as_deref())?,
        ..Default::default()
    };
    let request = paging(q.page.as_deref(), q.size.as_deref())?;
    let list = billing::webhooks::list_deliveries(&state.ctx, filter, request).await?;
    let pager = Pager::of(&list);
    let size = list.size;
    let redeliver_dead =
        (state_filter == Some(DeliveryState::Dead) && list.total > 0).then_some(list.total);
    let rows = list
        .items
        .into_iter()
        .map(|d| DeliveryRow {
            state: state_name(d.state),
            error: excerpt(d.last_error.as_deref(), 100),
            d,
        })
        .collect();
    Ok(page(&DeliveriesPage {
        chrome: Chrome::new(&me, "webhooks").with_notice(q.done.as_deref()),
        rows,
        pager,
        endpoints: billing::webhooks::list(&state.ctx).await?,
        state: state_filter.map(state_name).unwrap_or_default().to_owned(),
        endpoint: endpoint.unwrap_or_default(),
        size,
        redeliver_dead,
    }))
}

#[derive(Template)]
#[template(path = "console/delivery.html")]
struct DeliveryPage<'a> {
    chrome: Chrome<'a>,
    d: Delivery,
    state: &'static str,
    endpoint: Endpoint,
}

/// `GET /admin/deliveries/{id}`: the delivery and every attempt of every round.
pub async fn delivery(
    State(state): State<AppState>,
    Viewer(me): Viewer,
    Path(id): Path<String>,
    Query(q): Query<Done>,
) -> Result<Response, ConsoleError> {
    let id = row_id(&id)?;
    let d = billing::webhooks::get_delivery(&state.ctx, DeliveryId(id)).await?;
    let endpoint = billing::webhooks::get(&state.ctx, d.endpoint_id).await?;
    Ok(page(&DeliveryPage {
        chrome: Chrome::new(&me, "webhooks").with_notice(q.done.as_deref()),
        state: state_name(d.state),
        d,
        endpoint,
    }))
}

/// `POST /admin/deliveries/{id}/redeliver`: a new round with the whole schedule.
pub async fn redeliver(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Action { session, .. }: Action<NoFields>,
) -> Result<Response, ConsoleError> {
    let id = row_id(&id)?;
    billing::webhooks::redeliver(&state.ctx, &Actor::console(session.user_id), DeliveryId(id))
        .await?;
    Ok(done(&format!("/admin/deliveries/{id}"), "redelivered"))
}

#[derive(Deserialize)]
pub struct RedeliverDeadForm {
    #[serde(default)]
    endpoint: Option<String>,
}

/// `POST /admin/deliveries/redeliver-dead`: every dead delivery (of one endpoint, if
/// `endpoint` is set) of an enabled endpoint, each in a new round.
pub async fn redeliver_dead(
    State(state): State<AppState>,
    Action { session, form }: Action<RedeliverDeadForm>,
) -> Result<Response, ConsoleError> {
    let endpoint = nonempty(form.endpoint);
    let req = RedeliverDead {
        since: DateTime::<Utc>::UNIX_EPOCH,
        endpoint_id: endpoint_id(endpoint.as_deref())?,
    };
    let n = billing::webhooks::redeliver_dead(&state.ctx, &Actor::console(session.user_id), req)
        .await?;
    let back = format!(
        "/admin/deliveries?{}",
        query_string(&[
            ("state", "dead"),
            ("endpoint", endpoint.as_deref().unwrap_or(""))
        ])
    );
    Ok(done(
        &back,
        if n == 0 {
            "no_dead_deliveries"
        } else {
            "redelivered_dead"
        },
    ))
}
