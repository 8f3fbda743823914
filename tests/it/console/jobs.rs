//! The console's jobs pages: the list by state, pool and task with errors; a job with its
//! arguments; retry one, retry every failed job of a pool, cancel a waiting one — each
//! audited — and never a cancel that would strand a payment or a charge.

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{
    assert_done, assert_error_page, assert_form_guarded, audit_rows, console_admin,
    console_audit_row, console_sign_in, with_role,
};
use crate::helpers::{spawn_app, TestApp};

/// A job row as the runtime leaves it.
#[derive(Clone, Copy)]
struct Job<'a> {
    name: &'a str,
    pool: &'a str,
    state: &'a str,
    error: Option<&'a str>,
    uniq_hash: Option<&'a str>,
}

const PROBE: Job = Job {
    name: "diag.probe",
    pool: "common",
    state: "new",
    error: None,
    uniq_hash: None,
};

/// A failed probe (pool `common`).
const FAILED: Job = Job {
    state: "failed",
    error: Some("boom"),
    ..PROBE
};

/// Inserts `job` with `metadata` = `{"type": name, …fields}`.
async fn job(app: &TestApp, job: Job<'_>, fields: Value) -> Uuid {
    let mut metadata = json!({ "type": job.name });
    metadata
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    sqlx::query_scalar(
        "INSERT INTO fang_tasks (metadata, task_type, state, error_message, uniq_hash, retries,
                                 max_retries)
         VALUES ($1, $2, $3::fang_task_state, $4, $5,
                 CASE WHEN $3 = 'failed' THEN 5 ELSE 0 END, 5)
         RETURNING id",
    )
    .bind(metadata)
    .bind(job.pool)
    .bind(job.state)
    .bind(job.error)
    .bind(job.uniq_hash)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

