//! Social login against a fake OAuth provider (wiremock).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{expect_error, signup_body, spawn_app_with, TestApp, Tokens};

struct Provider {
    server: MockServer,
}

impl Provider {
    async fn start() -> Self {
        Provider {
            server: MockServer::start().await,
        }
    }

    /// The provider will accept `code` and describe the user as `profile`.
    async fn knows(&self, code: &str, profile: Value) {
        let access = format!("at-{code}");
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(body_string_contains(format!("code={code}")))
            .and(body_string_contains("grant_type=authorization_code"))
            .and(body_string_contains("client_secret=s3cret"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": access, "token_type": "bearer", "expires_in": 3600
            })))
            .mount(&self.server)
            .await;
        Mock::given(method("GET"))
            .and(path("/userinfo"))
            .and(header("authorization", format!("Bearer {access}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(profile))
            .mount(&self.server)
            .await;
    }
}

async fn app_with_provider(p: &Provider) -> TestApp {
    let uri = p.server.uri();
    spawn_app_with(|s| {
        s.oauth.timeout_ms = Duration::from_millis(500);
        s.oauth.providers.insert(
            "fake".into(),
            billing::settings::OAuthProviderSettings {
                client_id: "client-1".into(),
                client_secret: "s3cret".to_owned().into(),
                authorize_url: Some(format!("{uri}/authorize")),
                token_url: Some(format!("{uri}/token")),
                userinfo_url: Some(format!("{uri}/userinfo")),
                scopes: Some(vec!["email".into()]),
                subject_pointer: Some("/id".into()),
                email_pointer: Some("/account/email".into()),
            },
        );
    })
    .await
}

/// Follows `/authorize` and returns the signed state the provider would echo back.
async fn start_login(app: &TestApp) -> String {
    let resp = app
        .get("/api/auth/oauth/fake/authorize")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let url = url::Url::parse(&location).unwrap();
    assert_eq!(url.path(), "/authorize");
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], "client-1");
    assert_eq!(q["response_type"], "code");
    assert_eq!(
        q["redirect_uri"],
        format!(
            "{}/api/auth/oauth/fake/callback",
            app.settings.api.public_url
        )
    );
    q["state"].clone()
}

async fn callback(app: &TestApp, code: &str, state: &str) -> reqwest::Response {
    app.get("/api/auth/oauth/fake/callback")
        .query(&[("code", code), ("state", state)])
        .send()
        .await
        .unwrap()
}

fn contact() -> Value {
    let b = signup_body();
    json!({"display_name": b["display_name"], "phone": b["phone"], "city": "Incheon",
           "detail_address": "2 Harbor-ro"})
}

#[tokio::test]
async fn a_first_time_social_user_completes_signup_then_returns() {
    let p = Provider::start().await;
    p.knows(
        "c1",
        json!({"id": 4242, "account": {"email": "Soc@Example.com"}}),
    )
    .await;
    let app = app_with_provider(&p).await;

    let state = start_login(&app).await;
    let resp = callback(&app, "c1", &state).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "signup_required");
    assert_eq!(body["email"], "soc@example.com");
    let signup_token = body["signup_token"].as_str().unwrap().to_owned();
    assert_eq!(app.user_count().await, 0);

    // Contact details are validated like a normal signup.
    let mut bad = contact();
    bad["phone"] = json!("nope");
    bad["signup_token"] = json!(signup_token);
    expect_error(
        app.post_json("/api/auth/oauth/complete", &bad)
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    let mut done = contact();
    done["signup_token"] = json!(signup_token);
    let resp = app
        .post_json("/api/auth/oauth/complete", &done)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let tokens = Tokens::from_json(&resp.json().await.unwrap());
    let me: Value = app.me(&tokens.access).await.json().await.unwrap();
    assert_eq!(me["email"], "soc@example.com");
    assert_eq!(me["oauth_provider"], "fake");
    assert_eq!(me["city"], "Incheon");

    // Returning: straight to tokens, same account.
    let state = start_login(&app).await;
    let resp = callback(&app, "c1", &state).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "logged_in");
    let again = Tokens::from_json(&body);
    let me2: Value = app.me(&again.access).await.json().await.unwrap();
    assert_eq!(me2["id"], me["id"]);
    assert_eq!(app.user_count().await, 1);
    // A social account has no password to log in with.
    expect_error(
        app.login_raw("soc@example.com", "Whatever1!").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
}

