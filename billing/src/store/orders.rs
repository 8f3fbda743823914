//! Order rows: an order with its lines and its payment row is written here and nowhere
//! else — a customer's checkout (`pending_payment`, payment `created`) and a subscription
//! cycle (`paid`, payment `approved`) alike, in one statement. Here too are the order's
//! and the payment's state changes: the order status compare-and-set, its outbox event,
//! and the one way a payment moves ([`advance`]), which every flow goes through.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::db::Wakes;
use crate::error::{Error, Result};
use crate::ids::{OrderId, PaymentId, SubscriptionId, UserId};
use crate::money::Money;
use crate::{jobs, outbox, tasks};

/// A payment's unguessable token (256 random bits, URL-safe): the key of its KakaoPay
/// redirect URLs.
pub fn new_token() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// A line as priced when the order was written (the item's name and price then); a
/// charge attempt keeps its lines in this shape until the cycle's order is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRow {
    pub item_id: i64,
    pub name: String,
    pub unit_price: i64,
    pub unit_discount: i64,
    pub quantity: i32,
}

/// Where a checkout's order ships: (name, phone, city, detail address) as the customer
/// gave them.
#[derive(Debug, Clone, Copy)]
pub struct Receiver<'a> {
    pub name: &'a str,
    pub phone: &'a str,
    pub city: &'a str,
    pub address: &'a str,
}

/// A customer's order to write: `pending_payment`, its payment `created`.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    pub user: UserId,
    /// `one_time` or `subscription`.
    pub kind: &'a str,
    pub receiver: Receiver<'a>,
    pub lines: &'a [LineRow],
    pub total: Money,
    pub discount: Money,
    pub period_days: Option<i32>,
    /// (key, request hash): a second order with the same key is not written.
    pub idempotency: Option<(&'a str, &'a str)>,
    pub from_cart: bool,
}

/// What [`insert`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub order: OrderId,
    pub payment: PaymentId,
}

/// Units over the lines.
fn units(lines: &[LineRow]) -> i32 {
    lines.iter().map(|l| l.quantity).sum()
}

/// Writes a customer's order, its lines and its payment row (partner order id
/// `pv-order-<order id>`, KakaoPay not asked yet) in one statement at `now`. `None` when an
/// order with the same idempotency key exists already (nothing is written).
pub async fn insert(
    conn: &mut PgConnection,
    o: &NewOrder<'_>,
    user_ref: &str,
    now: DateTime<Utc>,
) -> Result<Option<Written>> {
    let item_ids: Vec<i64> = o.lines.iter().map(|l| l.item_id).collect();
    let names: Vec<&str> = o.lines.iter().map(|l| l.name.as_str()).collect();
    let prices: Vec<i64> = o.lines.iter().map(|l| l.unit_price).collect();
    let discounts: Vec<i64> = o.lines.iter().map(|l| l.unit_discount).collect();
    let quantities: Vec<i32> = o.lines.iter().map(|l| l.quantity).collect();
    let row = sqlx::query!(
        r#"WITH o AS (
             INSERT INTO orders (user_id, kind, status, receiver_name, receiver_phone,
                                 receiver_city, receiver_address, total_amount, total_discount,
                                 item_count, period_days, idempotency_key, idempotency_hash,
                                 from_cart, created_at, updated_at)
             VALUES ($1, $2, 'pending_payment', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                     $13, $14, $14)
             ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING id
           ), lines AS (
             INSERT INTO order_items (order_id, item_id, item_name, unit_price, unit_discount,
                                      quantity)
             SELECT o.id, u.* FROM o, unnest($15::bigint[], $16::text[], $17::bigint[],
                                             $18::bigint[], $19::int[]) u
           )
           INSERT INTO payments (order_id, cid_kind, token, partner_order_id, partner_user_id,
                                 amount, status, created_at, updated_at)
           SELECT o.id, $2, $20, 'pv-order-' || o.id, $21, $7, 'created', $14, $14
           FROM o
           RETURNING order_id, id"#,
        o.user.0,
        o.kind,
        o.receiver.name,
        o.receiver.phone,
        o.receiver.city,
        o.receiver.address,
        o.total.0,
        o.discount.0,
        units(o.lines),
        o.period_days,
        o.idempotency.map(|i| i.0),
        o.idempotency.map(|i| i.1),
        o.from_cart,
        now,
        &item_ids,
        &names as &[&str],
        &prices,
        &discounts,
        &quantities,
        new_token(),
        user_ref,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| Written {
        order: OrderId(r.order_id),
        payment: PaymentId(r.id),
    }))
}

