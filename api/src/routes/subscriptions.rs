//! Subscriptions: the customer's view and edits (period, products, receiver, skip, pause,
//! resume, cancel), and the operators' what-if preview, ambiguous-charge review list and
//! "reconcile now".

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use billing::ids::SubscriptionId;
use billing::page::{Page, PageRequest};
use billing::subscriptions::charge::ReconcileAction;
use billing::subscriptions::{Outcome, Patch, Subscription, TimelineEvent, UnknownCharge};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{AdminUser, ApiJson, ApiPath, ApiQuery, AuthUser, OperatorUser};
use crate::AppState;
use billing::audit::Actor;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_subscriptions))
        .routes(routes!(
            get_subscription,
            update_subscription,
            cancel_subscription
        ))
        .routes(routes!(subscription_action))
        .routes(routes!(preview_subscription))
        .routes(routes!(list_unknown_charges))
        .routes(routes!(reconcile_charge))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionPage {
    pub items: Vec<Subscription>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

impl From<Page<Subscription>> for SubscriptionPage {
    fn from(p: Page<Subscription>) -> Self {
        Self {
            items: p.items,
            page: p.page,
            size: p.size,
            total: p.total,
        }
    }
}

/// The caller's subscriptions, newest first (without attempt history).
#[utoipa::path(get, path = "/api/subscriptions", tag = "subscriptions", security(("bearer" = [])),
    params(PageRequest),
    responses(
        (status = 200, body = SubscriptionPage),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "validation_failed (page, size)"),
    ))]
async fn list_subscriptions(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> ApiResult<Json<SubscriptionPage>> {
    let subs = billing::subscriptions::list(&state.ctx, p.user_id, page).await?;
    Ok(Json(subs.into()))
}

/// One of the caller's subscriptions: status, next charge, the upcoming schedule and
/// every charge attempt.
#[utoipa::path(get, path = "/api/subscriptions/{id}", tag = "subscriptions", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses(
        (status = 200, body = Subscription),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found (also someone else's)"),
    ))]
async fn get_subscription(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Subscription>> {
    let s = billing::subscriptions::get(&state.ctx, Some(p.user_id), SubscriptionId(id)).await?;
    Ok(Json(s))
}

/// Change the period (applies from the last successful charge; if that date has passed
/// the next charge is at the next run), the products and their quantities, and where the
/// next cycles ship. Products and receiver apply from the next charge attempt not yet
/// priced (one already under way keeps its lines); only a period change can meet
/// `charge_in_progress`. Nothing is changed unless the whole patch is accepted.
#[utoipa::path(patch, path = "/api/subscriptions/{id}", tag = "subscriptions", security(("bearer" = [])),
    params(("id" = i64, Path)),
    request_body = Patch,
    responses(
        (status = 200, body = Subscription),
        (status = 400, body = ErrorBody, description = "malformed_json"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found"),
        (status = 409, body = ErrorBody, description = "subscription_canceled, charge_in_progress (a period change only)"),
        (status = 422, body = ErrorBody, description = "validation_failed (period_days 7–365, quantities 1–99, items/remove not the subscription's, add already the subscription's or unknown, an item named twice, receiver fields, unknown fields); item_unavailable (add of an item off sale or deleted); last_product (the patch would leave no product)"),
    ))]
async fn update_subscription(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(patch): ApiJson<Patch>,
) -> ApiResult<Json<Subscription>> {
    let s =
        billing::subscriptions::update(&state.ctx, p.user_id, SubscriptionId(id), patch).await?;
    Ok(Json(s))
}

/// Cancel: nothing is charged after this (a charge already at KakaoPay completes and
/// ships); the payment key (SID) is inactivated at KakaoPay.
#[utoipa::path(delete, path = "/api/subscriptions/{id}", tag = "subscriptions", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses(
        (status = 200, body = Subscription),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found"),
        (status = 409, body = ErrorBody, description = "subscription_canceled"),
    ))]
async fn cancel_subscription(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Subscription>> {
    let s = billing::subscriptions::cancel(&state.ctx, p.user_id, SubscriptionId(id)).await?;
    Ok(Json(s))
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionAction {
    /// The next charge moves one period forward.
    Skip,
    /// No charges until resumed.
    Pause,
    /// Charges again from max(today, last charge + period).
    Resume,
}

/// Skip the next charge, pause or resume.
#[utoipa::path(post, path = "/api/subscriptions/{id}/{action}", tag = "subscriptions", security(("bearer" = [])),
    params(("id" = i64, Path), ("action" = String, Path, description = "`skip`, `pause` or `resume`")),
    responses(
        (status = 200, body = Subscription),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found (also an unknown action)"),
        (status = 409, body = ErrorBody, description = "subscription_canceled, subscription_not_active (skip/pause), subscription_not_paused (resume), charge_in_progress"),
    ))]
