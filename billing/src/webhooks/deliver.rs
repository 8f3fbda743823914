//! Moving outbox events to endpoints: the dispatcher (events → deliveries and their first
//! jobs), one delivery attempt (signed POST, outcome, next job, endpoint health, all in
//! one transaction), the signatures (two during a secret rotation's overlap), the
//! excerpt of a failing answer that is kept, and the backlog gauges.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sqlx::PgConnection;

use super::destination;
use super::{delay_before, ALL_EVENTS, ENDPOINT_DISABLED_EVENT};
use crate::db::Wakes;
use crate::error::{Error, Result};
use crate::ids::{DeliveryId, WebhookEndpointId};
use crate::{jobs, outbox, tasks, Ctx};

/// `t=<unix secs>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, with a second `,v1=…`
/// (the replaced secret's) during a rotation's overlap window.
pub const SIGNATURE_HEADER: &str = "Pillivery-Signature";
const EVENT_ID_HEADER: &str = "Pillivery-Event-Id";
const EVENT_TYPE_HEADER: &str = "Pillivery-Event-Type";

/// Longest error text kept per attempt: what operators see as `last_error`, never a copy
/// of what a receiver (or whatever answers at its address) sent.
const MAX_ERROR_CHARS: usize = 200;
/// Most of a failing answer's body read for that excerpt; the rest is never downloaded.
const EXCERPT_READ_BYTES: usize = 1_024;

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
    sign_all(&[secret], t, body)
}

/// The `Pillivery-Signature` value with one `v1=` per secret, in order (the current
/// secret first): `t=<t>,v1=<hex>,v1=<hex>`, as Stripe writes several signatures.
pub fn sign_all(secrets: &[&str], t: i64, body: &[u8]) -> Result<String> {
    let mut header = format!("t={t}");
    for secret in secrets {
        let mac = mac(secret, t, body)
            .ok_or_else(|| Error::Internal("webhook secret unusable as an HMAC key".into()))?;
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
    Ok(header)
}

/// What a receiver does: true if any `v1=` signature of `header` is a valid signature of
/// `body` under `secret` (constant-time comparisons). A header without exactly one `t` is
/// refused. Checking `t` against the receiver's clock is its choice.
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut ts = 0;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => {
                ts += 1;
                t = v.parse::<i64>().ok();
            }
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let (Some(t), 1) = (t, ts) else {
        return false;
    };
    let Some(mac) = mac(secret, t, body) else {
        return false;
    };
    signatures
        .iter()
        .any(|sig| mac.clone().verify_slice(sig).is_ok())
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
/// now, one by one when the schedule delays them. On a `Tx`, the workers are woken after
/// its commit.
pub(super) async fn enqueue_all<W: Wakes>(
    conn: &mut W,
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
    /// The secret a rotation replaced, signing too until `previous_secret_expires_at`.
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
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
    // reqwest resolves names through the guarded resolver but never asks it about an
    // address literal: those are judged here, before anything is sent.
    if !ctx.settings.webhooks.allow_private_destinations {
        if let Some(refused) = destination::refused_literal(&t.url) {
            return Outcome {
                status: None,
                error: Some(excerpt(&refused.to_string())),
            };
        }
    }
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
    let mut resp = match sent {
        Ok(resp) => resp,
        Err(e) => {
            return Outcome {
                status: None,
                error: Some(excerpt(&describe_send_error(e))),
            };
        }
    };
    let status = resp.status();
    let error = if status.is_success() {
        // The body counts too: a 2xx whose body does not arrive within the timeout is not
        // "2xx within the timeout". It is read and dropped, chunk by chunk.
        loop {
            match resp.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) => break None,
                Err(e) if e.is_timeout() => {
                    break Some(format!("timeout: reading the answer: {}", causes(&e)))
                }
                Err(e) => {
                    break Some(format!(
                        "request failed: reading the answer: {}",
                        causes(&e)
                    ))
                }
            }
        }
    } else {
        // Only the start of a failing answer is read: an excerpt is all that is kept.
        let mut head = Vec::new();
        while head.len() < EXCERPT_READ_BYTES {
            match resp.chunk().await {
                Ok(Some(chunk)) => head.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        head.truncate(EXCERPT_READ_BYTES);
        let text = String::from_utf8_lossy(&head);
        Some(if text.trim().is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            format!("HTTP {}: {text}", status.as_u16())
        })
    };
    Outcome {
        status: Some(status.as_u16()),
        error: error.map(|e| excerpt(&e)),
    }
}

/// A request that got no answer: the destination policy's refusal if that is what
/// stopped it, otherwise the kind of failure and its causes (without the URL, which the
/// operator knows).
fn describe_send_error(e: reqwest::Error) -> String {
    if let Some(refused) = destination::refusal_in(&e) {
        return refused.to_string();
    }
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    format!("{kind}: {}", causes(&e.without_url()))
}

