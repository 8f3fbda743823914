//! Operator access, through the real API: admins give an account the read-only `operator`
//! role (it sees the admin lists and the audit log, acts on nothing), disable and enable
//! accounts (a disabled one is logged out at once and cannot log in, yet keeps its
//! e-mail), never their own; every change is in the audit log.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{expect_error, signup_body, spawn_app, TestApp, Tokens};

async fn set_access(app: &TestApp, admin: &Tokens, user: i64, body: Value) -> reqwest::Response {
    app.request(Method::PATCH, &format!("/api/admin/users/{user}"))
        .bearer_auth(&admin.access)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_operator_sees_what_admins_see_and_acts_on_nothing() {
    let app = spawn_app().await;
    let (_, admin) = app.admin().await;
    let someone = app.signup().await;
    let resp = set_access(&app, &admin, someone.id, json!({"role": "operator"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["role"], "operator");
    let operator = app.login(&someone).await;

    for path in [
        "/api/admin/users",
        "/api/admin/jobs",
        "/api/admin/jobs/stats",
        "/api/admin/audit",
        "/api/admin/webhooks",
        "/api/admin/deliveries",
        "/api/admin/charges/unknown",
    ] {
        let resp = app
            .get(path)
            .bearer_auth(&operator.access)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    let victim = app.signup().await;
    let job = crate::helpers::fixtures::failed_job(&app.db).await;
    let acts: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            format!("/api/admin/jobs/{job}/retry"),
            json!({}),
        ),
        (
            Method::PATCH,
            format!("/api/admin/users/{}", victim.id),
            json!({"disabled": true}),
        ),
        (
            Method::POST,
            "/api/admin/webhooks".into(),
            json!({"url": "http://127.0.0.1:9/h", "event_types": ["*"]}),
        ),
        (
            Method::POST,
            "/api/admin/items".into(),
            json!({"brand": "b", "title": "t", "origin_price": 1000}),
        ),
        (
            Method::POST,
            "/api/admin/jobs/retry-failed".into(),
            json!({"task_type": "common"}),
        ),
        (
            Method::POST,
            format!("/api/admin/jobs/{job}/cancel"),
            json!({}),
        ),
    ];
    for (method, path, body) in acts {
        let resp = app
            .request(method, &path)
            .bearer_auth(&operator.access)
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let state: String = sqlx::query_scalar("SELECT state::text FROM fang_tasks WHERE id = $1")
        .bind(job)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(state, "failed", "the operator's retry did nothing");

    // Demoted, the same token loses even the reads at once.
    let resp = set_access(&app, &admin, someone.id, json!({"role": "user"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app
        .get("/api/admin/jobs")
        .bearer_auth(&operator.access)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    let log: Value = app
        .get_json(
            &format!("/api/admin/audit?target_type=user&target_id={}", someone.id),
            &admin.access,
        )
        .await;
    let changes: Vec<(&str, &str)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["details"]["from"].as_str().unwrap(),
                e["details"]["to"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(changes, vec![("operator", "user"), ("user", "operator")]);
}

#[tokio::test]
async fn a_disabled_account_is_out_at_once_and_keeps_its_email() {
    let app = spawn_app().await;
    let (admin_user, admin) = app.admin().await;
    let customer = app.signup().await;
    let tokens = app.login(&customer).await;
    let resp = set_access(&app, &admin, customer.id, json!({"disabled": true})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.json::<Value>().await.unwrap()["disabled_at"].is_string());
    assert_eq!(
        app.me(&tokens.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&tokens.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    expect_error(
        app.login_raw(&customer.email, &customer.password).await,
        StatusCode::FORBIDDEN,
        "account_disabled",
    )
    .await;
    // Nobody else can take its e-mail meanwhile.
    let mut body = signup_body();
    body["email"] = json!(customer.email);
    expect_error(
        app.signup_with(&body).await,
        StatusCode::CONFLICT,
        "already_exists",
    )
    .await;

    let resp = set_access(&app, &admin, customer.id, json!({"disabled": false})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        app.login_raw(&customer.email, &customer.password)
            .await
            .status(),
        StatusCode::OK
    );
    let log: Value = app
        .get_json(
            &format!(
                "/api/admin/audit?target_type=user&target_id={}",
                customer.id
            ),
            &admin.access,
        )
        .await;
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["user_enabled", "user_disabled"]);
    assert_eq!(log["items"][1]["details"]["sessions_ended"], 1);

    // Refusals change nothing: one's own access, nothing to change, an unknown role or
    // account.
    let before = app.get_json("/api/admin/audit", &admin.access).await["total"].clone();
    expect_error(
        set_access(&app, &admin, admin_user.id, json!({"role": "user"})).await,
        StatusCode::CONFLICT,
        "cannot_change_own_access",
    )
    .await;
    expect_error(
        set_access(&app, &admin, customer.id, json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_error(
        set_access(&app, &admin, customer.id, json!({"role": "owner"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_error(
        set_access(&app, &admin, 999_999, json!({"disabled": true})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        app.get_json("/api/admin/audit", &admin.access).await["total"],
        before
    );
    assert_eq!(app.me(&admin.access).await.status(), StatusCode::OK);
}