/// A subscription cycle's order, charged already: shipped to the subscription's own
/// receiver once the customer has set one, otherwise where its first order went.
#[derive(Debug, Clone)]
pub struct CycleOrder<'a> {
    pub user: UserId,
    pub subscription: SubscriptionId,
    pub cycle: i32,
    pub period_days: i32,
    pub lines: &'a [LineRow],
    pub total: Money,
    pub discount: Money,
    pub paid_at: DateTime<Utc>,
    /// The payment row: what KakaoPay answered (nothing when reconciliation found it).
    pub partner_order_id: &'a str,
    pub partner_user_id: String,
    pub tid: Option<&'a str>,
    pub sid: Option<&'a str>,
    pub aid: Option<&'a str>,
    pub response_digest: Option<&'a str>,
}

/// Writes paid cycle orders — each with its lines, its `approved` payment row and its
/// sales deltas — in one statement, however many (a batch of charges). Returns each
/// order's id in the given order. An order of a (subscription, cycle) that has one
/// already fails the statement (`orders_subscription_cycle_key`).
pub async fn insert_cycle_orders(
    conn: &mut PgConnection,
    orders: &[CycleOrder<'_>],
) -> Result<Vec<OrderId>> {
    let n = orders.len();
    let index: Vec<i32> = (0..n as i32).collect();
    // The lines of all orders, flat, each with its order's index.
    let lines: Vec<(i32, &LineRow)> = orders
        .iter()
        .zip(&index)
        .flat_map(|(o, i)| o.lines.iter().map(move |l| (*i, l)))
        .collect();
    let counts: Vec<i32> = orders.iter().map(|o| units(o.lines)).collect();
    // `n` (the order's index in the batch) ties each order to its lines and payment; it
    // comes back through the order's (subscription, cycle), which is unique.
    let rows = sqlx::query!(
        r#"WITH u AS (
             SELECT * FROM unnest($1::int[], $2::bigint[], $3::bigint[], $4::int[], $5::int[],
                                  $6::bigint[], $7::bigint[], $8::timestamptz[], $9::int[])
                    AS u(n, user_id, subscription_id, cycle, period_days, total, discount,
                         paid_at, item_count)
           ), o AS (
             INSERT INTO orders (user_id, kind, status, receiver_name, receiver_phone,
                                 receiver_city, receiver_address, total_amount, total_discount,
                                 item_count, period_days, subscription_id, cycle, from_cart,
                                 paid_at, sales_counted_at, created_at, updated_at)
             SELECT u.user_id, 'subscription', 'paid',
                    COALESCE(s.receiver_name, f.receiver_name),
                    COALESCE(s.receiver_phone, f.receiver_phone),
                    COALESCE(s.receiver_city, f.receiver_city),
                    COALESCE(s.receiver_address, f.receiver_address), u.total, u.discount,
                    u.item_count, u.period_days, u.subscription_id, u.cycle, false,
                    u.paid_at, u.paid_at, u.paid_at, u.paid_at
             FROM u
             LEFT JOIN subscriptions s ON s.id = u.subscription_id
             LEFT JOIN orders f ON f.id = s.first_order_id
             ORDER BY u.n
             RETURNING id, subscription_id, cycle
           ), k AS (
             SELECT o.id, u.n, u.paid_at, u.total FROM o
             JOIN u ON u.subscription_id = o.subscription_id AND u.cycle = o.cycle
           ), l AS (
             SELECT * FROM unnest($10::int[], $11::bigint[], $12::text[], $13::bigint[],
                                  $14::bigint[], $15::int[])
                    AS l(n, item_id, name, unit_price, unit_discount, quantity)
           ), lines AS (
             INSERT INTO order_items (order_id, item_id, item_name, unit_price, unit_discount,
                                      quantity)
             SELECT k.id, l.item_id, l.name, l.unit_price, l.unit_discount, l.quantity
             FROM l JOIN k USING (n)
           ), sales AS (
             INSERT INTO item_sales_deltas (item_id, order_id, quantity, created_at, updated_at)
             SELECT l.item_id, k.id, sum(l.quantity), k.paid_at, k.paid_at
             FROM l JOIN k USING (n)
             GROUP BY l.item_id, k.id, k.paid_at
           ), pay AS (
             INSERT INTO payments (order_id, cid_kind, token, partner_order_id, partner_user_id,
                                   amount, status, tid, sid, aid, approved_at, response_digest,
                                   created_at, updated_at)
             SELECT k.id, 'subscription', p.token, p.partner_order_id, p.partner_user_id,
                    k.total, 'approved', p.tid, p.sid, p.aid, k.paid_at, p.digest, k.paid_at,
                    k.paid_at
             FROM unnest($16::int[], $17::text[], $18::text[], $19::text[], $20::text[],
                         $21::text[], $22::text[], $23::text[])
                  AS p(n, token, partner_order_id, partner_user_id, tid, sid, aid, digest)
             JOIN k USING (n)
           )
           SELECT n AS "n!", id AS "id!" FROM k"#,
        &index,
        &orders.iter().map(|o| o.user.0).collect::<Vec<_>>(),
        &orders.iter().map(|o| o.subscription.0).collect::<Vec<_>>(),
        &orders.iter().map(|o| o.cycle).collect::<Vec<_>>(),
        &orders.iter().map(|o| o.period_days).collect::<Vec<_>>(),
        &orders.iter().map(|o| o.total.0).collect::<Vec<_>>(),
        &orders.iter().map(|o| o.discount.0).collect::<Vec<_>>(),
        &orders.iter().map(|o| o.paid_at).collect::<Vec<_>>(),
        &counts,
        &lines.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        &lines.iter().map(|(_, l)| l.item_id).collect::<Vec<_>>(),
        &lines
            .iter()
            .map(|(_, l)| l.name.as_str())
            .collect::<Vec<_>>() as &[&str],
        &lines.iter().map(|(_, l)| l.unit_price).collect::<Vec<_>>(),
        &lines
            .iter()
            .map(|(_, l)| l.unit_discount)
            .collect::<Vec<_>>(),
        &lines.iter().map(|(_, l)| l.quantity).collect::<Vec<_>>(),
        &index,
        &orders.iter().map(|_| new_token()).collect::<Vec<_>>(),
        &orders
            .iter()
            .map(|o| o.partner_order_id)
            .collect::<Vec<_>>() as &[&str],
        &orders
            .iter()
            .map(|o| o.partner_user_id.as_str())
            .collect::<Vec<_>>() as &[&str],
        &orders.iter().map(|o| o.tid).collect::<Vec<_>>() as &[Option<&str>],
        &orders.iter().map(|o| o.sid).collect::<Vec<_>>() as &[Option<&str>],
        &orders.iter().map(|o| o.aid).collect::<Vec<_>>() as &[Option<&str>],
        &orders.iter().map(|o| o.response_digest).collect::<Vec<_>>() as &[Option<&str>],
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut ids = vec![None; n];
    for r in rows {
        if let Some(slot) = usize::try_from(r.n).ok().and_then(|i| ids.get_mut(i)) {
            *slot = Some(OrderId(r.id));
        }
    }
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| {
            id.ok_or_else(|| {
                Error::Internal(format!(
                    "cycle order of subscription {} not written",
                    orders[i].subscription.0
                ))
            })
        })
        .collect()
}

