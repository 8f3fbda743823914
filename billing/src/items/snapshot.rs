//! The catalog snapshot: every item on sale held in this process, so that listings and
//! keyword search answer any filter, sort, page and page size from memory with exact
//! totals. An item write replaces it at once in every process (the page cache's Redis
//! generation, read on each request); sales, views and review counts catch up within
//! `catalog.snapshot_max_age_secs`.
//!
//! Keyword search is one SIMD substring scan (`memchr::memmem`) over all items' lowercased
//! `title brand` texts laid end to end: about 2.5 MB for the reference 40,000 items, a
//! fraction of a millisecond, where Postgres re-checked and ranked thousands of rows.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::*;

/// Between two items' texts: a keyword cannot hold it (text input refuses control
/// characters), so a match never spans two items.
const SEPARATOR: char = '\0';

/// One item on sale, as listings filter and sort it.
struct Entry {
    id: i64,
    /// One bit per [`Category`], in [`Category::ALL`]'s order.
    categories: u16,
    brand: String,
    real_price: i64,
    discount_rate: i32,
    sales: i64,
    review_count: i32,
    created_at: DateTime<Utc>,
    /// The item's [`ItemSummary`] as JSON, as pages carry it.
    json: Box<str>,
}

/// The items on sale at one moment, with an order per sort.
pub(super) struct Snapshot {
    entries: Vec<Entry>,
    /// Every entry's lowercased `title brand` (what the SQL path's ILIKE compares), each
    /// followed by [`SEPARATOR`].
    text: String,
    /// Where each entry's text starts in `text`.
    starts: Vec<usize>,
    /// Per [`Sort`] (its index in [`Sort::ALL`]): the entries in that order, ties by id.
    orders: Vec<Vec<u32>>,
    /// Per category (its index in [`Category::ALL`]), then per sort: that category's
    /// entries in that order. A category page is then a slice and its total a length,
    /// where walking every item on sale cost more than the rest of the request.
    by_category: Vec<Vec<Vec<u32>>>,
    /// More items on sale than `catalog.snapshot_max_items`: nothing is held, listings
    /// take the SQL path until a reload finds fewer.
    too_many: bool,
    /// The Redis generation at loading; `None`: Redis was unavailable.
    generation: Option<i64>,
    /// This process's invalidation count at loading.
    local: u64,
    loaded_at: Instant,
    /// Filtered listings asked of this snapshot: their entries in order, by filters.
    memo: Mutex<Memo>,
}

/// At most this many entry indexes (4 bytes each) are memoized per snapshot; past it the
/// memo starts over. 16 MB, some 500 common words' results in every sort.
const MEMO_ENTRIES: usize = 4 << 20;

#[derive(Default)]
struct Memo {
    lists: HashMap<String, Arc<[u32]>>,
    entries: usize,
}

/// This process's snapshot and what decides whether it is still good.
#[derive(Default)]
pub struct CatalogSnapshot {
    current: RwLock<Option<Arc<Snapshot>>>,
    /// One loader at a time; requests that need the new snapshot wait for it.
    loading: tokio::sync::Mutex<()>,
    /// Bumped by this process's item writes, so they show at once even without Redis.
    local: AtomicU64,
}

impl std::fmt::Debug for CatalogSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items = self.get().map(|s| s.entries.len());
        f.debug_struct("CatalogSnapshot")
            .field("items", &items)
            .field("local", &self.local.load(Ordering::Relaxed))
            .finish()
    }
}

impl CatalogSnapshot {
    /// This process wrote items: the next read loads a new snapshot.
    pub(super) fn invalidate(&self) {
        self.local.fetch_add(1, Ordering::SeqCst);
    }

    fn get(&self) -> Option<Arc<Snapshot>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, snapshot: Arc<Snapshot>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(snapshot);
    }
}

/// How a snapshot stands against the generations of now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Fresh,
    /// No write since, but older than the allowed age: one request reloads while the
    /// others keep reading it.
    Aged,
    /// Items were written since: every request waits for the new one.
    Stale,
}

impl Snapshot {
    fn standing(&self, generation: Option<i64>, local: u64, max_age: Duration) -> Standing {
        let written =
            self.local != local || matches!(generation, Some(g) if self.generation != Some(g));
        if written {
            Standing::Stale
        } else if self.loaded_at.elapsed() >= max_age {
            Standing::Aged
        } else {
            Standing::Fresh
        }
    }
}

