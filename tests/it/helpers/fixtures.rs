//! Rows the flows under test need but do not create themselves (items before the admin
//! routes are exercised, paid orders before the payment flow exists).

use sqlx::PgPool;

/// An item for sale: returns its id.
pub async fn item(db: &PgPool, title: &str, origin_price: i64, discount_rate: i32) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO items (brand, title, main_function, origin_price, discount_rate, categories)
         VALUES ('테스트브랜드', $1, '눈 건강', $2, $3, '{EYE}') RETURNING id",
    )
    .bind(title)
    .bind(origin_price)
    .bind(discount_rate)
    .fetch_one(db)
    .await
    .unwrap()
}