async fn state_of(app: &TestApp, id: Uuid) -> Option<(String, i32)> {
    sqlx::query_as("SELECT state::text, retries FROM fang_tasks WHERE id = $1")
        .bind(id)
        .fetch_optional(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn console_jobs_list_filters_by_state_pool_and_task_and_a_job_shows_its_arguments() {
    let app = spawn_app().await;
    let probe = job(
        &app,
        Job {
            state: "failed",
            error: Some("probe said boom"),
            ..PROBE
        },
        json!({"key": "k1"}),
    )
    .await;
    let delivery = job(
        &app,
        Job {
            name: "webhooks.deliver",
            pool: "webhook",
            state: "failed",
            error: Some(&format!("receiver down {}", "x".repeat(300))),
            ..PROBE
        },
        json!({"delivery_id": 41, "round": 1, "attempt": 8}),
    )
    .await;
    let charge = job(
        &app,
        Job {
            name: "subscription.charge",
            pool: "pg",
            ..PROBE
        },
        json!({"subscription_id": 7, "cycle": 2, "seq": 0}),
    )
    .await;
    let (_, console) = console_admin(&app).await;

    let all = console.page("/admin/jobs").await;
    for id in [probe, delivery, charge] {
        assert!(all.contains(&format!("/admin/jobs/{id}")), "{all}");
    }
    let failed = console.page("/admin/jobs?state=failed").await;
    assert!(failed.contains(&format!("/admin/jobs/{probe}")));
    assert!(failed.contains(&format!("/admin/jobs/{delivery}")));
    assert!(!failed.contains(&format!("/admin/jobs/{charge}")));
    assert!(failed.contains("probe said boom"), "the error excerpt");
    assert!(
        !failed.contains(&"x".repeat(200)),
        "a long error is cut in the list"
    );
    // A search form sends its empty fields: they mean "any".
    let webhook = console
        .page("/admin/jobs?state=failed&task_type=webhook&name=")
        .await;
    assert!(webhook.contains(&format!("/admin/jobs/{delivery}")));
    assert!(!webhook.contains(&format!("/admin/jobs/{probe}")));
    assert!(webhook.contains("<option value=\"webhook\" selected>"));
    let by_name = console.page("/admin/jobs?name=diag.probe").await;
    assert!(by_name.contains(&format!("/admin/jobs/{probe}")));
    assert!(!by_name.contains(&format!("/admin/jobs/{delivery}")));
    let resp = console.get("/admin/jobs?state=bogus").await;
    assert_error_page(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let page = console.page(&format!("/admin/jobs/{delivery}")).await;
    assert!(page.contains("webhooks.deliver") && page.contains("failed"));
    assert!(
        page.contains("&#34;delivery_id&#34;: 41"),
        "pretty arguments: {page}"
    );
    assert!(page.contains("href=\"/admin/deliveries/41\""), "{page}");
    assert!(page.contains(&"x".repeat(300)), "the whole last error");
    assert!(page.contains("id=\"retry-job\""));
    let page = console.page(&format!("/admin/jobs/{charge}")).await;
    assert!(page.contains("href=\"/admin/subscriptions/7\""));
    assert!(
        page.contains("id=\"not-cancelable\"") && !page.contains("id=\"cancel-job\""),
        "a charge offers no cancel: {page}"
    );
    let resp = console
        .get(&format!("/admin/jobs/{}", Uuid::new_v4()))
        .await;
    assert_error_page(resp, StatusCode::NOT_FOUND, "not_found").await;
    let resp = console.get("/admin/jobs/not-a-uuid").await;
    assert_error_page(resp, StatusCode::NOT_FOUND, "not_found").await;

    // The JSON route takes the same filters.
    let (_, tokens) = app.admin().await;
    let page = app
        .get_json(
            "/api/admin/jobs?state=failed&task_type=webhook",
            &tokens.access,
        )
        .await;
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["items"][0]["id"], delivery.to_string());
    let page = app
        .get_json("/api/admin/jobs?name=subscription.charge", &tokens.access)
        .await;
    assert_eq!(page["total"], 1, "{page}");
}

#[tokio::test]
async fn console_retries_a_failed_job_and_every_failed_job_of_a_pool_with_audit_rows() {
    let app = spawn_app().await;
    let (admin, console) = console_admin(&app).await;

    let one = job(&app, FAILED, json!({"key": "one"})).await;
    let resp = console.post(&format!("/admin/jobs/{one}/retry"), &[]).await;
    assert_done(&resp, "job_retried");
    assert_eq!(state_of(&app, one).await, Some(("new".into(), 0)));
    let row = console_audit_row(&app, "job_retried", &admin).await;
    assert_eq!(
        (row.target_type.as_str(), row.target_id),
        ("job", Some(one.to_string()))
    );
    // Not failed any more: a second retry is refused and leaves no row.
    let resp = console.post(&format!("/admin/jobs/{one}/retry"), &[]).await;
    assert_error_page(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(audit_rows(&app, "job_retried").await.len(), 1);

    // Pool `common`: two failed probes, and a failed unique one whose payload is queued
    // again already (it stays failed: the queued one does its work). Pool `webhook` waits.
    let a = job(&app, FAILED, json!({"key": "a"})).await;
    let b = job(&app, FAILED, json!({"key": "b"})).await;
    let dup = job(
        &app,
        Job {
            uniq_hash: Some("h-u"),
            ..FAILED
        },
        json!({"key": "u"}),
    )
    .await;
    let live = job(
        &app,
        Job {
            uniq_hash: Some("h-u"),
            ..PROBE
        },
        json!({"key": "u"}),
    )
    .await;
    let other = job(
        &app,
        Job {
            name: "webhooks.deliver",
            pool: "webhook",
            ..FAILED
        },
        json!({"delivery_id": 1, "round": 1, "attempt": 8}),
    )
    .await;

    let page = console
        .page("/admin/jobs?state=failed&task_type=common")
        .await;
    assert!(page.contains("id=\"retry-all\""), "{page}");
    assert!(!console
        .page("/admin/jobs?state=failed")
        .await
        .contains("id=\"retry-all\""));
    let resp = console
        .post("/admin/jobs/retry-failed", &[("task_type", "common")])
        .await;
    assert_done(&resp, "jobs_retried_some_skipped");
    for id in [a, b] {
        assert_eq!(state_of(&app, id).await, Some(("new".into(), 0)));
    }
    assert_eq!(state_of(&app, dup).await.unwrap().0, "failed");
    assert_eq!(state_of(&app, live).await.unwrap().0, "new");
    assert_eq!(
        state_of(&app, other).await.unwrap().0,
        "failed",
        "another pool"
    );
    let row = console_audit_row(&app, "failed_jobs_retried", &admin).await;
    assert_eq!(row.target_type, "job");
    assert_eq!(row.target_id, None);
    assert_eq!(
        row.details,
        json!({"task_type": "common", "count": 2, "skipped": 1})
    );

    // Nothing left to retry: said so, and nothing is logged.
    let resp = console
        .post("/admin/jobs/retry-failed", &[("task_type", "nothing-here")])
        .await;
    assert_done(&resp, "no_failed_jobs");
    assert_eq!(audit_rows(&app, "failed_jobs_retried").await.len(), 1);
    let html = console
        .page("/admin/jobs?state=failed&task_type=nothing-here&done=no_failed_jobs")
        .await;
    assert!(html.contains("No failed job of that type"), "{html}");
}

#[tokio::test]
async fn console_cancels_a_waiting_probe_but_never_a_payment_step_or_a_charge() {
    let app = spawn_app().await;
    let (admin, console) = console_admin(&app).await;

    let probe = job(
        &app,
        Job {
            state: "retried",
            error: Some("first run failed"),
            ..PROBE
        },
        json!({"key": "p"}),
    )
    .await;
    let page = console.page(&format!("/admin/jobs/{probe}")).await;
    assert!(page.contains("id=\"cancel-job\""), "{page}");
    let resp = console
        .post(&format!("/admin/jobs/{probe}/cancel"), &[])
        .await;
    assert_done(&resp, "job_canceled");
    assert_eq!(state_of(&app, probe).await, None, "removed");
    let row = console_audit_row(&app, "job_canceled", &admin).await;
    assert_eq!(row.target_id, Some(probe.to_string()));
    assert_eq!(row.details["task"], "diag.probe");
    assert_eq!(
        row.details["metadata"],
        json!({"type": "diag.probe", "key": "p"})
    );

    // The money path: a waiting charge, approval or refund is never canceled.
    for (name, pool, fields) in [
        (
            "subscription.charge",
            "pg",
            json!({"subscription_id": 7, "cycle": 2, "seq": 0}),
        ),
        (
            "payment.approve",
            "pg",
            json!({"payment_id": 3, "round": 0}),
        ),
        ("payment.cancel", "pg", json!({"payment_id": 3, "round": 0})),
        (
            "webhooks.deliver",
            "webhook",
            json!({"delivery_id": 1, "round": 1, "attempt": 1}),
        ),
        ("items.fold_sales", "common", json!({})),
        ("payment.someday", "pg", json!({"payment_id": 3})),
    ] {
        let id = job(
            &app,
            Job {
                name,
                pool,
                ..PROBE
            },
            fields,
        )
        .await;
        let resp = console.post(&format!("/admin/jobs/{id}/cancel"), &[]).await;
        assert_error_page(resp, StatusCode::CONFLICT, "job_not_cancelable").await;
        assert_eq!(state_of(&app, id).await, Some(("new".into(), 0)), "{name}");
    }
    // Only a waiting job: a failed probe is retried or left, not canceled.
    let failed = job(&app, FAILED, json!({"key": "f"})).await;
    let resp = console
        .post(&format!("/admin/jobs/{failed}/cancel"), &[])
        .await;
    assert_error_page(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(state_of(&app, failed).await.unwrap().0, "failed");
    assert_eq!(audit_rows(&app, "job_canceled").await.len(), 1);
}

#[tokio::test]
async fn console_job_actions_are_admins_only_and_need_the_csrf_token() {
    let app = spawn_app().await;
    let (_, admin) = console_admin(&app).await;
    let operator_user = with_role(&app, "operator").await;
    let operator = console_sign_in(&app, &operator_user).await;
    let failed = job(&app, FAILED, json!({"key": "f"})).await;
    let waiting = job(&app, PROBE, json!({"key": "w"})).await;

    // Operators see the jobs and no button.
    let page = operator.page(&format!("/admin/jobs/{failed}")).await;
    assert!(page.contains("probe") && !page.contains("id=\"retry-job\""));
    let page = operator.page(&format!("/admin/jobs/{waiting}")).await;
    assert!(!page.contains("id=\"cancel-job\""));
    let page = operator
        .page("/admin/jobs?state=failed&task_type=common")
        .await;
    assert!(!page.contains("id=\"retry-all\"") && !page.contains("/admin/jobs/retry-failed"));

    for (path, fields) in [
        (format!("/admin/jobs/{failed}/retry"), vec![]),
        (format!("/admin/jobs/{waiting}/cancel"), vec![]),
        (
            "/admin/jobs/retry-failed".to_owned(),
            vec![("task_type", "common")],
        ),
    ] {
        assert_form_guarded(&admin, &operator, &path, &fields).await;
    }
    assert_eq!(state_of(&app, failed).await.unwrap().0, "failed");
    assert_eq!(state_of(&app, waiting).await.unwrap().0, "new");
    let actions: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(actions, 0);
}
