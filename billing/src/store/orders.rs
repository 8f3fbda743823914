//! Order rows: an order with its lines and its payment row is written here and nowhere
//! else — a customer's checkout (`pending_payment`, payment `created`) and a subscription
//! cycle (`paid`, payment `approved`) alike, in one statement.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::error::Result;
use crate::ids::{OrderId, PaymentId, SubscriptionId, UserId};
use crate::money::Money;

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

/// Where the order ships.
#[derive(Debug, Clone, Copy)]
pub enum ShipTo<'a> {
    /// (name, phone, city, detail address) as the customer gave them.
    Given {
        name: &'a str,
        phone: &'a str,
        city: &'a str,
        address: &'a str,
    },
    /// Where the subscription's first order went (a cycle order).
    FirstOrderOf(SubscriptionId),
}

/// The payment row written with the order.
#[derive(Debug, Clone)]
pub enum NewPayment<'a> {
    /// A checkout's: `created`, KakaoPay not asked yet; its partner order id is
    /// `pv-order-<order id>`.
    Created,
    /// A cycle's: charged already, with what KakaoPay answered.
    Approved {
        partner_order_id: &'a str,
        tid: Option<&'a str>,
        sid: Option<&'a str>,
        aid: Option<&'a str>,
        response_digest: Option<&'a str>,
    },
}

/// An order to write.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    pub user: UserId,
    /// `one_time` or `subscription`.
    pub kind: &'a str,
    pub ship_to: ShipTo<'a>,
    pub lines: &'a [LineRow],
    pub total: Money,
    pub discount: Money,
    pub period_days: Option<i32>,
    /// The subscription cycle this order is (cycle orders only).
    pub cycle: Option<(SubscriptionId, i32)>,
    /// (key, request hash): a second order with the same key is not written.
    pub idempotency: Option<(&'a str, &'a str)>,
    pub from_cart: bool,
    pub payment: NewPayment<'a>,
}

/// What [`insert`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub order: OrderId,
    pub payment: PaymentId,
}

impl NewOrder<'_> {
    /// Units over all lines.
    pub fn item_count(&self) -> i32 {
        self.lines.iter().map(|l| l.quantity).sum()
    }
}

/// Writes the order, its lines and its payment row in one statement at `now`. `None`
/// when an order with the same idempotency key exists already (nothing is written).
pub async fn insert(
    conn: &mut PgConnection,
    o: &NewOrder<'_>,
    user_ref: &str,
    now: DateTime<Utc>,
) -> Result<Option<Written>> {
    let (name, phone, city, address, first_of) = match o.ship_to {
        ShipTo::Given {
            name,
            phone,
            city,
            address,
        } => (Some(name), Some(phone), Some(city), Some(address), None),
        ShipTo::FirstOrderOf(s) => (None, None, None, None, Some(s.0)),
    };
    let (status, pay_status, partner_order_id, tid, sid, aid, digest) = match &o.payment {
        NewPayment::Created => ("pending_payment", "created", None, None, None, None, None),
        NewPayment::Approved {
            partner_order_id,
            tid,
            sid,
            aid,
            response_digest,
        } => (
            "paid",
            "approved",
            Some(*partner_order_id),
            *tid,
            *sid,
            *aid,
            *response_digest,
        ),
    };
    let item_ids: Vec<i64> = o.lines.iter().map(|l| l.item_id).collect();
    let names: Vec<&str> = o.lines.iter().map(|l| l.name.as_str()).collect();
    let prices: Vec<i64> = o.lines.iter().map(|l| l.unit_price).collect();
    let discounts: Vec<i64> = o.lines.iter().map(|l| l.unit_discount).collect();
    let quantities: Vec<i32> = o.lines.iter().map(|l| l.quantity).collect();
    let row = sqlx::query!(
        r#"WITH o AS (
             INSERT INTO orders (user_id, kind, status, receiver_name, receiver_phone,
                                 receiver_city, receiver_address, total_amount, total_discount,
                                 item_count, period_days, subscription_id, cycle,
                                 idempotency_key, idempotency_hash, from_cart, paid_at,
                                 created_at, updated_at)
             SELECT $1, $2, $3, COALESCE($4, f.receiver_name), COALESCE($5, f.receiver_phone),
                    COALESCE($6, f.receiver_city), COALESCE($7, f.receiver_address), $8, $9,
                    $10, $11, $12, $13, $14, $15, $16,
                    CASE WHEN $3 = 'paid' THEN $17::timestamptz END, $17, $17
             FROM (SELECT 1) one
             LEFT JOIN subscriptions s ON s.id = $18
             LEFT JOIN orders f ON f.id = s.first_order_id
             ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING id
           ), lines AS (
             INSERT INTO order_items (order_id, item_id, item_name, unit_price, unit_discount,
                                      quantity)
             SELECT o.id, u.* FROM o, unnest($19::bigint[], $20::text[], $21::bigint[],
                                             $22::bigint[], $23::int[]) u
           )
           INSERT INTO payments (order_id, cid_kind, token, partner_order_id, partner_user_id,
                                 amount, status, tid, sid, aid, approved_at, response_digest,
                                 created_at, updated_at)
           SELECT o.id, $2, $24, COALESCE($25, 'pv-order-' || o.id), $26, $8, $27, $28, $29,
                  $30, CASE WHEN $27 = 'approved' THEN $17::timestamptz END, $31, $17, $17
           FROM o
           RETURNING order_id, id"#,
        o.user.0,
        o.kind,
        status,
        name,
        phone,
        city,
        address,
        o.total.0,
        o.discount.0,
        o.item_count(),
        o.period_days,
        o.cycle.map(|c| c.0 .0),
        o.cycle.map(|c| c.1),
        o.idempotency.map(|i| i.0),
        o.idempotency.map(|i| i.1),
        o.from_cart,
        now,
        first_of,
        &item_ids,
        &names as &[&str],
        &prices,
        &discounts,
        &quantities,
        new_token(),
        partner_order_id,
        user_ref,
        pay_status,
        tid,
        sid,
        aid,
        digest,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| Written {
        order: OrderId(r.order_id),
        payment: PaymentId(r.id),
    }))
}