/// The page cache's generation in Redis (0 before the first write); `None` when Redis is
/// unavailable.
async fn redis_generation(ctx: &Ctx) -> Option<i64> {
    let key = ctx.kv.key(GEN_KEY);
    ctx.kv
        .run(|mut c| async move { c.get::<_, Option<i64>>(&key).await })
        .await
        .ok()
        .map(|g| g.unwrap_or(0))
}

/// The snapshot to answer from, loading it if items were written since; `None` when the
/// snapshot is off or too many items are on sale (the SQL path answers).
pub(super) async fn current(ctx: &Ctx) -> Result<Option<Arc<Snapshot>>> {
    if !ctx.settings.catalog.snapshot {
        return Ok(None);
    }
    let holder = &ctx.catalog;
    let max_age = ctx.settings.catalog.snapshot_max_age_secs;
    let generation = redis_generation(ctx).await;
    let local = holder.local.load(Ordering::SeqCst);
    let snapshot = match holder.get() {
        Some(s) => match s.standing(generation, local, max_age) {
            Standing::Fresh => Some(s),
            Standing::Aged => match holder.loading.try_lock() {
                // Another request is reloading it: this one reads the aged one.
                Err(_) => Some(s),
                Ok(_guard) => match load(ctx, generation, local).await {
                    Ok(new) => Some(install(holder, new)),
                    Err(e) => {
                        // Postgres down: items unchanged, so the aged snapshot is better
                        // than no answer; the next request tries again.
                        tracing::warn!(error = %e, "catalog snapshot reload failed");
                        Some(s)
                    }
                },
            },
            Standing::Stale => None,
        },
        None => None,
    };
    let snapshot = match snapshot {
        Some(s) => s,
        None => {
            let _guard = holder.loading.lock().await;
            // Whoever held the lock may have loaded what this request needs.
            let generation = redis_generation(ctx).await;
            let local = holder.local.load(Ordering::SeqCst);
            match holder.get() {
                Some(s) if s.standing(generation, local, max_age) == Standing::Fresh => s,
                _ => install(holder, load(ctx, generation, local).await?),
            }
        }
    };
    Ok((!snapshot.too_many).then_some(snapshot))
}

fn install(holder: &CatalogSnapshot, snapshot: Snapshot) -> Arc<Snapshot> {
    let snapshot = Arc::new(snapshot);
    holder.set(snapshot.clone());
    snapshot
}

/// Reads every item on sale. `generation` and `local` were read before, so a write that
/// commits during the read makes the result stale at once rather than lost.
async fn load(ctx: &Ctx, generation: Option<i64>, local: u64) -> Result<Snapshot> {
    let started = Instant::now();
    let mut conn = ctx.db.acquire().await?;
    let on_sale = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM items WHERE selling AND deleted_at IS NULL"#
    )
    .fetch_one(&mut *conn)
    .await?;
    let max = i64::from(ctx.settings.catalog.snapshot_max_items);
    let rows = if on_sale > max {
        Vec::new()
    } else {
        sqlx::query_as!(
            ItemSummary,
            r#"SELECT id, brand, title, thumbnail_url, origin_price, discount_rate,
                      discount_price AS "discount_price!", real_price AS "real_price!",
                      categories, sales, view_count, star_avg::float8 AS "star_avg!",
                      review_count, created_at
               FROM items WHERE selling AND deleted_at IS NULL ORDER BY id"#
        )
        .fetch_all(&mut *conn)
        .await?
    };
    drop(conn);
    let too_many = on_sale > max;
    let mut snapshot = build(rows)?;
    snapshot.too_many = too_many;
    snapshot.generation = generation;
    snapshot.local = local;
    metrics::counter!("catalog_snapshot_loads_total").increment(1);
    metrics::gauge!("catalog_snapshot_items").set(snapshot.entries.len() as f64);
    tracing::debug!(
        items = snapshot.entries.len(),
        too_many,
        ms = started.elapsed().as_millis() as u64,
        "catalog snapshot loaded"
    );
    Ok(snapshot)
}

