//! The job queue's storage: enqueue on the caller's transaction, and every statement the
//! worker runtime runs (atomic batched claims, leases, completions, reaping).
//!
//! Rows live in fang's `fang_tasks` and hold fang's task model (`metadata` is
//! `{"type": <pinned name>, …fields}`, as typetag writes it). A task here is plain data
//! ([`Task`]); what running one does, and what its [`Outcome`] means, is the runtime's
//! (worker/). What fang 0.11 lacks is added here: claims are one
//! `UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)` statement, every claim carries a fresh
//! lease token that completions must present, uniqueness is a partial unique index with
//! `ON CONFLICT`, and an enqueue wakes workers with `pg_notify` in the same transaction.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::Ctx;

/// The channel `pg_notify` wakes workers on; the payload is the task type.
pub const NOTIFY_CHANNEL: &str = "pillivery_jobs";

/// Which work a worker claims first. Strict between levels, except that every
/// [`FIFO_EVERY`]th claim of a pool takes due work in due order whatever its priority, so a
/// steady stream of urgent work never starves bulk work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Charge bursts, sales counting, view flushes, sweeps.
    Bulk = 0,
    Normal = 1,
    /// Someone or some money is waiting on it: buyers' checkouts and approvals, refunds,
    /// reconciliation of undecided payments and charges.
    Urgent = 2,
}

impl Priority {
    pub fn as_i16(self) -> i16 {
        self as i16
    }
}

/// One claim in this many ignores priority (see [`Priority`]).
pub const FIFO_EVERY: u64 = 5;

/// A task's payload: plain data with a pinned name. The stored row is fang's format —
/// `metadata` = `{"type": NAME, …fields}` — so rows queued by earlier releases (and by
/// fang's own API) decode unchanged. What running it does lives with the runtime.
pub trait Task: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The pinned name (`metadata.type`); never rename, or queued rows are stranded.
    const NAME: &'static str;

    /// The pool key: which worker pool claims it.
    fn task_type(&self) -> Cow<'static, str> {
        Cow::Borrowed("common")
    }

    /// At most one live (waiting or running) task with the same payload.
    fn unique(&self) -> bool {
        false
    }

    /// Retries (of `Retry` outcomes, timeouts, crashes) before it lands in the failed list.
    fn max_retries(&self) -> i32 {
        5
    }

    fn priority(&self) -> Priority {
        Priority::Normal
    }

    /// The wait before retry number `retries + 1` (jittered and capped by the runtime).
    fn backoff(&self, retries: u32) -> Duration {
        Duration::from_secs(2u64.saturating_pow(retries).min(3_600))
    }

    /// A periodic task's cron pattern (with seconds): it is queued again for its next
    /// occurrence whenever one ends.
    fn cron(&self) -> Option<&'static str> {
        None
    }
}

/// What a run of a task came to; the runtime acts on this and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Finished; the row is completed.
    Done,
    /// Failed in a way a later run may not (a database error, a PG that did not answer):
    /// runs again after `after` (the task's backoff if `None`), using up one retry.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Nothing was attempted (the local PG guard refused, or the PG refuses our
    /// credentials): runs again after `after` without using up a retry.
    Defer { after: Duration, reason: String },
    /// Will never succeed as it is: straight to the operators' failed list, no retries.
    Fail { reason: String },
}

impl Outcome {
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::Retry {
            after: None,
            reason: reason.into(),
        }
    }

    pub fn fail(reason: impl Into<String>) -> Self {
        Outcome::Fail {
            reason: reason.into(),
        }
    }

    /// The outcome of a step that returned an error instead of deciding: a guard refusal
    /// is deferred; anything else (database, internal) is retried with backoff. Gateway
    /// errors are decided by the steps through `pg::policy`; one that reaches here is
    /// treated as retryable, the cautious reading for an idempotent step.
    pub fn from_error(err: &Error) -> Self {
        if let Error::Gateway(e) = err {
            if let Some(after) = e.retry_after() {
                return Outcome::Defer {
                    after,
                    reason: err.to_string(),
                };
            }
        }
        Outcome::retry(err.to_string())
    }

    /// `Ok(outcome)` as is, `Err` through [`Outcome::from_error`].
    pub fn of(result: Result<Outcome>) -> Self {
        match result {
            Ok(o) => o,
            Err(e) => Self::from_error(&e),
        }
    }

    /// A step with nothing to decide: done, or its error.
    pub fn of_unit(result: Result<()>) -> Self {
        Self::of(result.map(|()| Outcome::Done))
    }
}

/// A task encoded for its row: what `enqueue` writes, and what periodic chaining re-queues.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: &'static str,
    pub metadata: serde_json::Value,
    pub task_type: String,
    pub uniq_hash: Option<String>,
    pub max_retries: i32,
    pub priority: Priority,
    pub cron: Option<&'static str>,
}

