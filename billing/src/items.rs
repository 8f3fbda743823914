//! The catalog: items, their derived prices and categories, admin writes and bulk import,
//! listing (filters, sorts, stable paging) with Redis page caching, detail, unique views.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rand::Rng;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use utoipa::ToSchema;

use crate::error::{Error, FieldError, Result};
use crate::money::Money;
use crate::page::{Page, PageRequest};
use crate::validate::Checks;
use crate::Ctx;

/// The fixed category set; an item can have several.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Category {
    Eye,
    Bone,
    Brain,
    Intestine,
    Liver,
    Skin,
    Antioxidant,
    Fatigue,
    Etc,
}

impl Category {
    pub const ALL: [Category; 9] = [
        Category::Eye,
        Category::Bone,
        Category::Brain,
        Category::Intestine,
        Category::Liver,
        Category::Skin,
        Category::Antioxidant,
        Category::Fatigue,
        Category::Etc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Eye => "EYE",
            Category::Bone => "BONE",
            Category::Brain => "BRAIN",
            Category::Intestine => "INTESTINE",
            Category::Liver => "LIVER",
            Category::Skin => "SKIN",
            Category::Antioxidant => "ANTIOXIDANT",
            Category::Fatigue => "FATIGUE",
            Category::Etc => "ETC",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// Keywords of the main-function text that put an item in a category (DESIGN §2).
const KEYWORDS: &[(Category, &[&str])] = &[
    (Category::Eye, &["눈"]),
    (Category::Bone, &["뼈", "골다공증"]),
    (Category::Brain, &["두뇌"]),
    (Category::Intestine, &["배변", "장", "유산균"]),
    (Category::Liver, &["간"]),
    (Category::Skin, &["피부"]),
    (Category::Antioxidant, &["항산화"]),
    (Category::Fatigue, &["피로", "혈액순환"]),
];

/// Every category whose keywords appear in the main-function text; `ETC` if none.
pub fn classify(main_function: &str) -> Vec<Category> {
    let found: Vec<Category> = KEYWORDS
        .iter()
        .filter(|(_, words)| words.iter().any(|w| main_function.contains(w)))
        .map(|(c, _)| *c)
        .collect();
    if found.is_empty() {
        vec![Category::Etc]
    } else {
        found
    }
}

/// `discount = round_half_up(origin × rate / 100)`; the database derives the same.
pub fn discount(origin: Money, rate: i32) -> Money {
    Money((origin.0 * i64::from(rate) + 50) / 100)
}

pub fn real_price(origin: Money, rate: i32) -> Money {
    Money(origin.0 - discount(origin, rate).0)
}

// ---- items as the storefront and admins see them ---------------------------------------

/// A listing row.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct ItemSummary {
    pub id: i64,
    pub brand: String,
    pub title: String,
    pub thumbnail_url: Option<String>,
    pub origin_price: i64,
    pub discount_rate: i32,
    pub discount_price: i64,
    pub real_price: i64,
    #[schema(value_type = Vec<Category>)]
    pub categories: Vec<String>,
    pub sales: i64,
    pub view_count: i64,
    pub star_avg: f64,
    pub review_count: i32,
    pub created_at: DateTime<Utc>,
}

/// Everything about one item.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct ItemDetail {
    pub id: i64,
    pub brand: String,
    pub title: String,
    pub description: String,
    pub main_function: String,
    pub intake: String,
    pub precautions: String,
    pub serving_use: String,
    pub preservation: String,
    pub distribution_period: String,
    pub standard: String,
    pub capacity: String,
    pub thumbnail_url: Option<String>,
    pub description_image_url: Option<String>,
    pub origin_price: i64,
    pub discount_rate: i32,
    pub discount_price: i64,
    pub real_price: i64,
    #[schema(value_type = Vec<Category>)]
    pub categories: Vec<String>,
    /// False once taken off sale (still shown, not orderable).
    pub selling: bool,
    pub sales: i64,
    pub view_count: i64,
    pub star_avg: f64,
    pub review_count: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const SUMMARY_COLUMNS: &str = "id, brand, title, thumbnail_url, origin_price, discount_rate, \
    discount_price, real_price, categories, sales, view_count, star_avg::float8 AS star_avg, \
    review_count, created_at";

const DETAIL_COLUMNS: &str = "id, brand, title, description, main_function, intake, precautions, \
    serving_use, preservation, distribution_period, standard, capacity, thumbnail_url, \
    description_image_url, origin_price, discount_rate, discount_price, real_price, categories, \
    selling, sales, view_count, star_avg::float8 AS star_avg, review_count, created_at, updated_at";

/// `POST /api/admin/items` and each line of a bulk import.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ItemInput {
    #[schema(required = true)]
    pub brand: String,
    #[schema(required = true)]
    pub title: String,
    pub description: String,
    /// Classified into categories by keyword (DESIGN §2).
    #[schema(required = true)]
    pub main_function: String,
    pub intake: String,
    pub precautions: String,
    pub serving_use: String,
    pub preservation: String,
    pub distribution_period: String,
    pub standard: String,
    pub capacity: String,
    pub thumbnail_url: Option<String>,
    pub description_image_url: Option<String>,
    /// KRW, 0–100,000,000.
    #[schema(required = true)]
    pub origin_price: Option<i64>,
    /// Percent, 0–90.
    pub discount_rate: i32,
    /// Defaults to true.
    pub selling: Option<bool>,
}