// ---- order states and events ----------------------------------------------------------

pub use crate::wakeups::CHANGES_CHANNEL;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum OrderKind {
    OneTime,
    Subscription,
}

/// DESIGN §2's order states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    PaymentReady,
    Approving,
    Paid,
    PaymentFailed,
    Canceled,
    RefundRequested,
    Refunded,
}

impl OrderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderKind::OneTime => "one_time",
            OrderKind::Subscription => "subscription",
        }
    }
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::PaymentReady => "payment_ready",
            OrderStatus::Approving => "approving",
            OrderStatus::Paid => "paid",
            OrderStatus::PaymentFailed => "payment_failed",
            OrderStatus::Canceled => "canceled",
            OrderStatus::RefundRequested => "refund_requested",
            OrderStatus::Refunded => "refunded",
        }
    }

    /// States a worker will move on without the buyer: `?wait` waits only in these.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            OrderStatus::PendingPayment | OrderStatus::Approving | OrderStatus::RefundRequested
        )
    }
}

/// A line as ordered: the item's name and prices when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OrderLine {
    pub item_id: i64,
    pub item_name: String,
    /// KRW paid per unit (after discount).
    #[schema(value_type = i64)]
    pub unit_price: Money,
    #[schema(value_type = i64)]
    pub unit_discount: Money,
    pub quantity: i32,
    #[schema(value_type = i64)]
    pub line_amount: Money,
}

