//! With Redis gone the API degrades (503 where it needs Redis) and recovers by itself.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::redis_proc::RedisProcess;
use crate::helpers::{spawn_app_with, TestApp};

async fn wait_ready(app: &TestApp, want: StatusCode) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = app.get("/health/ready").send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "ready stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn redis_outage_degrades_to_503_and_recovers() {
    let mut redis = RedisProcess::start();
    let url = redis.url();
    let app = spawn_app_with(|s| {
        s.redis.url = url.into();
        s.redis.timeout_ms = Duration::from_millis(300);
    })
    .await;
    let user = app.signup().await;
    let tokens = app.login(&user).await;
    wait_ready(&app, StatusCode::OK).await;

    redis.stop();
    let body = wait_ready(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_ne!(body["checks"]["redis"], "ok", "{body}");
    assert_eq!(body["checks"]["postgres"], "ok", "{body}");
    // Sessions live in Postgres: logins, refreshes and token checks go on
    // (tests/it/sessions.rs covers them in depth).
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
    // The catalog reads from Postgres instead of the cache; the view is dropped, not an error.
    let item = crate::helpers::fixtures::item(&app.db, "루테인", 10_000, 10).await;
    let resp = app.get("/api/items?category=EYE").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page: Value = resp.json().await.unwrap();
    assert_eq!(page["items"][0]["id"], item);
    assert_eq!(
        app.get(&format!("/api/items/{item}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/items/main").send().await.unwrap().status(),
        StatusCode::OK
    );
    // Signup needs only Postgres and keeps working.
    assert_eq!(
        app.signup_with(&crate::helpers::signup_body())
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.get("/health/live").send().await.unwrap().status(),
        StatusCode::OK
    );

    redis.resume();
    wait_ready(&app, StatusCode::OK).await;
    // A fresh Redis lost nothing a session needs.
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
}
