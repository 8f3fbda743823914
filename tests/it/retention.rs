//! Retention (`maintenance.prune`): what is only history goes once past `retention.*` —
//! delivered outbox events with their deliveries and attempts, old failed jobs, old view
//! counts and probe runs — and nothing anyone still waits on, nor any money record.

use sqlx::PgPool;

use crate::helpers::{fixtures, spawn_app_with, TestApp};

/// An outbox event `age_days` old with one delivery in `state` (and one attempt), or no
/// delivery; queued for dispatch when `pending`. Its id.
async fn event(
    db: &PgPool,
    endpoint: i64,
    age_days: i32,
    delivery: Option<&str>,
    pending: bool,
) -> i64 {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, aggregate_version,
                                    data, created_at)
         VALUES ('order.paid', 'order', (random() * 1e9)::bigint, 1, '{}',
                 now() - make_interval(days => $1))
         RETURNING id",
    )
    .bind(age_days)
    .fetch_one(db)
    .await
    .unwrap();
    if let Some(state) = delivery {
        let delivery: i64 = sqlx::query_scalar(
            "INSERT INTO webhook_deliveries (event_id, endpoint_id, state, attempts, delivered_at,
                                             dead_at)
             VALUES ($1, $2, $3, 1, CASE WHEN $3 = 'delivered' THEN now() END,
                     CASE WHEN $3 = 'dead' THEN now() END)
             RETURNING id",
        )
        .bind(id)
        .bind(endpoint)
        .bind(state)
        .fetch_one(db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, round, attempt, started_at, duration_ms,
                                           status_code)
             VALUES ($1, 1, 1, now(), 12, 200)",
        )
        .bind(delivery)
        .execute(db)
        .await
        .unwrap();
    }
    if pending {
        sqlx::query("INSERT INTO outbox_pending (event_id) VALUES ($1)")
            .bind(id)
            .execute(db)
            .await
            .unwrap();
    }
    id
}

