//! The audit log, through the real API: every operator action of the JSON admin routes
//! leaves one row (who, when, what, on which row, the request id) written with the action;
//! a refused action leaves none; secrets never enter it; only admins read it.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{expect_error, spawn_app, TestApp, Tokens};

async fn log(app: &TestApp, tokens: &Tokens, query: &str) -> Value {
    app.get_json(&format!("/api/admin/audit{query}"), &tokens.access)
        .await
}

#[tokio::test]
async fn every_admin_action_is_in_the_audit_log_with_its_author_and_row() {
    let app = spawn_app().await;
    let (admin, tokens) = app.admin().await;
    let send = |method: Method, path: &str, body: Option<Value>| {
        let mut req = app
            .request(method, path)
            .bearer_auth(&tokens.access)
            .header("x-request-id", "audit-test-1");
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
    };

    // A webhook endpoint: created, its secret rotated, deleted.
    let resp = send(
        Method::POST,
        "/api/admin/webhooks",
        Some(json!({"url": "http://127.0.0.1:9/hook", "event_types": ["order.paid"]})),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    let endpoint = created["id"].as_i64().unwrap();
    let rotated: Value = send(
        Method::POST,
        &format!("/api/admin/webhooks/{endpoint}/rotate-secret"),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let deleted = send(
        Method::DELETE,
        &format!("/api/admin/webhooks/{endpoint}"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    // A failed job retried.
    let job = crate::helpers::fixtures::failed_job(&app.db).await;
    let retried = send(
        Method::POST,
        &format!("/api/admin/jobs/{job}/retry"),
        Some(json!({})),
    )
    .await
    .unwrap();
    assert_eq!(retried.status(), StatusCode::OK);

    // Refused actions leave nothing: an unknown endpoint, a job that is not failed.
    expect_error(
        send(Method::DELETE, "/api/admin/webhooks/999999", None)
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        send(
            Method::POST,
            &format!("/api/admin/jobs/{job}/retry"),
            Some(json!({})),
        )
        .await
        .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    let page = log(&app, &tokens, "").await;
    let entries = page["items"].as_array().unwrap();
    let actions: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["target_type"].as_str().unwrap(),
                e["target_id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let endpoint = endpoint.to_string();
    let job = job.to_string();
    assert_eq!(
        actions,
        vec![
            ("job_retried", "job", job.as_str()),
            (
                "webhook_endpoint_deleted",
                "webhook_endpoint",
                endpoint.as_str()
            ),
            (
                "webhook_secret_rotated",
                "webhook_endpoint",
                endpoint.as_str()
            ),
            (
                "webhook_endpoint_created",
                "webhook_endpoint",
                endpoint.as_str()
            ),
        ]
    );
    for e in entries {
        assert_eq!(e["actor_user_id"], admin.id);
        assert_eq!(e["actor_email"], admin.email.as_str());
        assert_eq!(e["channel"], "api");
        assert_eq!(e["request_id"], "audit-test-1");
    }
    assert_eq!(entries[0]["details"]["error"], "boom");
    // The secret is shown once to the operator, never kept in the log.
    let secret = rotated["secret"].as_str().unwrap();
    let text = page.to_string();
    assert!(!text.contains(secret) && !text.contains(created["secret"].as_str().unwrap()));

    // One row's history.
    let one = log(
        &app,
        &tokens,
        &format!("?target_type=webhook_endpoint&target_id={endpoint}"),
    )
    .await;
    assert_eq!(one["total"], 3);

    // Customers cannot read it.
    app.refuses_customers("/api/admin/audit").await;
}

#[tokio::test]
async fn item_changes_and_the_cli_are_audited_too() {
    let app = spawn_app().await;
    let (_admin, tokens) = app.admin().await;
    let item = json!({"brand": "퍼스트", "title": "루테인 골드", "origin_price": 30000,
                      "discount_rate": 10, "main_function": "눈 건강"});
    let resp = app
        .post_json("/api/admin/items", &item)
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{}",
        resp.text().await.unwrap()
    );
    let id = resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let resp = app
        .request(Method::PATCH, &format!("/api/admin/items/{id}"))
        .bearer_auth(&tokens.access)
        .json(&json!({"discount_rate": 20}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page = log(&app, &tokens, "?target_type=item").await;
    let entries = page["items"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["action"], "item_updated");
    assert_eq!(entries[0]["details"], json!({"discount_rate": 20}));
    assert_eq!(entries[1]["action"], "item_created");
    assert_eq!(entries[1]["details"]["title"], "루테인 골드");

    // The operators' CLI acts as nobody in particular, on its own channel.
    let promoted = std::process::Command::new(crate::helpers::bin_path("pillivery-api"))
        .args([
            "create-admin",
            "--email",
            "ops2@example.com",
            "--password",
            "Ops12345!x",
        ])
        .env("PILLIVERY__DATABASE__URL", &app.database_url)
        .env("PILLIVERY__ENVIRONMENT", "test")
        .output()
        .unwrap();
    assert!(
        promoted.status.success(),
        "{}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    let page = log(&app, &tokens, "?target_type=user").await;
    let entries = page["items"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{page}");
    assert_eq!(
        (
            &entries[0]["action"],
            &entries[0]["channel"],
            &entries[0]["actor_user_id"]
        ),
        (&json!("admin_granted"), &json!("cli"), &Value::Null)
    );
    assert_eq!(entries[0]["details"], json!({"created": true}));
}
