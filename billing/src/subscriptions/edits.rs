//! Edits of a subscription by its customer, or by an operator on the customer's behalf
//! (the console): the `PATCH` (period, products and quantities, shipping receiver), skip,
//! pause, resume and cancel — each under the subscription's lock, refused while a charge
//! may be in KakaoPay's hands when it would move the pending charge. An operator's edit
//! is audited in its own transaction.

use std::collections::HashSet;

use serde::Deserialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::{
    cancel_locked, get, lock, policy, record_event, reschedule, EventExtra, Row, Subscription,
    SubscriptionStatus,
};
use crate::audit::{Action, Target};
use crate::carts::{MAX_QUANTITY, PERIOD_DAYS};
use crate::editor::Editor;
use crate::error::{Error, FieldError, Result};
use crate::ids::SubscriptionId;
use crate::orders::{LineInput, Receiver, MAX_LINES};
use crate::store::subscriptions::{Changes, PeriodChange};
use crate::validate::Checks;
use crate::{store, Ctx};

/// `PATCH /api/subscriptions/{id}`. Products apply from the next charge attempt not yet
/// priced: an attempt already under way keeps the lines it was priced with. The receiver
/// applies to every cycle order written after the change (an order is written when the
/// approval is applied, so a charge in flight during the edit ships there too). Neither
/// moves the pending charge, so neither waits for a charge at KakaoPay.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// 7–365; applies from the last successful charge.
    pub period_days: Option<i32>,
    /// 1–99, for every product the subscription already has (set before `items`).
    pub quantity: Option<i32>,
    /// 1–99 per product (`item_id` must be one of the subscription's).
    pub items: Option<Vec<LinePatch>>,
    /// Products to add, each on sale and not yet one of the subscription's; quantity 1–99.
    /// Charged at the price of the day, like the others.
    pub add: Option<Vec<LineInput>>,
    /// Products to remove (item ids of the subscription's); at least one must remain.
    pub remove: Option<Vec<i64>>,
    /// Where the next cycles ship (until changed: where the first order went). Checked as
    /// an order's receiver is.
    pub receiver: Option<Receiver>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinePatch {
    pub item_id: i64,
    /// 1–99.
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: i32,
}

/// The patch's own checks, before any row is read; the receiver as it will be stored.
fn validate_patch(p: &Patch) -> Result<Option<Receiver>> {
    let mut checks = Checks::default();
    let errors = &mut checks.0;
    let quantity = |field: String, q: i32, errors: &mut Vec<FieldError>| {
        if !(1..=MAX_QUANTITY).contains(&q) {
            errors.push(FieldError::new(field, "must be between 1 and 99"));
        }
    };
    if let Some(d) = p.period_days {
        if !PERIOD_DAYS.contains(&d) {
            errors.push(FieldError::new("period_days", "must be between 7 and 365"));
        }
    }
    if let Some(q) = p.quantity {
        quantity("quantity".into(), q, errors);
    }
    // Each item is named once over `items`, `add` and `remove`: two instructions for one
    // product would depend on the order they are applied in.
    let mut seen = HashSet::new();
    for (i, l) in p.items.iter().flatten().enumerate() {
        quantity(format!("items[{i}].quantity"), l.quantity, errors);
        if !seen.insert(l.item_id) {
            errors.push(FieldError::new(format!("items[{i}].item_id"), TWICE));
        }
    }
    for (i, l) in p.add.iter().flatten().enumerate() {
        quantity(format!("add[{i}].quantity"), l.quantity, errors);
        if !seen.insert(l.item_id) {
            errors.push(FieldError::new(format!("add[{i}].item_id"), TWICE));
        }
    }
    for (i, item) in p.remove.iter().flatten().enumerate() {
        if !seen.insert(*item) {
            errors.push(FieldError::new(format!("remove[{i}]"), TWICE));
        }
    }
    if seen.len() > MAX_LINES {
        errors.push(FieldError::new(
            "items",
            "names too many products (at most 50)",
        ));
    }
    let receiver = p
        .receiver
        .as_ref()
        .and_then(|r| crate::orders::validate_receiver(Some(r), &mut checks));
    let nothing = p.period_days.is_none()
        && p.quantity.is_none()
        && p.items.is_none()
        && p.add.is_none()
        && p.remove.is_none()
        && p.receiver.is_none();
    if nothing {
        checks.0.push(FieldError::new(
            "period_days",
            "nothing to change: give period_days, quantity, items, add, remove or receiver",
        ));
    }
    checks.finish()?;
    Ok(receiver)
}

const TWICE: &str = "names a product already named in items, add or remove";

