//! fang's `AsyncQueueable` over the project's own `PgPool`, on the runtime's SQL.
//!
//! Tasks receive this as their `queue` argument, so code written against fang's API
//! (insert, schedule, remove) works unchanged, with our atomic claims and uniqueness.

use async_trait::async_trait;
use billing::jobs::{self, Removal, TypeFilter};
use fang::{AsyncQueueError, AsyncQueueable, AsyncRunnable, FangTaskState, Task};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct PgQueue {
    pool: PgPool,
    worker_id: String,
}

impl PgQueue {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            worker_id: format!("fang-api:{}", std::process::id()),
        }
    }
}

fn err(e: billing::Error) -> AsyncQueueError {
    match e {
        billing::Error::Database(e) => AsyncQueueError::SqlXError(e),
        billing::Error::Unavailable { detail, .. } => {
            AsyncQueueError::SqlXError(sqlx::Error::Protocol(detail))
        }
        other => AsyncQueueError::SqlXError(sqlx::Error::Protocol(other.to_string())),
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
        jobs::set_state(&mut conn, task.id, state, error, retry_in)
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
            chrono::Utc::now(),
            std::time::Duration::from_secs(300),
            &filter,
            1,
        )
        .await
        .map_err(err)?;
        match claimed.into_iter().next() {
            Some(c) => Ok(jobs::find_task(&mut conn, c.id).await.map_err(err)?),
            None => Ok(None),
        }
    }

    async fn insert_task(&self, task: &dyn AsyncRunnable) -> Result<Task, AsyncQueueError> {
        let mut conn = self.conn().await?;
        let e = jobs::enqueue_at(&mut conn, task, chrono::Utc::now())
            .await
            .map_err(err)?;
        drop(conn);
        self.inserted(e).await
    }

    async fn schedule_task(&self, task: &dyn AsyncRunnable) -> Result<Task, AsyncQueueError> {
        if task.cron().is_none() {
            return Err(AsyncQueueError::CronError(
                fang::CronError::TaskNotSchedulableError,
            ));
        }
        let mut conn = self.conn().await?;
        let e = jobs::enqueue(&mut conn, task).await.map_err(err)?;
        drop(conn);
        self.inserted(e).await
    }

    async fn remove_all_tasks(&self) -> Result<u64, AsyncQueueError> {
        let mut conn = self.conn().await?;
        jobs::remove(&mut conn, Removal::All).await.map_err(err)
    }

    async fn remove_all_scheduled_tasks(&self) -> Result<u64, AsyncQueueError> {
        let mut conn = self.conn().await?;
        jobs::remove(&mut conn, Removal::Scheduled)
            .await
            .map_err(err)
    }

    async fn remove_task(&self, id: &Uuid) -> Result<u64, AsyncQueueError> {
        let mut conn = self.conn().await?;
        jobs::remove(&mut conn, Removal::Id(*id)).await.map_err(err)
    }

    async fn remove_task_by_metadata(
        &self,
        task: &dyn AsyncRunnable,
    ) -> Result<u64, AsyncQueueError> {
        let hash = jobs::uniq_hash(task)
            .map_err(err)?
            .ok_or(AsyncQueueError::TaskNotUniqError)?;
        let mut conn = self.conn().await?;
        jobs::remove(&mut conn, Removal::UniqHash(&hash))
            .await
            .map_err(err)
    }

    async fn remove_tasks_type(&self, task_type: &str) -> Result<u64, AsyncQueueError> {
        let mut conn = self.conn().await?;
        jobs::remove(&mut conn, Removal::TaskType(task_type))
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
