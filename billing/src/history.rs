//! What happened to one row, for the console's timelines: its outbox events with each
//! event's webhook deliveries, the audit log's entries about it, and a subscription's
//! charge attempts. Bounded reads, each by an index (`outbox_events_aggregate_idx`, the
//! deliveries' `(event_id, endpoint_id)` key, `audit_log_target_idx`, the attempts'
//! `(subscription_id, cycle, attempt)` key).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::audit::{Channel, Entry};
use crate::error::Result;
use crate::ids::{OrderId, SubscriptionId};
use crate::money::Money;
use crate::store::subscriptions::AttemptStatus;

/// One outbox event of the row and where it was delivered.
#[derive(Debug, Clone)]
pub struct EventEntry {
    pub id: i64,
    pub event_type: String,
    pub version: i32,
    pub at: DateTime<Utc>,
    /// The facts an operator looks for first (reason, failure code, what changed…), as
    /// `key=value` pairs.
    pub summary: String,
    pub deliveries: Vec<DeliveryEntry>,
}

/// One endpoint's delivery of an event.
#[derive(Debug, Clone)]
pub struct DeliveryEntry {
    pub id: i64,
    pub endpoint_id: i64,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    pub round: i32,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
}

/// The fields of an event's data worth a line in a timeline, in this order.
const SUMMARY_KEYS: &[&str] = &[
    "reason",
    "failure_code",
    "failure_message",
    "changes",
    "order_id",
    "amount",
    "cycle",
    "next_charge_at",
];

fn summary(data: &serde_json::Value) -> String {
    SUMMARY_KEYS
        .iter()
        .filter_map(|k| {
            let v = data.get(*k).filter(|v| !v.is_null())?;
            Some(match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The newest `limit` events of aggregate `(kind, id)`, newest first, with their deliveries.
pub async fn events(
    conn: &mut PgConnection,
    kind: &str,
    id: i64,
    limit: i64,
) -> Result<Vec<EventEntry>> {
    let rows = sqlx::query!(
        r#"SELECT id, event_type, aggregate_version, data, created_at FROM outbox_events
           WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY id DESC LIMIT $3"#,
        kind,
        id,
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let deliveries = sqlx::query!(
        r#"SELECT id, event_id, endpoint_id, state, round, attempts,
                  last_status_code
           FROM webhook_deliveries WHERE event_id = ANY($1) ORDER BY event_id, endpoint_id"#,
        &ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut by_event: std::collections::HashMap<i64, Vec<DeliveryEntry>> = Default::default();
    for d in deliveries {
        by_event.entry(d.event_id).or_default().push(DeliveryEntry {
            id: d.id,
            endpoint_id: d.endpoint_id,
            state: d.state,
            round: d.round,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
        });
    }
    Ok(rows
        .into_iter()
        .map(|r| EventEntry {
            id: r.id,
            summary: summary(&r.data),
            event_type: r.event_type,
            version: r.aggregate_version,
            at: r.created_at,
            deliveries: by_event.remove(&r.id).unwrap_or_default(),
        })
        .collect())
}

/// The newest `limit` audit entries about any of `targets` (`(target_type, target_id)`),
/// newest first.
pub async fn audit(
    conn: &mut PgConnection,
    targets: &[(&str, String)],
    limit: i64,
) -> Result<Vec<Entry>> {
    let (kinds, ids): (Vec<&str>, Vec<&str>) =
        targets.iter().map(|(k, id)| (*k, id.as_str())).unzip();
    let entries = sqlx::query_as!(
        Entry,
        r#"SELECT a.id, a.created_at AS at, a.actor_user_id, u.email AS "actor_email?",
                  a.channel AS "channel: Channel", a.action, a.target_type, a.target_id,
                  a.details, a.request_id
           FROM unnest($1::text[], $2::text[]) AS t(kind, id)
           JOIN audit_log a ON a.target_type = t.kind AND a.target_id = t.id
           LEFT JOIN users u ON u.id = a.actor_user_id
           ORDER BY a.created_at DESC, a.id DESC LIMIT $3"#,
        &kinds as &[&str],
        &ids as &[&str],
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(entries)
}

/// One charge attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// What "reconcile now" takes.
    pub id: i64,
    pub cycle: i32,
    pub attempt: i32,
    pub status: AttemptStatus,
    pub amount: Money,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub order_id: Option<OrderId>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The approval of a recovery or resubscribe checkout, not a recurring charge.
    pub via_checkout: bool,
    /// Undecided past the review window.
    pub review_required_at: Option<DateTime<Utc>>,
}

/// The subscription's charge attempts (of one `cycle`, when given) with their start
/// times, newest first.
pub async fn attempts(
    conn: &mut PgConnection,
    id: SubscriptionId,
    cycle: Option<i32>,
    limit: i64,
) -> Result<Vec<(DateTime<Utc>, Attempt)>> {
    let rows = sqlx::query!(
        r#"SELECT id, cycle, attempt, status AS "status: AttemptStatus", amount, failure_code,
                  failure_message, order_id, started_at, finished_at,
                  checkout_id IS NOT NULL AS "via_checkout!", review_required_at
           FROM charge_attempts WHERE subscription_id = $1 AND ($2::int IS NULL OR cycle = $2)
           ORDER BY cycle DESC, attempt DESC LIMIT $3"#,
        id.0,
        cycle,
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|a| {
            let attempt = Attempt {
                id: a.id,
                cycle: a.cycle,
                attempt: a.attempt,
                status: a.status,
                amount: Money(a.amount),
                failure_code: a.failure_code,
                failure_message: a.failure_message,
                order_id: a.order_id.map(OrderId),
                finished_at: a.finished_at,
                via_checkout: a.via_checkout,
                review_required_at: a.review_required_at,
            };
            (a.started_at, attempt)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn summary_keeps_the_telling_fields_in_order() {
        let data = json!({"subscription_id": 7, "status": "canceled", "failure_code": "-782",
                          "reason": "payment_failed", "recovery_url": "https://x/y"});
        assert_eq!(
            super::summary(&data),
            "reason=payment_failed failure_code=-782"
        );
        assert_eq!(
            super::summary(&json!({"changes": {"period_days": {"from": 30, "to": 60}}})),
            r#"changes={"period_days":{"from":30,"to":60}}"#
        );
    }
}
