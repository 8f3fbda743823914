//! The page cache in Redis: jittered TTLs, one loader per key, generation-based
//! invalidation on item writes; Redis down means no cache, never an error: a read that
//! finds Redis unavailable (the breaker in `kv` answers at once while it is down) loads
//! its page from Postgres straight away, without the per-key loader lock or a store
//! attempt. Only a listing's total is kept in this process meanwhile (see
//! [`local_total`]), since counting a category costs many times its page.

use super::*;

// ---- the page cache ---------------------------------------------------------------------

/// Seconds a cached page lives: the configured lifetime ±20 %, so pages cached together
/// do not expire together. At least one, since Redis refuses `EX 0`.
pub(super) fn jittered_ttl(ttl: std::time::Duration) -> u64 {
    let secs = ttl.as_secs().max(1);
    let spread = secs / 5;
    secs - spread + rand::rng().random_range(0..=2 * spread)
}

/// One loader per key in this process: concurrent misses wait for the first one's result.
pub(super) fn loader_lock(key: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut map = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(lock) = map.get(key).and_then(Weak::upgrade) {
        return lock;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    map.insert(key.to_owned(), Arc::downgrade(&lock));
    lock
}

/// Listing totals (`…:count` keys) this process loaded while Redis was unavailable, and
/// when. A page read is one short index range; its total counts the whole category (a
/// scan of thousands of rows), so without Redis every cached page would cost many times
/// an uncached one. A total serves this process's reads while Redis is down for at most
/// `redis.page_cache_ttl_secs` (what a page in Redis may be stale by when its
/// invalidation is lost, as it is while Redis is down); this process's item writes drop
/// them at once. There are at most ten keys per prefix.
fn local_totals() -> &'static Mutex<HashMap<String, (std::time::Instant, String)>> {
    static TOTALS: OnceLock<Mutex<HashMap<String, (std::time::Instant, String)>>> = OnceLock::new();
    TOTALS.get_or_init(Default::default)
}

/// Bumped with every clear of the local totals: a load that raced an item write does not
/// keep what it read (the same rule as the Redis generation).
static LOCAL_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn fresh_local_total(key: &str, ttl: std::time::Duration) -> Option<String> {
    let map = local_totals().lock().unwrap_or_else(|p| p.into_inner());
    map.get(key)
        .filter(|(at, _)| at.elapsed() < ttl)
        .map(|(_, total)| total.clone())
}

/// The total under `key` while Redis is unavailable: this process's copy while it is
/// fresh, else `load`'s (one loader per key), remembered.
pub(super) async fn local_total<F, Fut>(ctx: &Ctx, key: &str, load: F) -> Result<String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String>>,
{
    let ttl = ctx.settings.redis.page_cache_ttl_secs;
    // Under the full key: processes of tests share the map with their own prefixes.
    let key = &ctx.kv.key(key);
    if let Some(total) = fresh_local_total(key, ttl) {
        metrics::counter!("cache_requests_total", "cache" => "count", "result" => "local")
            .increment(1);
        return Ok(total);
    }
    let lock = loader_lock(key);
    let _guard = lock.lock().await;
    if let Some(total) = fresh_local_total(key, ttl) {
        metrics::counter!("cache_requests_total", "cache" => "count", "result" => "local")
            .increment(1);
        return Ok(total);
    }
    metrics::counter!("cache_requests_total", "cache" => "count", "result" => "bypass")
        .increment(1);
    let generation = LOCAL_GENERATION.load(std::sync::atomic::Ordering::SeqCst);
    let total = load().await?;
    let mut map = local_totals().lock().unwrap_or_else(|p| p.into_inner());
    if LOCAL_GENERATION.load(std::sync::atomic::Ordering::SeqCst) == generation {
        map.insert(key.to_owned(), (std::time::Instant::now(), total.clone()));
    }
    Ok(total)
}

/// The generation counter every invalidation bumps: a load that raced a write does not
/// store what it read.
pub(super) const GEN_KEY: &str = "cache:items:gen";

