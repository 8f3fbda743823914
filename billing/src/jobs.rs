//! The job queue's storage: enqueue on the caller's transaction, and every statement the
//! worker runtime runs (atomic batched claims, leases, completions, reaping).
//!
//! Rows live in fang's `fang_tasks` and hold fang's task model (`metadata` is the
//! typetag-serialized `AsyncRunnable`). What fang 0.11 lacks is added here: claims are one
//! `UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)` statement, every claim carries a fresh
//! lease token that completions must present, uniqueness is a partial unique index with
//! `ON CONFLICT`, and an enqueue wakes workers with `pg_notify` in the same transaction.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fang::{AsyncRunnable, FangError, Scheduled};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::Ctx;

/// The channel `pg_notify` wakes workers on; the payload is the task type.
pub const NOTIFY_CHANNEL: &str = "pillivery_jobs";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Inserted(Uuid),
    /// A unique task with the same payload is already live (new, retried or running).
    AlreadyQueued(Option<Uuid>),
}

impl Enqueued {
    pub fn id(self) -> Option<Uuid> {
        match self {
            Enqueued::Inserted(id) => Some(id),
            Enqueued::AlreadyQueued(id) => id,
        }
    }
}

struct Encoded {
    metadata: serde_json::Value,
    task_type: String,
    uniq_hash: Option<String>,
    max_retries: i32,
}

fn encode(task: &dyn AsyncRunnable) -> Result<Encoded> {
    let metadata = serde_json::to_value(task)
        .map_err(|e| Error::Internal(format!("task does not serialize: {e}")))?;
    // fang's own definition, so rows stay interchangeable with stock fang's.
    let uniq_hash = task
        .uniq()
        .then(|| hex::encode(Sha256::digest(metadata.to_string().as_bytes())));
    Ok(Encoded {
        metadata,
        task_type: task.task_type(),
        uniq_hash,
        max_retries: task.max_retries(),
    })
}

/// The next time a cron pattern fires after `after`.
pub fn next_cron(pattern: &str, after: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let schedule: cron::Schedule = pattern
        .parse()
        .map_err(|e| Error::Internal(format!("cron pattern `{pattern}`: {e}")))?;
    schedule
        .after(&after)
        .next()
        .ok_or_else(|| Error::Internal(format!("cron pattern `{pattern}` never fires again")))
}

/// Enqueues on the caller's connection or transaction: a rolled-back transaction leaves
/// no task, and workers are woken when it commits (if the task is due now; a later one
/// is found by their sleep until the next due task). A task's own `cron()` decides when it
/// first runs (now if none).
pub async fn enqueue(conn: &mut PgConnection, task: &dyn AsyncRunnable) -> Result<Enqueued> {
    let when = match task.cron() {
        Some(Scheduled::ScheduleOnce(at)) => Some(at),
        Some(Scheduled::CronPattern(p)) => Some(next_cron(&p, Utc::now())?),
        None => None,
    };
    insert(conn, task, when).await
}

/// Enqueues to run at `when` (or as soon as possible if that is past).
pub async fn enqueue_at(
    conn: &mut PgConnection,
    task: &dyn AsyncRunnable,
    when: DateTime<Utc>,
) -> Result<Enqueued> {
    insert(conn, task, Some(when)).await
}

