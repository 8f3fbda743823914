//! fang's `AsyncQueueable` operations, for code written against fang's API (the
//! worker's `PgQueue`): find, remove, set state — on the same table and clock.

use super::*;

pub(super) struct FangRow {
    id: Uuid,
    metadata: serde_json::Value,
    error_message: Option<String>,
    state: String,
    task_type: String,
    uniq_hash: Option<String>,
    retries: i32,
    scheduled_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<FangRow> for fang::Task {
    fn from(r: FangRow) -> Self {
        fang::Task {
            id: r.id,
            metadata: r.metadata,
            error_message: r.error_message,
            state: fang::FangTaskState::from(r.state.as_str()),
            task_type: r.task_type,
            uniq_hash: r.uniq_hash,
            retries: r.retries,
            scheduled_at: r.scheduled_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

pub async fn find_task(conn: &mut PgConnection, id: Uuid) -> Result<Option<fang::Task>> {
    Ok(sqlx::query_as!(
        FangRow,
        r#"SELECT id, metadata, error_message, state::text AS "state!", task_type, uniq_hash,
                  retries, scheduled_at, created_at, updated_at
           FROM fang_tasks WHERE id = $1"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(fang::Task::from))
}

/// What a fang `remove_*` call removes.
pub enum Removal<'a> {
    All,
    /// Waiting tasks due after now.
    Scheduled,
    Id(Uuid),
    UniqHash(&'a str),
    TaskType(&'a str),
}

pub async fn remove(conn: &mut PgConnection, what: Removal<'_>, now: DateTime<Utc>) -> Result<u64> {
    let (all, scheduled, id, hash, task_type) = match what {
        Removal::All => (true, false, None, None, None),
        Removal::Scheduled => (false, true, None, None, None),
        Removal::Id(id) => (false, false, Some(id), None, None),
        Removal::UniqHash(h) => (false, false, None, Some(h), None),
        Removal::TaskType(t) => (false, false, None, None, Some(t)),
    };
    Ok(sqlx::query!(
        r#"DELETE FROM fang_tasks
           WHERE $1
              OR ($2 AND scheduled_at > $6 AND state IN ('new', 'retried'))
              OR id = $3 OR uniq_hash = $4 OR task_type = $5"#,
        all,
        scheduled,
        id,
        hash,
        task_type,
        now
    )
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// The uniqueness key of a row's metadata, if the task is unique (fang's definition).
pub fn uniq_hash(metadata: &serde_json::Value, unique: bool) -> Option<String> {
    unique.then(|| hash_of(metadata))
}

/// fang's `update_task_state` / `fail_task` / `schedule_retry`, by id (no lease check:
/// this is the API fang code calls directly, not the runtime's path).
pub async fn set_state(
    conn: &mut PgConnection,
    id: Uuid,
    state: &str,
    error: Option<&str>,
    retry_in_secs: Option<f64>,
    now: DateTime<Utc>,
) -> Result<Option<fang::Task>> {
    Ok(sqlx::query_as!(
        FangRow,
        r#"UPDATE fang_tasks
           SET state = $2::text::fang_task_state,
               error_message = COALESCE($3, error_message),
               retries = retries + CASE WHEN $4::float8 IS NULL THEN 0 ELSE 1 END,
               scheduled_at = CASE WHEN $4::float8 IS NULL THEN scheduled_at
                                   ELSE $5::timestamptz + make_interval(secs => $4) END,
               lease_token = CASE WHEN $2 = 'in_progress' THEN gen_random_uuid() END,
               lease_expires_at = CASE WHEN $2 = 'in_progress'
                                       THEN $5::timestamptz + interval '5 minutes' END,
               updated_at = $5
           WHERE id = $1
           RETURNING id, metadata, error_message, state::text AS "state!", task_type, uniq_hash,
                     retries, scheduled_at, created_at, updated_at"#,
        id,
        state,
        error,
        retry_in_secs,
        now
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(fang::Task::from))
}
