//! Orders: placing them (explicit lines or a cart checkout, idempotent by key), reading
//! them with their payment (optionally waiting for a state change), canceling and
//! refunding (by the customer, or by an operator on their behalf), and the order status
//! compare-and-set every flow goes through. Operators' search and order page: `operators`.
//!
//! An order is written together with its payment row and its `payment.ready` job in one
//! transaction; everything that talks to KakaoPay happens later, in workers
//! (`crate::payments`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::carts::{CartKind, MAX_QUANTITY, PERIOD_DAYS};
use crate::editor::Editor;
use crate::error::{Error, FieldError, Result};
use crate::ids::{OrderId, PaymentId, UserId};
use crate::money::Money;
use crate::page::{Page, PageRequest};
use crate::store;
use crate::store::orders::load_lines;
use crate::store::orders::PaymentStatus;
pub use crate::store::orders::{
    lock, record_event, transition, OrderEventData, OrderKind, OrderLine, OrderStatus,
    CHANGES_CHANNEL,
};
use crate::validate::{self, Checks};
use crate::{jobs, tasks, Ctx};

pub mod operators;

/// Lines per order; a real basket is far smaller, and KakaoPay's item name summarises them.
pub const MAX_LINES: usize = 50;

/// Who receives the parcel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Receiver {
    #[schema(example = "홍길동")]
    pub name: String,
    /// Korean mobile number; stored as digits.
    #[schema(example = "010-1234-5678")]
    pub phone: String,
    #[schema(example = "Seoul")]
    pub city: String,
    #[schema(example = "1 Sejong-daero, 101-1001")]
    pub detail_address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineInput {
    pub item_id: i64,
    /// 1–99.
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: i32,
}

/// `POST /api/orders`: explicit `lines`, or `from_cart: true` to check out the cart of the
/// order's kind (for a subscription cart, the lines of one `period_days`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NewOrder {
    #[schema(required = true)]
    pub kind: Option<OrderKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<LineInput>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_cart: bool,
    /// Subscription orders: ship and charge every 7–365 days. From a cart it selects the
    /// cart lines of that period (optional when the cart holds one period only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 7, maximum = 365)]
    pub period_days: Option<i32>,
    #[schema(required = true)]
    pub receiver: Option<Receiver>,
}

/// The order's payment as the buyer's client needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PaymentView {
    pub status: PaymentStatus,
    /// Where to send the buyer (PC web), while the payment waits for them.
    pub redirect_url: Option<String>,
    pub redirect_mobile_url: Option<String>,
    pub redirect_app_url: Option<String>,
    /// The PG's code (e.g. `-780`) or ours (`buyer_canceled`, `pg_unavailable`, …).
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    #[schema(value_type = i64)]
    pub refunded_amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Order {
    pub id: OrderId,
    pub kind: OrderKind,
    pub status: OrderStatus,
    /// KRW to pay: Σ unit_price × quantity.
    #[schema(value_type = i64)]
    pub total_amount: Money,
    #[schema(value_type = i64)]
    pub total_discount: Money,
    pub item_count: i32,
    pub period_days: Option<i32>,
    pub subscription_id: Option<i64>,
    pub cycle: Option<i32>,
    pub receiver: Receiver,
    pub lines: Vec<OrderLine>,
    pub payment: Option<PaymentView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub refunded_at: Option<DateTime<Utc>>,
}

/// The result of `place`: the order and whether it was created by an earlier request
/// with the same idempotency key.
#[derive(Debug)]
pub struct Placed {
    pub order: Order,
    pub replayed: bool,
}

// ---- placing ----------------------------------------------------------------------------

/// A line as priced now (written as the order's line).
type Priced = store::orders::LineRow;

fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::validation(
            "Idempotency-Key",
            "must be 1–255 visible ASCII characters",
        ))
    }
}

/// The request's fingerprint: its canonical JSON (fields in declaration order).
fn request_hash(input: &NewOrder) -> Result<String> {
    let body = serde_json::to_vec(input)
        .map_err(|e| Error::Internal(format!("order request does not serialize: {e}")))?;
    Ok(hex::encode(Sha256::digest(&body)))
}

