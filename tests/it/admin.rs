//! Admin-only routes are enforced by role.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{expect_error, spawn_app};

#[tokio::test]
async fn admins_search_accounts_with_paging() {
    let app = spawn_app().await;
    let (_admin, tokens) = app.admin().await;
    let u1 = app.signup().await;
    let _u2 = app.signup().await;

    let resp = app
        .get("/api/admin/users?page=1&size=2")
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page: Value = resp.json().await.unwrap();
    assert_eq!(page["total"], 3);
    assert_eq!(page["page"], 1);
    assert_eq!(page["size"], 2);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);

    let q = format!("/api/admin/users?email={}", &u1.email[..10]);
    let found: Value = app
        .get(&q)
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 1);
    assert_eq!(found["items"][0]["id"], u1.id);

    let resp = app
        .get("/api/admin/users?size=500")
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let resp = app
        .get("/api/admin/users?page=abc")
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "malformed_request").await;
    let resp = app.get("/api/admin/users").send().await.unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn create_admin_cli_creates_or_promotes() {
    let app = crate::helpers::spawn_app().await;
    let user = app.signup().await;
    let run = |email: &str| {
        std::process::Command::new(crate::helpers::bin_path("pillivery-api"))
            .args(["create-admin", "--email", email, "--password", "Admin123!"])
            .env("PILLIVERY__DATABASE__URL", &app.database_url)
            .env("PILLIVERY__REDIS__URL", crate::helpers::test_redis_url())
            .output()
            .unwrap()
    };
    let out = run("boss@example.com");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&user.email);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admins: Vec<String> =
        sqlx::query_scalar("SELECT email FROM users WHERE role = 'admin' ORDER BY email")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let mut want = vec!["boss@example.com".to_owned(), user.email.clone()];
    want.sort();
    assert_eq!(admins, want);
    let boss = app.login_raw("boss@example.com", "Admin123!").await;
    assert_eq!(boss.status(), StatusCode::OK);
}
