//! The simulator's state and HTTP routes: the seven KakaoPay endpoints (with latency,
//! auth and injected failures), the buyer page, and the `/__…` admin endpoints.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock::Clock;
use crate::config::Config;
use crate::gateway::{
    BuyerAction, BuyerOutcome, Ctx, RegisterError, SidDecline, SidRegistration, Store,
};
use crate::knobs::{AutoAction, Endpoint, ErrorBody, FaultKind, Faults, Knobs};
use crate::protocol::{code, Fields, PgError};
use crate::server::ConnHandle;

const MAX_BODY: usize = 64 * 1024;
/// `POST /__sids` takes fixture batches of 100,000 SIDs and more (about 150 bytes each).
const MAX_SIDS_BODY: usize = 64 * 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The whole simulator: configuration, knobs, payments, SIDs and the ledger.
pub struct Sim {
    config: Config,
    public_url: String,
    faults: Mutex<Faults>,
    store: Mutex<Store>,
    requests: Mutex<BTreeMap<&'static str, u64>>,
    /// KakaoPay API requests per real-time second (unix seconds), the last hour: what a
    /// rate cap or an open circuit breaker on the caller's side must show.
    per_second: Mutex<BTreeMap<i64, u64>>,
    /// Requests to the webhook sink (`POST /__webhooks/{name}`), per name.
    webhooks: Mutex<BTreeMap<String, u64>>,
    clock: Clock,
}

/// How many seconds of per-second counts are kept.
const PER_SECOND_KEPT: i64 = 3_600;

impl Sim {
    /// `public_url` is the base of the buyer page URLs handed out by `ready`.
    pub fn new(config: Config, public_url: String) -> Arc<Self> {
        // `Args::config` rejects a bad offset; a hand-built Config gets real time instead
        // of a panic.
        let clock = Clock::new(config.clock_offset_ms).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring the startup clock offset");
            Clock::default()
        });
        Arc::new(Self {
            clock,
            faults: Mutex::new(Faults::new(config.knobs.clone())),
            public_url: public_url.trim_end_matches('/').to_owned(),
            config,
            store: Mutex::new(Store::default()),
            requests: Mutex::new(BTreeMap::new()),
            webhooks: Mutex::new(BTreeMap::new()),
            per_second: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    pub fn knobs(&self) -> Knobs {
        lock(&self.faults).knobs().clone()
    }

    /// The simulator's clock (real time plus the `/__clock` offset).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn count(&self, what: &'static str) {
        *lock(&self.requests).entry(what).or_insert(0) += 1;
    }

    /// Counts an API request in its arrival second. Real time, not the `/__clock` time:
    /// quotas are about the wall clock.
    fn count_second(&self) {
        let now = Utc::now().timestamp();
        let mut m = lock(&self.per_second);
        *m.entry(now).or_insert(0) += 1;
        if m.len() as i64 > PER_SECOND_KEPT {
            m.retain(|s, _| *s > now - PER_SECOND_KEPT);
        }
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            config: &self.config,
            public_url: &self.public_url,
            now: self.clock.now(),
            default_method: lock(&self.faults).knobs().payment_method,
        }
    }

    fn check_auth(&self, headers: &HeaderMap) -> Result<(), PgError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| PgError::unauthorized("Authorization header is missing"))?;
        let key = value
            .strip_prefix("SECRET_KEY ")
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                PgError::unauthorized("Authorization must be `SECRET_KEY <secret key>`")
            })?;
        match &self.config.secret_key {
            Some(expected) if expected != key => Err(PgError::unauthorized("invalid secret key")),
            _ => Ok(()),
        }
    }

    /// Validates and runs one KakaoPay call against the store.
    fn dispatch(&self, ep: Endpoint, headers: &HeaderMap, body: &[u8]) -> Result<Value, PgError> {
        let json_body = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        if !json_body {
            return Err(PgError::param("", "Content-Type must be application/json"));
        }
        let map = Fields::parse(body)?;
        let f = Fields(&map);
        let ctx = self.ctx();
        let mut decline = || {
            let mut faults = lock(&self.faults);
            faults
                .roll(ep, FaultKind::Decline)
                .then(|| decline_error(ep, faults.knobs()))
        };
        let mut store = lock(&self.store);
        match ep {
            Endpoint::Ready => store.ready(&ctx, &f),
            Endpoint::Approve => store.approve(&ctx, &f, &mut decline),
            Endpoint::Subscription => store.charge(&ctx, &f, &mut decline),
            Endpoint::Cancel => store.cancel(&ctx, &f),
            Endpoint::Order => store.order(&ctx, &f),
            Endpoint::Inactive => store.sid_inactivate(&ctx, &f),
            Endpoint::Status => store.sid_status(&ctx, &f),
        }
    }
}

