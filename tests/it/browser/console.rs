//! The operator console in headless Chromium: an admin takes a customer's call about a
//! failed renewal and works through the console (sign in, find the past-due subscription
//! by e-mail, read its timeline, retry a failed job, redeliver a dead delivery, refund an
//! order, see each action in the audit log); a read-only operator gets no action buttons
//! and a 403 if it posts anyway; a form without the CSRF token is refused. Every page is
//! checked for console errors and unlabelled controls, at 1280 px and on a phone. With
//! `PV_SCREENSHOTS=1` the main pages are written to `docs/console/` (README, CONSOLE.md).

use billing::ids::{SubscriptionId, UserId};
use serde_json::json;
use sqlx::PgPool;

use super::Browser;
use crate::console::{orders, with_role};
use crate::helpers::sim::{kst, Billing, NewSub};
use crate::helpers::{fixtures, TestApp, TestUser};

/// A monthly subscription whose cycle-2 renewal KakaoPay declined twice (−782): past due,
/// with the event's delivery to a webhook endpoint dead.
async fn past_due_subscription(b: &mut Billing, owner: &TestUser, item: i64) -> SubscriptionId {
    let id = b
        .subscription(NewSub {
            user: UserId(owner.id),
            items: vec![(item, 2)],
            period_days: 30,
            paid_at: kst(2027, 1, 1, 10, 0),
        })
        .await;
    let sid = b.sid_of(id).await;
    b.set_sid_decline(&sid, json!({"error_code": -782})).await;
    b.start_worker();
    b.run_until(kst(2027, 1, 31, 3, 0)).await;
    b.stop_worker().await;
    id
}

/// A dead delivery of the subscription's `subscription.past_due` event: its id.
async fn dead_delivery(db: &PgPool, id: SubscriptionId) -> i64 {
    let endpoint: i64 = sqlx::query_scalar(
        "INSERT INTO webhook_endpoints (url, event_types, secret)
         VALUES ('https://fulfilment.example/hooks', '{*}', 'whsec_browser') RETURNING id",
    )
    .fetch_one(db)
    .await
    .unwrap();
    sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, state, attempts, last_status_code,
                                         dead_at)
         SELECT id, $2, 'dead', 8, 503, now() FROM outbox_events
         WHERE aggregate_type = 'subscription' AND aggregate_id = $1
           AND event_type = 'subscription.past_due'
         RETURNING id",
    )
    .bind(id.0)
    .bind(endpoint)
    .fetch_one(db)
    .await
    .unwrap()
}

/// The customer's one-time order, paid (as the approve job leaves it): its id.
async fn paid_order(app: &TestApp, owner: &TestUser, item: i64) -> i64 {
    let order = orders::place(app, owner, item).await;
    orders::mark_paid(&app.db, order).await;
    order
}

/// The page is sound: nothing logged as an error, every control labelled, and nothing
/// wider than the viewport but what scrolls inside its own box.
async fn assert_sound(browser: &Browser, page: &str) {
    assert_eq!(
        browser.console_errors().await,
        Vec::<String>::new(),
        "{page}"
    );
    assert_eq!(
        browser.unlabelled_controls().await,
        Vec::<String>::new(),
        "{page}"
    );
    // Anything reaching past the right edge, but inside a box that scrolls on its own
    // (wide tables).
    let sticking_out = browser
        .eval(
            "const w = document.documentElement.clientWidth;
             return [...document.querySelectorAll('body *')]
               .filter(e => !e.closest('.scroll, .sr-only, .skip')
                            && e.getBoundingClientRect().right > w + 1)
               .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
                         + ' ' + (e.textContent || '').trim().slice(0, 40));",
        )
        .await;
    assert_eq!(sticking_out, json!([]), "{page} is wider than the screen");
}

async fn sign_in(browser: &Browser, app: &TestApp, user: &TestUser) {
    browser.goto(&app.url("/admin")).await;
    assert!(browser.current_path().await.starts_with("/admin/sign-in"));
    assert_sound(browser, "sign-in").await;
    browser.fill("E-mail", &user.email).await;
    browser.fill("Password", &user.password).await;
    browser.click_button("Sign in").await;
    assert_eq!(browser.current_path().await, "/admin");
}

/// `fetch` from the page: a form post with these fields; the answer's status.
async fn post_from_page(browser: &Browser, path: &str, fields: serde_json::Value) -> i64 {
    let script = format!(
        "return fetch({path:?}, {{method: 'POST', body: new URLSearchParams({fields}),
                                 credentials: 'same-origin', redirect: 'manual'}})
                .then(r => r.status);"
    );
    browser.eval(&script).await.as_i64().unwrap()
}