/// An error and its sources, `: `-separated, each said once.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// Characters that reorder or hide text when displayed (bidirectional overrides and
/// isolates, zero-width characters, the BOM): spaces in an excerpt.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{00ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `text` as it may be stored and shown to operators (and logged): control and invisible
/// formatting characters become spaces, runs of whitespace one space, and at most
/// `MAX_ERROR_CHARS` characters, the last one `…` when it was cut.
fn excerpt(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_control() || is_invisible_format(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    let collapsed = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= MAX_ERROR_CHARS {
        return collapsed;
    }
    let mut out: String = collapsed.chars().take(MAX_ERROR_CHARS - 1).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
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
                  e.secret, e.previous_secret, e.previous_secret_expires_at, e.enabled,
                  ev.event_id AS event_uuid, ev.event_type,
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
    let mut secrets = vec![t.secret.as_str()];
    match (&t.previous_secret, t.previous_secret_expires_at) {
        (Some(previous), Some(until)) if started_at < until => secrets.push(previous),
        (Some(_), Some(until)) => forget_previous_secret(ctx, t.endpoint_id, until).await?,
        _ => {}
    }
    let signature = sign_all(&secrets, started_at.timestamp(), &body)?;
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

/// A rotation's overlap is over: the replaced secret signs nothing more, so it is not
/// kept (unless another rotation has put a newer one in its place meanwhile).
async fn forget_previous_secret(
    ctx: &Ctx,
    endpoint: WebhookEndpointId,
    expired_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        r#"UPDATE webhook_endpoints SET previous_secret = NULL, previous_secret_expires_at = NULL
           WHERE id = $1 AND previous_secret_expires_at = $2"#,
        endpoint.0,
        expired_at
    )
    .execute(ctx.db.pool())
    .await?;
    tracing::info!(endpoint_id = %endpoint, "webhook secret rotation overlap over; old secret dropped");
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
    fn during_a_rotation_either_secret_verifies_the_two_signature_header() {
        let body = br#"{"id":"x"}"#;
        let header = sign_all(&["whsec_new", "whsec_old"], 1_700_000_000, body).unwrap();
        let parts: Vec<&str> = header.split(',').collect();
        assert_eq!(parts.len(), 3, "{header}");
        assert_eq!(parts[0], "t=1700000000");
        // the current secret's signature first, each the one `sign` would write alone
        assert_eq!(
            format!("{},{}", parts[0], parts[1]),
            sign("whsec_new", 1_700_000_000, body).unwrap()
        );
        assert_eq!(
            format!("{},{}", parts[0], parts[2]),
            sign("whsec_old", 1_700_000_000, body).unwrap()
        );
        assert!(verify("whsec_new", &header, body));
        assert!(verify("whsec_old", &header, body));
        assert!(!verify("whsec_other", &header, body));
        assert!(!verify("whsec_old", &header, br#"{"id":"y"}"#));
        // spaces after the commas, unknown schemes and bad hex are tolerated, not trusted
        let spaced = header.replace(',', ", ");
        assert!(verify("whsec_old", &spaced, body));
        let with_unknown = format!("t=1700000000,v0=zz,v1=nothex,{}", parts[2]);
        assert!(verify("whsec_old", &with_unknown, body));
        // one timestamp only: a second `t` could pair a signature with another time
        let two_ts = format!("{header},t=1700000001");
        assert!(!verify("whsec_new", &two_ts, body));
        assert!(!verify("whsec_new", &parts[1..].join(","), body), "no t");
    }

    #[test]
    fn a_failing_answer_is_kept_as_a_short_clean_excerpt() {
        let long = "x".repeat(5_000);
        let long_words = "word ".repeat(100);
        let cases: Vec<(String, String)> = vec![
            ("HTTP 500: oops".into(), "HTTP 500: oops".into()),
            ("HTTP 500:   a\r\n\tb  ".into(), "HTTP 500: a b".into()),
            (
                "HTTP 502: line1\nINFO admin logged in\u{1b}[31m red\u{0}".into(),
                "HTTP 502: line1 INFO admin logged in [31m red".into(),
            ),
            (
                "HTTP 400: \u{202e}gnp.exe\u{200b}\u{feff}ok\u{7f}\u{85}".into(),
                "HTTP 400: gnp.exe ok".into(),
            ),
            (
                format!("HTTP 500: {long}"),
                format!("HTTP 500: {}…", &long[..MAX_ERROR_CHARS - 11]),
            ),
            (
                format!("HTTP 503: {long_words}"),
                format!(
                    "HTTP 503: {}…",
                    long_words[..MAX_ERROR_CHARS - 11].trim_end()
                ),
            ),
            ("한글 오류 메시지".into(), "한글 오류 메시지".into()),
            ("".into(), "".into()),
        ];
        for (raw, want) in cases {
            let got = excerpt(&raw);
            assert_eq!(got, want, "{raw:?}");
            assert!(got.chars().count() <= MAX_ERROR_CHARS, "{got:?}");
            assert!(!got.chars().any(|c| c.is_control()), "{got:?}");
        }
        let multibyte = "가".repeat(1_000);
        let got = excerpt(&multibyte);
        assert_eq!(got.chars().count(), MAX_ERROR_CHARS);
        assert!(got.ends_with('…'));
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
