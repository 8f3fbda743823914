//! The attempt rows: open, price and record, load, mark unknown / not charged, and queue
//! their inquiries.

use super::*;

/// The subscription's open attempt (`in_flight` or `unknown`; at most one, by index).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenAttempt {
    pub id: i64,
    pub status: crate::subscriptions::AttemptStatus,
    /// Set when it is a recovery or resubscribe checkout's approval.
    pub checkout_id: Option<i64>,
}

pub(crate) async fn open_attempt_of(
    conn: &mut PgConnection,
    id: SubscriptionId,
) -> Result<Option<OpenAttempt>> {
    let row = sqlx::query!(
        r#"SELECT id, status AS "status: super::AttemptStatus", checkout_id FROM charge_attempts
           WHERE subscription_id = $1 AND status IN ('in_flight', 'unknown')"#,
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| OpenAttempt {
        id: r.id,
        status: r.status,
        checkout_id: r.checkout_id,
    }))
}

/// The open attempts of these subscriptions, by subscription.
pub(crate) async fn open_attempts_of(
    conn: &mut PgConnection,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, OpenAttempt>> {
    let rows = sqlx::query!(
        r#"SELECT subscription_id, id, status AS "status: super::AttemptStatus", checkout_id
           FROM charge_attempts
           WHERE subscription_id = ANY($1) AND status IN ('in_flight', 'unknown')"#,
        ids
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.subscription_id,
                OpenAttempt {
                    id: r.id,
                    status: r.status,
                    checkout_id: r.checkout_id,
                },
            )
        })
        .collect())
}

/// Prices each subscription's products still on sale at today's prices and records
/// attempt n + 1 of its cycle with those lines — for all of them in one statement. By
/// subscription; one with nothing left to charge (no product on sale, or a zero total)
/// is left out and gets no attempt.
pub(crate) async fn record_attempts(
    conn: &mut PgConnection,
    charges: &[(SubscriptionId, i32)],
    now: DateTime<Utc>,
) -> Result<std::collections::HashMap<i64, Attempt>> {
    if charges.is_empty() {
        return Ok(Default::default());
    }
    let ids: Vec<i64> = charges.iter().map(|c| c.0 .0).collect();
    let cycles: Vec<i32> = charges.iter().map(|c| c.1).collect();
    // The lines' JSON is `PricedLine`'s serde shape: `load_attempt` reads it back.
    let rows = sqlx::query_as!(
        AttemptRow,
        r#"WITH r AS (
             SELECT * FROM unnest($1::bigint[], $2::int[]) AS r(subscription_id, cycle)
           ), t AS (
             SELECT subscription_id, amount, lines FROM subscription_charge_lines
             WHERE subscription_id = ANY($1)
           ), n AS (
             SELECT r.subscription_id, r.cycle,
                    COALESCE((SELECT max(a.attempt) FROM charge_attempts a
                              WHERE a.subscription_id = r.subscription_id
                                AND a.cycle = r.cycle), 0) + 1 AS attempt
             FROM r
           )
           INSERT INTO charge_attempts (subscription_id, cycle, attempt, partner_order_id, amount,
                                        lines, started_at)
           SELECT n.subscription_id, n.cycle, n.attempt,
                  'pv-sub-' || n.subscription_id || '-' || n.cycle || '-' || n.attempt,
                  t.amount, t.lines, $3
           FROM n JOIN t USING (subscription_id)
           WHERE t.amount > 0
           RETURNING id, subscription_id, cycle, partner_order_id, amount, lines, started_at"#,
        &ids,
        &cycles,
        now
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|a| Ok((a.subscription_id, a.try_into()?)))
        .collect()
}

/// An attempt row as stored, its lines still JSON.
struct AttemptRow {
    id: i64,
    subscription_id: i64,
    cycle: i32,
    partner_order_id: String,
    amount: i64,
    lines: serde_json::Value,
    started_at: DateTime<Utc>,
}

impl TryFrom<AttemptRow> for Attempt {
    type Error = Error;

    fn try_from(r: AttemptRow) -> Result<Self> {
        let lines: Vec<PricedLine> = serde_json::from_value(r.lines)
            .map_err(|e| Error::Internal(format!("attempt {} lines: {e}", r.id)))?;
        Ok(Attempt {
            id: r.id,
            subscription_id: SubscriptionId(r.subscription_id),
            cycle: r.cycle,
            partner_order_id: r.partner_order_id,
            amount: Money(r.amount),
            lines,
            started_at: r.started_at,
        })
    }
}

pub(crate) async fn load_attempt(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<(Attempt, crate::subscriptions::AttemptStatus)>> {
    let row = sqlx::query!(
        r#"SELECT id, subscription_id, cycle, partner_order_id, amount, lines, started_at,
                  status AS "status: super::AttemptStatus"
           FROM charge_attempts WHERE id = $1"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let a = AttemptRow {
        id: r.id,
        subscription_id: r.subscription_id,
        cycle: r.cycle,
        partner_order_id: r.partner_order_id,
        amount: r.amount,
        lines: r.lines,
        started_at: r.started_at,
    };
    Ok(Some((a.try_into()?, r.status)))
}

pub(crate) async fn mark_unknown(conn: &mut PgConnection, attempt: i64, why: &str) -> Result<()> {
    sqlx::query!(
        "UPDATE charge_attempts SET status = 'unknown', failure_message = $2
         WHERE id = $1 AND status = 'in_flight'",
        attempt,
        why
    )
    .execute(&mut *conn)
    .await?;
    metrics::counter!("subscription_charges_total", "outcome" => "unknown").increment(1);
    Ok(())
}

/// `in_flight`/`unknown` → `not_charged`: KakaoPay never charged it, so it is not a
/// dunning attempt. False if the attempt was already decided.
pub(crate) async fn mark_not_charged(
    conn: &mut PgConnection,
    attempt: i64,
    code: &str,
    message: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let n = sqlx::query!(
        "UPDATE charge_attempts SET status = 'not_charged', failure_code = $2,
                failure_message = $3, finished_at = $4
         WHERE id = $1 AND status IN ('in_flight', 'unknown')",
        attempt,
        code,
        message,
        now
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Schedules inquiry `round` about an attempt after the growing reconcile backoff (but
/// not after `not_after`, when given).
pub(crate) async fn enqueue_reconcile(
    ctx: &Ctx,
    conn: &mut PgConnection,
    attempt: i64,
    round: i32,
    now: DateTime<Utc>,
    not_after: Option<DateTime<Utc>>,
) -> Result<()> {
    let at = error_policy::inquiry_at(&ctx.settings.payments, round, now, not_after);
    jobs::enqueue_at(
        conn,
        &tasks::SubscriptionReconcile {
            attempt_id: attempt,
            round,
        },
        at,
        now,
    )
    .await?;
    Ok(())
}
