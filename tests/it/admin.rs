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

#[tokio::test]
async fn admins_list_failed_jobs_and_requeue_one() {
    let app = spawn_app().await;
    let (_admin, tokens) = app.admin().await;
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO fang_tasks (metadata, state, error_message, retries)
         VALUES ('{\"type\": \"diag.probe\", \"key\": \"k\"}', 'failed', 'boom', 5) RETURNING id",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    sqlx::query("INSERT INTO fang_tasks (metadata) VALUES ('{\"type\": \"diag.noop\"}')")
        .execute(&app.db)
        .await
        .unwrap();
    let get = |path: String| app.get(&path).bearer_auth(&tokens.access).send();

    let page: Value = get("/api/admin/jobs?state=failed".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["id"], id.to_string());
    assert_eq!(page["items"][0]["name"], "diag.probe");
    assert_eq!(page["items"][0]["error_message"], "boom");
    let all: Value = get("/api/admin/jobs".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["total"], 2);
    expect_error(
        get("/api/admin/jobs?state=bogus".into()).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    let retry = |id: String| {
        app.post_json(
            &format!("/api/admin/jobs/{id}/retry"),
            &serde_json::json!({}),
        )
        .bearer_auth(&tokens.access)
        .send()
    };
    let resp = retry(id.to_string()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["state"], "new");
    assert_eq!(job["retries"], 0);
    expect_error(
        retry(id.to_string()).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_error(
        retry(uuid::Uuid::new_v4().to_string()).await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        retry("not-a-uuid".into()).await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let user = app.signup().await;
    let user_tokens = app.login(&user).await;
    let resp = app
        .get("/api/admin/jobs")
        .bearer_auth(&user_tokens.access)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
}