impl OrderLine {
    pub fn new(
        item_id: i64,
        item_name: String,
        unit_price: i64,
        unit_discount: i64,
        quantity: i32,
    ) -> Self {
        Self {
            item_id,
            item_name,
            unit_price: Money(unit_price),
            unit_discount: Money(unit_discount),
            quantity,
            line_amount: Money(unit_price.saturating_mul(i64::from(quantity))),
        }
    }
}

pub async fn load_lines(
    conn: &mut PgConnection,
    order_ids: &[i64],
) -> Result<HashMap<i64, Vec<OrderLine>>> {
    let rows = sqlx::query!(
        r#"SELECT order_id, item_id, item_name, unit_price, unit_discount, quantity
           FROM order_items WHERE order_id = ANY($1) ORDER BY order_id, id"#,
        order_ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut lines: HashMap<i64, Vec<OrderLine>> = HashMap::new();
    for l in rows {
        lines.entry(l.order_id).or_default().push(OrderLine::new(
            l.item_id,
            l.item_name,
            l.unit_price,
            l.unit_discount,
            l.quantity,
        ));
    }
    Ok(lines)
}

/// Counts a paid order's sales, once: stamps `sales_counted_at` and appends one delta per
/// item for the periodic fold ([`crate::items::fold_sales`]) to add to `items.sales`. Runs
/// in the paying transaction, so a paid order is counted exactly when it is paid (an order
/// [`insert`]ed paid is counted by the insert). False if it was counted already (or is
/// not paid).
pub async fn count_sales(conn: &mut PgConnection, id: OrderId, at: DateTime<Utc>) -> Result<bool> {
    let n = sqlx::query!(
        "WITH o AS (
           UPDATE orders SET sales_counted_at = $2
           WHERE id = $1 AND sales_counted_at IS NULL AND paid_at IS NOT NULL
           RETURNING id
         )
         INSERT INTO item_sales_deltas (item_id, order_id, quantity, created_at, updated_at)
         SELECT oi.item_id, o.id, sum(oi.quantity), $2, $2
         FROM o JOIN order_items oi ON oi.order_id = o.id
         GROUP BY oi.item_id, o.id",
        id.0,
        at
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// Locks the order row for the rest of the transaction. Every transaction that changes an
/// order and its payment locks the order first, so two of them never deadlock.
pub async fn lock(conn: &mut PgConnection, id: OrderId) -> Result<()> {
    sqlx::query_scalar!("SELECT id FROM orders WHERE id = $1 FOR UPDATE", id.0)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(())
}

/// Moves an order from one of `from` to `to` (compare-and-set), bumping its version and
/// stamping the matching time column with `at` (the `Clock`'s time); wakes `?wait`ers
/// when the transaction commits. `None` if the order was not in any of `from` (someone
/// else decided first).
pub async fn transition<W: Wakes>(
    conn: &mut W,
    id: OrderId,
    from: &[OrderStatus],
    to: OrderStatus,
    at: DateTime<Utc>,
) -> Result<Option<i32>> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    // Announced after the commit by a `Tx`; on a bare connection the notify rides on the
    // update ($6), so it is sent exactly when the change commits.
    let later = conn.after_commit().is_some();
    let version = sqlx::query!(
        r#"WITH changed AS (
             UPDATE orders SET status = $2, version = version + 1,
                 paid_at = CASE WHEN $2 = 'paid' THEN $5 ELSE paid_at END,
                 canceled_at = CASE WHEN $2 = 'canceled' THEN $5 ELSE canceled_at END,
                 refunded_at = CASE WHEN $2 = 'refunded' THEN $5 ELSE refunded_at END
             WHERE id = $1 AND status = ANY($3)
             RETURNING id, version
           )
           SELECT version AS "version!",
                  CASE WHEN $6 THEN false
                       ELSE pg_notify($4, changed.id::text) IS NOT NULL END AS "inline!"
           FROM changed"#,
        id.0,
        to.as_str(),
        &from as &[&str],
        CHANGES_CHANNEL,
        at,
        later,
    )
    .fetch_optional(conn.conn())
    .await?;
    if version.is_some() {
        if let Some(wake) = conn.after_commit() {
            wake.order(id.0);
        }
    }
    Ok(version.map(|v| v.version))
}

