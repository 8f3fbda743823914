//! Operators' views and actions: list jobs, one job, retry a failed one or every failed
//! one of a pool, cancel a waiting one (as the task catalogue allows), bring waiting ones
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

/// A job's state, as `fang_tasks.state` holds it. Bound as the enum itself (not text),
/// so the planner sees the value and can use the per-state partial indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "fang_task_state", rename_all = "snake_case")]
pub enum JobState {
    New,
    InProgress,
    Retried,
    Failed,
    Finished,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::New,
        JobState::InProgress,
        JobState::Retried,
        JobState::Failed,
        JobState::Finished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::New => "new",
            JobState::InProgress => "in_progress",
            JobState::Retried => "retried",
            JobState::Failed => "failed",
            JobState::Finished => "finished",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                Error::validation(
                    "state",
                    "must be one of new, in_progress, retried, failed, finished",
                )
            })
    }
}

/// Filters of the operators' job list, all optional and combined.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct JobFilter {
    /// `new`, `in_progress`, `retried`, `failed` or `finished`; all when absent.
    pub state: Option<String>,
    /// The pool (`common`, `pg`, `webhook`, …: `task_type` of `GET /api/admin/jobs/stats`).
    pub task_type: Option<String>,
    /// The task's name, e.g. `webhooks.deliver`.
    pub name: Option<String>,
}

/// Longest pool or task name a filter takes (the real ones are short).
const MAX_KEY_CHARS: usize = 100;

fn check_key(field: &str, value: Option<&str>) -> Result<()> {
    match value {
        Some(v) if v.is_empty() || v.chars().count() > MAX_KEY_CHARS => {
            Err(Error::validation(field, "must be 1 to 100 characters"))
        }
        _ => Ok(()),
    }
}

/// Jobs matching `filter`, most recently updated first. A state's rows are found through
/// its partial index (failed, in progress, waiting); no index covers every state, so the
/// unfiltered list reads the live queue (finished rows are deleted unless
/// `worker.keep_finished`).
pub async fn list(ctx: &Ctx, filter: &JobFilter, page: PageRequest) -> Result<Page<JobView>> {
    let page = page.validate()?;
    let state = filter.state.as_deref().map(JobState::parse).transpose()?;
    check_key("task_type", filter.task_type.as_deref())?;
    check_key("name", filter.name.as_deref())?;
    let mut conn = ctx.db.acquire().await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM fang_tasks
           WHERE ($1::fang_task_state IS NULL OR state = $1)
             AND ($2::text IS NULL OR task_type = $2)
             AND ($3::text IS NULL OR metadata->>'type' = $3)"#,
        state as Option<JobState>,
        filter.task_type,
        filter.name,
    )
    .fetch_one(&mut *conn)
    .await?;
    let items = sqlx::query_as!(
        JobView,
        r#"SELECT id, metadata->>'type' AS name, task_type, state::text AS "state!", retries,
                  max_retries, error_message, metadata, scheduled_at, created_at, updated_at
           FROM fang_tasks
           WHERE ($1::fang_task_state IS NULL OR state = $1)
             AND ($2::text IS NULL OR task_type = $2)
             AND ($3::text IS NULL OR metadata->>'type' = $3)
           ORDER BY updated_at DESC, id LIMIT $4 OFFSET $5"#,
        state as Option<JobState>,
        filter.task_type,
        filter.name,
        page.size,
        page.offset()
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Page::new(items, page, total))
}

/// One job with what its run looks like: who holds it, since when, and its request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobView,
    /// 0 bulk, 1 normal, 2 urgent.
    pub priority: i16,
    /// At most one live row with this payload.
    pub unique: bool,
    /// The worker running it (while `in_progress`).
    pub locked_by: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The API request (or job) that enqueued it.
    pub request_id: Option<String>,
}

impl JobDetail {
    /// Waiting to run (`new` or `retried`): what may be canceled.
    pub fn is_waiting(&self) -> bool {
        matches!(self.job.state.as_str(), "new" | "retried")
    }
}

