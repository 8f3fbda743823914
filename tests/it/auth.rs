//! Login, refresh rotation with reuse detection, logout, and token tampering.

use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{expect_error, spawn_app, Tokens};

#[tokio::test]
async fn a_session_from_signup_through_reuse_detection_to_logout() {
    let app = spawn_app().await;
    let user = app.signup().await;

    // signup → login → me
    let first = app.login(&user).await;
    let me: Value = app.me(&first.access).await.json().await.unwrap();
    assert_eq!(me["id"], user.id);
    assert_eq!(me["email"], user.email);

    // refresh rotates: a new pair, and the new access token works
    let resp = app.refresh(&first.refresh).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let second = Tokens::from_json(&resp.json().await.unwrap());
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(app.me(&second.access).await.status(), StatusCode::OK);

    // reusing the old refresh token → 401 and the whole family is dead
    expect_error(
        app.refresh(&first.refresh).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_reused",
    )
    .await;
    expect_error(
        app.refresh(&second.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    expect_error(
        app.me(&second.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;

    // login again → logout → the access token is refused, its refresh token too
    let third = app.login(&user).await;
    assert_eq!(app.me(&third.access).await.status(), StatusCode::OK);
    let resp = app
        .request(Method::POST, "/api/auth/logout")
        .bearer_auth(&third.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    expect_error(
        app.me(&third.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    expect_error(
        app.refresh(&third.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
}

#[tokio::test]
async fn sessions_are_independent_and_logout_ends_only_its_own() {
    let app = spawn_app().await;
    let user = app.signup().await;
    let a = app.login(&user).await;
    let b = app.login(&user).await;
    app.request(Method::POST, "/api/auth/logout")
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    assert_eq!(app.me(&a.access).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(&b.access).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&b.refresh).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_let_at_most_one_through() {
    let app = spawn_app().await;
    let user = app.signup().await;
    let t = app.login(&user).await;
    let results = futures::future::join_all((0..5).map(|_| app.refresh(&t.refresh))).await;
    let ok = results
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    assert!(ok <= 1, "{ok} refreshes succeeded");
    assert!(results
        .iter()
        .any(|r| r.status() == StatusCode::UNAUTHORIZED));
}

#[tokio::test]
async fn bad_credentials_and_bad_tokens_are_401() {
    let app = spawn_app().await;
    let user = app.signup().await;
    expect_error(
        app.login_raw(&user.email, "Wrong123!").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    expect_error(
        app.login_raw("nobody@example.com", "Wrong123!").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    // E-mail is case-insensitive at login.
    assert_eq!(
        app.login_raw(&user.email.to_uppercase(), &user.password)
            .await
            .status(),
        StatusCode::OK
    );

    let resp = app.get("/api/users/me").send().await.unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    expect_error(
        app.me("garbage").await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    expect_error(
        app.refresh("not-a-token").await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;

    // An expired token signed with the right key is refused.
    let t = app.login(&user).await;
    let claims = decode_unverified(&t.access);
    let mut expired = claims.clone();
    expired["exp"] = json!(chrono::Utc::now().timestamp() - 5);
    let key = app.settings.auth.jwt_secret.clone();
    let token = sign(&expired, secrecy::ExposeSecret::expose_secret(&key));
    expect_error(
        app.me(&token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn no_route_lets_one_user_act_as_another() {
    let app = spawn_app().await;
    let alice = app.signup().await;
    let bob = app.signup().await;
    let t = app.login(&alice).await;

    // A token whose subject was edited to Bob fails its signature.
    let mut claims = decode_unverified(&t.access);
    claims["sub"] = json!(bob.id.to_string());
    claims["role"] = json!("admin");
    let forged = sign(&claims, "some-other-secret-some-other-secret-123");
    expect_error(
        app.me(&forged).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    // Changing the payload but keeping Alice's signature fails too.
    let parts: Vec<&str> = t.access.split('.').collect();
    let body = base64_url(&serde_json::to_vec(&claims).unwrap());
    let spliced = format!("{}.{}.{}", parts[0], body, parts[2]);
    expect_error(
        app.me(&spliced).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;

    // Alice's writes through /me touch only Alice.
    let resp = app
        .request(Method::PATCH, "/api/users/me")
        .bearer_auth(&t.access)
        .json(&json!({"city": "Daegu"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cities: Vec<(i64, String)> = sqlx::query_as("SELECT id, city FROM users ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(
        cities,
        vec![(alice.id, "Daegu".to_owned()), (bob.id, "Seoul".to_owned())]
    );
    // And a user is not an admin.
    let resp = app
        .get("/api/admin/users")
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_unverified(token: &str) -> Value {
    let mut validation = jsonwebtoken::Validation::default();
    validation.insecure_disable_signature_validation();
    validation.validate_exp = false;
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(b"x"),
        &validation,
    )
    .unwrap()
    .claims
}

fn sign(claims: &Value, secret: &str) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}
