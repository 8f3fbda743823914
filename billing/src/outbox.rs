//! The transactional outbox: events others care about, written in the same transaction as
//! the state change they announce (DESIGN §7). Delivery to webhooks is the workers' job.

use serde::Serialize;
use sqlx::PgConnection;

use crate::error::{Error, Result};

/// One event to record: `event_type` such as `order.paid`, about one aggregate at the
/// version the change produced.
#[derive(Debug)]
pub struct Event<'a, T: Serialize> {
    pub event_type: &'a str,
    pub aggregate_type: &'a str,
    pub aggregate_id: i64,
    pub aggregate_version: i32,
    pub data: &'a T,
}

/// Writes the event on the caller's transaction, queued for the webhook dispatcher
/// (`outbox_pending`) in the same statement; returns its id.
pub async fn record<T: Serialize>(conn: &mut PgConnection, e: Event<'_, T>) -> Result<uuid::Uuid> {
    let data = serde_json::to_value(e.data)
        .map_err(|err| Error::Internal(format!("outbox event does not serialize: {err}")))?;
    let id = sqlx::query_scalar!(
        r#"WITH ev AS (
             INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id,
                                        aggregate_version, data)
             VALUES ($1, $2, $3, $4, $5)
             RETURNING id, event_id
           ), queued AS (
             INSERT INTO outbox_pending (event_id) SELECT id FROM ev
           )
           SELECT event_id AS "event_id!" FROM ev"#,
        e.event_type,
        e.aggregate_type,
        e.aggregate_id,
        e.aggregate_version,
        data,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}