/// A task's arguments as operators read them: its payload without the name. Payloads are
/// ids and counters; a field named like a credential is masked all the same, so a future
/// task cannot put one on a page by accident.
pub fn arguments(metadata: &serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(fields) = metadata else {
        return metadata.clone();
    };
    let masked = fields
        .iter()
        .filter(|(k, _)| k.as_str() != "type")
        .map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            let secret = ["secret", "token", "password"]
                .iter()
                .any(|s| lower.contains(s))
                || lower.ends_with("_key");
            let v = if secret {
                serde_json::Value::String("…".into())
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    serde_json::Value::Object(masked)
}

pub async fn get(ctx: &Ctx, id: Uuid) -> Result<JobDetail> {
    let r = sqlx::query!(
        r#"SELECT id, metadata->>'type' AS name, task_type, state::text AS "state!", retries,
                  max_retries, error_message, metadata, scheduled_at, created_at, updated_at,
                  priority, uniq_hash IS NOT NULL AS "unique!", locked_by, lease_expires_at,
                  started_at, finished_at, request_id
           FROM fang_tasks WHERE id = $1"#,
        id
    )
    .fetch_optional(ctx.db.pool())
    .await?
    .ok_or(Error::NotFound)?;
    Ok(JobDetail {
        job: JobView {
            id: r.id,
            name: r.name,
            task_type: r.task_type,
            state: r.state,
            retries: r.retries,
            max_retries: r.max_retries,
            error_message: r.error_message,
            metadata: r.metadata,
            scheduled_at: r.scheduled_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        },
        priority: r.priority,
        unique: r.unique,
        locked_by: r.locked_by,
        lease_expires_at: r.lease_expires_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        request_id: r.request_id,
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

/// A failed task put back in the queue collided with its live twin (the same unique
/// payload, enqueued again meanwhile): that one will run.
fn requeue_error(e: sqlx::Error, field: &str) -> Error {
    match crate::error::unique_violation(&e) {
        Some("fang_tasks_uniq_live_key") => {
            Error::AlreadyExists(vec![crate::error::FieldError::new(
                field,
                "an identical task is already queued",
            )])
        }
        _ => Error::from(e),
    }
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
    .map_err(|e| requeue_error(e, "id"))?;
    let Some(row) = row else {
        let exists = sqlx::query_scalar!(r#"SELECT 1 AS "one!" FROM fang_tasks WHERE id = $1"#, id)
            .fetch_optional(&mut *tx)
            .await?;
        return Err(match exists {
            Some(_) => Error::validation("id", "only failed tasks can be retried"),
            None => Error::NotFound,
        });
    };
    wake(&mut tx, &row.task_type).await?;
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

/// What [`retry_failed_of_type`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RetriedFailed {
    /// Failed jobs queued to run now.
    pub retried: u64,
    /// Failed jobs left failed because an identical unique job is already queued (it
    /// does their work), or another failed copy of them was retried.
    pub skipped: u64,
}

/// Re-queues every failed job of a pool (`task_type`) to run now with a fresh retry
/// budget, in one statement with one audit row. A unique job whose payload is already
/// live again (queued meanwhile, or another failed copy retried here) stays failed: the
/// live one does its work, and the uniqueness index admits one.
pub async fn retry_failed_of_type(
    ctx: &Ctx,
    actor: &crate::audit::Actor,
    task_type: &str,
) -> Result<RetriedFailed> {
    check_key("task_type", Some(task_type))?;
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    let row = sqlx::query!(
        r#"WITH failed AS (
             SELECT id, uniq_hash, updated_at FROM fang_tasks
             WHERE state = 'failed' AND task_type = $1
             FOR UPDATE
           ), pick AS (
             SELECT DISTINCT ON (coalesce(f.uniq_hash, f.id::text)) f.id
             FROM failed f
             WHERE f.uniq_hash IS NULL OR NOT EXISTS (
                 SELECT 1 FROM fang_tasks live
                 WHERE live.uniq_hash = f.uniq_hash
                   AND live.state IN ('new', 'retried', 'in_progress'))
             ORDER BY coalesce(f.uniq_hash, f.id::text), f.updated_at DESC
           ), retried AS (
             UPDATE fang_tasks t SET state = 'new', retries = 0, scheduled_at = $2,
                    updated_at = $2, finished_at = NULL
             FROM pick WHERE t.id = pick.id
             RETURNING t.id
           )
           SELECT (SELECT count(*) FROM retried) AS "retried!",
                  (SELECT count(*) FROM failed) AS "failed!""#,
        task_type,
        now
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| requeue_error(e, "task_type"))?;
    let done = RetriedFailed {
        retried: row.retried as u64,
        skipped: (row.failed - row.retried) as u64,
    };
    if done.retried > 0 {
        wake(&mut tx, task_type).await?;
        crate::audit::record(
            &mut tx,
            actor,
            crate::audit::Action::FailedJobsRetried,
            crate::audit::Target::many("job"),
            serde_json::json!({
                "task_type": task_type, "count": done.retried, "skipped": done.skipped,
            }),
            now,
        )
        .await?;
    }
    tx.commit().await?;
    tracing::info!(
        task_type,
        retried = done.retried,
        skipped = done.skipped,
        "failed tasks re-queued by an operator"
    );
    Ok(done)
}

/// Cancels a waiting (`new` or `retried`) job if `policy` allows its kind: the row is
/// deleted, and the audit row keeps its name and payload. A refused kind is
/// [`Error::JobNotCancelable`], changing nothing. Returns the job as it was. Operators
/// reach this through `tasks::cancel`, which brings the catalogue's policy.
pub(crate) async fn cancel(
    ctx: &Ctx,
    actor: &crate::audit::Actor,
    id: Uuid,
    policy: fn(&str) -> Cancel,
) -> Result<JobView> {
    let now = ctx.clock.now();
    let mut tx = ctx.db.begin().await?;
    // Locked, so a worker's claim (SKIP LOCKED) passes it by while this decides.
    let job = sqlx::query_as!(
        JobView,
        r#"SELECT id, metadata->>'type' AS name, task_type, state::text AS "state!", retries,
                  max_retries, error_message, metadata, scheduled_at, created_at, updated_at
           FROM fang_tasks WHERE id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    let name = job.name.clone().unwrap_or_default();
    if let Cancel::Refused(reason) = policy(&name) {
        return Err(Error::JobNotCancelable { name, reason });
    }
    if !matches!(job.state.as_str(), "new" | "retried") {
        return Err(Error::validation(
            "id",
            "only a waiting job (new or retried) can be canceled",
        ));
    }
    sqlx::query!("DELETE FROM fang_tasks WHERE id = $1", id)
        .execute(&mut *tx)
        .await?;
    crate::audit::record(
        &mut tx,
        actor,
        crate::audit::Action::JobCanceled,
        crate::audit::Target::row("job", &id),
        serde_json::json!({
            "task": name, "task_type": job.task_type, "state": job.state,
            "metadata": job.metadata,
        }),
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(task_id = %id, task = %name, "waiting task canceled by an operator");
    Ok(job)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn arguments_drop_the_name_and_mask_credentials() {
        let shown = arguments(&serde_json::json!({
            "type": "diag.probe", "key": "k", "payment_id": 7,
            "pg_token": "t", "client_secret": "s", "api_key": "a",
        }));
        assert_eq!(
            shown,
            serde_json::json!({
                "key": "k", "payment_id": 7, "pg_token": "…", "client_secret": "…",
                "api_key": "…",
            })
        );
    }
}