/// The receiver's checks (an order's, and a subscription's when the customer changes
/// where it ships) and its stored form: trimmed, the phone as digits.
pub(crate) fn validate_receiver(r: Option<&Receiver>, checks: &mut Checks) -> Option<Receiver> {
    let Some(r) = r else {
        checks.check("receiver", Err("is required"));
        return None;
    };
    let bounded = |v: &str, max: usize| -> Result<(), &'static str> {
        validate::required(v)?;
        // A line break or escape would end up on the parcel's label and in the partner's
        // file as something other than an address.
        if v.chars().any(char::is_control) {
            Err("must not contain control characters")
        } else if v.trim().chars().count() > max {
            Err("is too long")
        } else {
            Ok(())
        }
    };
    checks.check("receiver.name", bounded(&r.name, 50));
    checks.check("receiver.phone", validate::phone(&r.phone));
    checks.check("receiver.city", bounded(&r.city, 100));
    checks.check("receiver.detail_address", bounded(&r.detail_address, 200));
    Some(Receiver {
        name: r.name.trim().to_owned(),
        phone: validate::normalize_phone(&r.phone).unwrap_or_default(),
        city: r.city.trim().to_owned(),
        detail_address: r.detail_address.trim().to_owned(),
    })
}

/// Checks the request's shape (before any database work).
fn validate_shape(input: &NewOrder) -> Result<(OrderKind, Receiver)> {
    let mut checks = Checks::default();
    if input.kind.is_none() {
        checks.check("kind", Err("is required: one_time or subscription"));
    }
    match (&input.lines, input.from_cart) {
        (Some(_), true) => checks.check("lines", Err("give either lines or from_cart, not both")),
        (None, false) => checks.check("lines", Err("is required (or from_cart: true)")),
        (Some(lines), false) => {
            if lines.is_empty() {
                checks.check("lines", Err("must not be empty"));
            }
            if lines.len() > MAX_LINES {
                checks.check("lines", Err("has too many lines (at most 50)"));
            }
            let mut seen = std::collections::HashSet::new();
            for (i, l) in lines.iter().enumerate() {
                if !(1..=MAX_QUANTITY).contains(&l.quantity) {
                    checks.0.push(FieldError::new(
                        format!("lines[{i}].quantity"),
                        "must be between 1 and 99",
                    ));
                }
                if !seen.insert(l.item_id) {
                    checks.0.push(FieldError::new(
                        format!("lines[{i}].item_id"),
                        "appears twice; put the whole quantity on one line",
                    ));
                }
            }
        }
        (None, true) => {}
    }
    match (input.kind, input.period_days) {
        (Some(OrderKind::OneTime), Some(_)) => {
            checks.check("period_days", Err("is only for subscription orders"))
        }
        (Some(OrderKind::Subscription), None) if !input.from_cart => {
            checks.check("period_days", Err("is required for a subscription order"))
        }
        (_, Some(p)) if !PERIOD_DAYS.contains(&p) => {
            checks.check("period_days", Err("must be between 7 and 365"))
        }
        _ => {}
    }
    let receiver = validate_receiver(input.receiver.as_ref(), &mut checks);
    checks.finish()?;
    match (input.kind, receiver) {
        (Some(kind), Some(receiver)) => Ok((kind, receiver)),
        _ => Err(Error::Internal(
            "order validation let a missing field through".into(),
        )),
    }
}