/// The snapshot of `rows` (items on sale), with its text and sort orders.
fn build(rows: Vec<ItemSummary>) -> Result<Snapshot> {
    let mut entries = Vec::with_capacity(rows.len());
    let mut text = String::new();
    let mut starts = Vec::with_capacity(rows.len());
    for item in rows {
        starts.push(text.len());
        text.push_str(&format!("{} {}", item.title, item.brand).to_lowercase());
        text.push(SEPARATOR);
        let categories = item
            .categories
            .iter()
            .filter_map(|c| Category::parse(c))
            .fold(0u16, |bits, c| bits | category_bit(c));
        entries.push(Entry {
            id: item.id,
            categories,
            real_price: item.real_price,
            discount_rate: item.discount_rate,
            sales: item.sales,
            review_count: item.review_count,
            created_at: item.created_at,
            json: to_json(&item)?.into_boxed_str(),
            brand: item.brand,
        });
    }
    let orders: Vec<Vec<u32>> = Sort::ALL
        .iter()
        .map(|sort| sorted(&entries, *sort))
        .collect();
    let by_category = Category::ALL
        .iter()
        .map(|c| {
            let bit = category_bit(*c);
            orders
                .iter()
                .map(|order| {
                    order
                        .iter()
                        .copied()
                        .filter(|&i| entries[i as usize].categories & bit != 0)
                        .collect()
                })
                .collect()
        })
        .collect();
    Ok(Snapshot {
        entries,
        text,
        starts,
        orders,
        by_category,
        too_many: false,
        generation: None,
        local: 0,
        loaded_at: Instant::now(),
        memo: Mutex::default(),
    })
}

fn category_index(c: Category) -> usize {
    Category::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

fn category_bit(c: Category) -> u16 {
    1 << category_index(c)
}

/// The entries in `sort`'s order: the same keys as the SQL path's `ORDER BY`, ties by id.
fn sorted(entries: &[Entry], sort: Sort) -> Vec<u32> {
    let mut order: Vec<u32> = (0..entries.len() as u32).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&entries[a as usize], &entries[b as usize]);
        let key = match sort {
            Sort::Sales => b.sales.cmp(&a.sales),
            Sort::PriceDesc => b.real_price.cmp(&a.real_price),
            Sort::PriceAsc => a.real_price.cmp(&b.real_price),
            Sort::DiscountDesc => b.discount_rate.cmp(&a.discount_rate),
            Sort::DiscountAsc => a.discount_rate.cmp(&b.discount_rate),
            Sort::Reviews => b.review_count.cmp(&a.review_count),
            Sort::Newest => b.created_at.cmp(&a.created_at),
        };
        key.then(a.id.cmp(&b.id))
    });
    order
}

impl Snapshot {
    /// Which entries contain `keyword` (case-insensitive), one flag per entry.
    fn keyword_matches(&self, keyword: &str) -> Vec<bool> {
        let mut hits = vec![false; self.entries.len()];
        let needle = keyword.to_lowercase();
        if needle.contains(SEPARATOR) {
            return hits;
        }
        let finder = memchr::memmem::Finder::new(needle.as_bytes());
        let haystack = self.text.as_bytes();
        let mut from = 0;
        while let Some(found) = finder.find(&haystack[from..]) {
            let at = from + found;
            // The entry whose text holds `at`; its other matches need not be found.
            let entry = self.starts.partition_point(|&s| s <= at) - 1;
            hits[entry] = true;
            from = self
                .starts
                .get(entry + 1)
                .copied()
                .unwrap_or(haystack.len());
            if from >= haystack.len() {
                break;
            }
        }
        hits
    }

    /// The entries a filtered listing keeps, in its order: from the memo when the same
    /// filters were asked of this snapshot before (a search box hears the same words all
    /// day), else by walking the sort order once.
    fn matching(&self, l: &Listing, order: &[u32]) -> Arc<[u32]> {
        let key = format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
            l.category,
            l.keyword.as_deref().map(str::to_lowercase),
            l.brand,
            l.min_price,
            l.max_price,
            l.on_sale,
            l.sort.index()
        );
        if let Some(hit) = self.memo().lists.get(&key) {
            return hit.clone();
        }
        let hits = l.keyword.as_deref().map(|k| self.keyword_matches(k));
        let keeps = |i: usize| {
            let e = &self.entries[i];
            hits.as_ref().is_none_or(|h| h[i])
                && l.brand.as_deref().is_none_or(|b| e.brand == b)
                && l.min_price.is_none_or(|min| e.real_price >= min)
                && l.max_price.is_none_or(|max| e.real_price <= max)
                && l.on_sale.is_none_or(|on| (e.discount_rate > 0) == on)
        };
        let kept: Arc<[u32]> = order
            .iter()
            .copied()
            .filter(|&i| keeps(i as usize))
            .collect();
        let mut memo = self.memo();
        if memo.entries + kept.len() > MEMO_ENTRIES {
            memo.lists.clear();
            memo.entries = 0;
        }
        memo.entries += kept.len();
        memo.lists.insert(key, kept.clone());
        kept
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The listing's page as JSON text (`Page<ItemSummary>`), with its exact total.
    pub(super) fn page(&self, l: &Listing) -> String {
        let order = match l.category {
            Some(c) => &self.by_category[category_index(c)][l.sort.index()],
            None => &self.orders[l.sort.index()],
        };
        let filtered;
        let kept: &[u32] = if l.only_category() {
            order
        } else {
            filtered = self.matching(l, order);
            &filtered
        };
        let (offset, size) = (l.page.offset(), l.page.size);
        let from = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(kept.len());
        let to = from.saturating_add(size as usize).min(kept.len());
        let mut out = String::with_capacity(64 + 512 * (to - from));
        out.push_str(r#"{"items":["#);
        for (n, &i) in kept[from..to].iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(&self.entries[i as usize].json);
        }
        let _ = write!(
            out,
            r#"],"page":{},"size":{},"total":{}}}"#,
            l.page.page,
            size,
            kept.len()
        );
        out
    }