async fn exists(db: &PgPool, sql: &str, id: i64) -> bool {
    sqlx::query_scalar::<_, bool>(sql)
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

/// An API whose retention prunes 2 batches of 10 per table and run, its context, and a
/// webhook endpoint for the events' deliveries.
async fn pruning_app() -> (TestApp, billing::Ctx, i64) {
    let app = spawn_app_with(|s| {
        s.retention.batch_size = 10;
        s.retention.max_batches = 2;
    })
    .await;
    let ctx = app.ctx();
    let endpoint: i64 = sqlx::query_scalar(
        "INSERT INTO webhook_endpoints (url, event_types, secret)
         VALUES ('https://partner.example/hook', '{*}', 'whsec') RETURNING id",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    (app, ctx, endpoint)
}

async fn count(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

#[tokio::test]
async fn retention_prunes_history_past_its_days_and_keeps_what_is_awaited_and_money() {
    let (app, ctx, endpoint) = pruning_app().await;
    let db = &app.db;

    let old_delivered = event(db, endpoint, 40, Some("delivered"), false).await;
    let old_no_endpoint = event(db, endpoint, 40, None, false).await;
    let old_dead = event(db, endpoint, 40, Some("dead"), false).await;
    let old_pending_delivery = event(db, endpoint, 40, Some("pending"), false).await;
    let old_undispatched = event(db, endpoint, 40, None, true).await;
    let recent_delivered = event(db, endpoint, 2, Some("delivered"), false).await;

    let old_failed: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO fang_tasks (metadata, state, error_message, retries, updated_at)
         VALUES ('{\"type\": \"diag.probe\", \"key\": \"old\"}', 'failed', 'boom', 5,
                 now() - interval '100 days') RETURNING id",
    )
    .fetch_one(db)
    .await
    .unwrap();
    let recent_failed = fixtures::failed_job(db).await;
    let item = fixtures::item(db, "루테인 골드", 20_000, 10).await;
    sqlx::query(
        "INSERT INTO item_view_days (item_id, day, counted)
         VALUES ($1, current_date - 40, 7), ($1, current_date - 1, 3)",
    )
    .bind(item)
    .execute(db)
    .await
    .unwrap();
    // 25 old probe runs: more than two batches of ten.
    sqlx::query(
        "INSERT INTO job_probe_runs (probe_key, worker, ran_at)
         SELECT 'k' || g, 'w', now() - interval '8 days' FROM generate_series(1, 25) g
         UNION ALL SELECT 'fresh', 'w', now()",
    )
    .execute(db)
    .await
    .unwrap();
    let user = fixtures::user(db).await;
    let order = fixtures::paid_order(db, user, item, 1).await;
    sqlx::query("UPDATE orders SET created_at = now() - interval '2 years' WHERE id = $1")
        .bind(order)
        .execute(db)
        .await
        .unwrap();

    let money = "SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM order_items)
                      + (SELECT count(*) FROM payments) + (SELECT count(*) FROM charge_attempts)";
    let money_before = count(db, money).await;

    let first = billing::retention::prune(&ctx).await.unwrap();
    assert_eq!(first.outbox_events, 2, "{first:?}");
    assert_eq!(first.webhook_deliveries, 1, "{first:?}");
    assert_eq!(first.failed_jobs, 1);
    assert_eq!(first.item_view_days, 1);
    assert_eq!(first.job_probe_runs, 20, "two batches of ten per run");

    let event_exists = "SELECT EXISTS (SELECT 1 FROM outbox_events WHERE id = $1)";
    for (id, kept) in [
        (old_delivered, false),
        (old_no_endpoint, false),
        (old_dead, true),
        (old_pending_delivery, true),
        (old_undispatched, true),
        (recent_delivered, true),
    ] {
        assert_eq!(exists(db, event_exists, id).await, kept, "event {id}");
    }
    // The pruned delivery's attempts went with it; the others' stayed.
    assert_eq!(count(db, "SELECT count(*) FROM webhook_attempts").await, 3);
    let failed: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM fang_tasks WHERE state = 'failed'")
            .fetch_all(db)
            .await
            .unwrap();
    assert_eq!(failed, vec![recent_failed]);
    assert!(!failed.contains(&old_failed));
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM item_view_days WHERE day = current_date - 1"
        )
        .await,
        1
    );

    // The rest of the backlog goes on the next run; then nothing is left to do.
    let second = billing::retention::prune(&ctx).await.unwrap();
    assert_eq!(second.job_probe_runs, 5);
    assert_eq!(
        count(db, "SELECT count(*) FROM job_probe_runs").await,
        1,
        "the fresh run stays"
    );
    let third = billing::retention::prune(&ctx).await.unwrap();
    assert_eq!(third, billing::retention::Pruned::default());

    // Money records are never pruned, however old.
    assert!(
        exists(
            db,
            "SELECT EXISTS (SELECT 1 FROM orders WHERE id = $1)",
            order
        )
        .await
    );
    assert_eq!(count(db, money).await, money_before);
}

#[tokio::test]
async fn retention_works_off_a_backlog_batch_by_batch_past_the_events_it_keeps() {
    let (app, ctx, endpoint) = pruning_app().await;
    let db = &app.db;
    // 31 old events in id order, every eighth one still owed to a receiver (dead): a
    // batch walks past those and the next batch starts after the last one it deleted.
    let mut kept = Vec::new();
    for i in 0..31 {
        let state = if i % 8 == 3 { "dead" } else { "delivered" };
        let id = event(db, endpoint, 45, Some(state), false).await;
        if state == "dead" {
            kept.push(id);
        }
    }
    let recent = event(db, endpoint, 1, Some("delivered"), false).await;
    kept.push(recent);

    let first = billing::retention::prune(&ctx).await.unwrap();
    assert_eq!(first.outbox_events, 20, "two batches of ten: {first:?}");
    assert_eq!(first.webhook_deliveries, 20);
    let second = billing::retention::prune(&ctx).await.unwrap();
    assert_eq!(second.outbox_events, 31 - 4 - 20, "the rest: {second:?}");
    let third = billing::retention::prune(&ctx).await.unwrap();
    assert_eq!(third.outbox_events, 0);

    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox_events ORDER BY id")
        .fetch_all(db)
        .await
        .unwrap();
    assert_eq!(left, kept, "the dead ones and the recent one stay");
    assert_eq!(
        count(db, "SELECT count(*) FROM webhook_attempts").await,
        kept.len() as i64,
        "the deleted deliveries' attempts went with them"
    );
}
