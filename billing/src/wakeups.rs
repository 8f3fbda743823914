//! Wake-ups sent after the commit: job enqueues (`pillivery_jobs`) and order changes
//! (`pillivery_orders`) are announced with `pg_notify` by one task per process, on a
//! connection of its own and outside any write transaction — never inside the writing
//! transaction.
//!
//! Why: a transaction that NOTIFYs takes a database-wide lock at commit and holds it
//! through its WAL flush, so every committing transaction that notifies waits for every
//! other one (pgbench of the order transaction: ~1,425 tps with the `pg_notify`, ~2,000
//! without). A `SELECT pg_notify(…)` on its own writes nothing and has no transaction id,
//! so its commit flushes no WAL and the lock is held for microseconds.
//!
//! How: a [`Tx`](crate::db::Tx) collects what its writes must announce ([`Pending`]) and
//! hands it to the process's [`Wakeups`] only once its `COMMIT` succeeded; a rolled-back
//! transaction announces nothing. The sender keeps at most one statement in flight:
//! whatever arrives while one is being sent is merged and goes out in the next one, so a
//! burst of commits costs a handful of NOTIFYs, not one each. Listeners lose nothing they
//! relied on: a wake-up was always only a hint (workers poll, `?wait` re-reads the order),
//! and a failed send is retried, then dropped to the polling fallback.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use tokio::sync::Notify;

/// `pg_notify` channel of due jobs; the payload is the task type (workers `LISTEN`).
/// Defined here, below the job queue and the order store that re-export it, so the
/// sender depends on neither.
pub const NOTIFY_CHANNEL: &str = "pillivery_jobs";

/// `pg_notify` channel of order state changes; the payload is comma-separated order ids
/// (`?wait` listens).
pub const CHANGES_CHANNEL: &str = "pillivery_orders";

/// Above this many distinct orders waiting to be announced, one "everything changed"
/// notification replaces them (`?wait`ers re-read their order), so memory stays bounded
/// while Postgres is unreachable.
const MAX_PENDING_ORDERS: usize = 10_000;

/// A notification payload stays under Postgres' 8,000-byte limit.
const MAX_PAYLOAD_BYTES: usize = 7_000;

/// How long a failed send waits before it is tried again (the listeners' own polling and
/// re-reads cover the gap).
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// What committed writes must announce: the task types of due jobs, and changed orders.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pending {
    pub job_types: BTreeSet<String>,
    pub orders: BTreeSet<i64>,
    /// Too many orders to name: every `?wait`er re-reads.
    pub all_orders: bool,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.job_types.is_empty() && self.orders.is_empty() && !self.all_orders
    }

    pub fn job(&mut self, task_type: &str) {
        if !self.job_types.contains(task_type) {
            self.job_types.insert(task_type.to_owned());
        }
    }

    pub fn order(&mut self, id: i64) {
        if !self.all_orders {
            self.orders.insert(id);
            if self.orders.len() > MAX_PENDING_ORDERS {
                self.orders.clear();
                self.all_orders = true;
            }
        }
    }

    pub fn merge(&mut self, other: Pending) {
        self.job_types.extend(other.job_types);
        if other.all_orders {
            self.orders.clear();
            self.all_orders = true;
        }
        for id in other.orders {
            self.order(id);
        }
    }

    /// The (channel, payload) pairs to send: one per job type (workers ignore the
    /// payload, but it names the pool to wake), and the order ids comma-separated in as
    /// few payloads as fit. An empty order payload means "every order".
    pub fn notifications(&self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = self
            .job_types
            .iter()
            .map(|t| (NOTIFY_CHANNEL, t.clone()))
            .collect();
        if self.all_orders {
            out.push((CHANGES_CHANNEL, String::new()));
            return out;
        }
        let mut payload = String::new();
        for id in &self.orders {
            let id = id.to_string();
            if !payload.is_empty() && payload.len() + 1 + id.len() > MAX_PAYLOAD_BYTES {
                out.push((CHANGES_CHANNEL, std::mem::take(&mut payload)));
            }
            if !payload.is_empty() {
                payload.push(',');
            }
            payload.push_str(&id);
        }
        if !payload.is_empty() {
            out.push((CHANGES_CHANNEL, payload));
        }
        out
    }
}

/// The order ids of a `pillivery_orders` payload; `None` (re-read every order) for an
/// empty or unreadable one.
pub fn order_ids(payload: &str) -> Option<Vec<i64>> {
    if payload.is_empty() {
        return None;
    }
    payload.split(',').map(|id| id.parse().ok()).collect()
}

/// The process's sender of wake-ups (one per pool; cheap to clone). Its task starts with
/// the first wake-up and ends when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct Wakeups {
    handle: Arc<Handle>,
}

/// What the handles and the sender task share.
#[derive(Debug, Default)]
struct Link {
    pending: Mutex<Pending>,
    signal: Notify,
    closed: AtomicBool,
}

