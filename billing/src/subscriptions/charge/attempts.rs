//! The attempt rows: open, record, load, mark unknown / not charged, and queue their
//! inquiries.

use super::*;

pub(super) async fn open_attempt(
    conn: &mut PgConnection,
    id: SubscriptionId,
) -> Result<Option<(i64, crate::subscriptions::AttemptStatus)>> {
    let row = sqlx::query!(
        r#"SELECT id, status AS "status: super::AttemptStatus" FROM charge_attempts
           WHERE subscription_id = $1 AND status IN ('in_flight', 'unknown')"#,
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| (r.id, r.status)))
}

/// The subscription's products still on sale, at today's prices.
pub(super) async fn priced_lines(
    conn: &mut PgConnection,
    id: SubscriptionId,
) -> Result<Vec<PricedLine>> {
    let rows = sqlx::query!(
        r#"SELECT si.item_id, i.title, i.real_price AS "price!", i.discount_price AS "discount!",
                  si.quantity
           FROM subscription_items si JOIN items i ON i.id = si.item_id
           WHERE si.subscription_id = $1 AND i.selling AND i.deleted_at IS NULL
           ORDER BY si.item_id"#,
        id.0
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PricedLine {
            item_id: r.item_id,
            name: r.title,
            unit_price: r.price,
            unit_discount: r.discount,
            quantity: r.quantity,
        })
        .collect())
}

pub(super) async fn record_attempt(
    conn: &mut PgConnection,
    s: &Row,
    cycle: i32,
    lines: &[PricedLine],
    amount: Money,
    now: DateTime<Utc>,
) -> Result<Attempt> {
    let json = serde_json::to_value(lines)
        .map_err(|e| Error::Internal(format!("lines do not serialize: {e}")))?;
    let row = sqlx::query!(
        r#"WITH n AS (
             SELECT COALESCE(max(attempt), 0) + 1 AS attempt FROM charge_attempts
             WHERE subscription_id = $1 AND cycle = $2
           )
           INSERT INTO charge_attempts (subscription_id, cycle, attempt, partner_order_id, amount,
                                        lines, started_at)
           SELECT $1, $2, n.attempt, 'pv-sub-' || $1 || '-' || $2 || '-' || n.attempt, $3, $4, $5
           FROM n
           RETURNING id, partner_order_id"#,
        s.id.0,
        cycle,
        amount.0,
        json,
        now
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Attempt {
        id: row.id,
        subscription_id: s.id,
        cycle,
        partner_order_id: row.partner_order_id,
        amount,
        lines: lines.to_vec(),
        started_at: now,
    })
}

pub(super) async fn load_attempt(
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

pub(super) async fn mark_unknown(conn: &mut PgConnection, attempt: i64, why: &str) -> Result<()> {
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
pub(super) async fn mark_not_charged(
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
pub(super) async fn enqueue_reconcile(
    ctx: &Ctx,
    conn: &mut PgConnection,
    attempt: i64,
    round: i32,
    now: DateTime<Utc>,
    not_after: Option<DateTime<Utc>>,
) -> Result<()> {
    let p = &ctx.settings.payments;
    let delay = error_policy::inquiry_delay(
        round,
        p.reconcile_min_backoff_ms,
        p.reconcile_max_backoff_ms,
        rand::random::<f64>(),
    );
    let mut at = now + chrono::Duration::from_std(delay).unwrap_or_default();
    if let Some(cap) = not_after {
        at = at.min(cap);
    }
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