/// `PATCH /api/admin/items/{id}`: only the fields present change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ItemPatch {
    pub brand: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub main_function: Option<String>,
    pub intake: Option<String>,
    pub precautions: Option<String>,
    pub serving_use: Option<String>,
    pub preservation: Option<String>,
    pub distribution_period: Option<String>,
    pub standard: Option<String>,
    pub capacity: Option<String>,
    pub thumbnail_url: Option<String>,
    pub description_image_url: Option<String>,
    pub origin_price: Option<i64>,
    pub discount_rate: Option<i32>,
    pub selling: Option<bool>,
}

fn check_url(checks: &mut Checks, field: &str, value: &Option<String>) {
    if let Some(v) = value {
        let ok = url::Url::parse(v)
            .map(|u| matches!(u.scheme(), "http" | "https") && v.len() <= 1000)
            .unwrap_or(false);
        checks.check(
            field,
            if ok {
                Ok(())
            } else {
                Err("must be an http(s) URL")
            },
        );
    }
}

fn bounded(value: &str, max: usize) -> std::result::Result<(), &'static str> {
    if value.chars().count() > max {
        Err("is too long")
    } else {
        Ok(())
    }
}

impl ItemInput {
    fn check(&self, checks: &mut Checks) {
        checks.check("brand", crate::validate::text(&self.brand, 100));
        checks.check("title", crate::validate::text(&self.title, 200));
        checks.check(
            "main_function",
            crate::validate::text(&self.main_function, 2000),
        );
        for (field, value) in [
            ("description", &self.description),
            ("intake", &self.intake),
            ("precautions", &self.precautions),
            ("serving_use", &self.serving_use),
            ("preservation", &self.preservation),
            ("distribution_period", &self.distribution_period),
            ("standard", &self.standard),
            ("capacity", &self.capacity),
        ] {
            checks.check(field, bounded(value, 5000));
        }
        check_url(checks, "thumbnail_url", &self.thumbnail_url);
        check_url(checks, "description_image_url", &self.description_image_url);
        match self.origin_price {
            None => checks.check("origin_price", Err("is required")),
            Some(p) if !(0..=100_000_000).contains(&p) => {
                checks.check("origin_price", Err("must be 0 to 100,000,000"))
            }
            Some(_) => {}
        }
        if !(0..=90).contains(&self.discount_rate) {
            checks.check("discount_rate", Err("must be 0 to 90"));
        }
    }

    fn categories(&self) -> Vec<String> {
        classify(&self.main_function)
            .into_iter()
            .map(|c| c.as_str().to_owned())
            .collect()
    }

