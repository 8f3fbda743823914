//! Operators' tools over subscriptions: the what-if preview of a pending charge, the
//! gauges the alert rules watch, and the review list of ambiguous charges.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{policy, Next, Outcome, SubscriptionStatus, TimelineEvent};
use crate::error::{Error, Result};
use crate::ids::{SubscriptionId, UserId};
use crate::money::Money;
use crate::page::{Page, PageRequest};
use crate::Ctx;

/// `POST /api/admin/subscriptions/{id}/preview`: the timeline the engine would follow
/// from the subscription's pending charge if KakaoPay answered `outcomes` in order.
pub async fn preview(
    ctx: &Ctx,
    id: SubscriptionId,
    outcomes: &[Outcome],
) -> Result<Vec<TimelineEvent>> {
    if outcomes.is_empty() || outcomes.len() > 100 {
        return Err(Error::validation("outcomes", "give 1 to 100 outcomes"));
    }
    let policy = policy(ctx)?;
    let mut conn = ctx.db.acquire().await?;
    let s = sqlx::query!(
        r#"SELECT status AS "status: SubscriptionStatus", period_days, current_cycle, due_on,
                  next_charge_at
           FROM subscriptions WHERE id = $1"#,
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound)?;
    match s.status {
        SubscriptionStatus::Canceled => return Err(Error::SubscriptionCanceled),
        SubscriptionStatus::Paused => return Err(Error::SubscriptionNotActive),
        _ => {}
    }
    let at = s
        .next_charge_at
        .ok_or_else(|| Error::Internal(format!("billable subscription {id} has no next charge")))?;
    let cycle = s.current_cycle + 1;
    let so_far = sqlx::query!(
        r#"SELECT count(*) AS "attempts!", count(*) FILTER (WHERE status = 'declined') AS "declines!"
           FROM charge_attempts WHERE subscription_id = $1 AND cycle = $2"#,
        id.0,
        cycle
    )
    .fetch_one(&mut *conn)
    .await?;
    let start = policy::PreviewStart {
        next: Next {
            due_on: s.due_on.unwrap_or_else(|| policy.local_date(at)),
            at,
        },
        cycle,
        period_days: s.period_days,
        attempts_so_far: so_far.attempts as i32,
        declines_so_far: so_far.declines as u32,
        past_due: s.status == SubscriptionStatus::PastDue,
    };
    Ok(policy.preview(&start, outcomes))
}

/// Sets `subscription_charges_unknown` (charges sent with no answer yet),
/// `subscription_charges_review_required` (those past the review window) and
/// `subscriptions_needing_attention` (a charge request KakaoPay rejected; the cycle is
/// still due), which the alert rules watch.
pub async fn refresh_gauges(ctx: &Ctx) -> Result<()> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "unknown!",
                  count(*) FILTER (WHERE review_required_at IS NOT NULL) AS "review!",
                  (SELECT count(*) FROM subscriptions WHERE attention_since IS NOT NULL)
                      AS "attention!"
           FROM charge_attempts WHERE status = 'unknown'"#
    )
    .fetch_one(ctx.db.pool())
    .await?;
    metrics::gauge!("subscription_charges_unknown").set(row.unknown as f64);
    metrics::gauge!("subscription_charges_review_required").set(row.review as f64);
    metrics::gauge!("subscriptions_needing_attention").set(row.attention as f64);
    Ok(())
}

/// An ambiguous charge on the operators' review list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnknownCharge {
    /// The attempt's id: what `POST /api/admin/charges/{attempt_id}/reconcile` takes.
    pub attempt_id: i64,
    pub subscription_id: SubscriptionId,
    pub user_id: UserId,
    pub cycle: i32,
    pub attempt: i32,
    pub partner_order_id: String,
    pub amount: Money,
    pub started_at: DateTime<Utc>,
    pub reconcile_rounds: i32,
    /// Set once it stayed undecided past `subscriptions.review_after_secs`.
    pub review_required_at: Option<DateTime<Utc>>,
}

/// `GET /api/admin/charges/unknown`: charges sent with no answer yet, oldest first
/// (`review_only`: just those past the review window).
pub async fn unknown_charges(
    ctx: &Ctx,
    review_only: bool,
    page: PageRequest,
) -> Result<Page<UnknownCharge>> {
    let page = page.validate()?;
    let mut conn = ctx.db.acquire().await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM charge_attempts
           WHERE status = 'unknown' AND (NOT $1 OR review_required_at IS NOT NULL)"#,
        review_only
    )
    .fetch_one(&mut *conn)
    .await?;
    let items = sqlx::query_as!(
        UnknownCharge,
        r#"SELECT a.id AS attempt_id, a.subscription_id AS "subscription_id: SubscriptionId",
                  s.user_id AS "user_id: UserId", a.cycle, a.attempt, a.partner_order_id,
                  a.amount AS "amount: Money", a.started_at, a.reconcile_rounds,
                  a.review_required_at
           FROM charge_attempts a JOIN subscriptions s ON s.id = a.subscription_id
           WHERE a.status = 'unknown' AND (NOT $1 OR a.review_required_at IS NOT NULL)
           ORDER BY a.started_at LIMIT $2 OFFSET $3"#,
        review_only,
        page.limit(),
        page.offset()
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Page::new(items, page, total))
}
