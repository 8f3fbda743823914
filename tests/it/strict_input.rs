//! Strict input at one layer, through the real API: control characters in a path, a query
//! parameter or any JSON string are 422 `invalid_characters` (never a 500 from Postgres);
//! a body is exactly one JSON object (trailing data, a second object, an array for an
//! object are 400 `malformed_json`) and changes nothing; an unsafe `X-Request-Id` is
//! replaced rather than logged; any HTTP method becomes a bounded metric label.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{error_fields, expect_error, fixtures, spawn_app};

#[tokio::test]
async fn control_characters_anywhere_in_the_input_are_refused_before_any_query() {
    let app = spawn_app().await;
    let user = app.signup().await;
    let tokens = app.login(&user).await;
    // The findings' requests (anonymous), each a 500 before.
    for (path, field) in [
        ("/api/items?keyword=a%00b", "keyword"),
        ("/api/items?brand=%00", "brand"),
        ("/api/items?keyword=%1B%5B31m", "keyword"),
        ("/api/payments/kakaopay/fail/%00abc", "path"),
        ("/api/checkouts/a%00b", "path"),
        ("/api/recovery/%00", "path"),
    ] {
        let resp = app.get(path).send().await.unwrap();
        let body = expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_characters").await;
        assert_eq!(error_fields(&body), vec![field.to_owned()], "{path}");
    }
    let resp = app
        .post_json(
            "/api/auth/login",
            &json!({"email": "a\u{0}@example.com", "password": "x"}),
        )
        .send()
        .await
        .unwrap();
    let body = expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_characters").await;
    assert_eq!(error_fields(&body), vec!["email".to_owned()]);

    // An order whose receiver holds a NUL: refused, nothing written.
    let item = fixtures::item(&app.db, "루테인", 10_000, 0).await;
    let order = json!({"kind": "one_time", "lines": [{"item_id": item, "quantity": 1}],
        "receiver": {"name": "홍\u{0}길동", "phone": "010-1234-5678", "city": "Seoul",
                     "detail_address": "1 Road"}});
    let resp = app
        .post_json("/api/orders", &order)
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    let body = expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_characters").await;
    assert_eq!(error_fields(&body), vec!["receiver.name".to_owned()]);
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(orders, 0);
}

#[tokio::test]
async fn a_body_is_exactly_one_json_object() {
    let app = spawn_app().await;
    let user = app.signup().await;
    let tokens = app.login(&user).await;
    let item = fixtures::item(&app.db, "루테인", 10_000, 0).await;
    let order = json!({"kind": "one_time", "lines": [{"item_id": item, "quantity": 1}],
        "receiver": {"name": "홍길동", "phone": "010-1234-5678", "city": "Seoul",
                     "detail_address": "1 Road"}})
    .to_string();
    let positional_receiver = format!(
        r#"{{"kind": "one_time", "lines": [{{"item_id": {item}, "quantity": 1}}],
            "receiver": ["홍길동", "010-1234-5678", "Seoul", "1 Road"]}}"#
    );
    let positional_line = format!(
        r#"{{"kind": "one_time", "lines": [[{item}, 1]],
            "receiver": {{"name": "홍길동", "phone": "010-1234-5678", "city": "Seoul",
                          "detail_address": "1 Road"}}}}"#
    );
    for body in [
        format!("{order} trailing"),
        format!("{order}{order}"),
        format!("{order}\n{order}"),
        positional_receiver,
        positional_line,
    ] {
        let resp = app
            .request(Method::POST, "/api/orders")
            .bearer_auth(&tokens.access)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "malformed_json").await;
    }
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(orders, 0, "no refused body created an order");
    // The well-formed one still works (whitespace after it is fine).
    let resp = app
        .request(Method::POST, "/api/orders")
        .bearer_auth(&tokens.access)
        .header("content-type", "application/json")
        .body(format!("{order}\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn an_unsafe_request_id_is_replaced_not_logged() {
    let app = spawn_app().await;
    let echoed =
        |resp: &reqwest::Response| resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let resp = app
        .get("/health/live")
        .header("x-request-id", "edge-42.a:7")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed(&resp), "edge-42.a:7");
    for forged in [
        "x".repeat(6_000),
        r#"1 method=POST path=/api/admin/items user_id=1"#.to_owned(),
        "abc\tdef".to_owned(),
    ] {
        let resp = app
            .get("/health/live")
            .header("x-request-id", forged.as_str())
            .send()
            .await
            .unwrap();
        let id = echoed(&resp);
        assert_ne!(id, forged);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "a fresh id, not {id}");
    }
}

#[tokio::test]
async fn any_http_method_is_a_bounded_metric_label() {
    let app = spawn_app().await;
    let method = format!("M{}", "0123456789abcdef".repeat(31));
    for _ in 0..3 {
        let resp = app
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                "/health/live",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    let text = app.get_text("/metrics").await;
    assert!(!text.contains(&method[..40]), "the method became a label");
    assert!(
        text.lines()
            .any(|l| l.starts_with("http_requests_total{") && l.contains(r#"method="other""#)),
        "no other-method counter"
    );
}
