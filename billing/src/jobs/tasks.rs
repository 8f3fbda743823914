//! What a job is: the `Task` contract of a payload, its `Priority`, the `Outcome` of a
//! run, the encoded row (`Job`), and enqueueing on the caller's transaction.

use std::collections::BTreeSet;

use super::*;
use crate::db::Wakes;

pub use crate::wakeups::NOTIFY_CHANNEL;

/// Which work a worker claims first: urgent work ahead of everything else, which is
/// claimed in due order (normal and bulk alike; the bulk level names work that is never
/// urgent). Every [`FIFO_EVERY`]th claim of a pool takes due work in due order whatever
/// its priority, so a steady stream of urgent work never starves the rest.
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

    /// Whether an operator may cancel a waiting task of this kind. Refused unless a task
    /// says otherwise, so a new payment step can never be canceled by an oversight.
    const CANCEL: Cancel = Cancel::Refused("other work waits on it");
}

/// An operator's "cancel this waiting job", decided per kind of task: a canceled task
/// never runs and nothing queues it again, so only kinds nothing else waits on may be
/// canceled. A payment step, a charge, a delivery attempt or a periodic task canceled
/// would leave an order, a subscription, a delivery or a schedule without its next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    Allowed,
    /// Why not, in operators' words.
    Refused(&'static str),
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
pub(super) fn hash_of(metadata: &serde_json::Value) -> String {
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
/// no task, and workers are woken when it commits (by the process's sender after a
/// [`Tx`](crate::db::Tx) commits; see [`Wakes`]). `now` is the caller's clock; the task
/// runs then, or at its cron's next occurrence.
pub async fn enqueue<T: Task, W: Wakes>(
    conn: &mut W,
    task: &T,
    now: DateTime<Utc>,
) -> Result<Enqueued> {
    let job = Job::of(task)?;
    let at = job.first_run(now)?;
    insert(conn, &job, at, now).await
}

/// Wakes the workers of `task_type` (work became due without an enqueue, e.g. a failed
/// job retried): once the caller's [`Tx`](crate::db::Tx) commits, or inside the caller's
/// transaction on any other connection.
pub async fn wake<W: Wakes>(conn: &mut W, task_type: &str) -> Result<()> {
    match conn.after_commit() {
        Some(pending) => pending.job(task_type),
        None => {
            sqlx::query!("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, task_type)
                .execute(conn.conn())
                .await?;
        }
    }
    Ok(())
}

/// Enqueues to run at `at` (as soon as possible if that is not after `now`).
pub async fn enqueue_at<T: Task, W: Wakes>(
    conn: &mut W,
    task: &T,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Enqueued> {
    insert(conn, &Job::of(task)?, at, now).await
}

/// Enqueues an encoded job to run at `at`; workers are woken if it is due by `now`.
pub async fn insert<W: Wakes>(
    conn: &mut W,
    job: &Job,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Enqueued> {
    let later = conn.after_commit().is_some();
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
                  -- Announced after the commit when the caller's transaction can ($10).
                  CASE WHEN $4 <= $9 AND NOT $10 THEN pg_notify($6, $2) IS NOT NULL
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
        later,
    )
    .fetch_optional(conn.conn())
    .await?;
    if let Some(row) = inserted {
        if at <= now {
            if let Some(wake) = conn.after_commit() {
                wake.job(&job.task_type);
            }
        }
        return Ok(Enqueued::Inserted(row.id));
    }
    let existing = sqlx::query_scalar!(
        r#"SELECT id FROM fang_tasks
           WHERE uniq_hash = $1 AND state IN ('new', 'retried', 'in_progress')"#,
        job.uniq_hash
    )
    .fetch_optional(conn.conn())
    .await?;
    Ok(Enqueued::AlreadyQueued(existing))
}

/// Many tasks due at `now` in one statement (bulk loads, billing-day fan-out); unique
/// ones that are already live are skipped. Returns how many rows were inserted.
pub async fn enqueue_many<T: Task, W: Wakes>(
    conn: &mut W,
    tasks: &[T],
    now: DateTime<Utc>,
) -> Result<u64> {
    let jobs = tasks
        .iter()
        .map(|t| Ok((Job::of(t)?, now)))
        .collect::<Result<Vec<_>>>()?;
    insert_many(conn, jobs, now).await
}

/// Many tasks, each to run at its own time (a batch of charges scheduling their next
/// cycles), in one statement; as [`enqueue_many`] otherwise.
pub async fn enqueue_many_at<T: Task, W: Wakes>(
    conn: &mut W,
    tasks: &[(T, DateTime<Utc>)],
    now: DateTime<Utc>,
) -> Result<u64> {
    let jobs = tasks
        .iter()
        .map(|(t, at)| Ok((Job::of(t)?, *at)))
        .collect::<Result<Vec<_>>>()?;
    insert_many(conn, jobs, now).await
}

/// Inserts encoded jobs with their run times; workers are woken for the types of those
/// due by `now` (one notification per type).
async fn insert_many<W: Wakes>(
    conn: &mut W,
    jobs: Vec<(Job, DateTime<Utc>)>,
    now: DateTime<Utc>,
) -> Result<u64> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let later = conn.after_commit().is_some();
    // Every due type is announced even if its rows were all skipped as duplicates: one
    // spare wake-up costs a claim, and finding out would cost a round trip.
    let due: BTreeSet<String> = jobs
        .iter()
        .filter(|(_, at)| *at <= now)
        .map(|(j, _)| j.task_type.clone())
        .collect();
    let n = jobs.len();
    let mut metadata = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut hashes: Vec<Option<String>> = Vec::with_capacity(n);
    let mut retries = Vec::with_capacity(n);
    let mut priorities = Vec::with_capacity(n);
    let mut ats = Vec::with_capacity(n);
    for (j, at) in jobs {
        metadata.push(j.metadata);
        types.push(j.task_type);
        hashes.push(j.uniq_hash);
        retries.push(j.max_retries);
        priorities.push(j.priority.as_i16());
        ats.push(at);
    }
    let inserted = sqlx::query_scalar!(
        r#"WITH ins AS (
             INSERT INTO fang_tasks (metadata, task_type, uniq_hash, max_retries, priority,
                                     scheduled_at, created_at, updated_at)
             SELECT m, t, h, r, p, a, $6, $6
             FROM unnest($1::jsonb[], $2::text[], $3::text[], $4::int[], $7::int2[],
                         $8::timestamptz[])
                  AS u(m, t, h, r, p, a)
             ON CONFLICT (uniq_hash)
                 WHERE uniq_hash IS NOT NULL AND state IN ('new', 'retried', 'in_progress')
                 DO NOTHING
             RETURNING task_type, scheduled_at
           ),
           notified AS (SELECT pg_notify($5, task_type)
                        FROM (SELECT DISTINCT task_type FROM ins
                              WHERE scheduled_at <= $6 AND NOT $9) t)
           SELECT (SELECT count(*) FROM ins) + 0 * (SELECT count(*) FROM notified) AS "n!""#,
        &metadata,
        &types,
        &hashes as &[Option<String>],
        &retries,
        NOTIFY_CHANNEL,
        now,
        &priorities,
        &ats,
        later,
    )
    .fetch_one(conn.conn())
    .await?;
    if inserted > 0 {
        if let Some(wake) = conn.after_commit() {
            due.iter().for_each(|t| wake.job(t));
        }
    }
    Ok(inserted as u64)
}
