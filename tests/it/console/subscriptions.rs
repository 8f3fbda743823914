//! The console's subscriptions over real HTTP: the search finds a customer's subscription
//! by e-mail, phone or id and filters by status and unknown charges; a past-due
//! subscription's page tells its failed renewal (KakaoPay's code and message on every
//! attempt, the dunning retry, the events and their deliveries) and previews what-ifs;
//! an admin acts for the customer (skip, pause, resume, period, cancel, reconcile now),
//! each change audited with it; operators see no action and are refused when they post.

use billing::ids::{SubscriptionId, UserId};
use billing::subscriptions::SubscriptionStatus;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use super::{assert_done, assert_error_page, console_admin, console_sign_in, with_role};
use crate::helpers::sim::{kst, Billing, NewSub};
use crate::helpers::TestApp;

// ---- helpers (the orders tests use them too) -----------------------------------------------

/// The ids a results table links to under `base` (`/admin/subscriptions/`), in page order.
pub fn result_ids(html: &str, base: &str) -> Vec<i64> {
    let marker = format!("<th scope=\"row\"><a href=\"{base}");
    html.match_indices(&marker)
        .filter_map(|(at, _)| {
            let rest = &html[at + marker.len()..];
            let end = rest.find('"')?;
            rest[..end].parse().ok()
        })
        .collect()
}