/// The patch's product changes against the subscription's products: the items it changes
/// or removes are the subscription's, those it adds are not, one product remains, and no
/// more than an order may hold.
fn check_products(p: &Patch, before: &store::subscriptions::Products) -> Result<()> {
    let mut errors = Vec::new();
    let theirs = "is not one of the subscription's products";
    for (i, l) in p.items.iter().flatten().enumerate() {
        if !before.contains_key(&l.item_id) {
            errors.push(FieldError::new(format!("items[{i}].item_id"), theirs));
        }
    }
    for (i, item) in p.remove.iter().flatten().enumerate() {
        if !before.contains_key(item) {
            errors.push(FieldError::new(format!("remove[{i}]"), theirs));
        }
    }
    for (i, l) in p.add.iter().flatten().enumerate() {
        if before.contains_key(&l.item_id) {
            errors.push(FieldError::new(
                format!("add[{i}].item_id"),
                "is already one of the subscription's products; change its quantity with items",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    let removed = p.remove.as_ref().map_or(0, Vec::len);
    let added = p.add.as_ref().map_or(0, Vec::len);
    let left = (before.len() + added).saturating_sub(removed);
    if left == 0 {
        return Err(Error::LastProduct);
    }
    if left > MAX_LINES {
        return Err(Error::validation(
            "add",
            "a subscription has at most 50 products",
        ));
    }
    Ok(())
}

/// Locks the subscription for an edit: 404 if it is not the customer's (an operator may
/// edit any), 409 if canceled.
async fn lock_editable(
    conn: &mut PgConnection,
    by: &Editor<'_>,
    id: SubscriptionId,
) -> Result<Row> {
    let s = lock(conn, id, by.owner()).await?.ok_or(Error::NotFound)?;
    if s.status == SubscriptionStatus::Canceled {
        return Err(Error::SubscriptionCanceled);
    }
    Ok(s)
}

/// Locks an active subscription with no charge at KakaoPay, for skip and pause.
async fn lock_active(conn: &mut PgConnection, by: &Editor<'_>, id: SubscriptionId) -> Result<Row> {
    let s = lock_editable(conn, by, id).await?;
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

/// `PATCH /api/subscriptions/{id}`: checked whole before anything is written; one
/// transaction; one `subscription.updated` (or `.rescheduled` when the pending charge
/// moved) carrying what changed. An operator changes the period only (products and
/// where they ship are the customer's choice).
pub async fn update<'a>(
    ctx: &Ctx,
    by: impl Into<Editor<'a>>,
    id: SubscriptionId,
    patch: Patch,
) -> Result<Subscription> {
    let by = by.into();
    let receiver = validate_patch(&patch)?;
    if matches!(by, Editor::Operator(_)) && !period_only(&patch) {
        return Err(Error::validation(
            "period_days",
            "an operator changes the period only; products and receiver are the customer's",
        ));
    }
    let policy = policy(ctx)?;
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let s = lock_editable(&mut tx, &by, id).await?;
    let before = store::subscriptions::products(&mut tx, id).await?;
    check_products(&patch, &before)?;
    let add = patch.add.as_deref().unwrap_or_default();
    if !add.is_empty() {
        // The prices are not kept (every charge prices at the day's): this is the check
        // that each item exists and is on sale, as ordering it is.
        crate::orders::price_lines(&mut tx, "add", add).await?;
    }

    if let Some(remove) = patch.remove.as_deref().filter(|r| !r.is_empty()) {
        store::subscriptions::remove_items(&mut tx, id, remove).await?;
    }
    if let Some(q) = patch.quantity {
        store::subscriptions::set_quantity(&mut tx, id, q).await?;
    }
    // Changed and added products alike: each named once, checked above against the rows.
    let (ids, qty): (Vec<i64>, Vec<i32>) = (patch.items.iter().flatten())
        .map(|l| (l.item_id, l.quantity))
        .chain(add.iter().map(|l| (l.item_id, l.quantity)))
        .unzip();
    if !ids.is_empty() {
        store::subscriptions::set_items(&mut tx, id, &ids, &qty).await?;
    }
    if let Some(r) = &receiver {
        let fields = (
            r.name.as_str(),
            r.phone.as_str(),
            r.city.as_str(),
            r.detail_address.as_str(),
        );
        store::subscriptions::set_receiver(&mut tx, id, fields).await?;
    }
    let mut event = "subscription.updated";
    let mut period_change = None;
    if let Some(period) = patch.period_days.filter(|p| *p != s.period_days) {
        store::subscriptions::set_period(&mut tx, id, period).await?;
        period_change = Some(PeriodChange {
            from: s.period_days,
            to: period,
        });
        // In dunning the pending retry stands; the new period applies after it succeeds.
        if s.status == SubscriptionStatus::Active {
            refuse_if_charging(&mut tx, id).await?;
            let last = s.last_charged_at.unwrap_or(now);
            let next = policy.after_period_change(last, period, now);
            reschedule(&mut tx, &s, Some(next), s.current_cycle + 1, now).await?;
            event = "subscription.rescheduled";
        }
    }
    let products_touched = patch.quantity.is_some()
        || patch.items.is_some()
        || !add.is_empty()
        || patch.remove.is_some();
    let items = if products_touched {
        let after = store::subscriptions::products(&mut tx, id).await?;
        Changes::items_between(&before, &after)
    } else {
        Vec::new()
    };
    let changes = Changes {
        period_days: period_change,
        items,
        receiver: receiver.is_some(),
    };
    store::subscriptions::bump_version(&mut tx, id).await?;
    let extra = EventExtra {
        changes: Some(&changes),
        ..EventExtra::default()
    };
    record_event(&mut tx, id, event, extra).await?;
    let to = patch.period_days.unwrap_or(s.period_days);
    let details = serde_json::json!({ "from": s.period_days, "to": to });
    by.audit(
        &mut tx,
        Action::SubscriptionPeriodChanged,
        target(id),
        details,
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(subscription_id = id.0, event, "subscription updated");
    get(ctx, by.owner(), id).await
}

/// Whether a patch changes the period and nothing else.
fn period_only(p: &Patch) -> bool {
    p.period_days.is_some()
        && p.quantity.is_none()
        && p.items.is_none()
        && p.add.is_none()
        && p.remove.is_none()
        && p.receiver.is_none()
}

fn target(id: SubscriptionId) -> Target<'static> {
    Target::row("subscription", &id)
}

/// `POST /api/subscriptions/{id}/skip`: the next charge moves one period forward.
pub async fn skip<'a>(
    ctx: &Ctx,
    by: impl Into<Editor<'a>>,
    id: SubscriptionId,
) -> Result<Subscription> {
    let by = by.into();
    let policy = policy(ctx)?;
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let s = lock_active(&mut tx, &by, id).await?;
    let pending = s
        .next(&policy)
        .ok_or_else(|| Error::Internal(format!("active subscription {id} has no next charge")))?;
    let next = policy.after_skip(pending.due_on, s.period_days, now, s.last_charged_at);
    reschedule(&mut tx, &s, Some(next), s.current_cycle + 1, now).await?;
    record_event(&mut tx, id, "subscription.skipped", EventExtra::default()).await?;
    let details = serde_json::json!({ "skipped": pending.at, "next_charge_at": next.at });
    by.audit(
        &mut tx,
        Action::SubscriptionSkipped,
        target(id),
        details,
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(subscription_id = id.0, next_charge_at = %next.at, "subscription skipped a charge");
    get(ctx, by.owner(), id).await
}

/// `POST /api/subscriptions/{id}/pause`: no charges until resumed.
pub async fn pause<'a>(
    ctx: &Ctx,
    by: impl Into<Editor<'a>>,
    id: SubscriptionId,
) -> Result<Subscription> {
    let by = by.into();
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let s = lock_active(&mut tx, &by, id).await?;
    reschedule(&mut tx, &s, None, s.current_cycle + 1, now).await?;
    store::subscriptions::set_paused(&mut tx, id, now).await?;
    record_event(&mut tx, id, "subscription.paused", EventExtra::default()).await?;
    let details = serde_json::json!({ "pending_charge": s.next_charge_at });
    by.audit(
        &mut tx,
        Action::SubscriptionPaused,
        target(id),
        details,
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(subscription_id = id.0, "subscription paused");
    get(ctx, by.owner(), id).await
}

/// `POST /api/subscriptions/{id}/resume`: next = max(today, last charge + period).
pub async fn resume<'a>(
    ctx: &Ctx,
    by: impl Into<Editor<'a>>,
    id: SubscriptionId,
) -> Result<Subscription> {
    let by = by.into();
    let policy = policy(ctx)?;
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let s = lock_editable(&mut tx, &by, id).await?;
    if s.status != SubscriptionStatus::Paused {
        return Err(Error::SubscriptionNotPaused);
    }
    let next = policy.after_resume(s.last_charged_at.unwrap_or(now), s.period_days, now);
    store::subscriptions::set_resumed(&mut tx, id).await?;
    reschedule(&mut tx, &s, Some(next), s.current_cycle + 1, now).await?;
    record_event(&mut tx, id, "subscription.resumed", EventExtra::default()).await?;
    let details = serde_json::json!({ "next_charge_at": next.at });
    by.audit(
        &mut tx,
        Action::SubscriptionResumed,
        target(id),
        details,
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(subscription_id = id.0, next_charge_at = %next.at, "subscription resumed");
    get(ctx, by.owner(), id).await
}

/// `DELETE /api/subscriptions/{id}`: canceled by the customer (or an operator at their
/// request: the same reason, `customer`). A charge already in KakaoPay's hands still
/// completes (and ships); nothing is charged after it.
pub async fn cancel<'a>(
    ctx: &Ctx,
    by: impl Into<Editor<'a>>,
    id: SubscriptionId,
) -> Result<Subscription> {
    let by = by.into();
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let s = lock_editable(&mut tx, &by, id).await?;
    cancel_locked(&mut tx, &s, "customer", now).await?;
    let details = serde_json::json!({ "from": s.status, "reason": "customer" });
    by.audit(
        &mut tx,
        Action::SubscriptionCanceled,
        target(id),
        details,
        now,
    )
    .await?;
    tx.commit().await?;
    get(ctx, by.owner(), id).await
}
