//! Per-client-IP limits: general and stricter for credential routes.

use reqwest::StatusCode;

use crate::helpers::{expect_error, spawn_app_with, TestApp};

#[tokio::test]
async fn a_burst_over_the_login_limit_gets_429_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.rate_limit.login_per_min = 5;
        s.rate_limit.login_burst = 5;
    })
    .await;
    for i in 0..5 {
        let resp = app.login_raw("who@example.com", "Wrong123!").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let resp = app.login_raw("who@example.com", "Wrong123!").await;
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    expect_error(resp, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Signup shares the credential limit; ordinary reads do not.
    let resp = app.signup_with(&crate::helpers::signup_body()).await;
    expect_error(resp, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(
        app.get("/health/live").send().await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_general_limit_applies_to_every_route() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_ip_per_sec = 1;
        s.rate_limit.per_ip_burst = 3;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.get("/health/live").send().await.unwrap().status());
    }
    assert_eq!(&statuses[..3], &[StatusCode::OK; 3]);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
}

async fn login_from(app: &TestApp, forwarded_for: &str) -> StatusCode {
    app.post_json(
        "/api/auth/login",
        &serde_json::json!({"email": "a@example.com", "password": "x"}),
    )
    .header("x-forwarded-for", forwarded_for)
    .send()
    .await
    .unwrap()
    .status()
}

#[tokio::test]
async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let one_login_per_minute = |s: &mut billing::Settings| {
        s.rate_limit.login_per_min = 1;
        s.rate_limit.login_burst = 1;
    };
    // The test client is 127.0.0.1; trusted, so each X-Forwarded-For is its own client.
    let app = spawn_app_with(|s| {
        one_login_per_minute(s);
        s.api.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    assert_eq!(
        login_from(&app, "198.51.100.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_from(&app, "198.51.100.2").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_from(&app, "198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Untrusted peer: the header is ignored, so spoofing it does not dodge the limit.
    let app = spawn_app_with(one_login_per_minute).await;
    assert_eq!(
        login_from(&app, "198.51.100.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_from(&app, "198.51.100.2").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}