/// The order facts an outbox event carries.
#[derive(Debug, Serialize)]
pub struct OrderEventData {
    pub order_id: i64,
    pub user_id: i64,
    pub kind: OrderKind,
    pub status: OrderStatus,
    pub total_amount: Money,
    pub period_days: Option<i32>,
    pub lines: Vec<OrderLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
}

/// Writes `event_type` for the order at `version`, with its current facts.
pub async fn record_event(
    conn: &mut PgConnection,
    id: OrderId,
    version: i32,
    event_type: &str,
    failure: Option<(&str, &str)>,
) -> Result<()> {
    let o = sqlx::query!(
        r#"SELECT user_id, kind AS "kind: OrderKind", status AS "status: OrderStatus",
                  total_amount, period_days FROM orders WHERE id = $1"#,
        id.0
    )
    .fetch_one(&mut *conn)
    .await?;
    let lines = load_lines(conn, &[id.0])
        .await?
        .remove(&id.0)
        .unwrap_or_default();
    let data = OrderEventData {
        order_id: id.0,
        user_id: o.user_id,
        kind: o.kind,
        status: o.status,
        total_amount: Money(o.total_amount),
        period_days: o.period_days,
        lines,
        failure_code: failure.map(|f| f.0.to_owned()),
        failure_message: failure.map(|f| f.1.to_owned()),
    };
    outbox::record(
        conn,
        outbox::Event {
            event_type,
            aggregate_type: "order",
            aggregate_id: id.0,
            aggregate_version: version,
            data: &data,
        },
    )
    .await?;
    Ok(())
}

// ---- payment states --------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Written with the order; `ready` not yet answered.
    Created,
    /// KakaoPay gave a tid and redirect URLs; waiting for the buyer.
    Ready,
    /// The buyer came back with a `pg_token`; approval under way.
    Approving,
    Approved,
    Failed,
    /// The order was canceled before the buyer paid.
    Abandoned,
    RefundRequested,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Created => "created",
            PaymentStatus::Ready => "ready",
            PaymentStatus::Approving => "approving",
            PaymentStatus::Approved => "approved",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Abandoned => "abandoned",
            PaymentStatus::RefundRequested => "refund_requested",
            PaymentStatus::Refunded => "refunded",
        }
    }
}

/// What a payment's move writes besides its status and the matching time column; `None`
/// leaves a column as it is.
#[derive(Debug, Default)]
pub struct Fields<'a> {
    pub tid: Option<&'a str>,
    pub redirect_pc_url: Option<&'a str>,
    pub redirect_mobile_url: Option<&'a str>,
    pub redirect_app_url: Option<&'a str>,
    pub pg_token: Option<&'a str>,
    pub aid: Option<&'a str>,
    pub sid: Option<&'a str>,
    pub response_digest: Option<String>,
    /// The reason of a failed or abandoned payment, carried by its order's event too.
    pub failure: Option<(&'a str, &'a str)>,
}

/// A payment's move and what it does to its order.
pub struct Move<'a> {
    pub from: &'a [PaymentStatus],
    pub to: PaymentStatus,
    pub fields: Fields<'a>,
    /// The order's move (from one of, to) and the event recorded when it happens; `None`
    /// when the caller moves the order itself.
    pub order: Option<(&'a [OrderStatus], OrderStatus, Option<&'static str>)>,
}

/// What [`advance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advanced {
    /// The payment was no longer in `from`: someone else decided first; nothing written.
    Lost,
    /// The payment moved; the order's new version if the order moved too.
    Moved(Option<i32>),
}

/// The one way a payment changes state, in the caller's transaction: lock its order,
/// compare-and-set the payment (status, its time column, the fields), move the order and
/// record the order's event. Whoever loses the compare-and-set writes nothing.
pub async fn advance<W: Wakes>(
    conn: &mut W,
    order_id: OrderId,
    id: PaymentId,
    mv: Move<'_>,
    now: DateTime<Utc>,
) -> Result<Advanced> {
    lock(conn.conn(), order_id).await?;
    advance_locked(conn, order_id, id, mv, now).await
}