    /// The main page as JSON text (`MainPage`): the first nine by sales and by discount.
    pub(super) fn main_page(&self) -> String {
        let top = |sort: Sort| {
            self.orders[sort.index()]
                .iter()
                .take(9)
                .map(|&i| &*self.entries[i as usize].json)
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            r#"{{"best_sellers":[{}],"best_discounts":[{}]}}"#,
            top(Sort::Sales),
            top(Sort::DiscountDesc)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: i64, title: &str, brand: &str, sales: i64) -> ItemSummary {
        ItemSummary {
            id,
            brand: brand.into(),
            title: title.into(),
            thumbnail_url: None,
            origin_price: 1000,
            discount_rate: 0,
            discount_price: 0,
            real_price: 1000,
            categories: vec!["EYE".into()],
            sales,
            view_count: 0,
            star_avg: 0.0,
            review_count: 0,
            created_at: Utc::now(),
        }
    }

    fn ids(json: &str) -> Vec<i64> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_i64().unwrap())
            .collect()
    }

    fn search(keyword: &str, page: i64, size: i64) -> Listing {
        Listing {
            category: None,
            keyword: Some(keyword.into()),
            brand: None,
            min_price: None,
            max_price: None,
            on_sale: None,
            sort: Sort::Sales,
            page: PageRequest { page, size },
        }
    }

    #[test]
    fn a_keyword_matches_each_item_once_case_insensitively_and_never_across_two_items() {
        let s = build(vec![
            item(1, "루테인 루테인 골드", "Alpha", 5),
            item(2, "오메가3", "LUTEIN lab", 9),
            item(3, "비타민", "루테", 7),
            item(4, "인삼", "Beta", 1),
        ])
        .unwrap();
        assert_eq!(ids(&s.page(&search("루테인", 1, 10))), vec![1]);
        assert_eq!(ids(&s.page(&search("lutein", 1, 10))), vec![2]);
        // "루테" ends item 3's text and "인" starts item 4's: no match across them.
        assert_eq!(ids(&s.page(&search("루테", 1, 10))), vec![3, 1]);
        assert_eq!(ids(&s.page(&search("테인", 1, 10))), vec![1]);
        let v: serde_json::Value = serde_json::from_str(&s.page(&search("a", 1, 10))).unwrap();
        assert_eq!(v["total"], 3, "{v}");
    }

    #[test]
    fn pages_slice_the_sorted_matches_and_keep_the_exact_total() {
        let s = build((1..=25).map(|i| item(i, "홍삼", "b", i % 7)).collect()).unwrap();
        let all: Vec<i64> = ids(&s.page(&search("홍삼", 1, 100)));
        assert_eq!(all.len(), 25);
        let mut paged = Vec::new();
        for page in 1..=4 {
            let json = s.page(&search("홍삼", page, 8));
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(
                (v["page"].as_i64(), v["size"].as_i64(), v["total"].as_i64()),
                (Some(page), Some(8), Some(25))
            );
            paged.extend(ids(&json));
        }
        assert_eq!(paged, all);
        // Sales descending, ties by id.
        assert_eq!(&all[..3], &[6, 13, 20]);
        // Every page of the word came from one walk; another sort is another.
        assert_eq!(s.memo().lists.len(), 1);
        let newest = Listing {
            sort: Sort::Newest,
            ..search("홍삼", 1, 8)
        };
        let _ = s.page(&newest);
        let memo = s.memo();
        assert_eq!((memo.lists.len(), memo.entries), (2, 50));
    }
}
