//! One-time payments through KakaoPay (DESIGN §4): the payment row of an order, the PG
//! redirects, and the worker steps `ready`, `approve`, `cancel` (refund) and `reconcile`.
//!
//! Every state change is a compare-and-set on the payment's status
//! (`UPDATE … WHERE status = 'approving'`), committed with the order's transition, its
//! outbox event and its follow-up jobs. Duplicate or concurrent jobs, replayed redirects
//! and retries therefore cannot approve twice, skip a state or go backwards: whoever loses
//! the compare-and-set does nothing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::db::Wakes;
use crate::error::{Error, Result};
use crate::ids::{OrderId, PaymentId};
use crate::jobs::{self, Outcome};
use crate::money::Money;
use crate::pg::policy::{self, Action, Step};
use crate::pg::{
    self, ApproveRequest, ApproveResponse, CancelRequest, CidKind, GatewayError, ReadyRequest,
};
use crate::store::orders::{
    self as rows, advance, advance_locked, Advanced, Fields, Move, OrderStatus,
};
pub use crate::store::orders::{abandon, request_refund, PaymentStatus};
use crate::{tasks, Ctx};

/// What the steps need to know about a payment and its order.
#[derive(Debug)]
struct Row {
    id: PaymentId,
    order_id: OrderId,
    kind: CidKind,
    token: String,
    partner_order_id: String,
    partner_user_id: String,
    amount: Money,
    canceled_amount: Money,
    status: PaymentStatus,
    tid: Option<String>,
    pg_token: Option<String>,
    order_status: OrderStatus,
    order_created_at: DateTime<Utc>,
}

async fn load(conn: &mut PgConnection, id: PaymentId) -> Result<Row> {
    let r = sqlx::query!(
        r#"SELECT p.id, p.order_id, p.cid_kind, p.token, p.partner_order_id, p.partner_user_id,
                  p.amount, p.canceled_amount, p.status AS "status: PaymentStatus", p.tid,
                  p.pg_token, o.status AS "order_status: OrderStatus",
                  o.created_at AS order_created_at
           FROM payments p JOIN orders o ON o.id = p.order_id WHERE p.id = $1"#,
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound)?;
    Ok(Row {
        id: PaymentId(r.id),
        order_id: OrderId(r.order_id),
        kind: if r.cid_kind == "subscription" {
            CidKind::Subscription
        } else {
            CidKind::OneTime
        },
        token: r.token,
        partner_order_id: r.partner_order_id,
        partner_user_id: r.partner_user_id,
        amount: Money(r.amount),
        canceled_amount: Money(r.canceled_amount),
        status: r.status,
        tid: r.tid,
        pg_token: r.pg_token,
        order_status: r.order_status,
        order_created_at: r.order_created_at,
    })
}

// ---- ready --------------------------------------------------------------------------------