fn decline_error(ep: Endpoint, k: &Knobs) -> PgError {
    let (default_code, message, result_code, result_message) = if ep == Endpoint::Subscription {
        (
            code::CHARGE_DECLINED,
            "recurring payment failed",
            "INSUFFICIENT_BALANCE",
            "잔액이 부족합니다 (simulated decline)",
        )
    } else {
        (
            code::APPROVE_DECLINED,
            "approval failure",
            "LIMIT_EXCEEDED",
            "결제 한도를 초과했습니다 (simulated decline)",
        )
    };
    PgError::new(k.decline_code.unwrap_or(default_code), message).with_method_result(
        k.decline_result_code.as_deref().unwrap_or(result_code),
        k.decline_result_message
            .as_deref()
            .unwrap_or(result_message),
    )
}

fn server_error(k: &Knobs) -> Response {
    let status =
        StatusCode::from_u16(k.server_error_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match k.server_error_body {
        ErrorBody::Empty => status.into_response(),
        ErrorBody::Json => (
            status,
            Json(json!({"error_code": code::INTERNAL, "error_message": "internal server error"})),
        )
            .into_response(),
        ErrorBody::Html => (
            status,
            Html(format!(
                "<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center></body></html>"
            )),
        )
            .into_response(),
    }
}

/// Holds the request, then closes its connection without an answer.
async fn hold_and_close(conn: Option<ConnHandle>, ms: u64) -> Response {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    match conn {
        Some(conn) => {
            conn.close();
            std::future::pending().await
        }
        // served outside `server::serve`: the closest thing is a gateway timeout
        None => StatusCode::GATEWAY_TIMEOUT.into_response(),
    }
}

async fn api(sim: Arc<Sim>, ep: Endpoint, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let conn = parts.extensions.get::<ConnHandle>().cloned();
    sim.count(ep.name());
    sim.count_second();
    let (delay, legacy) = {
        let mut f = lock(&sim.faults);
        (f.delay(), f.knobs().legacy_errors)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Err(e) = sim.check_auth(&parts.headers) {
        return e.into_response(legacy);
    }
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return PgError::param("", "the request body is unreadable or too large")
            .into_response(legacy);
    };
    let (server_error_now, timeout_now, knobs) = {
        let mut f = lock(&sim.faults);
        let se = f.roll(ep, FaultKind::ServerError);
        let to = !se && f.roll(ep, FaultKind::Timeout);
        (se, to, f.knobs().clone())
    };
    if server_error_now {
        tracing::info!(endpoint = ep.name(), "injected server error");
        return server_error(&knobs);
    }
    if timeout_now {
        tracing::info!(
            endpoint = ep.name(),
            ms = knobs.timeout_ms,
            "injected timeout"
        );
        return hold_and_close(conn, knobs.timeout_ms).await;
    }
    match sim.dispatch(ep, &parts.headers, &bytes) {
        Ok(answer) => {
            if lock(&sim.faults).roll(ep, FaultKind::Drop) {
                tracing::info!(
                    endpoint = ep.name(),
                    ms = knobs.timeout_ms,
                    "done; dropping the response"
                );
                return hold_and_close(conn, knobs.timeout_ms).await;
            }
            tracing::debug!(endpoint = ep.name(), "ok");
            Json(answer).into_response()
        }
        Err(e) => {
            tracing::debug!(endpoint = ep.name(), code = e.code, message = %e.message, "error");
            e.into_response(legacy)
        }
    }
}

// -------------------------------------------------------------------- buyer page

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
             <body><h1>{t}</h1>{body}</body></html>",
            t = escape(title)
        )),
    )
        .into_response()
}

fn buyer_response(tid: &str, outcome: BuyerOutcome) -> Response {
    match outcome {
        BuyerOutcome::Redirect(to) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
        BuyerOutcome::Page {
            item_name,
            total,
            status,
        } => {
            let tid_e = escape(tid);
            page(
                StatusCode::OK,
                "KakaoPay (simulated)",
                &format!(
                    "<p>{item} — {total} KRW</p><p>tid {tid_e} · {status}</p><ul>\
                     <li><a id=\"approve\" href=\"/buyer/{tid_e}/approve\">approve</a></li>\
                     <li><a id=\"cancel\" href=\"/buyer/{tid_e}/cancel\">cancel</a></li>\
                     <li><a id=\"fail\" href=\"/buyer/{tid_e}/fail\">fail</a></li></ul>",
                    item = escape(&item_name),
                ),
            )
        }
        BuyerOutcome::NotFound => page(StatusCode::NOT_FOUND, "No such payment", ""),
        BuyerOutcome::Expired => page(StatusCode::GONE, "This payment has expired", ""),
        BuyerOutcome::Closed(status) => page(
            StatusCode::CONFLICT,
            "This payment is closed",
            &format!("<p>status {status}</p>"),
        ),
    }
}

