//! The operators' view of deliveries: lists by state / endpoint / event, one delivery with
//! every attempt, and redelivery (one, or every dead one since a time).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::delay_before;
use super::deliver::enqueue_all;
use crate::error::{Error, FieldError, Result};
use crate::ids::{DeliveryId, WebhookEndpointId};
use crate::page::{Page, PageRequest};
use crate::search::COUNT_CAP;
use crate::{tasks, Ctx};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DeliveryState {
    /// Attempts are still scheduled.
    Pending,
    /// A 2xx arrived within the timeout.
    Delivered,
    /// Every scheduled attempt failed (or the endpoint was disabled); redeliverable.
    Dead,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }
}

/// One event owed to one endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    pub id: DeliveryId,
    pub endpoint_id: WebhookEndpointId,
    /// The event's id (the `id` of the body and `Pillivery-Event-Id`).
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: i64,
    pub aggregate_version: i32,
    pub state: DeliveryState,
    /// Redeliveries start a new round (1 at first) with a fresh schedule.
    pub round: i32,
    /// Attempts made in the current round.
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub dead_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Every attempt of every round, oldest first (only on the single-delivery answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<Attempt>>,
}

/// One POST to the endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Attempt {
    pub round: i32,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// The receiver's status, if it answered.
    pub status_code: Option<i32>,
    /// Why it failed (non-2xx, timeout, connection error); none when delivered.
    pub error: Option<String>,
}

/// Filters of the delivery lists, all optional and combined.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct DeliveryFilter {
    pub state: Option<DeliveryState>,
    pub endpoint_id: Option<WebhookEndpointId>,
    /// e.g. `order.paid`.
    pub event_type: Option<String>,
    /// The event's id (uuid).
    pub event_id: Option<uuid::Uuid>,
}

/// The row shape of both queries below (`attempt_log` filled in later).
struct Row {
    id: DeliveryId,
    endpoint_id: WebhookEndpointId,
    event_id: uuid::Uuid,
    event_type: String,
    aggregate_type: String,
    aggregate_id: i64,
    aggregate_version: i32,
    state: DeliveryState,
    round: i32,
    attempts: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    last_attempt_at: Option<DateTime<Utc>>,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    delivered_at: Option<DateTime<Utc>>,
    dead_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl From<Row> for Delivery {
    fn from(r: Row) -> Self {
        Delivery {
            id: r.id,
            endpoint_id: r.endpoint_id,
            event_id: r.event_id,
            event_type: r.event_type,
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            aggregate_version: r.aggregate_version,
            state: r.state,
            round: r.round,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_attempt_at: r.last_attempt_at,
            last_status_code: r.last_status_code,
            last_error: r.last_error,
            delivered_at: r.delivered_at,
            dead_at: r.dead_at,
            created_at: r.created_at,
            attempt_log: None,
        }
    }
}

/// Deliveries matching `filter`, newest first. Only the page's rows are joined to their
/// events (the event filters look events up by their own indexes), and `total` counts up
/// to [`COUNT_CAP`] (+1 when there are more): deliveries only ever accumulate.
pub async fn list_deliveries(
    ctx: &Ctx,
    filter: DeliveryFilter,
    page: PageRequest,
) -> Result<Page<Delivery>> {
    let page = page.validate()?;
    let state = filter.state.map(DeliveryState::as_str);
    let endpoint = filter.endpoint_id.map(|e| e.0);
    let mut conn = ctx.db.acquire().await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM (
             SELECT 1 FROM webhook_deliveries d
             WHERE ($1::text IS NULL OR d.state = $1)
               AND ($2::bigint IS NULL OR d.endpoint_id = $2)
               AND (($3::text IS NULL AND $4::uuid IS NULL) OR d.event_id IN (
                   SELECT ev.id FROM outbox_events ev
                   WHERE ($3::text IS NULL OR ev.event_type = $3)
                     AND ($4::uuid IS NULL OR ev.event_id = $4)))
             LIMIT $5) capped"#,
        state,
        endpoint,
        filter.event_type,
        filter.event_id,
        COUNT_CAP + 1
    )
    .fetch_one(&mut *conn)
    .await?;
    let items = sqlx::query_as!(
        Row,
        r#"WITH page AS (
             SELECT d.* FROM webhook_deliveries d
             WHERE ($1::text IS NULL OR d.state = $1)
               AND ($2::bigint IS NULL OR d.endpoint_id = $2)
               AND (($3::text IS NULL AND $4::uuid IS NULL) OR d.event_id IN (
                   SELECT ev.id FROM outbox_events ev
                   WHERE ($3::text IS NULL OR ev.event_type = $3)
                     AND ($4::uuid IS NULL OR ev.event_id = $4)))
             ORDER BY d.created_at DESC, d.id DESC LIMIT $5 OFFSET $6
           )
           SELECT d.id AS "id!: DeliveryId", d.endpoint_id AS "endpoint_id!: WebhookEndpointId",
                  ev.event_id, ev.event_type, ev.aggregate_type, ev.aggregate_id,
                  ev.aggregate_version, d.state AS "state!: DeliveryState", d.round AS "round!",
                  d.attempts AS "attempts!", d.next_attempt_at, d.last_attempt_at,
                  d.last_status_code, d.last_error, d.delivered_at, d.dead_at,
                  d.created_at AS "created_at!"
           FROM page d JOIN outbox_events ev ON ev.id = d.event_id
           ORDER BY d.created_at DESC, d.id DESC"#,
        state,
        endpoint,
        filter.event_type,
        filter.event_id,
        page.size,
        page.offset()
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Page::new(
        items.into_iter().map(Delivery::from).collect(),
        page,
        total,
    ))
}

