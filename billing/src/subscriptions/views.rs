//! What customers and operators see of a subscription: the views (lines at today's
//! prices, the upcoming charges, the attempts, the operator's attention flag) and the
//! reads that build them (`get`, `list`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::{policy, AttemptStatus, Next, SubscriptionStatus};
use crate::error::{Error, Result};
use crate::ids::{OrderId, SubscriptionId, UserId};
use crate::money::Money;
use crate::orders::Receiver;
use crate::page::{Page, PageRequest};
use crate::{store, Ctx};

/// One product of a subscription, at today's price.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionLine {
    pub item_id: i64,
    pub item_name: String,
    pub quantity: i32,
    /// Today's price (what the next charge will use).
    pub unit_price: Money,
    /// False if the item is no longer sold: the next charge leaves it out.
    pub available: bool,
}

/// One charge attempt, as the customer and operators see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    pub cycle: i32,
    pub attempt: i32,
    pub status: AttemptStatus,
    pub amount: Money,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub order_id: Option<OrderId>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub status: SubscriptionStatus,
    pub period_days: i32,
    /// The last cycle charged (cycle 1 is the first order).
    pub cycle: i32,
    pub lines: Vec<SubscriptionLine>,
    /// The next charge at today's prices.
    pub next_amount: Money,
    pub next_charge_at: Option<DateTime<Utc>>,
    /// The next scheduled charges (the first is `next_charge_at`), empty unless billable.
    pub upcoming: Vec<DateTime<Utc>>,
    pub anchor_at: DateTime<Utc>,
    pub last_charged_at: Option<DateTime<Utc>>,
    pub first_order_id: Option<OrderId>,
    pub paused_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<String>,
    pub canceled_at: Option<DateTime<Utc>>,
    /// Where the next cycle ships: the receiver the customer set on the subscription, or
    /// (until they do) the first order's. Absent only for a subscription with neither.
    pub receiver: Option<Receiver>,
    /// Set when KakaoPay rejected this cycle's charge request itself (not a decline):
    /// the cycle stays due, no retry is sent, and an operator must act.
    pub needs_attention: Option<Attention>,
    /// Where the dunning of the overdue cycle stands (only while `past_due`).
    pub dunning: Option<DunningState>,
    /// How the customer can pay and bring it back (a `past_due` or canceled subscription):
    /// `POST /api/subscriptions/{id}/checkout`, and the newest checkout if there is one.
    pub recovery: Option<RecoveryState>,
    /// Charge attempts, newest first (only on a single subscription's view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A `past_due` subscription's dunning: what the customer (or the store's message) needs
/// to know — how often the overdue cycle was declined, how many retries are left before
/// the subscription is canceled, when the next one runs, and KakaoPay's last reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DunningState {
    pub declines: i32,
    pub retries_left: i32,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub last_failure_code: Option<String>,
    pub last_failure_message: Option<String>,
}

/// A subscription the customer can pay to bring back: a recovery of the overdue cycle
/// (`past_due`, or canceled by dunning) or a resubscribe (canceled otherwise).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecoveryState {
    pub kind: super::checkout::CheckoutKind,
    /// What the checkout would charge (the products on sale, at today's prices).
    pub amount: Money,
    /// The newest checkout (any state), so the customer sees one in progress or why the
    /// last one ended.
    pub checkout: Option<super::checkout::Checkout>,
}

/// Why a subscription waits for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Attention {
    /// KakaoPay's code (e.g. `-701`).
    pub code: String,
    pub message: String,
    pub since: DateTime<Utc>,
}

/// `GET /api/subscriptions/{id}` (the customer's own when `user` is given).
pub async fn get(ctx: &Ctx, user: Option<UserId>, id: SubscriptionId) -> Result<Subscription> {
    let mut conn = ctx.db.acquire().await?;
    let mut found = load(ctx, &mut conn, user, &[id.0]).await?;
    let mut s = found.pop().ok_or(Error::NotFound)?;
    let attempts = sqlx::query_as!(
        AttemptView,
        r#"SELECT cycle, attempt, status AS "status: AttemptStatus", amount AS "amount: Money",
                  started_at, finished_at, order_id AS "order_id: OrderId", failure_code,
                  failure_message
           FROM charge_attempts WHERE subscription_id = $1
           ORDER BY cycle DESC, attempt DESC"#,
        id.0
    )
    .fetch_all(&mut *conn)
    .await?;
    s.attempts = Some(attempts);
    Ok(s)
}

/// `GET /api/subscriptions`: the customer's subscriptions, newest first.
pub async fn list(ctx: &Ctx, user: UserId, page: PageRequest) -> Result<Page<Subscription>> {
    let page = page.validate()?;
    let mut conn = ctx.db.acquire().await?;
    let total = sqlx::query_scalar!(
        "SELECT count(*) AS \"n!\" FROM subscriptions WHERE user_id = $1",
        user.0
    )
    .fetch_one(&mut *conn)
    .await?;
    let ids = sqlx::query_scalar!(
        "SELECT id FROM subscriptions WHERE user_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
        user.0,
        page.limit(),
        page.offset()
    )
    .fetch_all(&mut *conn)
    .await?;
    let items = load(ctx, &mut conn, Some(user), &ids).await?;
    Ok(Page::new(items, page, total))
}

