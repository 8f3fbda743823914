//! The recurring charge (DESIGN §4/§5): decide under the subscription's lock, record the
//! attempt, call KakaoPay's `subscription` API, and apply its answer in one transaction;
//! the reconciliation of ambiguous charges; SID inactivation; and the sweep that
//! re-enqueues any due subscription whose charge job is missing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::{
    cancel_locked, lock, policy, record_event, reschedule, EventExtra, Policy, Row,
    SubscriptionStatus,
};
use crate::error::{Error, Result};
use crate::ids::{OrderId, SubscriptionId};
use crate::jobs::{self, Outcome, Task};
use crate::money::Money;
use crate::pg::policy::{self as error_policy, Action, Step};
use crate::pg::{self, ChargeRequest, GatewayError};
use crate::{store, tasks, Ctx};

/// A product as priced when an attempt started; the cycle's order is written from these.
type PricedLine = crate::store::orders::LineRow;

/// An attempt as the outcome handlers need it.
#[derive(Debug)]
struct Attempt {
    id: i64,
    subscription_id: SubscriptionId,
    cycle: i32,
    partner_order_id: String,
    amount: Money,
    lines: Vec<PricedLine>,
    started_at: DateTime<Utc>,
}

/// What KakaoPay said about a successful charge (nothing when reconciliation found it).
#[derive(Debug, Default)]
struct Approval {
    tid: Option<String>,
    aid: Option<String>,
    digest: Option<String>,
}

/// Task `subscription.charge {subscription_id, cycle, seq}`.
///
/// Under the subscription's lock: a canceled, paused, already charged or rescheduled
/// (`seq` superseded) subscription is not charged; an attempt left `in_flight` by a
/// crashed worker becomes `unknown` and goes to reconciliation; the once-a-day guard moves
/// a charge that would be the second of a local day. Otherwise the attempt is recorded
/// and committed before KakaoPay is called, so a crash at any point leaves evidence.
pub async fn charge(ctx: &Ctx, id: SubscriptionId, cycle: i32, seq: i32) -> Result<Outcome> {
    let policy = policy(ctx)?;
    // Before anything is recorded: while the breaker is open, or the rate cap has no
    // permit in time, the charge is deferred untouched, and no attempt (dunning or
    // otherwise) is used up.
    let permit = match ctx.pg_guard.admit("subscription").await {
        Ok(p) => p,
        Err(e) => return Ok(job_outcome(ctx, error_policy::decide(Step::Charge, &e), &e)),
    };
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let Some(s) = lock(&mut tx, id, None).await? else {
        return Ok(Outcome::Done);
    };
    if !s.status.is_billable() || s.schedule_seq != seq || s.current_cycle + 1 != cycle {
        return Ok(Outcome::Done);
    }
    if let Some((open, status)) = open_attempt(&mut tx, id).await? {
        if status == super::AttemptStatus::InFlight {
            // The worker that sent it stopped before recording the answer: the PG may
            // have charged, so only the SID's status may decide.
            mark_unknown(
                &mut tx,
                open,
                "the worker stopped before the answer was recorded",
            )
            .await?;
            enqueue_reconcile(ctx, &mut tx, open, 1, now, None).await?;
            tx.commit().await?;
        }
        return Ok(Outcome::Done);
    }
    let Some(next) = s.next(&policy) else {
        return Ok(Outcome::Done);
    };
    if next.at > now {
        // Woken early (a clock step back, or an edit that forgot to reschedule): run again
        // at the right time rather than lose the charge.
        reschedule(&mut tx, &s, Some(next), cycle, now).await?;
        tx.commit().await?;
        return Ok(Outcome::Done);
    }
    if let Some(last) = s.last_charged_at {
        if policy.local_date(now) <= policy.local_date(last) {
            let moved = policy.not_before(next.due_on, now, Some(last));
            tracing::warn!(subscription_id = id.0, next_charge_at = %moved.at,
                "a second charge on one local day refused; moved to the next day");
            reschedule(&mut tx, &s, Some(moved), cycle, now).await?;
            tx.commit().await?;
            return Ok(Outcome::Done);
        }
    }
    let lines = priced_lines(&mut tx, id).await?;
    let amount: i64 = lines
        .iter()
        .map(|l| l.unit_price * i64::from(l.quantity))
        .sum();
    if lines.is_empty() || amount <= 0 {
        cancel_locked(&mut tx, &s, "items_unavailable", now).await?;
        tx.commit().await?;
        return Ok(Outcome::Done);
    }
    let Some(sid) = s.sid.clone() else {
        cancel_locked(&mut tx, &s, "sid_unusable", now).await?;
        tx.commit().await?;
        return Ok(Outcome::Done);
    };
    let attempt = record_attempt(&mut tx, &s, cycle, &lines, Money(amount), now).await?;
    tx.commit().await?;

    let units: i64 = lines.iter().map(|l| i64::from(l.quantity)).sum();
    let req = ChargeRequest {
        sid,
        partner_order_id: attempt.partner_order_id.clone(),
        partner_user_id: partner_user_id(&s),
        item_name: pg::item_name(lines[0].name.clone(), lines.len() as i64),
        item_code: None,
        quantity: u32::try_from(units).unwrap_or(u32::MAX),
        total_amount: Money(amount),
        tax_free_amount: Money::ZERO,
        vat_amount: None,
    };
    match permit.call(ctx.gateway.subscription_charge(&req)).await {
        Ok(res) => {
            let approval = Approval {
                tid: Some(res.tid.clone()),
                aid: Some(res.aid.clone()),
                digest: pg::digest(&res),
            };
            apply_success(ctx, &policy, &attempt, approval, ctx.clock.now()).await?;
            Ok(Outcome::Done)
        }
        Err(e) => apply_failure(ctx, &policy, &s, &attempt, e).await,
    }
}