/// One delivery with every attempt of every round.
pub async fn get_delivery(ctx: &Ctx, id: DeliveryId) -> Result<Delivery> {
    let mut conn = ctx.db.acquire().await?;
    let row = sqlx::query_as!(
        Row,
        r#"SELECT d.id AS "id: DeliveryId", d.endpoint_id AS "endpoint_id: WebhookEndpointId",
                  ev.event_id, ev.event_type, ev.aggregate_type, ev.aggregate_id,
                  ev.aggregate_version, d.state AS "state: DeliveryState", d.round, d.attempts,
                  d.next_attempt_at, d.last_attempt_at, d.last_status_code, d.last_error,
                  d.delivered_at, d.dead_at, d.created_at
           FROM webhook_deliveries d JOIN outbox_events ev ON ev.id = d.event_id
           WHERE d.id = $1"#,
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound)?;
    let attempts = sqlx::query_as!(
        Attempt,
        r#"SELECT round, attempt, started_at, duration_ms, status_code, error
           FROM webhook_attempts WHERE delivery_id = $1 ORDER BY round, attempt"#,
        id.0
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Delivery {
        attempt_log: Some(attempts),
        ..Delivery::from(row)
    })
}

fn first_due(ctx: &Ctx, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let delay = delay_before(&ctx.settings.webhooks.retry_schedule_secs, 1)
        .ok_or_else(|| Error::Internal("webhooks.retry_schedule_secs is empty".into()))?;
    Ok(now + delay)
}

/// Starts a new round of a delivery in any state: pending again, with the whole schedule
/// ahead and its first job queued (jobs of the old round become stale). The attempts made
/// so far stay in its log.
pub async fn redeliver(ctx: &Ctx, actor: &crate::audit::Actor, id: DeliveryId) -> Result<Delivery> {
    let now = ctx.clock.now();
    let due = first_due(ctx, now)?;
    let mut tx = ctx.db.begin().await?;
    let enabled = sqlx::query_scalar!(
        r#"SELECT e.enabled FROM webhook_deliveries d
           JOIN webhook_endpoints e ON e.id = d.endpoint_id
           WHERE d.id = $1 FOR UPDATE OF d"#,
        id.0
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    if !enabled {
        return Err(Error::Validation(vec![FieldError::new(
            "endpoint_id",
            "the endpoint is disabled; enable it first",
        )]));
    }
    let round = sqlx::query_scalar!(
        r#"UPDATE webhook_deliveries
           SET state = 'pending', round = round + 1, attempts = 0, next_attempt_at = $2,
               delivered_at = NULL, dead_at = NULL
           WHERE id = $1 RETURNING round"#,
        id.0,
        due
    )
    .fetch_one(&mut *tx)
    .await?;
    let task = tasks::WebhookDeliver {
        delivery_id: id.0,
        round,
        attempt: 1,
    };
    enqueue_all(&mut tx, &[task], due, now).await?;
    crate::audit::record(
        &mut tx,
        actor,
        crate::audit::Action::DeliveryRedelivered,
        crate::audit::Target::row("webhook_delivery", &id),
        serde_json::json!({ "round": round }),
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(delivery_id = %id, round, "delivery redelivered by an operator");
    get_delivery(ctx, id).await
}

/// `POST /api/admin/deliveries/redeliver`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeliverDead {
    /// Dead deliveries that died at or after this time (RFC 3339).
    pub since: DateTime<Utc>,
    /// Only this endpoint's.
    #[serde(default)]
    pub endpoint_id: Option<WebhookEndpointId>,
}

/// Redelivers every dead delivery that died since `since` (of one endpoint, or of all
/// enabled ones; a disabled endpoint's stay dead until it is enabled). Returns how many.
pub async fn redeliver_dead(
    ctx: &Ctx,
    actor: &crate::audit::Actor,
    req: RedeliverDead,
) -> Result<u64> {
    let now = ctx.clock.now();
    let due = first_due(ctx, now)?;
    let mut tx = ctx.db.begin().await?;
    let rows = sqlx::query!(
        r#"UPDATE webhook_deliveries d
           SET state = 'pending', round = d.round + 1, attempts = 0, next_attempt_at = $3,
               dead_at = NULL
           FROM webhook_endpoints e
           WHERE e.id = d.endpoint_id AND e.enabled
             AND d.state = 'dead' AND d.dead_at >= $1
             AND ($2::bigint IS NULL OR d.endpoint_id = $2)
           RETURNING d.id, d.round"#,
        req.since,
        req.endpoint_id.map(|e| e.0),
        due
    )
    .fetch_all(&mut *tx)
    .await?;
    let tasks: Vec<tasks::WebhookDeliver> = rows
        .iter()
        .map(|r| tasks::WebhookDeliver {
            delivery_id: r.id,
            round: r.round,
            attempt: 1,
        })
        .collect();
    enqueue_all(&mut tx, &tasks, due, now).await?;
    crate::audit::record(
        &mut tx,
        actor,
        crate::audit::Action::DeadDeliveriesRedelivered,
        crate::audit::Target::many("webhook_delivery"),
        serde_json::json!({
            "since": req.since, "endpoint_id": req.endpoint_id, "count": rows.len(),
        }),
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(count = rows.len(), since = %req.since, endpoint_id = ?req.endpoint_id,
        "dead deliveries redelivered by an operator");
    Ok(rows.len() as u64)
}
