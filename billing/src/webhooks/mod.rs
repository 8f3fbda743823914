//! Webhooks (DESIGN §7): the operators' endpoints (what they receive, their secrets and
//! rotation, their health), the known event types and the retry schedule. Moving outbox
//! events to the endpoints lives in [`deliver`]; where they may be sent in
//! [`destination`]; the operators' view of deliveries in [`deliveries`].

pub mod deliver;
pub mod deliveries;
pub mod destination;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, FieldError, Result};
use crate::ids::WebhookEndpointId;
use crate::Ctx;

pub use deliver::{deliver, dispatch, refresh_gauges, sign, sign_all, verify, SIGNATURE_HEADER};
pub use deliveries::{
    get_delivery, list_deliveries, redeliver, redeliver_dead, Attempt, Delivery, DeliveryFilter,
    DeliveryState, RedeliverDead,
};
pub use destination::{classify, http_client, NonPublic};

/// Every event type the outbox records, the one list endpoints may subscribe to. `*` in
/// an endpoint's `event_types` means all of them (and any added later).
pub const EVENT_TYPES: &[&str] = &[
    "order.paid",
    "order.payment_failed",
    "order.canceled",
    "order.refunded",
    "subscription.created",
    "subscription.charged",
    "subscription.past_due",
    "subscription.canceled",
    "subscription.paused",
    "subscription.resumed",
    "subscription.skipped",
    "subscription.rescheduled",
    "subscription.updated",
    "subscription.renewal_upcoming",
    "subscription.recovered",
    "subscription.resubscribed",
    ENDPOINT_DISABLED_EVENT,
];

/// Recorded when an endpoint is disabled for failing continuously (aggregate
/// `webhook_endpoint`), so other endpoints (and operators' tooling) hear of it.
pub const ENDPOINT_DISABLED_EVENT: &str = "webhook_endpoint.disabled";

/// The wildcard event type.
pub const ALL_EVENTS: &str = "*";

/// How long attempt `attempt` (1-based, within a round) waits after the previous attempt
/// failed — or, for the first, after the event was dispatched: `schedule[attempt - 1]`.
/// `None` when the schedule has no such attempt: the previous one was the last, and the
/// delivery is dead.
pub fn delay_before(schedule: &[Duration], attempt: i32) -> Option<Duration> {
    let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
    schedule.get(index).copied()
}

/// An endpoint as operators see it (never with its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Endpoint {
    pub id: WebhookEndpointId,
    pub url: String,
    pub description: String,
    /// Event types delivered to it; `*` is every type.
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    /// `failing` (disabled by the system after continuous failure) or `operator`.
    pub disabled_reason: Option<String>,
    /// Start of the current run of failed attempts; none while it is healthy.
    pub failing_since: Option<DateTime<Utc>>,
    /// After a rotation: until then the replaced secret still signs deliveries, beside
    /// the new one (a second `v1=` in `Pillivery-Signature`).
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The answer to create and rotate: the endpoint and its secret, the only time the secret
/// is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// HMAC-SHA256 key of the `Pillivery-Signature` header.
    pub secret: String,
}

/// `POST /api/admin/webhooks`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Absolute http(s) URL events are POSTed to; its host must be a public address (or a
    /// name resolving only to public addresses) unless `webhooks.allow_private_destinations`.
    pub url: String,
    /// Known event types, or `["*"]` for all.
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: String,
}

/// `PATCH /api/admin/webhooks/{id}`: absent fields are left as they are. Enabling clears
/// the failure run and the disabled marks.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

fn check_url(url: &str, errors: &mut Vec<FieldError>) {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {
            if url.len() > 2_000 {
                errors.push(FieldError::new("url", "at most 2000 characters"));
            }
        }
        _ => errors.push(FieldError::new("url", "must be an absolute http(s) URL")),
    }
}

fn check_event_types(types: &[String], errors: &mut Vec<FieldError>) {
    if types.is_empty() {
        errors.push(FieldError::new(
            "event_types",
            "at least one event type (or \"*\")",
        ));
    }
    for (i, t) in types.iter().enumerate() {
        if t != ALL_EVENTS && !EVENT_TYPES.contains(&t.as_str()) {
            errors.push(FieldError::new(
                format!("event_types[{i}]"),
                format!("unknown event type `{t}`"),
            ));
        }
    }
}

fn check_description(description: &str, errors: &mut Vec<FieldError>) {
    if description.chars().count() > 500 {
        errors.push(FieldError::new("description", "at most 500 characters"));
    }
}

fn finish(errors: Vec<FieldError>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}

/// `whsec_` and 32 random bytes in hex.
fn new_secret() -> String {
    format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()))
}