/// KakaoPay's item name for the order: the first line's name and how many more there are.
async fn item_summary(conn: &mut PgConnection, order: OrderId) -> Result<(String, u32)> {
    let r = sqlx::query!(
        r#"SELECT (array_agg(item_name ORDER BY id))[1] AS "first!", count(*) AS "lines!",
                  sum(quantity)::bigint AS "units!"
           FROM order_items WHERE order_id = $1"#,
        order.0
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((
        pg::item_name(r.first, r.lines),
        u32::try_from(r.units).unwrap_or(u32::MAX),
    ))
}

/// KakaoPay's `item_name` for `lines` products whose first is `first`: "A 외 2건",
/// within the PG's 100 characters.
/// KakaoPay refused the checkout or the approval: the payment and its order fail with
/// the PG's code (the buyer learns at once). A decline or an expired checkout is the
/// buyer's and the job is done; a rejected request also fails the job for operators.
async fn refused(
    ctx: &Ctx,
    p: &Row,
    from: &[PaymentStatus],
    action: Action,
    e: &GatewayError,
) -> Result<Outcome> {
    tracing::warn!(order_id = p.order_id.0, error = %e, "KakaoPay refused the payment");
    fail_now(ctx, p, from, &e.record_code(), &e.message).await?;
    Ok(match action {
        Action::CustomerFailure => Outcome::Done,
        other => generic_outcome(ctx, other, e),
    })
}

/// What the job does after a failed call whose action the step does not carry out
/// itself (retry, defer, reject).
fn generic_outcome(ctx: &Ctx, action: Action, e: &GatewayError) -> Outcome {
    policy::job_outcome(action, e, ctx.pg_guard.misconfigured_hold())
}

/// Step `payment.ready`: asks KakaoPay for a tid and the buyer's redirect URLs. What a
/// failure does is the policy's ([`Step::Ready`]); retries go on until
/// `ready_give_up_secs` after the order, when the order fails with `pg_unavailable` so
/// the buyer can order again.
pub async fn ready(ctx: &Ctx, id: PaymentId) -> Result<Outcome> {
    let mut conn = ctx.db.acquire().await?;
    let p = load(&mut conn, id).await?;
    if p.status != PaymentStatus::Created || p.order_status != OrderStatus::PendingPayment {
        return Ok(Outcome::Done);
    }
    let (item_name, quantity) = item_summary(&mut conn, p.order_id).await?;
    drop(conn);
    let base = ctx.settings.api.public_url.trim_end_matches('/');
    let url = |action: &str| format!("{base}/api/payments/kakaopay/{action}/{}", p.token);
    let req = ReadyRequest {
        kind: p.kind,
        partner_order_id: p.partner_order_id.clone(),
        partner_user_id: p.partner_user_id.clone(),
        item_name,
        item_code: None,
        quantity: quantity.max(1),
        total_amount: p.amount,
        tax_free_amount: Money::ZERO,
        vat_amount: None,
        approval_url: url("approve"),
        cancel_url: url("cancel"),
        fail_url: url("fail"),
    };
    match ctx.pg_guard.run("ready", ctx.gateway.ready(&req)).await {
        Ok(res) => {
            let now = ctx.clock.now();
            let mut tx = ctx.db.begin().await?;
            let fields = Fields {
                tid: Some(&res.tid),
                redirect_pc_url: res.next_redirect_pc_url.as_deref(),
                redirect_mobile_url: res.next_redirect_mobile_url.as_deref(),
                redirect_app_url: res.next_redirect_app_url.as_deref(),
                response_digest: pg::digest(&res),
                ..Fields::default()
            };
            let mv = Move {
                from: &[PaymentStatus::Created],
                to: PaymentStatus::Ready,
                fields,
                order: Some((
                    &[OrderStatus::PendingPayment],
                    OrderStatus::PaymentReady,
                    None,
                )),
            };
            if advance(&mut tx, p.order_id, id, mv, now).await? == Advanced::Moved(None) {
                // Canceled while ready was in flight: the tid is never used.
                let failure = ("customer_canceled", "canceled by the customer");
                abandon(&mut tx, p.order_id, id, failure, now).await?;
            }
            tx.commit().await?;
            tracing::info!(order_id = p.order_id.0, payment_id = id.0, "payment ready");
            Ok(Outcome::Done)
        }
        Err(e) => match policy::decide(Step::Ready, &e) {
            action @ (Action::CustomerFailure | Action::Reject) => {
                refused(ctx, &p, &[PaymentStatus::Created], action, &e).await
            }
            Action::Retry => {
                let age = ctx.clock.now() - p.order_created_at;
                // Past chrono's range the limit is never reached.
                let limit = chrono::Duration::from_std(ctx.settings.payments.ready_give_up_secs)
                    .unwrap_or(chrono::Duration::MAX);
                if age < limit {
                    return Ok(generic_outcome(ctx, Action::Retry, &e));
                }
                tracing::error!(order_id = p.order_id.0, error = %e, "KakaoPay unavailable past the give-up time");
                fail_now(
                    ctx,
                    &p,
                    &[PaymentStatus::Created],
                    "pg_unavailable",
                    "the payment service could not be reached; please order again",
                )
                .await?;
                Ok(Outcome::Done)
            }
            other => Ok(generic_outcome(ctx, other, &e)),
        },
    }
}

// ---- redirects ----------------------------------------------------------------------------

pub use crate::pg::RedirectAction;

/// What a redirect did, for the storefront's result page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RedirectOutcome {
    pub order_id: OrderId,
    /// The order's status after the redirect (`approving`, `canceled`, `payment_failed`, or
    /// whatever it already was when the redirect was a replay).
    pub status: OrderStatus,
    /// False when the redirect changed nothing (replayed, or the payment had moved on).
    pub applied: bool,
}

