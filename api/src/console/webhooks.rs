//! The console's webhooks pages: endpoints (create, disable or enable, rotate the secret:
//! a new secret is shown once, on the answer to the action, and never again), deliveries
//! by state and endpoint, one delivery with its attempts, and redelivery of one or of
//! every dead one.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use billing::audit::Actor;
use billing::error::FieldError;
use billing::ids::{DeliveryId, WebhookEndpointId};
use billing::page::PageRequest;
use billing::webhooks::{
    Delivery, DeliveryFilter, DeliveryState, Endpoint, EndpointPatch, NewEndpoint, RedeliverDead,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::listing::{excerpt, filters, link, nonempty, query, Pager, Params, RowId};
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
    Params(q): Params<Done>,
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
    RowId(id): RowId<i64>,
    Action { session, form }: Action<EnabledForm>,
) -> Result<Response, ConsoleError> {
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
    RowId(id): RowId<i64>,
    Action { session, .. }: Action<NoFields>,
) -> Result<Response, ConsoleError> {
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

fn parse_state(s: &str) -> Result<DeliveryState, ConsoleError> {
    match s {
        "pending" => Ok(DeliveryState::Pending),
        "delivered" => Ok(DeliveryState::Delivered),
        "dead" => Ok(DeliveryState::Dead),
        _ => Err(billing::Error::validation("state", "must be pending, delivered or dead").into()),
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
    redeliver_dead: bool,
}

/// `GET /admin/deliveries?state=&endpoint=&page=`: newest first.
pub async fn deliveries(
    State(state): State<AppState>,
    Viewer(me): Viewer,
    Params(q): Params<DeliveriesQuery>,
    Params(p): Params<PageRequest>,
) -> Result<Response, ConsoleError> {
    let state_filter = nonempty(q.state);
    let endpoint = nonempty(q.endpoint);
    let filter = DeliveryFilter {
        state: state_filter.as_deref().map(parse_state).transpose()?,
        endpoint_id: endpoint_id(endpoint.as_deref())?,
        ..Default::default()
    };
    let list = billing::webhooks::list_deliveries(&state.ctx, filter, p).await?;
    let search = query(&[
        ("state", state_filter.as_deref()),
        ("endpoint", endpoint.as_deref()),
        ("size", nonempty(q.size).as_deref()),
    ]);
    let pager = Pager::of(&list, "/admin/deliveries", &search);
    let rows = list
        .items
        .into_iter()
        .map(|d| DeliveryRow {
            state: state_name(d.state),
            error: excerpt(d.last_error.as_deref(), 100),
            d,
        })
        .collect();
    let redeliver_dead = state_filter.as_deref() == Some("dead") && pager.total > 0;
    Ok(page(&DeliveriesPage {
        chrome: Chrome::new(&me, "webhooks").with_notice(q.done.as_deref()),
        rows,
        pager,
        endpoints: billing::webhooks::list(&state.ctx).await?,
        state: state_filter.unwrap_or_default(),
        endpoint: endpoint.unwrap_or_default(),
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
    RowId(id): RowId<i64>,
    Params(q): Params<Done>,
) -> Result<Response, ConsoleError> {
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
    RowId(id): RowId<i64>,
    Action { session, .. }: Action<NoFields>,
) -> Result<Response, ConsoleError> {
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
    let back = link(
        "/admin/deliveries",
        &query(&[("state", Some("dead")), ("endpoint", endpoint.as_deref())]),
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
