//! Listing: filters, sorts and stable paging, the main page, served from the catalog
//! snapshot, or from Postgres behind the page cache when the snapshot is off.

use super::*;

// ---- listing ----------------------------------------------------------------------------

/// `GET /api/items` query. `min_price > max_price` is rejected (422), not swapped.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// One of the categories (case-insensitive).
    pub category: Option<String>,
    /// Part of the product name or brand (case-insensitive).
    pub keyword: Option<String>,
    /// Exact brand.
    pub brand: Option<String>,
    /// Bounds on the real (discounted) price, inclusive.
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    /// true: discounted items only; false: undiscounted only.
    pub on_sale: Option<bool>,
    /// `sales` (default), `price_desc`, `price_asc`, `discount_desc`, `discount_asc`,
    /// `reviews`, `newest`; ties by id ascending.
    pub sort: Option<String>,
    #[param(minimum = 1, default = 1)]
    pub page: Option<i64>,
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub size: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Sales,
    PriceDesc,
    PriceAsc,
    DiscountDesc,
    DiscountAsc,
    Reviews,
    Newest,
}

impl Sort {
    pub const ALL: [Sort; 7] = [
        Sort::Sales,
        Sort::PriceDesc,
        Sort::PriceAsc,
        Sort::DiscountDesc,
        Sort::DiscountAsc,
        Sort::Reviews,
        Sort::Newest,
    ];

    /// Its place in [`Sort::ALL`].
    pub(super) fn index(self) -> usize {
        Sort::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    fn parse(s: &str) -> Option<Sort> {
        Some(match s {
            "sales" => Sort::Sales,
            "price_desc" => Sort::PriceDesc,
            "price_asc" => Sort::PriceAsc,
            "discount_desc" => Sort::DiscountDesc,
            "discount_asc" => Sort::DiscountAsc,
            "reviews" => Sort::Reviews,
            "newest" => Sort::Newest,
            _ => return None,
        })
    }

    fn order_by(self) -> &'static str {
        match self {
            Sort::Sales => "sales DESC, id",
            Sort::PriceDesc => "real_price DESC, id",
            Sort::PriceAsc => "real_price, id",
            Sort::DiscountDesc => "discount_rate DESC, id",
            Sort::DiscountAsc => "discount_rate, id",
            Sort::Reviews => "review_count DESC, id",
            Sort::Newest => "created_at DESC, id",
        }
    }
}

/// A validated listing request.
#[derive(Debug, Clone)]
pub(super) struct Listing {
    pub(super) category: Option<Category>,
    pub(super) keyword: Option<String>,
    pub(super) brand: Option<String>,
    pub(super) min_price: Option<i64>,
    pub(super) max_price: Option<i64>,
    pub(super) on_sale: Option<bool>,
    pub(super) sort: Sort,
    pub(super) page: PageRequest,
}

impl ListQuery {
    pub(super) fn validate(self) -> Result<Listing> {
        let mut checks = Checks::default();
        let category = match self
            .category
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            None => None,
            Some(c) => {
                let parsed = Category::parse(c);
                if parsed.is_none() {
                    checks.check("category", Err("must be one of EYE, BONE, BRAIN, INTESTINE, LIVER, SKIN, ANTIOXIDANT, FATIGUE, ETC"));
                }
                parsed
            }
        };
        let sort = match self.sort.as_deref() {
            None | Some("") => Sort::Sales,
            Some(s) => Sort::parse(s).unwrap_or_else(|| {
                checks.check("sort", Err("must be one of sales, price_desc, price_asc, discount_desc, discount_asc, reviews, newest"));
                Sort::Sales
            }),
        };
        let keyword = self
            .keyword
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty());
        if let Some(k) = &keyword {
            checks.check("keyword", bounded(k, 100));
            if k.chars().count() < 2 {
                checks.check("keyword", Err("must be at least 2 characters"));
            }
        }
        for (field, v) in [("min_price", self.min_price), ("max_price", self.max_price)] {
            if matches!(v, Some(p) if p < 0) {
                checks.check(field, Err("must not be negative"));
            }
        }
        if let (Some(min), Some(max)) = (self.min_price, self.max_price) {
            if min > max {
                checks.check("min_price", Err("must not be greater than max_price"));
            }
        }
        let page = PageRequest {
            page: self.page.unwrap_or(1),
            size: self.size.unwrap_or(20),
        };
        if let Err(Error::Validation(f)) = page.validate() {
            checks.0.extend(f);
        }
        checks.finish()?;
        Ok(Listing {
            category,
            keyword,
            brand: self
                .brand
                .map(|b| b.trim().to_owned())
                .filter(|b| !b.is_empty()),
            min_price: self.min_price,
            max_price: self.max_price,
            on_sale: self.on_sale,
            sort,
            page,
        })
    }
}

