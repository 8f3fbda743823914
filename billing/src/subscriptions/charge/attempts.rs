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

/// Prices the subscription's products still on sale at today's prices and records
/// attempt n + 1 of `cycle` with those lines, in one statement. `None` when nothing is
/// left to charge (no product on sale, or a zero total): no attempt is written.
pub(crate) async fn record_attempt(
    conn: &mut PgConnection,
    s: &Row,
    cycle: i32,
    now: DateTime<Utc>,
) -> Result<Option<Attempt>> {
    // The lines' JSON is `PricedLine`'s serde shape: `load_attempt` reads it back.
    let row = sqlx::query!(
        r#"WITH t AS (
             SELECT amount, lines FROM subscription_charge_lines WHERE subscription_id = $1
           ), n AS (
             SELECT COALESCE(max(attempt), 0) + 1 AS attempt FROM charge_attempts
             WHERE subscription_id = $1 AND cycle = $2
           )
           INSERT INTO charge_attempts (subscription_id, cycle, attempt, partner_order_id, amount,
                                        lines, started_at)
           SELECT $1, $2, n.attempt, 'pv-sub-' || $1 || '-' || $2 || '-' || n.attempt,
                  t.amount, t.lines, $3
           FROM n, t
           WHERE t.amount > 0
           RETURNING id, partner_order_id, amount, lines"#,
        s.id.0,
        cycle,
        now
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let lines: Vec<PricedLine> = serde_json::from_value(r.lines)
        .map_err(|e| Error::Internal(format!("attempt {} lines: {e}", r.id)))?;
    Ok(Some(Attempt {
        id: r.id,
        subscription_id: s.id,
        cycle,
        partner_order_id: r.partner_order_id,
        amount: Money(r.amount),
        lines,
        started_at: now,
    }))
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
    let lines: Vec<PricedLine> = serde_json::from_value(r.lines)
        .map_err(|e| Error::Internal(format!("attempt {id} lines: {e}")))?;
    Ok(Some((
        Attempt {
            id: r.id,
            subscription_id: SubscriptionId(r.subscription_id),
            cycle: r.cycle,
            partner_order_id: r.partner_order_id,
            amount: Money(r.amount),
            lines,
            started_at: r.started_at,
        },
        r.status,
    )))
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