/// Explicit lines priced at the items' current prices; unknown or off-sale items refused
/// (an unknown one named as `<field>[i].item_id`).
pub(crate) async fn price_lines(
    conn: &mut PgConnection,
    field: &str,
    lines: &[LineInput],
) -> Result<Vec<Priced>> {
    let ids: Vec<i64> = lines.iter().map(|l| l.item_id).collect();
    let rows = sqlx::query!(
        r#"SELECT id, title, real_price AS "real_price!", discount_price AS "discount_price!",
                  (selling AND deleted_at IS NULL) AS "available!"
           FROM items WHERE id = ANY($1)"#,
        &ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let by_id: HashMap<i64, _> = rows.into_iter().map(|r| (r.id, r)).collect();
    let mut missing = Vec::new();
    let mut priced = Vec::with_capacity(lines.len());
    let mut unavailable = false;
    for (i, l) in lines.iter().enumerate() {
        match by_id.get(&l.item_id) {
            None => missing.push(FieldError::new(
                format!("{field}[{i}].item_id"),
                "no such item",
            )),
            Some(r) if !r.available => unavailable = true,
            Some(r) => priced.push(Priced {
                item_id: r.id,
                name: r.title.clone(),
                unit_price: r.real_price,
                unit_discount: r.discount_price,
                quantity: l.quantity,
            }),
        }
    }
    if !missing.is_empty() {
        return Err(Error::Validation(missing));
    }
    if unavailable {
        return Err(Error::ItemUnavailable);
    }
    Ok(priced)
}

/// The cart's lines (of one period for a subscription cart) at current prices.
async fn price_cart(
    conn: &mut PgConnection,
    user: UserId,
    kind: OrderKind,
    period_days: Option<i32>,
) -> Result<(Vec<Priced>, Option<i32>)> {
    let cart_kind = match kind {
        OrderKind::OneTime => CartKind::Normal,
        OrderKind::Subscription => CartKind::Subscription,
    };
    let cart = crate::carts::load(conn, user, cart_kind).await?;
    let period = match (kind, period_days) {
        (OrderKind::OneTime, _) => None,
        (OrderKind::Subscription, Some(p)) => Some(p),
        (OrderKind::Subscription, None) => {
            let mut periods: Vec<i32> = cart.lines.iter().filter_map(|l| l.period_days).collect();
            periods.sort_unstable();
            periods.dedup();
            match periods.as_slice() {
                [p] => Some(*p),
                [] => None,
                _ => {
                    return Err(Error::validation(
                        "period_days",
                        "the subscription cart holds lines of several periods; choose one",
                    ))
                }
            }
        }
    };
    let chosen: Vec<_> = cart
        .lines
        .into_iter()
        .filter(|l| period.is_none() || l.period_days == period)
        .collect();
    if chosen.is_empty() {
        return Err(Error::validation(
            "from_cart",
            "the cart has no lines to order",
        ));
    }
    if chosen.len() > MAX_LINES {
        return Err(Error::validation(
            "from_cart",
            "the cart has too many lines (at most 50)",
        ));
    }
    if chosen.iter().any(|l| !l.available) {
        return Err(Error::ItemUnavailable);
    }
    let priced = chosen
        .into_iter()
        .map(|l| Priced {
            item_id: l.item_id,
            name: l.title,
            unit_price: l.unit_price.0,
            unit_discount: l.unit_discount.0,
            quantity: l.quantity,
        })
        .collect();
    Ok((priced, period))
}

/// Places an order: validates, prices from current prices, writes the order, its lines,
/// its payment and the `payment.ready` job in one transaction. With an idempotency key,
/// a repeat of the same request returns the first order and creates nothing.
pub async fn place(
    ctx: &Ctx,
    user: UserId,
    input: &NewOrder,
    idempotency_key: Option<&str>,
) -> Result<Placed> {
    if let Some(key) = idempotency_key {
        validate_key(key)?;
    }
    let (kind, receiver) = validate_shape(input)?;
    let hash = idempotency_key.map(|_| request_hash(input)).transpose()?;
    if let (Some(key), Some(hash)) = (idempotency_key, hash.as_deref()) {
        if let Some(order) = replay(ctx, user, key, hash).await? {
            return Ok(Placed {
                order,
                replayed: true,
            });
        }
    }

    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let (lines, period_days) = match &input.lines {
        Some(lines) => (
            price_lines(&mut tx, "lines", lines).await?,
            input.period_days,
        ),
        None => price_cart(&mut tx, user, kind, input.period_days).await?,
    };
    let mut total: i64 = 0;
    let mut discount: i64 = 0;
    let mut count: i32 = 0;
    for l in &lines {
        let q = i64::from(l.quantity);
        total = l
            .unit_price
            .checked_mul(q)
            .and_then(|a| total.checked_add(a))
            .ok_or_else(|| Error::validation("lines", "the total is too large"))?;
        discount = discount.saturating_add(l.unit_discount.saturating_mul(q));
        count += l.quantity;
    }
    if total <= 0 {
        return Err(Error::validation(
            "lines",
            "the order total must be positive",
        ));
    }

    let written = store::orders::insert(
        &mut tx,
        &store::orders::NewOrder {
            user,
            kind: kind.as_str(),
            receiver: store::orders::Receiver {
                name: &receiver.name,
                phone: &receiver.phone,
                city: &receiver.city,
                address: &receiver.detail_address,
            },
            lines: &lines,
            total: Money(total),
            discount: Money(discount),
            period_days,
            idempotency: idempotency_key.zip(hash.as_deref()),
            from_cart: input.from_cart,
        },
        &format!("pv-user-{}", user.0),
        now,
    )
    .await?;
    let Some(written) = written else {
        // A concurrent request with the same key committed first: answer with its order.
        drop(tx);
        let (Some(key), Some(hash)) = (idempotency_key, hash.as_deref()) else {
            return Err(Error::Internal(
                "order insert conflicted without a key".into(),
            ));
        };
        let order = replay(ctx, user, key, hash)
            .await?
            .ok_or_else(|| Error::Internal("idempotent order vanished".into()))?;
        return Ok(Placed {
            order,
            replayed: true,
        });
    };
    let order_id = written.order.0;
    jobs::enqueue(
        &mut tx,
        &tasks::PaymentReady {
            payment_id: written.payment.0,
        },
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(order_id, user_id = user.0, total, kind = ?kind, "order placed");
    // Answered from what was written (no read-back): the order as this request left it.
    let order = Order {
        id: OrderId(order_id),
        kind,
        status: OrderStatus::PendingPayment,
        total_amount: Money(total),
        total_discount: Money(discount),
        item_count: count,
        period_days,
        subscription_id: None,
        cycle: None,
        receiver,
        lines: lines
            .into_iter()
            .map(|l| OrderLine::new(l.item_id, l.name, l.unit_price, l.unit_discount, l.quantity))
            .collect(),
        payment: Some(PaymentView {
            status: PaymentStatus::Created,
            redirect_url: None,
            redirect_mobile_url: None,
            redirect_app_url: None,
            failure_code: None,
            failure_message: None,
            approved_at: None,
            refunded_amount: Money::ZERO,
        }),
        created_at: now,
        updated_at: now,
        paid_at: None,
        canceled_at: None,
        refunded_at: None,
    };
    Ok(Placed {
        order,
        replayed: false,
    })
}

/// The order an earlier request with `key` created, if any; a different body is refused.
async fn replay(ctx: &Ctx, user: UserId, key: &str, hash: &str) -> Result<Option<Order>> {
    let found = sqlx::query!(
        "SELECT id, idempotency_hash FROM orders WHERE user_id = $1 AND idempotency_key = $2",
        user.0,
        key
    )
    .fetch_optional(ctx.db.pool())
    .await?;
    let Some(row) = found else { return Ok(None) };
    if row.idempotency_hash.as_deref() != Some(hash) {
        return Err(Error::IdempotencyKeyReused);
    }
    fetch(ctx.db.pool(), Some(user), OrderId(row.id)).await
}

// ---- reading ----------------------------------------------------------------------------

/// Loads orders by id (of `user` only, when given) with lines and payment, in id order
/// descending.
async fn fetch_many(db: &PgPool, user: Option<UserId>, ids: &[i64]) -> Result<Vec<Order>> {
    let mut conn = db.acquire().await?;
    let rows = sqlx::query!(
        r#"SELECT o.id, o.kind AS "kind: OrderKind", o.status AS "status: OrderStatus",
                  o.total_amount, o.total_discount, o.item_count, o.period_days,
                  o.subscription_id, o.cycle, o.receiver_name, o.receiver_phone,
                  o.receiver_city, o.receiver_address, o.created_at, o.updated_at, o.paid_at,
                  o.canceled_at, o.refunded_at,
                  p.status AS "pay_status?: PaymentStatus",
                  p.redirect_pc_url AS "redirect_pc_url?", p.redirect_mobile_url AS "redirect_mobile_url?",
                  p.redirect_app_url AS "redirect_app_url?", p.failure_code AS "failure_code?",
                  p.failure_message AS "failure_message?", p.approved_at AS "approved_at?",
                  p.canceled_amount AS "canceled_amount?"
           FROM orders o LEFT JOIN payments p ON p.order_id = o.id
           WHERE o.id = ANY($1) AND ($2::bigint IS NULL OR o.user_id = $2)
           ORDER BY o.id DESC"#,
        ids,
        user.map(|u| u.0),
    )
    .fetch_all(&mut *conn)
    .await?;
    let found: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut lines = load_lines(&mut conn, &found).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let payment = r.pay_status.map(|status| {
                // The redirect is only useful while the payment waits for the buyer.
                let waiting = status == PaymentStatus::Ready;
                PaymentView {
                    status,
                    redirect_url: r.redirect_pc_url.filter(|_| waiting),
                    redirect_mobile_url: r.redirect_mobile_url.filter(|_| waiting),
                    redirect_app_url: r.redirect_app_url.filter(|_| waiting),
                    failure_code: r.failure_code,
                    failure_message: r.failure_message,
                    approved_at: r.approved_at,
                    refunded_amount: Money(r.canceled_amount.unwrap_or(0)),
                }
            });
            Order {
                id: OrderId(r.id),
                kind: r.kind,
                status: r.status,
                total_amount: Money(r.total_amount),
                total_discount: Money(r.total_discount),
                item_count: r.item_count,
                period_days: r.period_days,
                subscription_id: r.subscription_id,
                cycle: r.cycle,
                receiver: Receiver {
                    name: r.receiver_name,
                    phone: r.receiver_phone,
                    city: r.receiver_city,
                    detail_address: r.receiver_address,
                },
                lines: lines.remove(&r.id).unwrap_or_default(),
                payment,
                created_at: r.created_at,
                updated_at: r.updated_at,
                paid_at: r.paid_at,
                canceled_at: r.canceled_at,
                refunded_at: r.refunded_at,
            }
        })
        .collect())
}

