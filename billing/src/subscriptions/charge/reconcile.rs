//! Deciding ambiguous charges from the SID's status, operators' "reconcile now", and the
//! review list.

use super::*;

/// Task `subscription.reconcile {attempt_id, round}`: decides an `unknown` attempt from
/// the SID's `last_approved_at` (the notes' only evidence). At or after the attempt's
/// start (less the clock skew allowance) → it landed; earlier once the safety window has
/// passed → it did not, and the cycle is tried again at once; earlier before that → ask
/// again later. Undecided past the review window → the operators' review list.
pub async fn reconcile(ctx: &Ctx, attempt_id: i64, round: i32) -> Result<Outcome> {
    // A checkout's approval has a tid: KakaoPay's order inquiry decides it, not the SID.
    let checkout = sqlx::query_scalar!(
        "SELECT checkout_id FROM charge_attempts WHERE id = $1",
        attempt_id
    )
    .fetch_optional(ctx.db.pool())
    .await?
    .flatten();
    if let Some(checkout) = checkout {
        return crate::subscriptions::checkout::reconcile(ctx, crate::ids::CheckoutId(checkout))
            .await;
    }
    let policy = policy(ctx)?;
    let cfg = &ctx.settings.subscriptions;
    let Some((a, status)) = load_attempt(&mut *ctx.db.acquire().await?, attempt_id).await? else {
        return Ok(Outcome::Done);
    };
    if status != crate::subscriptions::AttemptStatus::Unknown {
        return Ok(Outcome::Done);
    }
    let sid = sqlx::query_scalar!(
        "SELECT sid FROM subscriptions WHERE id = $1",
        a.subscription_id.0
    )
    .fetch_one(ctx.db.pool())
    .await?
    .ok_or_else(|| Error::Internal(format!("subscription {} has no SID", a.subscription_id.0)))?;
    let now = ctx.clock.now();
    let review_at = after(a.started_at, cfg.review_after_secs);
    let verdict = match ctx
        .pg_guard
        .run("sid_status", ctx.gateway.sid_status(&sid))
        .await
    {
        Ok(status) => {
            let since = before(a.started_at, cfg.reconcile_skew_secs);
            status.approved_since(since)
        }
        Err(e) => {
            flag_for_review(ctx, &a, now, review_at).await?;
            return Ok(job_outcome(
                ctx,
                error_policy::decide(Step::SidStatus, &e),
                &e,
            ));
        }
    };
    let window_end = after(a.started_at, cfg.reconcile_window_secs);
    match verdict {
        Some(true) => {
            // Charged around when the attempt was sent: the schedule and the daily guard
            // count from then.
            apply_success(ctx, &policy, &a, Approval::default(), a.started_at, None).await?;
            Ok(Outcome::Done)
        }
        Some(false) if now >= window_end => {
            let mut tx = ctx.db.begin().await?;
            let Some(s) = lock(&mut tx, a.subscription_id, None).await? else {
                return Ok(Outcome::Done);
            };
            if mark_not_charged(
                &mut tx,
                a.id,
                "not_landed",
                "KakaoPay shows no charge since the attempt",
                now,
            )
            .await?
            {
                metrics::counter!("subscription_charges_total", "outcome" => "not_charged")
                    .increment(1);
                tracing::info!(
                    subscription_id = s.id.0,
                    cycle = a.cycle,
                    "ambiguous charge did not land; charging again"
                );
                if s.status.is_billable() && s.current_cycle + 1 == a.cycle {
                    let pending = s.next(&policy).map(|n| n.due_on);
                    let again = crate::subscriptions::Next {
                        due_on: pending.unwrap_or_else(|| policy.local_date(now)),
                        at: now,
                    };
                    reschedule(&mut tx, &s, Some(again), a.cycle, now).await?;
                }
            }
            tx.commit().await?;
            Ok(Outcome::Done)
        }
        Some(false) | None => {
            flag_for_review(ctx, &a, now, review_at).await?;
            let mut tx = ctx.db.begin().await?;
            sqlx::query!(
                "UPDATE charge_attempts SET reconcile_rounds = reconcile_rounds + 1 WHERE id = $1",
                a.id
            )
            .execute(&mut *tx)
            .await?;
            let cap = (now < window_end).then_some(window_end);
            enqueue_reconcile(ctx, &mut tx, a.id, round + 1, now, cap).await?;
            tx.commit().await?;
            Ok(Outcome::Done)
        }
    }
}

