//! The catalog: items, their derived prices and categories, listing, detail and views.

use serde::{Deserialize, Serialize};

use crate::money::Money;

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
}
