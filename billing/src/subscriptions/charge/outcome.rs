//! Applying KakaoPay's answer to a charge: the cycle's order and the next cycle on
//! success; dunning on a decline (ended at once by a hard one); the policy's action on
//! any other failure.

use super::*;

/// A charge that came through a recovery or resubscribe checkout: the checkout, and the
/// SID its approval issued.
pub(crate) struct ViaCheckout<'a> {
    pub checkout: &'a crate::subscriptions::checkout::CheckoutRow,
    pub sid: Option<String>,
}

/// The cycle was charged: the cycle's order (paid, from the attempt's priced lines) with
/// its payment row and sales, the attempt `succeeded`, `order.paid` and
/// `subscription.charged`, and — unless the subscription was paused or canceled
/// meanwhile — the next cycle scheduled. One transaction, under the subscription's lock
/// (every decider of an attempt holds it, so the attempt cannot be decided meanwhile).
///
/// Through a checkout (`via`) the same transaction also replaces the SID, returns the
/// subscription to `active` — a `past_due` one on its calendar, a canceled one anchored
/// again on this payment (with the checkout's period) — drops the pending dunning retry,
/// and records `subscription.recovered` or `subscription.resubscribed` and the checkout's
/// own changes ([`crate::subscriptions::checkout::record_paid`]).
pub(crate) async fn apply_success(
    ctx: &Ctx,
    policy: &Policy,
    a: &Attempt,
    approval: Approval,
    charged_at: DateTime<Utc>,
    via: Option<&ViaCheckout<'_>>,
) -> Result<()> {
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let s = lock_of(&mut tx, a).await?;
    let new_sid = via.and_then(|v| v.sid.clone());
    let charged_sid = Row {
        sid: new_sid.clone().or_else(|| s.sid.clone()),
        ..s.clone()
    };
    let (order, paid) = write_cycle_order(&mut tx, &charged_sid, a, &approval, charged_at).await?;
    let decided = sqlx::query_scalar!(
        "UPDATE charge_attempts SET status = 'succeeded', tid = $2, aid = $3, finished_at = $4,
                order_id = $5
         WHERE id = $1 AND status IN ('in_flight', 'unknown') RETURNING id",
        a.id,
        approval.tid,
        approval.aid,
        charged_at,
        order.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if decided.is_none() {
        // Decided already (a duplicate run): the order written above is rolled back.
        return Ok(());
    }
    let recovered = s.status == SubscriptionStatus::PastDue;
    // A checkout restarts a canceled subscription: anchored again on this payment.
    let restart = via.is_some() && s.status == SubscriptionStatus::Canceled;
    let period = via
        .and_then(|v| v.checkout.period_days)
        .filter(|_| restart)
        .unwrap_or(s.period_days);
    let grid = s
        .next(policy)
        .filter(|_| s.status.is_billable())
        .map(|n| policy.after_success(n.due_on, s.period_days, charged_at));
    let next = if restart {
        Some(policy.first_due(charged_at, period))
    } else if via.is_some() {
        // A checkout always leaves the subscription active with its next cycle scheduled:
        // on its calendar, or — should it have had no pending charge — from this payment.
        grid.or_else(|| Some(policy.first_due(charged_at, period)))
    } else {
        grid
    };
    if via.is_some() {
        // The dunning retry this payment makes unnecessary (a run already started finds
        // the cycle paid and stops).
        crate::subscriptions::drop_pending_charge(&mut tx, &s, a.cycle).await?;
    }
    // The running job is this cycle's; the next cycle gets a new sequence and job.
    let updated = sqlx::query!(
        r#"UPDATE subscriptions SET current_cycle = $2, last_charged_at = $3,
                status = CASE WHEN $6 OR status = 'past_due' THEN 'active' ELSE status END,
                due_on = COALESCE($4, due_on),
                next_charge_at = CASE WHEN $5::timestamptz IS NULL THEN next_charge_at ELSE $5 END,
                sid = COALESCE($7, sid),
                sid_inactivated_at = CASE WHEN $7::text IS NULL THEN sid_inactivated_at END,
                period_days = $8,
                anchor_at = CASE WHEN $6 THEN $3 ELSE anchor_at END,
                cancel_reason = CASE WHEN $6 THEN NULL ELSE cancel_reason END,
                canceled_at = CASE WHEN $6 THEN NULL ELSE canceled_at END,
                schedule_seq = schedule_seq + 1, version = version + 1,
                attention_code = NULL, attention_message = NULL, attention_since = NULL
           WHERE id = $1
           RETURNING schedule_seq, version, status AS "status: SubscriptionStatus""#,
        s.id.0,
        a.cycle,
        charged_at,
        next.map(|n| n.due_on),
        next.map(|n| n.at),
        restart,
        new_sid,
        period,
    )
    .fetch_one(&mut *tx)
    .await?;
    if let Some(next) = next {
        jobs::enqueue_at(
            &mut tx,
            &tasks::SubscriptionCharge {
                subscription_id: s.id.0,
                cycle: a.cycle + 1,
                seq: updated.schedule_seq,
            },
            next.at,
            now,
        )
        .await?;
    }
    let data = crate::subscriptions::SubscriptionEventData {
        subscription_id: s.id.0,
        user_id: s.user_id.0,
        status: updated.status,
        period_days: period,
        cycle: a.cycle,
        next_charge_at: next
            .map(|n| n.at)
            .or(s.next_charge_at.filter(|_| s.status.is_billable())),
        order_id: Some(order.0),
        amount: Some(a.amount),
        reason: None,
        failure_code: None,
    };
    let event = |event_type| crate::outbox::Event {
        event_type,
        aggregate_type: "subscription",
        aggregate_id: s.id.0,
        aggregate_version: updated.version,
        data: &data,
    };
    let mut events = vec![paid, event("subscription.charged").encode()?];
    if let Some(v) = via {
        let kind = if restart {
            "subscription.resubscribed"
        } else {
            "subscription.recovered"
        };
        events.push(event(kind).encode()?);
        crate::subscriptions::checkout::record_paid(
            &mut tx,
            v.checkout,
            s.id,
            s.sid.as_deref(),
            new_sid.as_deref(),
            order,
            now,
        )
        .await?;
    }
    crate::outbox::record_all(&mut tx, events).await?;
    tx.commit().await?;
    metrics::counter!("subscription_charges_total", "outcome" => "succeeded").increment(1);
    tracing::info!(
        subscription_id = s.id.0,
        cycle = a.cycle,
        order_id = order.0,
        amount = a.amount.0,
        recovered,
        checkout = via.map(|v| v.checkout.id.0),
        "subscription charged"
    );
    Ok(())
}

/// The cycle's order, paid, with its lines, its payment row and its sales — written from
/// what the attempt holds, without reading anything back — and its `order.paid` event for
/// the caller to record with its own.
pub(crate) async fn write_cycle_order(
    conn: &mut PgConnection,
    s: &Row,
    a: &Attempt,
    approval: &Approval,
    paid_at: DateTime<Utc>,
) -> Result<(OrderId, crate::outbox::Encoded)> {
    let discount: i64 = a
        .lines
        .iter()
        .map(|l| l.unit_discount * i64::from(l.quantity))
        .sum();
    let written = store::orders::insert(
        conn,
        &store::orders::NewOrder {
            user: s.user_id,
            kind: "subscription",
            // Shipped to the subscription's receiver, or where the first order went.
            ship_to: store::orders::ShipTo::SubscriptionOf(s.id),
            lines: &a.lines,
            total: a.amount,
            discount: Money(discount),
            period_days: Some(s.period_days),
            cycle: Some((s.id, a.cycle)),
            idempotency: None,
            from_cart: false,
            payment: store::orders::NewPayment::Approved {
                partner_order_id: &a.partner_order_id,
                tid: approval.tid.as_deref(),
                sid: s.sid.as_deref(),
                aid: approval.aid.as_deref(),
                response_digest: approval.digest.as_deref(),
            },
        },
        &partner_user_id(s),
        paid_at,
    )
    .await?
    .ok_or_else(|| {
        Error::Internal(format!(
            "cycle order of subscription {} not written",
            s.id.0
        ))
    })?;
    let order = written.order.0;
    let data = store::orders::OrderEventData {
        order_id: order,
        user_id: s.user_id.0,
        kind: store::orders::OrderKind::Subscription,
        status: store::orders::OrderStatus::Paid,
        total_amount: a.amount,
        period_days: Some(s.period_days),
        lines: a
            .lines
            .iter()
            .map(|l| {
                store::orders::OrderLine::new(
                    l.item_id,
                    l.name.clone(),
                    l.unit_price,
                    l.unit_discount,
                    l.quantity,
                )
            })
            .collect(),
        failure_code: None,
        failure_message: None,
    };
    let paid = crate::outbox::Event {
        event_type: "order.paid",
        aggregate_type: "order",
        aggregate_id: order,
        aggregate_version: 1,
        data: &data,
    }
    .encode()?;
    Ok((OrderId(order), paid))
}

/// A failed call, as the policy decides for [`Step::Charge`]: a soft decline follows the
/// dunning schedule; a hard one ends the subscription; an ambiguous answer waits for
/// reconciliation; otherwise nothing was charged — the attempt is `not_charged` (no
/// dunning attempt used) and the job retries, is deferred, or, for a request KakaoPay
/// rejects, fails to the operators' list with the subscription flagged for attention and
/// the cycle still due.
pub(crate) async fn apply_failure(
    ctx: &Ctx,
    policy: &Policy,
    s: &Row,
    a: &Attempt,
    e: GatewayError,
) -> Result<Outcome> {
    let code = e.record_code();
    let now = ctx.clock.now();
    match error_policy::decide(Step::Charge, &e) {
        Action::CustomerFailure => {
            apply_decline(ctx, policy, a, DeclineClass::Soft, &code, &e.message).await?;
            Ok(Outcome::Done)
        }
        Action::HardDecline => {
            apply_decline(ctx, policy, a, DeclineClass::Hard, &code, &e.message).await?;
            Ok(Outcome::Done)
        }
        Action::Reconcile => {
            tracing::warn!(subscription_id = s.id.0, cycle = a.cycle, error = %e,
                "charge outcome unknown; reconciling from the SID status");
            let mut tx = ctx.db.begin().await?;
            mark_unknown(&mut tx, a.id, &e.message).await?;
            enqueue_reconcile(ctx, &mut tx, a.id, 1, now, None).await?;
            tx.commit().await?;
            Ok(Outcome::Done)
        }
        Action::Reject => {
            let mut tx = ctx.db.begin().await?;
            mark_not_charged(&mut tx, a.id, &code, &e.message, now).await?;
            sqlx::query!(
                "UPDATE subscriptions SET attention_code = $2, attention_message = $3,
                        attention_since = COALESCE(attention_since, $4)
                 WHERE id = $1",
                s.id.0,
                code,
                e.message,
                now
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            metrics::counter!("subscription_charges_total", "outcome" => "rejected").increment(1);
            Ok(job_outcome(ctx, Action::Reject, &e))
        }
        other => {
            let mut tx = ctx.db.begin().await?;
            mark_not_charged(&mut tx, a.id, &code, &e.message, now).await?;
            tx.commit().await?;
            metrics::counter!("subscription_charges_total", "outcome" => "not_charged")
                .increment(1);
            Ok(job_outcome(ctx, other, &e))
        }
    }
}

/// KakaoPay declined: the attempt is `declined` with its code. A soft decline follows
/// the dunning schedule (the first of a cycle makes the subscription `past_due`; the
/// schedule decides the next attempt or the cancellation); a hard one cancels at once —
/// the same cancellation as after the schedule's last attempt, with its own reason.
pub(crate) async fn apply_decline(
    ctx: &Ctx,
    policy: &Policy,
    a: &Attempt,
    class: DeclineClass,
    code: &str,
    message: &str,
) -> Result<()> {
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let s = lock_of(&mut tx, a).await?;
    let decided = sqlx::query_scalar!(
        "UPDATE charge_attempts SET status = 'declined', failure_code = $2, failure_message = $3,
                finished_at = $4
         WHERE id = $1 AND status IN ('in_flight', 'unknown') RETURNING id",
        a.id,
        code,
        message,
        now
    )
    .fetch_optional(&mut *tx)
    .await?;
    if decided.is_some() {
        // Counted once per attempt: a duplicate run that finds it decided counts nothing.
        metrics::counter!("subscription_charges_total", "outcome" => "declined", "class" => class.as_str())
            .increment(1);
    }
    if decided.is_none() || !s.status.is_billable() {
        tx.commit().await?;
        return Ok(());
    }
    let declines = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM charge_attempts
           WHERE subscription_id = $1 AND cycle = $2 AND status = 'declined'"#,
        s.id.0,
        a.cycle
    )
    .fetch_one(&mut *tx)
    .await?;
    if s.status == SubscriptionStatus::Active && Policy::enters_past_due(class) {
        sqlx::query!(
            "UPDATE subscriptions SET status = 'past_due', version = version + 1 WHERE id = $1",
            s.id.0
        )
        .execute(&mut *tx)
        .await?;
        let url = crate::subscriptions::checkout::issue_link(ctx, &mut tx, &s, now).await?;
        record_event(
            &mut tx,
            s.id,
            "subscription.past_due",
            EventExtra {
                failure_code: Some(code),
                recovery_url: Some(&url),
                ..Default::default()
            },
        )
        .await?;
    }
    match policy.after_decline(class, u32::try_from(declines).unwrap_or(u32::MAX), now) {
        crate::subscriptions::policy::Dunning::RetryAt(at) => {
            let pending = s.next(policy).map(|n| n.due_on);
            let next = crate::subscriptions::Next {
                due_on: pending.unwrap_or_else(|| policy.local_date(at)),
                at,
            };
            reschedule(&mut tx, &s, Some(next), a.cycle, now).await?;
            tracing::info!(subscription_id = s.id.0, cycle = a.cycle, declines, code, retry_at = %at,
                "charge declined; retry scheduled");
        }
        crate::subscriptions::policy::Dunning::Cancel { reason } => {
            tracing::warn!(
                subscription_id = s.id.0,
                cycle = a.cycle,
                declines,
                code,
                class = class.as_str(),
                reason,
                "charge declined for the last time; subscription canceled"
            );
            let url = crate::subscriptions::checkout::issue_link(ctx, &mut tx, &s, now).await?;
            cancel_locked_with_code(&mut tx, &s, reason, Some(code), Some(&url), now).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Locks the subscription an attempt belongs to: every decider of an attempt holds it.
async fn lock_of(conn: &mut PgConnection, a: &Attempt) -> Result<Row> {
    lock(conn, a.subscription_id, None)
        .await?
        .ok_or_else(|| Error::Internal(format!("attempt {} lost its subscription", a.id)))
}