async fn subscription_action(
    State(state): State<AppState>,
    AuthUser(p): AuthUser,
    ApiPath((id, action)): ApiPath<(i64, SubscriptionAction)>,
) -> ApiResult<Json<Subscription>> {
    let (ctx, user, id) = (&state.ctx, p.user_id, SubscriptionId(id));
    let s = match action {
        SubscriptionAction::Skip => billing::subscriptions::skip(ctx, user, id).await?,
        SubscriptionAction::Pause => billing::subscriptions::pause(ctx, user, id).await?,
        SubscriptionAction::Resume => billing::subscriptions::resume(ctx, user, id).await?,
    };
    Ok(Json(s))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// Hypothetical KakaoPay answers to the next charges, in order (1–100): `approved`,
    /// `soft_decline` (the dunning schedule runs; `declined` is the same), `hard_decline`
    /// (the subscription is canceled at once, `hard_decline`), `transient` (nothing
    /// charged, no dunning attempt used), `ambiguous` (reconciled: did not land), or
    /// `recovery` (while past due, the customer pays the cycle through a recovery
    /// checkout instead: `recovered`, `sid_replaced`, `active`).
    pub outcomes: Vec<Outcome>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewResponse {
    pub timeline: Vec<TimelineEvent>,
}

/// What-if: the exact timeline the billing engine would follow from the subscription's
/// pending charge if KakaoPay answered `outcomes` in order (attempt times, state
/// changes, cancellation: `payment_failed` after the dunning schedule's last soft
/// decline, `hard_decline` at once after a hard one) — computed by the engine's own
/// policy code.
#[utoipa::path(post, path = "/api/admin/subscriptions/{id}/preview", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    request_body = PreviewRequest,
    responses(
        (status = 200, body = PreviewResponse),
        (status = 400, body = ErrorBody, description = "malformed_json"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found"),
        (status = 409, body = ErrorBody, description = "subscription_canceled, subscription_not_active (paused)"),
        (status = 422, body = ErrorBody, description = "validation_failed (1–100 outcomes, each approved, soft_decline, hard_decline, declined — a synonym of soft_decline —, transient, ambiguous or recovery)"),
    ))]
async fn preview_subscription(
    State(state): State<AppState>,
    _operator: OperatorUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<PreviewRequest>,
) -> ApiResult<Json<PreviewResponse>> {
    let timeline =
        billing::subscriptions::preview(&state.ctx, SubscriptionId(id), &body.outcomes).await?;
    Ok(Json(PreviewResponse { timeline }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct UnknownFilter {
    /// Only those past the review window (`subscriptions.review_after_secs`).
    pub review: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UnknownChargePage {
    pub items: Vec<UnknownCharge>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

/// Charges sent to KakaoPay without an answer yet (being reconciled from the SID's
/// status), oldest first; `?review=true` lists those past the review window.
#[utoipa::path(get, path = "/api/admin/charges/unknown", tag = "admin", security(("bearer" = [])),
    params(UnknownFilter, PageRequest),
    responses(
        (status = 200, body = UnknownChargePage),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "validation_failed (page, size)"),
    ))]
async fn list_unknown_charges(
    State(state): State<AppState>,
    _operator: OperatorUser,
    ApiQuery(filter): ApiQuery<UnknownFilter>,
    ApiQuery(page): ApiQuery<PageRequest>,
) -> ApiResult<Json<UnknownChargePage>> {
    let p = billing::subscriptions::unknown_charges(&state.ctx, filter.review, page).await?;
    Ok(Json(UnknownChargePage {
        items: p.items,
        page: p.page,
        size: p.size,
        total: p.total,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReconcileResponse {
    pub attempt_id: i64,
    pub action: ReconcileAction,
}

/// Ask KakaoPay about an unknown charge now rather than after its backoff: the waiting
/// inquiry is brought forward (or queued when none waits); a worker decides the charge
/// from the SID's status, as for any inquiry. Answers 202: the verdict comes later, on
/// the unknown-charge list and in the subscription.
#[utoipa::path(post, path = "/api/admin/charges/{attempt_id}/reconcile", tag = "admin",
    security(("bearer" = [])),
    params(("attempt_id" = i64, Path, description = "`attempt_id` from the unknown-charge list")),
    responses(
        (status = 202, body = ReconcileResponse),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "not_found"),
        (status = 422, body = ErrorBody, description = "validation_failed: the charge's outcome is not unknown"),
    ))]
async fn reconcile_charge(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(attempt_id): ApiPath<i64>,
) -> ApiResult<(StatusCode, Json<ReconcileResponse>)> {
    let action = billing::subscriptions::charge::reconcile_now(
        &state.ctx,
        &Actor::api(admin.0.user_id),
        attempt_id,
    )
    .await?;
    tracing::info!(admin = %admin.0.user_id, attempt_id, action = action.as_str(),
        "charge reconciliation requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(ReconcileResponse { attempt_id, action }),
    ))
}
