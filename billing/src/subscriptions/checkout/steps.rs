//! The worker's steps of a checkout: ready, approve (as a charge attempt of the cycle),
//! reconcile an approval that got no answer, and inactivate the SID it replaced; and what
//! a paid checkout writes beside the cycle's order.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{finish, load, CheckoutRow, CheckoutStatus};
use crate::error::{Error, Result};
use crate::ids::{CheckoutId, OrderId, SubscriptionId};
use crate::jobs::{self, Outcome};
use crate::money::Money;
use crate::pg::policy::{self as error_policy, Action, Step};
use crate::pg::{self, ApproveRequest, CidKind, GatewayError, ReadyRequest};
use crate::subscriptions::charge::{self, Approval, Attempt, PricedLine};
use crate::subscriptions::{lock, AttemptStatus, SubscriptionStatus};
use crate::{tasks, Ctx};

async fn row(ctx: &Ctx, id: CheckoutId) -> Result<Option<CheckoutRow>> {
    load(&mut *ctx.db.acquire().await?, id).await
}

fn outcome_for(ctx: &Ctx, action: Action, e: &GatewayError) -> Outcome {
    error_policy::job_outcome(action, e, ctx.pg_guard.misconfigured_hold())
}

/// A checkout that KakaoPay refused (or whose buyer it declined) ends `failed` with the
/// PG's code; the subscription is untouched (dunning goes on).
async fn fail_now(ctx: &Ctx, id: CheckoutId, from: CheckoutStatus, e: &GatewayError) -> Result<()> {
    let mut tx = ctx.db.begin().await?;
    finish(
        &mut tx,
        id,
        &[from],
        CheckoutStatus::Failed,
        Some((&e.record_code(), &e.message)),
        ctx.clock.now(),
    )
    .await?;
    tx.commit().await?;
    tracing::warn!(checkout_id = id.0, error = %e, "checkout refused by KakaoPay");
    Ok(())
}

