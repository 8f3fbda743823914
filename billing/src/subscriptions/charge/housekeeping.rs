//! SID inactivation after a cancellation, and the safety-net sweep of due subscriptions.

use super::*;

/// Task `payment.inactivate_sid {subscription_id}`: a canceled subscription's SID can no
/// longer be charged at KakaoPay. Idempotent; a SID KakaoPay no longer knows or already
/// inactivated counts as done ([`Step::SidInactivate`]).
pub async fn inactivate_sid(ctx: &Ctx, id: SubscriptionId) -> Result<Outcome> {
    let row = sqlx::query!(
        r#"SELECT sid, sid_inactivated_at, status AS "status: SubscriptionStatus"
           FROM subscriptions WHERE id = $1"#,
        id.0
    )
    .fetch_optional(ctx.db.pool())
    .await?;
    let Some(r) = row else {
        return Ok(Outcome::Done);
    };
    let (Some(sid), None, SubscriptionStatus::Canceled) = (r.sid, r.sid_inactivated_at, r.status)
    else {
        return Ok(Outcome::Done);
    };
    match ctx
        .pg_guard
        .run("sid_inactivate", ctx.gateway.sid_inactivate(&sid))
        .await
    {
        // A checkout may have replaced the SID meanwhile: only the one inactivated is marked.
        Ok(_) => {}
        Err(e) => match error_policy::decide(Step::SidInactivate, &e) {
            Action::AlreadyDone => {
                tracing::info!(subscription_id = id.0, error = %e, "SID already unusable at KakaoPay");
            }
            other => return Ok(job_outcome(ctx, other, &e)),
        },
    }
    let mut tx = ctx.db.begin().await?;
    sqlx::query!(
        "UPDATE subscriptions SET sid_inactivated_at = $2
         WHERE id = $1 AND sid = $3 AND sid_inactivated_at IS NULL",
        id.0,
        ctx.clock.now(),
        sid
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(subscription_id = id.0, "SID inactivated");
    Ok(Outcome::Done)
}

/// Task `subscriptions.sweep`: every billable subscription that is due, with nothing in
/// KakaoPay's hands, gets its charge job (a no-op where the job is already queued, by
/// uniqueness). A safety net for rows written outside the engine (imports, the
/// reference data set) and for any job lost to an operator's cleanup.
pub async fn sweep(ctx: &Ctx, limit: i64) -> Result<u64> {
    let now = ctx.clock.now();
    let due = sqlx::query!(
        r#"SELECT s.id, s.current_cycle, s.schedule_seq FROM subscriptions s
           WHERE s.status IN ('active', 'past_due') AND s.next_charge_at <= $1
             AND NOT EXISTS (SELECT 1 FROM charge_attempts a WHERE a.subscription_id = s.id
                             AND a.status IN ('in_flight', 'unknown'))
           ORDER BY s.next_charge_at LIMIT $2"#,
        now,
        limit
    )
    .fetch_all(ctx.db.pool())
    .await?;
    let tasks: Vec<tasks::SubscriptionCharge> = due
        .iter()
        .map(|r| tasks::SubscriptionCharge {
            subscription_id: r.id,
            cycle: r.current_cycle + 1,
            seq: r.schedule_seq,
        })
        .collect();
    let mut inserted = 0;
    let mut conn = ctx.db.acquire().await?;
    for chunk in tasks.chunks(1_000) {
        inserted += jobs::enqueue_many(&mut conn, chunk, now).await?;
    }
    if inserted > 0 {
        tracing::info!(
            due = due.len(),
            enqueued = inserted,
            "sweep enqueued missing charge jobs"
        );
    }
    Ok(inserted)
}
