//! Signup validation and duplicates, the caller's profile, withdrawal.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{error_fields, expect_error, signup_body, spawn_app};

#[tokio::test]
async fn signup_creates_an_account_with_a_hashed_password() {
    let app = spawn_app().await;
    let body = signup_body();
    let resp = app.signup_with(&body).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(resp.headers().get("location").is_some());
    let user: Value = resp.json().await.unwrap();
    assert_eq!(user["email"], body["email"]);
    assert_eq!(user["display_name"], body["display_name"]);
    assert_eq!(user["phone"], body["phone"]);
    assert_eq!(user["role"], "user");
    assert_eq!(user["status"], "active");
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());

    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(user["id"].as_i64().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("Secret12!"));
}

#[tokio::test]
async fn every_validation_rule_rejects_with_422_naming_the_field_and_writes_nothing() {
    let app = spawn_app().await;
    let cases: &[(&str, Value)] = &[
        ("email", json!("not-an-email")),
        ("email", json!("")),
        ("password", json!("short1!")),
        ("password", json!("nodigits!!")),
        ("password", json!("nosymbol12")),
        ("password", json!("12345678!")),
        ("password", json!(format!("Aa1!{}", "x".repeat(61)))),
        ("phone", json!("02-123-4567")),
        ("phone", json!("010-12-34")),
        ("phone", json!("")),
        ("real_name", json!("홍 길동")),
        ("real_name", json!("")),
        ("display_name", json!("a")),
        ("display_name", json!("x".repeat(21))),
        ("city", json!("")),
        ("detail_address", json!("   ")),
        // A field of the wrong JSON type is named too.
        ("phone", json!(1012345678)),
    ];
    for (field, value) in cases {
        let mut body = signup_body();
        body[*field] = value.clone();
        let resp = app.signup_with(&body).await;
        let err = expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(
            error_fields(&err),
            vec![field.to_string()],
            "{field}={value}"
        );
    }
    // A missing field is reported like a blank one.
    let mut body = signup_body();
    body.as_object_mut().unwrap().remove("city");
    let err = expect_error(
        app.signup_with(&body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(error_fields(&err), vec!["city"]);
    // Several bad fields are all named at once.
    let mut body = signup_body();
    body["email"] = json!("x");
    body["phone"] = json!("x");
    let err = expect_error(
        app.signup_with(&body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(error_fields(&err), vec!["email", "phone"]);
    assert_eq!(app.user_count().await, 0);
}

#[tokio::test]
async fn malformed_or_non_json_bodies_are_400_and_415() {
    let app = spawn_app().await;
    let resp = app
        .request(Method::POST, "/api/users")
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "malformed_json").await;
    let resp = app
        .request(Method::POST, "/api/users")
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    expect_error(
        resp,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let mut body = signup_body();
    body["is_admin"] = json!(true);
    let err = expect_error(
        app.signup_with(&body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(err["error"]["fields"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("is_admin"));
    assert_eq!(app.user_count().await, 0);
}

#[tokio::test]
async fn duplicates_are_409_naming_each_field_case_insensitively() {
    let app = spawn_app().await;
    let first = signup_body();
    assert_eq!(app.signup_with(&first).await.status(), StatusCode::CREATED);

    for field in ["email", "phone", "display_name"] {
        let mut body = signup_body();
        body[field] = first[field].clone();
        if field == "email" {
            body[field] = json!(first["email"].as_str().unwrap().to_uppercase());
        }
        if field == "phone" {
            // Same number without dashes is the same phone.
            body[field] = json!(first["phone"].as_str().unwrap().replace('-', ""));
        }
        let err = expect_error(
            app.signup_with(&body).await,
            StatusCode::CONFLICT,
            "already_exists",
        )
        .await;
        assert_eq!(error_fields(&err), vec![field.to_string()]);
    }
    let err = expect_error(
        app.signup_with(&first).await,
        StatusCode::CONFLICT,
        "already_exists",
    )
    .await;
    assert_eq!(error_fields(&err), vec!["email", "phone", "display_name"]);
    assert_eq!(app.user_count().await, 1);
}

#[tokio::test]
async fn racing_signups_for_one_email_create_exactly_one_account() {
    let app = spawn_app().await;
    let email = signup_body()["email"].clone();
    let attempts = (0..12).map(|_| {
        let mut body = signup_body();
        body["email"] = email.clone();
        let app = &app;
        async move { app.signup_with(&body).await }
    });
    let responses = futures::future::join_all(attempts).await;
    let mut created = 0;
    for resp in responses {
        match resp.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["error"]["code"], "already_exists");
                assert_eq!(error_fields(&body), vec!["email"]);
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(app.user_count().await, 1);
}

#[tokio::test]
async fn profile_updates_revalidate_and_ignore_the_users_own_values() {
    let app = spawn_app().await;
    let alice = app.signup().await;
    let bob = app.signup().await;
    let tokens = app.login(&alice).await;
    let patch = |body: Value| {
        app.request(Method::PATCH, "/api/users/me")
            .bearer_auth(&tokens.access)
            .json(&body)
            .send()
    };

    // Re-sending one's own phone and name is not a conflict.
    let resp =
        patch(json!({"phone": alice.phone, "display_name": alice.display_name, "city": "Busan"}))
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let me: Value = resp.json().await.unwrap();
    assert_eq!(me["city"], "Busan");

    let err = expect_error(
        patch(json!({"phone": bob.phone})).await.unwrap(),
        StatusCode::CONFLICT,
        "already_exists",
    )
    .await;
    assert_eq!(error_fields(&err), vec!["phone"]);
    let err = expect_error(
        patch(json!({"display_name": bob.display_name}))
            .await
            .unwrap(),
        StatusCode::CONFLICT,
        "already_exists",
    )
    .await;
    assert_eq!(error_fields(&err), vec!["display_name"]);

    let err = expect_error(
        patch(json!({"phone": "123", "real_name": "a b"}))
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(error_fields(&err), vec!["real_name", "phone"]);

    // Password change needs the current password, which must be right.
    let err = expect_error(
        patch(json!({"password": "NewSecret1!"})).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(error_fields(&err), vec!["current_password"]);
    let err = expect_error(
        patch(json!({"password": "NewSecret1!", "current_password": "wrong"}))
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(error_fields(&err), vec!["current_password"]);
    let resp = patch(json!({"password": "NewSecret1!", "current_password": alice.password}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        app.login_raw(&alice.email, &alice.password).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login_raw(&alice.email, "NewSecret1!").await.status(),
        StatusCode::OK
    );

    // Nothing leaked onto Bob.
    let bob_tokens = app.login(&bob).await;
    let bob_me: Value = app.me(&bob_tokens.access).await.json().await.unwrap();
    assert_eq!(bob_me["phone"], bob.phone);
    assert_ne!(bob_me["city"], "Busan");
}

#[tokio::test]
async fn withdrawal_revokes_every_session_and_refuses_later_logins() {
    let app = spawn_app().await;
    let user = app.signup().await;
    let phone_session = app.login(&user).await;
    let laptop_session = app.login(&user).await;

    let resp = app
        .request(Method::DELETE, "/api/users/me")
        .bearer_auth(&laptop_session.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    for tokens in [&phone_session, &laptop_session] {
        expect_error(
            app.me(&tokens.access).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        )
        .await;
        expect_error(
            app.refresh(&tokens.refresh).await,
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
        )
        .await;
    }
    expect_error(
        app.login_raw(&user.email, &user.password).await,
        StatusCode::FORBIDDEN,
        "account_withdrawn",
    )
    .await;
    // A wrong password still says only "invalid credentials".
    expect_error(
        app.login_raw(&user.email, "Wrong123!").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let status: String = sqlx::query_scalar("SELECT status FROM users WHERE id = $1")
        .bind(user.id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "withdrawn");

    // The e-mail can be registered again by a new account.
    let mut body = signup_body();
    body["email"] = json!(user.email);
    assert_eq!(app.signup_with(&body).await.status(), StatusCode::CREATED);
}
