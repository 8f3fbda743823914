//! The operators' subscription search: by id, a customer's e-mail or phone number, a
//! status, or an unknown charge awaiting its verdict; newest first, each row with its
//! customer and dunning state.

use super::views::load;
use super::{Subscription, SubscriptionStatus};
use crate::error::Result;
use crate::ids::UserId;
use crate::page::{Page, PageRequest};
use crate::search::{ids_and_total, lookup, Hit, COUNT_CAP};
use crate::Ctx;

/// The search form's filters, all optional and combined.
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    /// A subscription id, a customer's e-mail (any case) or phone (with or without dashes).
    pub q: String,
    pub status: Option<SubscriptionStatus>,
    /// Only subscriptions with a charge whose outcome is unknown.
    pub unknown_charge: bool,
}

/// One row of the results.
#[derive(Debug, Clone)]
pub struct Found {
    pub subscription: Subscription,
    pub user_id: UserId,
    pub email: String,
    pub phone: String,
    pub unknown_charge: bool,
}

/// The subscriptions matching `filter`, newest first. `total` counts up to
/// [`COUNT_CAP`] (+1 when there are more).
pub async fn search(ctx: &Ctx, filter: &SearchFilter, page: PageRequest) -> Result<Page<Found>> {
    let page = page.validate()?;
    let mut conn = ctx.db.acquire().await?;
    let status = filter.status;
    let (limit, offset) = (page.limit(), page.offset());
    // Each case its own statement, so each keeps its index under a generic plan; a broad
    // one counts its matches up to the cap in the same round trip.
    let hits = match lookup(&mut conn, &filter.q).await? {
        Some(l) => {
            sqlx::query_as!(
                Hit,
                r#"SELECT s.id, count(*) OVER () AS "total!" FROM subscriptions s
                   WHERE (s.id = $1 OR s.user_id = ANY($2))
                     AND ($3::text IS NULL OR s.status = $3)
                     AND (NOT $4 OR EXISTS (SELECT 1 FROM charge_attempts a
                                            WHERE a.subscription_id = s.id
                                              AND a.status = 'unknown'))
                   ORDER BY s.id DESC LIMIT $5 OFFSET $6"#,
                l.id,
                &l.users,
                status as Option<SubscriptionStatus>,
                filter.unknown_charge,
                limit,
                offset
            )
            .fetch_all(&mut *conn)
            .await?
        }
        None if filter.unknown_charge => {
            // Few: the review list's index finds them.
            sqlx::query_as!(
                Hit,
                r#"SELECT s.id, count(*) OVER () AS "total!" FROM subscriptions s
                   WHERE s.id IN (SELECT subscription_id FROM charge_attempts
                                  WHERE status = 'unknown')
                     AND ($1::text IS NULL OR s.status = $1)
                   ORDER BY s.id DESC LIMIT $2 OFFSET $3"#,
                status as Option<SubscriptionStatus>,
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
                         SELECT id FROM subscriptions WHERE status = $1
                         ORDER BY id DESC LIMIT $2 OFFSET $3
                       ), n AS (
                         SELECT count(*) AS total FROM (SELECT 1 FROM subscriptions
                           WHERE status = $1 LIMIT $4) capped
                       )
                       SELECT page.id AS "id!", n.total AS "total!" FROM page CROSS JOIN n
                       ORDER BY page.id DESC"#,
                    status as SubscriptionStatus,
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
                         SELECT id FROM subscriptions ORDER BY id DESC LIMIT $1 OFFSET $2
                       ), n AS (
                         SELECT count(*) AS total FROM (SELECT 1 FROM subscriptions LIMIT $3) capped
                       )
                       SELECT page.id AS "id!", n.total AS "total!" FROM page CROSS JOIN n
                       ORDER BY page.id DESC"#,
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
    let views = load(ctx, &mut conn, None, &ids).await?;
    let owners = sqlx::query!(
        r#"SELECT s.id, s.user_id, u.email, u.phone,
                  EXISTS (SELECT 1 FROM charge_attempts a
                          WHERE a.subscription_id = s.id AND a.status = 'unknown') AS "unknown!"
           FROM subscriptions s JOIN users u ON u.id = s.user_id WHERE s.id = ANY($1)"#,
        &ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut owners: std::collections::HashMap<i64, _> =
        owners.into_iter().map(|o| (o.id, o)).collect();
    let items = views
        .into_iter()
        .filter_map(|s| {
            let o = owners.remove(&s.id.0)?;
            Some(Found {
                subscription: s,
                user_id: UserId(o.user_id),
                email: o.email,
                phone: o.phone,
                unknown_charge: o.unknown,
            })
        })
        .collect();
    Ok(Page::new(items, page, total))
}
