//! The console's orders over real HTTP: the search by id, customer e-mail or phone, status
//! and kind; an order's page with its lines, payment, events and their deliveries; an
//! admin's refund of a paid order (refund requested, the refund job queued, audited in the
//! same transaction) and the JSON API's conflicts for any other order; operators refused.

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use super::subscriptions::{audit_rows, encoded, result_ids, section};
use super::{assert_done, assert_error_page, console_admin, console_sign_in, with_role};
use crate::helpers::{fixtures, spawn_app, TestApp, TestUser};

/// `POST /api/orders` as `user`: one line of `item`; the order's id (pending payment).
pub async fn place(app: &TestApp, user: &TestUser, item: i64) -> i64 {
    let tokens = app.login(user).await;
    let body = json!({
        "kind": "one_time",
        "lines": [{"item_id": item, "quantity": 2}],
        "receiver": {"name": "홍길동", "phone": "010-1234-5678", "city": "Seoul",
                     "detail_address": "1 Sejong-daero"},
    });
    let resp = app
        .post_json("/api/orders", &body)
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let order: Value = resp.json().await.unwrap();
    order["id"].as_i64().unwrap()
}

/// The buyer paid at KakaoPay and the approval was applied, as the approve job leaves it.
pub async fn mark_paid(db: &PgPool, order: i64) {
    sqlx::query(
        "WITH o AS (UPDATE orders SET status = 'paid', paid_at = now(), version = version + 1
                    WHERE id = $1 RETURNING id)
         UPDATE payments SET status = 'approved', tid = 'T' || $1, approved_at = now()
         WHERE order_id = (SELECT id FROM o)",
    )
    .bind(order)
    .execute(db)
    .await
    .unwrap();
}

async fn status_of(db: &PgPool, order: i64) -> (String, String) {
    sqlx::query_as(
        "SELECT o.status, p.status FROM orders o JOIN payments p ON p.order_id = o.id
         WHERE o.id = $1",
    )
    .bind(order)
    .fetch_one(db)
    .await
    .unwrap()
}

