//! Operators' reads of orders: the console's search (by id, a customer's e-mail or phone,
//! status, kind) and one order's whole story (lines, payment, the charge attempts of a
//! cycle order, its outbox events with their deliveries, the audit log's entries on it).

use chrono::{DateTime, Utc};

use super::{fetch_many, Order, OrderKind, OrderStatus};
use crate::audit;
use crate::error::{Error, Result};
use crate::history::{self, attempts, Attempt, EventEntry};
use crate::ids::{SubscriptionId, UserId};
use crate::money::Money;
use crate::page::{Page, PageRequest};
use crate::search::{ids_and_total, lookup, Hit, COUNT_CAP};
use crate::store::orders::PaymentStatus;
use crate::Ctx;

/// How much of an order's history its page shows.
const HISTORY_LIMIT: i64 = 200;

/// The order search's filters, all optional and combined.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    /// An order id, a customer's e-mail (any case) or phone (with or without dashes).
    pub q: String,
    pub status: Option<OrderStatus>,
    pub kind: Option<OrderKind>,
}

/// One row of the results.
#[derive(Debug, Clone)]
pub struct FoundOrder {
    pub id: i64,
    pub kind: OrderKind,
    pub status: OrderStatus,
    pub total_amount: Money,
    pub item_count: i32,
    pub user_id: UserId,
    pub email: String,
    pub subscription_id: Option<i64>,
    pub cycle: Option<i32>,
    pub created_at: DateTime<Utc>,
}

/// The orders matching `filter`, newest first. `total` counts up to [`COUNT_CAP`] (+1
/// when there are more).
pub async fn search(
    ctx: &Ctx,
    filter: &OrderFilter,
    page: PageRequest,
) -> Result<Page<FoundOrder>> {
    let page = page.validate()?;
    let mut conn = ctx.db.acquire().await?;
    let (status, kind) = (filter.status, filter.kind);
    let (limit, offset) = (page.limit(), page.offset());
    // Each case its own statement, so each keeps its index under a generic plan; a broad
    // one counts its matches up to the cap in the same round trip.
    let hits = match lookup(&mut conn, &filter.q).await? {
        Some(l) => {
            sqlx::query_as!(
                Hit,
                r#"SELECT id, count(*) OVER () AS "total!" FROM orders
                   WHERE (id = $1 OR user_id = ANY($2))
                     AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR kind = $4)
                   ORDER BY id DESC LIMIT $5 OFFSET $6"#,
                l.id,
                &l.users,
                status as Option<OrderStatus>,
                kind as Option<OrderKind>,
                limit,
                offset
            )
            .fetch_all(&mut *conn)
            .await?
        }
        None => match status {
            Some(status) => {
                sqlx::query_as!(
                    Hit,
                    r#"WITH page AS (
                         SELECT id FROM orders WHERE status = $1 AND ($2::text IS NULL OR kind = $2)
                         ORDER BY id DESC LIMIT $3 OFFSET $4
                       ), n AS (
                         SELECT count(*) AS total FROM (SELECT 1 FROM orders
                           WHERE status = $1 AND ($2::text IS NULL OR kind = $2) LIMIT $5) capped
                       )
                       SELECT page.id AS "id!", n.total AS "total!" FROM page CROSS JOIN n
                       ORDER BY page.id DESC"#,
                    status as OrderStatus,
                    kind as Option<OrderKind>,
                    limit,
                    offset,
                    COUNT_CAP + 1
                )
                .fetch_all(&mut *conn)
                .await?
            }
            None => {
                sqlx::query_as!(
                    Hit,
                    r#"WITH page AS (
                         SELECT id FROM orders WHERE ($1::text IS NULL OR kind = $1)
                         ORDER BY id DESC LIMIT $2 OFFSET $3
                       ), n AS (
                         SELECT count(*) AS total FROM (SELECT 1 FROM orders
                           WHERE ($1::text IS NULL OR kind = $1) LIMIT $4) capped
                       )
                       SELECT page.id AS "id!", n.total AS "total!" FROM page CROSS JOIN n
                       ORDER BY page.id DESC"#,
                    kind as Option<OrderKind>,
                    limit,
                    offset,
                    COUNT_CAP + 1
                )
                .fetch_all(&mut *conn)
                .await?
            }
        },
    };
    let (ids, total) = ids_and_total(hits);
    let items = sqlx::query!(
        r#"SELECT o.id, o.kind AS "kind: OrderKind", o.status AS "status: OrderStatus",
                  o.total_amount, o.item_count, o.user_id, u.email, o.subscription_id, o.cycle,
                  o.created_at
           FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id = ANY($1)
           ORDER BY o.id DESC"#,
        &ids
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| FoundOrder {
        id: r.id,
        kind: r.kind,
        status: r.status,
        total_amount: Money(r.total_amount),
        item_count: r.item_count,
        user_id: UserId(r.user_id),
        email: r.email,
        subscription_id: r.subscription_id,
        cycle: r.cycle,
        created_at: r.created_at,
    })
    .collect();
    Ok(Page::new(items, page, total))
}

