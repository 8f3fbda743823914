//! A customer's subscription edits through the real API: a new shipping receiver and
//! added, removed and re-quantified products shape the next cycle's charge and order;
//! every bad patch is refused whole (nothing changes, no event); a canceled subscription
//! is a conflict and someone else's is not found.

use billing::ids::{SubscriptionId, UserId};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::sim::{kst, Billing, NewSub};
use crate::helpers::{error_fields, expect_error, TestApp, Tokens};

/// The first order's receiver, as the harness writes it.
fn first_receiver() -> Value {
    json!({"name": "홍길동", "phone": "01012345678", "city": "Seoul", "detail_address": "1 Road"})
}

async fn patch(
    app: &TestApp,
    tokens: &Tokens,
    id: SubscriptionId,
    body: Value,
) -> reqwest::Response {
    app.request(Method::PATCH, &format!("/api/subscriptions/{}", id.0))
        .bearer_auth(&tokens.access)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The subscription's latest outbox event: (type, data).
async fn last_event(b: &Billing, id: SubscriptionId) -> (String, Value) {
    sqlx::query_as(
        "SELECT event_type, data FROM outbox_events
         WHERE aggregate_type = 'subscription' AND aggregate_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(id.0)
    .fetch_one(&b.db)
    .await
    .unwrap()
}

/// Sends each patch as the holder of `tokens` and expects the same refusal for all.
async fn refused_all(
    app: &TestApp,
    tokens: &Tokens,
    id: SubscriptionId,
    bodies: Vec<Value>,
    status: StatusCode,
    code: &str,
) {
    for body in bodies {
        expect_error(patch(app, tokens, id, body).await, status, code).await;
    }
}

#[tokio::test]
async fn a_new_receiver_and_product_changes_shape_the_next_cycle() {
    let mut b = Billing::start(|_| {}).await;
    let app = b.api().await;
    let owner = app.signup().await;
    let tokens = app.login(&owner).await;
    let (kept, dropped, added) = (
        b.item(10_000).await,
        b.item(7_000).await,
        b.item(3_000).await,
    );
    let id = b
        .subscription(NewSub {
            user: UserId(owner.id),
            items: vec![(kept, 2), (dropped, 1)],
            period_days: 30,
            paid_at: kst(2027, 1, 1, 10, 0),
        })
        .await;
    let path = format!("/api/subscriptions/{}", id.0);
    let before: Value = app.get_json(&path, &tokens.access).await;
    assert_eq!(before["receiver"], first_receiver());
    assert_eq!(before["next_amount"], 27_000);

    let resp = patch(
        &app,
        &tokens,
        id,
        json!({
            "receiver": {"name": "김철수", "phone": "010-9876-5432", "city": "Busan",
                         "detail_address": " 22 Haeundae-ro, 3F "},
            "add": [{"item_id": added, "quantity": 3}],
            "remove": [dropped],
            "items": [{"item_id": kept, "quantity": 1}],
        }),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let after: Value = resp.json().await.unwrap();
    let new_receiver = json!({"name": "김철수", "phone": "01098765432", "city": "Busan",
                              "detail_address": "22 Haeundae-ro, 3F"});
    assert_eq!(after["receiver"], new_receiver);
    assert_eq!(
        crate::carts::lines(&after),
        vec![(kept, 1, true), (added, 3, true)]
    );
    assert_eq!(after["next_amount"], 19_000);
    // The schedule is not touched by these edits.
    assert_eq!(after["next_charge_at"], before["next_charge_at"]);
    assert_eq!(
        app.get_json(&path, &tokens.access).await["receiver"],
        new_receiver
    );

    // One event, saying what changed (not where to: the address stays out of webhooks).
    let (kind, data) = last_event(&b, id).await;
    assert_eq!(kind, "subscription.updated");
    assert_eq!(
        data["changes"],
        json!({
            "items": [
                {"item_id": kept, "from": 2, "to": 1},
                {"item_id": dropped, "from": 1, "to": null},
                {"item_id": added, "from": null, "to": 3},
            ],
            "receiver": true,
        })
    );

    b.start_worker();
    b.run_until(kst(2027, 2, 1, 0, 0)).await;
    b.stop_worker().await;
    let charges = b.ledger("charge").await;
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0]["amount"], 19_000);
    let (name, phone, city, address, total): (String, String, String, String, i64) =
        sqlx::query_as(
            "SELECT receiver_name, receiver_phone, receiver_city, receiver_address, total_amount
             FROM orders WHERE subscription_id = $1 AND cycle = 2",
        )
        .bind(id.0)
        .fetch_one(&b.db)
        .await
        .unwrap();
    assert_eq!(
        (
            name.as_str(),
            phone.as_str(),
            city.as_str(),
            address.as_str()
        ),
        ("김철수", "01098765432", "Busan", "22 Haeundae-ro, 3F")
    );
    assert_eq!(total, 19_000);
    let order_lines: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT oi.item_id, oi.quantity FROM order_items oi JOIN orders o ON o.id = oi.order_id
         WHERE o.subscription_id = $1 AND o.cycle = 2 ORDER BY oi.item_id",
    )
    .bind(id.0)
    .fetch_all(&b.db)
    .await
    .unwrap();
    assert_eq!(order_lines, vec![(kept, 1), (added, 3)]);
    // The first order keeps its own receiver.
    let first: String = sqlx::query_scalar(
        "SELECT o.receiver_name FROM orders o JOIN subscriptions s ON s.first_order_id = o.id
         WHERE s.id = $1",
    )
    .bind(id.0)
    .fetch_one(&b.db)
    .await
    .unwrap();
    assert_eq!(first, "홍길동");

    // A quantity for every product, applied to the cycle after (a month on, the access
    // token of January has expired on the simulated clock).
    let tokens = app.login(&owner).await;
    let resp = patch(&app, &tokens, id, json!({"quantity": 2})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    b.start_worker();
    b.run_until(kst(2027, 3, 5, 0, 0)).await;
    b.stop_worker().await;
    let charges = b.ledger("charge").await;
    assert_eq!(charges.len(), 2, "{charges:?}");
    assert_eq!(charges[1]["amount"], 26_000);
}

#[tokio::test]
async fn bad_edits_change_nothing_and_others_or_canceled_are_refused() {
    let b = Billing::start(|_| {}).await;
    let app = b.api().await;
    let owner = app.signup().await;
    let tokens = app.login(&owner).await;
    let (item, other_item, off_sale, deleted) = (
        b.item(10_000).await,
        b.item(5_000).await,
        b.item(4_000).await,
        b.item(4_000).await,
    );
    sqlx::query("UPDATE items SET selling = false WHERE id = $1")
        .bind(off_sale)
        .execute(&b.db)
        .await
        .unwrap();
    sqlx::query("UPDATE items SET deleted_at = now() WHERE id = $1")
        .bind(deleted)
        .execute(&b.db)
        .await
        .unwrap();
    let id = b
        .subscription(NewSub {
            user: UserId(owner.id),
            items: vec![(item, 2)],
            period_days: 30,
            paid_at: kst(2027, 1, 1, 10, 0),
        })
        .await;
    let path = format!("/api/subscriptions/{}", id.0);
    let mut initial: Value = app.get_json(&path, &tokens.access).await;
    initial.as_object_mut().unwrap().remove("updated_at");
    let events_before = super::events(&b, id).await.len();

    let receiver = |f: &str, v: &str| {
        let mut r = json!({"name": "김철수", "phone": "010-9876-5432", "city": "Busan",
                           "detail_address": "22 Haeundae-ro"});
        r[f] = json!(v);
        json!({ "receiver": r })
    };
    let validation = [
        (receiver("name", "김\n철수"), vec!["receiver.name"]),
        (receiver("city", "Busan\t"), vec!["receiver.city"]),
        (receiver("phone", "02-123-4567"), vec!["receiver.phone"]),
        (receiver("phone", "010-1234-567"), vec!["receiver.phone"]),
        (receiver("name", " "), vec!["receiver.name"]),
        (
            json!({"receiver": {"name": "김철수"}}),
            vec!["receiver.phone", "receiver.city", "receiver.detail_address"],
        ),
        (
            json!({"add": [{"item_id": 999_999_999, "quantity": 1}]}),
            vec!["add[0].item_id"],
        ),
        (
            json!({"add": [{"item_id": item, "quantity": 1}]}),
            vec!["add[0].item_id"],
        ),
        (
            json!({"add": [{"item_id": other_item, "quantity": 1},
                           {"item_id": other_item, "quantity": 2}]}),
            vec!["add[1].item_id"],
        ),
        (
            json!({"items": [{"item_id": item, "quantity": 3}], "remove": [item]}),
            vec!["remove[0]"],
        ),
        (json!({"remove": [other_item]}), vec!["remove[0]"]),
        (
            json!({"items": [{"item_id": other_item, "quantity": 3}]}),
            vec!["items[0].item_id"],
        ),
        (
            json!({"add": [{"item_id": other_item, "quantity": 0}]}),
            vec!["add[0].quantity"],
        ),
        (
            json!({"add": [{"item_id": other_item, "quantity": 100}]}),
            vec!["add[0].quantity"],
        ),
        (
            json!({"items": [{"item_id": item, "quantity": 100}]}),
            vec!["items[0].quantity"],
        ),
        (json!({"quantity": 0}), vec!["quantity"]),
        (json!({"quantity": 100}), vec!["quantity"]),
        // A good part does not carry a bad one through.
        (
            json!({"period_days": 14, "add": [{"item_id": other_item, "quantity": 1}],
                   "receiver": {"name": "김철수", "phone": "010-9876-5432", "city": "Busan",
                                "detail_address": "   "}}),
            vec!["receiver.detail_address"],
        ),
    ];
    for (body, fields) in validation {
        let err = expect_error(
            patch(&app, &tokens, id, body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(error_fields(&err), fields, "{body}");
    }
    for (body, code) in [
        (
            json!({"add": [{"item_id": off_sale, "quantity": 1}]}),
            "item_unavailable",
        ),
        (
            json!({"add": [{"item_id": deleted, "quantity": 1}]}),
            "item_unavailable",
        ),
        (json!({"remove": [item]}), "last_product"),
        // A NUL byte is refused before any query, with the rest of the patch.
        (
            json!({"period_days": 14, "receiver": {"name": "김철수", "phone": "010-9876-5432",
                   "city": "Busan", "detail_address": "a\u{0}b"}}),
            "invalid_characters",
        ),
        (
            json!({"receiver": {"name": "김철수", "phone": "010-9876-5432", "city": "Busan",
                                "detail_address": "22\u{1b}[2J"}}),
            "invalid_characters",
        ),
        (
            json!({"remove": [item], "receiver": {"name": "김철수", "phone": "010-9876-5432",
                   "city": "Busan", "detail_address": "22 Haeundae-ro"}}),
            "last_product",
        ),
    ] {
        expect_error(
            patch(&app, &tokens, id, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
        )
        .await;
    }
    let mut now: Value = app.get_json(&path, &tokens.access).await;
    now.as_object_mut().unwrap().remove("updated_at");
    assert_eq!(now, initial);
    assert_eq!(super::events(&b, id).await.len(), events_before);

    // Replacing the last product in one patch keeps one: allowed.
    let resp = patch(
        &app,
        &tokens,
        id,
        json!({"remove": [item], "add": [{"item_id": other_item, "quantity": 4}]}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let swapped: Value = resp.json().await.unwrap();
    assert_eq!(swapped["lines"].as_array().unwrap().len(), 1);
    assert_eq!(swapped["lines"][0]["item_id"], other_item);
    assert_eq!(swapped["next_amount"], 20_000);

    // While a charge is at KakaoPay, products and receiver still change (the attempt
    // keeps its lines); the period, which would move the pending charge, waits.
    sqlx::query(
        "INSERT INTO charge_attempts (subscription_id, cycle, attempt, partner_order_id, amount,
                                      lines, started_at)
         VALUES ($1, 2, 1, 'pv-test-inflight', 20000, '[]', now())",
    )
    .bind(id.0)
    .execute(&b.db)
    .await
    .unwrap();
    let resp = patch(&app, &tokens, id, receiver("city", "Daegu")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = patch(&app, &tokens, id, json!({"quantity": 5})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    expect_error(
        patch(&app, &tokens, id, json!({"period_days": 14})).await,
        StatusCode::CONFLICT,
        "charge_in_progress",
    )
    .await;
    sqlx::query("DELETE FROM charge_attempts WHERE subscription_id = $1")
        .bind(id.0)
        .execute(&b.db)
        .await
        .unwrap();

    // Someone else's subscription does not exist for them; a canceled one takes no edit.
    let probes = |city: &str| {
        vec![
            receiver("city", city),
            json!({"add": [{"item_id": item, "quantity": 1}]}),
            json!({"remove": [other_item]}),
        ]
    };
    let other = app.signup().await;
    let other = app.login(&other).await;
    refused_all(
        &app,
        &other,
        id,
        probes("Incheon"),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let resp = app
        .request(Method::DELETE, &path)
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let conflict = StatusCode::CONFLICT;
    refused_all(
        &app,
        &tokens,
        id,
        probes("Incheon"),
        conflict,
        "subscription_canceled",
    )
    .await;
    let last: Value = app.get_json(&path, &tokens.access).await;
    assert_eq!(last["receiver"]["city"], "Daegu");
    assert_eq!(last["lines"][0]["quantity"], 5);
}
