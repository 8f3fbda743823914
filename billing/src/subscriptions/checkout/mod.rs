//! Recovery and resubscribe checkouts (DESIGN §5 "Customers can recover"): a fresh KakaoPay
//! subscription payment that pays a subscription's first unpaid cycle, brings a new SID and
//! returns the subscription to `active` — started by its owner, or without a login through
//! a recovery link (`links`); the worker steps ready, approve, reconcile and the old SID's
//! inactivation (`steps`).
//!
//! The approval is a charge attempt of the cycle like a dunning retry: it is recorded
//! (`in_flight`, with the checkout's id) under the subscription's lock before KakaoPay is
//! called, only when no other attempt is open, and only while the cycle is still unpaid.
//! A dunning retry meanwhile finds the open attempt and waits; a checkout whose cycle was
//! paid first (by a retry or another checkout) is `superseded` and never approved. So the
//! charge path's guarantee — at most one successful attempt per cycle — covers both.

mod links;
mod steps;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::{lock, Row, SubscriptionStatus};
use crate::error::{Error, Result};
use crate::ids::{CheckoutId, OrderId, SubscriptionId, UserId};
use crate::money::Money;
use crate::{jobs, tasks, Ctx};

pub(crate) use links::issue as issue_link;
pub use links::{link, start_with_link, RecoveryLink};
pub(crate) use steps::record_paid;
pub use steps::{approve, ready, reconcile, retire_sid};

/// Why a checkout is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum CheckoutKind {
    /// The subscription is `past_due`, or dunning canceled it: the checkout pays the
    /// overdue cycle.
    Recovery,
    /// The customer canceled it (or it ended without a payment failure): the checkout
    /// restarts it.
    Resubscribe,
}

/// A checkout's state (see the migration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum CheckoutStatus {
    Created,
    Ready,
    Approving,
    Succeeded,
    Failed,
    Abandoned,
    Superseded,
}

impl CheckoutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recovery => "recovery",
            Self::Resubscribe => "resubscribe",
        }
    }
}

impl CheckoutStatus {
    /// Whether the checkout may still change by itself (a worker or the buyer).
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Created | Self::Approving)
    }
}

/// The cancel reasons dunning sets: a checkout of such a subscription is a recovery.
const DUNNING_REASONS: &[&str] = &["payment_failed", "hard_decline", "sid_unusable"];

/// A checkout as its buyer (and the subscription's owner) sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Checkout {
    pub id: CheckoutId,
    pub subscription_id: SubscriptionId,
    pub kind: CheckoutKind,
    pub status: CheckoutStatus,
    /// The cycle it pays.
    pub cycle: i32,
    pub amount: Money,
    /// The period the subscription continues with (a resubscribe may change it).
    pub period_days: i32,
    /// KakaoPay's payment page for the buyer, once `ready`.
    pub redirect_url: Option<String>,
    pub redirect_mobile_url: Option<String>,
    pub redirect_app_url: Option<String>,
    /// Where the buyer (logged in or not) follows the checkout: `GET` it, with `?wait=N`
    /// to wait up to N s while it is `created` or `approving`.
    pub status_url: String,
    /// The cycle's order, once paid.
    pub order_id: Option<OrderId>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// `POST /api/subscriptions/{id}/checkout`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartCheckout {
    /// A resubscribe may change the period (7–365 days); a recovery keeps it.
    pub period_days: Option<i32>,
}

/// A row of `subscription_checkouts` as the steps and the views need it.
#[derive(Debug, Clone)]
pub(crate) struct CheckoutRow {
    pub id: CheckoutId,
    pub subscription_id: SubscriptionId,
    pub kind: CheckoutKind,
    pub status: CheckoutStatus,
    pub cycle: i32,
    pub token: String,
    pub partner_order_id: String,
    pub partner_user_id: String,
    pub amount: Money,
    pub lines: serde_json::Value,
    pub period_days: Option<i32>,
    pub tid: Option<String>,
    pub redirect_pc_url: Option<String>,
    pub redirect_mobile_url: Option<String>,
    pub redirect_app_url: Option<String>,
    pub pg_token: Option<String>,
    pub order_id: Option<i64>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub reconcile_rounds: i32,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The subscription's period now (what `period_days` keeps when unset).
    pub sub_period_days: i32,
}

