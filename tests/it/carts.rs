//! Carts: totals from current prices after every change, the subscription cart's periods,
//! unavailable items, input rules, ownership, and concurrent adds.

use futures::future::join_all;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::fixtures;
use crate::helpers::{error_fields, expect_error, spawn_app, TestApp};

async fn get_cart(app: &TestApp, token: &str, kind: &str) -> Value {
    let resp = app
        .get(&format!("/api/carts/{kind}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

async fn add(app: &TestApp, token: &str, kind: &str, body: Value) -> Response {
    app.post_json(&format!("/api/carts/{kind}/items"), &body)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Adds and expects 200 with the cart.
async fn add_ok(app: &TestApp, token: &str, kind: &str, body: Value) -> Value {
    let resp = add(app, token, kind, body.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK, "add {body}");
    resp.json().await.unwrap()
}

async fn patch(app: &TestApp, token: &str, kind: &str, item: i64, body: Value) -> Response {
    app.request(Method::PATCH, &format!("/api/carts/{kind}/items/{item}"))
        .json(&body)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn remove(app: &TestApp, token: &str, kind: &str, item: i64) -> Response {
    app.request(Method::DELETE, &format!("/api/carts/{kind}/items/{item}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// `(item_count, total_price, total_discount, payable)` of a cart.
fn totals(cart: &Value) -> (i64, i64, i64, i64) {
    (
        cart["item_count"].as_i64().unwrap(),
        cart["total_price"].as_i64().unwrap(),
        cart["total_discount"].as_i64().unwrap(),
        cart["payable"].as_i64().unwrap(),
    )
}

/// `(item_id, quantity, available)` of each line, in cart order (a subscription's lines
/// have the same fields).
pub(crate) fn lines(cart: &Value) -> Vec<(i64, i64, bool)> {
    cart["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["item_id"].as_i64().unwrap(),
                l["quantity"].as_i64().unwrap(),
                l["available"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn line(cart: &Value, item: i64) -> Value {
    cart["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["item_id"] == item)
        .cloned()
        .unwrap_or_else(|| panic!("item {item} not in {cart}"))
}

async fn sql(app: &TestApp, statement: &str, id: i64) {
    sqlx::query(statement)
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn totals_are_right_after_every_change_and_follow_current_prices() {
    let app = spawn_app().await;
    // 10,000 at 10 % → 1,000 off, 9,000 real; 9,990 at 15 % → 1,499 off (half up), 8,491 real.
    let lutein = fixtures::item(&app.db, "루테인", 10_000, 10).await;
    let omega = fixtures::item(&app.db, "오메가3", 9_990, 15).await;
    let user = app.signup().await;
    let t = app.login(&user).await.access;

    let cart = get_cart(&app, &t, "normal").await;
    assert_eq!(cart["kind"], "normal");
    assert_eq!(lines(&cart), Vec::<(i64, i64, bool)>::new());
    assert_eq!(totals(&cart), (0, 0, 0, 0));

    let cart = add_ok(
        &app,
        &t,
        "normal",
        json!({"item_id": lutein, "quantity": 2}),
    )
    .await;
    assert_eq!(lines(&cart), vec![(lutein, 2, true)]);
    let l = line(&cart, lutein);
    assert_eq!(l["title"], "루테인");
    assert_eq!(l["brand"], "테스트브랜드");
    assert_eq!(l["period_days"], Value::Null);
    assert_eq!(
        (
            &l["unit_origin_price"],
            &l["unit_discount"],
            &l["unit_price"],
            &l["line_total"]
        ),
        (&json!(10_000), &json!(1_000), &json!(9_000), &json!(18_000))
    );
    assert_eq!(totals(&cart), (2, 20_000, 2_000, 18_000));

    // Quantity defaults to 1.
    let cart = add_ok(&app, &t, "normal", json!({"item_id": omega})).await;
    assert_eq!(lines(&cart), vec![(lutein, 2, true), (omega, 1, true)]);
    assert_eq!(totals(&cart), (3, 29_990, 3_499, 26_491));

    // Adding what is already there adds to the line, capped at 99.
    let cart = add_ok(
        &app,
        &t,
        "normal",
        json!({"item_id": lutein, "quantity": 98}),
    )
    .await;
    assert_eq!(lines(&cart), vec![(lutein, 99, true), (omega, 1, true)]);
    assert_eq!(
        totals(&cart),
        (100, 990_000 + 9_990, 99_000 + 1_499, 891_000 + 8_491)
    );

    let resp = patch(&app, &t, "normal", omega, json!({"quantity": 3})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cart: Value = resp.json().await.unwrap();
    assert_eq!(lines(&cart), vec![(lutein, 99, true), (omega, 3, true)]);
    assert_eq!(line(&cart, omega)["line_total"], 25_473);
    assert_eq!(
        totals(&cart),
        (102, 990_000 + 29_970, 99_000 + 4_497, 891_000 + 25_473)
    );

    let resp = remove(&app, &t, "normal", lutein).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let cart = get_cart(&app, &t, "normal").await;
    assert_eq!(lines(&cart), vec![(omega, 3, true)]);
    assert_eq!(totals(&cart), (3, 29_970, 4_497, 25_473));

    // A price change shows at once: totals are computed, never stored.
    sqlx::query("UPDATE items SET origin_price = 20000, discount_rate = 50 WHERE id = $1")
        .bind(omega)
        .execute(&app.db)
        .await
        .unwrap();
    let cart = get_cart(&app, &t, "normal").await;
    let l = line(&cart, omega);
    assert_eq!(
        (
            &l["unit_origin_price"],
            &l["unit_discount"],
            &l["unit_price"],
            &l["line_total"]
        ),
        (
            &json!(20_000),
            &json!(10_000),
            &json!(10_000),
            &json!(30_000)
        )
    );
    assert_eq!(totals(&cart), (3, 60_000, 30_000, 30_000));

    // Taken off sale: still listed, marked unavailable, counted in no total.
    let cart = add_ok(
        &app,
        &t,
        "normal",
        json!({"item_id": lutein, "quantity": 4}),
    )
    .await;
    assert_eq!(totals(&cart), (7, 100_000, 34_000, 66_000));
    sql(
        &app,
        "UPDATE items SET selling = false WHERE id = $1",
        lutein,
    )
    .await;
    let cart = get_cart(&app, &t, "normal").await;
    assert_eq!(lines(&cart), vec![(omega, 3, true), (lutein, 4, false)]);
    assert_eq!(totals(&cart), (3, 60_000, 30_000, 30_000));
    // Back on sale: counted again.
    sql(
        &app,
        "UPDATE items SET selling = true WHERE id = $1",
        lutein,
    )
    .await;
    assert_eq!(
        totals(&get_cart(&app, &t, "normal").await),
        (7, 100_000, 34_000, 66_000)
    );
    // Deleted (as the admin route does it): unavailable, not an error.
    sql(
        &app,
        "UPDATE items SET deleted_at = now(), selling = false WHERE id = $1",
        omega,
    )
    .await;
    let cart = get_cart(&app, &t, "normal").await;
    assert_eq!(lines(&cart), vec![(omega, 3, false), (lutein, 4, true)]);
    assert_eq!(totals(&cart), (4, 40_000, 4_000, 36_000));
    // An unavailable line can still be removed.
    assert_eq!(
        remove(&app, &t, "normal", omega).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        lines(&get_cart(&app, &t, "normal").await),
        vec![(lutein, 4, true)]
    );
}

#[tokio::test]
async fn the_subscription_cart_has_periods_and_is_separate_from_the_normal_cart() {
    let app = spawn_app().await;
    let item = fixtures::item(&app.db, "비타민D", 12_000, 0).await;
    let user = app.signup().await;
    let t = app.login(&user).await.access;

    for (body, why) in [
        (json!({"item_id": item}), "missing"),
        (json!({"item_id": item, "period_days": 6}), "too short"),
        (json!({"item_id": item, "period_days": 366}), "too long"),
    ] {
        let err = expect_error(
            add(&app, &t, "subscription", body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(error_fields(&err), vec!["period_days"], "{why}");
    }
    // The normal cart has no periods.
    let err = expect_error(
        add(
            &app,
            &t,
            "normal",
            json!({"item_id": item, "period_days": 30}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(error_fields(&err), vec!["period_days"]);

    let cart = add_ok(
        &app,
        &t,
        "subscription",
        json!({"item_id": item, "period_days": 30}),
    )
    .await;
    assert_eq!(cart["kind"], "subscription");
    assert_eq!(line(&cart, item)["period_days"], 30);
    assert_eq!(totals(&cart), (1, 12_000, 0, 12_000));
    let bounds = add_ok(
        &app,
        &t,
        "subscription",
        json!({"item_id": item, "period_days": 7, "quantity": 1}),
    )
    .await;
    assert_eq!(line(&bounds, item)["period_days"], 7);
    // Adding again adds the quantity and takes the new period.
    let cart = add_ok(
        &app,
        &t,
        "subscription",
        json!({"item_id": item, "period_days": 365, "quantity": 2}),
    )
    .await;
    assert_eq!(lines(&cart), vec![(item, 4, true)]);
    assert_eq!(line(&cart, item)["period_days"], 365);
    assert_eq!(totals(&cart), (4, 48_000, 0, 48_000));

    // The normal cart is another cart.
    assert_eq!(
        lines(&get_cart(&app, &t, "normal").await),
        Vec::<(i64, i64, bool)>::new()
    );
    let normal = add_ok(&app, &t, "normal", json!({"item_id": item})).await;
    assert_eq!(lines(&normal), vec![(item, 1, true)]);
    assert_eq!(
        lines(&get_cart(&app, &t, "subscription").await),
        vec![(item, 4, true)]
    );

    // Patching the period; only quantity is changed when only quantity is sent.
    let resp = patch(&app, &t, "subscription", item, json!({"period_days": 14})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cart: Value = resp.json().await.unwrap();
    assert_eq!(line(&cart, item)["period_days"], 14);
    assert_eq!(line(&cart, item)["quantity"], 4);
    let resp = patch(&app, &t, "subscription", item, json!({"quantity": 2})).await;
    let cart: Value = resp.json().await.unwrap();
    assert_eq!(line(&cart, item)["period_days"], 14);
    assert_eq!(totals(&cart), (2, 24_000, 0, 24_000));
    let resp = patch(
        &app,
        &t,
        "subscription",
        item,
        json!({"quantity": 5, "period_days": 60}),
    )
    .await;
    let cart: Value = resp.json().await.unwrap();
    assert_eq!(lines(&cart), vec![(item, 5, true)]);
    assert_eq!(line(&cart, item)["period_days"], 60);
    for body in [json!({"period_days": 400}), json!({"period_days": 0})] {
        let err = expect_error(
            patch(&app, &t, "subscription", item, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(error_fields(&err), vec!["period_days"]);
    }
    let err = expect_error(
        patch(&app, &t, "normal", item, json!({"period_days": 30})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(error_fields(&err), vec!["period_days"]);
    assert_eq!(
        line(&get_cart(&app, &t, "normal").await, item)["period_days"],
        Value::Null
    );

    // Only the two kinds exist.
    let resp = app
        .get("/api/carts/weekly")
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    expect_error(
        add(&app, &t, "Normal", json!({"item_id": item})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        remove(&app, &t, "weekly", item).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn bad_input_and_unavailable_items_are_rejected_and_change_nothing() {
    let app = spawn_app().await;
    let item = fixtures::item(&app.db, "밀크씨슬", 30_000, 20).await;
    let off_sale = fixtures::item(&app.db, "단종상품", 5_000, 0).await;
    sql(
        &app,
        "UPDATE items SET selling = false WHERE id = $1",
        off_sale,
    )
    .await;
    let deleted = fixtures::item(&app.db, "삭제상품", 5_000, 0).await;
    sql(
        &app,
        "UPDATE items SET deleted_at = now(), selling = false WHERE id = $1",
        deleted,
    )
    .await;
    let user = app.signup().await;
    let t = app.login(&user).await.access;

    let cases: &[(Value, &[&str])] = &[
        (json!({"item_id": item, "quantity": 0}), &["quantity"]),
        (json!({"item_id": item, "quantity": 100}), &["quantity"]),
        (json!({"item_id": item, "quantity": -1}), &["quantity"]),
        (json!({"item_id": item, "quantity": "two"}), &["quantity"]),
        (json!({"quantity": 1}), &["item_id"]),
        (
            json!({"quantity": 0, "period_days": 30}),
            &["item_id", "quantity", "period_days"],
        ),
    ];
    for (body, fields) in cases {
        let err = expect_error(
            add(&app, &t, "normal", body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(error_fields(&err), fields.to_vec(), "{body}");
    }
    let err = expect_error(
        add(
            &app,
            &t,
            "normal",
            json!({"item_id": item, "colour": "red"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(err["error"]["fields"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("colour"));
    let resp = app
        .request(Method::POST, "/api/carts/normal/items")
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body("{\"item_id\": ")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "malformed_json").await;

    // Missing or deleted items are not found; one taken off sale is unavailable.
    for missing in [999_999, deleted] {
        expect_error(
            add(&app, &t, "normal", json!({"item_id": missing})).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    expect_error(
        add(&app, &t, "normal", json!({"item_id": off_sale})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "item_unavailable",
    )
    .await;
    let carts: i64 = sqlx::query_scalar("SELECT count(*) FROM carts")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(carts, 0, "a rejected add creates no cart");

    add_ok(&app, &t, "normal", json!({"item_id": item, "quantity": 2})).await;
    for q in [0, 100] {
        let err = expect_error(
            patch(&app, &t, "normal", item, json!({"quantity": q})).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(error_fields(&err), vec!["quantity"]);
    }
    // Lines that are not in the cart.
    for (other, kind) in [(off_sale, "normal"), (item, "subscription")] {
        expect_error(
            patch(&app, &t, kind, other, json!({"quantity": 1})).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        expect_error(
            remove(&app, &t, kind, other).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    let resp = app
        .request(Method::DELETE, "/api/carts/normal/items/abc")
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    let cart = get_cart(&app, &t, "normal").await;
    assert_eq!(lines(&cart), vec![(item, 2, true)]);
    assert_eq!(totals(&cart), (2, 60_000, 12_000, 48_000));

    assert_eq!(
        remove(&app, &t, "normal", item).await.status(),
        StatusCode::NO_CONTENT
    );
    expect_error(
        remove(&app, &t, "normal", item).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // Carts need a login.
    let resp = app.get("/api/carts/normal").send().await.unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let resp = app
        .post_json("/api/carts/normal/items", &json!({"item_id": item}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn another_users_cart_is_unreachable() {
    let app = spawn_app().await;
    let a = fixtures::item(&app.db, "프로바이오틱스", 25_000, 0).await;
    let b = fixtures::item(&app.db, "콜라겐", 40_000, 25).await;
    let alice = app.signup().await;
    let alice = app.login(&alice).await.access;
    let bob = app.signup().await;
    let bob = app.login(&bob).await.access;

    add_ok(&app, &alice, "normal", json!({"item_id": a, "quantity": 2})).await;
    add_ok(
        &app,
        &alice,
        "subscription",
        json!({"item_id": b, "period_days": 30}),
    )
    .await;
    let alices_normal = get_cart(&app, &alice, "normal").await;
    let alices_sub = get_cart(&app, &alice, "subscription").await;

    // Bob sees his own (empty) carts, and Alice's lines do not exist for him.
    assert_eq!(
        lines(&get_cart(&app, &bob, "normal").await),
        Vec::<(i64, i64, bool)>::new()
    );
    assert_eq!(
        lines(&get_cart(&app, &bob, "subscription").await),
        Vec::<(i64, i64, bool)>::new()
    );
    expect_error(
        patch(&app, &bob, "normal", a, json!({"quantity": 99})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        remove(&app, &bob, "normal", a).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        remove(&app, &bob, "subscription", b).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // Bob adding the same item fills his cart, not Alice's.
    let bobs = add_ok(&app, &bob, "normal", json!({"item_id": a, "quantity": 5})).await;
    assert_eq!(lines(&bobs), vec![(a, 5, true)]);
    assert_eq!(get_cart(&app, &alice, "normal").await, alices_normal);
    assert_eq!(get_cart(&app, &alice, "subscription").await, alices_sub);
    assert_eq!(lines(&alices_normal), vec![(a, 2, true)]);
    assert_eq!(totals(&alices_normal), (2, 50_000, 0, 50_000));
}

#[tokio::test]
async fn concurrent_adds_create_one_cart_and_lose_no_quantity() {
    let app = spawn_app().await;
    let item = fixtures::item(&app.db, "마그네슘", 15_000, 10).await;
    let user = app.signup().await;
    let t = app.login(&user).await.access;

    // Ten first adds at once: one cart row, one line, every unit counted.
    let results =
        join_all((0..10).map(|_| add(&app, &t, "normal", json!({"item_id": item, "quantity": 1}))))
            .await;
    for resp in results {
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let carts: i64 = sqlx::query_scalar("SELECT count(*) FROM carts WHERE user_id = $1")
        .bind(user.id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(carts, 1);
    let cart = get_cart(&app, &t, "normal").await;
    assert_eq!(lines(&cart), vec![(item, 10, true)]);
    assert_eq!(totals(&cart), (10, 150_000, 15_000, 135_000));

    // Racing adds past the cap stop at 99.
    let results = join_all(
        (0..10).map(|_| add(&app, &t, "normal", json!({"item_id": item, "quantity": 10}))),
    )
    .await;
    for resp in results {
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let cart = get_cart(&app, &t, "normal").await;
    assert_eq!(lines(&cart), vec![(item, 99, true)]);
    assert_eq!(totals(&cart), (99, 1_485_000, 148_500, 1_336_500));
}