/// The cached text under `key`: `Ok(None)` is a miss, `Err` means Redis is unavailable.
pub(super) async fn cache_get(ctx: &Ctx, key: &str) -> Result<Option<String>> {
    let full = ctx.kv.key(key);
    ctx.kv
        .run(|mut c| async move { c.get(&full).await })
        .await
        .inspect_err(|e| tracing::debug!(error = %e, "cache read skipped"))
}

/// The JSON text under `key`, or `load`'s, stored for next time (Redis errors only skip
/// the cache).
pub(super) async fn cached_json<F, Fut>(ctx: &Ctx, key: &str, load: F) -> Result<String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String>>,
{
    let kind = if key == MAIN_KEY {
        "main"
    } else if key.ends_with(":count") {
        "count"
    } else {
        "page"
    };
    match cache_get(ctx, key).await {
        Ok(Some(hit)) => {
            metrics::counter!("cache_requests_total", "cache" => kind, "result" => "hit")
                .increment(1);
            return Ok(hit);
        }
        Ok(None) => {}
        Err(_) if kind == "count" => return local_total(ctx, key, load).await,
        // Redis down: straight to Postgres, concurrently. Queuing behind the loader lock
        // would only serialize loads nobody can store.
        Err(_) => {
            metrics::counter!("cache_requests_total", "cache" => kind, "result" => "bypass")
                .increment(1);
            return load().await;
        }
    }
    let lock = loader_lock(&ctx.kv.key(key));
    let _guard = lock.lock().await;
    if let Ok(Some(hit)) = cache_get(ctx, key).await {
        metrics::counter!("cache_requests_total", "cache" => kind, "result" => "hit").increment(1);
        return Ok(hit);
    }
    metrics::counter!("cache_requests_total", "cache" => kind, "result" => "miss").increment(1);
    let gen_key = ctx.kv.key(GEN_KEY);
    let generation: Option<i64> = {
        let g = gen_key.clone();
        ctx.kv
            .run(|mut c| async move { c.get(&g).await })
            .await
            .ok()
            .flatten()
    };
    let value = load().await?;
    {
        let json = value.clone();
        let full = ctx.kv.key(key);
        let ttl = jittered_ttl(ctx.settings.redis.page_cache_ttl_secs);
        let generation = generation.unwrap_or(0);
        // Store only if no invalidation happened while loading.
        let stored = ctx
            .kv
            .run(|mut c| async move {
                redis::Script::new(
                    "if tonumber(redis.call('GET', KEYS[2]) or '0') == tonumber(ARGV[2]) then \
                       redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3]) return 1 end return 0",
                )
                .key(&full)
                .key(&gen_key)
                .arg(json)
                .arg(generation)
                .arg(ttl)
                .invoke_async::<i64>(&mut c)
                .await
            })
            .await;
        if let Err(e) = stored {
            tracing::debug!(error = %e, "cache write skipped");
        }
    }
    Ok(value)
}

/// Drops every cached listing page and the main page, and bumps the generation (which
/// also retires every process's catalog snapshot).
pub(super) async fn invalidate_pages(ctx: &Ctx) {
    ctx.catalog.invalidate();
    {
        let mut map = local_totals().lock().unwrap_or_else(|p| p.into_inner());
        LOCAL_GENERATION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        map.clear();
    }
    let keys: Vec<String> = all_page_keys(ctx.settings.redis.cached_pages)
        .iter()
        .map(|k| ctx.kv.key(k))
        .collect();
    let gen_key = ctx.kv.key(GEN_KEY);
    let done = ctx
        .kv
        .run(|mut c| async move {
            redis::pipe()
                .atomic()
                .incr(&gen_key, 1)
                .ignore()
                .del(&keys)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await;
    if let Err(e) = done {
        // The pages expire within the TTL anyway.
        tracing::warn!(error = %e, "could not invalidate cached item pages");
    }
}
