//! Recovery and resubscribe checkouts: the owner starts one on a subscription; a recovery
//! link (from `subscription.past_due` or a dunning `subscription.canceled`) shows and starts
//! one without a login; the buyer follows it by its token and comes back from KakaoPay
//! through its return routes.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use billing::ids::SubscriptionId;
use billing::subscriptions::checkout::{Checkout, RecoveryLink, RedirectAction, StartCheckout};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiPath, ApiQuery, AuthUser, OptionalApiJson};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_checkout))
        .routes(routes!(get_checkout))
        .routes(routes!(checkout_redirect))
        .routes(routes!(get_recovery_link, start_recovery_checkout))
}

/// Pay a `past_due` subscription's overdue cycle (a recovery), or restart a canceled one (a
/// resubscribe; one canceled by dunning is a recovery of its overdue cycle), through a
/// fresh KakaoPay subscription checkout. The body may be left out; a resubscribe may set
/// `period_days`. The checkout is `created`; follow its `status_url` (`?wait=5`) for
/// KakaoPay's page. Approved, it pays the cycle, replaces the payment key (SID) and
/// returns the subscription to `active`.
#[utoipa::path(post, path = "/api/subscriptions/{id}/checkout", tag = "subscriptions", security(("bearer" = [])),
    params(("id" = i64, Path)),
    request_body(content = StartCheckout, description = "optional"),
    responses(
        (status = 201, body = Checkout),
        (status = 400, body = ErrorBody, description = "malformed_json"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found"),
        (status = 409, body = ErrorBody, description = "nothing_to_recover (active or paused), charge_in_progress (a canceled subscription's last charge is still at KakaoPay)"),
        (status = 415, body = ErrorBody, description = "unsupported_media_type"),
        (status = 422, body = ErrorBody, description = "validation_failed (period_days 7–365, only on a resubscribe; unknown fields); item_unavailable (no product of it is on sale)"),
    ))]
async fn start_checkout(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath(id): ApiPath<i64>,
    OptionalApiJson(req): OptionalApiJson<StartCheckout>,
) -> ApiResult<(StatusCode, Json<Checkout>)> {
    let c = billing::subscriptions::checkout::start(&state.ctx, p.user_id, SubscriptionId(id), req)
        .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds (0–10) to wait while the checkout is `created` or `approving`.
    #[param(minimum = 0, maximum = 10)]
    pub wait: Option<u64>,
}

/// A checkout by its token (the buyer's key; no login): its state and, once `ready`,
/// KakaoPay's page for the buyer.
#[utoipa::path(get, path = "/api/checkouts/{token}", tag = "subscriptions",
    params(("token" = String, Path, description = "the checkout's unguessable token"), WaitQuery),
    responses(
        (status = 200, body = Checkout),
        (status = 404, body = ErrorBody, description = "not_found"),
        (status = 422, body = ErrorBody, description = "validation_failed: wait above 10"),
    ))]
async fn get_checkout(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Json<Checkout>> {
    let wait = q.wait.map(Duration::from_secs);
    if wait.is_some_and(|w| w > state.ctx.settings.payments.max_wait_secs) {
        return Err(billing::Error::validation("wait", "must be between 0 and 10 seconds").into());
    }
    Ok(Json(
        billing::subscriptions::checkout::by_token(&state.ctx, &token, wait).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckoutRedirectQuery {
    /// Added by KakaoPay to the approval URL.
    pub pg_token: Option<String>,
}

/// Where KakaoPay sends a checkout's buyer back (`approve` with `pg_token`, `cancel`,
/// `fail`). The outcome is recorded (an approval is queued for a worker) and the buyer is
/// redirected to the storefront's result page with `subscription_id`, `checkout` (the
/// token) and `result`; with `Accept: application/json` the checkout is answered as JSON.
/// A replay changes nothing; an unknown token is 404.
#[utoipa::path(get, path = "/api/checkouts/kakaopay/{action}/{token}", tag = "subscriptions",
    params(
        ("action" = String, Path, description = "`approve`, `cancel` or `fail`"),
        ("token" = String, Path, description = "the checkout's unguessable token"),
        CheckoutRedirectQuery,
    ),
    responses(
        (status = 200, body = Checkout, description = "with Accept: application/json"),
        (status = 303, description = "to the storefront result page"),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "validation_failed: approve without pg_token"),
    ))]
async fn checkout_redirect(
    State(state): State<AppState>,
    ApiPath((action, token)): ApiPath<(RedirectAction, String)>,
    ApiQuery(q): ApiQuery<CheckoutRedirectQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (c, _) = billing::subscriptions::checkout::redirect(
        &state.ctx,
        &token,
        action,
        q.pg_token.as_deref(),
    )
    .await?;
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        return Ok(Json(c).into_response());
    }
    let mut url = url::Url::parse(&state.ctx.settings.payments.result_url)
        .map_err(|e| billing::Error::Internal(format!("payments.result_url: {e}")))?;
    url.query_pairs_mut()
        .append_pair("subscription_id", &c.subscription_id.to_string())
        .append_pair("checkout", &token)
        .append_pair("result", c.status.as_str());
    Ok(Redirect::to(url.as_str()).into_response())
}

/// A recovery link (the `recovery_url` of `subscription.past_due` or of a dunning
/// `subscription.canceled`; no login): what it would pay. 410 once used, expired, or its
/// cycle paid.
#[utoipa::path(get, path = "/api/recovery/{token}", tag = "subscriptions",
    params(("token" = String, Path, description = "the link's token")),
    responses(
        (status = 200, body = RecoveryLink),
        (status = 404, body = ErrorBody, description = "not_found"),
        (status = 410, body = ErrorBody, description = "recovery_link_gone"),
    ))]
async fn get_recovery_link(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
) -> ApiResult<Json<RecoveryLink>> {
    Ok(Json(
        billing::subscriptions::checkout::link(&state.ctx, &token).await?,
    ))
}

/// Starts the checkout a recovery link offers (no login); the link is then used. Follow
/// the checkout's `status_url` for KakaoPay's page.
#[utoipa::path(post, path = "/api/recovery/{token}", tag = "subscriptions",
    params(("token" = String, Path, description = "the link's token")),
    responses(
        (status = 201, body = Checkout),
        (status = 404, body = ErrorBody, description = "not_found"),
        (status = 409, body = ErrorBody, description = "charge_in_progress"),
        (status = 410, body = ErrorBody, description = "recovery_link_gone (used, expired, or the cycle was paid)"),
        (status = 422, body = ErrorBody, description = "item_unavailable (no product of it is on sale)"),
    ))]
async fn start_recovery_checkout(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<Checkout>)> {
    let c = billing::subscriptions::checkout::start_with_link(&state.ctx, &token).await?;
    Ok((StatusCode::CREATED, Json(c)))
}
