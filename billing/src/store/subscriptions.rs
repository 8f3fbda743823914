//! Subscription rows: the subscription and its `subscription_items`, written here and
//! nowhere else — creation from the first order, the schedule, the status changes
//! (pause, resume, cancel), a customer's edits (period, products, receiver), the version
//! — with the row lock that every change holds, the `subscription.*` outbox event, the
//! open-attempt check edits wait on, and the row read the views are built from. The billing rules (when a charge
//! is due, what an edit means) stay with the use case in `subscriptions`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::error::Result;
use crate::ids::{OrderId, SubscriptionId, UserId};
use crate::money::Money;
use crate::outbox;

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
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::PastDue => "past_due",
            Self::Canceled => "canceled",
        }
    }

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

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InFlight => "in_flight",
            Self::Succeeded => "succeeded",
            Self::Declined => "declined",
            Self::Unknown => "unknown",
            Self::NotCharged => "not_charged",
        }
    }
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

/// Locks the subscription row (of `user` only, when given) for the rest of the
/// transaction: every change to a subscription and every charge decision holds it.
pub(crate) async fn lock(
    conn: &mut PgConnection,
    id: SubscriptionId,
    user: Option<UserId>,
) -> Result<Option<Row>> {
    let row = sqlx::query_as!(
        LockedRow,
        r#"SELECT id, user_id, status AS "status: SubscriptionStatus", period_days, sid,
                  current_cycle, due_on, next_charge_at, last_charged_at, schedule_seq
           FROM subscriptions WHERE id = $1 AND ($2::bigint IS NULL OR user_id = $2)
           FOR UPDATE"#,
        id.0,
        user.map(|u| u.0),
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(Row::from))
}

/// [`lock`] for many subscriptions at once (a batch of charges), in id order so that two
/// batches sharing rows wait for each other instead of deadlocking. Missing ids are left
/// out.
pub(crate) async fn lock_many(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<Row>> {
    let rows = sqlx::query_as!(
        LockedRow,
        r#"SELECT id, user_id, status AS "status: SubscriptionStatus", period_days, sid,
                  current_cycle, due_on, next_charge_at, last_charged_at, schedule_seq
           FROM subscriptions WHERE id = ANY($1)
           ORDER BY id
           FOR UPDATE"#,
        ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Row::from).collect())
}

/// A locked row as Postgres returns it.
struct LockedRow {
    id: i64,
    user_id: i64,
    status: SubscriptionStatus,
    period_days: i32,
    sid: Option<String>,
    current_cycle: i32,
    due_on: Option<chrono::NaiveDate>,
    next_charge_at: Option<DateTime<Utc>>,
    last_charged_at: Option<DateTime<Utc>>,
    schedule_seq: i32,
}

impl From<LockedRow> for Row {
    fn from(r: LockedRow) -> Self {
        Row {
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
        }
    }
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
            data: &WithChanges {
                data,
                changes: extra.changes,
                recovery_url: extra.recovery_url,
            },
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
    pub changes: Option<&'a Changes>,
    /// A recovery link (`subscription.past_due`, a dunning `subscription.canceled`).
    pub recovery_url: Option<&'a str>,
}

/// An event's data with what an edit changed, when it did: a field of its own beside the
/// subscription's facts, so the events that are not edits keep their shape.
#[derive(Serialize)]
struct WithChanges<'a> {
    #[serde(flatten)]
    data: SubscriptionEventData<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<&'a Changes>,
    /// Opens a checkout that pays the overdue cycle, without a login; single use, expiring.
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery_url: Option<&'a str>,
}

/// What a customer's edit changed (the `changes` of its `subscription.updated` or
/// `subscription.rescheduled`). The receiver's new address is not repeated: events reach
/// webhook receivers, and the cycle's order is where an address is needed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Changes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_days: Option<PeriodChange>,
    /// Products added (`from` null), removed (`to` null) or with a new quantity.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemChange>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub receiver: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PeriodChange {
    pub from: i32,
    pub to: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ItemChange {
    pub item_id: i64,
    pub from: Option<i32>,
    pub to: Option<i32>,
}