    fn apply(&mut self, p: ItemPatch) {
        let set = |dst: &mut String, v: Option<String>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut self.brand, p.brand);
        set(&mut self.title, p.title);
        set(&mut self.description, p.description);
        set(&mut self.main_function, p.main_function);
        set(&mut self.intake, p.intake);
        set(&mut self.precautions, p.precautions);
        set(&mut self.serving_use, p.serving_use);
        set(&mut self.preservation, p.preservation);
        set(&mut self.distribution_period, p.distribution_period);
        set(&mut self.standard, p.standard);
        set(&mut self.capacity, p.capacity);
        if p.thumbnail_url.is_some() {
            self.thumbnail_url = p.thumbnail_url;
        }
        if p.description_image_url.is_some() {
            self.description_image_url = p.description_image_url;
        }
        if p.origin_price.is_some() {
            self.origin_price = p.origin_price;
        }
        if let Some(r) = p.discount_rate {
            self.discount_rate = r;
        }
        if p.selling.is_some() {
            self.selling = p.selling;
        }
    }
}

impl From<ItemDetail> for ItemInput {
    fn from(d: ItemDetail) -> Self {
        ItemInput {
            brand: d.brand,
            title: d.title,
            description: d.description,
            main_function: d.main_function,
            intake: d.intake,
            precautions: d.precautions,
            serving_use: d.serving_use,
            preservation: d.preservation,
            distribution_period: d.distribution_period,
            standard: d.standard,
            capacity: d.capacity,
            thumbnail_url: d.thumbnail_url,
            description_image_url: d.description_image_url,
            origin_price: Some(d.origin_price),
            discount_rate: d.discount_rate,
            selling: Some(d.selling),
        }
    }
}

async fn fetch_detail(conn: &mut PgConnection, id: i64, lock: bool) -> Result<Option<ItemDetail>> {
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {DETAIL_COLUMNS} FROM items WHERE deleted_at IS NULL AND id = "
    ));
    q.push_bind(id);
    if lock {
        q.push(" FOR UPDATE");
    }
    Ok(q.build_query_as::<ItemDetail>()
        .fetch_optional(&mut *conn)
        .await?)
}

/// Inserts validated items in one statement; returns their ids in input order.
async fn insert_items(conn: &mut PgConnection, items: &[ItemInput]) -> Result<Vec<i64>> {
    let col = |f: fn(&ItemInput) -> String| items.iter().map(f).collect::<Vec<String>>();
    let ids = sqlx::query_scalar!(
        r#"INSERT INTO items (brand, title, description, main_function, intake, precautions,
                              serving_use, preservation, distribution_period, standard, capacity,
                              thumbnail_url, description_image_url, origin_price, discount_rate,
                              selling, categories)
           SELECT b, t, d, m, i, p, s, pr, dp, st, c, tu, du, op, dr, se, string_to_array(cat, ',')
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                       $13::text[], $14::int8[], $15::int4[], $16::bool[], $17::text[])
                WITH ORDINALITY AS x(b, t, d, m, i, p, s, pr, dp, st, c, tu, du, op, dr, se, cat, n)
           ORDER BY n
           RETURNING id"#,
        &col(|i| i.brand.trim().to_owned()),
        &col(|i| i.title.trim().to_owned()),
        &col(|i| i.description.clone()),
        &col(|i| i.main_function.clone()),
        &col(|i| i.intake.clone()),
        &col(|i| i.precautions.clone()),
        &col(|i| i.serving_use.clone()),
        &col(|i| i.preservation.clone()),
        &col(|i| i.distribution_period.clone()),
        &col(|i| i.standard.clone()),
        &col(|i| i.capacity.clone()),
        &items
            .iter()
            .map(|i| i.thumbnail_url.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &items
            .iter()
            .map(|i| i.description_image_url.clone())
            .collect::<Vec<_>>() as &[Option<String>],
        &items
            .iter()
            .map(|i| i.origin_price.unwrap_or_default())
            .collect::<Vec<i64>>(),
        &items.iter().map(|i| i.discount_rate).collect::<Vec<i32>>(),
        &items
            .iter()
            .map(|i| i.selling.unwrap_or(true))
            .collect::<Vec<bool>>(),
        &col(|i| i.categories().join(",")),
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(ids)
}