/// The uniqueness key of a row's metadata: fang's definition, so rows stay
/// interchangeable with stock fang's.
fn hash_of(metadata: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(metadata.to_string().as_bytes()))
}

impl Job {
    pub fn of<T: Task>(task: &T) -> Result<Self> {
        let fields = serde_json::to_value(task)
            .map_err(|e| Error::Internal(format!("task {} does not serialize: {e}", T::NAME)))?;
        let serde_json::Value::Object(fields) = fields else {
            return Err(Error::Internal(format!(
                "task {} is not a struct with named fields",
                T::NAME
            )));
        };
        // `type` first, as typetag writes it.
        let mut map = serde_json::Map::with_capacity(fields.len() + 1);
        map.insert("type".into(), serde_json::Value::String(T::NAME.into()));
        map.extend(fields);
        let metadata = serde_json::Value::Object(map);
        Ok(Self {
            name: T::NAME,
            uniq_hash: task.unique().then(|| hash_of(&metadata)),
            metadata,
            task_type: task.task_type().into_owned(),
            max_retries: task.max_retries(),
            priority: task.priority(),
            cron: task.cron(),
        })
    }

    /// A row as it was claimed, to queue its next occurrence (periodic tasks).
    pub fn again(claimed: &Claimed, unique: bool, cron: Option<&'static str>) -> Self {
        Self {
            name: "",
            uniq_hash: unique.then(|| hash_of(&claimed.metadata)),
            metadata: claimed.metadata.clone(),
            task_type: claimed.task_type.clone(),
            max_retries: claimed.max_retries,
            priority: match claimed.priority {
                0 => Priority::Bulk,
                2 => Priority::Urgent,
                _ => Priority::Normal,
            },
            cron,
        }
    }

    /// When it first runs if queued at `now`: its cron's next occurrence, or now.
    pub fn first_run(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
        match self.cron {
            Some(pattern) => next_cron(pattern, now),
            None => Ok(now),
        }
    }
}

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
/// no task, and workers are woken when it commits. `now` is the caller's clock; the task
/// runs then, or at its cron's next occurrence.
pub async fn enqueue<T: Task>(
    conn: &mut PgConnection,
    task: &T,
    now: DateTime<Utc>,
) -> Result<Enqueued> {
    let job = Job::of(task)?;
    let at = job.first_run(now)?;
    insert(conn, &job, at, now).await
}