impl Changes {
    /// The product changes between two readings of [`products`].
    pub(crate) fn items_between(before: &Products, after: &Products) -> Vec<ItemChange> {
        let ids: std::collections::BTreeSet<i64> =
            before.keys().chain(after.keys()).copied().collect();
        ids.into_iter()
            .filter_map(|item_id| {
                let (from, to) = (before.get(&item_id).copied(), after.get(&item_id).copied());
                (from != to).then_some(ItemChange { item_id, from, to })
            })
            .collect()
    }
}

// ---- creation and schedule ----------------------------------------------------------------

/// A subscription born of its first order, which was cycle 1 and charged at `anchor_at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewSubscription<'a> {
    pub user: UserId,
    pub period_days: i32,
    pub sid: &'a str,
    pub first_order: OrderId,
    pub anchor_at: DateTime<Utc>,
    /// The cycle-2 charge, as the policy scheduled it.
    pub next_charge_at: DateTime<Utc>,
    pub due_on: NaiveDate,
}

/// Writes the subscription `active`, its items copied from the first order (one line per
/// item, at most 99 of it, as an edit allows), and links that order to it as cycle 1.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    new: &NewSubscription<'_>,
) -> Result<SubscriptionId> {
    let id = sqlx::query_scalar!(
        r#"INSERT INTO subscriptions (user_id, status, period_days, sid, first_order_id, anchor_at,
                                      next_charge_at, current_cycle, last_charged_at, due_on)
           VALUES ($1, 'active', $2, $3, $4, $5, $6, 1, $5, $7)
           RETURNING id"#,
        new.user.0,
        new.period_days,
        new.sid,
        new.first_order.0,
        new.anchor_at,
        new.next_charge_at,
        new.due_on,
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query!(
        r#"INSERT INTO subscription_items (subscription_id, item_id, quantity)
           SELECT $1, item_id, LEAST(sum(quantity), 99)::int FROM order_items WHERE order_id = $2
           GROUP BY item_id"#,
        id,
        new.first_order.0
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE orders SET subscription_id = $1, cycle = 1 WHERE id = $2",
        id,
        new.first_order.0
    )
    .execute(&mut *conn)
    .await?;
    Ok(SubscriptionId(id))
}