#[tokio::test]
async fn browser_console_an_admin_works_a_failed_renewal_through_every_page() {
    let mut b = Billing::start(|s| s.console.overview_refresh_secs = 1).await;
    let app = b.api().await;
    let owner = app.signup().await;
    let item = b.item(18_900).await;
    let sub = past_due_subscription(&mut b, &owner, item).await;
    let delivery = dead_delivery(&b.db, sub).await;
    let job = fixtures::failed_job(&b.db).await;
    let order = paid_order(&app, &owner, item).await;
    let admin = with_role(&app, "admin").await;

    let browser = Browser::open().await;
    sign_in(&browser, &app, &admin).await;
    assert_eq!(browser.text_of("#past-due").await, "1");
    assert_sound(&browser, "overview").await;
    browser.screenshot("overview").await;

    // The overview refreshes itself: another subscription falls past due, and the figure
    // changes on the page that was never reloaded.
    browser
        .eval("window.notReloaded = true; return null;")
        .await;
    let other = b
        .subscription(NewSub {
            user: UserId(owner.id),
            items: vec![(item, 1)],
            period_days: 30,
            paid_at: kst(2027, 1, 2, 10, 0),
        })
        .await;
    sqlx::query("UPDATE subscriptions SET status = 'past_due' WHERE id = $1")
        .bind(other.0)
        .execute(&b.db)
        .await
        .unwrap();
    let mut shown = String::new();
    for _ in 0..50 {
        shown = browser.text_of("#past-due").await;
        if shown == "2" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(shown, "2", "the overview did not refresh itself");
    assert_eq!(
        browser.eval("return window.notReloaded === true;").await,
        true
    );
    sqlx::query("UPDATE subscriptions SET status = 'active' WHERE id = $1")
        .bind(other.0)
        .execute(&b.db)
        .await
        .unwrap();

    // The customer calls: find their subscription by e-mail and read its story.
    browser.click("nav a[href='/admin/subscriptions']").await;
    browser
        .fill("Id, customer e-mail or phone", &owner.email)
        .await;
    browser.click_button("Search").await;
    assert_sound(&browser, "subscription search").await;
    browser.screenshot("subscriptions").await;
    browser
        .click(&format!("a[href='/admin/subscriptions/{}']", sub.0))
        .await;
    assert_eq!(browser.text_of("#sub-status").await, "past_due");
    let timeline = browser.text_of("#timeline").await;
    assert_eq!(timeline.matches("PG -782").count(), 2, "{timeline}");
    assert!(timeline.contains("Charge cycle 2 attempt 2"), "{timeline}");
    assert!(timeline.contains("subscription.past_due"), "{timeline}");
    assert_sound(&browser, "subscription").await;
    browser.screenshot("subscription").await;

    // A failed job, retried.
    browser.goto(&app.url("/admin/jobs?state=failed")).await;
    assert_sound(&browser, "jobs").await;
    browser.screenshot("jobs").await;
    browser.click(&format!("a[href='/admin/jobs/{job}']")).await;
    browser.click_button("Retry now").await;
    assert!(browser
        .text_of(".notice")
        .await
        .contains("queued to run again"));
    let state: String = sqlx::query_scalar("SELECT state::text FROM fang_tasks WHERE id = $1")
        .bind(job)
        .fetch_one(&b.db)
        .await
        .unwrap();
    assert_ne!(state, "failed");

    // The dead delivery, redelivered.
    browser.goto(&app.url("/admin/deliveries?state=dead")).await;
    assert_sound(&browser, "deliveries").await;
    browser
        .click(&format!("a[href='/admin/deliveries/{delivery}']"))
        .await;
    assert_sound(&browser, "delivery").await;
    browser.click_button("Redeliver now").await;
    assert!(browser.text_of(".notice").await.contains("queued again"));
    let state: String =
        sqlx::query_scalar("SELECT state::text FROM webhook_deliveries WHERE id = $1")
            .bind(delivery)
            .fetch_one(&b.db)
            .await
            .unwrap();
    assert_ne!(state, "dead");

    // The order, refunded (the button sits behind a disclosure).
    browser
        .goto(&app.url(&format!("/admin/orders/{order}")))
        .await;
    assert_sound(&browser, "order").await;
    browser.screenshot("order").await;
    browser.click("details.confirm > summary").await;
    browser
        .click_button(&format!("Refund order #{order}"))
        .await;
    assert!(browser
        .text_of(".notice")
        .await
        .contains("refund was requested"));
    let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
        .bind(order)
        .fetch_one(&b.db)
        .await
        .unwrap();
    assert_eq!(status, "refund_requested");

    // Each action is in the audit log, with who did it.
    browser.click("nav a[href='/admin/audit']").await;
    let log = browser.text_of("table").await;
    for action in [
        "job_retried",
        "delivery_redelivered",
        "order_refund_requested",
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(action))
            .unwrap_or_else(|| panic!("{action} not in the audit log: {log}"));
        assert!(line.contains(&admin.email), "{line}");
        assert!(line.contains("console"), "{line}");
    }
    assert_sound(&browser, "audit").await;
    browser.screenshot("audit").await;

    // A state-changing request without the session's CSRF token is refused, and changes
    // nothing.
    let status = post_from_page(
        &browser,
        &format!("/admin/subscriptions/{}/cancel", sub.0),
        json!({}),
    )
    .await;
    assert_eq!(status, 403);
    // The browser logs the refusal as a failed load; that one is expected.
    let logged = browser.console_errors().await;
    assert!(logged.len() == 1 && logged[0].contains("403"), "{logged:?}");
    let status: String = sqlx::query_scalar("SELECT status FROM subscriptions WHERE id = $1")
        .bind(sub.0)
        .fetch_one(&b.db)
        .await
        .unwrap();
    assert_eq!(status, "past_due");

    // Every page, at 1280 px and then on a phone: no console error, every control
    // labelled, nothing wider than the screen.
    let pages = [
        "/admin".to_owned(),
        "/admin/subscriptions?status=past_due".to_owned(),
        format!("/admin/subscriptions/{}?outcomes=declined,approved", sub.0),
        "/admin/orders".to_owned(),
        format!("/admin/orders/{order}"),
        "/admin/jobs".to_owned(),
        format!("/admin/jobs/{job}"),
        "/admin/webhooks".to_owned(),
        "/admin/deliveries".to_owned(),
        format!("/admin/deliveries/{delivery}"),
        "/admin/users".to_owned(),
        "/admin/audit".to_owned(),
    ];
    for phone in [false, true] {
        if phone {
            browser.emulate_phone().await;
        }
        for path in &pages {
            browser.goto(&app.url(path)).await;
            assert_sound(&browser, &format!("{path} (phone: {phone})")).await;
        }
    }
    browser
        .goto(&app.url(&format!("/admin/subscriptions/{}", sub.0)))
        .await;
    browser.screenshot("subscription-phone").await;
}