/// The job's outcome for an action the charge steps leave to the runtime.
fn job_outcome(ctx: &Ctx, action: Action, e: &GatewayError) -> Outcome {
    error_policy::job_outcome(action, e, ctx.pg_guard.misconfigured_hold())
}

/// The SID's original partner user id (the first payment's).
fn partner_user_id(s: &Row) -> String {
    format!("pv-user-{}", s.user_id.0)
}

async fn open_attempt(
    conn: &mut PgConnection,
    id: SubscriptionId,
) -> Result<Option<(i64, super::AttemptStatus)>> {
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
async fn priced_lines(conn: &mut PgConnection, id: SubscriptionId) -> Result<Vec<PricedLine>> {
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

async fn record_attempt(
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

async fn load_attempt(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<(Attempt, super::AttemptStatus)>> {
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

async fn mark_unknown(conn: &mut PgConnection, attempt: i64, why: &str) -> Result<()> {
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
async fn mark_not_charged(
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
async fn enqueue_reconcile(
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
        std::time::Duration::from_millis(p.reconcile_min_backoff_ms),
        std::time::Duration::from_millis(p.reconcile_max_backoff_ms),
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

/// The cycle was charged: the cycle's order (paid, from the attempt's priced lines) with
/// its payment row, the attempt `succeeded`, `order.paid` and `subscription.charged`,
/// sales counted by a job, and — unless the subscription was paused or canceled
/// meanwhile — the next cycle scheduled. One transaction, under the subscription's lock
/// (every decider of an attempt holds it, so the attempt cannot be decided meanwhile).
async fn apply_success(
    ctx: &Ctx,
    policy: &Policy,
    a: &Attempt,
    approval: Approval,
    charged_at: DateTime<Utc>,
) -> Result<()> {
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let Some(s) = lock(&mut tx, a.subscription_id, None).await? else {
        return Err(Error::Internal(format!(
            "attempt {} lost its subscription",
            a.id
        )));
    };
    let order = write_cycle_order(&mut tx, &s, a, &approval, charged_at).await?;
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
    let next = if s.status.is_billable() {
        s.next(policy)
            .map(|n| policy.after_success(n.due_on, s.period_days, charged_at))
    } else {
        None
    };
    // The running job is this cycle's; the next cycle gets a new sequence and job.
    let updated = sqlx::query!(
        r#"UPDATE subscriptions SET current_cycle = $2, last_charged_at = $3,
                status = CASE WHEN status = 'past_due' THEN 'active' ELSE status END,
                due_on = COALESCE($4, due_on),
                next_charge_at = CASE WHEN $5::timestamptz IS NULL THEN next_charge_at ELSE $5 END,
                schedule_seq = schedule_seq + 1, version = version + 1,
                attention_code = NULL, attention_message = NULL, attention_since = NULL
           WHERE id = $1
           RETURNING schedule_seq, version, status AS "status: SubscriptionStatus""#,
        s.id.0,
        a.cycle,
        charged_at,
        next.map(|n| n.due_on),
        next.map(|n| n.at),
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
    let data = super::SubscriptionEventData {
        subscription_id: s.id.0,
        user_id: s.user_id.0,
        status: updated.status,
        period_days: s.period_days,
        cycle: a.cycle,
        next_charge_at: next
            .map(|n| n.at)
            .or(s.next_charge_at.filter(|_| s.status.is_billable())),
        order_id: Some(order.0),
        amount: Some(a.amount),
        reason: None,
        failure_code: None,
    };
    crate::outbox::record(
        &mut tx,
        crate::outbox::Event {
            event_type: "subscription.charged",
            aggregate_type: "subscription",
            aggregate_id: s.id.0,
            aggregate_version: updated.version,
            data: &data,
        },
    )
    .await?;
    jobs::enqueue(&mut tx, &tasks::OrderCountSales { order_id: order.0 }, now).await?;
    tx.commit().await?;
    metrics::counter!("subscription_charges_total", "outcome" => "succeeded").increment(1);
    tracing::info!(
        subscription_id = s.id.0,
        cycle = a.cycle,
        order_id = order.0,
        amount = a.amount.0,
        recovered,
        "subscription charged"
    );
    Ok(())
}

/// The cycle's order, paid, with its lines and payment row, and `order.paid` — written
/// from what the attempt holds, without reading anything back.
async fn write_cycle_order(
    conn: &mut PgConnection,
    s: &Row,
    a: &Attempt,
    approval: &Approval,
    paid_at: DateTime<Utc>,
) -> Result<OrderId> {
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
            // Shipped where the first order went.
            ship_to: store::orders::ShipTo::FirstOrderOf(s.id),
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
    crate::outbox::record(
        conn,
        crate::outbox::Event {
            event_type: "order.paid",
            aggregate_type: "order",
            aggregate_id: order,
            aggregate_version: 1,
            data: &data,
        },
    )
    .await?;
    Ok(OrderId(order))
}

/// A failed call, as the policy decides for [`Step::Charge`]: a decline follows the
/// dunning schedule; an unusable SID ends the subscription; an ambiguous answer waits for
/// reconciliation; otherwise nothing was charged — the attempt is `not_charged` (no
/// dunning attempt used) and the job retries, is deferred, or, for a request KakaoPay
/// rejects, fails to the operators' list with the subscription flagged for attention and
/// the cycle still due.
async fn apply_failure(
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
            apply_decline(ctx, policy, a, &code, &e.message).await?;
            Ok(Outcome::Done)
        }
        Action::SidUnusable => {
            let mut tx = ctx.db.begin().await?;
            mark_not_charged(&mut tx, a.id, &code, &e.message, now).await?;
            if let Some(s) = lock(&mut tx, s.id, None).await? {
                if s.status != SubscriptionStatus::Canceled {
                    tracing::error!(subscription_id = s.id.0, error = %e, "the SID cannot charge; subscription canceled");
                    cancel_locked(&mut tx, &s, "sid_unusable", now).await?;
                }
            }
            tx.commit().await?;
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

/// The card/wallet declined: the first decline of a cycle makes the subscription
/// `past_due`; the dunning schedule decides the next attempt or the cancellation.
async fn apply_decline(
    ctx: &Ctx,
    policy: &Policy,
    a: &Attempt,
    code: &str,
    message: &str,
) -> Result<()> {
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let Some(s) = lock(&mut tx, a.subscription_id, None).await? else {
        return Err(Error::Internal(format!(
            "attempt {} lost its subscription",
            a.id
        )));
    };
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
    metrics::counter!("subscription_charges_total", "outcome" => "declined").increment(1);
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
    if s.status == SubscriptionStatus::Active {
        sqlx::query!(
            "UPDATE subscriptions SET status = 'past_due', version = version + 1 WHERE id = $1",
            s.id.0
        )
        .execute(&mut *tx)
        .await?;
        record_event(
            &mut tx,
            s.id,
            "subscription.past_due",
            EventExtra {
                failure_code: Some(code),
                ..Default::default()
            },
        )
        .await?;
    }
    match policy.after_decline(u32::try_from(declines).unwrap_or(u32::MAX), now) {
        super::policy::Dunning::RetryAt(at) => {
            let pending = s.next(policy).map(|n| n.due_on);
            let next = super::Next {
                due_on: pending.unwrap_or_else(|| policy.local_date(at)),
                at,
            };
            reschedule(&mut tx, &s, Some(next), a.cycle, now).await?;
            tracing::info!(subscription_id = s.id.0, cycle = a.cycle, declines, code, retry_at = %at,
                "charge declined; retry scheduled");
        }
        super::policy::Dunning::Cancel => {
            tracing::warn!(
                subscription_id = s.id.0,
                cycle = a.cycle,
                declines,
                code,
                "charge declined for the last time; subscription canceled (payment_failed)"
            );
            cancel_locked(&mut tx, &s, "payment_failed", now).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Task `subscription.reconcile {attempt_id, round}`: decides an `unknown` attempt from
/// the SID's `last_approved_at` (the notes' only evidence). At or after the attempt's
/// start (less the clock skew allowance) → it landed; earlier once the safety window has
/// passed → it did not, and the cycle is tried again at once; earlier before that → ask
/// again later. Undecided past the review window → the operators' review list.
pub async fn reconcile(ctx: &Ctx, attempt_id: i64, round: i32) -> Result<Outcome> {
    let policy = policy(ctx)?;
    let cfg = &ctx.settings.subscriptions;
    let Some((a, status)) = load_attempt(&mut *ctx.db.acquire().await?, attempt_id).await? else {
        return Ok(Outcome::Done);
    };
    if status != super::AttemptStatus::Unknown {
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
    let review_at = a.started_at + chrono::Duration::seconds(cfg.review_after_secs as i64);
    let verdict = match ctx
        .pg_guard
        .run("sid_status", ctx.gateway.sid_status(&sid))
        .await
    {
        Ok(status) => {
            let since = a.started_at - chrono::Duration::seconds(cfg.reconcile_skew_secs as i64);
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
    let window_end = a.started_at + chrono::Duration::seconds(cfg.reconcile_window_secs as i64);
    match verdict {
        Some(true) => {
            // Charged around when the attempt was sent: the schedule and the daily guard
            // count from then.
            apply_success(ctx, &policy, &a, Approval::default(), a.started_at).await?;
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
                    let again = super::Next {
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
pub async fn reconcile_now(ctx: &Ctx, attempt_id: i64) -> Result<ReconcileAction> {
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
    if row.status != super::AttemptStatus::Unknown {
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
    tx.commit().await?;
    tracing::info!(
        attempt_id,
        ?action,
        "charge reconciliation requested by an operator"
    );
    Ok(action)
}

/// Past the review window and still undecided: on the operators' list, once.
async fn flag_for_review(
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
        "UPDATE subscriptions SET sid_inactivated_at = $2 WHERE id = $1 AND sid_inactivated_at IS NULL",
        id.0,
        ctx.clock.now()
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
