//! Task definitions: each a small struct of ids plus one `billing` call, with a pinned
//! name (the typetag tag stored in `fang_tasks.metadata`), so renaming a struct never
//! strands queued rows.

use async_trait::async_trait;
use fang::typetag;
use fang::{AsyncQueueable, AsyncRunnable, FangError};
use serde::{Deserialize, Serialize};

use crate::ids::{DeliveryId, OrderId, PaymentId, SubscriptionId};
use crate::jobs::{context, task_error};

/// The task type (worker pool key) of every task that calls the payment gateway, so
/// operators can give PG calls their own pool and concurrency.
pub const PG_TASK_TYPE: &str = "pg";

/// The task type of webhook deliveries, so operators can give calls to receivers their
/// own pool (a slow receiver then never holds up payments).
pub const WEBHOOK_TASK_TYPE: &str = "webhook";

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

/// Backoff of the payment steps' own retries (nothing-sent failures): 1, 2, 4 … 60 s.
fn payment_backoff(attempt: u32) -> u32 {
    2u32.saturating_pow(attempt).min(60)
}

/// Retries of a payment step before it lands in the failed-jobs list for operators. At
/// the 60 s cap this is over a day of a PG outage.
const PAYMENT_RETRIES: i32 = 1_500;

/// The `AsyncRunnable` of a step that calls the PG: one `billing` call, unique, in the PG
/// pool, with the PG steps' retry budget and backoff.
macro_rules! pg_step {
    ($task:ident, $name:literal, |$self:ident, $ctx:ident| $call:expr) => {
        #[typetag::serde(name = $name)]
        #[async_trait]
        impl AsyncRunnable for $task {
            async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
                let $ctx = context()?;
                let $self = self;
                $call.await.map_err(task_error)
            }

            fn uniq(&self) -> bool {
                true
            }

            fn task_type(&self) -> String {
                PG_TASK_TYPE.into()
            }

            fn max_retries(&self) -> i32 {
                PAYMENT_RETRIES
            }

            fn backoff(&self, attempt: u32) -> u32 {
                payment_backoff(attempt)
            }
        }
    };
}

/// A payment step: [`pg_step`] with the payment id.
macro_rules! payment_step {
    ($task:ident, $name:literal, $step:path) => {
        pg_step!($task, $name, |t, ctx| $step(&ctx, PaymentId(t.payment_id)));
    };
}

/// `payment.ready`: asks KakaoPay for the order's tid and redirect URLs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentReady {
    pub payment_id: i64,
}

payment_step!(PaymentReady, "payment.ready", crate::payments::ready);

/// `payment.approve`: approves with the buyer's pg_token. `round` tells a re-approval
/// after reconciliation apart from the first (so each is its own unique task).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentApprove {
    pub payment_id: i64,
    #[serde(default)]
    pub round: i32,
}

payment_step!(PaymentApprove, "payment.approve", crate::payments::approve);

/// `payment.cancel`: refunds a paid order whose refund was requested.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentCancel {
    pub payment_id: i64,
    #[serde(default)]
    pub round: i32,
}

payment_step!(PaymentCancel, "payment.cancel", crate::payments::refund);

/// `payment.reconcile`: asks KakaoPay by tid what became of an undecided approval or
/// refund. `round` numbers the inquiries of one payment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentReconcile {
    pub payment_id: i64,
    pub round: i32,
}

payment_step!(
    PaymentReconcile,
    "payment.reconcile",
    crate::payments::reconcile
);

/// `orders.count_sales`: adds a paid order's quantities to its items' sales (once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderCountSales {
    pub order_id: i64,
}

#[typetag::serde(name = "orders.count_sales")]
#[async_trait]
impl AsyncRunnable for OrderCountSales {
    async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
        let ctx = context()?;
        crate::orders::count_sales(&ctx, OrderId(self.order_id))
            .await
            .map_err(task_error)
    }

    fn uniq(&self) -> bool {
        true
    }
}

/// `orders.clear_cart`: removes a paid cart checkout's lines from the cart (once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderClearCart {
    pub order_id: i64,
}

#[typetag::serde(name = "orders.clear_cart")]
#[async_trait]
impl AsyncRunnable for OrderClearCart {
    async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
        let ctx = context()?;
        crate::orders::clear_cart(&ctx, OrderId(self.order_id))
            .await
            .map_err(task_error)
    }

    fn uniq(&self) -> bool {
        true
    }
}

