//! One subscription's whole story for operators: its facts and customer, and one
//! chronological timeline merging its cycle orders, every charge attempt (with KakaoPay's
//! code and message), the dunning retry pending, recovery and resubscribe checkouts, its
//! outbox events (edits, dunning, …) with their webhook deliveries, and the audit log's
//! entries on it and on its attempts. Every source is read newest first through an index
//! and bounded; the timeline keeps the newest [`TIMELINE_LIMIT`] entries.

use chrono::{DateTime, Utc};

use super::views::load;
use super::{Subscription, SubscriptionStatus};
use crate::audit;
use crate::error::{Error, Result};
use crate::history::{self, Attempt, EventEntry};
use crate::ids::{OrderId, SubscriptionId, UserId};
use crate::money::Money;
use crate::orders::OrderStatus;
use crate::Ctx;

/// The timeline's length: enough for years of monthly cycles with their retries.
pub const TIMELINE_LIMIT: usize = 200;

/// What the console's subscription page shows.
#[derive(Debug, Clone)]
pub struct Story {
    pub subscription: Subscription,
    pub user_id: UserId,
    pub email: String,
    pub phone: String,
    /// Whether KakaoPay's payment key is on file (a canceled one's is inactivated).
    pub has_sid: bool,
    pub sid_inactivated_at: Option<DateTime<Utc>>,
    /// Oldest first.
    pub timeline: Vec<Entry>,
    /// Older entries were left out.
    pub truncated: bool,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub at: DateTime<Utc>,
    pub what: What,
}

#[derive(Debug, Clone)]
pub enum What {
    /// A cycle's order (cycle 1 is the first order).
    Order {
        id: OrderId,
        cycle: i32,
        amount: Money,
        status: OrderStatus,
    },
    Attempt(Attempt),
    /// The dunning retry scheduled for a past-due cycle.
    RetryScheduled {
        cycle: i32,
        declines: i32,
        retries_left: i32,
    },
    Checkout(Checkout),
    Event(EventEntry),
    Audit(audit::Entry),
}

/// A recovery or resubscribe checkout.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub id: i64,
    /// `recovery` or `resubscribe`.
    pub kind: String,
    pub cycle: i32,
    /// `created`, `ready`, `approving`, `succeeded`, `failed`, `abandoned` or `superseded`.
    pub status: String,
    pub amount: Money,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub order_id: Option<OrderId>,
    pub via_link: bool,
}

impl Entry {
    /// The entry's kind, as the page styles it: `order`, `attempt`, `dunning`,
    /// `checkout`, `event` or `audit`.
    pub fn kind(&self) -> &'static str {
        match &self.what {
            What::Order { .. } => "order",
            What::Attempt(_) => "attempt",
            What::RetryScheduled { .. } => "dunning",
            What::Event(e) if is_dunning_event(&e.event_type) => "dunning",
            What::Checkout(_) => "checkout",
            What::Event(_) => "event",
            What::Audit(_) => "audit",
        }
    }

    /// Among entries at the same instant: the attempt before the order it wrote, both
    /// before the events announcing them, the audit entry of an action last.
    fn rank(&self) -> u8 {
        match &self.what {
            What::Attempt(_) | What::Checkout(_) => 0,
            What::Order { .. } => 1,
            What::Event(_) | What::RetryScheduled { .. } => 2,
            What::Audit(_) => 3,
        }
    }
}

fn is_dunning_event(event_type: &str) -> bool {
    matches!(
        event_type,
        "subscription.past_due" | "subscription.canceled" | "subscription.recovered"
    )
}

/// The console's subscription page: facts and the timeline.
pub async fn story(ctx: &Ctx, id: SubscriptionId) -> Result<Story> {
    let limit = TIMELINE_LIMIT as i64;
    let mut conn = ctx.db.acquire().await?;
    let owner = sqlx::query!(
        r#"SELECT s.user_id, u.email, u.phone, s.sid IS NOT NULL AS "has_sid!",
                  s.sid_inactivated_at
           FROM subscriptions s JOIN users u ON u.id = s.user_id WHERE s.id = $1"#,
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound)?;
    let subscription = load(ctx, &mut conn, None, &[id.0])
        .await?
        .pop()
        .ok_or(Error::NotFound)?;
    let mut timeline = Vec::new();

    let orders = sqlx::query!(
        r#"SELECT id, cycle AS "cycle!", total_amount, status AS "status: OrderStatus",
                  created_at
           FROM orders WHERE subscription_id = $1 AND cycle IS NOT NULL
           ORDER BY cycle DESC LIMIT $2"#,
        id.0,
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    timeline.extend(orders.into_iter().rev().map(|o| Entry {
        at: o.created_at,
        what: What::Order {
            id: OrderId(o.id),
            cycle: o.cycle,
            amount: Money(o.total_amount),
            status: o.status,
        },
    }));

    let attempts = history::attempts(&mut conn, id, None, limit).await?;
    let mut audit_targets = vec![("subscription", id.0.to_string())];
    audit_targets.extend(
        attempts
            .iter()
            .map(|(_, a)| ("charge_attempt", a.id.to_string())),
    );
    timeline.extend(attempts.into_iter().rev().map(|(at, a)| Entry {
        at,
        what: What::Attempt(a),
    }));

    if let (SubscriptionStatus::PastDue, Some(d), Some(at)) = (
        subscription.status,
        &subscription.dunning,
        subscription.next_charge_at,
    ) {
        timeline.push(Entry {
            at,
            what: What::RetryScheduled {
                cycle: subscription.cycle + 1,
                declines: d.declines,
                retries_left: d.retries_left,
            },
        });
    }

    let checkouts = sqlx::query!(
        r#"SELECT id, kind, cycle, status, amount, failure_code, failure_message, order_id,
                  via_link, created_at
           FROM subscription_checkouts WHERE subscription_id = $1
           ORDER BY id DESC LIMIT $2"#,
        id.0,
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    timeline.extend(checkouts.into_iter().rev().map(|c| Entry {
        at: c.created_at,
        what: What::Checkout(Checkout {
            id: c.id,
            kind: c.kind,
            cycle: c.cycle,
            status: c.status,
            amount: Money(c.amount),
            failure_code: c.failure_code,
            failure_message: c.failure_message,
            order_id: c.order_id.map(OrderId),
            via_link: c.via_link,
        }),
    }));

    let events = history::events(&mut conn, "subscription", id.0, limit).await?;
    timeline.extend(events.into_iter().rev().map(|e| Entry {
        at: e.at,
        what: What::Event(e),
    }));
    let audit = history::audit(&mut conn, &audit_targets, limit).await?;
    timeline.extend(audit.into_iter().rev().map(|a| Entry {
        at: a.at,
        what: What::Audit(a),
    }));

    let (timeline, truncated) = newest(timeline, TIMELINE_LIMIT);
    Ok(Story {
        subscription,
        user_id: UserId(owner.user_id),
        email: owner.email,
        phone: owner.phone,
        has_sid: owner.has_sid,
        sid_inactivated_at: owner.sid_inactivated_at,
        timeline,
        truncated,
    })
}

/// The newest `keep` entries, oldest first; whether any were left out. Each source comes
/// in oldest first, so entries at the same instant (an attempt and its immediate retry)
/// keep their own order.
fn newest(mut entries: Vec<Entry>, keep: usize) -> (Vec<Entry>, bool) {
    entries.sort_by_key(|e| (e.at, e.rank()));
    let drop = entries.len().saturating_sub(keep);
    entries.drain(..drop);
    (entries, drop > 0)
}