async fn buyer_view(State(sim): State<Arc<Sim>>, Path(tid): Path<String>) -> Response {
    sim.count("buyer");
    let knobs = sim.knobs();
    let action = if knobs.auto_approve {
        match knobs.auto_action {
            AutoAction::Approve => BuyerAction::Approve,
            AutoAction::Cancel => BuyerAction::Cancel,
            AutoAction::Fail => BuyerAction::Fail,
        }
    } else {
        BuyerAction::View
    };
    let ctx = sim.ctx();
    let outcome = lock(&sim.store).buyer(&ctx, &tid, action);
    buyer_response(&tid, outcome)
}

async fn buyer_action(
    State(sim): State<Arc<Sim>>,
    Path((tid, action)): Path<(String, String)>,
) -> Response {
    sim.count("buyer");
    let action = match action.as_str() {
        "approve" => BuyerAction::Approve,
        "cancel" => BuyerAction::Cancel,
        "fail" => BuyerAction::Fail,
        _ => return page(StatusCode::NOT_FOUND, "No such action", ""),
    };
    let ctx = sim.ctx();
    let outcome = lock(&sim.store).buyer(&ctx, &tid, action);
    buyer_response(&tid, outcome)
}

// -------------------------------------------------------------------- admin

/// The webhook sink: a receiver benchmarks register as endpoints (`/__webhooks/partner`,
/// …), answering every delivery 204 at once and counting it per name.
async fn webhook_sink(State(sim): State<Arc<Sim>>, Path(name): Path<String>) -> StatusCode {
    *lock(&sim.webhooks).entry(name).or_default() += 1;
    StatusCode::NO_CONTENT
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn get_ledger(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let store = lock(&sim.store);
    Json(json!({"entries": store.ledger()}))
}

async fn clear_ledger(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let cleared = lock(&sim.store).clear_ledger();
    tracing::info!(cleared, "ledger cleared");
    Json(json!({"cleared": cleared}))
}

async fn get_knobs(State(sim): State<Arc<Sim>>) -> Json<Knobs> {
    Json(sim.knobs())
}

async fn put_knobs(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("not JSON: {e}")),
    };
    let mut faults = lock(&sim.faults);
    match faults.knobs().merged(&patch) {
        Ok(knobs) => {
            let touched: Vec<String> = patch
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            faults.set(knobs.clone(), &touched);
            tracing::info!(?touched, "knobs changed");
            Json(knobs).into_response()
        }
        Err(e) => bad_request(e),
    }
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

async fn reset_knobs(State(sim): State<Arc<Sim>>) -> Json<Knobs> {
    let knobs = sim.config.knobs.clone();
    lock(&sim.faults).reset(knobs.clone());
    tracing::info!("knobs reset to the startup values");
    Json(knobs)
}

/// `{"now": <RFC 3339 of the simulator's now>, "offset_ms": N}`.
fn clock_json(clock: &Clock) -> Json<Value> {
    Json(json!({
        "now": clock.now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "offset_ms": clock.offset_ms(),
    }))
}

async fn get_clock(State(sim): State<Arc<Sim>>) -> Json<Value> {
    clock_json(&sim.clock)
}

/// `PUT /__clock`: exactly one of the two.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockSet {
    now: Option<DateTime<Utc>>,
    offset_ms: Option<i64>,
}

async fn put_clock(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let set: ClockSet = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return bad_request(format!(
                "expected {{\"now\": \"<RFC 3339>\"}} or {{\"offset_ms\": N}}: {e}"
            ))
        }
    };
    let set = match (set.now, set.offset_ms) {
        (Some(now), None) => sim.clock.set_now(now),
        (None, Some(ms)) => sim.clock.set_offset_ms(ms).map(|()| ms),
        _ => Err("give exactly one of \"now\" and \"offset_ms\"".to_owned()),
    };
    match set {
        Ok(offset_ms) => {
            tracing::info!(offset_ms, "clock offset changed");
            clock_json(&sim.clock).into_response()
        }
        Err(e) => bad_request(e),
    }
}

async fn reset_clock(State(sim): State<Arc<Sim>>) -> Json<Value> {
    // 0 is always within bounds
    if let Err(e) = sim.clock.set_offset_ms(0) {
        tracing::warn!(error = %e, "clock reset failed");
    }
    tracing::info!("clock back to real time");
    clock_json(&sim.clock)
}

