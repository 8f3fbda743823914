//! The console's webhooks pages: endpoints created, disabled and enabled, their secret
//! rotated (shown once, never listed); deliveries by state and endpoint with their
//! attempts; redelivery of one and of every dead one — each audited.

use reqwest::StatusCode;
use serde_json::json;

use super::{
    assert_done, assert_error_page, assert_form_guarded, audit_rows, console_admin,
    console_audit_row, console_sign_in, hidden_field, with_role,
};
use crate::helpers::{spawn_app, TestApp};

/// The text of the element with id `id` (no nested tags).
fn text_of(html: &str, id: &str) -> String {
    let at = html.find(&format!("id=\"{id}\"")).expect(id);
    let start = at + html[at..].find('>').unwrap() + 1;
    let end = start + html[start..].find('<').unwrap();
    html[start..end].to_owned()
}

async fn endpoint_row(app: &TestApp, id: i64) -> (bool, String) {
    sqlx::query_as("SELECT enabled, secret FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn console_creates_disables_and_rotates_endpoints_showing_the_secret_once() {
    let app = spawn_app().await;
    let (admin, console) = console_admin(&app).await;

    // Refused input: the form again with what to fix; nothing created.
    let resp = console
        .post(
            "/admin/webhooks",
            &[
                ("url", "ftp://partner.example/"),
                ("event_types", "order.paid"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(html.contains("id=\"form-errors\"") && html.contains("absolute http(s) URL"));
    assert!(
        html.contains("value=\"ftp://partner.example/\""),
        "kept: {html}"
    );
    let resp = console
        .post(
            "/admin/webhooks",
            &[("url", "https://partner.example/hooks")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(audit_rows(&app, "webhook_endpoint_created")
        .await
        .is_empty());

    let resp = console
        .post(
            "/admin/webhooks",
            &[
                ("url", "https://partner.example/hooks"),
                ("description", "partner"),
                ("event_types", "order.paid"),
                ("event_types", "subscription.past_due"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let html = resp.text().await.unwrap();
    let secret = text_of(&html, "secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    let id: i64 = sqlx::query_scalar("SELECT id FROM webhook_endpoints")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(endpoint_row(&app, id).await, (true, secret.clone()));
    let row = console_audit_row(&app, "webhook_endpoint_created", &admin).await;
    assert_eq!(row.target_id, Some(id.to_string()));
    assert_eq!(
        row.details["event_types"],
        json!(["order.paid", "subscription.past_due"])
    );

    let list = console.page("/admin/webhooks").await;
    assert!(list.contains("https://partner.example/hooks"));
    assert!(list.contains("order.paid, subscription.past_due"));
    assert!(!list.contains(&secret), "never listed");
    assert!(list.contains("one secret"));

    // Disabled, then enabled again.
    let path = format!("/admin/webhooks/{id}/enabled");
    assert_done(
        &console.post(&path, &[("enabled", "false")]).await,
        "endpoint_updated",
    );
    assert!(!endpoint_row(&app, id).await.0);
    assert!(console.page("/admin/webhooks").await.contains("(operator)"));
    assert_done(
        &console.post(&path, &[("enabled", "true")]).await,
        "endpoint_updated",
    );
    assert!(endpoint_row(&app, id).await.0);
    let updates = audit_rows(&app, "webhook_endpoint_updated").await;
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0].details["enabled"], false);
    assert_eq!(updates[1].channel, "console");

    // Rotated: the new secret once; the list tells the old one still signs for a while.
    let resp = console
        .post(&format!("/admin/webhooks/{id}/rotate-secret"), &[])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let rotated = text_of(&resp.text().await.unwrap(), "secret");
    assert!(rotated.starts_with("whsec_") && rotated != secret);
    assert_eq!(endpoint_row(&app, id).await.1, rotated);
    let row = console_audit_row(&app, "webhook_secret_rotated", &admin).await;
    assert!(
        !row.details.to_string().contains("whsec_"),
        "no secret in the log"
    );
    let list = console.page("/admin/webhooks").await;
    assert!(list.contains("the previous secret also signs until"));
    assert!(!list.contains(&rotated) && !list.contains(&secret));
    let resp = console
        .post("/admin/webhooks/999999/rotate-secret", &[])
        .await;
    assert_error_page(resp, StatusCode::NOT_FOUND, "not_found").await;
}

/// An endpoint (without the API) with one delivery of an `order.paid` event in `state`,
/// two failed attempts behind it when dead. Returns (endpoint, delivery).
async fn delivery(app: &TestApp, url: &str, state: &str, order: i64) -> (i64, i64) {
    let endpoint: i64 = sqlx::query_scalar(
        "INSERT INTO webhook_endpoints (url, event_types, secret)
         VALUES ($1, '{order.paid}', 'whsec_test') RETURNING id",
    )
    .bind(url)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let event: i64 = sqlx::query_scalar(
        "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, aggregate_version,
                                    data)
         VALUES ('order.paid', 'order', $1, 1, '{}') RETURNING id",
    )
    .bind(order)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let dead = state == "dead";
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, state, attempts, last_status_code,
                                         last_error, last_attempt_at, dead_at)
         VALUES ($1, $2, $3, $4, $5, $6, now(), CASE WHEN $3 = 'dead' THEN now() END)
         RETURNING id",
    )
    .bind(event)
    .bind(endpoint)
    .bind(state)
    .bind(if dead { 2 } else { 0 })
    .bind(dead.then_some(503))
    .bind(dead.then_some("HTTP 503: receiver down"))
    .fetch_one(&app.db)
    .await
    .unwrap();
    if dead {
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, round, attempt, started_at, duration_ms,
                                           status_code, error)
             SELECT $1, 1, n, now(), 40 + n, 503, 'HTTP 503: receiver down'
             FROM generate_series(1, 2) n",
        )
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    }
    (endpoint, id)
}

async fn delivery_state(app: &TestApp, id: i64) -> (String, i32) {
    sqlx::query_as("SELECT state, round FROM webhook_deliveries WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn queued_attempts(app: &TestApp, id: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM fang_tasks
         WHERE metadata @> jsonb_build_object('type', 'webhooks.deliver', 'delivery_id', $1::bigint)",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn console_lists_deliveries_with_attempts_and_redelivers_one_or_every_dead_one() {
    let app = spawn_app().await;
    let (admin, console) = console_admin(&app).await;
    let (ep_a, dead_a) = delivery(&app, "https://a.example/hook", "dead", 11).await;
    let (ep_b, dead_b) = delivery(&app, "https://b.example/hook", "dead", 12).await;
    let (_, pending) = delivery(&app, "https://c.example/hook", "pending", 13).await;

    let dead = console.page("/admin/deliveries?state=dead&endpoint=").await;
    for id in [dead_a, dead_b] {
        assert!(
            dead.contains(&format!("href=\"/admin/deliveries/{id}\"")),
            "{dead}"
        );
    }
    assert!(!dead.contains(&format!("href=\"/admin/deliveries/{pending}\"")));
    assert!(dead.contains("HTTP 503: receiver down"));
    assert!(dead.contains("id=\"redeliver-dead\""));
    let of_a = console
        .page(&format!("/admin/deliveries?endpoint={ep_a}"))
        .await;
    assert!(of_a.contains(&format!("/admin/deliveries/{dead_a}\"")));
    assert!(!of_a.contains(&format!("/admin/deliveries/{dead_b}\"")));
    let resp = console.get("/admin/deliveries?state=lost").await;
    assert_error_page(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let page = console.page(&format!("/admin/deliveries/{dead_a}")).await;
    assert!(page.contains("https://a.example/hook") && page.contains("href=\"/admin/orders/11\""));
    assert_eq!(
        page.matches("HTTP 503: receiver down").count(),
        2,
        "both attempts"
    );
    assert!(
        page.contains(">503<") && page.contains(">41<"),
        "status and duration"
    );

    // One redelivered: a new round, its first attempt queued, the audit row.
    let resp = console
        .post(&format!("/admin/deliveries/{dead_a}/redeliver"), &[])
        .await;
    assert_done(&resp, "redelivered");
    assert_eq!(delivery_state(&app, dead_a).await, ("pending".into(), 2));
    assert_eq!(queued_attempts(&app, dead_a).await, 1);
    let row = console_audit_row(&app, "delivery_redelivered", &admin).await;
    assert_eq!(
        (row.target_type.as_str(), row.target_id),
        ("webhook_delivery", Some(dead_a.to_string()))
    );

    // Every dead one of an endpoint, then none left.
    let resp = console
        .post(
            "/admin/deliveries/redeliver-dead",
            &[("endpoint", &ep_b.to_string())],
        )
        .await;
    assert_done(&resp, "redelivered_dead");
    assert_eq!(delivery_state(&app, dead_b).await, ("pending".into(), 2));
    assert_eq!(queued_attempts(&app, dead_b).await, 1);
    let row = console_audit_row(&app, "dead_deliveries_redelivered", &admin).await;
    assert_eq!(row.details["count"], 1);
    assert_eq!(row.details["endpoint_id"], ep_b);
    let resp = console
        .post("/admin/deliveries/redeliver-dead", &[("endpoint", "")])
        .await;
    assert_done(&resp, "no_dead_deliveries");
    assert_eq!(delivery_state(&app, pending).await, ("pending".into(), 1));
}

#[tokio::test]
async fn console_webhook_actions_are_admins_only_and_need_the_csrf_token() {
    let app = spawn_app().await;
    let (_, admin) = console_admin(&app).await;
    let operator_user = with_role(&app, "operator").await;
    let operator = console_sign_in(&app, &operator_user).await;
    let (endpoint, dead) = delivery(&app, "https://a.example/hook", "dead", 11).await;

    let list = operator.page("/admin/webhooks").await;
    assert!(list.contains("https://a.example/hook"));
    assert!(!list.contains("rotate-secret") && !list.contains("action=\"/admin/webhooks\""));
    assert!(hidden_field(&list, "url").is_none());
    let page = operator.page(&format!("/admin/deliveries/{dead}")).await;
    assert!(!page.contains("id=\"redeliver\""));
    assert!(!operator
        .page("/admin/deliveries?state=dead")
        .await
        .contains("id=\"redeliver-dead\""));

    for (path, fields) in [
        (
            "/admin/webhooks".to_owned(),
            vec![("url", "https://x.example/"), ("event_types", "*")],
        ),
        (
            format!("/admin/webhooks/{endpoint}/enabled"),
            vec![("enabled", "false")],
        ),
        (format!("/admin/webhooks/{endpoint}/rotate-secret"), vec![]),
        (format!("/admin/deliveries/{dead}/redeliver"), vec![]),
        ("/admin/deliveries/redeliver-dead".to_owned(), vec![]),
    ] {
        assert_form_guarded(&admin, &operator, &path, &fields).await;
    }
    assert_eq!(
        endpoint_row(&app, endpoint).await,
        (true, "whsec_test".into())
    );
    assert_eq!(delivery_state(&app, dead).await, ("dead".into(), 1));
    let endpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(endpoints, 1);
}
