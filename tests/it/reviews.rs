//! Reviews: only buyers of a paid order review, once per item (also when racing), star and
//! content bounds, writer-only edit and soft delete, sorts and paging, and the item's star
//! average staying exactly `round(avg(star), 2)` of the active reviews under any sequence.

use std::collections::HashMap;

use futures::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::fixtures;
use crate::helpers::{error_fields, expect_error, page_ids as ids, spawn_app, TestApp, TestUser};

/// A signed-up, logged-in user with a paid order of each of `items`.
async fn buyer(app: &TestApp, items: &[i64]) -> (TestUser, String) {
    let user = app.signup().await;
    for item in items {
        fixtures::paid_order(&app.db, user.id, *item, 1).await;
    }
    let token = app.login(&user).await.access;
    (user, token)
}

async fn post_review(app: &TestApp, token: &str, item: i64, body: Value) -> Response {
    app.post_json(&format!("/api/items/{item}/reviews"), &body)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Writes a review and expects 201; returns its id.
async fn review(app: &TestApp, token: &str, item: i64, star: i64) -> i64 {
    let resp = post_review(
        app,
        token,
        item,
        json!({"star": star, "content": format!("{star}점입니다")}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    body["id"].as_i64().unwrap()
}

async fn patch_review(app: &TestApp, token: &str, id: i64, body: Value) -> Response {
    app.request(Method::PATCH, &format!("/api/reviews/{id}"))
        .json(&body)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn delete_review(app: &TestApp, token: &str, id: i64) -> Response {
    app.request(Method::DELETE, &format!("/api/reviews/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn list(app: &TestApp, item: i64, query: &str) -> Value {
    let resp = app
        .get(&format!("/api/items/{item}/reviews?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{query}");
    resp.json().await.unwrap()
}

/// The item's stored `(star_avg as text, review_count)`.
async fn stats(app: &TestApp, item: i64) -> (String, i32) {
    sqlx::query_as("SELECT star_avg::text, review_count FROM items WHERE id = $1")
        .bind(item)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// What the stats must be: `round(avg(star), 2)` (half up) and the count, computed here
/// from the stars in integers, as text like Postgres prints `NUMERIC(3,2)`.
fn expected_stats(stars: &[i64]) -> (String, i32) {
    let n = stars.len() as i64;
    if n == 0 {
        return ("0.00".into(), 0);
    }
    let sum: i64 = stars.iter().sum();
    let hundredths = (200 * sum + n) / (2 * n);
    (
        format!("{}.{:02}", hundredths / 100, hundredths % 100),
        n as i32,
    )
}

/// The stats must also equal what Postgres computes from the active reviews right now.
async fn assert_stats_match_active_reviews(app: &TestApp, item: i64) {
    let (avg, count): (String, i32) = sqlx::query_as(
        "SELECT COALESCE(round(avg(star), 2), 0)::numeric(3,2)::text, count(*)::int
         FROM reviews WHERE item_id = $1 AND deleted_at IS NULL",
    )
    .bind(item)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(stats(app, item).await, (avg, count), "item {item}");
}

#[tokio::test]
async fn only_customers_with_a_paid_order_of_the_item_may_review_it() {
    let app = spawn_app().await;
    let item = fixtures::item(&app.db, "루테인", 20_000, 10).await;
    let other = fixtures::item(&app.db, "오메가3", 15_000, 0).await;
    let body = json!({"star": 5, "content": "눈이 편해졌어요"});

    let (_, stranger) = buyer(&app, &[]).await;
    expect_error(
        post_review(&app, &stranger, item, body.clone()).await,
        StatusCode::FORBIDDEN,
        "not_purchased",
    )
    .await;
    let (_, other_buyer) = buyer(&app, &[other]).await;
    expect_error(
        post_review(&app, &other_buyer, item, body.clone()).await,
        StatusCode::FORBIDDEN,
        "not_purchased",
    )
    .await;
    // An order of the item that is not paid (canceled, refunded, awaiting payment) is not enough.
    let (unpaid_user, unpaid) = buyer(&app, &[item]).await;
    for status in ["pending_payment", "canceled", "refunded"] {
        sqlx::query("UPDATE orders SET status = $2 WHERE user_id = $1")
            .bind(unpaid_user.id)
            .bind(status)
            .execute(&app.db)
            .await
            .unwrap();
        expect_error(
            post_review(&app, &unpaid, item, body.clone()).await,
            StatusCode::FORBIDDEN,
            "not_purchased",
        )
        .await;
    }
    assert_eq!(stats(&app, item).await, ("0.00".into(), 0));

    let (buyer_user, paid) = buyer(&app, &[item]).await;
    let resp = post_review(&app, &paid, item, body.clone()).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["item_id"], item);
    assert_eq!(created["item_title"], "루테인");
    assert_eq!(created["star"], 5);
    assert_eq!(created["content"], "눈이 편해졌어요");
    assert_eq!(created["author"], buyer_user.display_name.as_str());
    assert!(created["created_at"].is_string());
    assert_eq!(stats(&app, item).await, ("5.00".into(), 1));
    // The catalog shows it too.
    let detail: Value = app
        .get(&format!("/api/items/{item}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["star_avg"], 5.0);
    assert_eq!(detail["review_count"], 1);

    // Missing or deleted items are not found (even for their buyers); a login is required.
    expect_error(
        post_review(&app, &paid, 999_999, body.clone()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let gone = fixtures::item(&app.db, "단종", 1_000, 0).await;
    let (_, gone_buyer) = buyer(&app, &[gone]).await;
    sqlx::query("UPDATE items SET deleted_at = now(), selling = false WHERE id = $1")
        .bind(gone)
        .execute(&app.db)
        .await
        .unwrap();
    expect_error(
        post_review(&app, &gone_buyer, gone, body.clone()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.get(&format!("/api/items/{gone}/reviews"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let resp = app
        .post_json(&format!("/api/items/{item}/reviews"), &body)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn stars_are_1_to_5_and_content_1_to_1000_characters() {
    let app = spawn_app().await;
    let item = fixtures::item(&app.db, "비타민C", 9_000, 0).await;
    let (_, t) = buyer(&app, &[item]).await;

    let cases: &[(Value, &[&str])] = &[
        (json!({"star": 0, "content": "x"}), &["star"]),
        (json!({"star": 6, "content": "x"}), &["star"]),
        (json!({"star": -1, "content": "x"}), &["star"]),
        (json!({"content": "x"}), &["star"]),
        (json!({"star": 4.5, "content": "x"}), &["star"]),
        (json!({"star": "5", "content": "x"}), &["star"]),
        (json!({"star": 5, "content": ""}), &["content"]),
        (json!({"star": 5, "content": "   \n "}), &["content"]),
        (json!({"star": 5}), &["content"]),
        (
            json!({"star": 5, "content": "가".repeat(1001)}),
            &["content"],
        ),
        (json!({"star": 9, "content": ""}), &["star", "content"]),
    ];
    for (body, fields) in cases {
        let err = expect_error(
            post_review(&app, &t, item, body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(error_fields(&err), fields.to_vec(), "{body}");
    }
    assert_eq!(stats(&app, item).await, ("0.00".into(), 0));

    // The bounds themselves are accepted.
    let resp = post_review(
        &app,
        &t,
        item,
        json!({"star": 1, "content": "가".repeat(1000)}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_i64().unwrap();
    for (star, want) in [(5, "5.00"), (1, "1.00")] {
        let resp = patch_review(&app, &t, id, json!({"star": star})).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(stats(&app, item).await, (want.into(), 1));
    }
    for body in [
        json!({"star": 0}),
        json!({"star": 6}),
        json!({"content": " "}),
    ] {
        expect_error(
            patch_review(&app, &t, id, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    // Content is stored trimmed, with Windows line ends as \n.
    let resp = patch_review(&app, &t, id, json!({"content": "  첫 줄\r\n둘째 줄  "})).await;
    let edited: Value = resp.json().await.unwrap();
    assert_eq!(edited["content"], "첫 줄\n둘째 줄");
    assert_eq!(edited["star"], 1);
}

#[tokio::test]
async fn a_second_active_review_is_409_even_when_racing() {
    let app = spawn_app().await;
    let item = fixtures::item(&app.db, "밀크씨슬", 30_000, 20).await;
    let (_, alice) = buyer(&app, &[item]).await;
    review(&app, &alice, item, 4).await;
    expect_error(
        post_review(&app, &alice, item, json!({"star": 5, "content": "again"})).await,
        StatusCode::CONFLICT,
        "already_reviewed",
    )
    .await;
    assert_eq!(stats(&app, item).await, ("4.00".into(), 1));

    // Eight simultaneous first reviews by one customer: exactly one is written.
    let (bob_user, bob) = buyer(&app, &[item]).await;
    let results = join_all((1..=8).map(|i| {
        post_review(
            &app,
            &bob,
            item,
            json!({"star": 1 + i % 5, "content": format!("try {i}")}),
        )
    }))
    .await;
    let mut created = 0;
    for resp in results {
        match resp.status() {
            StatusCode::CREATED => created += 1,
            _ => {
                expect_error(resp, StatusCode::CONFLICT, "already_reviewed").await;
            }
        }
    }
    assert_eq!(created, 1);
    let bobs: i64 = sqlx::query_scalar("SELECT count(*) FROM reviews WHERE user_id = $1")
        .bind(bob_user.id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(bobs, 1);
    assert_eq!(stats(&app, item).await.1, 2);
    assert_stats_match_active_reviews(&app, item).await;
}

#[tokio::test]
async fn concurrent_writers_of_one_item_leave_exact_stats() {
    let app = spawn_app().await;
    let item = fixtures::item(&app.db, "프로폴리스", 18_000, 5).await;
    let mut tokens = Vec::new();
    for _ in 0..8 {
        tokens.push(buyer(&app, &[item]).await.1);
    }
    let stars = [5, 4, 4, 3, 5, 1, 2, 5];
    let ids = join_all(
        tokens
            .iter()
            .zip(stars)
            .map(|(t, star)| review(&app, t, item, star)),
    )
    .await;
    assert_eq!(stats(&app, item).await, expected_stats(&stars));

    // Half edit, half delete, all at once.
    let writes = tokens.iter().zip(&ids).enumerate().map(|(i, (t, id))| {
        let app = &app;
        async move {
            let status = if i % 2 == 0 {
                patch_review(app, t, *id, json!({"star": 1})).await.status()
            } else {
                delete_review(app, t, *id).await.status()
            };
            assert!(status.is_success(), "{status}");
        }
    });
    join_all(writes).await;
    assert_eq!(stats(&app, item).await, expected_stats(&[1, 1, 1, 1]));
    assert_stats_match_active_reviews(&app, item).await;
}

#[tokio::test]
async fn only_the_writer_edits_or_deletes_and_a_deleted_review_frees_the_item() {
    let app = spawn_app().await;
    let item = fixtures::item(&app.db, "콜라겐", 40_000, 25).await;
    let (_, alice) = buyer(&app, &[item]).await;
    let (_, bob) = buyer(&app, &[item]).await;
    let id = review(&app, &alice, item, 5).await;
    let bobs = review(&app, &bob, item, 2).await;
    assert_eq!(stats(&app, item).await, ("3.50".into(), 2));

    // Someone else's review is "not found", never "forbidden".
    expect_error(
        patch_review(&app, &bob, id, json!({"star": 1})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        delete_review(&app, &bob, id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    for missing in ["999999", "abc"] {
        expect_error(
            app.request(Method::DELETE, &format!("/api/reviews/{missing}"))
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    let listed = list(&app, item, "sort=star_desc").await;
    assert_eq!(listed["items"][0]["id"], id);
    assert_eq!(listed["items"][0]["star"], 5);
    assert_eq!(stats(&app, item).await, ("3.50".into(), 2));

    // The writer edits: only the fields sent change.
    let resp = patch_review(&app, &alice, id, json!({"star": 3})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let edited: Value = resp.json().await.unwrap();
    assert_eq!(edited["star"], 3);
    assert_eq!(edited["content"], "5점입니다");
    assert_eq!(stats(&app, item).await, ("2.50".into(), 2));
    let resp = patch_review(&app, &alice, id, json!({"content": "다시 써보니 보통"})).await;
    let edited: Value = resp.json().await.unwrap();
    assert_eq!(
        (edited["star"].clone(), edited["content"].clone()),
        (json!(3), json!("다시 써보니 보통"))
    );

    // Soft delete: gone from every list and from the stats, the row is kept.
    assert_eq!(
        delete_review(&app, &alice, id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(stats(&app, item).await, ("2.00".into(), 1));
    assert_eq!(ids(&list(&app, item, "").await), vec![bobs]);
    let deleted_at_set: bool =
        sqlx::query_scalar("SELECT deleted_at IS NOT NULL FROM reviews WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(deleted_at_set);
    expect_error(
        delete_review(&app, &alice, id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        patch_review(&app, &alice, id, json!({"star": 4})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // With the old review deleted, a new one may be written.
    let again = review(&app, &alice, item, 4).await;
    assert_ne!(again, id);
    assert_eq!(stats(&app, item).await, ("3.00".into(), 2));
    let mine: Value = app
        .get("/api/users/me/reviews")
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&mine), vec![again]);
    assert_eq!(mine["total"], 1);

    // The last review deleted: the average is 0 again.
    delete_review(&app, &alice, again).await;
    delete_review(&app, &bob, bobs).await;
    assert_eq!(stats(&app, item).await, ("0.00".into(), 0));
}

#[tokio::test]
async fn an_items_reviews_sort_and_page_with_ties_by_id() {
    let app = spawn_app().await;
    let item = fixtures::item(&app.db, "마그네슘", 15_000, 10).await;
    let other = fixtures::item(&app.db, "아연", 8_000, 0).await;
    let stars = [3, 5, 1, 5, 2];
    let mut r = Vec::new();
    for star in stars {
        let (_, t) = buyer(&app, &[item, other]).await;
        r.push(review(&app, &t, item, star).await);
        // Reviews of another item never show up in this one's list.
        review(&app, &t, other, 1).await;
    }
    // Creation times with ties: r1 and r3 share the newest, r4 is the oldest.
    for (id, minutes) in [(r[0], 1), (r[1], 3), (r[2], 2), (r[3], 3), (r[4], 0)] {
        sqlx::query(
            "UPDATE reviews SET created_at = '2026-01-01T00:00:00Z'::timestamptz
                 + make_interval(mins => $2) WHERE id = $1",
        )
        .bind(id)
        .bind(minutes)
        .execute(&app.db)
        .await
        .unwrap();
    }

    let newest = vec![r[3], r[1], r[2], r[0], r[4]];
    assert_eq!(
        ids(&list(&app, item, "").await),
        newest,
        "newest is the default"
    );
    assert_eq!(ids(&list(&app, item, "sort=newest").await), newest);
    assert_eq!(
        ids(&list(&app, item, "sort=oldest").await),
        vec![r[4], r[0], r[2], r[1], r[3]]
    );
    // Equal stars: newest first.
    assert_eq!(
        ids(&list(&app, item, "sort=star_desc").await),
        vec![r[3], r[1], r[0], r[4], r[2]]
    );
    assert_eq!(
        ids(&list(&app, item, "sort=star_asc").await),
        vec![r[2], r[4], r[0], r[3], r[1]]
    );

    // Pages of 2 tile the whole order; past the end is empty.
    let mut paged = Vec::new();
    for page in 1..=3 {
        let p = list(&app, item, &format!("sort=oldest&page={page}&size=2")).await;
        assert_eq!(
            (p["page"].clone(), p["size"].clone(), p["total"].clone()),
            (json!(page), json!(2), json!(5))
        );
        paged.extend(ids(&p));
    }
    assert_eq!(paged, vec![r[4], r[0], r[2], r[1], r[3]]);
    let past = list(&app, item, "page=4&size=2").await;
    assert_eq!(ids(&past), Vec::<i64>::new());
    assert_eq!(past["total"], 5);
    let first = &list(&app, item, "size=1").await["items"][0];
    assert_eq!(first["id"], r[3]);
    assert_eq!(first["star"], 5);
    assert!(first["author"].is_string());
    assert!(first.get("user_id").is_none());
    assert_eq!(stats(&app, item).await, ("3.20".into(), 5));

    for (query, fields) in [
        ("page=0", vec!["page"]),
        ("size=101", vec!["size"]),
        ("size=0", vec!["size"]),
        ("sort=best", vec!["sort"]),
        ("sort=best&page=0", vec!["sort", "page"]),
    ] {
        let resp = app
            .get(&format!("/api/items/{item}/reviews?{query}"))
            .send()
            .await
            .unwrap();
        let err = expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(error_fields(&err), fields, "{query}");
    }
    let resp = app
        .get(&format!("/api/items/{item}/reviews?page=abc"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "malformed_request").await;
    expect_error(
        app.get("/api/items/999999/reviews").send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn my_reviews_are_mine_only_newest_first_and_paged() {
    let app = spawn_app().await;
    let items = [
        fixtures::item(&app.db, "A", 1_000, 0).await,
        fixtures::item(&app.db, "B", 2_000, 0).await,
        fixtures::item(&app.db, "C", 3_000, 0).await,
    ];
    let (_, me) = buyer(&app, &items).await;
    let (_, someone) = buyer(&app, &items).await;
    let mut mine = Vec::new();
    for item in items {
        mine.push(review(&app, &me, item, 4).await);
        review(&app, &someone, item, 2).await;
    }
    let get = |query: &'static str| {
        let app = &app;
        let me = me.clone();
        async move {
            let resp = app
                .get(&format!("/api/users/me/reviews?{query}"))
                .bearer_auth(&me)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.json::<Value>().await.unwrap()
        }
    };
    let all = get("").await;
    assert_eq!(ids(&all), vec![mine[2], mine[1], mine[0]]);
    assert_eq!(all["total"], 3);
    assert_eq!(all["items"][0]["item_title"], "C");
    assert_eq!(all["items"][0]["item_id"], items[2]);
    let p2 = get("page=2&size=2").await;
    assert_eq!(ids(&p2), vec![mine[0]]);
    assert_eq!(p2["total"], 3);
    let resp = app
        .get("/api/users/me/reviews?size=101")
        .bearer_auth(&me)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let resp = app.get("/api/users/me/reviews").send().await.unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

/// 200 seeded random writes by several customers over a few items — creates (some not
/// purchased, some duplicates), edits and deletes (some by the wrong user) — checked against
/// a model after every step: the stored average is always `round(avg(star), 2)` of the
/// active reviews, and the count is theirs.
#[tokio::test]
async fn the_average_is_exact_after_a_random_sequence_of_200_writes() {
    let app = spawn_app().await;
    let items = [
        fixtures::item(&app.db, "루테인", 20_000, 10).await,
        fixtures::item(&app.db, "오메가3", 15_000, 0).await,
        fixtures::item(&app.db, "유산균", 30_000, 30).await,
    ];
    // User u bought every item except items[u % 3] for u = 3 and 4, so some creates are 403.
    let mut users = Vec::new();
    for u in 0..5 {
        let bought: Vec<i64> = items
            .iter()
            .copied()
            .filter(|i| u < 3 || *i != items[u % 3])
            .collect();
        let (_, token) = buyer(&app, &bought).await;
        users.push((token, bought));
    }
    // (user index, item) → (review id, star) of the active reviews.
    let mut model: HashMap<(usize, i64), (i64, i64)> = HashMap::new();
    let mut rng = StdRng::seed_from_u64(20261124);
    let mut outcomes: HashMap<&str, u32> = HashMap::new();

    for step in 0..200 {
        let u = rng.random_range(0..users.len());
        let item = items[rng.random_range(0..items.len())];
        let star = rng.random_range(1..=5);
        let token = &users[u].0;
        let existing = model.get(&(u, item)).copied();
        let op = rng.random_range(0..10);
        let outcome = match (op, existing) {
            // Create (or try to).
            (0..=4, _) => {
                let resp = post_review(
                    &app,
                    token,
                    item,
                    json!({"star": star, "content": format!("step {step}")}),
                )
                .await;
                if !users[u].1.contains(&item) {
                    expect_error(resp, StatusCode::FORBIDDEN, "not_purchased").await;
                    "not_purchased"
                } else if existing.is_some() {
                    expect_error(resp, StatusCode::CONFLICT, "already_reviewed").await;
                    "duplicate"
                } else {
                    assert_eq!(resp.status(), StatusCode::CREATED, "step {step}");
                    let body: Value = resp.json().await.unwrap();
                    model.insert((u, item), (body["id"].as_i64().unwrap(), star));
                    "created"
                }
            }
            // Edit or delete an active review: by its writer, or sometimes by someone else.
            (_, Some((id, _))) => {
                let intruder = rng.random_bool(0.2);
                let actor = if intruder {
                    &users[(u + 1) % users.len()].0
                } else {
                    token
                };
                let resp = if op <= 7 {
                    patch_review(&app, actor, id, json!({"star": star})).await
                } else {
                    delete_review(&app, actor, id).await
                };
                if intruder {
                    expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;
                    "intruder"
                } else if op <= 7 {
                    assert_eq!(resp.status(), StatusCode::OK, "step {step}");
                    model.insert((u, item), (id, star));
                    "edited"
                } else {
                    assert_eq!(resp.status(), StatusCode::NO_CONTENT, "step {step}");
                    model.remove(&(u, item));
                    "deleted"
                }
            }
            // Nothing of theirs to edit: the edit is 404 and changes nothing.
            (_, None) => {
                let resp =
                    patch_review(&app, token, i64::from(step) + 100_000, json!({"star": 1})).await;
                expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;
                "missing"
            }
        };
        *outcomes.entry(outcome).or_default() += 1;

        let stars: Vec<i64> = model
            .iter()
            .filter(|((_, i), _)| *i == item)
            .map(|(_, (_, s))| *s)
            .collect();
        assert_eq!(
            stats(&app, item).await,
            expected_stats(&stars),
            "step {step}"
        );
        assert_stats_match_active_reviews(&app, item).await;
    }

    // Every kind of step happened.
    for kind in [
        "created",
        "duplicate",
        "not_purchased",
        "edited",
        "deleted",
        "intruder",
    ] {
        assert!(
            outcomes.get(kind).copied().unwrap_or(0) > 0,
            "{kind}: {outcomes:?}"
        );
    }
    // And the catalog agrees for every item.
    for item in items {
        let stars: Vec<i64> = model
            .iter()
            .filter(|((_, i), _)| *i == item)
            .map(|(_, (_, s))| *s)
            .collect();
        let (avg, count) = expected_stats(&stars);
        let detail: Value = app
            .get(&format!("/api/items/{item}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(detail["review_count"], count);
        let shown = detail["star_avg"].as_f64().unwrap();
        assert!(
            (shown - avg.parse::<f64>().unwrap()).abs() < 1e-9,
            "{shown} vs {avg}"
        );
        let listed = list(&app, item, "size=100").await;
        assert_eq!(listed["total"], i64::from(count));
    }
}