/// Sets the pending charge (none: `next_charge_at` cleared, `due_on` kept) under a new
/// schedule sequence, which it returns: a charge job of an older sequence then finds
/// itself superseded and stops.
pub(crate) async fn set_schedule(
    conn: &mut PgConnection,
    id: SubscriptionId,
    due_on: Option<NaiveDate>,
    next_charge_at: Option<DateTime<Utc>>,
) -> Result<i32> {
    let seq = sqlx::query_scalar!(
        r#"UPDATE subscriptions SET due_on = COALESCE($2, due_on), next_charge_at = $3,
                  schedule_seq = schedule_seq + 1, version = version + 1
           WHERE id = $1 RETURNING schedule_seq"#,
        id.0,
        due_on,
        next_charge_at,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(seq)
}

/// A new version for the event an edit records: consumers order a subscription's events
/// by it, and an edit may change no schedule (which bumps it too).
pub(crate) async fn bump_version(conn: &mut PgConnection, id: SubscriptionId) -> Result<()> {
    sqlx::query!(
        "UPDATE subscriptions SET version = version + 1 WHERE id = $1",
        id.0
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

// ---- status -------------------------------------------------------------------------------

/// The caller has cleared the schedule first: a paused subscription has no pending charge.
pub(crate) async fn set_paused(
    conn: &mut PgConnection,
    id: SubscriptionId,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "UPDATE subscriptions SET status = 'paused', paused_at = $2 WHERE id = $1",
        id.0,
        at
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The caller schedules the next charge: the status alone does not.
pub(crate) async fn set_resumed(conn: &mut PgConnection, id: SubscriptionId) -> Result<()> {
    sqlx::query!(
        "UPDATE subscriptions SET status = 'active', paused_at = NULL WHERE id = $1",
        id.0
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `reason` stays on the row: the views show why a subscription ended.
pub(crate) async fn set_canceled(
    conn: &mut PgConnection,
    id: SubscriptionId,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "UPDATE subscriptions SET status = 'canceled', cancel_reason = $2, canceled_at = $3
         WHERE id = $1",
        id.0,
        reason,
        at
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

// ---- renewal reminders --------------------------------------------------------------------

/// A renewal to remind the customer of: the cycle and what it would cost at today's prices.
#[derive(Debug, Clone)]
pub(crate) struct Reminder {
    pub id: SubscriptionId,
    pub cycle: i32,
    pub amount: Money,
}

/// Marks, and returns, up to `limit` active subscriptions whose next charge falls in
/// `(now, until]` and whose next cycle has not been reminded — rows another transaction
/// holds (a charge, an edit) are skipped for the next sweep rather than waited for.
pub(crate) async fn mark_reminded(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Reminder>> {
    let rows = sqlx::query!(
        r#"UPDATE subscriptions s
           SET reminded_cycle = s.current_cycle + 1, version = s.version + 1
           FROM (SELECT id FROM subscriptions
                 WHERE status = 'active' AND next_charge_at > $1 AND next_charge_at <= $2
                   AND reminded_cycle <= current_cycle
                 ORDER BY next_charge_at
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED) d
           WHERE s.id = d.id
           RETURNING s.id, s.reminded_cycle,
                     (SELECT COALESCE(sum(i.real_price * si.quantity), 0)::bigint
                      FROM subscription_items si JOIN items i ON i.id = si.item_id
                      WHERE si.subscription_id = s.id AND i.selling AND i.deleted_at IS NULL)
                     AS "amount!""#,
        now,
        until,
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Reminder {
            id: SubscriptionId(r.id),
            cycle: r.reminded_cycle,
            amount: Money(r.amount),
        })
        .collect())
}

// ---- a customer's edits -------------------------------------------------------------------

/// A subscription's products: item id → quantity.
pub(crate) type Products = std::collections::BTreeMap<i64, i32>;

/// The subscription's products, which an edit checks the items it names against.
pub(crate) async fn products(conn: &mut PgConnection, id: SubscriptionId) -> Result<Products> {
    let rows = sqlx::query!(
        "SELECT item_id, quantity FROM subscription_items WHERE subscription_id = $1",
        id.0
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.item_id, r.quantity)).collect())
}

/// Removes products; the caller keeps at least one.
pub(crate) async fn remove_items(
    conn: &mut PgConnection,
    id: SubscriptionId,
    item_ids: &[i64],
) -> Result<()> {
    sqlx::query!(
        "DELETE FROM subscription_items WHERE subscription_id = $1 AND item_id = ANY($2)",
        id.0,
        item_ids
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Where the subscription's next cycle orders ship: (name, phone as digits, city, detail
/// address), as the caller validated them.
pub(crate) async fn set_receiver(
    conn: &mut PgConnection,
    id: SubscriptionId,
    (name, phone, city, address): (&str, &str, &str, &str),
) -> Result<()> {
    sqlx::query!(
        "UPDATE subscriptions SET receiver_name = $2, receiver_phone = $3, receiver_city = $4,
                receiver_address = $5
         WHERE id = $1",
        id.0,
        name,
        phone,
        city,
        address
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets each product's quantity, adding the products the subscription does not have yet
/// (`item_ids` and `quantities` pair up; the caller has checked the items it adds).
pub(crate) async fn set_items(
    conn: &mut PgConnection,
    id: SubscriptionId,
    item_ids: &[i64],
    quantities: &[i32],
) -> Result<()> {
    sqlx::query!(
        r#"INSERT INTO subscription_items (subscription_id, item_id, quantity)
           SELECT $1, u.i, u.q FROM unnest($2::bigint[], $3::int[]) AS u(i, q)
           ON CONFLICT (subscription_id, item_id) DO UPDATE SET quantity = EXCLUDED.quantity"#,
        id.0,
        item_ids,
        quantities
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets one quantity for every product of the subscription.
pub(crate) async fn set_quantity(
    conn: &mut PgConnection,
    id: SubscriptionId,
    quantity: i32,
) -> Result<()> {
    sqlx::query!(
        "UPDATE subscription_items SET quantity = $2 WHERE subscription_id = $1",
        id.0,
        quantity
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets the period alone; moving the pending charge is the caller's decision.
pub(crate) async fn set_period(
    conn: &mut PgConnection,
    id: SubscriptionId,
    period_days: i32,
) -> Result<()> {
    sqlx::query!(
        "UPDATE subscriptions SET period_days = $2 WHERE id = $1",
        id.0,
        period_days
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whether a charge of the subscription may be in KakaoPay's hands (an attempt
/// `in_flight` or `unknown`).
pub(crate) async fn has_open_attempt(conn: &mut PgConnection, id: SubscriptionId) -> Result<bool> {
    let open = sqlx::query_scalar!(
        "SELECT 1 FROM charge_attempts WHERE subscription_id = $1 AND status IN ('in_flight', 'unknown')",
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(open.is_some())
}

// ---- reading ------------------------------------------------------------------------------

/// A subscription row as its view is built from.
#[derive(Debug, Clone)]
pub(crate) struct ViewRow {
    pub id: i64,
    pub status: SubscriptionStatus,
    pub period_days: i32,
    pub current_cycle: i32,
    pub due_on: Option<NaiveDate>,
    pub next_charge_at: Option<DateTime<Utc>>,
    pub anchor_at: DateTime<Utc>,
    pub last_charged_at: Option<DateTime<Utc>>,
    pub first_order_id: Option<i64>,
    pub paused_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<String>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub attention_code: Option<String>,
    pub attention_message: Option<String>,
    pub attention_since: Option<DateTime<Utc>>,
    /// Where the next cycle ships: the subscription's receiver, else the first order's.
    pub receiver_name: Option<String>,
    pub receiver_phone: Option<String>,
    pub receiver_city: Option<String>,
    pub receiver_address: Option<String>,
}

/// The subscriptions among `ids` (of `user` only, when given), newest first; an id not
/// found (or not the user's) is left out.
pub(crate) async fn read(
    conn: &mut PgConnection,
    user: Option<UserId>,
    ids: &[i64],
) -> Result<Vec<ViewRow>> {
    let rows = sqlx::query_as!(
        ViewRow,
        r#"SELECT s.id, s.status AS "status: SubscriptionStatus", s.period_days,
                  s.current_cycle, s.due_on, s.next_charge_at, s.anchor_at, s.last_charged_at,
                  s.first_order_id, s.paused_at, s.cancel_reason, s.canceled_at, s.created_at,
                  s.updated_at, s.attention_code, s.attention_message, s.attention_since,
                  COALESCE(s.receiver_name, f.receiver_name) AS receiver_name,
                  COALESCE(s.receiver_phone, f.receiver_phone) AS receiver_phone,
                  COALESCE(s.receiver_city, f.receiver_city) AS receiver_city,
                  COALESCE(s.receiver_address, f.receiver_address) AS receiver_address
           FROM subscriptions s LEFT JOIN orders f ON f.id = s.first_order_id
           WHERE s.id = ANY($1) AND ($2::bigint IS NULL OR s.user_id = $2)
           ORDER BY s.id DESC"#,
        ids,
        user.map(|u| u.0)
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}