/// `subscription.charge`: charges a subscription's cycle if it is still due. `seq` is
/// the subscription's schedule sequence when this job was enqueued: a job superseded by
/// a reschedule does nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionCharge {
    pub subscription_id: i64,
    pub cycle: i32,
    #[serde(default)]
    pub seq: i32,
}

pg_step!(SubscriptionCharge, "subscription.charge", |t, ctx| {
    crate::subscriptions::charge::charge(&ctx, SubscriptionId(t.subscription_id), t.cycle, t.seq)
});

/// `subscription.reconcile`: decides an ambiguous charge from the SID's status. `round`
/// numbers the inquiries of one attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionReconcile {
    pub attempt_id: i64,
    pub round: i32,
}

/// The pinned name of [`SubscriptionReconcile`] (operators bring its jobs forward by it).
pub const SUBSCRIPTION_RECONCILE: &str = "subscription.reconcile";

pg_step!(SubscriptionReconcile, "subscription.reconcile", |t, ctx| {
    crate::subscriptions::charge::reconcile(&ctx, t.attempt_id, t.round)
});

/// `payment.inactivate_sid`: makes a canceled subscription's SID unusable at KakaoPay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionInactivateSid {
    pub subscription_id: i64,
}

pg_step!(
    SubscriptionInactivateSid,
    "payment.inactivate_sid",
    |t, ctx| {
        crate::subscriptions::charge::inactivate_sid(&ctx, SubscriptionId(t.subscription_id))
    }
);

/// `subscriptions.sweep`: enqueues the charge job of any due subscription that lacks one,
/// every five minutes (a safety net; normally every charge job is scheduled ahead).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionsSweep {
    /// Most subscriptions enqueued per run (default 10,000).
    #[serde(default)]
    pub limit: Option<i64>,
}

#[typetag::serde(name = "subscriptions.sweep")]
#[async_trait]
impl AsyncRunnable for SubscriptionsSweep {
    async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
        let ctx = context()?;
        crate::subscriptions::charge::sweep(&ctx, self.limit.unwrap_or(10_000))
            .await
            .map(|_| ())
            .map_err(task_error)
    }

    fn uniq(&self) -> bool {
        true
    }

    fn cron(&self) -> Option<fang::Scheduled> {
        self.limit
            .is_none()
            .then(|| fang::Scheduled::CronPattern("0 */5 * * * *".into()))
    }

    fn max_retries(&self) -> i32 {
        0
    }
}

/// `webhooks.deliver`: attempt `attempt` (1-based) of round `round` of a delivery. The
/// retry schedule is the delivery's own (each failed attempt queues the next one), so the
/// runtime's retries only cover database errors and crashed workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookDeliver {
    pub delivery_id: i64,
    pub round: i32,
    pub attempt: i32,
}

impl WebhookDeliver {
    /// The first attempt of a new delivery.
    pub fn first(id: DeliveryId) -> Self {
        Self {
            delivery_id: id.0,
            round: 1,
            attempt: 1,
        }
    }
}

#[typetag::serde(name = "webhooks.deliver")]
#[async_trait]
impl AsyncRunnable for WebhookDeliver {
    async fn run(&self, _queue: &dyn AsyncQueueable) -> Result<(), FangError> {
        let ctx = context()?;
        crate::webhooks::deliver(&ctx, DeliveryId(self.delivery_id), self.round, self.attempt)
            .await
            .map_err(task_error)
    }

    fn uniq(&self) -> bool {
        true
    }

    fn task_type(&self) -> String {
        WEBHOOK_TASK_TYPE.into()
    }

    fn max_retries(&self) -> i32 {
        20
    }

    fn backoff(&self, attempt: u32) -> u32 {
        2u32.saturating_pow(attempt).min(60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reconcile_name_constant_is_the_pinned_name() {
        let task: &dyn AsyncRunnable = &SubscriptionReconcile {
            attempt_id: 7,
            round: 2,
        };
        let encoded = serde_json::to_value(task).unwrap();
        assert_eq!(encoded["type"], SUBSCRIPTION_RECONCILE);
        assert_eq!(encoded["attempt_id"], 7);
    }
}