pub async fn create(ctx: &Ctx, input: ItemInput) -> Result<ItemDetail> {
    let mut checks = Checks::default();
    input.check(&mut checks);
    checks.finish()?;
    let mut tx = ctx.db.begin().await?;
    let ids = insert_items(&mut tx, std::slice::from_ref(&input)).await?;
    let id = *ids
        .first()
        .ok_or_else(|| Error::Internal("insert returned no id".into()))?;
    let item = fetch_detail(&mut tx, id, false)
        .await?
        .ok_or(Error::NotFound)?;
    tx.commit().await?;
    invalidate_pages(ctx).await;
    Ok(item)
}

pub async fn update(ctx: &Ctx, id: i64, patch: ItemPatch) -> Result<ItemDetail> {
    let mut tx = ctx.db.begin().await?;
    let current = fetch_detail(&mut tx, id, true)
        .await?
        .ok_or(Error::NotFound)?;
    let mut merged = ItemInput::from(current);
    merged.apply(patch);
    let mut checks = Checks::default();
    merged.check(&mut checks);
    checks.finish()?;
    sqlx::query!(
        r#"UPDATE items SET brand = $2, title = $3, description = $4, main_function = $5,
                  intake = $6, precautions = $7, serving_use = $8, preservation = $9,
                  distribution_period = $10, standard = $11, capacity = $12, thumbnail_url = $13,
                  description_image_url = $14, origin_price = $15, discount_rate = $16,
                  selling = $17, categories = $18
           WHERE id = $1"#,
        id,
        merged.brand.trim(),
        merged.title.trim(),
        merged.description,
        merged.main_function,
        merged.intake,
        merged.precautions,
        merged.serving_use,
        merged.preservation,
        merged.distribution_period,
        merged.standard,
        merged.capacity,
        merged.thumbnail_url,
        merged.description_image_url,
        merged.origin_price.unwrap_or_default(),
        merged.discount_rate,
        merged.selling.unwrap_or(true),
        &merged.categories(),
    )
    .execute(&mut *tx)
    .await?;
    let item = fetch_detail(&mut tx, id, false)
        .await?
        .ok_or(Error::NotFound)?;
    tx.commit().await?;
    invalidate_pages(ctx).await;
    Ok(item)
}

/// Soft delete: carts and orders keep pointing at the row and show it as unavailable.
pub async fn delete(ctx: &Ctx, id: i64) -> Result<()> {
    let mut tx = ctx.db.begin().await?;
    let done = sqlx::query!(
        "UPDATE items SET deleted_at = $2, selling = false WHERE id = $1 AND deleted_at IS NULL",
        id,
        ctx.clock.now()
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound);
    }
    invalidate_pages(ctx).await;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    JsonLines,
    Csv,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportReport {
    pub inserted: usize,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
}

/// Parses and validates every line first; any bad line rejects the whole import (422 with
/// `line N: field` names) and nothing is written. Then one transaction inserts them all.
pub async fn import(ctx: &Ctx, body: &str, format: ImportFormat) -> Result<ImportReport> {
    let items = parse_import(body, format)?;
    let mut tx = ctx.db.begin().await?;
    let mut ids = Vec::with_capacity(items.len());
    for chunk in items.chunks(5_000) {
        ids.extend(insert_items(&mut tx, chunk).await?);
    }
    tx.commit().await?;
    invalidate_pages(ctx).await;
    tracing::info!(inserted = ids.len(), "items imported");
    Ok(ImportReport {
        inserted: ids.len(),
        first_id: ids.first().copied(),
        last_id: ids.last().copied(),
    })
}

