//! Recovery links: the `recovery_url` a `subscription.past_due` or dunning
//! `subscription.canceled` event carries, which the store e-mails. Opening it needs no
//! login; it starts one checkout (then it is used), and is dead once it expires or the
//! cycle it was issued for is paid. Only the token's hash is stored.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::{create, kind_for, Checkout, CheckoutKind};
use crate::error::{Error, Result};
use crate::ids::SubscriptionId;
use crate::money::Money;
use crate::subscriptions::{lock, Row, SubscriptionStatus};
use crate::Ctx;

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new link for the locked subscription `s`'s unpaid cycle, valid for
/// `subscriptions.recovery_link_ttl_secs`: its URL.
pub(crate) async fn issue(
    ctx: &Ctx,
    conn: &mut PgConnection,
    s: &Row,
    now: DateTime<Utc>,
) -> Result<String> {
    let token = crate::store::orders::new_token();
    let ttl = chrono::Duration::from_std(ctx.settings.subscriptions.recovery_link_ttl_secs)
        .unwrap_or(chrono::Duration::days(14));
    sqlx::query!(
        "INSERT INTO subscription_recovery_links (subscription_id, token_hash, cycle, expires_at)
         VALUES ($1, $2, $3, $4)",
        s.id.0,
        hash(&token),
        s.current_cycle + 1,
        now + ttl
    )
    .execute(&mut *conn)
    .await?;
    Ok(format!("{}/api/recovery/{token}", super::public_base(ctx)))
}

/// The subscription's unused links end now (it was paid).
pub(crate) async fn expire_all(
    conn: &mut PgConnection,
    id: SubscriptionId,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "UPDATE subscription_recovery_links SET expires_at = $2
         WHERE subscription_id = $1 AND used_at IS NULL AND expires_at > $2",
        id.0,
        now
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What a recovery link shows before the customer pays: which subscription, what it owes,
/// until when. Nothing about the customer (the link travels by e-mail).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecoveryLink {
    pub subscription_id: SubscriptionId,
    pub kind: CheckoutKind,
    pub status: SubscriptionStatus,
    /// The cycle the checkout would pay, and what it would cost at today's prices.
    pub cycle: i32,
    pub amount: Money,
    pub period_days: i32,
    pub items: Vec<LinkItem>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LinkItem {
    pub item_name: String,
    pub quantity: i32,
    pub unit_price: Money,
}

/// The link's row and its subscription, if the link is still usable.
struct Usable {
    link_id: i64,
    subscription: SubscriptionId,
    expires_at: DateTime<Utc>,
}

/// A usable link's row, locked when `conn` is a transaction that asks for it; otherwise
/// [`Error::RecoveryLinkGone`] (used, expired, paid) or `NotFound` (no such link).
async fn usable(
    ctx: &Ctx,
    conn: &mut PgConnection,
    token: &str,
    for_update: bool,
) -> Result<Usable> {
    if !crate::validate::plausible_token(token) {
        return Err(Error::NotFound);
    }
    let r = if for_update {
        sqlx::query!(
            r#"SELECT l.id, l.subscription_id, l.cycle, l.expires_at, l.used_at
               FROM subscription_recovery_links l WHERE l.token_hash = $1 FOR UPDATE"#,
            hash(token)
        )
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| (r.id, r.subscription_id, r.cycle, r.expires_at, r.used_at))
    } else {
        sqlx::query!(
            r#"SELECT l.id, l.subscription_id, l.cycle, l.expires_at, l.used_at
               FROM subscription_recovery_links l WHERE l.token_hash = $1"#,
            hash(token)
        )
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| (r.id, r.subscription_id, r.cycle, r.expires_at, r.used_at))
    };
    let (id, subscription, cycle, expires_at, used_at) = r.ok_or(Error::NotFound)?;
    let s = sqlx::query!(
        r#"SELECT current_cycle, status AS "status: SubscriptionStatus", cancel_reason
           FROM subscriptions WHERE id = $1"#,
        subscription
    )
    .fetch_one(&mut *conn)
    .await?;
    let live = used_at.is_none()
        && expires_at > ctx.clock.now()
        && s.current_cycle + 1 == cycle
        && kind_for(s.status, s.cancel_reason.as_deref()).is_some();
    if !live {
        return Err(Error::RecoveryLinkGone);
    }
    Ok(Usable {
        link_id: id,
        subscription: SubscriptionId(subscription),
        expires_at,
    })
}

/// `GET /api/recovery/{token}`: what the link would pay.
pub async fn link(ctx: &Ctx, token: &str) -> Result<RecoveryLink> {
    let mut conn = ctx.db.acquire().await?;
    let u = usable(ctx, &mut conn, token, false).await?;
    let s = sqlx::query!(
        r#"SELECT status AS "status: SubscriptionStatus", cancel_reason, current_cycle,
                  period_days
           FROM subscriptions WHERE id = $1"#,
        u.subscription.0
    )
    .fetch_one(&mut *conn)
    .await?;
    let priced = sqlx::query!(
        r#"SELECT amount AS "amount!", lines AS "lines!" FROM subscription_charge_lines
           WHERE subscription_id = $1"#,
        u.subscription.0
    )
    .fetch_optional(&mut *conn)
    .await?;
    let (amount, lines) = match priced {
        Some(p) => (
            p.amount,
            serde_json::from_value::<Vec<crate::subscriptions::charge::PricedLine>>(p.lines)
                .map_err(|e| Error::Internal(format!("priced lines: {e}")))?,
        ),
        None => (0, Vec::new()),
    };
    Ok(RecoveryLink {
        subscription_id: u.subscription,
        kind: kind_for(s.status, s.cancel_reason.as_deref()).ok_or(Error::RecoveryLinkGone)?,
        status: s.status,
        cycle: s.current_cycle + 1,
        amount: Money(amount),
        period_days: s.period_days,
        items: lines
            .into_iter()
            .map(|l| LinkItem {
                item_name: l.name,
                quantity: l.quantity,
                unit_price: Money(l.unit_price),
            })
            .collect(),
        expires_at: u.expires_at,
    })
}

/// `POST /api/recovery/{token}`: starts the checkout the link offers (no login), and the
/// link is used. A second use, an expired link or a paid cycle answer
/// [`Error::RecoveryLinkGone`].
pub async fn start_with_link(ctx: &Ctx, token: &str) -> Result<Checkout> {
    // The subscription first, then the link: the order every writer of both takes.
    let subscription = usable(ctx, &mut *ctx.db.acquire().await?, token, false)
        .await?
        .subscription;
    let mut tx = ctx.db.begin().await?;
    let s = lock(&mut tx, subscription, None)
        .await?
        .ok_or(Error::NotFound)?;
    let u = usable(ctx, &mut tx, token, true).await?;
    let c = create(ctx, &mut tx, &s, None, true).await?;
    sqlx::query!(
        "UPDATE subscription_recovery_links SET used_at = $2, checkout_id = $3 WHERE id = $1",
        u.link_id,
        ctx.clock.now(),
        c.id.0
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(c.view(ctx))
}