/// Task `subscription.checkout_ready`: KakaoPay's tid and the buyer's page, with our
/// return URLs carrying the checkout's token. What a failure does is the policy's
/// ([`Step::Ready`]); retries stop `ready_give_up_secs` after the checkout started.
pub async fn ready(ctx: &Ctx, id: CheckoutId) -> Result<Outcome> {
    let Some(c) = row(ctx, id).await? else {
        return Ok(Outcome::Done);
    };
    if c.status != CheckoutStatus::Created {
        return Ok(Outcome::Done);
    }
    let lines: Vec<PricedLine> = serde_json::from_value(c.lines.clone())
        .map_err(|e| Error::Internal(format!("checkout {} lines: {e}", id.0)))?;
    let Some(first) = lines.first() else {
        return Ok(Outcome::fail(format!("checkout {} has no lines", id.0)));
    };
    let units: i64 = lines.iter().map(|l| i64::from(l.quantity)).sum();
    let base = super::public_base(ctx);
    let url = |action: &str| format!("{base}/api/checkouts/kakaopay/{action}/{}", c.token);
    let req = ReadyRequest {
        kind: CidKind::Subscription,
        partner_order_id: c.partner_order_id.clone(),
        partner_user_id: c.partner_user_id.clone(),
        item_name: pg::item_name(first.name.clone(), lines.len() as i64),
        item_code: None,
        quantity: u32::try_from(units.max(1)).unwrap_or(u32::MAX),
        total_amount: c.amount,
        tax_free_amount: Money::ZERO,
        vat_amount: None,
        approval_url: url("approve"),
        cancel_url: url("cancel"),
        fail_url: url("fail"),
    };
    match ctx.pg_guard.run("ready", ctx.gateway.ready(&req)).await {
        Ok(res) => {
            let mut tx = ctx.db.begin().await?;
            sqlx::query!(
                "UPDATE subscription_checkouts SET status = 'ready', tid = $2, redirect_pc_url = $3,
                        redirect_mobile_url = $4, redirect_app_url = $5
                 WHERE id = $1 AND status = 'created'",
                id.0,
                res.tid,
                res.next_redirect_pc_url,
                res.next_redirect_mobile_url,
                res.next_redirect_app_url,
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(checkout_id = id.0, "checkout ready");
            Ok(Outcome::Done)
        }
        Err(e) => match error_policy::decide(Step::Ready, &e) {
            action @ (Action::CustomerFailure | Action::Reject) => {
                fail_now(ctx, id, CheckoutStatus::Created, &e).await?;
                Ok(match action {
                    Action::CustomerFailure => Outcome::Done,
                    other => outcome_for(ctx, other, &e),
                })
            }
            Action::Retry => {
                let age = ctx.clock.now() - c.created_at;
                let limit = chrono::Duration::from_std(ctx.settings.payments.ready_give_up_secs)
                    .unwrap_or(chrono::Duration::MAX);
                if age < limit {
                    return Ok(outcome_for(ctx, Action::Retry, &e));
                }
                let mut tx = ctx.db.begin().await?;
                finish(
                    &mut tx,
                    id,
                    &[CheckoutStatus::Created],
                    CheckoutStatus::Failed,
                    Some((
                        "pg_unavailable",
                        "the payment service could not be reached; please try again",
                    )),
                    ctx.clock.now(),
                )
                .await?;
                tx.commit().await?;
                Ok(Outcome::Done)
            }
            other => Ok(outcome_for(ctx, other, &e)),
        },
    }
}

/// What `approve` found under the subscription's lock.
enum Gate {
    /// Recorded as attempt `Attempt` of the cycle; send the approval.
    Send(Box<Attempt>),
    /// Nothing to send (superseded, decided, or waiting for reconciliation).
    Done,
    /// A dunning charge of the cycle is at KakaoPay: its outcome comes first.
    Wait,
}

/// Task `subscription.checkout_approve`: approves the buyer's checkout as a charge attempt
/// of its cycle. Under the subscription's lock: a cycle already paid (by a dunning retry,
/// another checkout) or a subscription with nothing to pay supersedes the checkout, which
/// is then never approved; an open dunning attempt makes this wait for its outcome; an
/// attempt of this checkout left `in_flight` (a crashed run) goes to reconciliation. Else
/// the attempt is recorded and committed before KakaoPay is called.
pub async fn approve(ctx: &Ctx, id: CheckoutId) -> Result<Outcome> {
    let Some(c) = row(ctx, id).await? else {
        return Ok(Outcome::Done);
    };
    if c.status != CheckoutStatus::Approving {
        return Ok(Outcome::Done);
    }
    let (Some(tid), Some(pg_token)) = (c.tid.clone(), c.pg_token.clone()) else {
        return Err(Error::Internal(format!(
            "approving checkout {} has no tid or pg_token",
            id.0
        )));
    };
    let attempt = match gate(ctx, &c).await? {
        Gate::Send(a) => a,
        Gate::Done => return Ok(Outcome::Done),
        Gate::Wait => {
            return Ok(Outcome::Defer {
                after: std::time::Duration::from_secs(5),
                reason: "a dunning charge of the cycle is at KakaoPay".into(),
            })
        }
    };
    let req = ApproveRequest {
        kind: CidKind::Subscription,
        tid,
        partner_order_id: c.partner_order_id.clone(),
        partner_user_id: c.partner_user_id.clone(),
        pg_token,
        expected_total: c.amount,
    };
    match ctx.pg_guard.run("approve", ctx.gateway.approve(&req)).await {
        Ok(res) => {
            let approval = Approval {
                tid: Some(res.tid.clone()),
                aid: Some(res.aid.clone()),
                digest: pg::digest(&res),
            };
            paid(ctx, &c, &attempt, approval, res.sid.clone()).await?;
            Ok(Outcome::Done)
        }
        Err(e) => match error_policy::decide(Step::Approve, &e) {
            Action::Reconcile => {
                tracing::warn!(checkout_id = id.0, error = %e, "checkout approval outcome unknown; reconciling");
                let mut tx = ctx.db.begin().await?;
                charge::mark_unknown(&mut tx, attempt.id, &e.message).await?;
                enqueue_reconcile(ctx, &mut tx, &c, ctx.clock.now()).await?;
                tx.commit().await?;
                Ok(Outcome::Done)
            }
            action => {
                // Nothing was charged: the attempt never counts as a dunning decline, and
                // the dunning schedule goes on as it was.
                let now = ctx.clock.now();
                let code = e.record_code();
                let mut tx = ctx.db.begin().await?;
                charge::mark_not_charged(&mut tx, attempt.id, &code, &e.message, now).await?;
                let ends = matches!(action, Action::CustomerFailure | Action::Reject);
                if ends {
                    finish(
                        &mut tx,
                        id,
                        &[CheckoutStatus::Approving],
                        CheckoutStatus::Failed,
                        Some((&code, &e.message)),
                        now,
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(match action {
                    Action::CustomerFailure => Outcome::Done,
                    other => outcome_for(ctx, other, &e),
                })
            }
        },
    }
}

/// The decision `approve` takes under the subscription's lock (see there).
async fn gate(ctx: &Ctx, c: &CheckoutRow) -> Result<Gate> {
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let Some(s) = lock(&mut tx, c.subscription_id, None).await? else {
        return Ok(Gate::Done);
    };
    let payable = matches!(
        s.status,
        SubscriptionStatus::PastDue | SubscriptionStatus::Canceled
    );
    if s.current_cycle + 1 != c.cycle || !payable {
        finish(
            &mut tx,
            c.id,
            &[CheckoutStatus::Approving],
            CheckoutStatus::Superseded,
            Some((
                "already_paid",
                "the cycle was paid before this checkout was approved; nothing was charged",
            )),
            now,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            checkout_id = c.id.0,
            subscription_id = s.id.0,
            "checkout superseded; not approved"
        );
        return Ok(Gate::Done);
    }
    if let Some(open) = charge::open_attempt_of(&mut tx, s.id).await? {
        if open.checkout_id != Some(c.id.0) {
            return Ok(Gate::Wait);
        }
        if open.status == AttemptStatus::InFlight {
            // Our own earlier run stopped after recording it: KakaoPay may have approved.
            charge::mark_unknown(
                &mut tx,
                open.id,
                "the worker stopped before the answer was recorded",
            )
            .await?;
            enqueue_reconcile(ctx, &mut tx, c, now).await?;
            tx.commit().await?;
        }
        return Ok(Gate::Done);
    }
    let lines: Vec<PricedLine> = serde_json::from_value(c.lines.clone())
        .map_err(|e| Error::Internal(format!("checkout {} lines: {e}", c.id.0)))?;
    let attempt_id = sqlx::query_scalar!(
        r#"INSERT INTO charge_attempts (subscription_id, cycle, attempt, partner_order_id, amount,
                                        lines, started_at, checkout_id)
           SELECT $1, $2, COALESCE(max(attempt), 0) + 1, $3, $4, $5, $6, $7
           FROM charge_attempts WHERE subscription_id = $1 AND cycle = $2
           ON CONFLICT (checkout_id) DO NOTHING
           RETURNING id"#,
        s.id.0,
        c.cycle,
        c.partner_order_id,
        c.amount.0,
        c.lines,
        now,
        c.id.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(attempt_id) = attempt_id else {
        // This checkout's attempt was decided already (not_charged by an earlier run that
        // retries): a new approval of the same tid is what the retry is for.
        let reused = sqlx::query_scalar!(
            "UPDATE charge_attempts SET status = 'in_flight', started_at = $2, finished_at = NULL,
                    failure_code = NULL, failure_message = NULL
             WHERE checkout_id = $1 AND status = 'not_charged' RETURNING id",
            c.id.0,
            now
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(attempt_id) = reused else {
            return Ok(Gate::Done);
        };
        tx.commit().await?;
        return Ok(Gate::Send(Box::new(attempt(c, attempt_id, lines, now))));
    };
    tx.commit().await?;
    Ok(Gate::Send(Box::new(attempt(c, attempt_id, lines, now))))
}

fn attempt(c: &CheckoutRow, id: i64, lines: Vec<PricedLine>, now: DateTime<Utc>) -> Attempt {
    Attempt {
        id,
        subscription_id: c.subscription_id,
        cycle: c.cycle,
        partner_order_id: c.partner_order_id.clone(),
        amount: c.amount,
        lines,
        started_at: now,
    }
}

/// The approval landed: the charge path's success (the cycle's order, the attempt, the
/// schedule) with the new SID, and — in its transaction — [`record_paid`].
async fn paid(
    ctx: &Ctx,
    c: &CheckoutRow,
    a: &Attempt,
    approval: Approval,
    sid: Option<String>,
) -> Result<()> {
    if sid.is_none() {
        tracing::error!(
            checkout_id = c.id.0,
            "checkout approved without a SID; the old SID is kept"
        );
    }
    let policy = crate::subscriptions::policy(ctx)?;
    let via = charge::ViaCheckout { checkout: c, sid };
    charge::apply_success(ctx, &policy, a, approval, ctx.clock.now(), Some(&via)).await
}

/// In the transaction that applies a checkout's approval: the checkout `succeeded` with
/// its order and SIDs, any other open checkout of the subscription superseded (its
/// approval would find the cycle paid anyway), its recovery links dead, and the replaced
/// SID's inactivation queued.
pub(crate) async fn record_paid(
    conn: &mut PgConnection,
    c: &CheckoutRow,
    subscription: SubscriptionId,
    old_sid: Option<&str>,
    new_sid: Option<&str>,
    order: OrderId,
    now: DateTime<Utc>,
) -> Result<()> {
    let retire = old_sid.filter(|old| new_sid.is_some_and(|new| new != *old));
    sqlx::query!(
        "UPDATE subscription_checkouts SET status = 'succeeded', sid = $2, old_sid = $3,
                order_id = $4, finished_at = $5, failure_code = NULL, failure_message = NULL
         WHERE id = $1",
        c.id.0,
        new_sid,
        retire,
        order.0,
        now
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE subscription_checkouts SET status = 'superseded', failure_code = 'already_paid',
                failure_message = 'the cycle was paid by another checkout', finished_at = $3
         WHERE subscription_id = $1 AND id <> $2 AND status IN ('created', 'ready')",
        subscription.0,
        c.id.0,
        now
    )
    .execute(&mut *conn)
    .await?;
    super::links::expire_all(conn, subscription, now).await?;
    if new_sid.is_none() {
        // Paid, but KakaoPay did not name the SID it issued: the next charge would go to
        // the old one. Operators see it (and the charge path clears it once one succeeds).
        sqlx::query!(
            "UPDATE subscriptions SET attention_code = 'sid_missing',
                    attention_message = 'a checkout was approved without its SID; the previous SID is still used',
                    attention_since = $2
             WHERE id = $1",
            subscription.0,
            now
        )
        .execute(&mut *conn)
        .await?;
    }
    if retire.is_some() {
        jobs::enqueue(
            conn,
            &tasks::CheckoutRetireSid {
                checkout_id: c.id.0,
            },
            now,
        )
        .await?;
    }
    metrics::counter!("subscription_checkouts_finished_total", "status" => "succeeded")
        .increment(1);
    Ok(())
}

async fn enqueue_reconcile(
    ctx: &Ctx,
    conn: &mut PgConnection,
    c: &CheckoutRow,
    now: DateTime<Utc>,
) -> Result<()> {
    let round = sqlx::query_scalar!(
        "UPDATE subscription_checkouts SET reconcile_rounds = reconcile_rounds + 1 WHERE id = $1
         RETURNING reconcile_rounds",
        c.id.0
    )
    .fetch_one(&mut *conn)
    .await?;
    let at = error_policy::inquiry_at(&ctx.settings.payments, round, now, None);
    jobs::enqueue_at(
        conn,
        &tasks::CheckoutReconcile {
            checkout_id: c.id.0,
            round,
        },
        at,
        now,
    )
    .await?;
    metrics::counter!("payments_reconciliations_total").increment(1);
    Ok(())
}

/// Task `subscription.checkout_reconcile`: asks KakaoPay what became of an approval that
/// got no answer (order inquiry by the checkout's tid) — approved → paid as if the answer
/// had come; still waiting for approval → approved again (a tid approves at most once, so
/// this cannot charge twice); failed → the checkout fails, nothing charged. A failed
/// inquiry is the policy's ([`Step::Inquiry`]).
pub async fn reconcile(ctx: &Ctx, id: CheckoutId) -> Result<Outcome> {
    let Some(c) = row(ctx, id).await? else {
        return Ok(Outcome::Done);
    };
    let open = sqlx::query!(
        r#"SELECT id, status AS "status: AttemptStatus", started_at, lines
           FROM charge_attempts WHERE checkout_id = $1"#,
        id.0
    )
    .fetch_optional(ctx.db.pool())
    .await?;
    let Some(open) = open.filter(|a| a.status == AttemptStatus::Unknown) else {
        return Ok(Outcome::Done);
    };
    let Some(tid) = c.tid.clone() else {
        return Ok(Outcome::fail(format!("checkout {} has no tid", id.0)));
    };
    let res = match ctx
        .pg_guard
        .run("order", ctx.gateway.order(CidKind::Subscription, &tid))
        .await
    {
        Ok(res) => res,
        Err(e) => {
            return Ok(outcome_for(
                ctx,
                error_policy::decide(Step::Inquiry, &e),
                &e,
            ));
        }
    };
    if let Some(total) = res.amount.map(|a| a.total) {
        if total != c.amount {
            return Ok(Outcome::fail(format!(
                "KakaoPay reports {total} for checkout {} of {}; needs an operator",
                id.0, c.amount
            )));
        }
    }
    let now = ctx.clock.now();
    let status = res.status.clone();
    tracing::info!(checkout_id = id.0, pg_status = %status, "checkout reconciled");
    if status.is_approved() {
        let lines: Vec<PricedLine> = serde_json::from_value(open.lines)
            .map_err(|e| Error::Internal(format!("checkout {} lines: {e}", id.0)))?;
        let a = attempt(&c, open.id, lines, open.started_at);
        let aid = res
            .payment_action_details
            .iter()
            .rev()
            .find(|a| a.payment_action_type == "PAYMENT")
            .map(|a| a.aid.clone());
        let approval = Approval {
            tid: Some(tid),
            aid,
            digest: pg::digest(&res),
        };
        paid(ctx, &c, &a, approval, res.sid.clone()).await?;
        return Ok(Outcome::Done);
    }
    let mut tx = ctx.db.begin().await?;
    if status.is_pending() {
        // Our approval never landed: the attempt charged nothing, and the approval is sent
        // again (guarded at KakaoPay: a tid approves once).
        charge::mark_not_charged(
            &mut tx,
            open.id,
            "not_landed",
            "KakaoPay shows the approval did not land",
            now,
        )
        .await?;
        jobs::enqueue(
            &mut tx,
            &tasks::CheckoutApprove {
                checkout_id: id.0,
                round: c.reconcile_rounds,
            },
            now,
        )
        .await?;
    } else if status.is_failed() {
        charge::mark_not_charged(
            &mut tx,
            open.id,
            status.as_str(),
            "KakaoPay reports the payment did not complete",
            now,
        )
        .await?;
        finish(
            &mut tx,
            id,
            &[CheckoutStatus::Approving],
            CheckoutStatus::Failed,
            Some((
                status.as_str(),
                "KakaoPay reports the payment did not complete",
            )),
            now,
        )
        .await?;
    } else {
        return Ok(Outcome::fail(format!(
            "checkout {} is approving here and {status} at KakaoPay; needs an operator",
            id.0
        )));
    }
    tx.commit().await?;
    Ok(Outcome::Done)
}

/// Task `subscription.retire_sid`: the SID a paid checkout replaced can no longer be
/// charged at KakaoPay. Idempotent; a SID already unusable counts as done.
pub async fn retire_sid(ctx: &Ctx, id: CheckoutId) -> Result<Outcome> {
    let r = sqlx::query!(
        "SELECT old_sid, old_sid_inactivated_at FROM subscription_checkouts WHERE id = $1",
        id.0
    )
    .fetch_optional(ctx.db.pool())
    .await?;
    let Some((Some(sid), None)) = r.map(|r| (r.old_sid, r.old_sid_inactivated_at)) else {
        return Ok(Outcome::Done);
    };
    if let Err(e) = ctx
        .pg_guard
        .run("sid_inactivate", ctx.gateway.sid_inactivate(&sid))
        .await
    {
        match error_policy::decide(Step::SidInactivate, &e) {
            Action::AlreadyDone => {
                tracing::info!(checkout_id = id.0, error = %e, "replaced SID already unusable");
            }
            other => return Ok(outcome_for(ctx, other, &e)),
        }
    }
    sqlx::query!(
        "UPDATE subscription_checkouts SET old_sid_inactivated_at = $2
         WHERE id = $1 AND old_sid_inactivated_at IS NULL",
        id.0,
        ctx.clock.now()
    )
    .execute(ctx.db.pool())
    .await?;
    tracing::info!(checkout_id = id.0, "replaced SID inactivated");
    Ok(Outcome::Done)
}