/// Records the buyer's return from KakaoPay. Only a payment waiting for the buyer
/// (`ready`) changes; a replay or a late redirect changes nothing, and an unknown token is
/// `NotFound`.
pub async fn redirect(
    ctx: &Ctx,
    token: &str,
    action: RedirectAction,
    pg_token: Option<&str>,
) -> Result<RedirectOutcome> {
    let pg_token = action.check(token, pg_token)?;
    let order = sqlx::query_scalar!("SELECT order_id FROM payments WHERE token = $1", token)
        .fetch_optional(ctx.db.pool())
        .await?
        .ok_or(Error::NotFound)?;
    let mut tx = ctx.db.begin().await?;
    rows::lock(&mut tx, OrderId(order)).await?;
    let row = sqlx::query!(
        r#"SELECT p.id, p.status AS "status: PaymentStatus", p.order_id,
                  o.status AS "order_status: OrderStatus"
           FROM payments p JOIN orders o ON o.id = p.order_id
           WHERE p.token = $1 FOR UPDATE OF p"#,
        token
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    let id = PaymentId(row.id);
    let order_id = OrderId(row.order_id);
    if row.status != PaymentStatus::Ready || row.order_status != OrderStatus::PaymentReady {
        return Ok(RedirectOutcome {
            order_id,
            status: row.order_status,
            applied: false,
        });
    }
    let now = ctx.clock.now();
    let status = match action {
        RedirectAction::Approve => {
            let mv = Move {
                from: &[PaymentStatus::Ready],
                to: PaymentStatus::Approving,
                fields: Fields {
                    pg_token,
                    ..Fields::default()
                },
                order: Some((&[OrderStatus::PaymentReady], OrderStatus::Approving, None)),
            };
            advance_locked(&mut tx, order_id, id, mv, now).await?;
            jobs::enqueue(
                &mut tx,
                &tasks::PaymentApprove {
                    payment_id: id.0,
                    round: 0,
                },
                now,
            )
            .await?;
            OrderStatus::Approving
        }
        RedirectAction::Cancel => {
            let mv = Move {
                from: &[PaymentStatus::Ready],
                to: PaymentStatus::Abandoned,
                fields: Fields {
                    failure: Some(("buyer_canceled", "the buyer canceled at KakaoPay")),
                    ..Fields::default()
                },
                order: Some((
                    &[OrderStatus::PaymentReady],
                    OrderStatus::Canceled,
                    Some("order.canceled"),
                )),
            };
            advance_locked(&mut tx, order_id, id, mv, now).await?;
            OrderStatus::Canceled
        }
        RedirectAction::Fail => {
            let failure = (
                "buyer_payment_failed",
                "KakaoPay reported that the payment failed",
            );
            fail(&mut tx, order_id, id, &[PaymentStatus::Ready], failure, now).await?;
            OrderStatus::PaymentFailed
        }
    };
    tx.commit().await?;
    tracing::info!(order_id = order_id.0, action = ?action, "PG redirect recorded");
    Ok(RedirectOutcome {
        order_id,
        status,
        applied: true,
    })
}

// ---- approve ------------------------------------------------------------------------------

/// Step `payment.approve`: approves with the buyer's `pg_token`. A decisive answer is
/// applied; what a failure does is the policy's ([`Step::Approve`]): an ambiguous one
/// (timeout after sending, 5xx, lost response, "already approved") goes to reconciliation
/// and is never sent again blindly.
pub async fn approve(ctx: &Ctx, id: PaymentId) -> Result<Outcome> {
    let p = load(&mut *ctx.db.acquire().await?, id).await?;
    if p.status != PaymentStatus::Approving {
        return Ok(Outcome::Done);
    }
    let (Some(tid), Some(pg_token)) = (p.tid.clone(), p.pg_token.clone()) else {
        return Err(Error::Internal(format!(
            "approving payment {} has no tid or pg_token",
            id.0
        )));
    };
    let req = ApproveRequest {
        kind: p.kind,
        tid,
        partner_order_id: p.partner_order_id.clone(),
        partner_user_id: p.partner_user_id.clone(),
        pg_token,
        expected_total: p.amount,
    };
    match ctx.pg_guard.run("approve", ctx.gateway.approve(&req)).await {
        Ok(res) => {
            let mut tx = ctx.db.begin().await?;
            mark_paid(ctx, &mut tx, &p, &Approval::from(&res), pg::digest(&res)).await?;
            tx.commit().await?;
            Ok(Outcome::Done)
        }
        Err(e) => match policy::decide(Step::Approve, &e) {
            action @ (Action::CustomerFailure | Action::Reject) => {
                refused(ctx, &p, &[PaymentStatus::Approving], action, &e).await
            }
            Action::Reconcile => {
                tracing::warn!(order_id = p.order_id.0, error = %e, "approval outcome unknown; reconciling");
                reconcile_later(ctx, id).await?;
                Ok(Outcome::Done)
            }
            other => Ok(generic_outcome(ctx, other, &e)),
        },
    }
}

/// What an approval (or an inquiry that found one) tells us.
struct Approval {
    aid: Option<String>,
    sid: Option<String>,
}

impl From<&ApproveResponse> for Approval {
    fn from(r: &ApproveResponse) -> Self {
        Approval {
            aid: Some(r.aid.clone()),
            sid: r.sid.clone(),
        }
    }
}

/// `approving` → `approved` / order `paid`, with `order.paid` and the follow-up jobs; a
/// subscription order's SID creates the subscription in the same transaction.
async fn mark_paid<W: Wakes>(
    ctx: &Ctx,
    conn: &mut W,
    p: &Row,
    approval: &Approval,
    response_digest: Option<String>,
) -> Result<()> {
    let now = ctx.clock.now();
    let mv = Move {
        from: &[PaymentStatus::Approving],
        to: PaymentStatus::Approved,
        fields: Fields {
            aid: approval.aid.as_deref(),
            sid: approval.sid.as_deref(),
            response_digest,
            ..Fields::default()
        },
        order: Some((
            &[OrderStatus::Approving],
            OrderStatus::Paid,
            Some("order.paid"),
        )),
    };
    match advance(conn, p.order_id, p.id, mv, now).await? {
        Advanced::Lost => return Ok(()),
        Advanced::Moved(Some(_)) => {}
        Advanced::Moved(None) => {
            return Err(Error::Internal(format!(
                "order {} of an approving payment was not approving",
                p.order_id.0
            )))
        }
    }
    if p.kind == CidKind::Subscription {
        match &approval.sid {
            Some(sid) => {
                let policy = crate::subscriptions::policy(ctx)?;
                crate::subscriptions::create_from_order(conn.conn(), &policy, p.order_id, sid, now)
                    .await?;
            }
            // Paid, but KakaoPay issued no SID: the order ships; recurring billing needs
            // an operator (and a new subscription order from the customer).
            None => tracing::error!(
                order_id = p.order_id.0,
                "subscription payment approved without a SID; no subscription created"
            ),
        }
    }
    let order_id = p.order_id.0;
    crate::store::orders::count_sales(conn.conn(), p.order_id, now).await?;
    jobs::enqueue(conn, &tasks::OrderClearCart { order_id }, now).await?;
    metrics::counter!("payments_total", "outcome" => "paid").increment(1);
    tracing::info!(
        order_id,
        payment_id = p.id.0,
        amount = p.amount.0,
        "order paid"
    );
    Ok(())
}

/// The payment failed (declined, refused, abandoned at the PG): `failed` / order
/// `payment_failed` with the reason, and `order.payment_failed`.
async fn fail<W: Wakes>(
    conn: &mut W,
    order_id: OrderId,
    id: PaymentId,
    from: &[PaymentStatus],
    failure: (&str, &str),
    now: DateTime<Utc>,
) -> Result<()> {
    let mv = Move {
        from,
        to: PaymentStatus::Failed,
        fields: Fields {
            failure: Some(failure),
            ..Fields::default()
        },
        order: Some((
            &[
                OrderStatus::PendingPayment,
                OrderStatus::PaymentReady,
                OrderStatus::Approving,
            ],
            OrderStatus::PaymentFailed,
            Some("order.payment_failed"),
        )),
    };
    if advance(conn, order_id, id, mv, now).await? != Advanced::Lost {
        metrics::counter!("payments_total", "outcome" => "failed").increment(1);
        tracing::info!(
            order_id = order_id.0,
            code = failure.0,
            message = failure.1,
            "payment failed"
        );
    }
    Ok(())
}

/// [`fail`] in a transaction of its own.
async fn fail_now(
    ctx: &Ctx,
    p: &Row,
    from: &[PaymentStatus],
    code: &str,
    message: &str,
) -> Result<()> {
    let mut tx = ctx.db.begin().await?;
    fail(
        &mut tx,
        p.order_id,
        p.id,
        from,
        (code, message),
        ctx.clock.now(),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

// ---- refund -------------------------------------------------------------------------------

/// Step `payment.cancel`: refunds what is left to refund, guarded by
/// `cancel_available_amount` so a repeat can never refund twice. What a failure does is
/// the policy's ([`Step::Cancel`]).
pub async fn refund(ctx: &Ctx, id: PaymentId) -> Result<Outcome> {
    let p = load(&mut *ctx.db.acquire().await?, id).await?;
    if p.status != PaymentStatus::RefundRequested {
        return Ok(Outcome::Done);
    }
    let Some(tid) = p.tid.clone() else {
        return Err(Error::Internal(format!("paid payment {} has no tid", id.0)));
    };
    let left = Money(p.amount.0 - p.canceled_amount.0);
    if left.0 <= 0 {
        let mut tx = ctx.db.begin().await?;
        mark_refunded(&mut tx, &p, ctx.clock.now()).await?;
        tx.commit().await?;
        return Ok(Outcome::Done);
    }
    let req = CancelRequest {
        kind: p.kind,
        tid,
        cancel_amount: left,
        cancel_tax_free_amount: Money::ZERO,
        cancel_vat_amount: None,
        cancel_available_amount: Some(left),
    };
    match ctx.pg_guard.run("cancel", ctx.gateway.cancel(&req)).await {
        Ok(res) => {
            let refunded = res.canceled_amount.map(|a| a.total).unwrap_or(left);
            if refunded != p.amount {
                // A partial refund would leave money with us the customer asked back.
                return Ok(Outcome::fail(format!(
                    "refund of payment {} left {} of {} refunded; needs an operator",
                    id.0, refunded, p.amount
                )));
            }
            let mut tx = ctx.db.begin().await?;
            mark_refunded(&mut tx, &p, ctx.clock.now()).await?;
            tx.commit().await?;
            Ok(Outcome::Done)
        }
        Err(e) => match policy::decide(Step::Cancel, &e) {
            Action::Reconcile => {
                tracing::warn!(order_id = p.order_id.0, error = %e, "refund outcome unknown; reconciling");
                reconcile_later(ctx, id).await?;
                Ok(Outcome::Done)
            }
            Action::Reject => {
                // Money is still with us and the PG refuses to return it: an operator's
                // call. The order stays `refund_requested` with the reason recorded.
                let mut tx = ctx.db.begin().await?;
                sqlx::query!(
                    "UPDATE payments SET failure_code = $2, failure_message = $3 WHERE id = $1",
                    id.0,
                    e.record_code(),
                    e.message
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                metrics::counter!("payments_total", "outcome" => "refund_refused").increment(1);
                Ok(generic_outcome(ctx, Action::Reject, &e))
            }
            other => Ok(generic_outcome(ctx, other, &e)),
        },
    }
}

async fn mark_refunded<W: Wakes>(conn: &mut W, p: &Row, now: DateTime<Utc>) -> Result<()> {
    let mv = Move {
        from: &[PaymentStatus::RefundRequested],
        to: PaymentStatus::Refunded,
        fields: Fields::default(),
        order: Some((
            &[OrderStatus::RefundRequested],
            OrderStatus::Refunded,
            Some("order.refunded"),
        )),
    };
    if advance(conn, p.order_id, p.id, mv, now).await? == Advanced::Lost {
        return Ok(());
    }
    metrics::counter!("payments_total", "outcome" => "refunded").increment(1);
    tracing::info!(
        order_id = p.order_id.0,
        amount = p.amount.0,
        "order refunded"
    );
    Ok(())
}

// ---- reconcile ----------------------------------------------------------------------------

/// [`schedule_reconcile`] in a transaction of its own.
async fn reconcile_later(ctx: &Ctx, id: PaymentId) -> Result<()> {
    let mut tx = ctx.db.begin().await?;
    schedule_reconcile(ctx, &mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

/// Queues an inquiry about the payment after a growing, jittered delay.
async fn schedule_reconcile(ctx: &Ctx, conn: &mut PgConnection, id: PaymentId) -> Result<()> {
    let round = sqlx::query_scalar!(
        "UPDATE payments SET reconcile_attempts = reconcile_attempts + 1 WHERE id = $1
         RETURNING reconcile_attempts",
        id.0
    )
    .fetch_one(&mut *conn)
    .await?;
    let now = ctx.clock.now();
    let at = policy::inquiry_at(&ctx.settings.payments, round, now, None);
    jobs::enqueue_at(
        conn,
        &tasks::PaymentReconcile {
            payment_id: id.0,
            round,
        },
        at,
        now,
    )
    .await?;
    metrics::counter!("payments_reconciliations_total").increment(1);
    Ok(())
}

/// Step `payment.reconcile`: asks KakaoPay what became of the payment's tid and applies
/// it — approved → paid; still waiting for approval → approve again (a tid approves at
/// most once, so this cannot charge twice); failed → payment_failed; for a refund:
/// canceled → refunded, still paid → cancel again. What a failed inquiry does is the
/// policy's ([`Step::Inquiry`]); a disagreement about the amount or the state is an
/// operator's (the job fails with it).
pub async fn reconcile(ctx: &Ctx, id: PaymentId) -> Result<Outcome> {
    let p = load(&mut *ctx.db.acquire().await?, id).await?;
    if !matches!(
        p.status,
        PaymentStatus::Approving | PaymentStatus::RefundRequested
    ) {
        return Ok(Outcome::Done);
    }
    let Some(tid) = p.tid.clone() else {
        return Ok(Outcome::fail(format!(
            "payment {} has no tid to reconcile",
            id.0
        )));
    };
    let res = match ctx
        .pg_guard
        .run("order", ctx.gateway.order(p.kind, &tid))
        .await
    {
        Ok(res) => res,
        Err(e) => {
            let action = policy::decide(Step::Inquiry, &e);
            return Ok(generic_outcome(ctx, action, &e));
        }
    };
    if let Some(total) = res.amount.map(|a| a.total) {
        if total != p.amount {
            return Ok(Outcome::fail(format!(
                "KakaoPay reports {total} for payment {} of {}; needs an operator",
                id.0, p.amount
            )));
        }
    }
    let now = ctx.clock.now();
    let status = res.status.clone();
    tracing::info!(order_id = p.order_id.0, payment_id = id.0, pg_status = %status, "reconciled");
    let mut tx = ctx.db.begin().await?;
    match p.status {
        PaymentStatus::Approving if status.is_approved() => {
            let aid = res
                .payment_action_details
                .iter()
                .rev()
                .find(|a| a.payment_action_type == "PAYMENT")
                .map(|a| a.aid.clone());
            let approval = Approval {
                aid,
                sid: res.sid.clone(),
            };
            mark_paid(ctx, &mut tx, &p, &approval, pg::digest(&res)).await?;
        }
        PaymentStatus::Approving if status.is_pending() => {
            // Our approve never landed: send it again (guarded by KakaoPay's −702).
            let round = sqlx::query_scalar!(
                "SELECT reconcile_attempts FROM payments WHERE id = $1",
                id.0
            )
            .fetch_one(&mut *tx)
            .await?;
            jobs::enqueue(
                &mut tx,
                &tasks::PaymentApprove {
                    payment_id: id.0,
                    round,
                },
                now,
            )
            .await?;
        }
        PaymentStatus::Approving if status.is_failed() => {
            let failure = (
                status.as_str(),
                "KakaoPay reports the payment did not complete",
            );
            fail(
                &mut tx,
                p.order_id,
                p.id,
                &[PaymentStatus::Approving],
                failure,
                now,
            )
            .await?;
        }
        PaymentStatus::RefundRequested if status == crate::pg::OrderStatus::CancelPayment => {
            mark_refunded(&mut tx, &p, now).await?;
        }
        PaymentStatus::RefundRequested
            if status.is_approved() || status == crate::pg::OrderStatus::PartCancelPayment =>
        {
            let round = sqlx::query_scalar!(
                "SELECT reconcile_attempts FROM payments WHERE id = $1",
                id.0
            )
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query!(
                "UPDATE payments SET canceled_amount = $2 WHERE id = $1",
                id.0,
                res.canceled_amount.map(|a| a.total.0).unwrap_or(0)
            )
            .execute(&mut *tx)
            .await?;
            jobs::enqueue(
                &mut tx,
                &tasks::PaymentCancel {
                    payment_id: id.0,
                    round,
                },
                now,
            )
            .await?;
        }
        _ => {
            return Ok(Outcome::fail(format!(
                "payment {} is {} here and {status} at KakaoPay; needs an operator",
                id.0,
                p.status.as_str()
            )));
        }
    }
    tx.commit().await?;
    Ok(Outcome::Done)
}
