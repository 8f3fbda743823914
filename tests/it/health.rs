//! Health, metrics, request ids and the envelope for unknown routes and big bodies.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{expect_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn live_and_ready_answer_when_dependencies_are_up() {
    let app = spawn_app().await;
    let live = app.get("/health/live").send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let ready = app.get("/health/ready").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(body["checks"]["redis"], "ok");
}

#[tokio::test]
async fn ready_names_postgres_when_it_is_unreachable() {
    let app = spawn_app_with(|s| {
        s.database.url = "postgres://postgres@127.0.0.1:1/nothing".to_owned().into();
        s.database.acquire_timeout_ms = std::time::Duration::from_millis(300);
    })
    .await;
    let resp = app.get("/health/ready").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.unwrap();
    assert_ne!(body["checks"]["postgres"], "ok");
    assert_eq!(body["checks"]["redis"], "ok");
    // A database-backed route answers 503, not 500.
    let resp = app.login_raw("a@example.com", "Secret12!").await;
    expect_error(
        resp,
        StatusCode::SERVICE_UNAVAILABLE,
        "dependency_unavailable",
    )
    .await;
}

#[tokio::test]
async fn request_ids_are_kept_or_generated_and_returned() {
    let app = spawn_app().await;
    let resp = app
        .get("/health/live")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let resp = app.get("/health/live").send().await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "{id}");
    // Errors carry it too.
    let resp = app.get("/nope").send().await.unwrap();
    assert!(resp.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn metrics_count_requests_by_matched_route_and_status() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.get("/health/live").send().await.unwrap();
    }
    app.login_raw("x@example.com", "Nope1234!").await;
    let text = app.get_text("/metrics").await;
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("http_requests_total{")
                && l.contains(r#"route="/health/live""#)
                && l.contains(r#"status="200""#)
        })
        .unwrap_or_else(|| panic!("no counter in\n{text}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 3.0, "{line}");
    assert!(text.contains(r#"route="/api/auth/login""#) && text.contains(r#"status="401""#));
    assert!(text.contains("http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn unknown_routes_methods_and_big_bodies_use_the_envelope() {
    let app = spawn_app_with(|s| s.api.body_limit_bytes = 2048).await;
    expect_error(
        app.get("/api/nothing-here").send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.request(Method::PUT, "/api/auth/login")
            .send()
            .await
            .unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let big = format!(r#"{{"email":"{}"}}"#, "x".repeat(4096));
    let resp = app
        .request(Method::POST, "/api/users")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(app.user_count().await, 0);
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let app =
        spawn_app_with(|s| s.api.cors_origins = vec!["https://shop.example.com".into()]).await;
    let preflight = |origin: &'static str| {
        app.request(Method::OPTIONS, "/api/auth/login")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let ok = preflight("https://shop.example.com").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
