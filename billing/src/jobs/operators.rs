//! Operators' views and actions: list jobs, retry a failed one, bring waiting ones
//! forward ("run now").

use super::*;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: Uuid,
    /// The task's name (its pinned typetag name).
    pub name: Option<String>,
    pub task_type: String,
    /// `new`, `in_progress`, `retried`, `failed` or `finished`.
    pub state: String,
    pub retries: i32,
    pub max_retries: i32,
    pub error_message: Option<String>,
    pub metadata: serde_json::Value,
    pub scheduled_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(super) const STATES: [&str; 5] = ["new", "in_progress", "retried", "failed", "finished"];

pub async fn list(ctx: &Ctx, state: Option<&str>, page: PageRequest) -> Result<Page<JobView>> {
    let page = page.validate()?;
    if let Some(s) = state {
        if !STATES.contains(&s) {
            return Err(Error::validation(
                "state",
                "must be one of new, in_progress, retried, failed, finished",
            ));
        }
    }
    let mut conn = ctx.db.acquire().await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM fang_tasks WHERE $1::text IS NULL OR state::text = $1"#,
        state
    )
    .fetch_one(&mut *conn)
    .await?;
    let items = sqlx::query_as!(
        JobView,
        r#"SELECT id, metadata->>'type' AS name, task_type, state::text AS "state!", retries,
                  max_retries, error_message, metadata, scheduled_at, created_at, updated_at
           FROM fang_tasks WHERE $1::text IS NULL OR state::text = $1
           ORDER BY updated_at DESC, id LIMIT $2 OFFSET $3"#,
        state,
        page.size,
        page.offset()
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Page {
        items,
        page: page.page,
        size: page.size,
        total,
    })
}

/// What [`run_now`] found: waiting tasks moved to now, and tasks running at this moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunNow {
    pub moved: u64,
    pub running: u64,
}

/// An operator's "do it now": the waiting tasks named `name` whose metadata holds `key`
/// (e.g. `{"attempt_id": 7}`) become due at `now` and the workers are woken. Running ones
/// are only counted, so the caller can tell "already under way" from "nothing queued".
pub async fn run_now(
    conn: &mut PgConnection,
    name: &str,
    key: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<RunNow> {
    let row = sqlx::query!(
        r#"WITH hits AS (
             SELECT id, state FROM fang_tasks
             WHERE metadata @> (jsonb_build_object('type', $1::text) || $2::jsonb)
               AND state IN ('new', 'retried', 'in_progress')
           ), moved AS (
             UPDATE fang_tasks t SET scheduled_at = LEAST(t.scheduled_at, $4), updated_at = $4
             FROM hits WHERE t.id = hits.id AND t.state IN ('new', 'retried')
             RETURNING t.task_type
           )
           SELECT (SELECT count(*) FROM moved) AS "moved!",
                  (SELECT count(*) FROM hits WHERE state = 'in_progress') AS "running!",
                  (SELECT pg_notify($3, task_type) FROM moved LIMIT 1) IS NOT NULL AS "notified!""#,
        name,
        key,
        NOTIFY_CHANNEL,
        now,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(RunNow {
        moved: row.moved as u64,
        running: row.running as u64,
    })
}

/// Re-queues a failed task to run now, with a fresh retry budget.
pub async fn retry_failed(ctx: &Ctx, actor: &crate::audit::Actor, id: Uuid) -> Result<JobView> {
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let row = sqlx::query_as!(
        JobView,
        r#"UPDATE fang_tasks SET state = 'new', retries = 0, scheduled_at = $2,
                  updated_at = $2, finished_at = NULL
           WHERE id = $1 AND state = 'failed'
           RETURNING id, metadata->>'type' AS name, task_type, state::text AS "state!", retries,
                     max_retries, error_message, metadata, scheduled_at, created_at, updated_at"#,
        id,
        now
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| match crate::error::unique_violation(&e) {
        // The same unique task was enqueued again meanwhile; that one will run.
        Some("fang_tasks_uniq_live_key") => {
            Error::AlreadyExists(vec![crate::error::FieldError::new(
                "id",
                "an identical task is already queued",
            )])
        }
        _ => Error::from(e),
    })?;
    let Some(row) = row else {
        let exists = sqlx::query_scalar!(r#"SELECT 1 AS "one!" FROM fang_tasks WHERE id = $1"#, id)
            .fetch_optional(&mut *tx)
            .await?;
        return Err(match exists {
            Some(_) => Error::validation("id", "only failed tasks can be retried"),
            None => Error::NotFound,
        });
    };
    sqlx::query!("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, row.task_type)
        .execute(&mut *tx)
        .await?;
    crate::audit::record(
        &mut tx,
        actor,
        crate::audit::Action::JobRetried,
        crate::audit::Target::row("job", &id),
        serde_json::json!({ "task": row.name, "error": row.error_message }),
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(task_id = %id, "failed task re-queued by an operator");
    Ok(row)
}
