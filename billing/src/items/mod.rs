//! The catalog: items, their derived prices and categories; admin writes and bulk import
//! (`admin`), listing with filters, sorts and stable paging (`listing`) from an in-process
//! snapshot of the items on sale (`snapshot`) or over a Redis page cache (`cache`), detail and unique views (`views`), sales counts folded from paid
//! orders (`sales`).

mod admin;
mod cache;
mod listing;
mod sales;
mod snapshot;
mod views;

pub use admin::*;
#[allow(unused_imports)]
use cache::*;
pub use listing::*;
pub use sales::*;
pub use snapshot::CatalogSnapshot;
pub use views::*;

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
pub(super) const KEYWORDS: &[(Category, &[&str])] = &[
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

pub(super) const SUMMARY_COLUMNS: &str =
    "id, brand, title, thumbnail_url, origin_price, discount_rate, \
    discount_price, real_price, categories, sales, view_count, star_avg::float8 AS star_avg, \
    review_count, created_at";

pub(super) const DETAIL_COLUMNS: &str =
    "id, brand, title, description, main_function, intake, precautions, \
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
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
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

pub(super) fn check_url(checks: &mut Checks, field: &str, value: &Option<String>) {
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

pub(super) fn bounded(value: &str, max: usize) -> std::result::Result<(), &'static str> {
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
        assert_eq!(ok.cache_key(5), None, "page 6 is not cached");
        let cached = ListQuery {
            category: Some("EYE".into()),
            page: Some(5),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(cached.cache_key(5).as_deref(), Some("cache:items:EYE:p5"));
        assert_eq!(
            cached.cache_key(4),
            None,
            "past a smaller redis.cached_pages"
        );
    }

    #[test]
    fn an_item_write_drops_every_cached_page_and_no_other() {
        for cached_pages in [1_u32, 5, 12] {
            let keys = all_page_keys(cached_pages);
            let categories = Category::ALL.len();
            // The main page, the counts, and each cached page of every listing.
            let want = 1 + (1 + categories) + cached_pages as usize * (1 + categories);
            assert_eq!(keys.len(), want, "{cached_pages} pages");
            let last = i64::from(cached_pages);
            assert!(keys.contains(&page_key(Some(Category::Eye), last)));
            assert!(keys.contains(&page_key(None, last)));
            assert!(!keys.contains(&page_key(None, last + 1)));
        }
    }
}