impl Listing {
    /// No filter but the category: its total is cached, its pages follow an index.
    pub(super) fn only_category(&self) -> bool {
        self.keyword.is_none()
            && self.brand.is_none()
            && self.min_price.is_none()
            && self.max_price.is_none()
            && self.on_sale.is_none()
    }

    /// Only the default-sorted, unfiltered (but for the category) pages
    /// 1..=`cached_pages` (`redis.cached_pages`) are cached.
    pub(super) fn cache_key(&self, cached_pages: u32) -> Option<String> {
        let plain = self.only_category()
            && self.sort == Sort::Sales
            && self.page.size == 20
            && self.page.page <= i64::from(cached_pages);
        plain.then(|| page_key(self.category, self.page.page))
    }

    fn push_filters(&self, q: &mut QueryBuilder<'_, Postgres>) {
        q.push(" FROM items WHERE selling AND deleted_at IS NULL");
        if let Some(c) = self.category {
            // A literal (the category is one of a fixed set), so the planner can match the
            // per-category partial indexes.
            q.push(format!(" AND categories @> '{{{}}}'", c.as_str()));
        }
        if let Some(k) = &self.keyword {
            // Two characters: the bigram index finds the candidates; three or more: the
            // trigram index serves the ILIKE itself.
            if k.chars().count() == 2 {
                q.push(" AND search_bigrams @> ARRAY[");
                q.push_bind(k.to_lowercase());
                q.push("]::text[]");
            }
            let escaped = k
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            q.push(" AND (title || ' ' || brand) ILIKE ");
            q.push_bind(format!("%{escaped}%"));
        }
        if let Some(b) = &self.brand {
            q.push(" AND brand = ");
            q.push_bind(b.clone());
        }
        if let Some(min) = self.min_price {
            q.push(" AND real_price >= ");
            q.push_bind(min);
        }
        if let Some(max) = self.max_price {
            q.push(" AND real_price <= ");
            q.push_bind(max);
        }
        match self.on_sale {
            Some(true) => {
                q.push(" AND discount_rate > 0");
            }
            Some(false) => {
                q.push(" AND discount_rate = 0");
            }
            None => {}
        }
    }
}

pub(super) fn page_key(category: Option<Category>, page: i64) -> String {
    let cat = category.map(Category::as_str).unwrap_or("ALL");
    format!("cache:items:{cat}:p{page}")
}

pub(super) fn count_key(category: Option<Category>) -> String {
    let cat = category.map(Category::as_str).unwrap_or("ALL");
    format!("cache:items:{cat}:count")
}

pub(super) const MAIN_KEY: &str = "cache:items:main";

/// Every cached key an item write can make stale, with pages 1..=`cached_pages` cached.
pub(super) fn all_page_keys(cached_pages: u32) -> Vec<String> {
    let mut keys = vec![MAIN_KEY.to_owned(), count_key(None)];
    for c in Category::ALL {
        keys.push(count_key(Some(c)));
    }
    for page in 1..=i64::from(cached_pages) {
        keys.push(page_key(None, page));
        for c in Category::ALL {
            keys.push(page_key(Some(c), page));
        }
    }
    keys
}

pub(super) async fn count(ctx: &Ctx, l: &Listing) -> Result<i64> {
    let mut q = QueryBuilder::<Postgres>::new("SELECT count(*)");
    l.push_filters(&mut q);
    Ok(q.build_query_scalar().fetch_one(ctx.db.pool()).await?)
}