async fn insert(
    conn: &mut PgConnection,
    task: &dyn AsyncRunnable,
    when: Option<DateTime<Utc>>,
) -> Result<Enqueued> {
    let t = encode(task)?;
    let inserted = sqlx::query!(
        r#"WITH ins AS (
             INSERT INTO fang_tasks (metadata, task_type, uniq_hash, scheduled_at, max_retries,
                                     request_id)
             VALUES ($1, $2, $3, COALESCE($4, now()), $5, $7)
             ON CONFLICT (uniq_hash)
                 WHERE uniq_hash IS NOT NULL AND state IN ('new', 'retried', 'in_progress')
                 DO NOTHING
             RETURNING id
           )
           SELECT id AS "id!",
                  -- A job due later is found by the workers' timed sleep; waking every
                  -- worker for it would only cost each a transaction.
                  CASE WHEN COALESCE($4, now()) <= now() THEN pg_notify($6, $2) IS NOT NULL
                       ELSE false END AS "notified!"
           FROM ins"#,
        t.metadata,
        t.task_type,
        t.uniq_hash,
        when,
        t.max_retries,
        NOTIFY_CHANNEL,
        crate::telemetry::current_request_id(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = inserted {
        return Ok(Enqueued::Inserted(row.id));
    }
    let existing = sqlx::query_scalar!(
        r#"SELECT id FROM fang_tasks
           WHERE uniq_hash = $1 AND state IN ('new', 'retried', 'in_progress')"#,
        t.uniq_hash
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(Enqueued::AlreadyQueued(existing))
}

/// Many tasks in one statement (bulk loads, billing-day fan-out); unique ones that are
/// already live are skipped. Returns how many rows were inserted.
pub async fn enqueue_many(conn: &mut PgConnection, tasks: &[&dyn AsyncRunnable]) -> Result<u64> {
    let mut metadata = Vec::with_capacity(tasks.len());
    let mut types = Vec::with_capacity(tasks.len());
    let mut hashes: Vec<Option<String>> = Vec::with_capacity(tasks.len());
    let mut retries = Vec::with_capacity(tasks.len());
    for task in tasks {
        let t = encode(*task)?;
        metadata.push(t.metadata);
        types.push(t.task_type);
        hashes.push(t.uniq_hash);
        retries.push(t.max_retries);
    }
    let inserted = sqlx::query_scalar!(
        r#"WITH ins AS (
             INSERT INTO fang_tasks (metadata, task_type, uniq_hash, max_retries)
             SELECT * FROM unnest($1::jsonb[], $2::text[], $3::text[], $4::int[])
             ON CONFLICT (uniq_hash)
                 WHERE uniq_hash IS NOT NULL AND state IN ('new', 'retried', 'in_progress')
                 DO NOTHING
             RETURNING task_type
           ),
           notified AS (SELECT pg_notify($5, task_type) FROM (SELECT DISTINCT task_type FROM ins) t)
           SELECT (SELECT count(*) FROM ins) + 0 * (SELECT count(*) FROM notified) AS "n!""#,
        &metadata,
        &types,
        &hashes as &[Option<String>],
        &retries,
        NOTIFY_CHANNEL,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(inserted as u64)
}

// ---- the runtime's statements ----------------------------------------------------------

/// A task this worker now holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub metadata: serde_json::Value,
    pub task_type: String,
    pub retries: i32,
    pub max_retries: i32,
    pub scheduled_at: DateTime<Utc>,
    pub lease_token: Uuid,
    /// The API request (or job) that enqueued it.
    pub request_id: Option<String>,
}

/// Which task types a pool of workers takes: `include` (all if `None`) minus `exclude`.
#[derive(Debug, Clone, Default)]
pub struct TypeFilter {
    pub include: Option<Vec<String>>,
    pub exclude: Vec<String>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Claims up to `limit` due tasks in one statement: locked rows are skipped, so no two
/// workers ever hold the same task.
pub async fn claim(
    conn: &mut PgConnection,
    worker: &str,
    now: DateTime<Utc>,
    lease: Duration,
    filter: &TypeFilter,
    limit: i64,
) -> Result<Vec<Claimed>> {
    let rows = sqlx::query_as!(
        Claimed,
        r#"UPDATE fang_tasks t
           SET state = 'in_progress', locked_by = $1, lease_token = gen_random_uuid(),
               lease_expires_at = $2::timestamptz + make_interval(secs => $3), started_at = $2,
               updated_at = $2
           FROM (
               SELECT id FROM fang_tasks
               WHERE state IN ('new', 'retried') AND scheduled_at <= $2
                 AND ($4::text[] IS NULL OR task_type = ANY($4))
                 AND NOT (task_type = ANY($5))
               ORDER BY scheduled_at
               LIMIT $6
               FOR UPDATE SKIP LOCKED
           ) picked
           WHERE t.id = picked.id
           RETURNING t.id, t.metadata, t.task_type, t.retries, t.max_retries, t.scheduled_at,
                     t.lease_token AS "lease_token!", t.request_id"#,
        worker,
        now,
        secs(lease),
        filter.include.as_deref(),
        &filter.exclude,
        limit,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// A claim as the runtime refers to it: (task id, lease token). Statements look rows up
/// by id (the primary key) and match the token, which is unique per claim.
pub type ClaimRef = (Uuid, Uuid);

fn split(claims: &[ClaimRef]) -> (Vec<Uuid>, Vec<Uuid>) {
    claims.iter().copied().unzip()
}

/// Extends the leases this worker still holds; returns the claims it no longer holds.
pub async fn extend_leases(
    conn: &mut PgConnection,
    claims: &[ClaimRef],
    now: DateTime<Utc>,
    lease: Duration,
) -> Result<Vec<ClaimRef>> {
    let (ids, tokens) = split(claims);
    let held = sqlx::query_scalar!(
        r#"UPDATE fang_tasks SET lease_expires_at = $3::timestamptz + make_interval(secs => $4)
           WHERE id = ANY($1) AND lease_token = ANY($2) AND state = 'in_progress'
           RETURNING lease_token AS "lease_token!""#,
        &ids,
        &tokens,
        now,
        secs(lease),
    )
    .fetch_all(&mut *conn)
    .await?;
    let held: std::collections::HashSet<Uuid> = held.into_iter().collect();
    Ok(claims
        .iter()
        .filter(|c| !held.contains(&c.1))
        .copied()
        .collect())
}

/// Finishes successful tasks in one statement: removed, or kept as `finished`. Only the
/// current claim (id + lease token) can finish a task.
pub async fn complete(
    conn: &mut PgConnection,
    done: &[ClaimRef],
    keep: bool,
    now: DateTime<Utc>,
) -> Result<u64> {
    let (ids, tokens) = split(done);
    // Tokens are unique per claim, so "id in the set and token in the set" is exactly
    // the pairs, and lets the primary key find the rows.
    let n = if keep {
        sqlx::query!(
            r#"UPDATE fang_tasks SET state = 'finished', finished_at = $3, updated_at = $3,
                      lease_token = NULL, lease_expires_at = NULL, locked_by = NULL
               WHERE id = ANY($1) AND lease_token = ANY($2) AND state = 'in_progress'"#,
            &ids,
            &tokens,
            now
        )
        .execute(&mut *conn)
        .await?
        .rows_affected()
    } else {
        sqlx::query!(
            r#"DELETE FROM fang_tasks
               WHERE id = ANY($1) AND lease_token = ANY($2) AND state = 'in_progress'"#,
            &ids,
            &tokens
        )
        .execute(&mut *conn)
        .await?
        .rows_affected()
    };
    Ok(n)
}

/// A failed run that will be tried again at `at`. False if the claim was lost.
pub async fn retry_at(
    conn: &mut PgConnection,
    id: Uuid,
    token: Uuid,
    at: DateTime<Utc>,
    error: &str,
) -> Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE fang_tasks SET state = 'retried', retries = retries + 1, scheduled_at = $3,
                  error_message = $4, updated_at = now(),
                  lease_token = NULL, lease_expires_at = NULL, locked_by = NULL
           WHERE id = $1 AND lease_token = $2 AND state = 'in_progress'"#,
        id,
        token,
        at,
        error
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Work that could not start (the PG guard refused it) runs again at `at`; no retry is
/// counted. False if the claim was lost.
pub async fn defer(
    conn: &mut PgConnection,
    id: Uuid,
    token: Uuid,
    at: DateTime<Utc>,
    reason: &str,
) -> Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE fang_tasks SET state = 'retried', scheduled_at = $3, error_message = $4,
                  updated_at = now(),
                  lease_token = NULL, lease_expires_at = NULL, locked_by = NULL
           WHERE id = $1 AND lease_token = $2 AND state = 'in_progress'"#,
        id,
        token,
        at,
        reason
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A task that will not be tried again; kept with its error for operators.
pub async fn fail(conn: &mut PgConnection, id: Uuid, token: Uuid, error: &str) -> Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE fang_tasks SET state = 'failed', error_message = $3, updated_at = now(),
                  finished_at = now(),
                  lease_token = NULL, lease_expires_at = NULL, locked_by = NULL
           WHERE id = $1 AND lease_token = $2 AND state = 'in_progress'"#,
        id,
        token,
        error
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Hands tasks back untouched (graceful shutdown): no attempt is counted.
pub async fn release(conn: &mut PgConnection, claims: &[ClaimRef]) -> Result<u64> {
    let (ids, tokens) = split(claims);
    let done = sqlx::query!(
        r#"UPDATE fang_tasks SET state = 'new', updated_at = now(),
                  lease_token = NULL, lease_expires_at = NULL, locked_by = NULL
           WHERE id = ANY($1) AND lease_token = ANY($2) AND state = 'in_progress'"#,
        &ids,
        &tokens
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Re-queues tasks whose worker stopped renewing its lease (crashed, killed, cut off).
/// That counts as an attempt, so a task that kills its worker cannot loop forever.
pub async fn reap_expired(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<u64> {
    let done = sqlx::query!(
        r#"UPDATE fang_tasks
           SET state = CASE WHEN retries + 1 > max_retries THEN 'failed'::fang_task_state
                            ELSE 'retried'::fang_task_state END,
               retries = retries + 1, scheduled_at = $1, updated_at = $1,
               error_message = 'lease expired: worker ' || coalesce(locked_by, '?')
                               || ' stopped renewing it',
               lease_token = NULL, lease_expires_at = NULL, locked_by = NULL
           WHERE id IN (
               SELECT id FROM fang_tasks
               WHERE state = 'in_progress' AND lease_expires_at < $1
               FOR UPDATE SKIP LOCKED
           )"#,
        now
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// When the earliest waiting task falls due (for sleeping until then).
pub async fn next_due(
    conn: &mut PgConnection,
    filter: &TypeFilter,
) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT min(scheduled_at) FROM fang_tasks
           WHERE state IN ('new', 'retried')
             AND ($1::text[] IS NULL OR task_type = ANY($1))
             AND NOT (task_type = ANY($2))"#,
        filter.include.as_deref(),
        &filter.exclude,
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// One line of the queue's figures: how many tasks of a type are in a state and, for the
/// waiting states, how long the oldest due one has been waiting.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueStat {
    pub task_type: String,
    /// `new`, `in_progress`, `retried`, `failed` or `finished`.
    pub state: String,
    pub count: i64,
    /// The oldest `scheduled_at` that is already due (waiting states only).
    pub oldest_due_at: Option<DateTime<Utc>>,
    /// Seconds since `oldest_due_at`: how far the workers are behind (0 when none is due).
    pub lag_seconds: f64,
}

/// The queue by task type and state, with the lag of the waiting tasks: the metrics'
/// `job_queue_depth` / `job_queue_lag_seconds` and the operators' `jobs stats`. One scan.
pub async fn stats(ctx: &Ctx) -> Result<Vec<QueueStat>> {
    // "Due" by the same clock the claim uses.
    let now = ctx.clock.now();
    let rows = sqlx::query!(
        r#"SELECT task_type, state::text AS "state!", count(*) AS "count!",
                  min(scheduled_at) FILTER (WHERE state IN ('new', 'retried')
                                              AND scheduled_at <= $1) AS oldest_due_at
           FROM fang_tasks GROUP BY task_type, state ORDER BY task_type, state"#,
        now
    )
    .fetch_all(ctx.db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| QueueStat {
            lag_seconds: r
                .oldest_due_at
                .map(|at| ((now - at).num_milliseconds().max(0)) as f64 / 1000.0)
                .unwrap_or(0.0),
            task_type: r.task_type,
            state: r.state,
            count: r.count,
            oldest_due_at: r.oldest_due_at,
        })
        .collect())
}

// ---- fang's `AsyncQueueable` operations (for code written against fang's API) --------

struct FangRow {
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

pub async fn remove(conn: &mut PgConnection, what: Removal<'_>) -> Result<u64> {
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
              OR ($2 AND scheduled_at > now() AND state IN ('new', 'retried'))
              OR id = $3 OR uniq_hash = $4 OR task_type = $5"#,
        all,
        scheduled,
        id,
        hash,
        task_type
    )
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// The uniqueness key of a unique task (fang's definition).
pub fn uniq_hash(task: &dyn AsyncRunnable) -> Result<Option<String>> {
    Ok(encode(task)?.uniq_hash)
}

/// fang's `update_task_state` / `fail_task` / `schedule_retry`, by id (no lease check:
/// this is the API fang code calls directly, not the runtime's path).
pub async fn set_state(
    conn: &mut PgConnection,
    id: Uuid,
    state: &str,
    error: Option<&str>,
    retry_in_secs: Option<f64>,
) -> Result<Option<fang::Task>> {
    Ok(sqlx::query_as!(
        FangRow,
        r#"UPDATE fang_tasks
           SET state = $2::text::fang_task_state,
               error_message = COALESCE($3, error_message),
               retries = retries + CASE WHEN $4::float8 IS NULL THEN 0 ELSE 1 END,
               scheduled_at = CASE WHEN $4::float8 IS NULL THEN scheduled_at
                                   ELSE now() + make_interval(secs => $4) END,
               lease_token = CASE WHEN $2 = 'in_progress' THEN gen_random_uuid() END,
               lease_expires_at = CASE WHEN $2 = 'in_progress'
                                       THEN now() + interval '5 minutes' END,
               updated_at = now()
           WHERE id = $1
           RETURNING id, metadata, error_message, state::text AS "state!", task_type, uniq_hash,
                     retries, scheduled_at, created_at, updated_at"#,
        id,
        state,
        error,
        retry_in_secs
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(fang::Task::from))
}

// ---- operators --------------------------------------------------------------------------

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

const STATES: [&str; 5] = ["new", "in_progress", "retried", "failed", "finished"];

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
pub async fn retry_failed(ctx: &Ctx, id: Uuid) -> Result<JobView> {
    let mut tx = ctx.db.begin().await?;
    let row = sqlx::query_as!(
        JobView,
        r#"UPDATE fang_tasks SET state = 'new', retries = 0, scheduled_at = now(),
                  updated_at = now(), finished_at = NULL
           WHERE id = $1 AND state = 'failed'
           RETURNING id, metadata->>'type' AS name, task_type, state::text AS "state!", retries,
                     max_retries, error_message, metadata, scheduled_at, created_at, updated_at"#,
        id
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
    tx.commit().await?;
    tracing::info!(task_id = %id, "failed task re-queued by an operator");
    Ok(row)
}

// ---- the context tasks run in -----------------------------------------------------------

tokio::task_local! {
    static CONTEXT: Ctx;
    /// Set by [`task_error`] when the task's work was refused before it reached the PG
    /// (open breaker, no permit): run it again after this long, without counting a retry.
    static DEFERRAL: std::cell::Cell<Option<std::time::Duration>>;
}

/// Runs `fut` (a task's `run`) with `ctx` available to it through `context()`; also
/// returns the deferral the task asked for, if any.
pub async fn scope<F: Future>(ctx: Ctx, fut: F) -> (F::Output, Option<std::time::Duration>) {
    DEFERRAL
        .scope(std::cell::Cell::new(None), async move {
            let out = CONTEXT.scope(ctx, fut).await;
            (out, DEFERRAL.with(std::cell::Cell::get))
        })
        .await
}

/// The handles of the worker running the current task.
pub fn context() -> Result<Ctx, FangError> {
    CONTEXT.try_with(Ctx::clone).map_err(|_| FangError {
        description: "task run outside the worker runtime (no context)".into(),
    })
}

/// Maps a billing error into fang's error type, for tasks. A PG call the local guard did
/// not send (`Unavailable` with `retry_after`) also tells the runtime to defer the task.
pub fn task_error(err: Error) -> FangError {
    if let Error::Gateway(e) = &err {
        if let Some(after) = e.retry_after() {
            let _ = DEFERRAL.try_with(|d| d.set(Some(after)));
        }
    }
    FangError {
        description: err.to_string(),
    }
}