fn parse_import(body: &str, format: ImportFormat) -> Result<Vec<ItemInput>> {
    let mut items = Vec::new();
    let mut errors: Vec<FieldError> = Vec::new();
    let mut push = |line: usize, parsed: std::result::Result<ItemInput, String>| match parsed {
        Ok(item) => {
            let mut checks = Checks::default();
            item.check(&mut checks);
            for f in checks.0 {
                errors.push(FieldError::new(
                    format!("line {line}: {}", f.field),
                    f.reason,
                ));
            }
            items.push(item);
        }
        Err(reason) => errors.push(FieldError::new(format!("line {line}"), reason)),
    };
    match format {
        ImportFormat::JsonLines => {
            for (i, line) in body.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                push(i + 1, serde_json::from_str(line).map_err(|e| e.to_string()));
            }
        }
        ImportFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .trim(csv::Trim::Fields)
                .from_reader(body.as_bytes());
            for (i, record) in reader.deserialize::<CsvItem>().enumerate() {
                // Line 1 is the header.
                push(
                    i + 2,
                    record.map(ItemInput::from).map_err(|e| e.to_string()),
                );
            }
        }
    }
    if items.is_empty() && errors.is_empty() {
        errors.push(FieldError::new("body", "no items"));
    }
    if errors.len() > 100 {
        errors.truncate(100);
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(Error::Validation(errors))
    }
}

/// A CSV row: the same columns as the JSON fields; empty cells are absent values.
#[derive(Debug, Deserialize)]
struct CsvItem {
    brand: String,
    title: String,
    #[serde(default)]
    description: String,
    main_function: String,
    #[serde(default)]
    intake: String,
    #[serde(default)]
    precautions: String,
    #[serde(default)]
    serving_use: String,
    #[serde(default)]
    preservation: String,
    #[serde(default)]
    distribution_period: String,
    #[serde(default)]
    standard: String,
    #[serde(default)]
    capacity: String,
    #[serde(default)]
    thumbnail_url: Option<String>,
    #[serde(default)]
    description_image_url: Option<String>,
    origin_price: i64,
    #[serde(default)]
    discount_rate: i32,
    #[serde(default)]
    selling: Option<bool>,
}

impl From<CsvItem> for ItemInput {
    fn from(c: CsvItem) -> Self {
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        ItemInput {
            brand: c.brand,
            title: c.title,
            description: c.description,
            main_function: c.main_function,
            intake: c.intake,
            precautions: c.precautions,
            serving_use: c.serving_use,
            preservation: c.preservation,
            distribution_period: c.distribution_period,
            standard: c.standard,
            capacity: c.capacity,
            thumbnail_url: non_empty(c.thumbnail_url),
            description_image_url: non_empty(c.description_image_url),
            origin_price: Some(c.origin_price),
            discount_rate: c.discount_rate,
            selling: c.selling,
        }
    }
}

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
struct Listing {
    category: Option<Category>,
    keyword: Option<String>,
    brand: Option<String>,
    min_price: Option<i64>,
    max_price: Option<i64>,
    on_sale: Option<bool>,
    sort: Sort,
    page: PageRequest,
}