pub(super) async fn page_rows(ctx: &Ctx, l: &Listing) -> Result<Vec<ItemSummary>> {
    let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {SUMMARY_COLUMNS}"));
    l.push_filters(&mut q);
    q.push(" ORDER BY ");
    q.push(l.sort.order_by());
    q.push(" LIMIT ");
    q.push_bind(l.page.size);
    q.push(" OFFSET ");
    q.push_bind(l.page.offset());
    Ok(q.build_query_as::<ItemSummary>()
        .fetch_all(ctx.db.pool())
        .await?)
}

#[derive(sqlx::FromRow)]
pub(super) struct CountedRow {
    #[sqlx(flatten)]
    item: ItemSummary,
    total: i64,
}

/// Filtered listings (keyword, brand, prices): the matching set is found once and both
/// the page and the total are read from it.
pub(super) async fn filtered_page(ctx: &Ctx, l: &Listing) -> Result<(Vec<ItemSummary>, i64)> {
    let mut q = QueryBuilder::<Postgres>::new(
        "WITH m AS MATERIALIZED (SELECT id, sales, real_price, discount_rate, review_count, created_at",
    );
    l.push_filters(&mut q);
    q.push("), p AS (SELECT id FROM m ORDER BY ");
    q.push(l.sort.order_by());
    q.push(" LIMIT ");
    q.push_bind(l.page.size);
    q.push(" OFFSET ");
    q.push_bind(l.page.offset());
    q.push(format!(
        ") SELECT {SUMMARY_COLUMNS}, (SELECT count(*) FROM m) AS total FROM items WHERE id IN (SELECT id FROM p) ORDER BY "
    ));
    q.push(l.sort.order_by());
    let rows: Vec<CountedRow> = q.build_query_as().fetch_all(ctx.db.pool()).await?;
    let total = match rows.first() {
        Some(r) => r.total,
        // Past the last page: the total still matters to the client.
        None => count(ctx, l).await?,
    };
    Ok((rows.into_iter().map(|r| r.item).collect(), total))
}

pub(super) async fn query_page(ctx: &Ctx, l: &Listing) -> Result<String> {
    let (items, total) = if l.only_category() {
        let key = count_key(l.category);
        let total: i64 = serde_json::from_str(
            &cached_json(ctx, &key, || async { Ok(count(ctx, l).await?.to_string()) }).await?,
        )
        .map_err(|e| Error::Internal(format!("cached count: {e}")))?;
        (page_rows(ctx, l).await?, total)
    } else {
        filtered_page(ctx, l).await?
    };
    to_json(&Page {
        items,
        page: l.page.page,
        size: l.page.size,
        total,
    })
}

pub(super) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("serialize: {e}")))
}

/// A page of items as JSON text (`Page<ItemSummary>`): cached pages are served as stored.
pub async fn list(ctx: &Ctx, query: ListQuery) -> Result<String> {
    let listing = query.validate()?;
    if let Some(snapshot) = snapshot::current(ctx).await? {
        return Ok(snapshot.page(&listing));
    }
    match listing.cache_key(ctx.settings.redis.cached_pages) {
        Some(key) => cached_json(ctx, &key, || query_page(ctx, &listing)).await,
        None => query_page(ctx, &listing).await,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MainPage {
    /// Top 9 by sales.
    pub best_sellers: Vec<ItemSummary>,
    /// Top 9 by discount rate.
    pub best_discounts: Vec<ItemSummary>,
}

/// The main page as JSON text (`MainPage`).
pub async fn main_page(ctx: &Ctx) -> Result<String> {
    if let Some(snapshot) = snapshot::current(ctx).await? {
        return Ok(snapshot.main_page());
    }
    cached_json(ctx, MAIN_KEY, || async {
        let top = |sort: Sort| {
            let listing = Listing {
                category: None,
                keyword: None,
                brand: None,
                min_price: None,
                max_price: None,
                on_sale: None,
                sort,
                page: PageRequest { page: 1, size: 9 },
            };
            async move { page_rows(ctx, &listing).await }
        };
        to_json(&MainPage {
            best_sellers: top(Sort::Sales).await?,
            best_discounts: top(Sort::DiscountDesc).await?,
        })
    })
    .await
}
