//! Carts: each user's normal and subscription cart, persisted in Postgres, with totals
//! computed from the items' current prices on every read (never stored).

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::money::Money;
use crate::validate::Checks;
use crate::Ctx;

/// Which of the user's two carts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CartKind {
    Normal,
    Subscription,
}

impl CartKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CartKind::Normal => "normal",
            CartKind::Subscription => "subscription",
        }
    }
}

/// Quantity bounds of one cart line.
pub const MAX_QUANTITY: i32 = 99;
/// Delivery period bounds of a subscription line, in days.
pub const PERIOD_DAYS: std::ops::RangeInclusive<i32> = 7..=365;

/// `POST /api/carts/{kind}/items`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AddLine {
    #[schema(required = true, example = 1)]
    pub item_id: Option<i64>,
    /// 1–99, default 1. Added to the quantity already in the cart, capped at 99.
    #[schema(minimum = 1, maximum = 99, example = 1)]
    pub quantity: Option<i32>,
    /// Subscription cart only, and required there: ship every 7–365 days. Replaces the
    /// period of a line already in the cart.
    #[schema(minimum = 7, maximum = 365, example = 30)]
    pub period_days: Option<i32>,
}

/// `PATCH /api/carts/{kind}/items/{item_id}`: only the fields present change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LinePatch {
    /// 1–99; replaces the line's quantity.
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: Option<i32>,
    /// Subscription cart only: 7–365 days.
    #[schema(minimum = 7, maximum = 365)]
    pub period_days: Option<i32>,
}

/// One line as it stands now: the item's current prices, and whether it can be ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartLine {
    pub item_id: i64,
    pub title: String,
    pub brand: String,
    pub thumbnail_url: Option<String>,
    pub quantity: i32,
    pub period_days: Option<i32>,
    pub unit_origin_price: Money,
    pub unit_discount: Money,
    /// The real price: origin − discount.
    pub unit_price: Money,
    /// `unit_price × quantity`.
    pub line_total: Money,
    /// False when the item was deleted or taken off sale; such lines stay in the cart
    /// but count in no total.
    pub available: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cart {
    pub kind: CartKind,
    /// In the order they were first added.
    pub lines: Vec<CartLine>,
    pub totals: Totals,
}

/// Sums over the available lines only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Units (sum of quantities).
    pub item_count: i64,
    /// Σ origin × quantity.
    pub total_price: Money,
    /// Σ discount × quantity.
    pub total_discount: Money,
    /// Σ real × quantity (= total_price − total_discount).
    pub payable: Money,
}

pub fn totals(lines: &[CartLine]) -> Totals {
    lines
        .iter()
        .filter(|l| l.available)
        .fold(Totals::default(), |t, l| {
            let q = i64::from(l.quantity);
            Totals {
                item_count: t.item_count + q,
                total_price: Money(t.total_price.0 + l.unit_origin_price.0 * q),
                total_discount: Money(t.total_discount.0 + l.unit_discount.0 * q),
                payable: Money(t.payable.0 + l.unit_price.0 * q),
            }
        })
}

fn check_quantity(checks: &mut Checks, quantity: Option<i32>) {
    if let Some(q) = quantity {
        if !(1..=MAX_QUANTITY).contains(&q) {
            checks.check("quantity", Err("must be 1 to 99"));
        }
    }
}

fn check_period(checks: &mut Checks, kind: CartKind, period: Option<i32>, required: bool) {
    match (kind, period) {
        (CartKind::Normal, Some(_)) => checks.check(
            "period_days",
            Err("only lines of the subscription cart have a period"),
        ),
        (CartKind::Subscription, None) if required => {
            checks.check("period_days", Err("is required in the subscription cart"))
        }
        (CartKind::Subscription, Some(p)) if !PERIOD_DAYS.contains(&p) => {
            checks.check("period_days", Err("must be 7 to 365 days"))
        }
        _ => {}
    }
}

// ---- services ---------------------------------------------------------------------------

