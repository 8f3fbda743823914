//! The job queue's storage: enqueue on the caller's transaction, and every statement the
//! worker runtime runs (atomic batched claims, leases, completions, reaping).
//!
//! Rows live in fang's `fang_tasks` and hold fang's task model (`metadata` is
//! `{"type": <pinned name>, …fields}`, as typetag writes it). A task here is plain data
//! ([`Task`]); what running one does, and what its [`Outcome`] means, is the runtime's
//! (worker/). What fang 0.11 lacks is added here: claims are one
//! `UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)` statement, every claim carries a fresh
//! lease token that completions must present, uniqueness is a partial unique index with
//! `ON CONFLICT`, and an enqueue wakes workers with `pg_notify` once its transaction commits
//! (`crate::wakeups`).

mod claims;
mod fang_api;
mod operators;
mod tasks;

pub use claims::*;
pub use fang_api::*;
pub use operators::*;
pub use tasks::*;

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
