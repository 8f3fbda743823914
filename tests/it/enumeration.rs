//! Limits per account and what the API gives away, through the real API: one account's
//! logins are limited whatever the address; a user's conflicting profile edits (which say
//! a phone number is someone's) run out; payment and checkout tokens never reach the log;
//! signup's `Location` is a route that exists.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::api_proc::ApiProcess;
use crate::helpers::{db, expect_error, http_client, spawn_app, spawn_app_with};

#[tokio::test]
async fn one_accounts_logins_are_limited_whatever_the_address() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_account_per_min = 1;
        s.rate_limit.per_account_burst = 3;
    })
    .await;
    let victim = app.signup().await;
    let other = app.signup().await;
    for _ in 0..3 {
        let resp = app.login_raw(&victim.email, "Wrong-pass1!").await;
        expect_error(resp, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    // The allowance is spent: even the right password waits (the per-IP limit is far off).
    let resp = app
        .login_raw(&victim.email.to_uppercase(), &victim.password)
        .await;
    let resp = expect_error(resp, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let _ = resp;
    // Another account from the same address is unaffected.
    assert_eq!(
        app.login_raw(&other.email, &other.password).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn conflicting_profile_edits_run_out_so_phones_cannot_be_enumerated() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_account_per_min = 1;
        s.rate_limit.per_account_burst = 2;
    })
    .await;
    let owner = app.signup().await;
    let prober = app.signup().await;
    let tokens = app.login(&prober).await;
    let patch = |phone: &str| {
        app.request(Method::PATCH, "/api/users/me")
            .bearer_auth(&tokens.access)
            .json(&json!({ "phone": phone }))
            .send()
    };
    for _ in 0..2 {
        expect_error(
            patch(&owner.phone).await.unwrap(),
            StatusCode::CONFLICT,
            "already_exists",
        )
        .await;
    }
    expect_error(
        patch(&owner.phone).await.unwrap(),
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
    // Edits that conflict with nobody still go through.
    let resp = app
        .request(Method::PATCH, "/api/users/me")
        .bearer_auth(&tokens.access)
        .json(&json!({"city": "Busan"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn signup_points_at_the_new_accounts_resource() {
    let app = spawn_app().await;
    let resp = app.signup_with(&crate::helpers::signup_body()).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["location"], "/api/users/me");
}

#[tokio::test]
async fn payment_and_checkout_tokens_never_reach_the_log() {
    let url = db::fresh_database().await;
    // At debug level every rejected request logs a line within its span (path included).
    let mut api = ApiProcess::spawn(&url, &[("PILLIVERY__LOG__LEVEL", "debug")]);
    api.wait_ready().await;
    let client = http_client();
    let token = "SecretPaymentToken0123456789abcdefABCDEF_x";
    for path in [
        format!("/api/payments/kakaopay/fail/{token}"),
        format!("/api/checkouts/kakaopay/cancel/{token}"),
        format!("/api/checkouts/{token}"),
        format!("/api/recovery/{token}"),
    ] {
        let resp = client
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // The log is written as requests end: wait for the last one's line.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !api.logs().contains("/api/recovery/{token}") {
        assert!(
            std::time::Instant::now() < deadline,
            "no request line:\n{}",
            api.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let logs = api.logs();
    assert!(logs.contains("/api/checkouts/{token}"), "{logs}");
    assert!(!logs.contains(token), "a token in the log:\n{logs}");
}
