//! Sales counts: the fold that adds paid orders' appended deltas (`item_sales_deltas`,
//! written by [`crate::store::orders::count_sales`] in each paying transaction) to
//! `items.sales`, so the listing's "best sellers" follow purchases within one fold
//! interval without every purchase rewriting the item's row.

use super::*;

/// Most deltas one fold takes: a backlog (a worker fleet stopped for a day) is folded over
/// several runs, each a short transaction.
pub const FOLD_BATCH: i64 = 50_000;

/// Adds up to [`FOLD_BATCH`] of the oldest deltas to their items' sales and deletes them,
/// in one statement (so a delta is added exactly once even with two folds at once: the
/// second waits on the first's deleted rows and finds them gone). Returns the units added.
pub async fn fold_sales(ctx: &Ctx) -> Result<i64> {
    let mut conn = ctx.db.acquire().await?;
    fold_sales_on(&mut conn, ctx.clock.now()).await
}

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
