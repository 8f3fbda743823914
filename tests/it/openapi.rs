//! The OpenAPI document covers every route the router serves.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

/// Every (method, path) the API serves; a new route must be added here and documented.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("post", "/api/users"),
    ("get", "/api/users/me"),
    ("patch", "/api/users/me"),
    ("delete", "/api/users/me"),
    ("post", "/api/auth/login"),
    ("post", "/api/auth/refresh"),
    ("post", "/api/auth/logout"),
    ("get", "/api/auth/oauth/{provider}/authorize"),
    ("get", "/api/auth/oauth/{provider}/callback"),
    ("post", "/api/auth/oauth/complete"),
    ("get", "/api/admin/users"),
    ("get", "/api/items"),
    ("get", "/api/items/main"),
    ("get", "/api/items/{id}"),
    ("post", "/api/admin/items"),
    ("patch", "/api/admin/items/{id}"),
    ("delete", "/api/admin/items/{id}"),
    ("post", "/api/admin/items/import"),
    ("get", "/api/admin/jobs"),
    ("post", "/api/admin/jobs/{id}/retry"),
    ("post", "/api/admin/jobs/{id}/cancel"),
    ("post", "/api/admin/jobs/retry-failed"),
    ("get", "/api/carts/{kind}"),
    ("post", "/api/carts/{kind}/items"),
    ("patch", "/api/carts/{kind}/items/{item_id}"),
    ("delete", "/api/carts/{kind}/items/{item_id}"),
    ("get", "/api/items/{id}/reviews"),
    ("post", "/api/items/{id}/reviews"),
    ("patch", "/api/reviews/{id}"),
    ("delete", "/api/reviews/{id}"),
    ("get", "/api/users/me/reviews"),
    ("post", "/api/orders"),
    ("get", "/api/orders"),
    ("get", "/api/orders/{id}"),
    ("post", "/api/orders/{id}/cancel"),
    ("get", "/api/payments/kakaopay/{action}/{payment_token}"),
    ("get", "/api/subscriptions"),
    ("get", "/api/subscriptions/{id}"),
    ("patch", "/api/subscriptions/{id}"),
    ("delete", "/api/subscriptions/{id}"),
    ("post", "/api/subscriptions/{id}/{action}"),
    ("post", "/api/subscriptions/{id}/checkout"),
    ("get", "/api/checkouts/{token}"),
    ("get", "/api/checkouts/kakaopay/{action}/{token}"),
    ("get", "/api/recovery/{token}"),
    ("post", "/api/recovery/{token}"),
    ("get", "/api/users/me/sessions"),
    ("get", "/api/admin/audit"),
    ("patch", "/api/admin/users/{id}"),
    ("delete", "/api/users/me/sessions"),
    ("delete", "/api/users/me/sessions/{id}"),
    ("post", "/api/admin/subscriptions/{id}/preview"),
    ("get", "/api/admin/charges/unknown"),
    ("post", "/api/admin/webhooks"),
    ("get", "/api/admin/webhooks"),
    ("get", "/api/admin/webhooks/{id}"),
    ("patch", "/api/admin/webhooks/{id}"),
    ("delete", "/api/admin/webhooks/{id}"),
    ("post", "/api/admin/webhooks/{id}/rotate-secret"),
    ("get", "/api/admin/webhooks/{id}/deliveries"),
    ("get", "/api/admin/deliveries"),
    ("get", "/api/admin/deliveries/{id}"),
    ("post", "/api/admin/deliveries/{id}/redeliver"),
    ("post", "/api/admin/deliveries/redeliver"),
    ("get", "/api/admin/jobs/stats"),
    ("get", "/api/admin/migrations"),
    ("post", "/api/admin/migrations"),
    ("post", "/api/admin/admins"),
    ("post", "/api/admin/charges/{attempt_id}/reconcile"),
];

#[tokio::test]
async fn openapi_json_lists_every_route_and_the_docs_page_renders() {
    let app = spawn_app().await;
    let resp = app.get("/api-docs/openapi.json").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, expected);
    // Generated clients name methods after operation ids: each must be unique.
    let mut op_ids = BTreeSet::new();
    for ops in doc["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap().to_owned();
            assert!(op_ids.insert(id.clone()), "operationId {id} is used twice");
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    // The what-if preview takes both decline classes (and the older `declined`), the
    // infrastructure outcomes and a recovery checkout.
    let outcomes: BTreeSet<&str> = doc["components"]["schemas"]["Outcome"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        BTreeSet::from([
            "approved",
            "declined",
            "soft_decline",
            "hard_decline",
            "transient",
            "recovery",
            "ambiguous"
        ])
    );

    // Each documented route is really served (anything but the router's 404/405).
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{provider}", "kakao")
            .replace("{kind}", "normal")
            .replace("{item_id}", "1")
            .replace("{action}", "approve")
            .replace("{payment_token}", "no-such-token")
            .replace("{attempt_id}", "1")
            .replace("{id}", "00000000-0000-0000-0000-000000000000");
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let resp = app.request(m, &concrete).send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        // A missing row is fine; the router's own "no such route" is not.
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && body["error"]["message"] != "no such route",
            "{method} {path} → {status} {body}"
        );
    }

    let page = app.get("/api-docs").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("openapi"));
}