/// The lines of orders, by order id, in the order they were placed.
async fn fetch(db: &PgPool, user: Option<UserId>, id: OrderId) -> Result<Option<Order>> {
    Ok(fetch_many(db, user, &[id.0]).await?.into_iter().next())
}

/// One of the user's orders (404 for anyone else's). With `wait`, an order in a transient
/// state is answered as soon as its state changes, or when `wait` runs out.
pub async fn get(
    ctx: &Ctx,
    watch: &OrderWatch,
    user: UserId,
    id: OrderId,
    wait: Option<Duration>,
) -> Result<Order> {
    let wait = wait.filter(|w| !w.is_zero());
    // Subscribe before reading so a change committed in between is not missed.
    let mut sub = wait.map(|_| watch.subscribe(id));
    let order = fetch(ctx.db.pool(), Some(user), id)
        .await?
        .ok_or(Error::NotFound)?;
    let (Some(wait), Some(sub)) = (wait, sub.as_mut()) else {
        return Ok(order);
    };
    if !order.status.is_transient() {
        return Ok(order);
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if tokio::time::timeout_at(deadline, sub.changed())
            .await
            .is_err()
        {
            return Ok(order);
        }
        let now = fetch(ctx.db.pool(), Some(user), id)
            .await?
            .ok_or(Error::NotFound)?;
        if now.status != order.status {
            return Ok(now);
        }
    }
}