#[derive(Debug)]
struct Handle {
    link: Arc<Link>,
    options: PgConnectOptions,
    /// The sender task: started with the first wake-up, and again if the runtime it ran
    /// on has ended (a handle outliving its runtime, as tests' contexts may).
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Nobody is left to send for: the sender ends.
        self.link.closed.store(true, Ordering::SeqCst);
        self.link.signal.notify_one();
    }
}

impl Wakeups {
    /// A sender connecting with `options` (the pool's, under its own application name so
    /// it stands out in `pg_stat_activity`).
    pub fn new(options: &PgConnectOptions) -> Self {
        Self {
            handle: Arc::new(Handle {
                link: Arc::default(),
                options: options.clone().application_name("pillivery-wakeups"),
                task: Mutex::new(None),
            }),
        }
    }

    /// Announces `pending` as soon as the sender is free. Call it after the commit that
    /// made it true.
    pub fn send(&self, pending: Pending) {
        if pending.is_empty() {
            return;
        }
        let h = &self.handle;
        lock(&h.link.pending).merge(pending);
        metrics::counter!("db_wakeups_requested_total").increment(1);
        h.ensure_sender();
        // A permit is stored if the sender is busy: exactly one more send follows.
        h.link.signal.notify_one();
    }
}

impl Handle {
    fn ensure_sender(&self) {
        let mut task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        // Outside a runtime nothing can be sent; the listeners' polling covers it.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => *task = Some(rt.spawn(sender(self.link.clone(), self.options.clone()))),
            Err(_) => tracing::debug!("wake-up not sent: no async runtime"),
        }
    }
}

fn lock(m: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Puts an unsent batch back, merged with what arrived since.
fn requeue(pending: &Mutex<Pending>, batch: Pending) {
    let mut pending = lock(pending);
    let since = std::mem::replace(&mut *pending, batch);
    pending.merge(since);
}

async fn sender(link: Arc<Link>, options: PgConnectOptions) {
    let mut conn: Option<PgConnection> = None;
    loop {
        link.signal.notified().await;
        let batch = std::mem::take(&mut *lock(&link.pending));
        if !batch.is_empty() {
            match send_batch(&mut conn, &options, &batch).await {
                Ok(n) => {
                    metrics::counter!("db_wakeup_statements_total").increment(1);
                    metrics::counter!("db_wakeup_notifications_total").increment(n as u64);
                }
                Err(e) => {
                    conn = None;
                    metrics::counter!("db_wakeup_failures_total").increment(1);
                    tracing::debug!(error = %e, "wake-up not sent; listeners poll meanwhile");
                    // Back in front of what came since, and tried again shortly.
                    requeue(&link.pending, batch);
                    tokio::time::sleep(RETRY_AFTER).await;
                    link.signal.notify_one();
                }
            }
        }
        if link.closed.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// One autocommit statement carrying every notification of the batch.
async fn send_batch(
    conn: &mut Option<PgConnection>,
    options: &PgConnectOptions,
    batch: &Pending,
) -> Result<usize, sqlx::Error> {
    let live = match conn {
        Some(c) => c,
        None => conn.insert(options.connect().await?),
    };
    let (channels, payloads): (Vec<&str>, Vec<String>) = batch.notifications().into_iter().unzip();
    sqlx::query!(
        "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS u(c, p)",
        &channels as &[&str],
        &payloads,
    )
    .execute(&mut *live)
    .await?;
    Ok(channels.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_split_below_the_payload_limit_and_read_back() {
        let mut p = Pending::default();
        for id in 1..=3_000 {
            p.order(1_000_000 + id);
        }
        p.job("common");
        let n = p.notifications();
        assert_eq!(n[0], (NOTIFY_CHANNEL, "common".to_owned()));
        let orders: Vec<i64> = n[1..]
            .iter()
            .inspect(|(c, payload)| {
                assert_eq!(*c, CHANGES_CHANNEL);
                assert!(payload.len() <= MAX_PAYLOAD_BYTES);
            })
            .flat_map(|(_, payload)| order_ids(payload).unwrap_or_default())
            .collect();
        assert_eq!(orders, (1_000_001..=1_003_000).collect::<Vec<_>>());
        assert!(n.len() > 2);
    }

    #[test]
    fn too_many_orders_become_one_wake_all() {
        let mut p = Pending::default();
        for id in 0..=MAX_PENDING_ORDERS as i64 {
            p.order(id);
        }
        assert!(p.all_orders && p.orders.is_empty());
        assert_eq!(p.notifications(), vec![(CHANGES_CHANNEL, String::new())]);
        assert_eq!(order_ids(""), None);
        assert_eq!(order_ids("1,x"), None);
        assert_eq!(order_ids("7,8"), Some(vec![7, 8]));
    }
}