async fn refund_jobs(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM fang_tasks WHERE metadata->>'type' = 'payment.cancel'")
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn console_finds_orders_and_shows_one_with_its_payment_and_events() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup().await, app.signup().await);
    let item = fixtures::item(&app.db, "루테인", 10_000, 10).await;
    let a1 = place(&app, &alice, item).await;
    let a2 = place(&app, &alice, item).await;
    let b1 = place(&app, &bob, item).await;
    mark_paid(&app.db, a2).await;
    // Alice cancels her first order herself (the JSON API): `order.canceled`, which a
    // webhook endpoint was sent once.
    let tokens = app.login(&alice).await;
    let resp = app
        .post_json(&format!("/api/orders/{a1}/cancel"), &json!({}))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    sqlx::query(
        "WITH e AS (INSERT INTO webhook_endpoints (url, event_types, secret)
                    VALUES ('https://hooks.example/pv', '{*}', 'whsec') RETURNING id)
         INSERT INTO webhook_deliveries (event_id, endpoint_id, state, attempts, delivered_at)
         SELECT o.id, e.id, 'delivered', 1, now() FROM outbox_events o, e
         WHERE o.aggregate_type = 'order' AND o.aggregate_id = $1",
    )
    .bind(a1)
    .execute(&app.db)
    .await
    .unwrap();

    let (_, console) = console_admin(&app).await;
    let ids = |html: String| result_ids(&html, "/admin/orders/");
    let page = |q: String| {
        let console = &console;
        async move { console.page(&format!("/admin/orders?{q}")).await }
    };
    assert_eq!(
        ids(page(format!("q={}", encoded(&alice.email.to_uppercase()))).await),
        vec![a2, a1]
    );
    assert_eq!(
        ids(page(format!("q={}", encoded(&bob.phone))).await),
        vec![b1]
    );
    assert_eq!(ids(page(format!("q={b1}")).await), vec![b1]);
    assert_eq!(ids(page("status=paid".into()).await), vec![a2]);
    assert_eq!(
        ids(page(format!("q={}&status=canceled", encoded(&alice.email))).await),
        vec![a1]
    );
    assert_eq!(ids(page("kind=one_time".into()).await), vec![b1, a2, a1]);
    assert!(ids(page("kind=subscription".into()).await).is_empty());
    let bad = console.get("/admin/orders?kind=weekly").await;
    assert_error_page(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let html = console.page(&format!("/admin/orders/{a2}")).await;
    assert!(section(&html, "order-status", "</span>").contains("paid"));
    assert!(section(&html, "lines", "</table>").contains("루테인"));
    let payment = section(&html, "payment", "</dl>");
    assert!(payment.contains(&format!("T{a2}")), "{payment}");
    assert!(payment.contains("approved"));
    assert!(html.contains("Refund…"));

    let html = console.page(&format!("/admin/orders/{a1}")).await;
    let events = section(&html, "events", "</ol>");
    assert!(events.contains("<code>order.canceled</code>"), "{events}");
    assert!(
        events.contains("status-delivered\">delivered</span>, 1 attempt"),
        "{events}"
    );
    assert!(!html.contains("Refund…"), "only a paid order is refunded");

    for missing in ["/admin/orders/x1", "/admin/orders/99999999"] {
        assert_error_page(
            console.get(missing).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
}

#[tokio::test]
async fn console_refund_of_a_paid_order_requests_it_queues_the_job_and_audits_it() {
    let app = spawn_app().await;
    let customer = app.signup().await;
    let item = fixtures::item(&app.db, "종합비타민", 40_000, 25).await;
    let paid = place(&app, &customer, item).await;
    mark_paid(&app.db, paid).await;
    let unpaid = place(&app, &customer, item).await;
    let (admin, console) = console_admin(&app).await;

    let resp = console
        .post(&format!("/admin/orders/{paid}/refund"), &[])
        .await;
    assert_done(&resp, "refund_requested");
    assert_eq!(
        status_of(&app.db, paid).await,
        ("refund_requested".into(), "refund_requested".into())
    );
    assert_eq!(refund_jobs(&app.db).await, 1);
    let audit = audit_rows(&app.db).await;
    assert_eq!(audit.len(), 1);
    let (actor, channel, action, kind, target, details) = &audit[0];
    assert_eq!(
        (*actor, channel.as_str(), action.as_str(), kind.as_str()),
        (Some(admin.id), "console", "order_refund_requested", "order")
    );
    assert_eq!(target.as_deref(), Some(paid.to_string().as_str()));
    assert_eq!(details["amount"], 60_000);
    let html = console
        .page(&format!("/admin/orders/{paid}?done=refund_requested"))
        .await;
    assert!(html.contains("The refund was requested"));
    assert!(section(&html, "audit", "</ol>").contains("order_refund_requested"));

    // Asking again, or for an order not paid, is the JSON API's conflict; nothing changes.
    let again = console
        .post(&format!("/admin/orders/{paid}/refund"), &[])
        .await;
    assert_error_page(again, StatusCode::CONFLICT, "already_refunded").await;
    let resp = console
        .post(&format!("/admin/orders/{unpaid}/refund"), &[])
        .await;
    assert_error_page(resp, StatusCode::CONFLICT, "order_not_paid").await;
    assert_eq!(
        status_of(&app.db, unpaid).await,
        ("pending_payment".into(), "created".into())
    );
    sqlx::query("UPDATE orders SET status = 'payment_failed' WHERE id = $1")
        .bind(unpaid)
        .execute(&app.db)
        .await
        .unwrap();
    let resp = console
        .post(&format!("/admin/orders/{unpaid}/refund"), &[])
        .await;
    assert_error_page(resp, StatusCode::CONFLICT, "order_not_cancelable").await;
    let resp = console.post("/admin/orders/99999999/refund", &[]).await;
    assert_error_page(resp, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(refund_jobs(&app.db).await, 1);
    assert_eq!(audit_rows(&app.db).await.len(), 1);
}

#[tokio::test]
async fn console_operators_cannot_refund_and_forms_need_their_csrf_token() {
    let app = spawn_app().await;
    let customer = app.signup().await;
    let item = fixtures::item(&app.db, "오메가3", 15_000, 0).await;
    let paid = place(&app, &customer, item).await;
    mark_paid(&app.db, paid).await;
    let operator = with_role(&app, "operator").await;
    let op = console_sign_in(&app, &operator).await;
    let path = format!("/admin/orders/{paid}");

    let html = op.page(&path).await;
    assert!(html.contains("id=\"payment\""));
    assert!(!html.contains("Refund…") && !html.contains("/refund\""));
    let resp = op.post(&format!("{path}/refund"), &[]).await;
    assert_error_page(resp, StatusCode::FORBIDDEN, "forbidden").await;

    let (_, admin) = console_admin(&app).await;
    let resp = admin.post_raw(&format!("{path}/refund"), &[]).await;
    assert_error_page(resp, StatusCode::FORBIDDEN, "csrf_failed").await;
    let resp = admin
        .post_raw(&format!("{path}/refund"), &[("csrf", "not-the-token")])
        .await;
    assert_error_page(resp, StatusCode::FORBIDDEN, "csrf_failed").await;

    assert_eq!(
        status_of(&app.db, paid).await,
        ("paid".into(), "approved".into())
    );
    assert_eq!(refund_jobs(&app.db).await, 0);
    assert!(audit_rows(&app.db).await.is_empty());
}
