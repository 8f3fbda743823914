//! The runtime's statements: atomic batched claims (by priority or due order), leases,
//! completions, retries, deferrals, failures, releases, reaping, and the queue's figures.

use super::*;

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

pub(super) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// How a claim picks among due tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOrder {
    /// Urgent work first, then the rest (normal and bulk) in due order.
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
            // Urgent work first (an equality on the priority index), then the rest in due
            // order (the due-time index), each walked in index order and locked with
            // SKIP LOCKED; the rows are then found by primary key. A single
            // `ORDER BY priority, scheduled_at` was planned as a sort of every due row.
            sqlx::query_as!(
                Claimed,
                r#"WITH urgent AS (
                       SELECT id FROM fang_tasks
                       WHERE priority = $7 AND state IN ('new', 'retried') AND scheduled_at <= $2
                         AND ($4::text[] IS NULL OR task_type = ANY($4))
                         AND NOT (task_type = ANY($5))
                       ORDER BY scheduled_at
                       LIMIT $6
                       FOR UPDATE SKIP LOCKED
                   ), rest AS (
                       SELECT id FROM fang_tasks
                       WHERE priority < $7 AND state IN ('new', 'retried') AND scheduled_at <= $2
                         AND ($4::text[] IS NULL OR task_type = ANY($4))
                         AND NOT (task_type = ANY($5))
                       ORDER BY scheduled_at
                       LIMIT $6 - (SELECT count(*) FROM urgent)
                       FOR UPDATE SKIP LOCKED
                   )
                   UPDATE fang_tasks t
                   SET state = 'in_progress', locked_by = $1, lease_token = gen_random_uuid(),
                       lease_expires_at = $2::timestamptz + make_interval(secs => $3),
                       started_at = $2, updated_at = $2
                   WHERE t.id = ANY(ARRAY(SELECT id FROM urgent UNION ALL SELECT id FROM rest))
                   RETURNING t.id, t.metadata, t.task_type, t.retries, t.max_retries,
                             t.scheduled_at, t.lease_token AS "lease_token!", t.request_id,
                             t.priority"#,
                worker,
                now,
                secs(lease),
                filter.include.as_deref(),
                &filter.exclude,
                limit,
                Priority::Urgent.as_i16(),
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

pub(super) fn split(claims: &[ClaimRef]) -> (Vec<Uuid>, Vec<Uuid>) {
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

/// The claim's run is over and the task runs again at `at`: after a failure, using up
/// a retry (`counts_retry`), or deferred because nothing was attempted (no retry).
/// False if the claim was lost.
#[allow(clippy::too_many_arguments)]
pub async fn run_again(
    conn: &mut PgConnection,
    id: Uuid,
    token: Uuid,
    at: DateTime<Utc>,
    reason: &str,
    counts_retry: bool,
    now: DateTime<Utc>,
) -> Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE fang_tasks
           SET state = 'retried', retries = retries + CASE WHEN $6 THEN 1 ELSE 0 END,
               scheduled_at = $3, error_message = $4, updated_at = $5,
               lease_token = NULL, lease_expires_at = NULL, locked_by = NULL
           WHERE id = $1 AND lease_token = $2 AND state = 'in_progress'"#,
        id,
        token,
        at,
        reason,
        now,
        counts_retry
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