/// The caller's cart; an empty one if nothing was ever added (no row is created).
pub async fn get(ctx: &Ctx, user: UserId, kind: CartKind) -> Result<Cart> {
    let mut conn = ctx.db.acquire().await?;
    load(&mut conn, user, kind).await
}

/// Adds an item (or more of it) to the caller's cart, creating the cart on first use.
///
/// A missing or deleted item is 404; an item taken off sale is `ItemUnavailable`.
pub async fn add(ctx: &Ctx, user: UserId, kind: CartKind, input: AddLine) -> Result<Cart> {
    let mut checks = Checks::default();
    if input.item_id.is_none() {
        checks.check("item_id", Err("is required"));
    }
    check_quantity(&mut checks, input.quantity);
    check_period(&mut checks, kind, input.period_days, true);
    checks.finish()?;
    let item_id = input.item_id.unwrap_or_default();
    let quantity = input.quantity.unwrap_or(1);

    let mut tx = ctx.db.begin().await?;
    match item_selling(&mut tx, item_id).await? {
        None => return Err(Error::NotFound),
        Some(false) => return Err(Error::ItemUnavailable),
        Some(true) => {}
    }
    let cart_id = ensure_cart(&mut tx, user, kind).await?;
    upsert_line(&mut tx, cart_id, item_id, quantity, input.period_days).await?;
    let cart = load(&mut tx, user, kind).await?;
    tx.commit().await?;
    Ok(cart)
}

/// Changes a line's quantity and (subscription cart) period. A line not in the caller's
/// cart is 404.
pub async fn update_line(
    ctx: &Ctx,
    user: UserId,
    kind: CartKind,
    item_id: i64,
    patch: LinePatch,
) -> Result<Cart> {
    let mut checks = Checks::default();
    check_quantity(&mut checks, patch.quantity);
    check_period(&mut checks, kind, patch.period_days, false);
    checks.finish()?;

    let mut tx = ctx.db.begin().await?;
    let updated = sqlx::query!(
        r#"UPDATE cart_items ci
           SET quantity = COALESCE($4, ci.quantity), period_days = COALESCE($5, ci.period_days)
           FROM carts c
           WHERE c.id = ci.cart_id AND c.user_id = $1 AND c.kind = $2 AND ci.item_id = $3"#,
        user.0,
        kind.as_str(),
        item_id,
        patch.quantity,
        patch.period_days,
    )
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(Error::NotFound);
    }
    let cart = load(&mut tx, user, kind).await?;
    tx.commit().await?;
    Ok(cart)
}

