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

/// An event serialized, ready to be written with others ([`record_all`]).
#[derive(Debug)]
pub struct Encoded {
    event_type: String,
    aggregate_type: String,
    aggregate_id: i64,
    aggregate_version: i32,
    data: serde_json::Value,
}

impl<T: Serialize> Event<'_, T> {
    pub fn encode(&self) -> Result<Encoded> {
        let data = serde_json::to_value(self.data)
            .map_err(|err| Error::Internal(format!("outbox event does not serialize: {err}")))?;
        Ok(Encoded {
            event_type: self.event_type.to_owned(),
            aggregate_type: self.aggregate_type.to_owned(),
            aggregate_id: self.aggregate_id,
            aggregate_version: self.aggregate_version,
            data,
        })
    }
}

/// Writes the event on the caller's transaction, queued for the webhook dispatcher
/// (`outbox_pending`) in the same statement; returns its id.
pub async fn record<T: Serialize>(conn: &mut PgConnection, e: Event<'_, T>) -> Result<uuid::Uuid> {
    let ids = record_all(conn, vec![e.encode()?]).await?;
    ids.into_iter()
        .next()
        .ok_or_else(|| Error::Internal("outbox event not written".into()))
}

/// Writes several events in one statement (one round trip for a change that announces
/// more than one thing), in the given order; returns their ids in that order.
pub async fn record_all(conn: &mut PgConnection, events: Vec<Encoded>) -> Result<Vec<uuid::Uuid>> {
    let n = events.len();
    let (mut types, mut aggregates, mut ids, mut versions, mut data) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for e in events {
        types.push(e.event_type);
        aggregates.push(e.aggregate_type);
        ids.push(e.aggregate_id);
        versions.push(e.aggregate_version);
        data.push(e.data);
    }
    // `WITH ORDINALITY` keeps the given order in the ids (the dispatcher delivers by id).
    let rows = sqlx::query!(
        r#"WITH ev AS (
             INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id,
                                        aggregate_version, data)
             SELECT t, a, i, v, d
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[], $5::jsonb[])
                  WITH ORDINALITY AS u(t, a, i, v, d, n)
             ORDER BY n
             RETURNING id, event_id
           ), queued AS (
             INSERT INTO outbox_pending (event_id) SELECT id FROM ev
           )
           SELECT event_id AS "event_id!" FROM ev ORDER BY id"#,
        &types,
        &aggregates,
        &ids,
        &versions,
        &data,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.event_id).collect())
}
