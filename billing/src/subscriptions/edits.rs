//! Customers' edits of their own subscription: the `PATCH` (period, quantities), skip,
//! pause, resume and cancel — each under the subscription's lock, refused while a charge
//! may be in KakaoPay's hands when it would move the pending charge.

use serde::Deserialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::{
    cancel_locked, get, lock, policy, record_event, reschedule, EventExtra, Row, Subscription,
    SubscriptionStatus,
};
use crate::error::{Error, FieldError, Result};
use crate::ids::{SubscriptionId, UserId};
use crate::{store, Ctx};

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
    if store::subscriptions::has_open_attempt(conn, id).await? {
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
        let known = store::subscriptions::count_items(&mut tx, id, &ids).await?;
        let distinct: std::collections::HashSet<i64> = ids.iter().copied().collect();
        if known as usize != ids.len() || distinct.len() != ids.len() {
            return Err(Error::validation(
                "items",
                "each item_id must be one of the subscription's products, once",
            ));
        }
        store::subscriptions::set_item_quantities(&mut tx, id, &ids, &qty).await?;
    }
    if let Some(q) = patch.quantity {
        store::subscriptions::set_quantity(&mut tx, id, q).await?;
    }
    let mut event = "subscription.updated";
    if let Some(period) = patch.period_days.filter(|p| *p != s.period_days) {
        store::subscriptions::set_period(&mut tx, id, period).await?;
        // In dunning the pending retry stands; the new period applies after it succeeds.
        if s.status == SubscriptionStatus::Active {
            refuse_if_charging(&mut tx, id).await?;
            let last = s.last_charged_at.unwrap_or(now);
            let next = policy.after_period_change(last, period, now);
            reschedule(&mut tx, &s, Some(next), s.current_cycle + 1, now).await?;
            event = "subscription.rescheduled";
        }
    }
    store::subscriptions::bump_version(&mut tx, id).await?;
    record_event(&mut tx, id, event, EventExtra::default()).await?;
    tx.commit().await?;
    tracing::info!(subscription_id = id.0, "subscription updated");
    get(ctx, Some(user), id).await
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
    reschedule(&mut tx, &s, Some(next), s.current_cycle + 1, now).await?;
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
    reschedule(&mut tx, &s, None, s.current_cycle + 1, now).await?;
    store::subscriptions::set_paused(&mut tx, id, now).await?;
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
    store::subscriptions::set_resumed(&mut tx, id).await?;
    reschedule(&mut tx, &s, Some(next), s.current_cycle + 1, now).await?;
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
