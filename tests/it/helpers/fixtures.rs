//! Rows the flows under test need but do not create themselves (items before the admin
//! routes are exercised, paid orders before the payment flow exists).

use serde_json::{json, Value};
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

/// A customer row (no password: these customers never log in): returns the id.
pub async fn user(db: &PgPool) -> i64 {
    let n: u32 = rand::random::<u32>() % 90_000_000 + 10_000_000;
    sqlx::query_scalar(
        "INSERT INTO users (email, password_hash, display_name, real_name, phone, city,
                            detail_address)
         VALUES ($1, 'x', $2, '홍길동', $3, 'Seoul', '1 Sejong-daero') RETURNING id",
    )
    .bind(format!("sub{n}@example.com"))
    .bind(format!("sub{n}"))
    .bind(format!("010-{:04}-{:04}", n / 10_000, n % 10_000))
    .fetch_one(db)
    .await
    .unwrap()
}

/// `n` monthly subscriptions of one `item` (19,900 won) spread over `users`, first paid 30
/// days ago and due now (database time): the billing run's input. Returns each one's
/// `(sid, user_id)` for registration at pgsim.
pub async fn due_subscriptions(
    db: &PgPool,
    users: &[i64],
    item: i64,
    n: i64,
) -> Vec<(String, i64)> {
    sqlx::query(
        "WITH o AS (
           INSERT INTO orders (user_id, kind, status, receiver_name, receiver_phone,
                               receiver_city, receiver_address, total_amount, item_count,
                               period_days, cycle, paid_at)
           SELECT ($1::bigint[])[1 + g % cardinality($1::bigint[])], 'subscription', 'paid',
                  '홍길동', '01012345678', 'Seoul', '1 Road', 19900, 1, 30, 1,
                  now() - interval '30 days'
           FROM generate_series(1, $2) g RETURNING id, user_id
         ),
         s AS (
           INSERT INTO subscriptions (user_id, period_days, sid, first_order_id, anchor_at,
                                      next_charge_at, last_charged_at, due_on)
           SELECT user_id, 30, 'S' || lpad(id::text, 19, '0'), id, now() - interval '30 days',
                  now(), now() - interval '30 days', (now() AT TIME ZONE 'Asia/Seoul')::date
           FROM o RETURNING id
         )
         INSERT INTO subscription_items (subscription_id, item_id, quantity)
         SELECT id, $3, 1 FROM s",
    )
    .bind(users)
    .bind(n)
    .bind(item)
    .execute(db)
    .await
    .unwrap();
    sqlx::query_as("SELECT sid, user_id FROM subscriptions ORDER BY id")
        .fetch_all(db)
        .await
        .unwrap()
}

/// Subscriptions charged for cycle 2 with nothing left in KakaoPay's hands (no attempt
/// `in_flight` or `unknown`): how far a billing run has got.
pub async fn charged_for_cycle_two(db: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM subscriptions WHERE current_cycle = 2
         AND NOT EXISTS (SELECT 1 FROM charge_attempts a WHERE a.subscription_id = subscriptions.id
                         AND a.status IN ('in_flight', 'unknown'))",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

/// Registers SIDs at pgsim (`POST /__sids`) as KakaoPay would have issued them to
/// `pv-user-<id>`.
pub async fn register_sids(client: &reqwest::Client, pg_url: &str, sids: &[(String, i64)]) {
    let entries: Vec<Value> = sids
        .iter()
        .map(|(sid, user)| {
            json!({"sid": sid, "cid": "TCSUBSCRIP", "partner_user_id": format!("pv-user-{user}"),
                   "item_name": "정기배송"})
        })
        .collect();
    let resp = client
        .post(format!("{pg_url}/__sids"))
        .json(&json!({ "sids": entries }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
}

/// A task that has failed for good (`diag.probe`, error `boom`), as operators find it.
pub async fn failed_job(db: &PgPool) -> uuid::Uuid {
    sqlx::query_scalar(
        "INSERT INTO fang_tasks (metadata, state, error_message, retries)
         VALUES ('{\"type\": \"diag.probe\", \"key\": \"k\"}', 'failed', 'boom', 5) RETURNING id",
    )
    .fetch_one(db)
    .await
    .unwrap()
}