/// The part of a page from the element with `id` to the end of that list or table.
pub fn section<'a>(html: &'a str, id: &str, end: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let rest = &html[start..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// Text as the templates write it into HTML.
pub fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `q` as a query-string value.
pub fn encoded(q: &str) -> String {
    url::form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

/// One audit row: (actor, channel, action, target type, target id, details).
pub type AuditRow = (Option<i64>, String, String, String, Option<String>, Value);

pub async fn audit_rows(db: &PgPool) -> Vec<AuditRow> {
    sqlx::query_as(
        "SELECT actor_user_id, channel, action, target_type, target_id, details
         FROM audit_log ORDER BY id",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

/// A monthly subscription of 2 × `item` for `user`, first paid 1 January 10:00 in Seoul.
async fn subscription(b: &Billing, user: i64, item: i64) -> SubscriptionId {
    b.subscription(NewSub {
        user: UserId(user),
        items: vec![(item, 2)],
        period_days: 30,
        paid_at: kst(2027, 1, 1, 10, 0),
    })
    .await
}

/// A charge sent to KakaoPay with no answer yet (cycle 2, attempt `attempt`): its id.
async fn unknown_charge(db: &PgPool, id: SubscriptionId, attempt: i32) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO charge_attempts (subscription_id, cycle, attempt, status, partner_order_id,
                                      amount, lines, started_at)
         VALUES ($1, 2, $2, 'unknown', 'pv-test-' || $1 || '-' || $2, 20000, '[]', now())
         RETURNING id",
    )
    .bind(id.0)
    .bind(attempt)
    .fetch_one(db)
    .await
    .unwrap()
}

async fn sub_page(console: &super::ConsoleClient<'_>, id: SubscriptionId) -> String {
    console
        .page(&format!("/admin/subscriptions/{}", id.0))
        .await
}

// ---- the search ------------------------------------------------------------------------------

#[tokio::test]
async fn console_finds_subscriptions_by_email_phone_id_status_and_unknown_charge() {
    let b = Billing::start(|_| {}).await;
    let app = b.api().await;
    let (alice, bob) = (app.signup().await, app.signup().await);
    let item = b.item(10_000).await;
    let a1 = subscription(&b, alice.id, item).await;
    let a2 = subscription(&b, alice.id, item).await;
    let bob_sub = subscription(&b, bob.id, item).await;
    billing::subscriptions::pause(&b.ctx, UserId(bob.id), bob_sub)
        .await
        .unwrap();
    let (_, console) = console_admin(&app).await;
    let search = |q: String| {
        let console = &console;
        async move {
            let html = console.page(&format!("/admin/subscriptions?{q}")).await;
            result_ids(&html, "/admin/subscriptions/")
        }
    };

    // A customer's e-mail in any case: theirs, newest first.
    let by_email = search(format!("q={}", encoded(&alice.email.to_uppercase()))).await;
    assert_eq!(by_email, vec![a2.0, a1.0]);
    // A phone number with or without its dashes.
    assert_eq!(
        search(format!("q={}", encoded(&bob.phone))).await,
        vec![bob_sub.0]
    );
    assert_eq!(
        search(format!("q={}", bob.phone.replace('-', ""))).await,
        vec![bob_sub.0]
    );
    // An id.
    assert_eq!(search(format!("q={}", a1.0)).await, vec![a1.0]);
    // A status, alone or with the customer.
    assert_eq!(search("status=paused".into()).await, vec![bob_sub.0]);
    let alices_paused = search(format!("q={}&status=paused", encoded(&alice.email))).await;
    assert!(alices_paused.is_empty());
    // Subscriptions with a charge awaiting its verdict (the overview's link).
    unknown_charge(&b.db, a2, 1).await;
    let html = console.page("/admin/subscriptions?unknown=1").await;
    assert_eq!(result_ids(&html, "/admin/subscriptions/"), vec![a2.0]);
    assert!(html.contains("unknown charge"));
    assert!(html.contains("1–1 of 1"), "{html}");
    // Everything, paged.
    let html = console.page("/admin/subscriptions?size=2").await;
    assert_eq!(
        result_ids(&html, "/admin/subscriptions/"),
        vec![bob_sub.0, a2.0]
    );
    assert!(html.contains("rel=\"next\""));
    let html = console.page("/admin/subscriptions?size=2&page=2").await;
    assert_eq!(result_ids(&html, "/admin/subscriptions/"), vec![a1.0]);
    // Nobody's, and filters the console does not know.
    assert!(search("q=nobody%40example.com".into()).await.is_empty());
    assert!(search("q=not-a-thing".into()).await.is_empty());
    let bad = console.get("/admin/subscriptions?status=gone").await;
    assert_error_page(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    // A control character is refused before any page runs (the API's input guard).
    let bad = console.get("/admin/subscriptions?q=a%00b").await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text().await.unwrap().contains("invalid_characters"));
}

// ---- one subscription's story ------------------------------------------------------------------

#[tokio::test]
async fn console_subscription_page_tells_a_failed_renewal_with_the_pg_codes() {
    let mut b = Billing::start(|_| {}).await;
    let app = b.api().await;
    let owner = app.signup().await;
    let item = b.item(10_000).await;
    let id = subscription(&b, owner.id, item).await;
    let sid = b.sid_of(id).await;
    b.set_sid_decline(&sid, json!({"error_code": -782})).await;
    b.start_worker();
    // Cycle 2 is declined on 31 January, at once and on its immediate retry: past due.
    b.run_until(kst(2027, 1, 31, 3, 0)).await;
    b.stop_worker().await;
    assert_eq!(b.sub(id).await.status, SubscriptionStatus::PastDue);
    let message: String = sqlx::query_scalar(
        "SELECT failure_message FROM charge_attempts WHERE subscription_id = $1 LIMIT 1",
    )
    .bind(id.0)
    .fetch_one(&b.db)
    .await
    .unwrap();
    // A webhook endpoint gave up on the past-due event.
    let endpoint: i64 = sqlx::query_scalar(
        "INSERT INTO webhook_endpoints (url, event_types, secret)
         VALUES ('https://hooks.example/pv', '{*}', 'whsec') RETURNING id",
    )
    .fetch_one(&b.db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, state, attempts, last_status_code,
                                         dead_at)
         SELECT id, $2, 'dead', 5, 500, now() FROM outbox_events
         WHERE aggregate_type = 'subscription' AND aggregate_id = $1
           AND event_type = 'subscription.past_due'",
    )
    .bind(id.0)
    .bind(endpoint)
    .execute(&b.db)
    .await
    .unwrap();

    let (_, console) = console_admin(&app).await;
    // Found by the customer's e-mail, past due.
    let html = console
        .page(&format!("/admin/subscriptions?q={}", encoded(&owner.email)))
        .await;
    assert_eq!(result_ids(&html, "/admin/subscriptions/"), vec![id.0]);
    assert!(html.contains("status-past_due"));
    assert!(html.contains("2 declined"), "{html}");

    let html = sub_page(&console, id).await;
    assert!(html.contains(&escaped(&owner.email)));
    assert!(section(&html, "dunning", "</dd>").contains("2 declined"));
    let timeline = section(&html, "timeline", "</ol>");
    // Both declines, each with KakaoPay's code and message.
    assert_eq!(timeline.matches("status-declined").count(), 2, "{timeline}");
    assert_eq!(
        timeline
            .matches("<code class=\"pg-code\">-782</code>")
            .count(),
        2
    );
    assert!(timeline.contains(&escaped(&message)), "{timeline}");
    // In order: the first order, the declines, past due, the retry to come.
    let at = |needle: &str| {
        timeline
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} not in {timeline}"))
    };
    assert!(at("Cycle 1 order") < at("Charge cycle 2 attempt 1"));
    assert!(at("Charge cycle 2 attempt 1") < at("Charge cycle 2 attempt 2"));
    assert!(at("Charge cycle 2 attempt 2") < at("retry of cycle 2 scheduled"));
    assert!(at("<code>subscription.created</code>") < at("<code>subscription.past_due</code>"));
    assert!(timeline.contains("class=\"kind-dunning\""));
    // The event's delivery, as the endpoint left it.
    assert!(timeline.contains(&format!("endpoint #{endpoint}")));
    assert!(
        timeline.contains("status-dead\">dead</span>, 5 attempts"),
        "{timeline}"
    );

    // What if KakaoPay declines once more, then approves?
    let html = console
        .page(&format!(
            "/admin/subscriptions/{}?outcomes=declined,+approved",
            id.0
        ))
        .await;
    let preview = section(&html, "preview", "</ol>");
    assert!(
        preview.contains("attempt cycle 2 attempt 3: declined"),
        "{preview}"
    );
    assert!(
        preview.contains("attempt cycle 2 attempt 4: approved"),
        "{preview}"
    );
    assert!(preview.contains("active"), "{preview}");
    let html = console
        .page(&format!("/admin/subscriptions/{}?outcomes=maybe", id.0))
        .await;
    assert!(section(&html, "preview-error", "</p>").contains("“maybe” is not an outcome"));
}

