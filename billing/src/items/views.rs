//! Item detail and unique views: one per client IP per store day (HyperLogLog in Redis),
//! flushed into `items.view_count` by a periodic job.

use super::*;

// ---- detail and unique views ------------------------------------------------------------

/// The store's calendar day now: views are unique per client IP per item per local day
/// of the configured store time zone (`subscriptions.time_zone`), by the `Clock`.
pub fn store_day(ctx: &Ctx) -> NaiveDate {
    ctx.settings
        .subscriptions
        .time_zone
        .local_date(ctx.clock.now())
}

pub(super) fn views_key(day: NaiveDate, item: i64) -> String {
    format!("views:{}:{item}", day.format("%Y%m%d"))
}

pub(super) fn dirty_key(day: NaiveDate) -> String {
    format!("views:dirty:{}", day.format("%Y%m%d"))
}

/// Views are kept three days in Redis: today's, yesterday's for a late flush, and slack.
pub(super) const VIEW_KEY_TTL_SECS: i64 = 3 * 24 * 3600;

pub async fn detail(ctx: &Ctx, id: i64, client: IpAddr) -> Result<ItemDetail> {
    let mut conn = ctx.db.acquire().await?;
    let item = fetch_detail(&mut conn, id, false)
        .await?
        .ok_or(Error::NotFound)?;
    drop(conn);
    if let Err(e) = record_view(ctx, id, client).await {
        // Redis down: the page still shows; the view is dropped (at once while the Redis
        // breaker is open, so the page does not wait for it).
        metrics::counter!("item_views_dropped_total").increment(1);
        tracing::debug!(error = %e, "view not counted");
    }
    Ok(item)
}

pub(super) async fn record_view(ctx: &Ctx, id: i64, client: IpAddr) -> Result<()> {
    let day = store_day(ctx);
    let key = ctx.kv.key(&views_key(day, id));
    let dirty = ctx.kv.key(&dirty_key(day));
    let ip = client.to_string();
    ctx.kv
        .run(|mut c| async move {
            redis::pipe()
                .pfadd(&key, ip)
                .ignore()
                .expire(&key, VIEW_KEY_TTL_SECS)
                .ignore()
                .sadd(&dirty, id)
                .ignore()
                .expire(&dirty, VIEW_KEY_TTL_SECS)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
}

/// The unique-view counts Redis holds for `day`: (item, count).
pub async fn read_view_counts(ctx: &Ctx, day: NaiveDate) -> Result<Vec<(i64, i64)>> {
    let dirty = ctx.kv.key(&dirty_key(day));
    let items: Vec<i64> = ctx
        .kv
        .run(|mut c| async move { c.smembers(&dirty).await })
        .await?;
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = items
        .iter()
        .map(|i| ctx.kv.key(&views_key(day, *i)))
        .collect();
    let counts: Vec<i64> = ctx
        .kv
        .run(|mut c| async move {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.pfcount(k);
            }
            pipe.query_async(&mut c).await
        })
        .await?;
    let mut pairs: Vec<(i64, i64)> = items.into_iter().zip(counts).collect();
    pairs.sort_unstable();
    Ok(pairs)
}

/// Adds what the day's counts grew by since the last flush; re-applying the same counts
/// adds nothing, so a crash anywhere before the commit only delays views, never doubles them.
pub async fn apply_view_counts(
    conn: &mut PgConnection,
    day: NaiveDate,
    counts: &[(i64, i64)],
    now: DateTime<Utc>,
) -> Result<i64> {
    if counts.is_empty() {
        return Ok(0);
    }
    let (items, values): (Vec<i64>, Vec<i64>) = counts.iter().copied().unzip();
    let added = sqlx::query_scalar!(
        r#"WITH input AS (
               SELECT i.item_id, i.cnt FROM unnest($1::int8[], $2::int8[]) AS i(item_id, cnt)
               JOIN items ON items.id = i.item_id
           ),
           old AS (
               SELECT d.item_id, d.counted FROM item_view_days d
               JOIN input USING (item_id) WHERE d.day = $3
           ),
           up AS (
               INSERT INTO item_view_days (item_id, day, counted)
               SELECT item_id, $3, cnt FROM input
               ON CONFLICT (item_id, day) DO UPDATE
                   SET counted = GREATEST(item_view_days.counted, EXCLUDED.counted),
                       updated_at = $4
               RETURNING item_id, counted
           ),
           delta AS (
               SELECT up.item_id, up.counted - coalesce(old.counted, 0) AS n
               FROM up LEFT JOIN old USING (item_id)
           ),
           bumped AS (
               UPDATE items SET view_count = view_count + delta.n
               FROM delta WHERE items.id = delta.item_id AND delta.n > 0
               RETURNING delta.n
           )
           SELECT coalesce(sum(n), 0)::int8 AS "added!" FROM bumped"#,
        &items,
        &values,
        day,
        now
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(added)
}

/// Flushes yesterday's and today's unique views into `items.view_count`.
pub async fn flush_views(ctx: &Ctx) -> Result<i64> {
    let today = store_day(ctx);
    let mut added = 0;
    for day in [today.pred_opt().unwrap_or(today), today] {
        let counts = read_view_counts(ctx, day).await?;
        let mut tx = ctx.db.begin().await?;
        // One flusher at a time per day, so two cannot both add the same growth.
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(727275, $1::int4)",
            day.num_days_from_ce()
        )
        .execute(&mut *tx)
        .await?;
        added += apply_view_counts(&mut tx, day, &counts, ctx.clock.now()).await?;
        tx.commit().await?;
    }
    if added > 0 {
        tracing::info!(added, "unique views flushed");
    }
    Ok(added)
}