#[tokio::test]
async fn browser_console_a_read_only_operator_sees_no_action_and_is_refused_when_posting() {
    let mut b = Billing::start(|_| {}).await;
    let app = b.api().await;
    let owner = app.signup().await;
    let item = b.item(12_000).await;
    let sub = past_due_subscription(&mut b, &owner, item).await;
    let job = fixtures::failed_job(&b.db).await;
    let operator = with_role(&app, "operator").await;

    let browser = Browser::open().await;
    sign_in(&browser, &app, &operator).await;
    assert!(browser.text_of(".readonly").await.contains("Read-only"));

    browser
        .goto(&app.url(&format!("/admin/subscriptions/{}", sub.0)))
        .await;
    assert_sound(&browser, "subscription (operator)").await;
    // It reads the whole story, and the page offers nothing to press but searches and
    // the what-if preview (which changes nothing) and signing out.
    assert!(browser.text_of("#timeline").await.contains("-782"));
    let buttons = browser
        .eval(
            "return [...document.querySelectorAll('main button')].map(b => b.textContent.trim());",
        )
        .await;
    assert_eq!(buttons, json!(["Preview"]), "operator's buttons");
    browser.goto(&app.url(&format!("/admin/jobs/{job}"))).await;
    let buttons = browser
        .eval("return document.querySelectorAll('main form[method=post]').length;")
        .await;
    assert_eq!(buttons, json!(0));

    // Posting anyway, with its own valid CSRF token: 403, and the job stays failed.
    let csrf = browser
        .eval("return document.querySelector('input[name=csrf]').value;")
        .await;
    let status = post_from_page(
        &browser,
        &format!("/admin/jobs/{job}/retry"),
        json!({ "csrf": csrf }),
    )
    .await;
    assert_eq!(status, 403);
    let state: String = sqlx::query_scalar("SELECT state::text FROM fang_tasks WHERE id = $1")
        .bind(job)
        .fetch_one(&b.db)
        .await
        .unwrap();
    assert_eq!(state, "failed");
}
