//! Task definitions: each a small struct of ids plus one `billing` call, with a pinned
//! name (the typetag tag stored in `fang_tasks.metadata`), so renaming a struct never
//! strands queued rows.

use async_trait::async_trait;
use fang::typetag;
use fang::{AsyncQueueable, AsyncRunnable, FangError};
use serde::{Deserialize, Serialize};

use crate::jobs::{context, task_error};

/// Records that it ran (in `job_probe_runs`), optionally after sleeping and optionally
/// failing its first runs: operators' end-to-end check of the fleet, and the runtime's
/// own test subject.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub key: String,
    #[serde(default)]
    pub sleep_ms: u64,
    /// Fail while fewer than this many runs of `key` have been recorded.
    #[serde(default)]
    pub fail_runs: u32,
    #[serde(default)]
    pub unique: bool,
    /// Retry budget (default 5).
    #[serde(default)]
    pub max_retries: Option<i32>,
    /// Routes the probe to a worker pool (default `common`).
    #[serde(default)]
    pub task_type: Option<String>,
}

impl Probe {
    /// A probe that records one run of `key` and does nothing else.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            sleep_ms: 0,
            fail_runs: 0,
            unique: false,
            max_retries: None,
            task_type: None,
        }
    }
}

#[typetag::serde(name = "diag.probe")]
#[async_trait]
impl AsyncRunnable for Probe {
    async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
        let ctx = context()?;
        crate::probes::run(&ctx, self).await.map_err(task_error)
    }

    fn uniq(&self) -> bool {
        self.unique
    }

    fn task_type(&self) -> String {
        self.task_type.clone().unwrap_or_else(|| "common".into())
    }

    fn max_retries(&self) -> i32 {
        self.max_retries.unwrap_or(5)
    }

    fn backoff(&self, _attempt: u32) -> u32 {
        1
    }
}

/// Does nothing: the unit of the runtime's throughput benchmark.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Noop {
    #[serde(default)]
    pub n: u64,
}

#[typetag::serde(name = "diag.noop")]
#[async_trait]
impl AsyncRunnable for Noop {
    async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
        Ok(())
    }
}

/// Adds the unique views counted in Redis into `items.view_count`, every minute.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlushViews {}

#[typetag::serde(name = "items.flush_views")]
#[async_trait]
impl AsyncRunnable for FlushViews {
    async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
        let ctx = context()?;
        crate::items::flush_views(&ctx)
            .await
            .map(|_| ())
            .map_err(task_error)
    }

    fn uniq(&self) -> bool {
        true
    }

    fn cron(&self) -> Option<fang::Scheduled> {
        Some(fang::Scheduled::CronPattern("0 * * * * *".into()))
    }

    fn max_retries(&self) -> i32 {
        0
    }
}
