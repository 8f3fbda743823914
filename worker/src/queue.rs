//! fang's `AsyncQueueable` over the project's own `PgPool`, on the runtime's SQL.
//!
//! Code written against fang's API (insert, schedule, remove, fetch) works unchanged on
//! the same table, with our atomic claims, uniqueness and clock. Our own tasks are
//! `billing::jobs::Task` payloads and never go through here.

use async_trait::async_trait;
use billing::clock::SharedClock;
use billing::jobs::{self, ClaimOrder, Job, Priority, Removal, TypeFilter};
use fang::{AsyncQueueError, AsyncQueueable, AsyncRunnable, FangTaskState, Scheduled, Task};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct PgQueue {
    pool: PgPool,
    clock: SharedClock,
    worker_id: String,
}

impl PgQueue {
    pub fn new(pool: PgPool, clock: SharedClock) -> Self {
        Self {
            pool,
            clock,
            worker_id: format!("fang-api:{}", std::process::id()),
        }
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}

/// A fang task in our row format (fang writes the same: typetag's `{"type": …}`).
fn job_of(task: &dyn AsyncRunnable) -> Result<Job, AsyncQueueError> {
    let metadata = serde_json::to_value(task)?;
    Ok(Job {
        name: "",
        uniq_hash: jobs::uniq_hash(&metadata, task.uniq()),
        metadata,
        task_type: task.task_type(),
        max_retries: task.max_retries(),
        priority: Priority::Normal,
        cron: None,
    })
}

/// fang's error type for what our queue statements return. They fail only in the
/// database (or waiting for a connection); anything else would be a bug, reported as
/// the serialization error fang's callers already handle.
fn err(e: billing::Error) -> AsyncQueueError {
    match e {
        billing::Error::Database(e) => AsyncQueueError::SqlXError(e),
        billing::Error::Unavailable { .. } => AsyncQueueError::SqlXError(sqlx::Error::PoolTimedOut),
        other => AsyncQueueError::SerdeError(<serde_json::Error as serde::de::Error>::custom(
            other.to_string(),
        )),
    }
}

fn missing() -> AsyncQueueError {
    AsyncQueueError::SqlXError(sqlx::Error::RowNotFound)
}

impl PgQueue {
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, AsyncQueueError> {
        Ok(self.pool.acquire().await?)
    }

    async fn inserted(&self, e: jobs::Enqueued) -> Result<Task, AsyncQueueError> {
        let id = e.id().ok_or_else(missing)?;
        self.find_task_by_id(&id).await
    }

    async fn state(
        &self,
        task: &Task,
        state: &str,
        error: Option<&str>,
        retry_in: Option<f64>,
    ) -> Result<Task, AsyncQueueError> {
        let mut conn = self.conn().await?;
        jobs::set_state(&mut conn, task.id, state, error, retry_in, self.now())
            .await
            .map_err(err)?
            .ok_or_else(missing)
    }
}

#[async_trait]
impl AsyncQueueable for PgQueue {
    async fn fetch_and_touch_task(
        &self,
        task_type: Option<String>,
    ) -> Result<Option<Task>, AsyncQueueError> {
        let filter = TypeFilter {
            include: Some(vec![task_type.unwrap_or_else(|| "common".into())]),
            exclude: Vec::new(),
        };
        let mut conn = self.conn().await?;
        let claimed = jobs::claim(
            &mut conn,
            &self.worker_id,
            self.now(),
            std::time::Duration::from_secs(300),
            &filter,
            1,
            ClaimOrder::Priority,
        )
        .await
        .map_err(err)?;
        match claimed.into_iter().next() {
            Some(c) => Ok(jobs::find_task(&mut conn, c.id).await.map_err(err)?),
            None => Ok(None),
        }
    }

    async fn insert_task(&self, task: &dyn AsyncRunnable) -> Result<Task, AsyncQueueError> {
        let job = job_of(task)?;
        let now = self.now();
        let mut conn = self.conn().await?;
        let e = jobs::insert(&mut conn, &job, now, now).await.map_err(err)?;
        drop(conn);
        self.inserted(e).await
    }

    async fn schedule_task(&self, task: &dyn AsyncRunnable) -> Result<Task, AsyncQueueError> {
        let now = self.now();
        let at = match task.cron() {
            Some(Scheduled::ScheduleOnce(at)) => at,
            Some(Scheduled::CronPattern(p)) => {
                let schedule: cron::Schedule = p.parse()?;
                schedule
                    .after(&now)
                    .next()
                    .ok_or(AsyncQueueError::CronError(
                        fang::CronError::NoTimestampsError,
                    ))?
            }
            None => {
                return Err(AsyncQueueError::CronError(
                    fang::CronError::TaskNotSchedulableError,
                ))
            }
        };
        let job = job_of(task)?;
        let mut conn = self.conn().await?;
        let e = jobs::insert(&mut conn, &job, at, now).await.map_err(err)?;
        drop(conn);
        self.inserted(e).await
    }

    async fn remove_all_tasks(&self) -> Result<u64, AsyncQueueError> {
        let mut conn = self.conn().await?;
        jobs::remove(&mut conn, Removal::All, self.now())
            .await
            .map_err(err)
    }

    async fn remove_all_scheduled_tasks(&self) -> Result<u64, AsyncQueueError> {
        let mut conn = self.conn().await?;
        jobs::remove(&mut conn, Removal::Scheduled, self.now())
            .await
            .map_err(err)
    }

    async fn remove_task(&self, id: &Uuid) -> Result<u64, AsyncQueueError> {
        let mut conn = self.conn().await?;
        jobs::remove(&mut conn, Removal::Id(*id), self.now())
            .await
            .map_err(err)
    }

    async fn remove_task_by_metadata(
        &self,
        task: &dyn AsyncRunnable,
    ) -> Result<u64, AsyncQueueError> {
        let hash = job_of(task)?
            .uniq_hash
            .ok_or(AsyncQueueError::TaskNotUniqError)?;
        let mut conn = self.conn().await?;
        jobs::remove(&mut conn, Removal::UniqHash(&hash), self.now())
            .await
            .map_err(err)
    }

    async fn remove_tasks_type(&self, task_type: &str) -> Result<u64, AsyncQueueError> {
        let mut conn = self.conn().await?;
        jobs::remove(&mut conn, Removal::TaskType(task_type), self.now())
            .await
            .map_err(err)
    }

    async fn find_task_by_id(&self, id: &Uuid) -> Result<Task, AsyncQueueError> {
        let mut conn = self.conn().await?;
        jobs::find_task(&mut conn, *id)
            .await
            .map_err(err)?
            .ok_or_else(missing)
    }

    async fn update_task_state(
        &self,
        task: &Task,
        state: FangTaskState,
    ) -> Result<Task, AsyncQueueError> {
        let s: &str = state.into();
        self.state(task, s, None, None).await
    }

    async fn fail_task(&self, task: &Task, error_message: &str) -> Result<Task, AsyncQueueError> {
        self.state(task, "failed", Some(error_message), None).await
    }

    async fn schedule_retry(
        &self,
        task: &Task,
        backoff_seconds: u32,
        error: &str,
    ) -> Result<Task, AsyncQueueError> {
        self.state(
            task,
            "retried",
            Some(error),
            Some(f64::from(backoff_seconds)),
        )
        .await
    }
}