pub async fn create(
    ctx: &Ctx,
    actor: &crate::audit::Actor,
    new: NewEndpoint,
) -> Result<EndpointWithSecret> {
    let mut errors = Vec::new();
    check_url(&new.url, &mut errors);
    if errors.is_empty() {
        destination::check(&ctx.settings.webhooks, &new.url, &mut errors).await;
    }
    check_event_types(&new.event_types, &mut errors);
    check_description(&new.description, &mut errors);
    finish(errors)?;
    let secret = new_secret();
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let endpoint = sqlx::query_as!(
        Endpoint,
        r#"INSERT INTO webhook_endpoints (url, description, event_types, secret, created_at,
                                          updated_at)
           VALUES ($1, $2, $3, $4, $5, $5)
           RETURNING id AS "id: WebhookEndpointId", url, description, event_types, enabled,
                     disabled_at, disabled_reason, failing_since, previous_secret_expires_at,
                  created_at, updated_at"#,
        new.url,
        new.description,
        &new.event_types,
        secret,
        now
    )
    .fetch_one(&mut *tx)
    .await?;
    crate::audit::record(
        &mut tx,
        actor,
        crate::audit::Action::WebhookEndpointCreated,
        crate::audit::Target::row("webhook_endpoint", &endpoint.id),
        serde_json::json!({ "url": endpoint.url, "event_types": endpoint.event_types }),
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(endpoint_id = %endpoint.id, url = %endpoint.url, "webhook endpoint created");
    Ok(EndpointWithSecret { endpoint, secret })
}

/// Every endpoint, oldest first (there are few).
pub async fn list(ctx: &Ctx) -> Result<Vec<Endpoint>> {
    Ok(sqlx::query_as!(
        Endpoint,
        r#"SELECT id AS "id: WebhookEndpointId", url, description, event_types, enabled,
                  disabled_at, disabled_reason, failing_since, previous_secret_expires_at,
                  created_at, updated_at
           FROM webhook_endpoints ORDER BY id"#
    )
    .fetch_all(ctx.db.pool())
    .await?)
}

pub async fn get(ctx: &Ctx, id: WebhookEndpointId) -> Result<Endpoint> {
    sqlx::query_as!(
        Endpoint,
        r#"SELECT id AS "id: WebhookEndpointId", url, description, event_types, enabled,
                  disabled_at, disabled_reason, failing_since, previous_secret_expires_at,
                  created_at, updated_at
           FROM webhook_endpoints WHERE id = $1"#,
        id.0
    )
    .fetch_optional(ctx.db.pool())
    .await?
    .ok_or(Error::NotFound)
}