impl CheckoutRow {
    fn view(&self, ctx: &Ctx) -> Checkout {
        Checkout {
            id: self.id,
            subscription_id: self.subscription_id,
            kind: self.kind,
            status: self.status,
            cycle: self.cycle,
            amount: self.amount,
            period_days: self.period_days.unwrap_or(self.sub_period_days),
            redirect_url: self.redirect_pc_url.clone(),
            redirect_mobile_url: self.redirect_mobile_url.clone(),
            redirect_app_url: self.redirect_app_url.clone(),
            status_url: format!("{}/api/checkouts/{}", public_base(ctx), self.token),
            order_id: self.order_id.map(OrderId),
            failure_code: self.failure_code.clone(),
            failure_message: self.failure_message.clone(),
            created_at: self.created_at,
            finished_at: self.finished_at,
        }
    }
}

fn public_base(ctx: &Ctx) -> &str {
    ctx.settings.api.public_url.trim_end_matches('/')
}

/// What a subscription in `status` (canceled for `cancel_reason`) may be paid through:
/// `None` when it has nothing to pay (active or paused).
pub(crate) fn kind_for(
    status: SubscriptionStatus,
    cancel_reason: Option<&str>,
) -> Option<CheckoutKind> {
    match status {
        SubscriptionStatus::PastDue => Some(CheckoutKind::Recovery),
        SubscriptionStatus::Canceled
            if cancel_reason.is_some_and(|r| DUNNING_REASONS.contains(&r)) =>
        {
            Some(CheckoutKind::Recovery)
        }
        SubscriptionStatus::Canceled => Some(CheckoutKind::Resubscribe),
        SubscriptionStatus::Active | SubscriptionStatus::Paused => None,
    }
}

/// `POST /api/subscriptions/{id}/checkout`: the owner starts a recovery (a `past_due` or
/// dunning-canceled subscription) or a resubscribe (one canceled otherwise). The checkout
/// is `created` and its ready job queued in one transaction; the buyer follows
/// `status_url` to KakaoPay's page.
pub async fn start(
    ctx: &Ctx,
    user: UserId,
    id: SubscriptionId,
    req: StartCheckout,
) -> Result<Checkout> {
    if let Some(p) = req.period_days {
        if !(7..=365).contains(&p) {
            return Err(Error::validation(
                "period_days",
                "must be between 7 and 365",
            ));
        }
    }
    let mut tx = ctx.db.begin().await?;
    let s = lock(&mut tx, id, Some(user))
        .await?
        .ok_or(Error::NotFound)?;
    let row = create(ctx, &mut tx, &s, req.period_days, false).await?;
    tx.commit().await?;
    Ok(row.view(ctx))
}

/// Writes a new checkout of the locked subscription `s` and queues its ready job.
async fn create(
    ctx: &Ctx,
    conn: &mut PgConnection,
    s: &Row,
    period_days: Option<i32>,
    via_link: bool,
) -> Result<CheckoutRow> {
    let reason = sqlx::query_scalar!(
        "SELECT cancel_reason FROM subscriptions WHERE id = $1",
        s.id.0
    )
    .fetch_one(&mut *conn)
    .await?;
    let kind = kind_for(s.status, reason.as_deref()).ok_or(Error::NothingToRecover)?;
    if period_days.is_some() && kind == CheckoutKind::Recovery {
        return Err(Error::validation(
            "period_days",
            "only a resubscribe may change the period; change it after the payment",
        ));
    }
    // A canceled subscription's last charge may still be at KakaoPay (a cancel allows it):
    // wait for its outcome, which may decide what is owed.
    if s.status == SubscriptionStatus::Canceled
        && crate::store::subscriptions::has_open_attempt(conn, s.id).await?
    {
        return Err(Error::ChargeInProgress);
    }
    let now = ctx.clock.now();
    let token = crate::store::orders::new_token();
    let partner_order_id = format!(
        "pv-sco-{}-{}-{:08x}",
        s.id.0,
        s.current_cycle + 1,
        rand::random::<u32>()
    );
    // Priced as a charge of the cycle would be: the products still on sale, today.
    let id = sqlx::query_scalar!(
        r#"WITH t AS (
             SELECT amount, lines FROM subscription_charge_lines WHERE subscription_id = $1
           )
           INSERT INTO subscription_checkouts (subscription_id, kind, cycle, token,
                                               partner_order_id, partner_user_id, amount,
                                               lines, period_days, via_link, created_at)
           SELECT $1, $2, $3, $4, $5, $6, t.amount, t.lines, $7, $8, $9
           FROM t WHERE t.amount > 0
           RETURNING id"#,
        s.id.0,
        kind as CheckoutKind,
        s.current_cycle + 1,
        token,
        partner_order_id,
        super::charge::partner_user_id(s),
        period_days,
        via_link,
        now,
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::ItemUnavailable)?;
    jobs::enqueue(conn, &tasks::CheckoutReady { checkout_id: id }, now).await?;
    metrics::counter!("subscription_checkouts_total", "kind" => match kind {
        CheckoutKind::Recovery => "recovery",
        CheckoutKind::Resubscribe => "resubscribe",
    })
    .increment(1);
    tracing::info!(
        subscription_id = s.id.0,
        checkout_id = id,
        ?kind,
        via_link,
        "subscription checkout started"
    );
    load(conn, CheckoutId(id))
        .await?
        .ok_or_else(|| Error::Internal(format!("checkout {id} not written")))
}

