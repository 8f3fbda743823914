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

/// A charge that went through, to apply.
pub(crate) struct Success<'a> {
    pub attempt: &'a Attempt,
    pub approval: &'a Approval,
    pub charged_at: DateTime<Utc>,
    pub via: Option<&'a ViaCheckout<'a>>,
}

/// One charge that went through: [`apply_successes`] of one, on the caller's handles.
pub(crate) async fn apply_success(
    ctx: &Ctx,
    policy: &Policy,
    a: &Attempt,
    approval: Approval,
    charged_at: DateTime<Utc>,
    via: Option<&ViaCheckout<'_>>,
) -> Result<()> {
    let one = Success {
        attempt: a,
        approval: &approval,
        charged_at,
        via,
    };
    apply_successes(ctx, std::slice::from_ref(&ctx.db), policy, &[one]).await
}

/// A success as applied: its subscription, what changes on it, and its order.
struct Applied<'a> {
    item: &'a Success<'a>,
    s: &'a Row,
    new_sid: Option<String>,
    restart: bool,
    period: i32,
    next: Option<Next>,
}

/// The cycles were charged: each cycle's order (paid, from the attempt's priced lines)
/// with its payment row and sales, the attempt `succeeded`, `order.paid` and
/// `subscription.charged`, and — unless the subscription was paused or canceled
/// meanwhile — the next cycle scheduled. One transaction for all, under their
/// subscriptions' locks (every decider of an attempt holds it, so no attempt can be
/// decided meanwhile); each statement writes the rows of every charge at once. An
/// attempt decided already (a duplicate run) is left as it is, and writes nothing.
///
/// Through a checkout (`via`) the same transaction also replaces the SID, returns the
/// subscription to `active` — a `past_due` one on its calendar, a canceled one anchored
/// again on this payment (with the checkout's period) — drops the pending dunning retry,
/// and records `subscription.recovered` or `subscription.resubscribed` and the checkout's
/// own changes ([`crate::subscriptions::checkout::record_paid`]).
pub(crate) async fn apply_successes(
    ctx: &Ctx,
    dbs: &[crate::db::Db],
    policy: &Policy,
    items: &[Success<'_>],
) -> Result<()> {
    let now = ctx.clock.now();
    let mut tx = crate::db::Db::begin_for(dbs).await?;
    let ids: Vec<i64> = items.iter().map(|i| i.attempt.subscription_id.0).collect();
    let locked: std::collections::HashMap<i64, Row> =
        store::subscriptions::lock_many(&mut tx, &ids)
            .await?
            .into_iter()
            .map(|r| (r.id.0, r))
            .collect();
    let attempt_ids: Vec<i64> = items.iter().map(|i| i.attempt.id).collect();
    let undecided: std::collections::HashSet<i64> = sqlx::query_scalar!(
        "SELECT id FROM charge_attempts WHERE id = ANY($1) AND status IN ('in_flight', 'unknown')",
        &attempt_ids
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let mut seen = std::collections::HashSet::new();
    let mut applied = Vec::with_capacity(items.len());
    for item in items {
        let a = item.attempt;
        // Decided already, or twice in this batch: a duplicate run writes nothing.
        if !undecided.contains(&a.id) || !seen.insert(a.id) {
            continue;
        }
        let s = locked
            .get(&a.subscription_id.0)
            .ok_or_else(|| Error::Internal(format!("attempt {} lost its subscription", a.id)))?;
        let via = item.via;
        // A checkout restarts a canceled subscription: anchored again on this payment.
        let restart = via.is_some() && s.status == SubscriptionStatus::Canceled;
        let period = via
            .and_then(|v| v.checkout.period_days)
            .filter(|_| restart)
            .unwrap_or(s.period_days);
        let grid = s
            .next(policy)
            .filter(|_| s.status.is_billable())
            .map(|n| policy.after_success(n.due_on, s.period_days, item.charged_at));
        let next = if restart {
            Some(policy.first_due(item.charged_at, period))
        } else if via.is_some() {
            // A checkout always leaves the subscription active with its next cycle
            // scheduled: on its calendar, or — should it have had no pending charge — from
            // this payment.
            grid.or_else(|| Some(policy.first_due(item.charged_at, period)))
        } else {
            grid
        };
        applied.push(Applied {
            item,
            s,
            new_sid: via.and_then(|v| v.sid.clone()),
            restart,
            period,
            next,
        });
    }
    if applied.is_empty() {
        return Ok(());
    }

    let orders = write_cycle_orders(&mut tx, &applied).await?;
    let decided = sqlx::query!(
        "UPDATE charge_attempts c SET status = 'succeeded', tid = u.tid, aid = u.aid,
                finished_at = u.at, order_id = u.order_id
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[])
              AS u(id, tid, aid, at, order_id)
         WHERE c.id = u.id AND c.status IN ('in_flight', 'unknown')",
        &applied
            .iter()
            .map(|x| x.item.attempt.id)
            .collect::<Vec<_>>(),
        &applied
            .iter()
            .map(|x| x.item.approval.tid.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &applied
            .iter()
            .map(|x| x.item.approval.aid.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &applied
            .iter()
            .map(|x| x.item.charged_at)
            .collect::<Vec<_>>(),
        &orders.iter().map(|o| o.0).collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if decided != applied.len() as u64 {
        // Held under the locks, so this cannot be; rolled back rather than half-applied.
        return Err(Error::Internal(format!(
            "{decided} of {} charged attempts decided",
            applied.len()
        )));
    }
    for x in applied.iter().filter(|x| x.item.via.is_some()) {
        // The dunning retry this payment makes unnecessary (a run already started finds
        // the cycle paid and stops).
        crate::subscriptions::drop_pending_charge(&mut tx, x.s, x.item.attempt.cycle).await?;
    }
    // The running job is this cycle's; the next cycle gets a new sequence and job.
    let updated: std::collections::HashMap<i64, (i32, i32, SubscriptionStatus)> = sqlx::query!(
        r#"UPDATE subscriptions s SET current_cycle = u.cycle, last_charged_at = u.charged_at,
                status = CASE WHEN u.restart OR s.status = 'past_due' THEN 'active'
                              ELSE s.status END,
                due_on = COALESCE(u.due_on, s.due_on),
                next_charge_at = CASE WHEN u.next_at IS NULL THEN s.next_charge_at
                                      ELSE u.next_at END,
                sid = COALESCE(u.new_sid, s.sid),
                sid_inactivated_at = CASE WHEN u.new_sid IS NULL THEN s.sid_inactivated_at END,
                period_days = u.period,
                anchor_at = CASE WHEN u.restart THEN u.charged_at ELSE s.anchor_at END,
                cancel_reason = CASE WHEN u.restart THEN NULL ELSE s.cancel_reason END,
                canceled_at = CASE WHEN u.restart THEN NULL ELSE s.canceled_at END,
                schedule_seq = s.schedule_seq + 1, version = s.version + 1,
                attention_code = NULL, attention_message = NULL, attention_since = NULL
           FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::date[],
                       $5::timestamptz[], $6::bool[], $7::text[], $8::int[])
                AS u(id, cycle, charged_at, due_on, next_at, restart, new_sid, period)
           WHERE s.id = u.id
           RETURNING s.id, s.schedule_seq, s.version, s.status AS "status: SubscriptionStatus""#,
        &applied.iter().map(|x| x.s.id.0).collect::<Vec<_>>(),
        &applied
            .iter()
            .map(|x| x.item.attempt.cycle)
            .collect::<Vec<_>>(),
        &applied
            .iter()
            .map(|x| x.item.charged_at)
            .collect::<Vec<_>>(),
        &applied
            .iter()
            .map(|x| x.next.map(|n| n.due_on))
            .collect::<Vec<_>>() as &[Option<chrono::NaiveDate>],
        &applied
            .iter()
            .map(|x| x.next.map(|n| n.at))
            .collect::<Vec<_>>() as &[Option<DateTime<Utc>>],
        &applied.iter().map(|x| x.restart).collect::<Vec<_>>(),
        &applied
            .iter()
            .map(|x| x.new_sid.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &applied.iter().map(|x| x.period).collect::<Vec<_>>(),
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|r| (r.id, (r.schedule_seq, r.version, r.status)))
    .collect();
    let mut next_jobs = Vec::new();
    let mut events = Vec::with_capacity(applied.len() * 2);
    for (x, order) in applied.iter().zip(&orders) {
        let (s, a) = (x.s, x.item.attempt);
        let &(seq, version, status) = updated
            .get(&s.id.0)
            .ok_or_else(|| Error::Internal(format!("subscription {} not updated", s.id.0)))?;
        if let Some(next) = x.next {
            next_jobs.push((
                tasks::SubscriptionCharge {
                    subscription_id: s.id.0,
                    cycle: a.cycle + 1,
                    seq,
                },
                next.at,
            ));
        }
        events.push(order_paid(s, a, *order)?);
        let data = crate::subscriptions::SubscriptionEventData {
            subscription_id: s.id.0,
            user_id: s.user_id.0,
            status,
            period_days: x.period,
            cycle: a.cycle,
            next_charge_at: x
                .next
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
            aggregate_version: version,
            data: &data,
        };
        events.push(event("subscription.charged").encode()?);
        if let Some(v) = x.item.via {
            let kind = if x.restart {
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
                x.new_sid.as_deref(),
                *order,
                now,
            )
            .await?;
        }
    }
    jobs::enqueue_many_at(&mut tx, &next_jobs, now).await?;
    crate::outbox::record_all(&mut tx, events).await?;
    tx.commit().await?;
    for (x, order) in applied.iter().zip(&orders) {
        metrics::counter!("subscription_charges_total", "outcome" => "succeeded").increment(1);
        tracing::info!(
            subscription_id = x.s.id.0,
            cycle = x.item.attempt.cycle,
            order_id = order.0,
            amount = x.item.attempt.amount.0,
            recovered = x.s.status == SubscriptionStatus::PastDue,
            checkout = x.item.via.map(|v| v.checkout.id.0),
            "subscription charged"
        );
    }
    Ok(())
}

/// The cycles' orders, paid, with their lines, payment rows and sales — written from
/// what the attempts hold, without reading anything back, in one statement.
async fn write_cycle_orders(
    conn: &mut PgConnection,
    applied: &[Applied<'_>],
) -> Result<Vec<OrderId>> {
    let user_refs: Vec<String> = applied.iter().map(|x| partner_user_id(x.s)).collect();
    let orders: Vec<store::orders::CycleOrder<'_>> = applied
        .iter()
        .zip(user_refs)
        .map(|(x, partner_user_id)| {
            let (s, a, approval) = (x.s, x.item.attempt, x.item.approval);
            store::orders::CycleOrder {
                user: s.user_id,
                subscription: s.id,
                cycle: a.cycle,
                period_days: s.period_days,
                lines: &a.lines,
                total: a.amount,
                discount: Money(
                    a.lines
                        .iter()
                        .map(|l| l.unit_discount * i64::from(l.quantity))
                        .sum(),
                ),
                paid_at: x.item.charged_at,
                partner_order_id: &a.partner_order_id,
                partner_user_id,
                tid: approval.tid.as_deref(),
                // The SID charged: the checkout's new one, else the subscription's.
                sid: x.new_sid.as_deref().or(s.sid.as_deref()),
                aid: approval.aid.as_deref(),
                response_digest: approval.digest.as_deref(),
            }
        })
        .collect();
    store::orders::insert_cycle_orders(conn, &orders).await
}

/// A cycle order's `order.paid`.
fn order_paid(s: &Row, a: &Attempt, order: OrderId) -> Result<crate::outbox::Encoded> {
    let data = store::orders::OrderEventData {
        order_id: order.0,
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
    crate::outbox::Event {
        event_type: "order.paid",
        aggregate_type: "order",
        aggregate_id: order.0,
        aggregate_version: 1,
        data: &data,
    }
    .encode()
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
