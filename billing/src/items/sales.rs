//! Sales counts: the fold that adds paid orders' appended deltas (`item_sales_deltas`,
//! written by [`crate::store::orders::count_sales`] in each paying transaction) to
//! `items.sales`, so the listing's "best sellers" follow purchases within one fold
//! interval without every purchase rewriting the item's row.

use super::*;

/// Deltas per fold statement. Each statement rewrites up to this many `items` rows (22
/// indexes each) and holds their row locks until it commits: 5 s of a billing-day burst
/// (about 4,000 deltas) in one statement took 1.5–1.8 s on a saturated machine, blocking
/// admin writes to those items for as long.
pub const FOLD_BATCH: i64 = 1_000;

/// Statements per fold run: a backlog (a worker fleet stopped for a day) is folded over
/// several runs.
pub const FOLD_BATCHES: u32 = 50;

/// Adds the oldest deltas to their items' sales and deletes them, [`FOLD_BATCH`] per
/// statement (so a delta is added exactly once even with two folds at once: the second
/// waits on the first's deleted rows and finds them gone), until none is left or
/// [`FOLD_BATCHES`] statements ran. Returns the units added.
pub async fn fold_sales(ctx: &Ctx) -> Result<i64> {
    let mut conn = ctx.db.acquire().await?;
    let mut added = 0;
    for _ in 0..FOLD_BATCHES {
        let units = fold_sales_on(&mut conn, ctx.clock.now()).await?;
        if units == 0 {
            break;
        }
        added += units;
    }
    Ok(added)
}

/// One fold statement: up to [`FOLD_BATCH`] of the oldest deltas, added and deleted.
pub async fn fold_sales_on(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<i64> {
    let added = sqlx::query_scalar!(
        r#"WITH d AS (
             DELETE FROM item_sales_deltas
             WHERE id IN (SELECT id FROM item_sales_deltas ORDER BY id LIMIT $1)
             RETURNING item_id, quantity
           ), s AS (
             SELECT item_id, sum(quantity)::bigint AS qty FROM d GROUP BY item_id
           ), u AS (
             UPDATE items i SET sales = i.sales + s.qty, updated_at = $2
             FROM s WHERE i.id = s.item_id
             RETURNING s.qty
           )
           SELECT COALESCE(sum(qty), 0)::bigint AS "added!" FROM u"#,
        FOLD_BATCH,
        now
    )
    .fetch_one(&mut *conn)
    .await?;
    if added > 0 {
        tracing::debug!(added, "sales folded");
    }
    Ok(added)
}