/// An order's payment row as operators read it.
#[derive(Debug, Clone)]
pub struct PaymentFacts {
    pub id: i64,
    pub status: PaymentStatus,
    pub tid: Option<String>,
    pub amount: Money,
    pub refunded_amount: Money,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub approved_at: Option<DateTime<Utc>>,
    pub refunded_at: Option<DateTime<Utc>>,
}

/// What the console's order page shows.
#[derive(Debug, Clone)]
pub struct OrderStory {
    pub order: Order,
    pub user_id: UserId,
    pub email: String,
    pub phone: String,
    pub payment: Option<PaymentFacts>,
    /// A cycle order's charge attempts (declines before the one that paid it), newest
    /// first.
    pub attempts: Vec<(DateTime<Utc>, Attempt)>,
    /// Newest first.
    pub events: Vec<EventEntry>,
    /// Newest first.
    pub audit: Vec<audit::Entry>,
}

impl OrderStory {
    /// Whether an operator can ask for its refund (a paid order).
    pub fn refundable(&self) -> bool {
        self.order.status == OrderStatus::Paid
    }
}

/// The console's order page.
pub async fn story(ctx: &Ctx, id: crate::ids::OrderId) -> Result<OrderStory> {
    let order = fetch_many(ctx.db.pool(), None, &[id.0])
        .await?
        .pop()
        .ok_or(Error::NotFound)?;
    let mut conn = ctx.db.acquire().await?;
    let owner = sqlx::query!(
        "SELECT u.id, u.email, u.phone FROM orders o JOIN users u ON u.id = o.user_id
         WHERE o.id = $1",
        id.0
    )
    .fetch_one(&mut *conn)
    .await?;
    let payment = sqlx::query!(
        r#"SELECT id, status AS "status: PaymentStatus", tid, amount, canceled_amount,
                  failure_code, failure_message, created_at, approved_at, refunded_at
           FROM payments WHERE order_id = $1"#,
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(|p| PaymentFacts {
        id: p.id,
        status: p.status,
        tid: p.tid,
        amount: Money(p.amount),
        refunded_amount: Money(p.canceled_amount),
        failure_code: p.failure_code,
        failure_message: p.failure_message,
        created_at: p.created_at,
        approved_at: p.approved_at,
        refunded_at: p.refunded_at,
    });
    let attempts = match (order.subscription_id, order.cycle) {
        (Some(s), Some(cycle)) if cycle > 1 => {
            attempts(&mut conn, SubscriptionId(s), Some(cycle), HISTORY_LIMIT).await?
        }
        _ => Vec::new(),
    };
    let events = history::events(&mut conn, "order", id.0, HISTORY_LIMIT).await?;
    let audit = history::audit(&mut conn, &[("order", id.0.to_string())], HISTORY_LIMIT).await?;
    Ok(OrderStory {
        order,
        user_id: UserId(owner.id),
        email: owner.email,
        phone: owner.phone,
        payment,
        attempts,
        events,
        audit,
    })
}