#[tokio::test]
async fn wrong_or_missing_state_is_400() {
    let p = Provider::start().await;
    p.knows(
        "c1",
        json!({"id": "u1", "account": {"email": "a@example.com"}}),
    )
    .await;
    let app = app_with_provider(&p).await;
    let state = start_login(&app).await;

    let resp = app
        .get("/api/auth/oauth/fake/callback?code=c1")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "invalid_oauth_state").await;
    let (signed, signature) = state.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{signed}.{flipped}{}", &signature[1..]);
    expect_error(
        callback(&app, "c1", &tampered).await,
        StatusCode::BAD_REQUEST,
        "invalid_oauth_state",
    )
    .await;
    expect_error(
        callback(&app, "c1", "forged").await,
        StatusCode::BAD_REQUEST,
        "invalid_oauth_state",
    )
    .await;
    // A state from this provider is no good at another provider's callback.
    let resp = app
        .get("/api/auth/oauth/kakao/callback")
        .query(&[("code", "c1"), ("state", state.as_str())])
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "unknown_oauth_provider").await;
    assert_eq!(p.server.received_requests().await.unwrap().len(), 0);
    assert_eq!(app.user_count().await, 0);
}

#[tokio::test]
async fn provider_errors_and_timeouts_are_502_and_503_and_create_nothing() {
    let p = Provider::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("code=bad"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"})))
        .mount(&p.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("code=slow"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "x"}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&p.server)
        .await;
    let app = app_with_provider(&p).await;

    let state = start_login(&app).await;
    let err = expect_error(
        callback(&app, "bad", &state).await,
        StatusCode::BAD_GATEWAY,
        "oauth_provider_error",
    )
    .await;
    assert!(
        !err.to_string().contains("invalid_grant"),
        "provider detail leaked: {err}"
    );
    expect_error(
        callback(&app, "slow", &state).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "oauth_provider_unavailable",
    )
    .await;
    // The user denied consent at the provider.
    let resp = app
        .get("/api/auth/oauth/fake/callback")
        .query(&[("error", "access_denied"), ("state", state.as_str())])
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_GATEWAY, "oauth_provider_error").await;
    assert_eq!(app.user_count().await, 0);
}

#[tokio::test]
async fn an_email_of_a_password_account_is_not_taken_over() {
    let p = Provider::start().await;
    let app = app_with_provider(&p).await;
    let owner = app.signup().await;
    p.knows(
        "c9",
        json!({"id": 9, "account": {"email": owner.email.to_uppercase()}}),
    )
    .await;

    let state = start_login(&app).await;
    expect_error(
        callback(&app, "c9", &state).await,
        StatusCode::CONFLICT,
        "email_already_registered",
    )
    .await;
    assert_eq!(app.user_count().await, 1);
    let oauth: Option<String> =
        sqlx::query_scalar("SELECT oauth_provider FROM users WHERE id = $1")
            .bind(owner.id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(oauth, None);
}

#[tokio::test]
async fn signup_tokens_are_checked() {
    let p = Provider::start().await;
    let app = app_with_provider(&p).await;
    let mut body = contact();
    body["signup_token"] = json!("not-a-token");
    expect_error(
        app.post_json("/api/auth/oauth/complete", &body)
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_signup_token",
    )
    .await;
    expect_error(
        app.get("/api/auth/oauth/nope/authorize")
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "unknown_oauth_provider",
    )
    .await;
    assert_eq!(app.user_count().await, 0);
}