/// Enqueues to run at `at` (as soon as possible if that is not after `now`).
pub async fn enqueue_at<T: Task>(
    conn: &mut PgConnection,
    task: &T,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Enqueued> {
    insert(conn, &Job::of(task)?, at, now).await
}

/// Enqueues an encoded job to run at `at`; workers are woken if it is due by `now`.
pub async fn insert(
    conn: &mut PgConnection,
    job: &Job,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Enqueued> {
    let inserted = sqlx::query!(
        r#"WITH ins AS (
             INSERT INTO fang_tasks (metadata, task_type, uniq_hash, scheduled_at, max_retries,
                                     request_id, priority, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $7, $8, $9, $9)
             ON CONFLICT (uniq_hash)
                 WHERE uniq_hash IS NOT NULL AND state IN ('new', 'retried', 'in_progress')
                 DO NOTHING
             RETURNING id
           )
           SELECT id AS "id!",
                  -- A job due later is found by the workers' timed sleep; waking every
                  -- worker for it would only cost each a transaction.
                  CASE WHEN $4 <= $9 THEN pg_notify($6, $2) IS NOT NULL
                       ELSE false END AS "notified!"
           FROM ins"#,
        job.metadata,
        job.task_type,
        job.uniq_hash,
        at,
        job.max_retries,
        NOTIFY_CHANNEL,
        crate::telemetry::current_request_id(),
        job.priority.as_i16(),
        now,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = inserted {
        return Ok(Enqueued::Inserted(row.id));
    }
    let existing = sqlx::query_scalar!(
        r#"SELECT id FROM fang_tasks
           WHERE uniq_hash = $1 AND state IN ('new', 'retried', 'in_progress')"#,
        job.uniq_hash
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(Enqueued::AlreadyQueued(existing))
}

/// Many tasks due at `now` in one statement (bulk loads, billing-day fan-out); unique
/// ones that are already live are skipped. Returns how many rows were inserted.
pub async fn enqueue_many<T: Task>(
    conn: &mut PgConnection,
    tasks: &[T],
    now: DateTime<Utc>,
) -> Result<u64> {
    let mut metadata = Vec::with_capacity(tasks.len());
    let mut types = Vec::with_capacity(tasks.len());
    let mut hashes: Vec<Option<String>> = Vec::with_capacity(tasks.len());
    let mut retries = Vec::with_capacity(tasks.len());
    let mut priorities = Vec::with_capacity(tasks.len());
    for task in tasks {
        let j = Job::of(task)?;
        metadata.push(j.metadata);
        types.push(j.task_type);
        hashes.push(j.uniq_hash);
        retries.push(j.max_retries);
        priorities.push(j.priority.as_i16());
    }
    let inserted = sqlx::query_scalar!(
        r#"WITH ins AS (
             INSERT INTO fang_tasks (metadata, task_type, uniq_hash, max_retries, priority,
                                     scheduled_at, created_at, updated_at)
             SELECT m, t, h, r, p, $6, $6, $6
             FROM unnest($1::jsonb[], $2::text[], $3::text[], $4::int[], $7::int2[])
                  AS u(m, t, h, r, p)
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
        now,
        &priorities,
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
    pub priority: i16,
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

/// How a claim picks among due tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOrder {
    /// Highest priority first, then due order.
    Priority,
    /// Due order only (the anti-starvation turn).
    Due,
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
    order: ClaimOrder,
) -> Result<Vec<Claimed>> {
    // Two statements rather than one with a computed ORDER BY, so each walks its index.
    let rows = match order {
        ClaimOrder::Priority => {
            sqlx::query_as!(
                Claimed,
                r#"UPDATE fang_tasks t
                   SET state = 'in_progress', locked_by = $1, lease_token = gen_random_uuid(),
                       lease_expires_at = $2::timestamptz + make_interval(secs => $3),
                       started_at = $2, updated_at = $2
                   FROM (
                       SELECT id FROM fang_tasks
                       WHERE state IN ('new', 'retried') AND scheduled_at <= $2
                         AND ($4::text[] IS NULL OR task_type = ANY($4))
                         AND NOT (task_type = ANY($5))
                       ORDER BY priority DESC, scheduled_at
                       LIMIT $6
                       FOR UPDATE SKIP LOCKED
                   ) picked
                   WHERE t.id = picked.id
                   RETURNING t.id, t.metadata, t.task_type, t.retries, t.max_retries,
                             t.scheduled_at, t.lease_token AS "lease_token!", t.request_id,
                             t.priority"#,
                worker,
                now,
                secs(lease),
                filter.include.as_deref(),
                &filter.exclude,
                limit,
            )
            .fetch_all(&mut *conn)
            .await?
        }
        ClaimOrder::Due => {
            sqlx::query_as!(
                Claimed,
                r#"UPDATE fang_tasks t
                   SET state = 'in_progress', locked_by = $1, lease_token = gen_random_uuid(),
                       lease_expires_at = $2::timestamptz + make_interval(secs => $3),
                       started_at = $2, updated_at = $2
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
                   RETURNING t.id, t.metadata, t.task_type, t.retries, t.max_retries,
                             t.scheduled_at, t.lease_token AS "lease_token!", t.request_id,
                             t.priority"#,
                worker,
                now,
                secs(lease),
                filter.include.as_deref(),
                &filter.exclude,
                limit,
            )
            .fetch_all(&mut *conn)
            .await?
        }
    };
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
    now: DateTime<Utc>,
) -> Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE fang_tasks SET state = 'retried', retries = retries + 1, scheduled_at = $3,
                  error_message = $4, updated_at = $5,
                  lease_token = NULL, lease_expires_at = NULL, locked_by = NULL
           WHERE id = $1 AND lease_token = $2 AND state = 'in_progress'"#,
        id,
        token,
        at,
        error,
        now
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
    now: DateTime<Utc>,
) -> Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE fang_tasks SET state = 'retried', scheduled_at = $3, error_message = $4,
                  updated_at = $5,
                  lease_token = NULL, lease_expires_at = NULL, locked_by = NULL
           WHERE id = $1 AND lease_token = $2 AND state = 'in_progress'"#,
        id,
        token,
        at,
        reason,
        now
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A task that will not be tried again; kept with its error for operators.
pub async fn fail(
    conn: &mut PgConnection,
    id: Uuid,
    token: Uuid,
    error: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE fang_tasks SET state = 'failed', error_message = $3, updated_at = $4,
                  finished_at = $4,
                  lease_token = NULL, lease_expires_at = NULL, locked_by = NULL
           WHERE id = $1 AND lease_token = $2 AND state = 'in_progress'"#,
        id,
        token,
        error,
        now
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Hands tasks back untouched (graceful shutdown): no attempt is counted.
pub async fn release(
    conn: &mut PgConnection,
    claims: &[ClaimRef],
    now: DateTime<Utc>,
) -> Result<u64> {
    let (ids, tokens) = split(claims);
    let done = sqlx::query!(
        r#"UPDATE fang_tasks SET state = 'new', updated_at = $3,
                  lease_token = NULL, lease_expires_at = NULL, locked_by = NULL
           WHERE id = ANY($1) AND lease_token = ANY($2) AND state = 'in_progress'"#,
        &ids,
        &tokens,
        now
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
    tx.commit().await?;
    tracing::info!(task_id = %id, "failed task re-queued by an operator");
    Ok(row)
}