impl ListQuery {
    fn validate(self) -> Result<Listing> {
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
    fn only_category(&self) -> bool {
        self.keyword.is_none()
            && self.brand.is_none()
            && self.min_price.is_none()
            && self.max_price.is_none()
            && self.on_sale.is_none()
    }

    /// Only the default-sorted, unfiltered (but for the category) pages 1–5 are cached.
    fn cache_key(&self) -> Option<String> {
        let plain = self.only_category()
            && self.sort == Sort::Sales
            && self.page.size == 20
            && self.page.page <= CACHED_PAGES;
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

const CACHED_PAGES: i64 = 5;

fn page_key(category: Option<Category>, page: i64) -> String {
    let cat = category.map(Category::as_str).unwrap_or("ALL");
    format!("cache:items:{cat}:p{page}")
}

fn count_key(category: Option<Category>) -> String {
    let cat = category.map(Category::as_str).unwrap_or("ALL");
    format!("cache:items:{cat}:count")
}

const MAIN_KEY: &str = "cache:items:main";

/// Every cached key an item write can make stale.
fn all_page_keys() -> Vec<String> {
    let mut keys = vec![MAIN_KEY.to_owned(), count_key(None)];
    for c in Category::ALL {
        keys.push(count_key(Some(c)));
    }
    for page in 1..=CACHED_PAGES {
        keys.push(page_key(None, page));
        for c in Category::ALL {
            keys.push(page_key(Some(c), page));
        }
    }
    keys
}

async fn count(ctx: &Ctx, l: &Listing) -> Result<i64> {
    let mut q = QueryBuilder::<Postgres>::new("SELECT count(*)");
    l.push_filters(&mut q);
    Ok(q.build_query_scalar().fetch_one(ctx.db.pool()).await?)
}

async fn page_rows(ctx: &Ctx, l: &Listing) -> Result<Vec<ItemSummary>> {
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
struct CountedRow {
    #[sqlx(flatten)]
    item: ItemSummary,
    total: i64,
}

/// Filtered listings (keyword, brand, prices): the matching set is found once and both
/// the page and the total are read from it.
async fn filtered_page(ctx: &Ctx, l: &Listing) -> Result<(Vec<ItemSummary>, i64)> {
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

async fn query_page(ctx: &Ctx, l: &Listing) -> Result<String> {
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

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("serialize: {e}")))
}

/// A page of items as JSON text (`Page<ItemSummary>`): cached pages are served as stored.
pub async fn list(ctx: &Ctx, query: ListQuery) -> Result<String> {
    let listing = query.validate()?;
    match listing.cache_key() {
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

// ---- the page cache ---------------------------------------------------------------------

/// Seconds a cached page lives, before jitter (±20 %) spreads expiries apart.
const CACHE_TTL_SECS: u64 = 60;

fn jittered_ttl() -> u64 {
    let spread = CACHE_TTL_SECS / 5;
    CACHE_TTL_SECS - spread + rand::rng().random_range(0..=2 * spread)
}

/// One loader per key in this process: concurrent misses wait for the first one's result.
fn loader_lock(key: &str) -> Arc<tokio::sync::Mutex<()>> {
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

/// The generation counter every invalidation bumps: a load that raced a write does not
/// store what it read.
const GEN_KEY: &str = "cache:items:gen";

async fn cache_get(ctx: &Ctx, key: &str) -> Option<String> {
    let full = ctx.kv.key(key);
    ctx.kv
        .run(|mut c| async move { c.get(&full).await })
        .await
        .inspect_err(|e| tracing::debug!(error = %e, "cache read skipped"))
        .ok()
        .flatten()
}

/// The JSON text under `key`, or `load`'s, stored for next time (Redis errors only skip
/// the cache).
async fn cached_json<F, Fut>(ctx: &Ctx, key: &str, load: F) -> Result<String>
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
    if let Some(hit) = cache_get(ctx, key).await {
        metrics::counter!("cache_requests_total", "cache" => kind, "result" => "hit").increment(1);
        return Ok(hit);
    }
    let lock = loader_lock(&ctx.kv.key(key));
    let _guard = lock.lock().await;
    if let Some(hit) = cache_get(ctx, key).await {
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
        let ttl = jittered_ttl();
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

/// Drops every cached listing page and the main page, and bumps the generation.
async fn invalidate_pages(ctx: &Ctx) {
    let keys: Vec<String> = all_page_keys().iter().map(|k| ctx.kv.key(k)).collect();
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

// ---- detail and unique views ------------------------------------------------------------

/// The store's calendar day now: views are unique per client IP per item per local day
/// of the configured store time zone (`subscriptions.time_zone`), by the `Clock`.
pub fn store_day(ctx: &Ctx) -> NaiveDate {
    ctx.settings
        .subscriptions
        .time_zone
        .local_date(ctx.clock.now())
}

fn views_key(day: NaiveDate, item: i64) -> String {
    format!("views:{}:{item}", day.format("%Y%m%d"))
}

fn dirty_key(day: NaiveDate) -> String {
    format!("views:dirty:{}", day.format("%Y%m%d"))
}

/// Views are kept three days in Redis: today's, yesterday's for a late flush, and slack.
const VIEW_KEY_TTL_SECS: i64 = 3 * 24 * 3600;

pub async fn detail(ctx: &Ctx, id: i64, client: IpAddr) -> Result<ItemDetail> {
    let mut conn = ctx.db.acquire().await?;
    let item = fetch_detail(&mut conn, id, false)
        .await?
        .ok_or(Error::NotFound)?;
    drop(conn);
    if let Err(e) = record_view(ctx, id, client).await {
        // Redis down: the page still shows; the view is dropped.
        tracing::debug!(error = %e, "view not counted");
    }
    Ok(item)
}

async fn record_view(ctx: &Ctx, id: i64, client: IpAddr) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_round_half_up() {
        let table = [
            (10_000, 0, 0, 10_000),
            (10_000, 15, 1_500, 8_500),
            (9_990, 15, 1_499, 8_491), // 1498.5 → 1499
            (9_970, 15, 1_496, 8_474), // 1495.5 → 1496
            (33, 50, 17, 16),          // 16.5 → 17
            (1, 90, 1, 0),             // 0.9 → 1
            (0, 90, 0, 0),
        ];
        for (origin, rate, d, real) in table {
            assert_eq!(discount(Money(origin), rate), Money(d), "{origin} {rate}");
            assert_eq!(
                real_price(Money(origin), rate),
                Money(real),
                "{origin} {rate}"
            );
        }
    }

    #[test]
    fn categories_come_from_the_keyword_table() {
        use Category::*;
        let table: &[(&str, &[Category])] = &[
            ("눈 건강에 도움", &[Eye]),
            ("뼈 형성과 골다공증 발생 위험 감소", &[Bone]),
            ("두뇌 활동", &[Brain]),
            ("유산균 증식 및 원활한 배변활동", &[Intestine]),
            ("간 건강", &[Liver]),
            ("피부 보습", &[Skin]),
            ("항산화에 필요", &[Antioxidant]),
            ("피로 개선, 혈액순환", &[Fatigue]),
            ("눈과 피부, 항산화", &[Eye, Skin, Antioxidant]),
            ("면역력 증진", &[Etc]),
            ("", &[Etc]),
        ];
        for (text, want) in table {
            assert_eq!(classify(text), want.to_vec(), "{text}");
        }
        assert_eq!(Category::parse("eye"), Some(Category::Eye));
        assert_eq!(Category::parse("nope"), None);
    }

    #[test]
    fn listing_validation_names_the_field() {
        let bad = |q: ListQuery, field: &str| match q.validate() {
            Err(Error::Validation(f)) => assert!(f.iter().any(|e| e.field == field), "{f:?}"),
            other => panic!("{field}: {other:?}"),
        };
        bad(
            ListQuery {
                page: Some(0),
                ..Default::default()
            },
            "page",
        );
        bad(
            ListQuery {
                size: Some(101),
                ..Default::default()
            },
            "size",
        );
        bad(
            ListQuery {
                size: Some(0),
                ..Default::default()
            },
            "size",
        );
        bad(
            ListQuery {
                min_price: Some(5),
                max_price: Some(4),
                ..Default::default()
            },
            "min_price",
        );
        bad(
            ListQuery {
                category: Some("VITAMIN".into()),
                ..Default::default()
            },
            "category",
        );
        bad(
            ListQuery {
                sort: Some("cheap".into()),
                ..Default::default()
            },
            "sort",
        );
        let ok = ListQuery {
            size: Some(100),
            page: Some(6),
            category: Some("eye".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(ok.category, Some(Category::Eye));
        assert_eq!(ok.cache_key(), None, "page 6 is not cached");
        let cached = ListQuery {
            category: Some("EYE".into()),
            page: Some(5),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(cached.cache_key().as_deref(), Some("cache:items:EYE:p5"));
    }
}
