//! Subscriptions: creation from a paid subscription order, customers' edits (period,
//! quantity, skip, pause, resume, cancel), the views and the operators' what-if preview.
//! The recurring charge itself lives in [`charge`]; the schedule rules in [`policy`].

pub mod charge;
pub mod policy;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::error::{Error, FieldError, Result};
use crate::ids::{OrderId, SubscriptionId, UserId};
use crate::money::Money;
use crate::page::{Page, PageRequest};
use crate::{jobs, outbox, tasks, Ctx};

pub use policy::{Next, Outcome, Policy, TimelineEvent};

/// DESIGN §2's subscription states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Active,
    Paused,
    PastDue,
    Canceled,
}

impl SubscriptionStatus {
    /// Whether charges are scheduled.
    pub fn is_billable(self) -> bool {
        matches!(self, Self::Active | Self::PastDue)
    }
}

/// A charge attempt's state (see the `charge_attempts` migration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AttemptStatus {
    InFlight,
    Succeeded,
    Declined,
    Unknown,
    NotCharged,
}

/// The store's billing policy from the settings.
pub fn policy(ctx: &Ctx) -> Result<Policy> {
    Policy::from_settings(&ctx.settings.subscriptions)
}

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
    /// Set when KakaoPay rejected this cycle's charge request itself (not a decline):
    /// the cycle stays due, no retry is sent, and an operator must act.
    pub needs_attention: Option<Attention>,
    /// Charge attempts, newest first (only on a single subscription's view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why a subscription waits for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Attention {
    /// KakaoPay's code (e.g. `-701`).
    pub code: String,
    pub message: String,
    pub since: DateTime<Utc>,
}

/// A subscription row as the services need it.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub id: SubscriptionId,
    pub user_id: UserId,
    pub status: SubscriptionStatus,
    pub period_days: i32,
    pub sid: Option<String>,
    pub current_cycle: i32,
    pub due_on: Option<NaiveDate>,
    pub next_charge_at: Option<DateTime<Utc>>,
    pub last_charged_at: Option<DateTime<Utc>>,
    pub schedule_seq: i32,
}

impl Row {
    /// The pending charge, for the policy.
    fn next(&self, policy: &Policy) -> Option<Next> {
        let at = self.next_charge_at?;
        Some(Next {
            due_on: self.due_on.unwrap_or_else(|| policy.local_date(at)),
            at,
        })
    }
}

/// Locks the subscription row (of `user` only, when given) for the rest of the
/// transaction: every change to a subscription and every charge decision holds it.
pub(crate) async fn lock(
    conn: &mut PgConnection,
    id: SubscriptionId,
    user: Option<UserId>,
) -> Result<Option<Row>> {
    let row = sqlx::query!(
        r#"SELECT id, user_id, status AS "status: SubscriptionStatus", period_days, sid,
                  current_cycle, due_on, next_charge_at, last_charged_at, schedule_seq
           FROM subscriptions WHERE id = $1 AND ($2::bigint IS NULL OR user_id = $2)
           FOR UPDATE"#,
        id.0,
        user.map(|u| u.0),
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| Row {
        id: SubscriptionId(r.id),
        user_id: UserId(r.user_id),
        status: r.status,
        period_days: r.period_days,
        sid: r.sid,
        current_cycle: r.current_cycle,
        due_on: r.due_on,
        next_charge_at: r.next_charge_at,
        last_charged_at: r.last_charged_at,
        schedule_seq: r.schedule_seq,
    }))
}

/// The facts a `subscription.*` outbox event carries.
#[derive(Debug, Serialize)]
pub struct SubscriptionEventData<'a> {
    pub subscription_id: i64,
    pub user_id: i64,
    pub status: SubscriptionStatus,
    pub period_days: i32,
    pub cycle: i32,
    pub next_charge_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<&'a str>,
}