pub async fn update(
    ctx: &Ctx,
    actor: &crate::audit::Actor,
    id: WebhookEndpointId,
    patch: EndpointPatch,
) -> Result<Endpoint> {
    let mut errors = Vec::new();
    if let Some(url) = &patch.url {
        check_url(url, &mut errors);
        if errors.is_empty() {
            destination::check(&ctx.settings.webhooks, url, &mut errors).await;
        }
    }
    if let Some(types) = &patch.event_types {
        check_event_types(types, &mut errors);
    }
    if let Some(d) = &patch.description {
        check_description(d, &mut errors);
    }
    finish(errors)?;
    let now = ctx.clock.now();
    // Enabling starts the endpoint's health afresh; disabling by hand is the operator's.
    let mut tx = ctx.db.begin().await?;
    let endpoint = sqlx::query_as!(
        Endpoint,
        r#"UPDATE webhook_endpoints SET
               url = COALESCE($2, url),
               event_types = COALESCE($3, event_types),
               description = COALESCE($4, description),
               enabled = COALESCE($5, enabled),
               disabled_at = CASE WHEN $5 IS NULL THEN disabled_at
                                  WHEN $5 THEN NULL
                                  ELSE COALESCE(disabled_at, $6) END,
               disabled_reason = CASE WHEN $5 IS NULL THEN disabled_reason
                                      WHEN $5 THEN NULL
                                      ELSE COALESCE(disabled_reason, 'operator') END,
               failing_since = CASE WHEN $5 AND NOT enabled THEN NULL ELSE failing_since END,
               updated_at = $6
           WHERE id = $1
           RETURNING id AS "id: WebhookEndpointId", url, description, event_types, enabled,
                     disabled_at, disabled_reason, failing_since, previous_secret_expires_at,
                  created_at, updated_at"#,
        id.0,
        patch.url,
        patch.event_types.as_deref(),
        patch.description,
        patch.enabled,
        now
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    crate::audit::record(
        &mut tx,
        actor,
        crate::audit::Action::WebhookEndpointUpdated,
        crate::audit::Target::row("webhook_endpoint", &id),
        serde_json::json!({
            "url": patch.url, "event_types": patch.event_types,
            "description": patch.description, "enabled": patch.enabled,
        }),
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(endpoint_id = %id, enabled = endpoint.enabled, "webhook endpoint updated");
    Ok(endpoint)
}

/// Removes the endpoint with its deliveries and their attempts; jobs still queued for
/// them find nothing and do nothing.
pub async fn delete(ctx: &Ctx, actor: &crate::audit::Actor, id: WebhookEndpointId) -> Result<()> {
    let mut tx = ctx.db.begin().await?;
    let url = sqlx::query_scalar!(
        "DELETE FROM webhook_endpoints WHERE id = $1 RETURNING url",
        id.0
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    crate::audit::record(
        &mut tx,
        actor,
        crate::audit::Action::WebhookEndpointDeleted,
        crate::audit::Target::row("webhook_endpoint", &id),
        serde_json::json!({ "url": url }),
        ctx.clock.now(),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(endpoint_id = %id, "webhook endpoint deleted");
    Ok(())
}

/// A new secret; attempts from now on are signed with it and, for
/// `webhooks.secret_rotation_overlap_secs`, also with the secret it replaces (two `v1=`),
/// so a receiver that still checks the old secret accepts them while it switches. A
/// rotation within the window replaces the older secret: only the last two sign.
pub async fn rotate_secret(
    ctx: &Ctx,
    actor: &crate::audit::Actor,
    id: WebhookEndpointId,
) -> Result<EndpointWithSecret> {
    let secret = new_secret();
    let now = ctx.clock.now();
    let overlap = ctx.settings.webhooks.secret_rotation_overlap_secs;
    // Validation bounds the overlap (30 days), so it always fits.
    let until = chrono::Duration::from_std(overlap)
        .ok()
        .filter(|d| !d.is_zero())
        .map(|d| now + d);
    let mut tx = ctx.db.begin().await?;
    let endpoint = sqlx::query_as!(
        Endpoint,
        r#"UPDATE webhook_endpoints
           SET previous_secret = CASE WHEN $3::timestamptz IS NULL THEN NULL ELSE secret END,
               previous_secret_expires_at = $3, secret = $2, updated_at = $4
           WHERE id = $1
           RETURNING id AS "id: WebhookEndpointId", url, description, event_types, enabled,
                     disabled_at, disabled_reason, failing_since, previous_secret_expires_at,
                  created_at, updated_at"#,
        id.0,
        secret,
        until,
        now
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    // The secret itself never goes into the log.
    crate::audit::record(
        &mut tx,
        actor,
        crate::audit::Action::WebhookSecretRotated,
        crate::audit::Target::row("webhook_endpoint", &id),
        serde_json::json!({ "previous_secret_signs_until": until }),
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(endpoint_id = %id, old_secret_signs_until = ?until,
        "webhook endpoint secret rotated");
    Ok(EndpointWithSecret { endpoint, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_maps_the_nth_delay_to_the_nth_attempt() {
        let default: Vec<u64> = crate::settings::WebhooksSettings::default()
            .retry_schedule_secs
            .iter()
            .map(Duration::as_secs)
            .collect();
        let cases: &[(&[u64], i32, Option<u64>)] = &[
            (&default, 1, Some(0)),
            (&default, 2, Some(5)),
            (&default, 3, Some(300)),
            (&default, 4, Some(1_800)),
            (&default, 5, Some(7_200)),
            (&default, 6, Some(18_000)),
            (&default, 7, Some(36_000)),
            (&default, 8, Some(36_000)),
            // eight attempts in all: after the eighth fails, the delivery is dead
            (&default, 9, None),
            (&[0, 1, 1, 1], 4, Some(1)),
            (&[0, 1, 1, 1], 5, None),
            (&[30], 1, Some(30)),
            (&[30], 2, None),
            (&default, 0, None),
            (&default, -1, None),
        ];
        for (schedule, attempt, want) in cases {
            let delays: Vec<Duration> = schedule.iter().copied().map(Duration::from_secs).collect();
            assert_eq!(
                delay_before(&delays, *attempt),
                want.map(Duration::from_secs),
                "attempt {attempt} of {schedule:?}"
            );
        }
    }

    #[test]
    fn event_types_must_be_known_or_the_wildcard() {
        let mut errors = Vec::new();
        check_event_types(
            &["order.paid".into(), "*".into(), "order.shipped".into()],
            &mut errors,
        );
        assert_eq!(
            errors,
            vec![FieldError::new(
                "event_types[2]",
                "unknown event type `order.shipped`"
            )]
        );
        let mut errors = Vec::new();
        check_event_types(&[], &mut errors);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn urls_must_be_absolute_http() {
        for (url, ok) in [
            ("https://partner.example/hooks", true),
            ("http://127.0.0.1:9000/x", true),
            ("ftp://partner.example/", false),
            ("/relative", false),
            ("not a url", false),
        ] {
            let mut errors = Vec::new();
            check_url(url, &mut errors);
            assert_eq!(errors.is_empty(), ok, "{url}");
        }
    }

    #[test]
    fn secrets_are_fresh_and_prefixed() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.starts_with("whsec_") && a.len() == 6 + 64, "{a}");
        assert_ne!(a, b);
    }
}