/// `GET /api/checkouts/{token}`: the checkout its token names (the token is the buyer's
/// key, as a payment's is). With `wait`, waits up to that long while it is `created` or
/// `approving` for it to move on.
pub async fn by_token(
    ctx: &Ctx,
    token: &str,
    wait: Option<std::time::Duration>,
) -> Result<Checkout> {
    if !crate::validate::plausible_token(token) {
        return Err(Error::NotFound);
    }
    let deadline = wait.map(|w| std::time::Instant::now() + w);
    loop {
        let row = read(ctx, token).await?.ok_or(Error::NotFound)?;
        let waiting = deadline.is_some_and(|d| std::time::Instant::now() < d);
        if !row.status.is_transient() || !waiting {
            return Ok(row.view(ctx));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A checkout read without any lock (the views).
async fn read(ctx: &Ctx, token: &str) -> Result<Option<CheckoutRow>> {
    let mut conn = ctx.db.acquire().await?;
    let id = sqlx::query_scalar!(
        "SELECT id FROM subscription_checkouts WHERE token = $1",
        token
    )
    .fetch_optional(&mut *conn)
    .await?;
    match id {
        Some(id) => load(&mut conn, CheckoutId(id)).await,
        None => Ok(None),
    }
}

/// The checkout's row (not locked: the steps change it by compare-and-set).
pub(crate) async fn load(conn: &mut PgConnection, id: CheckoutId) -> Result<Option<CheckoutRow>> {
    let r = sqlx::query!(
        r#"SELECT c.id, c.subscription_id, c.kind AS "kind: CheckoutKind",
                  c.status AS "status: CheckoutStatus", c.cycle, c.token, c.partner_order_id,
                  c.partner_user_id, c.amount, c.lines, c.period_days, c.tid, c.redirect_pc_url,
                  c.redirect_mobile_url, c.redirect_app_url, c.pg_token, c.order_id,
                  c.failure_code, c.failure_message, c.reconcile_rounds, c.created_at,
                  c.finished_at, s.period_days AS sub_period_days
           FROM subscription_checkouts c JOIN subscriptions s ON s.id = c.subscription_id
           WHERE c.id = $1"#,
        id.0,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(r.map(|r| CheckoutRow {
        id: CheckoutId(r.id),
        subscription_id: SubscriptionId(r.subscription_id),
        kind: r.kind,
        status: r.status,
        cycle: r.cycle,
        token: r.token,
        partner_order_id: r.partner_order_id,
        partner_user_id: r.partner_user_id,
        amount: Money(r.amount),
        lines: r.lines,
        period_days: r.period_days,
        tid: r.tid,
        redirect_pc_url: r.redirect_pc_url,
        redirect_mobile_url: r.redirect_mobile_url,
        redirect_app_url: r.redirect_app_url,
        pg_token: r.pg_token,
        order_id: r.order_id,
        failure_code: r.failure_code,
        failure_message: r.failure_message,
        reconcile_rounds: r.reconcile_rounds,
        created_at: r.created_at,
        finished_at: r.finished_at,
        sub_period_days: r.sub_period_days,
    }))
}

/// The newest checkout of each of `ids` (for the subscription views).
pub(crate) async fn latest(
    ctx: &Ctx,
    conn: &mut PgConnection,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, Checkout>> {
    let found = sqlx::query_scalar!(
        "SELECT DISTINCT ON (subscription_id) id FROM subscription_checkouts
         WHERE subscription_id = ANY($1) ORDER BY subscription_id, id DESC",
        ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = std::collections::HashMap::new();
    for id in found {
        if let Some(r) = load(conn, CheckoutId(id)).await? {
            out.insert(r.subscription_id.0, r.view(ctx));
        }
    }
    Ok(out)
}

pub use crate::pg::RedirectAction;

/// `GET /api/checkouts/kakaopay/{action}/{token}`: the buyer's return from KakaoPay. Only
/// a `ready` checkout changes (approve → `approving` and the approve job; cancel →
/// `abandoned`; fail → `failed`); a replay or a late return changes nothing; an unknown
/// token is `NotFound`. Returns the checkout and whether it changed.
pub async fn redirect(
    ctx: &Ctx,
    token: &str,
    action: RedirectAction,
    pg_token: Option<&str>,
) -> Result<(Checkout, bool)> {
    let pg_token = action.check(token, pg_token)?;
    let mut tx = ctx.db.begin().await?;
    let id = sqlx::query_scalar!(
        "SELECT id FROM subscription_checkouts WHERE token = $1 FOR UPDATE",
        token
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    let c = load(&mut tx, CheckoutId(id))
        .await?
        .ok_or(Error::NotFound)?;
    if c.status != CheckoutStatus::Ready {
        return Ok((c.view(ctx), false));
    }
    let now = ctx.clock.now();
    match action {
        RedirectAction::Approve => {
            sqlx::query!(
                "UPDATE subscription_checkouts SET status = 'approving', pg_token = $2
                 WHERE id = $1",
                id,
                pg_token
            )
            .execute(&mut *tx)
            .await?;
            jobs::enqueue(
                &mut tx,
                &tasks::CheckoutApprove {
                    checkout_id: id,
                    round: 0,
                },
                now,
            )
            .await?;
        }
        RedirectAction::Cancel => {
            finish(
                &mut tx,
                c.id,
                &[CheckoutStatus::Ready],
                CheckoutStatus::Abandoned,
                Some(("buyer_canceled", "the buyer canceled at KakaoPay")),
                now,
            )
            .await?;
        }
        RedirectAction::Fail => {
            finish(
                &mut tx,
                c.id,
                &[CheckoutStatus::Ready],
                CheckoutStatus::Failed,
                Some((
                    "buyer_payment_failed",
                    "KakaoPay reported that the payment failed",
                )),
                now,
            )
            .await?;
        }
    }
    let c = load(&mut tx, c.id).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    tracing::info!(checkout_id = id, action = ?action, "checkout redirect recorded");
    Ok((c.view(ctx), true))
}

/// Ends a checkout that is in one of `from` with `to` (and why). False if it had moved on.
pub(crate) async fn finish(
    conn: &mut PgConnection,
    id: CheckoutId,
    from: &[CheckoutStatus],
    to: CheckoutStatus,
    failure: Option<(&str, &str)>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let from: Vec<String> = from.iter().map(|s| s.as_str().to_owned()).collect();
    let n = sqlx::query!(
        "UPDATE subscription_checkouts SET status = $3, failure_code = $4, failure_message = $5,
                finished_at = $6
         WHERE id = $1 AND status = ANY($2)",
        id.0,
        &from,
        to as CheckoutStatus,
        failure.map(|f| f.0),
        failure.map(|f| f.1),
        now
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 1 {
        metrics::counter!("subscription_checkouts_finished_total", "status" => status_name(to))
            .increment(1);
    }
    Ok(n == 1)
}

fn status_name(s: CheckoutStatus) -> &'static str {
    match s {
        CheckoutStatus::Created => "created",
        CheckoutStatus::Ready => "ready",
        CheckoutStatus::Approving => "approving",
        CheckoutStatus::Succeeded => "succeeded",
        CheckoutStatus::Failed => "failed",
        CheckoutStatus::Abandoned => "abandoned",
        CheckoutStatus::Superseded => "superseded",
    }
}

impl CheckoutStatus {
    pub fn as_str(self) -> &'static str {
        status_name(self)
    }
}
