//! Operators' tools, each as an admin route and on the command line: queue stats,
//! migrations, admin accounts; and the figures the alert rules watch on `/metrics`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::jobs::enqueue_probes;
use crate::helpers::stack::Stack;
use crate::helpers::{expect_error, spawn_app, worker_cli};

#[tokio::test]
async fn queue_stats_show_each_task_types_depth_and_how_late_its_oldest_due_job_is() {
    let app = spawn_app().await;
    let (_, admin) = app.admin().await;
    // No worker runs here: 5 probes wait, the oldest due for two minutes; 2 more are due
    // tomorrow (waiting, but not late).
    enqueue_probes(&app.db, "late", 5, 0).await;
    sqlx::query(
        "UPDATE fang_tasks SET scheduled_at = now() - interval '2 minutes'
         WHERE metadata->>'key' = 'late-0'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    enqueue_probes(&app.db, "later", 2, 0).await;
    sqlx::query(
        "UPDATE fang_tasks SET scheduled_at = now() + interval '1 day'
         WHERE metadata->>'key' LIKE 'later-%'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let task_type: String = sqlx::query_scalar("SELECT task_type FROM fang_tasks LIMIT 1")
        .fetch_one(&app.db)
        .await
        .unwrap();

    let stats = app.get_json("/api/admin/jobs/stats", &admin.access).await;
    let rows = stats["items"].as_array().unwrap();
    let new = rows
        .iter()
        .find(|r| r["task_type"] == task_type.as_str() && r["state"] == "new")
        .unwrap_or_else(|| panic!("no row for {task_type}/new: {stats}"));
    assert_eq!(new["count"], 7, "{stats}");
    let lag = new["lag_seconds"].as_f64().unwrap();
    assert!((119.0..180.0).contains(&lag), "lag {lag}: {stats}");
    assert!(new["oldest_due_at"].is_string());

    let out = worker_cli(&app.database_url, &["jobs", "stats"]);
    let line = out
        .lines()
        .find(|l| l.starts_with(&task_type) && l.contains(" new "))
        .unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[2], "7", "{line}");
    assert!(cols[3].parse::<f64>().unwrap() >= 119.0, "{line}");

    app.refuses_customers("/api/admin/jobs/stats").await;
}

#[tokio::test]
async fn migrations_are_reported_and_applied_and_a_diverged_database_is_refused() {
    let app = spawn_app().await;
    let (_, admin) = app.admin().await;
    let report = app.get_json("/api/admin/migrations", &admin.access).await;
    let all = report["migrations"].as_array().unwrap();
    assert_eq!(all.len(), billing::db::MIGRATOR.iter().count(), "{report}");
    assert!(all.iter().all(|m| m["state"] == "applied"), "{report}");
    assert_eq!(report["pending"], 0);
    assert_eq!(report["consistent"], true);
    let post = |token: &str| {
        app.request(Method::POST, "/api/admin/migrations")
            .bearer_auth(token)
            .send()
    };
    let resp = post(&admin.access).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // A newer binary migrated this database: this one refuses to migrate, changing nothing.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (29991231000000, 'from the future', true, '\\x00', 1)",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let report = app.get_json("/api/admin/migrations", &admin.access).await;
    assert_eq!(report["consistent"], false);
    let last = report["migrations"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (&last["version"], &last["state"]),
        (&json!(29991231000000_i64), &json!("unknown"))
    );
    let body = expect_error(
        post(&admin.access).await.unwrap(),
        StatusCode::CONFLICT,
        "migrations_diverged",
    )
    .await;
    assert!(body.to_string().contains("from the future"), "{body}");
}

#[tokio::test]
async fn an_empty_database_shows_every_migration_pending_until_applied() {
    let url = crate::helpers::db::fresh_empty_database().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let before = billing::db::migration_status(&pool).await.unwrap();
    assert_eq!(before.pending, billing::db::MIGRATOR.iter().count());
    assert!(before.consistent);
    let after = billing::db::apply_migrations(&pool).await.unwrap();
    assert_eq!(after.pending, 0);
    assert!(after.migrations.iter().all(|m| m.state == "applied"));
}

#[tokio::test]
async fn admins_create_or_promote_admins_over_the_api() {
    let app = spawn_app().await;
    let (_, admin) = app.admin().await;
    let create = |body: Value| {
        app.post_json("/api/admin/admins", &body)
            .bearer_auth(&admin.access)
            .send()
    };

    let resp = create(
        json!({"email": "ops@example.com", "password": "Ops12345!", "phone": "010-5555-0001"}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["role"], "admin", "{created}");
    let login = app.login_raw("ops@example.com", "Ops12345!").await;
    assert_eq!(login.status(), StatusCode::OK);

    // An existing customer is promoted, keeping their password.
    let user = app.signup().await;
    let resp = create(json!({"email": user.email})).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let promoted: Value = resp.json().await.unwrap();
    assert_eq!(
        (&promoted["id"], &promoted["role"]),
        (&json!(user.id), &json!("admin"))
    );
    let tokens = app.login(&user).await;
    let resp = app
        .get("/api/admin/users")
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the promoted account is an admin now"
    );

    // A new account needs a password; bad input changes nothing.
    let before = app.user_count().await;
    let body = expect_error(
        create(json!({"email": "new@example.com"})).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(crate::helpers::error_fields(&body), vec!["password"]);
    let body = expect_error(
        create(json!({"email": "x@example.com", "password": "Ops12345!", "role": "root"}))
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(crate::helpers::error_fields(&body), vec!["role"]);
    assert_eq!(app.user_count().await, before);

    let customer = app.signup().await;
    let customer = app.login(&customer).await;
    let resp = app
        .post_json(
            "/api/admin/admins",
            &json!({"email": "y@example.com", "password": "Ops12345!"}),
        )
        .bearer_auth(&customer.access)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processes_export_what_the_alert_rules_watch() {
    let s = Stack::start(&[]).await;
    let wanted = [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "job_queue_lag_seconds",
        "subscription_charges_unknown ",
        "subscription_charges_review_required ",
        "webhook_deliveries_dead ",
        "pg_breaker_state ",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page = s.worker_metrics().await;
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|name| !page.contains(name))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker does not export {missing:?}:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let api = s.get_text("/metrics").await;
    assert!(api.contains("process_cpu_seconds_total"), "{api}");
    assert!(api.contains("http_requests_total"), "{api}");
}