/// `POST /__sids`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SidBatch {
    sids: Vec<SidRegistration>,
}

async fn register_sids(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let batch: SidBatch = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("expected {{\"sids\": [...]}}: {e}")),
    };
    let ctx = sim.ctx();
    let registered = lock(&sim.store).register_sids(&ctx, batch.sids);
    match registered {
        Ok(n) => {
            tracing::info!(registered = n, "SIDs registered");
            Json(json!({"registered": n})).into_response()
        }
        Err(RegisterError::Invalid(e)) => bad_request(e),
        Err(RegisterError::Conflict(e)) => {
            (StatusCode::CONFLICT, Json(json!({"error": e}))).into_response()
        }
    }
}

async fn get_sid(State(sim): State<Arc<Sim>>, Path(sid): Path<String>) -> Response {
    let state = lock(&sim.store).sid_state(&sid);
    match state {
        Some(state) => Json(state).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no SID {sid:?}")})),
        )
            .into_response(),
    }
}

/// `PUT /__sids/{sid}/decline` `{"error_code": -753, "method_result_code"?: …,
/// "method_result_message"?: …}`: every charge on the SID is declined so.
async fn put_sid_decline(
    State(sim): State<Arc<Sim>>,
    Path(sid): Path<String>,
    body: Bytes,
) -> Response {
    match serde_json::from_slice::<SidDecline>(&body) {
        Ok(d) => set_sid_decline(&sim, &sid, Some(d)),
        Err(e) => bad_request(format!(
            "expected {{\"error_code\": N, \"method_result_code\"?: \"…\"}}: {e}"
        )),
    }
}

/// `DELETE /__sids/{sid}/decline`: the SID's charges follow the knobs again.
async fn delete_sid_decline(State(sim): State<Arc<Sim>>, Path(sid): Path<String>) -> Response {
    set_sid_decline(&sim, &sid, None)
}

fn set_sid_decline(sim: &Sim, sid: &str, decline: Option<SidDecline>) -> Response {
    let found = lock(&sim.store).set_sid_decline(sid, decline.clone());
    if !found {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no SID {sid:?}")})),
        )
            .into_response();
    }
    tracing::info!(sid, ?decline, "SID decline set");
    Json(json!({"sid": sid, "decline": decline})).into_response()
}

async fn stats(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let requests = lock(&sim.requests).clone();
    let per_second: Vec<Value> = lock(&sim.per_second)
        .iter()
        .map(|(at, n)| json!({"at": at, "requests": n}))
        .collect();
    let max_per_second = lock(&sim.per_second).values().copied().max().unwrap_or(0);
    let (injected, faults_left) = {
        let f = lock(&sim.faults);
        (f.injected().clone(), f.faults_left())
    };
    let (payments, sids, ledger) = {
        let s = lock(&sim.store);
        let (p, sids) = s.counts();
        (p, sids, s.ledger().len())
    };
    Json(json!({
        "requests": requests,
        "per_second": per_second,
        "max_per_second": max_per_second,
        "faults_injected": injected,
        "faults_left": faults_left,
        "payments": payments,
        "sids": sids,
        "ledger_entries": ledger,
        "webhooks": lock(&sim.webhooks).clone(),
    }))
}

/// All routes.
pub fn router(sim: Arc<Sim>) -> Router {
    let mut r = Router::new();
    for ep in Endpoint::ALL {
        r = r.route(
            &format!("/online/v1/payment/{}", ep.path()),
            post(move |State(sim): State<Arc<Sim>>, req: Request<Body>| api(sim, ep, req)),
        );
    }
    r.route("/buyer/{tid}", get(buyer_view))
        .route("/buyer/{tid}/{action}", get(buyer_action))
        .route("/__health", get(health))
        .route("/__ledger", get(get_ledger).delete(clear_ledger))
        .route(
            "/__knobs",
            get(get_knobs).put(put_knobs).delete(reset_knobs),
        )
        .route("/__stats", get(stats))
        .route("/__webhooks/{name}", post(webhook_sink))
        .route(
            "/__clock",
            get(get_clock).put(put_clock).delete(reset_clock),
        )
        .route(
            "/__sids",
            post(register_sids).layer(DefaultBodyLimit::max(MAX_SIDS_BODY)),
        )
        .route("/__sids/{sid}", get(get_sid))
        .route(
            "/__sids/{sid}/decline",
            put(put_sid_decline).delete(delete_sid_decline),
        )
        .with_state(sim)
}
