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

/// A job row of `name` in `pool` and `state` (`failed` ones used up their retries).
async fn job_row(db: &sqlx::PgPool, name: &str, pool: &str, state: &str) -> uuid::Uuid {
    sqlx::query_scalar(
        "INSERT INTO fang_tasks (metadata, task_type, state, error_message, retries, max_retries)
         VALUES (jsonb_build_object('type', $1::text, 'key', gen_random_uuid()), $2,
                 $3::fang_task_state, CASE WHEN $3 = 'failed' THEN 'boom' END,
                 CASE WHEN $3 = 'failed' THEN 5 ELSE 0 END, 5)
         RETURNING id",
    )
    .bind(name)
    .bind(pool)
    .bind(state)
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn admins_cancel_waiting_probes_never_payment_steps_and_retry_a_pools_failed_jobs() {
    let app = spawn_app().await;
    let (admin, tokens) = app.admin().await;
    let post = |path: String, body: Value| {
        app.request(reqwest::Method::POST, &path)
            .bearer_auth(&tokens.access)
            .json(&body)
            .send()
    };

    let probe = job_row(&app.db, "diag.probe", "common", "new").await;
    let resp = post(
        format!("/api/admin/jobs/{probe}/cancel"),
        serde_json::json!({}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let gone: Option<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM fang_tasks WHERE id = $1")
        .bind(probe)
        .fetch_optional(&app.db)
        .await
        .unwrap();
    assert_eq!(gone, None);

    // A waiting charge is the money path: refused, and still there.
    let charge = job_row(&app.db, "subscription.charge", "pg", "new").await;
    let resp = post(
        format!("/api/admin/jobs/{charge}/cancel"),
        serde_json::json!({}),
    )
    .await
    .unwrap();
    expect_error(resp, StatusCode::CONFLICT, "job_not_cancelable").await;
    let state: String = sqlx::query_scalar("SELECT state::text FROM fang_tasks WHERE id = $1")
        .bind(charge)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(state, "new");

    // Every failed job of the `common` pool runs again; the `webhook` pool's stays failed.
    let a = job_row(&app.db, "diag.probe", "common", "failed").await;
    let b = job_row(&app.db, "diag.probe", "common", "failed").await;
    let other = job_row(&app.db, "diag.probe", "webhook", "failed").await;
    let resp = post(
        "/api/admin/jobs/retry-failed".to_owned(),
        serde_json::json!({"task_type": "common"}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        serde_json::json!({"retried": 2, "skipped": 0})
    );
    let states: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, state::text FROM fang_tasks WHERE id = ANY($1)")
            .bind(vec![a, b, other])
            .fetch_all(&app.db)
            .await
            .unwrap();
    for (id, state) in states {
        assert_eq!(state == "failed", id == other, "{id} {state}");
    }
    let resp = post(
        "/api/admin/jobs/retry-failed".to_owned(),
        serde_json::json!({"task_type": "common", "extra": 1}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Both actions are in the audit log, on the API channel, by this admin.
    let rows: Vec<(Option<i64>, String, String)> =
        sqlx::query_as("SELECT actor_user_id, channel, action FROM audit_log ORDER BY id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            (Some(admin.id), "api".to_owned(), "job_canceled".to_owned()),
            (
                Some(admin.id),
                "api".to_owned(),
                "failed_jobs_retried".to_owned()
            ),
        ]
    );
    // Customers may do neither.
    let customer = app.signup().await;
    let customer = app.login(&customer).await;
    let resp = app
        .request(
            reqwest::Method::POST,
            &format!("/api/admin/jobs/{charge}/cancel"),
        )
        .bearer_auth(&customer.access)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
}