/// The views of the subscriptions among `ids` (of `user` only, when given), newest first,
/// without their attempts.
pub(super) async fn load(
    ctx: &Ctx,
    conn: &mut PgConnection,
    user: Option<UserId>,
    ids: &[i64],
) -> Result<Vec<Subscription>> {
    let policy = policy(ctx)?;
    let rows = store::subscriptions::read(conn, user, ids).await?;
    let lines = sqlx::query!(
        r#"SELECT si.subscription_id, si.item_id, i.title, si.quantity, i.real_price AS "price!",
                  (i.selling AND i.deleted_at IS NULL) AS "available!"
           FROM subscription_items si JOIN items i ON i.id = si.item_id
           WHERE si.subscription_id = ANY($1) ORDER BY si.subscription_id, si.item_id"#,
        ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut by_sub: std::collections::HashMap<i64, Vec<SubscriptionLine>> = Default::default();
    for l in lines {
        by_sub
            .entry(l.subscription_id)
            .or_default()
            .push(SubscriptionLine {
                item_id: l.item_id,
                item_name: l.title,
                quantity: l.quantity,
                unit_price: Money(l.price),
                available: l.available,
            });
    }
    // The overdue cycle's declines, the last first, of the past-due ones among `ids`.
    let declines = sqlx::query!(
        r#"SELECT DISTINCT ON (a.subscription_id) a.subscription_id,
                  count(*) OVER (PARTITION BY a.subscription_id) AS "declines!",
                  a.failure_code, a.failure_message
           FROM charge_attempts a JOIN subscriptions s ON s.id = a.subscription_id
           WHERE s.id = ANY($1) AND s.status = 'past_due'
             AND a.cycle = s.current_cycle + 1 AND a.status = 'declined'
           ORDER BY a.subscription_id, a.attempt DESC"#,
        ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut dunning: std::collections::HashMap<i64, (i64, Option<String>, Option<String>)> =
        declines
            .into_iter()
            .map(|d| {
                (
                    d.subscription_id,
                    (d.declines, d.failure_code, d.failure_message),
                )
            })
            .collect();
    let max_declines = i64::try_from(policy.max_declines()).unwrap_or(i64::MAX);
    let payable: Vec<i64> = rows
        .iter()
        .filter(|r| super::checkout::kind_for(r.status, r.cancel_reason.as_deref()).is_some())
        .map(|r| r.id)
        .collect();
    let mut checkouts = if payable.is_empty() {
        Default::default()
    } else {
        super::checkout::latest(ctx, conn, &payable).await?
    };
    Ok(rows
        .into_iter()
        .map(|r| {
            let lines = by_sub.remove(&r.id).unwrap_or_default();
            let dunning = (r.status == SubscriptionStatus::PastDue).then(|| {
                let (n, code, message) = dunning.remove(&r.id).unwrap_or_default();
                DunningState {
                    declines: i32::try_from(n).unwrap_or(i32::MAX),
                    retries_left: i32::try_from((max_declines - n).max(0)).unwrap_or(0),
                    next_retry_at: r.next_charge_at,
                    last_failure_code: code,
                    last_failure_message: message,
                }
            });
            let next_amount = Money(
                lines
                    .iter()
                    .filter(|l| l.available)
                    .map(|l| l.unit_price.0 * i64::from(l.quantity))
                    .sum(),
            );
            let recovery =
                super::checkout::kind_for(r.status, r.cancel_reason.as_deref()).map(|kind| {
                    RecoveryState {
                        kind,
                        amount: next_amount,
                        checkout: checkouts.remove(&r.id),
                    }
                });
            let upcoming = match (r.status.is_billable(), r.next_charge_at) {
                (true, Some(at)) => policy.upcoming(
                    Next {
                        due_on: r.due_on.unwrap_or_else(|| policy.local_date(at)),
                        at,
                    },
                    r.period_days,
                    ctx.settings.subscriptions.upcoming,
                ),
                _ => Vec::new(),
            };
            Subscription {
                id: SubscriptionId(r.id),
                status: r.status,
                period_days: r.period_days,
                cycle: r.current_cycle,
                lines,
                next_amount,
                next_charge_at: r.next_charge_at.filter(|_| r.status.is_billable()),
                upcoming,
                anchor_at: r.anchor_at,
                last_charged_at: r.last_charged_at,
                first_order_id: r.first_order_id.map(OrderId),
                paused_at: r.paused_at,
                cancel_reason: r.cancel_reason,
                canceled_at: r.canceled_at,
                receiver: match (
                    r.receiver_name,
                    r.receiver_phone,
                    r.receiver_city,
                    r.receiver_address,
                ) {
                    (Some(name), Some(phone), Some(city), Some(detail_address)) => Some(Receiver {
                        name,
                        phone,
                        city,
                        detail_address,
                    }),
                    _ => None,
                },
                dunning,
                recovery,
                needs_attention: match (r.attention_code, r.attention_since) {
                    (Some(code), Some(since)) => Some(Attention {
                        code,
                        message: r.attention_message.unwrap_or_default(),
                        since,
                    }),
                    _ => None,
                },
                attempts: None,
                created_at: r.created_at,
                updated_at: r.updated_at,
            }
        })
        .collect())
}