/// [`advance`] for a caller whose transaction already holds the order's lock (a redirect,
/// a cancellation): the same statements without the round trip of locking again.
pub async fn advance_locked<W: Wakes>(
    conn: &mut W,
    order_id: OrderId,
    id: PaymentId,
    mv: Move<'_>,
    now: DateTime<Utc>,
) -> Result<Advanced> {
    let from: Vec<&str> = mv.from.iter().map(|s| s.as_str()).collect();
    let f = &mv.fields;
    let moved = sqlx::query_scalar!(
        r#"UPDATE payments SET status = $2,
                  tid = COALESCE($4, tid),
                  redirect_pc_url = COALESCE($5, redirect_pc_url),
                  redirect_mobile_url = COALESCE($6, redirect_mobile_url),
                  redirect_app_url = COALESCE($7, redirect_app_url),
                  pg_token = COALESCE($8, pg_token),
                  aid = COALESCE($9, aid),
                  sid = COALESCE($10, sid),
                  response_digest = COALESCE($11, response_digest),
                  failure_code = CASE WHEN $2 = 'refunded' THEN NULL
                                      ELSE COALESCE($12, failure_code) END,
                  failure_message = CASE WHEN $2 = 'refunded' THEN NULL
                                         ELSE COALESCE($13, failure_message) END,
                  canceled_amount = CASE WHEN $2 = 'refunded' THEN amount
                                         ELSE canceled_amount END,
                  ready_at = CASE WHEN $2 = 'ready' THEN $14 ELSE ready_at END,
                  approving_at = CASE WHEN $2 = 'approving' THEN $14 ELSE approving_at END,
                  approved_at = CASE WHEN $2 = 'approved' THEN $14 ELSE approved_at END,
                  failed_at = CASE WHEN $2 IN ('failed', 'abandoned') THEN $14
                                   ELSE failed_at END,
                  refunded_at = CASE WHEN $2 = 'refunded' THEN $14 ELSE refunded_at END
           WHERE id = $1 AND status = ANY($3) RETURNING id"#,
        id.0,
        mv.to.as_str(),
        &from as &[&str],
        f.tid,
        f.redirect_pc_url,
        f.redirect_mobile_url,
        f.redirect_app_url,
        f.pg_token,
        f.aid,
        f.sid,
        f.response_digest,
        f.failure.map(|x| x.0),
        f.failure.map(|x| x.1),
        now,
    )
    .fetch_optional(conn.conn())
    .await?;
    if moved.is_none() {
        return Ok(Advanced::Lost);
    }
    let Some((order_from, order_to, event)) = mv.order else {
        return Ok(Advanced::Moved(None));
    };
    let version = transition(conn, order_id, order_from, order_to, now).await?;
    if let (Some(v), Some(event)) = (version, event) {
        // The reason travels with `order.payment_failed` only.
        let failure = f.failure.filter(|_| order_to == OrderStatus::PaymentFailed);
        record_event(conn.conn(), order_id, v, event, failure).await?;
    }
    Ok(Advanced::Moved(version))
}

/// The order was canceled before payment: a payment not yet approving is abandoned (the
/// caller holds the order's lock and moves the order).
pub async fn abandon<W: Wakes>(
    conn: &mut W,
    order_id: OrderId,
    id: PaymentId,
    failure: (&str, &str),
    now: DateTime<Utc>,
) -> Result<()> {
    let mv = Move {
        from: &[PaymentStatus::Created, PaymentStatus::Ready],
        to: PaymentStatus::Abandoned,
        fields: Fields {
            failure: Some(failure),
            ..Fields::default()
        },
        order: None,
    };
    advance_locked(conn, order_id, id, mv, now).await?;
    Ok(())
}

/// A paid order's refund was asked for: the payment follows and `payment.cancel` is queued
/// (the caller holds the order's lock and moves the order).
pub async fn request_refund<W: Wakes>(
    conn: &mut W,
    order_id: OrderId,
    id: PaymentId,
    now: DateTime<Utc>,
) -> Result<()> {
    let mv = Move {
        from: &[PaymentStatus::Approved],
        to: PaymentStatus::RefundRequested,
        fields: Fields::default(),
        order: None,
    };
    if advance_locked(conn, order_id, id, mv, now).await? == Advanced::Lost {
        return Err(Error::Internal(format!(
            "payment {} of a paid order is not approved",
            id.0
        )));
    }
    jobs::enqueue(
        conn,
        &tasks::PaymentCancel {
            payment_id: id.0,
            round: 0,
        },
        now,
    )
    .await?;
    Ok(())
}
