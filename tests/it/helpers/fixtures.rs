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

/// A paid one-time order of `quantity` × `item_id` for `user_id`: returns the order id.
pub async fn paid_order(db: &PgPool, user_id: i64, item_id: i64, quantity: i32) -> i64 {
    let order: i64 = sqlx::query_scalar(
        "INSERT INTO orders (user_id, kind, status, receiver_name, receiver_phone, receiver_city,
                             receiver_address, total_amount, item_count, paid_at)
         SELECT $1, 'one_time', 'paid', '홍길동', '01012345678', 'Seoul', '1 Road',
                real_price * $3, $3, now()
         FROM items WHERE id = $2 RETURNING id",
    )
    .bind(user_id)
    .bind(item_id)
    .bind(quantity)
    .fetch_one(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO order_items (order_id, item_id, item_name, unit_price, unit_discount, quantity)
         SELECT $1, id, title, real_price, discount_price, $3 FROM items WHERE id = $2",
    )
    .bind(order)
    .bind(item_id)
    .bind(quantity)
    .execute(db)
    .await
    .unwrap();
    order
}