/// Writes `event_type` for the subscription as it is now (after the caller's update).
pub(crate) async fn record_event(
    conn: &mut PgConnection,
    id: SubscriptionId,
    event_type: &str,
    extra: EventExtra<'_>,
) -> Result<()> {
    let s = sqlx::query!(
        r#"SELECT user_id, status AS "status: SubscriptionStatus", period_days, current_cycle,
                  next_charge_at, version
           FROM subscriptions WHERE id = $1"#,
        id.0
    )
    .fetch_one(&mut *conn)
    .await?;
    let data = SubscriptionEventData {
        subscription_id: id.0,
        user_id: s.user_id,
        status: s.status,
        period_days: s.period_days,
        cycle: s.current_cycle,
        next_charge_at: s.next_charge_at,
        order_id: extra.order_id.map(|o| o.0),
        amount: extra.amount,
        reason: extra.reason,
        failure_code: extra.failure_code,
    };
    outbox::record(
        conn,
        outbox::Event {
            event_type,
            aggregate_type: "subscription",
            aggregate_id: id.0,
            aggregate_version: s.version,
            data: &data,
        },
    )
    .await?;
    Ok(())
}

/// Optional facts of a subscription event.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EventExtra<'a> {
    pub order_id: Option<OrderId>,
    pub amount: Option<Money>,
    pub reason: Option<&'a str>,
    pub failure_code: Option<&'a str>,
}

// ---- creation ---------------------------------------------------------------------------

/// A subscription order was just paid with a SID: in the same transaction, the
/// subscription (items copied, cycle 1 = this order, anchored at `paid_at`) and its
/// cycle-2 charge job. Idempotent: an order already linked to a subscription is left.
pub async fn create_from_order(
    conn: &mut PgConnection,
    policy: &Policy,
    order: OrderId,
    sid: &str,
    paid_at: DateTime<Utc>,
) -> Result<Option<SubscriptionId>> {
    let o = sqlx::query!(
        "SELECT user_id, period_days, subscription_id FROM orders WHERE id = $1",
        order.0
    )
    .fetch_one(&mut *conn)
    .await?;
    let (Some(period), None) = (o.period_days, o.subscription_id) else {
        return Ok(None);
    };
    let next = policy.first_due(paid_at, period);
    let id = sqlx::query_scalar!(
        r#"INSERT INTO subscriptions (user_id, status, period_days, sid, first_order_id, anchor_at,
                                      next_charge_at, current_cycle, last_charged_at, due_on)
           VALUES ($1, 'active', $2, $3, $4, $5, $6, 1, $5, $7)
           RETURNING id"#,
        o.user_id,
        period,
        sid,
        order.0,
        paid_at,
        next.at,
        next.due_on,
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query!(
        r#"INSERT INTO subscription_items (subscription_id, item_id, quantity)
           SELECT $1, item_id, LEAST(sum(quantity), 99)::int FROM order_items WHERE order_id = $2
           GROUP BY item_id"#,
        id,
        order.0
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE orders SET subscription_id = $1, cycle = 1 WHERE id = $2",
        id,
        order.0
    )
    .execute(&mut *conn)
    .await?;
    let id = SubscriptionId(id);
    record_event(
        conn,
        id,
        "subscription.created",
        EventExtra {
            order_id: Some(order),
            ..Default::default()
        },
    )
    .await?;
    jobs::enqueue_at(
        conn,
        &tasks::SubscriptionCharge {
            subscription_id: id.0,
            cycle: 2,
            seq: 0,
        },
        next.at,
        paid_at,
    )
    .await?;
    metrics::counter!("subscriptions_created_total").increment(1);
    tracing::info!(subscription_id = id.0, order_id = order.0, next_charge_at = %next.at, "subscription created");
    Ok(Some(id))
}

/// Moves the pending charge to `next`: a new schedule sequence, the superseded job
/// removed if it has not started (one that has finds a newer sequence and stops), and a
/// new job at `next.at` — all on the caller's transaction.
pub(crate) async fn reschedule(
    conn: &mut PgConnection,
    s: &Row,
    next: Option<Next>,
    cycle: i32,
    now: DateTime<Utc>,
) -> Result<()> {
    let old = tasks::SubscriptionCharge {
        subscription_id: s.id.0,
        cycle,
        seq: s.schedule_seq,
    };
    if let Some(hash) = jobs::Job::of(&old)?.uniq_hash {
        sqlx::query!(
            "DELETE FROM fang_tasks WHERE uniq_hash = $1 AND state IN ('new', 'retried')",
            hash
        )
        .execute(&mut *conn)
        .await?;
    }
    let seq = sqlx::query_scalar!(
        r#"UPDATE subscriptions SET due_on = COALESCE($2, due_on), next_charge_at = $3,
                  schedule_seq = schedule_seq + 1, version = version + 1
           WHERE id = $1 RETURNING schedule_seq"#,
        s.id.0,
        next.map(|n| n.due_on),
        next.map(|n| n.at),
    )
    .fetch_one(&mut *conn)
    .await?;
    if let Some(next) = next {
        jobs::enqueue_at(
            conn,
            &tasks::SubscriptionCharge {
                subscription_id: s.id.0,
                cycle,
                seq,
            },
            next.at,
            now,
        )
        .await?;
    }
    Ok(())
}