/// Removes a line from the caller's cart; a line that is not there is 404.
pub async fn remove_line(ctx: &Ctx, user: UserId, kind: CartKind, item_id: i64) -> Result<()> {
    let mut tx = ctx.db.begin().await?;
    let deleted = sqlx::query!(
        r#"DELETE FROM cart_items ci USING carts c
           WHERE c.id = ci.cart_id AND c.user_id = $1 AND c.kind = $2 AND ci.item_id = $3"#,
        user.0,
        kind.as_str(),
        item_id,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if deleted.rows_affected() == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

// ---- repository -------------------------------------------------------------------------

/// `Some(selling)` for an item that exists and is not deleted.
async fn item_selling(conn: &mut PgConnection, item_id: i64) -> Result<Option<bool>> {
    Ok(sqlx::query_scalar!(
        "SELECT selling FROM items WHERE id = $1 AND deleted_at IS NULL",
        item_id
    )
    .fetch_optional(&mut *conn)
    .await?)
}

/// The cart's id, creating the row if this is the user's first add. Two concurrent first
/// adds both end up with the one row the unique constraint allows.
async fn ensure_cart(conn: &mut PgConnection, user: UserId, kind: CartKind) -> Result<i64> {
    sqlx::query!(
        "INSERT INTO carts (user_id, kind) VALUES ($1, $2)
         ON CONFLICT ON CONSTRAINT carts_user_kind_key DO NOTHING",
        user.0,
        kind.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar!(
        "SELECT id FROM carts WHERE user_id = $1 AND kind = $2",
        user.0,
        kind.as_str(),
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Inserts the line, or adds to the quantity of the one already there (capped at 99).
async fn upsert_line(
    conn: &mut PgConnection,
    cart_id: i64,
    item_id: i64,
    quantity: i32,
    period_days: Option<i32>,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO cart_items (cart_id, item_id, quantity, period_days)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT ON CONSTRAINT cart_items_cart_item_key DO UPDATE
             SET quantity = LEAST(cart_items.quantity + EXCLUDED.quantity, $5),
                 period_days = COALESCE(EXCLUDED.period_days, cart_items.period_days)",
        cart_id,
        item_id,
        quantity,
        period_days,
        MAX_QUANTITY,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The user's cart with current prices; looked up by the owner's id only, so no other
/// user's cart can be reached.
pub async fn load(conn: &mut PgConnection, user: UserId, kind: CartKind) -> Result<Cart> {
    let rows = sqlx::query!(
        r#"SELECT ci.item_id, i.title, i.brand, i.thumbnail_url, ci.quantity, ci.period_days,
                  i.origin_price, i.discount_price AS "discount_price!",
                  i.real_price AS "real_price!",
                  (i.selling AND i.deleted_at IS NULL) AS "available!"
           FROM carts c
           JOIN cart_items ci ON ci.cart_id = c.id
           JOIN items i ON i.id = ci.item_id
           WHERE c.user_id = $1 AND c.kind = $2
           ORDER BY ci.id"#,
        user.0,
        kind.as_str(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let lines: Vec<CartLine> = rows
        .into_iter()
        .map(|r| CartLine {
            item_id: r.item_id,
            title: r.title,
            brand: r.brand,
            thumbnail_url: r.thumbnail_url,
            quantity: r.quantity,
            period_days: r.period_days,
            unit_origin_price: Money(r.origin_price),
            unit_discount: Money(r.discount_price),
            unit_price: Money(r.real_price),
            line_total: Money(r.real_price * i64::from(r.quantity)),
            available: r.available,
        })
        .collect();
    let totals = totals(&lines);
    Ok(Cart {
        kind,
        lines,
        totals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(origin: i64, discount: i64, qty: i32, available: bool) -> CartLine {
        CartLine {
            item_id: 1,
            title: "t".into(),
            brand: "b".into(),
            thumbnail_url: None,
            quantity: qty,
            period_days: None,
            unit_origin_price: Money(origin),
            unit_discount: Money(discount),
            unit_price: Money(origin - discount),
            line_total: Money((origin - discount) * i64::from(qty)),
            available,
        }
    }

    #[test]
    fn totals_count_only_available_lines() {
        let lines = [
            line(10_000, 1_000, 2, true),
            line(9_990, 1_499, 3, true),
            line(50_000, 0, 1, false),
        ];
        assert_eq!(
            totals(&lines),
            Totals {
                item_count: 5,
                total_price: Money(20_000 + 29_970),
                total_discount: Money(2_000 + 4_497),
                payable: Money(18_000 + 25_473),
            }
        );
        assert_eq!(totals(&[]), Totals::default());
    }

    #[test]
    fn periods_belong_to_the_subscription_cart() {
        let fields = |kind, period, required| {
            let mut c = Checks::default();
            check_period(&mut c, kind, period, required);
            c.0.into_iter().map(|f| f.field).collect::<Vec<_>>()
        };
        assert_eq!(fields(CartKind::Normal, Some(30), false), ["period_days"]);
        assert!(fields(CartKind::Normal, None, true).is_empty());
        assert_eq!(fields(CartKind::Subscription, None, true), ["period_days"]);
        assert!(fields(CartKind::Subscription, None, false).is_empty());
        assert_eq!(
            fields(CartKind::Subscription, Some(6), true),
            ["period_days"]
        );
        assert_eq!(
            fields(CartKind::Subscription, Some(366), true),
            ["period_days"]
        );
        assert!(fields(CartKind::Subscription, Some(7), true).is_empty());
        assert!(fields(CartKind::Subscription, Some(365), true).is_empty());
    }
}