/// `GET /api/orders`: the user's orders, newest first, optionally of one status.
pub async fn list(
    ctx: &Ctx,
    user: UserId,
    status: Option<OrderStatus>,
    page: PageRequest,
) -> Result<Page<Order>> {
    let page = page.validate()?;
    let status = status.map(OrderStatus::as_str);
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM orders WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)"#,
        user.0,
        status
    )
    .fetch_one(ctx.db.pool())
    .await?;
    let ids = sqlx::query_scalar!(
        r#"SELECT id FROM orders WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
           ORDER BY id DESC LIMIT $3 OFFSET $4"#,
        user.0,
        status,
        page.size,
        page.offset()
    )
    .fetch_all(ctx.db.pool())
    .await?;
    let items = fetch_many(ctx.db.pool(), Some(user), &ids).await?;
    Ok(Page {
        items,
        page: page.page,
        size: page.size,
        total,
    })
}

// ---- state changes ----------------------------------------------------------------------

/// `POST /api/orders/{id}/cancel`: before payment the order is canceled (a readied
/// payment is abandoned); after payment a refund is requested and a worker refunds it.
/// An operator (the console's refund, on the customer's behalf) refunds a paid order only:
/// an unpaid one is `OrderNotPaid`, and the request is audited in its transaction.
pub async fn cancel<'a>(ctx: &Ctx, by: impl Into<Editor<'a>>, id: OrderId) -> Result<Order> {
    let by = by.into();
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let row = sqlx::query!(
        r#"SELECT o.status AS "status: OrderStatus", p.id AS "payment_id?",
                  o.total_amount
           FROM orders o LEFT JOIN payments p ON p.order_id = o.id
           WHERE o.id = $1 AND ($2::bigint IS NULL OR o.user_id = $2)
           FOR UPDATE OF o"#,
        id.0,
        by.owner().map(|u| u.0)
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    let payment = row.payment_id.map(PaymentId);
    match row.status {
        OrderStatus::PendingPayment | OrderStatus::PaymentReady
            if matches!(by, Editor::Operator(_)) =>
        {
            return Err(Error::OrderNotPaid);
        }
        OrderStatus::PendingPayment | OrderStatus::PaymentReady => {
            let version = transition(
                &mut tx,
                id,
                &[OrderStatus::PendingPayment, OrderStatus::PaymentReady],
                OrderStatus::Canceled,
                now,
            )
            .await?
            .ok_or(Error::Internal("locked order changed state".into()))?;
            if let Some(p) = payment {
                let failure = ("customer_canceled", "canceled by the customer");
                store::orders::abandon(&mut tx, id, p, failure, ctx.clock.now()).await?;
            }
            record_event(&mut tx, id, version, "order.canceled", None).await?;
            tracing::info!(order_id = id.0, "order canceled before payment");
        }
        OrderStatus::Paid => {
            let p = payment.ok_or(Error::Internal("paid order without a payment".into()))?;
            transition(
                &mut tx,
                id,
                &[OrderStatus::Paid],
                OrderStatus::RefundRequested,
                now,
            )
            .await?
            .ok_or(Error::Internal("locked order changed state".into()))?;
            store::orders::request_refund(&mut tx, id, p, ctx.clock.now()).await?;
            let details = serde_json::json!({ "amount": row.total_amount, "payment_id": p.0 });
            by.audit(
                &mut tx,
                crate::audit::Action::OrderRefundRequested,
                crate::audit::Target::row("order", &id),
                details,
                now,
            )
            .await?;
            tracing::info!(order_id = id.0, "refund requested");
        }
        OrderStatus::Approving => return Err(Error::PaymentInProgress),
        OrderStatus::Canceled => return Err(Error::AlreadyCanceled),
        OrderStatus::RefundRequested | OrderStatus::Refunded => return Err(Error::AlreadyRefunded),
        OrderStatus::PaymentFailed => return Err(Error::OrderNotCancelable),
    }
    tx.commit().await?;
    fetch(ctx.db.pool(), by.owner(), id)
        .await?
        .ok_or(Error::NotFound)
}

// ---- follow-up jobs of a paid order -------------------------------------------------------

/// Task `orders.count_sales`, for rows queued before sales were counted in the paying
/// transaction: counts the order's sales the same way, once.
pub async fn count_sales(ctx: &Ctx, id: OrderId) -> Result<()> {
    let mut tx = ctx.db.begin().await?;
    store::orders::count_sales(&mut tx, id, ctx.clock.now()).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes a cart checkout's lines from the cart they came from, once per order.
pub async fn clear_cart(ctx: &Ctx, id: OrderId) -> Result<()> {
    let mut tx = ctx.db.begin().await?;
    let order = sqlx::query!(
        r#"UPDATE orders SET cart_cleared_at = $2
           WHERE id = $1 AND cart_cleared_at IS NULL AND from_cart AND paid_at IS NOT NULL
           RETURNING user_id, kind AS "kind: OrderKind""#,
        id.0,
        ctx.clock.now()
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(order) = order else { return Ok(()) };
    let cart_kind = match order.kind {
        OrderKind::OneTime => CartKind::Normal,
        OrderKind::Subscription => CartKind::Subscription,
    };
    sqlx::query!(
        "DELETE FROM cart_items ci USING carts c
         WHERE ci.cart_id = c.id AND c.user_id = $1 AND c.kind = $2
           AND ci.item_id IN (SELECT item_id FROM order_items WHERE order_id = $3)",
        order.user_id,
        cart_kind.as_str(),
        id.0
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

// ---- waiting for changes ----------------------------------------------------------------

/// Wakes `?wait` requests when their order changes: one LISTEN connection per process
/// fans `pillivery_orders` notifications out to the waiters of that order only.
#[derive(Clone, Debug, Default)]
pub struct OrderWatch {
    slots: Arc<Mutex<HashMap<i64, Slot>>>,
}

#[derive(Debug)]
struct Slot {
    tx: watch::Sender<u64>,
    waiters: usize,
}

/// One waiter's registration; unregisters on drop.
pub struct Subscription {
    id: i64,
    rx: watch::Receiver<u64>,
    watch: OrderWatch,
}

impl Subscription {
    /// Resolves at the next notification about the order (or a reconnect).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut slots = self.watch.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get_mut(&self.id) {
            slot.waiters -= 1;
            if slot.waiters == 0 {
                slots.remove(&self.id);
            }
        }
    }
}

impl OrderWatch {
    /// Starts listening in the background (reconnecting as needed).
    pub fn start(db: PgPool) -> Self {
        let watch = OrderWatch::default();
        let w = watch.clone();
        tokio::spawn(async move { w.listen(db).await });
        watch
    }

    pub fn subscribe(&self, id: OrderId) -> Subscription {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(id.0).or_insert_with(|| Slot {
            tx: watch::channel(0).0,
            waiters: 0,
        });
        slot.waiters += 1;
        Subscription {
            id: id.0,
            rx: slot.tx.subscribe(),
            watch: self.clone(),
        }
    }

    fn wake(&self, id: Option<i64>) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match id {
            Some(id) => {
                if let Some(slot) = slots.get(&id) {
                    slot.tx.send_modify(|n| *n += 1);
                }
            }
            // After a reconnect notifications may have been missed: everyone re-reads.
            None => slots.values().for_each(|s| s.tx.send_modify(|n| *n += 1)),
        }
    }

    async fn listen(&self, db: PgPool) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut listener = match PgListener::connect_with(&db).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "order watch cannot connect; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANGES_CHANNEL).await {
                tracing::warn!(error = %e, "order watch cannot LISTEN; retrying");
                tokio::time::sleep(backoff).await;
                continue;
            }
            backoff = Duration::from_millis(100);
            self.wake(None);
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => match crate::wakeups::order_ids(n.payload()) {
                        Some(ids) => ids.into_iter().for_each(|id| self.wake(Some(id))),
                        None => self.wake(None),
                    },
                    // The connection dropped; it reconnects on the next call.
                    Ok(None) => self.wake(None),
                    Err(e) => {
                        tracing::warn!(error = %e, "order watch lost its connection");
                        break;
                    }
                }
            }
        }
    }
}