#[tokio::test]
async fn console_reconciles_an_unknown_charge_now_and_audits_it() {
    let b = Billing::start(|_| {}).await;
    let app = b.api().await;
    let owner = app.signup().await;
    let item = b.item(10_000).await;
    let id = subscription(&b, owner.id, item).await;
    let attempt = unknown_charge(&b.db, id, 1).await;
    let (admin, console) = console_admin(&app).await;
    let html = sub_page(&console, id).await;
    let action = format!("/admin/subscriptions/{}/attempts/{attempt}/reconcile", id.0);
    assert!(section(&html, "timeline", "</ol>").contains(&action));
    assert!(html.contains("Reconcile now"));

    let resp = console.post(&action, &[]).await;
    assert_done(&resp, "reconcile_queued");
    let inquiries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM fang_tasks WHERE metadata->>'type' = 'subscription.reconcile'
           AND (metadata->>'attempt_id')::bigint = $1 AND state = 'new'",
    )
    .bind(attempt)
    .fetch_one(&b.db)
    .await
    .unwrap();
    assert_eq!(inquiries, 1);
    let audit = audit_rows(&b.db).await;
    assert_eq!(audit.len(), 1);
    let (actor, channel, action_name, kind, target, _) = &audit[0];
    assert_eq!(
        (
            *actor,
            channel.as_str(),
            action_name.as_str(),
            kind.as_str()
        ),
        (
            Some(admin.id),
            "console",
            "charge_reconcile_requested",
            "charge_attempt"
        )
    );
    assert_eq!(target.as_deref(), Some(attempt.to_string().as_str()));
    // The request is in the subscription's timeline, by whom.
    let html = console
        .page(&format!(
            "/admin/subscriptions/{}?done=reconcile_queued",
            id.0
        ))
        .await;
    assert!(html.contains("Reconciliation was queued"));
    let timeline = section(&html, "timeline", "</ol>");
    assert!(
        timeline.contains("charge_reconcile_requested"),
        "{timeline}"
    );
    assert!(timeline.contains(&escaped(&admin.email)));
}

// ---- acting for the customer -------------------------------------------------------------------

