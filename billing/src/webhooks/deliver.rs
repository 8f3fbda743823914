//! Moving outbox events to endpoints: the dispatcher (events → deliveries and their first
//! jobs), one delivery attempt (signed POST, outcome, next job, endpoint health, all in
//! one transaction), the signature, and the backlog gauges.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sqlx::PgConnection;

use super::{delay_before, ALL_EVENTS, ENDPOINT_DISABLED_EVENT};
use crate::error::{Error, Result};
use crate::ids::{DeliveryId, WebhookEndpointId};
use crate::{jobs, outbox, tasks, Ctx};

/// `t=<unix secs>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "Pillivery-Signature";
const EVENT_ID_HEADER: &str = "Pillivery-Event-Id";
const EVENT_TYPE_HEADER: &str = "Pillivery-Event-Type";

/// Longest receiver error text kept per attempt (a receiver's 500 page can be large).
const MAX_ERROR_CHARS: usize = 500;

/// HMAC-SHA256 over `"<t>.<body>"` (HMAC takes keys of any length; `None` is unreachable
/// in practice but not in the type).
fn mac(secret: &str, t: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The `Pillivery-Signature` value of `body` sent at unix time `t`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> Result<String> {
    let mac = mac(secret, t, body)
        .ok_or_else(|| Error::Internal("webhook secret unusable as an HMAC key".into()))?;
    Ok(format!(
        "t={t},v1={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// What a receiver does: true if `header` is a valid signature of `body` under `secret`
/// (constant-time comparison). Checking `t` against the receiver's clock is its choice.
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    match (t, v1) {
        (Some(t), Some(sig)) => mac(secret, t, body).is_some_and(|m| m.verify_slice(&sig).is_ok()),
        _ => false,
    }
}

/// The JSON body receivers get.
#[derive(Debug, Serialize)]
struct Payload<'a> {
    id: uuid::Uuid,
    #[serde(rename = "type")]
    event_type: &'a str,
    created_at: DateTime<Utc>,
    aggregate_id: i64,
    aggregate_version: i32,
    data: &'a serde_json::Value,
}

// ---- the dispatcher ------------------------------------------------------------------------

/// Dispatches up to `limit` undispatched outbox events in one transaction: a delivery per
/// enabled endpoint subscribed to each event's type, each with its first job. Events are
/// taken with `FOR UPDATE SKIP LOCKED`, so every worker may run this at once; the
/// (event, endpoint) key makes a delivery exist at most once. Returns how many events were
/// dispatched (a full batch means there may be more).
pub async fn dispatch(ctx: &Ctx, limit: i64) -> Result<usize> {
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let events = sqlx::query_scalar!(
        r#"DELETE FROM outbox_pending WHERE event_id IN (
             SELECT event_id FROM outbox_pending ORDER BY event_id LIMIT $1
             FOR UPDATE SKIP LOCKED)
           RETURNING event_id"#,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    if events.is_empty() {
        return Ok(0);
    }
    let first_delay = delay_before(&ctx.settings.webhooks.retry_schedule_secs, 1)
        .ok_or_else(|| Error::Internal("webhooks.retry_schedule_secs is empty".into()))?;
    let due = now + first_delay;
    let deliveries = sqlx::query_scalar!(
        r#"INSERT INTO webhook_deliveries (event_id, endpoint_id, next_attempt_at, created_at)
           SELECT ev.id, e.id, $2, $3
           FROM outbox_events ev
           JOIN webhook_endpoints e
             ON e.enabled AND (ev.event_type = ANY(e.event_types) OR $4 = ANY(e.event_types))
           WHERE ev.id = ANY($1)
           ORDER BY ev.id, e.id
           ON CONFLICT ON CONSTRAINT webhook_deliveries_event_endpoint_key DO NOTHING
           RETURNING id"#,
        &events,
        due,
        now,
        ALL_EVENTS
    )
    .fetch_all(&mut *tx)
    .await?;
    let tasks: Vec<tasks::WebhookDeliver> = deliveries
        .iter()
        .map(|id| tasks::WebhookDeliver::first(DeliveryId(*id)))
        .collect();
    enqueue_all(&mut tx, &tasks, due, now).await?;
    tx.commit().await?;
    tracing::debug!(
        events = events.len(),
        deliveries = deliveries.len(),
        "outbox events dispatched"
    );
    Ok(events.len())
}

/// Queues delivery jobs on the caller's transaction: in one statement when they are due
/// now, one by one when the schedule delays them.
pub(super) async fn enqueue_all(
    conn: &mut PgConnection,
    tasks: &[tasks::WebhookDeliver],
    due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<()> {
    if due <= now {
        jobs::enqueue_many(conn, tasks, now).await?;
    } else {
        for t in tasks {
            jobs::enqueue_at(conn, t, due, now).await?;
        }
    }
    Ok(())
}

// ---- one attempt ---------------------------------------------------------------------------

/// What `deliver` needs about a delivery, read before the POST without a lock.
struct Target {
    state: String,
    round: i32,
    attempts: i32,
    endpoint_id: WebhookEndpointId,
    url: String,
    secret: String,
    enabled: bool,
    event_uuid: uuid::Uuid,
    event_type: String,
    event_created_at: DateTime<Utc>,
    aggregate_id: i64,
    aggregate_version: i32,
    data: serde_json::Value,
}

/// One attempt's result as the receiver (or the network) gave it.
struct Outcome {
    status: Option<u16>,
    error: Option<String>,
}

impl Outcome {
    fn delivered(&self) -> bool {
        self.error.is_none()
    }
}

async fn post(ctx: &Ctx, t: &Target, body: Vec<u8>, signature: String) -> Outcome {
    let sent = ctx
        .webhook_http
        .post(&t.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_ID_HEADER, t.event_uuid.to_string())
        .header(EVENT_TYPE_HEADER, &t.event_type)
        .header(SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => {
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            return Outcome {
                status: None,
                error: Some(truncate(format!("{kind}: {e}"))),
            };
        }
    };
    let status = resp.status();
    // The body counts too: a 2xx whose body does not arrive within the timeout is not
    // "2xx within the timeout".
    let text = resp.text().await;
    let error = match (status.is_success(), text) {
        (true, Ok(_)) => None,
        (true, Err(e)) if e.is_timeout() => Some(format!("timeout: reading the answer: {e}")),
        (true, Err(e)) => Some(format!("request failed: reading the answer: {e}")),
        (false, Ok(text)) => Some(format!("HTTP {}: {}", status.as_u16(), text.trim())),
        (false, Err(_)) => Some(format!("HTTP {}", status.as_u16())),
    };
    Outcome {
        status: Some(status.as_u16()),
        error: error.map(truncate),
    }
}

fn truncate(mut s: String) -> String {
    if let Some((i, _)) = s.char_indices().nth(MAX_ERROR_CHARS) {
        s.truncate(i);
    }
    s
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// Makes attempt `attempt` of round `round` of a delivery (the `webhooks.deliver` job).
/// A job that is no longer current (the delivery moved on, was redelivered or is gone)
/// does nothing. The attempt's outcome, the next attempt's job (or `dead`) and the
/// endpoint's health commit together. Only database errors are errors: the retry schedule
/// is this function's, not the job runtime's.
pub async fn deliver(ctx: &Ctx, id: DeliveryId, round: i32, attempt: i32) -> Result<()> {
    let target = sqlx::query_as!(
        Target,
        r#"SELECT d.state, d.round, d.attempts, e.id AS "endpoint_id: WebhookEndpointId", e.url,
                  e.secret, e.enabled, ev.event_id AS event_uuid, ev.event_type,
                  ev.created_at AS event_created_at, ev.aggregate_id, ev.aggregate_version,
                  ev.data
           FROM webhook_deliveries d
           JOIN webhook_endpoints e ON e.id = d.endpoint_id
           JOIN outbox_events ev ON ev.id = d.event_id
           WHERE d.id = $1"#,
        id.0
    )
    .fetch_optional(ctx.db.pool())
    .await?;
    let Some(t) = target else {
        tracing::info!(delivery_id = %id, "delivery gone (endpoint deleted); nothing to do");
        return Ok(());
    };
    if !is_current(&t.state, t.round, t.attempts, round, attempt) {
        tracing::debug!(delivery_id = %id, round, attempt, "stale delivery job; skipped");
        return Ok(());
    }
    if !t.enabled {
        return give_up_disabled(ctx, id, round, attempt).await;
    }

    let body = serde_json::to_vec(&Payload {
        id: t.event_uuid,
        event_type: &t.event_type,
        created_at: t.event_created_at,
        aggregate_id: t.aggregate_id,
        aggregate_version: t.aggregate_version,
        data: &t.data,
    })
    .map_err(|e| Error::Internal(format!("webhook payload: {e}")))?;
    let started_at = ctx.clock.now();
    let signature = sign(&t.secret, started_at.timestamp(), &body)?;
    let started = Instant::now();
    let outcome = post(ctx, &t, body, signature).await;
    let took = started.elapsed();
    metrics::histogram!("webhook_delivery_duration_seconds").record(took.as_secs_f64());

    let mut tx = ctx.db.begin().await?;
    let now = ctx.clock.now();
    // Another run of this same job (a lease that expired while we waited on the receiver)
    // may have recorded this attempt already; the row lock orders the two.
    let current = sqlx::query!(
        "SELECT state, round, attempts FROM webhook_deliveries WHERE id = $1 FOR UPDATE",
        id.0
    )
    .fetch_optional(&mut *tx)
    .await?;
    match current {
        Some(c) if is_current(&c.state, c.round, c.attempts, round, attempt) => {}
        _ => {
            tracing::info!(delivery_id = %id, round, attempt, "attempt already recorded by another run");
            return Ok(());
        }
    }
    sqlx::query!(
        r#"INSERT INTO webhook_attempts (delivery_id, round, attempt, started_at, duration_ms,
                                         status_code, error)
           VALUES ($1, $2, $3, $4, $5, $6, $7)"#,
        id.0,
        round,
        attempt,
        started_at,
        millis(took),
        outcome.status.map(i32::from),
        outcome.error.as_deref()
    )
    .execute(&mut *tx)
    .await?;
    let status = outcome.status.map(i32::from);
    if outcome.delivered() {
        sqlx::query!(
            r#"UPDATE webhook_deliveries
               SET state = 'delivered', attempts = $2, delivered_at = $3, next_attempt_at = NULL,
                   last_attempt_at = $4, last_status_code = $5, last_error = NULL
               WHERE id = $1"#,
            id.0,
            attempt,
            now,
            started_at,
            status
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            r#"UPDATE webhook_endpoints SET failing_since = NULL
               WHERE id = $1 AND failing_since IS NOT NULL"#,
            t.endpoint_id.0
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::counter!("webhook_deliveries_total", "outcome" => "delivered").increment(1);
        tracing::info!(delivery_id = %id, endpoint_id = %t.endpoint_id, event_id = %t.event_uuid,
            attempt, status, "webhook delivered");
        return Ok(());
    }

    let error = outcome.error.as_deref().unwrap_or_default();
    metrics::counter!("webhook_deliveries_total", "outcome" => "failed").increment(1);
    match delay_before(&ctx.settings.webhooks.retry_schedule_secs, attempt + 1) {
        Some(delay) => {
            let at = now + delay;
            sqlx::query!(
                r#"UPDATE webhook_deliveries
                   SET attempts = $2, next_attempt_at = $3, last_attempt_at = $4,
                       last_status_code = $5, last_error = $6
                   WHERE id = $1"#,
                id.0,
                attempt,
                at,
                started_at,
                status,
                error
            )
            .execute(&mut *tx)
            .await?;
            let next = tasks::WebhookDeliver {
                delivery_id: id.0,
                round,
                attempt: attempt + 1,
            };
            jobs::enqueue_at(&mut tx, &next, at, now).await?;
            tracing::info!(delivery_id = %id, endpoint_id = %t.endpoint_id, attempt, status,
                error, next_attempt_at = %at, "webhook attempt failed; will retry");
        }
        None => {
            mark_dead(&mut tx, id, attempt, now, Some((started_at, status)), error).await?;
            tracing::warn!(delivery_id = %id, endpoint_id = %t.endpoint_id,
                event_id = %t.event_uuid, attempts = attempt, error,
                "webhook delivery dead: every scheduled attempt failed");
        }
    }
    record_failure(ctx, &mut tx, t.endpoint_id, started_at, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Whether a job for (`round`, `attempt`) is the delivery's next attempt.
fn is_current(state: &str, d_round: i32, d_attempts: i32, round: i32, attempt: i32) -> bool {
    state == "pending" && d_round == round && d_attempts + 1 == attempt
}

async fn mark_dead(
    conn: &mut PgConnection,
    id: DeliveryId,
    attempts: i32,
    now: DateTime<Utc>,
    last_attempt: Option<(DateTime<Utc>, Option<i32>)>,
    error: &str,
) -> Result<()> {
    let (last_at, last_status) = last_attempt.unzip();
    sqlx::query!(
        r#"UPDATE webhook_deliveries
           SET state = 'dead', attempts = $2, dead_at = $3, next_attempt_at = NULL,
               last_attempt_at = COALESCE($4, last_attempt_at),
               last_status_code = CASE WHEN $4::timestamptz IS NULL THEN last_status_code
                                       ELSE $5 END,
               last_error = $6
           WHERE id = $1"#,
        id.0,
        attempts,
        now,
        last_at,
        last_status.flatten(),
        error
    )
    .execute(&mut *conn)
    .await?;
    metrics::counter!("webhook_deliveries_total", "outcome" => "dead").increment(1);
    Ok(())
}

/// The endpoint was disabled after the delivery was queued: no attempt is made and the
/// delivery is dead (redeliverable once the endpoint is enabled again).
async fn give_up_disabled(ctx: &Ctx, id: DeliveryId, round: i32, attempt: i32) -> Result<()> {
    let mut tx = ctx.db.begin().await?;
    let current = sqlx::query!(
        "SELECT state, round, attempts FROM webhook_deliveries WHERE id = $1 FOR UPDATE",
        id.0
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(c) = current.filter(|c| is_current(&c.state, c.round, c.attempts, round, attempt))
    else {
        return Ok(());
    };
    mark_dead(
        &mut tx,
        id,
        c.attempts,
        ctx.clock.now(),
        None,
        "endpoint disabled",
    )
    .await?;
    tx.commit().await?;
    tracing::warn!(delivery_id = %id, "webhook delivery dead: its endpoint is disabled");
    Ok(())
}

#[derive(Serialize)]
struct EndpointDisabled<'a> {
    endpoint_id: i64,
    url: &'a str,
    reason: &'a str,
    failing_since: DateTime<Utc>,
}

/// A failed attempt in the endpoint's health: starts its failure run, and disables it
/// (with a `webhook_endpoint.disabled` event) once the run is older than
/// `disable_after_secs`.
async fn record_failure(
    ctx: &Ctx,
    conn: &mut PgConnection,
    endpoint: WebhookEndpointId,
    attempt_started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<()> {
    let row = sqlx::query!(
        r#"UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2)
           WHERE id = $1
           RETURNING enabled, failing_since AS "failing_since!", url"#,
        endpoint.0,
        attempt_started
    )
    .fetch_one(&mut *conn)
    .await?;
    // Past chrono's range the endpoint is never disabled.
    let limit = chrono::Duration::from_std(ctx.settings.webhooks.disable_after_secs)
        .unwrap_or(chrono::Duration::MAX);
    if !row.enabled || now - row.failing_since < limit {
        return Ok(());
    }
    let disabled = sqlx::query_scalar!(
        r#"UPDATE webhook_endpoints
           SET enabled = false, disabled_at = $2, disabled_reason = 'failing', updated_at = $2
           WHERE id = $1 AND enabled
           RETURNING id"#,
        endpoint.0,
        now
    )
    .fetch_optional(&mut *conn)
    .await?;
    if disabled.is_none() {
        return Ok(());
    }
    // Each disablement is its own version of the endpoint, so the event key stays unique.
    let version = sqlx::query_scalar!(
        r#"SELECT count(*)::int + 1 AS "v!" FROM outbox_events
           WHERE aggregate_type = 'webhook_endpoint' AND aggregate_id = $1"#,
        endpoint.0
    )
    .fetch_one(&mut *conn)
    .await?;
    outbox::record(
        conn,
        outbox::Event {
            event_type: ENDPOINT_DISABLED_EVENT,
            aggregate_type: "webhook_endpoint",
            aggregate_id: endpoint.0,
            aggregate_version: version,
            data: &EndpointDisabled {
                endpoint_id: endpoint.0,
                url: &row.url,
                reason: "failing",
                failing_since: row.failing_since,
            },
        },
    )
    .await?;
    tracing::error!(endpoint_id = %endpoint, url = %row.url, failing_since = %row.failing_since,
        "webhook endpoint disabled: failing continuously");
    Ok(())
}

// ---- gauges ----------------------------------------------------------------------------------

/// Sets `outbox_oldest_undelivered_seconds` (age of the oldest pending delivery or
/// undispatched event; 0 when there is none) and `webhook_deliveries_dead`.
pub async fn refresh_gauges(ctx: &Ctx) -> Result<()> {
    let row = sqlx::query!(
        r#"SELECT
             (SELECT min(created_at) FROM webhook_deliveries WHERE state = 'pending')
                 AS oldest_delivery,
             (SELECT created_at FROM outbox_events
              WHERE id = (SELECT min(event_id) FROM outbox_pending)) AS oldest_event,
             (SELECT count(*) FROM webhook_deliveries WHERE state = 'dead') AS "dead!""#
    )
    .fetch_one(ctx.db.pool())
    .await?;
    let oldest = match (row.oldest_delivery, row.oldest_event) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let age = oldest
        .map(|t| (ctx.clock.now() - t).num_milliseconds().max(0) as f64 / 1_000.0)
        .unwrap_or(0.0);
    metrics::gauge!("outbox_oldest_undelivered_seconds").set(age);
    metrics::gauge!("webhook_deliveries_dead").set(row.dead as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_secret_only() {
        let body = br#"{"id":"x"}"#;
        let header = sign("whsec_a", 1_700_000_000, body).unwrap();
        assert!(header.starts_with("t=1700000000,v1="), "{header}");
        assert!(verify("whsec_a", &header, body));
        assert!(!verify("whsec_b", &header, body));
        assert!(!verify("whsec_a", &header, br#"{"id":"y"}"#));
        let other_time = header.replace("t=1700000000", "t=1700000001");
        assert!(!verify("whsec_a", &other_time, body));
        assert!(!verify("whsec_a", "v1=00", body));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_t_dot_body() {
        // printf '1.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign("key", 1, b"{}").unwrap(),
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }

    #[test]
    fn only_the_next_attempt_of_the_current_round_is_current() {
        assert!(is_current("pending", 1, 0, 1, 1));
        assert!(is_current("pending", 2, 3, 2, 4));
        assert!(!is_current("pending", 2, 0, 1, 1), "older round");
        assert!(!is_current("pending", 1, 1, 1, 1), "attempt already made");
        assert!(!is_current("delivered", 1, 0, 1, 1));
        assert!(!is_current("dead", 1, 0, 1, 1));
    }
}
