//! Subscriptions, the use case over the rows of [`crate::store::subscriptions`]: creation
//! from a paid subscription order and the moves of the pending charge (here), edits by
//! customers and operators on their behalf (`edits`), the views (`views`), the operators'
//! preview and review list (`operators`), search (`search`) and timeline (`timeline`),
//! renewal reminders (`reminders`), recovery and resubscribe checkouts (`checkout`). The
//! recurring charge itself lives in [`charge`]; the schedule rules in [`policy`].

pub mod charge;
pub mod checkout;
mod edits;
mod operators;
pub mod policy;
mod reminders;
pub mod search;
pub mod timeline;
mod views;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::Result;
use crate::ids::{OrderId, SubscriptionId, UserId};
use crate::{jobs, store, tasks, Ctx};

pub(crate) use crate::store::subscriptions::{lock, record_event, EventExtra, Row};
pub use crate::store::subscriptions::{AttemptStatus, SubscriptionEventData, SubscriptionStatus};
pub use edits::{cancel, pause, resume, skip, update, LinePatch, Patch};
pub use operators::{preview, refresh_gauges, unknown_charges, UnknownCharge};
pub use policy::{Next, Outcome, Policy, TimelineEvent};
pub use reminders::remind_renewals;
pub use views::{
    get, list, AttemptView, Attention, DunningState, RecoveryState, Subscription, SubscriptionLine,
};

/// The store's billing policy from the settings.
pub fn policy(ctx: &Ctx) -> Result<Policy> {
    Policy::from_settings(&ctx.settings.subscriptions)
}

// The row store stays below the billing policy, so the policy's view of a row is
// written here, where both are in reach.
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
    let id = store::subscriptions::insert(
        conn,
        &store::subscriptions::NewSubscription {
            user: UserId(o.user_id),
            period_days: period,
            sid,
            first_order: order,
            anchor_at: paid_at,
            next_charge_at: next.at,
            due_on: next.due_on,
        },
    )
    .await?;
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

// ---- the pending charge -----------------------------------------------------------------

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
    drop_pending_charge(conn, s, cycle).await?;
    let seq =
        store::subscriptions::set_schedule(conn, s.id, next.map(|n| n.due_on), next.map(|n| n.at))
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

/// Removes the subscription's charge job of `cycle` under its current schedule sequence
/// if it has not started (one that has finds the sequence moved on and stops).
pub(crate) async fn drop_pending_charge(
    conn: &mut PgConnection,
    s: &Row,
    cycle: i32,
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
    Ok(())
}

/// Cancels a locked subscription: no further charges, its SID inactivated at KakaoPay
/// by a job, `subscription.canceled`.
pub(crate) async fn cancel_locked(
    conn: &mut PgConnection,
    s: &Row,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    cancel_locked_with_code(conn, s, reason, None, None, now).await
}

/// [`cancel_locked`] for a cancellation KakaoPay caused: `failure_code` (its code) goes
/// into `subscription.canceled` so consumers see why without reading the attempts, and
/// `recovery_url` (a link to pay the overdue cycle) so the store can offer a way back.
pub(crate) async fn cancel_locked_with_code(
    conn: &mut PgConnection,
    s: &Row,
    reason: &str,
    failure_code: Option<&str>,
    recovery_url: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    reschedule(conn, s, None, s.current_cycle + 1, now).await?;
    store::subscriptions::set_canceled(conn, s.id, reason, now).await?;
    record_event(
        conn,
        s.id,
        "subscription.canceled",
        EventExtra {
            reason: Some(reason),
            failure_code,
            recovery_url,
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