#[tokio::test]
async fn console_admins_skip_pause_resume_change_period_and_cancel_each_audited() {
    let b = Billing::start(|_| {}).await;
    let app = b.api().await;
    let owner = app.signup().await;
    let item = b.item(10_000).await;
    let id = subscription(&b, owner.id, item).await;
    let (admin, console) = console_admin(&app).await;
    let path = format!("/admin/subscriptions/{}", id.0);
    let html = console.page(&path).await;
    for button in [
        "Skip next charge",
        "Pause",
        "Change period",
        "Cancel subscription",
    ] {
        assert!(
            section(&html, "actions", "</section>").contains(button),
            "{button}"
        );
    }

    let before = b.sub(id).await;
    assert_done(&console.post(&format!("{path}/skip"), &[]).await, "skipped");
    let skipped = b.sub(id).await;
    assert!(skipped.next_charge_at > before.next_charge_at);

    assert_done(&console.post(&format!("{path}/pause"), &[]).await, "paused");
    assert_eq!(b.sub(id).await.status, SubscriptionStatus::Paused);
    // A paused subscription skips nothing: the JSON API's conflict, on a page.
    let resp = console.post(&format!("{path}/skip"), &[]).await;
    assert_error_page(resp, StatusCode::CONFLICT, "subscription_not_active").await;

    assert_done(
        &console.post(&format!("{path}/resume"), &[]).await,
        "resumed",
    );
    assert_eq!(b.sub(id).await.status, SubscriptionStatus::Active);

    let period = format!("{path}/period");
    for bad in ["5", "abc", ""] {
        let resp = console.post(&period, &[("period_days", bad)]).await;
        assert_error_page(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
    assert_done(
        &console.post(&period, &[("period_days", "60")]).await,
        "period_changed",
    );
    assert_eq!(b.sub(id).await.period_days, 60);

    assert_done(
        &console.post(&format!("{path}/cancel"), &[]).await,
        "canceled",
    );
    let canceled = b.sub(id).await;
    assert_eq!(canceled.status, SubscriptionStatus::Canceled);
    assert_eq!(canceled.cancel_reason.as_deref(), Some("customer"));
    let resp = console.post(&format!("{path}/pause"), &[]).await;
    assert_error_page(resp, StatusCode::CONFLICT, "subscription_canceled").await;
    // No action is offered on a canceled subscription.
    let html = console.page(&path).await;
    assert!(!html.contains("id=\"actions\""));

    // One audit row per action that happened (none for the refused ones), by this admin
    // through the console, on this subscription; the same rows show in its timeline.
    let audit = audit_rows(&b.db).await;
    let actions: Vec<&str> = audit.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        actions,
        [
            "subscription_skipped",
            "subscription_paused",
            "subscription_resumed",
            "subscription_period_changed",
            "subscription_canceled",
        ]
    );
    for (actor, channel, _, kind, target, _) in &audit {
        assert_eq!(*actor, Some(admin.id));
        assert_eq!(channel, "console");
        assert_eq!(kind, "subscription");
        assert_eq!(target.as_deref(), Some(id.0.to_string().as_str()));
    }
    assert_eq!(audit[3].5, json!({"from": 30, "to": 60}));
    let timeline = section(&html, "timeline", "</ol>");
    assert_eq!(timeline.matches("class=\"kind-audit\"").count(), 5);
    assert!(timeline.contains("<code>subscription.skipped</code>"));
    assert!(timeline.contains("<code>subscription.rescheduled</code>"));
}

#[tokio::test]
async fn console_operators_see_no_action_and_every_subscription_post_is_refused() {
    let b = Billing::start(|_| {}).await;
    let app: TestApp = b.api().await;
    let owner = app.signup().await;
    let item = b.item(10_000).await;
    let id = subscription(&b, owner.id, item).await;
    let attempt = unknown_charge(&b.db, id, 1).await;
    let operator = with_role(&app, "operator").await;
    let op = console_sign_in(&app, &operator).await;
    let path = format!("/admin/subscriptions/{}", id.0);

    // The whole story, no button.
    let html = op.page(&path).await;
    assert!(html.contains("id=\"timeline\""));
    for absent in [
        "id=\"actions\"",
        "Skip next charge",
        "Reconcile now",
        "period_days",
    ] {
        assert!(!html.contains(absent), "{absent} shown to an operator");
    }
    // The preview changes nothing: operators may use it.
    let html = op.page(&format!("{path}?outcomes=approved")).await;
    assert!(html.contains("id=\"preview\""));

    let mut posts: Vec<String> = ["skip", "pause", "resume", "cancel", "period"]
        .iter()
        .map(|a| format!("{path}/{a}"))
        .collect();
    posts.push(format!("{path}/attempts/{attempt}/reconcile"));
    for to in &posts {
        let resp = op.post(to, &[("period_days", "60")]).await;
        assert_error_page(resp, StatusCode::FORBIDDEN, "forbidden").await;
    }
    // An admin's form without its CSRF token is refused before anything else.
    let (_, admin) = console_admin(&app).await;
    for to in &posts {
        let resp = admin.post_raw(to, &[("period_days", "60")]).await;
        assert_error_page(resp, StatusCode::FORBIDDEN, "csrf_failed").await;
    }
    let s = b.sub(id).await;
    assert_eq!((s.status, s.period_days), (SubscriptionStatus::Active, 30));
    assert!(audit_rows(&b.db).await.is_empty());
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM fang_tasks WHERE metadata->>'type' = 'subscription.reconcile'",
    )
    .fetch_one(&b.db)
    .await
    .unwrap();
    assert_eq!(queued, 0);

    // Ids that are not subscriptions are pages that do not exist.
    for missing in ["/admin/subscriptions/abc", "/admin/subscriptions/99999999"] {
        assert_error_page(admin.get(missing).await, StatusCode::NOT_FOUND, "not_found").await;
    }
    let resp = admin.post(&format!("{path}/explode"), &[]).await;
    assert_error_page(resp, StatusCode::NOT_FOUND, "not_found").await;
    let resp = admin.post("/admin/subscriptions/99999999/skip", &[]).await;
    assert_error_page(resp, StatusCode::NOT_FOUND, "not_found").await;
}