/// `at` plus a configured span; a span past chrono's calendar (a misconfiguration, not a
/// reason to panic in the worker) is the end of time.
fn after(at: DateTime<Utc>, span: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|s| at.checked_add_signed(s))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at` less a configured span, down to the start of chrono's calendar at most.
fn before(at: DateTime<Utc>, span: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|s| at.checked_sub_signed(s))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// How an operator's "reconcile now" was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReconcileAction {
    /// The inquiry that was waiting for its backoff runs at once.
    BroughtForward,
    /// No inquiry was waiting (e.g. the attempt was left on the review list): one was queued.
    Queued,
    /// An inquiry is running right now; its verdict comes without another.
    AlreadyRunning,
}

impl ReconcileAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BroughtForward => "brought_forward",
            Self::Queued => "queued",
            Self::AlreadyRunning => "already_running",
        }
    }
}

/// Operators' "reconcile now" for a charge whose outcome is unknown: the next inquiry at
/// KakaoPay (task `subscription.reconcile`) runs at once instead of after its backoff. The
/// verdict is the task's, as for any inquiry; the API never calls the PG itself.
pub async fn reconcile_now(
    ctx: &Ctx,
    actor: &crate::audit::Actor,
    attempt_id: i64,
) -> Result<ReconcileAction> {
    let mut tx = ctx.db.begin().await?;
    // The row lock orders this against an inquiry bumping `reconcile_rounds` meanwhile.
    let row = sqlx::query!(
        r#"SELECT status AS "status: super::AttemptStatus", reconcile_rounds
           FROM charge_attempts WHERE id = $1 FOR UPDATE"#,
        attempt_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    if row.status != crate::subscriptions::AttemptStatus::Unknown {
        return Err(Error::validation(
            "attempt_id",
            "only a charge whose outcome is unknown can be reconciled",
        ));
    }
    let found = jobs::run_now(
        &mut tx,
        tasks::SubscriptionReconcile::NAME,
        serde_json::json!({ "attempt_id": attempt_id }),
        ctx.clock.now(),
    )
    .await?;
    let action = if found.moved > 0 {
        ReconcileAction::BroughtForward
    } else if found.running > 0 {
        ReconcileAction::AlreadyRunning
    } else {
        jobs::enqueue_at(
            &mut tx,
            &tasks::SubscriptionReconcile {
                attempt_id,
                round: row.reconcile_rounds + 1,
            },
            ctx.clock.now(),
            ctx.clock.now(),
        )
        .await?;
        ReconcileAction::Queued
    };
    crate::audit::record(
        &mut tx,
        actor,
        crate::audit::Action::ChargeReconcileRequested,
        crate::audit::Target::row("charge_attempt", &attempt_id),
        serde_json::json!({ "action": action.as_str() }),
        ctx.clock.now(),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        attempt_id,
        ?action,
        "charge reconciliation requested by an operator"
    );
    Ok(action)
}

/// Past the review window and still undecided: on the operators' list, once.
pub(super) async fn flag_for_review(
    ctx: &Ctx,
    a: &Attempt,
    now: DateTime<Utc>,
    review_at: DateTime<Utc>,
) -> Result<()> {
    if now < review_at {
        return Ok(());
    }
    let mut tx = ctx.db.begin().await?;
    let flagged = sqlx::query!(
        "UPDATE charge_attempts SET review_required_at = $2
         WHERE id = $1 AND status = 'unknown' AND review_required_at IS NULL",
        a.id,
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    if flagged == 1 {
        metrics::counter!("subscription_charges_review_required_total").increment(1);
        tracing::error!(subscription_id = a.subscription_id.0, cycle = a.cycle,
            partner_order_id = %a.partner_order_id, "charge still undecided; needs operator review");
    }
    Ok(())
}