// ---- customers' operations ----------------------------------------------------------------

/// `PATCH /api/subscriptions/{id}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// 7–365; applies from the last successful charge.
    pub period_days: Option<i32>,
    /// 1–99, for every product of the subscription.
    pub quantity: Option<i32>,
    /// 1–99 per product (`item_id` must be one of the subscription's).
    pub items: Option<Vec<LinePatch>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinePatch {
    pub item_id: i64,
    pub quantity: i32,
}

fn validate_patch(p: &Patch) -> Result<()> {
    let mut errors = Vec::new();
    if let Some(d) = p.period_days {
        if !(7..=365).contains(&d) {
            errors.push(FieldError::new("period_days", "must be between 7 and 365"));
        }
    }
    if let Some(q) = p.quantity {
        if !(1..=99).contains(&q) {
            errors.push(FieldError::new("quantity", "must be between 1 and 99"));
        }
    }
    for (i, l) in p.items.iter().flatten().enumerate() {
        if !(1..=99).contains(&l.quantity) {
            errors.push(FieldError::new(
                format!("items[{i}].quantity"),
                "must be between 1 and 99",
            ));
        }
    }
    if p.period_days.is_none() && p.quantity.is_none() && p.items.is_none() {
        errors.push(FieldError::new(
            "period_days",
            "nothing to change: give period_days, quantity or items",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}

/// Locks the customer's subscription for an edit: 404 if not theirs, 409 if canceled.
async fn lock_editable(conn: &mut PgConnection, user: UserId, id: SubscriptionId) -> Result<Row> {
    let s = lock(conn, id, Some(user)).await?.ok_or(Error::NotFound)?;
    if s.status == SubscriptionStatus::Canceled {
        return Err(Error::SubscriptionCanceled);
    }
    Ok(s)
}

/// Locks an active subscription with no charge at KakaoPay, for skip and pause.
async fn lock_active(conn: &mut PgConnection, user: UserId, id: SubscriptionId) -> Result<Row> {
    let s = lock_editable(conn, user, id).await?;
    if s.status != SubscriptionStatus::Active {
        return Err(Error::SubscriptionNotActive);
    }
    refuse_if_charging(conn, id).await?;
    Ok(s)
}

/// Refuses a rescheduling edit while a charge may be in KakaoPay's hands: its outcome
/// decides the next date.
async fn refuse_if_charging(conn: &mut PgConnection, id: SubscriptionId) -> Result<()> {
    let open = sqlx::query_scalar!(
        "SELECT 1 FROM charge_attempts WHERE subscription_id = $1 AND status IN ('in_flight', 'unknown')",
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?;
    if open.is_some() {
        return Err(Error::ChargeInProgress);
    }
    Ok(())
}

pub async fn update(
    ctx: &Ctx,
    user: UserId,
    id: SubscriptionId,
    patch: Patch,
) -> Result<Subscription> {
    validate_patch(&patch)?;
    let policy = policy(ctx)?;
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let s = lock_editable(&mut tx, user, id).await?;
    if let Some(lines) = &patch.items {
        let ids: Vec<i64> = lines.iter().map(|l| l.item_id).collect();
        let qty: Vec<i32> = lines.iter().map(|l| l.quantity).collect();
        let known = sqlx::query_scalar!(
            "SELECT count(*) AS \"n!\" FROM subscription_items WHERE subscription_id = $1 AND item_id = ANY($2)",
            id.0,
            &ids
        )
        .fetch_one(&mut *tx)
        .await?;
        let distinct: std::collections::HashSet<i64> = ids.iter().copied().collect();
        if known as usize != ids.len() || distinct.len() != ids.len() {
            return Err(Error::validation(
                "items",
                "each item_id must be one of the subscription's products, once",
            ));
        }
        sqlx::query!(
            r#"UPDATE subscription_items si SET quantity = u.q
               FROM unnest($2::bigint[], $3::int[]) AS u(i, q)
               WHERE si.subscription_id = $1 AND si.item_id = u.i"#,
            id.0,
            &ids,
            &qty
        )
        .execute(&mut *tx)
        .await?;
    }
    if let Some(q) = patch.quantity {
        sqlx::query!(
            "UPDATE subscription_items SET quantity = $2 WHERE subscription_id = $1",
            id.0,
            q
        )
        .execute(&mut *tx)
        .await?;
    }
    let mut event = "subscription.updated";
    if let Some(period) = patch.period_days.filter(|p| *p != s.period_days) {
        sqlx::query!(
            "UPDATE subscriptions SET period_days = $2 WHERE id = $1",
            id.0,
            period
        )
        .execute(&mut *tx)
        .await?;
        // In dunning the pending retry stands; the new period applies after it succeeds.
        if s.status == SubscriptionStatus::Active {
            refuse_if_charging(&mut tx, id).await?;
            let last = s.last_charged_at.unwrap_or(now);
            let next = policy.after_period_change(last, period, now);
            reschedule(
                &mut tx,
                &s,
                Some(next),
                s.current_cycle + 1,
                ctx.clock.now(),
            )
            .await?;
            event = "subscription.rescheduled";
        }
    }
    bump_version(&mut tx, id).await?;
    record_event(&mut tx, id, event, EventExtra::default()).await?;
    tx.commit().await?;
    tracing::info!(subscription_id = id.0, "subscription updated");
    get(ctx, Some(user), id).await
}

async fn bump_version(conn: &mut PgConnection, id: SubscriptionId) -> Result<()> {
    sqlx::query!(
        "UPDATE subscriptions SET version = version + 1 WHERE id = $1",
        id.0
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `POST /api/subscriptions/{id}/skip`: the next charge moves one period forward.
pub async fn skip(ctx: &Ctx, user: UserId, id: SubscriptionId) -> Result<Subscription> {
    let policy = policy(ctx)?;
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let s = lock_active(&mut tx, user, id).await?;
    let pending = s
        .next(&policy)
        .ok_or_else(|| Error::Internal(format!("active subscription {id} has no next charge")))?;
    let next = policy.after_skip(pending.due_on, s.period_days, now, s.last_charged_at);
    reschedule(
        &mut tx,
        &s,
        Some(next),
        s.current_cycle + 1,
        ctx.clock.now(),
    )
    .await?;
    record_event(&mut tx, id, "subscription.skipped", EventExtra::default()).await?;
    tx.commit().await?;
    tracing::info!(subscription_id = id.0, next_charge_at = %next.at, "subscription skipped a charge");
    get(ctx, Some(user), id).await
}

/// `POST /api/subscriptions/{id}/pause`: no charges until resumed.
pub async fn pause(ctx: &Ctx, user: UserId, id: SubscriptionId) -> Result<Subscription> {
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let s = lock_active(&mut tx, user, id).await?;
    reschedule(&mut tx, &s, None, s.current_cycle + 1, ctx.clock.now()).await?;
    sqlx::query!(
        "UPDATE subscriptions SET status = 'paused', paused_at = $2 WHERE id = $1",
        id.0,
        now
    )
    .execute(&mut *tx)
    .await?;
    record_event(&mut tx, id, "subscription.paused", EventExtra::default()).await?;
    tx.commit().await?;
    tracing::info!(subscription_id = id.0, "subscription paused");
    get(ctx, Some(user), id).await
}

/// `POST /api/subscriptions/{id}/resume`: next = max(today, last charge + period).
pub async fn resume(ctx: &Ctx, user: UserId, id: SubscriptionId) -> Result<Subscription> {
    let policy = policy(ctx)?;
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let s = lock_editable(&mut tx, user, id).await?;
    if s.status != SubscriptionStatus::Paused {
        return Err(Error::SubscriptionNotPaused);
    }
    let next = policy.after_resume(s.last_charged_at.unwrap_or(now), s.period_days, now);
    sqlx::query!(
        "UPDATE subscriptions SET status = 'active', paused_at = NULL WHERE id = $1",
        id.0
    )
    .execute(&mut *tx)
    .await?;
    reschedule(
        &mut tx,
        &s,
        Some(next),
        s.current_cycle + 1,
        ctx.clock.now(),
    )
    .await?;
    record_event(&mut tx, id, "subscription.resumed", EventExtra::default()).await?;
    tx.commit().await?;
    tracing::info!(subscription_id = id.0, next_charge_at = %next.at, "subscription resumed");
    get(ctx, Some(user), id).await
}

/// `DELETE /api/subscriptions/{id}`: canceled by the customer. A charge already in
/// KakaoPay's hands still completes (and ships); nothing is charged after it.
pub async fn cancel(ctx: &Ctx, user: UserId, id: SubscriptionId) -> Result<Subscription> {
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let s = lock_editable(&mut tx, user, id).await?;
    cancel_locked(&mut tx, &s, "customer", now).await?;
    tx.commit().await?;
    get(ctx, Some(user), id).await
}

/// Cancels a locked subscription: no further charges, its SID inactivated at KakaoPay
/// by a job, `subscription.canceled`.
pub(crate) async fn cancel_locked(
    conn: &mut PgConnection,
    s: &Row,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    reschedule(conn, s, None, s.current_cycle + 1, now).await?;
    sqlx::query!(
        "UPDATE subscriptions SET status = 'canceled', cancel_reason = $2, canceled_at = $3
         WHERE id = $1",
        s.id.0,
        reason,
        now
    )
    .execute(&mut *conn)
    .await?;
    record_event(
        conn,
        s.id,
        "subscription.canceled",
        EventExtra {
            reason: Some(reason),
            ..Default::default()
        },
    )
    .await?;
    if s.sid.is_some() {
        jobs::enqueue(
            conn,
            &tasks::SubscriptionInactivateSid {
                subscription_id: s.id.0,
            },
            now,
        )
        .await?;
    }
    metrics::counter!("subscriptions_canceled_total", "reason" => reason.to_owned()).increment(1);
    tracing::info!(subscription_id = s.id.0, reason, "subscription canceled");
    Ok(())
}

// ---- reading ----------------------------------------------------------------------------

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

async fn load(
    ctx: &Ctx,
    conn: &mut PgConnection,
    user: Option<UserId>,
    ids: &[i64],
) -> Result<Vec<Subscription>> {
    let policy = policy(ctx)?;
    let rows = sqlx::query!(
        r#"SELECT id, status AS "status: SubscriptionStatus", period_days, current_cycle, due_on,
                  next_charge_at, anchor_at, last_charged_at, first_order_id, paused_at,
                  cancel_reason, canceled_at, created_at, updated_at, attention_code,
                  attention_message, attention_since
           FROM subscriptions WHERE id = ANY($1) AND ($2::bigint IS NULL OR user_id = $2)
           ORDER BY id DESC"#,
        ids,
        user.map(|u| u.0)
    )
    .fetch_all(&mut *conn)
    .await?;
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
    Ok(rows
        .into_iter()
        .map(|r| {
            let lines = by_sub.remove(&r.id).unwrap_or_default();
            let next_amount = Money(
                lines
                    .iter()
                    .filter(|l| l.available)
                    .map(|l| l.unit_price.0 * i64::from(l.quantity))
                    .sum(),
            );
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

// ---- operators --------------------------------------------------------------------------

/// `POST /api/admin/subscriptions/{id}/preview`: the timeline the engine would follow
/// from the subscription's pending charge if KakaoPay answered `outcomes` in order.
pub async fn preview(
    ctx: &Ctx,
    id: SubscriptionId,
    outcomes: &[Outcome],
) -> Result<Vec<TimelineEvent>> {
    if outcomes.is_empty() || outcomes.len() > 100 {
        return Err(Error::validation("outcomes", "give 1 to 100 outcomes"));
    }
    let policy = policy(ctx)?;
    let mut conn = ctx.db.acquire().await?;
    let s = sqlx::query!(
        r#"SELECT status AS "status: SubscriptionStatus", period_days, current_cycle, due_on,
                  next_charge_at
           FROM subscriptions WHERE id = $1"#,
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound)?;
    match s.status {
        SubscriptionStatus::Canceled => return Err(Error::SubscriptionCanceled),
        SubscriptionStatus::Paused => return Err(Error::SubscriptionNotActive),
        _ => {}
    }
    let at = s
        .next_charge_at
        .ok_or_else(|| Error::Internal(format!("billable subscription {id} has no next charge")))?;
    let cycle = s.current_cycle + 1;
    let so_far = sqlx::query!(
        r#"SELECT count(*) AS "attempts!", count(*) FILTER (WHERE status = 'declined') AS "declines!"
           FROM charge_attempts WHERE subscription_id = $1 AND cycle = $2"#,
        id.0,
        cycle
    )
    .fetch_one(&mut *conn)
    .await?;
    let start = policy::PreviewStart {
        next: Next {
            due_on: s.due_on.unwrap_or_else(|| policy.local_date(at)),
            at,
        },
        cycle,
        period_days: s.period_days,
        attempts_so_far: so_far.attempts as i32,
        declines_so_far: so_far.declines as u32,
        past_due: s.status == SubscriptionStatus::PastDue,
    };
    Ok(policy.preview(&start, outcomes))
}

/// Sets `subscription_charges_unknown` (charges sent with no answer yet),
/// `subscription_charges_review_required` (those past the review window) and
/// `subscriptions_needing_attention` (a charge request KakaoPay rejected; the cycle is
/// still due), which the alert rules watch.
pub async fn refresh_gauges(ctx: &Ctx) -> Result<()> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "unknown!",
                  count(*) FILTER (WHERE review_required_at IS NOT NULL) AS "review!",
                  (SELECT count(*) FROM subscriptions WHERE attention_since IS NOT NULL)
                      AS "attention!"
           FROM charge_attempts WHERE status = 'unknown'"#
    )
    .fetch_one(ctx.db.pool())
    .await?;
    metrics::gauge!("subscription_charges_unknown").set(row.unknown as f64);
    metrics::gauge!("subscription_charges_review_required").set(row.review as f64);
    metrics::gauge!("subscriptions_needing_attention").set(row.attention as f64);
    Ok(())
}

/// An ambiguous charge on the operators' review list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnknownCharge {
    /// The attempt's id: what `POST /api/admin/charges/{attempt_id}/reconcile` takes.
    pub attempt_id: i64,
    pub subscription_id: SubscriptionId,
    pub user_id: UserId,
    pub cycle: i32,
    pub attempt: i32,
    pub partner_order_id: String,
    pub amount: Money,
    pub started_at: DateTime<Utc>,
    pub reconcile_rounds: i32,
    /// Set once it stayed undecided past `subscriptions.review_after_secs`.
    pub review_required_at: Option<DateTime<Utc>>,
}

/// `GET /api/admin/charges/unknown`: charges sent with no answer yet, oldest first
/// (`review_only`: just those past the review window).
pub async fn unknown_charges(
    ctx: &Ctx,
    review_only: bool,
    page: PageRequest,
) -> Result<Page<UnknownCharge>> {
    let page = page.validate()?;
    let mut conn = ctx.db.acquire().await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM charge_attempts
           WHERE status = 'unknown' AND (NOT $1 OR review_required_at IS NOT NULL)"#,
        review_only
    )
    .fetch_one(&mut *conn)
    .await?;
    let items = sqlx::query_as!(
        UnknownCharge,
        r#"SELECT a.id AS attempt_id, a.subscription_id AS "subscription_id: SubscriptionId",
                  s.user_id AS "user_id: UserId", a.cycle, a.attempt, a.partner_order_id,
                  a.amount AS "amount: Money", a.started_at, a.reconcile_rounds,
                  a.review_required_at
           FROM charge_attempts a JOIN subscriptions s ON s.id = a.subscription_id
           WHERE a.status = 'unknown' AND (NOT $1 OR a.review_required_at IS NOT NULL)
           ORDER BY a.started_at LIMIT $2 OFFSET $3"#,
        review_only,
        page.limit(),
        page.offset()
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Page::new(items, page, total))
}
