//! The task catalogue: every job's payload, a small struct of ids with a pinned name (the
//! `type` stored in `fang_tasks.metadata`), its pool, priority, retry budget and whether
//! operators may cancel it. Plain data (and the cancel that obeys it): the use cases
//! enqueue these; which `billing` call runs for each is the worker's dispatch table,
//! above the domain.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{CheckoutId, DeliveryId, OrderId, PaymentId, SubscriptionId};
use crate::jobs::{Cancel, Priority, Task};

/// The task type (worker pool key) of every task that calls the payment gateway, so
/// operators can give PG calls their own pool and concurrency.
pub const PG_TASK_TYPE: &str = "pg";

/// The task type of webhook deliveries, so operators can give calls to receivers their
/// own pool (a slow receiver then never holds up payments).
pub const WEBHOOK_TASK_TYPE: &str = "webhook";

/// Retries of a payment step (the PG did not answer, or the database failed) before it
/// lands in the failed-jobs list for operators. At the 60 s cap this is over a day of a PG
/// outage; refusals by our own guard are deferrals and do not count.
pub const PAYMENT_RETRIES: i32 = 1_500;

/// Backoff of the payment steps' own retries: 1, 2, 4 … 60 s.
fn payment_backoff(retries: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(retries).min(60))
}

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
    /// Claim priority: 0 bulk, 1 normal (default), 2 urgent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i16>,
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
            priority: None,
        }
    }
}

impl Task for Probe {
    const NAME: &'static str = "diag.probe";

    fn unique(&self) -> bool {
        self.unique
    }

    fn task_type(&self) -> Cow<'static, str> {
        Cow::Owned(self.task_type.clone().unwrap_or_else(|| "common".into()))
    }

    fn max_retries(&self) -> i32 {
        self.max_retries.unwrap_or(5)
    }

    fn priority(&self) -> Priority {
        match self.priority {
            Some(0) => Priority::Bulk,
            Some(2) => Priority::Urgent,
            _ => Priority::Normal,
        }
    }

    fn backoff(&self, _retries: u32) -> Duration {
        Duration::from_secs(1)
    }

    const CANCEL: Cancel = Cancel::Allowed;
}

/// Does nothing: the unit of the runtime's throughput benchmark.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Noop {
    #[serde(default)]
    pub n: u64,
}

impl Task for Noop {
    const NAME: &'static str = "diag.noop";
    const CANCEL: Cancel = Cancel::Allowed;
}

/// Implements [`Task`] for a periodic task: unique (one occurrence at a time across the
/// fleet), on a cron pattern, bulk, never retried (the next occurrence is the retry).
macro_rules! periodic {
    ($task:ident, $name:literal, $cron:literal) => {
        impl Task for $task {
            const NAME: &'static str = $name;

            fn unique(&self) -> bool {
                true
            }

            fn cron(&self) -> Option<&'static str> {
                Some($cron)
            }

            fn max_retries(&self) -> i32 {
                0
            }

            fn priority(&self) -> Priority {
                Priority::Bulk
            }

            const CANCEL: Cancel = Cancel::Refused(PERIODIC_REFUSAL);
        }
    };
}

/// Why a periodic task may not be canceled.
const PERIODIC_REFUSAL: &str =
    "a periodic task: its next occurrence is queued when this one ends, so its schedule would stop";

/// Adds the unique views counted in Redis into `items.view_count`, every minute.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlushViews {}

periodic!(FlushViews, "items.flush_views", "0 * * * * *");

/// Folds paid orders' sales deltas into `items.sales`, every five seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FoldSales {}

periodic!(FoldSales, "items.fold_sales", "*/5 * * * * *");

/// Deletes what is past its retention (`retention.*`), every ten minutes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PruneRetention {}

periodic!(PruneRetention, "maintenance.prune", "0 */10 * * * *");

/// Implements [`Task`] for a step that calls the PG: unique, in the PG pool, with the
/// PG steps' retry budget and backoff.
macro_rules! pg_step {
    ($task:ident, $name:literal, $priority:expr) => {
        impl Task for $task {
            const NAME: &'static str = $name;

            fn unique(&self) -> bool {
                true
            }

            fn task_type(&self) -> Cow<'static, str> {
                Cow::Borrowed(PG_TASK_TYPE)
            }

            fn max_retries(&self) -> i32 {
                PAYMENT_RETRIES
            }

            fn backoff(&self, retries: u32) -> Duration {
                payment_backoff(retries)
            }

            fn priority(&self) -> Priority {
                $priority
            }

            const CANCEL: Cancel = Cancel::Refused(
                "a payment step: the order, charge or checkout it belongs to would wait for it forever",
            );
        }
    };
}

/// `payment.ready`: asks KakaoPay for the order's tid and redirect URLs (a buyer waits).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentReady {
    pub payment_id: i64,
}

impl PaymentReady {
    pub fn id(&self) -> PaymentId {
        PaymentId(self.payment_id)
    }
}

pg_step!(PaymentReady, "payment.ready", Priority::Urgent);

/// `payment.approve`: approves with the buyer's pg_token. `round` tells a re-approval
/// after reconciliation apart from the first (so each is its own unique task).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentApprove {
    pub payment_id: i64,
    #[serde(default)]
    pub round: i32,
}

impl PaymentApprove {
    pub fn id(&self) -> PaymentId {
        PaymentId(self.payment_id)
    }
}

pg_step!(PaymentApprove, "payment.approve", Priority::Urgent);

/// `payment.cancel`: refunds a paid order whose refund was requested.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentCancel {
    pub payment_id: i64,
    #[serde(default)]
    pub round: i32,
}

impl PaymentCancel {
    pub fn id(&self) -> PaymentId {
        PaymentId(self.payment_id)
    }
}

pg_step!(PaymentCancel, "payment.cancel", Priority::Urgent);

/// `payment.reconcile`: asks KakaoPay by tid what became of an undecided approval or
/// refund. `round` numbers the inquiries of one payment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentReconcile {
    pub payment_id: i64,
    pub round: i32,
}

impl PaymentReconcile {
    pub fn id(&self) -> PaymentId {
        PaymentId(self.payment_id)
    }
}

pg_step!(PaymentReconcile, "payment.reconcile", Priority::Urgent);

/// `orders.count_sales`: counts a paid order's sales (once). Paying transactions count
/// their own now; this name stays for rows queued before they did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderCountSales {
    pub order_id: i64,
}

impl OrderCountSales {
    pub fn id(&self) -> OrderId {
        OrderId(self.order_id)
    }
}

impl Task for OrderCountSales {
    const NAME: &'static str = "orders.count_sales";

    fn unique(&self) -> bool {
        true
    }

    fn priority(&self) -> Priority {
        Priority::Bulk
    }

    const CANCEL: Cancel = Cancel::Refused("the paid order's sales would never be counted");
}

/// `orders.clear_cart`: removes a paid cart checkout's lines from the cart (once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderClearCart {
    pub order_id: i64,
}

impl OrderClearCart {
    pub fn id(&self) -> OrderId {
        OrderId(self.order_id)
    }
}

impl Task for OrderClearCart {
    const NAME: &'static str = "orders.clear_cart";

    fn unique(&self) -> bool {
        true
    }

    const CANCEL: Cancel =
        Cancel::Refused("the paid checkout's lines would stay in the buyer's cart");
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

impl SubscriptionCharge {
    pub fn id(&self) -> SubscriptionId {
        SubscriptionId(self.subscription_id)
    }
}

pg_step!(SubscriptionCharge, "subscription.charge", Priority::Bulk);

/// `subscription.reconcile`: decides an ambiguous charge from the SID's status. `round`
/// numbers the inquiries of one attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionReconcile {
    pub attempt_id: i64,
    pub round: i32,
}

pg_step!(
    SubscriptionReconcile,
    "subscription.reconcile",
    Priority::Urgent
);

/// `payment.inactivate_sid`: makes a canceled subscription's SID unusable at KakaoPay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionInactivateSid {
    pub subscription_id: i64,
}

impl SubscriptionInactivateSid {
    pub fn id(&self) -> SubscriptionId {
        SubscriptionId(self.subscription_id)
    }
}

pg_step!(
    SubscriptionInactivateSid,
    "payment.inactivate_sid",
    Priority::Normal
);

/// `subscription.checkout_ready`: asks KakaoPay for a recovery or resubscribe
/// checkout's tid and the buyer's redirect URLs (a buyer waits).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckoutReady {
    pub checkout_id: i64,
}

impl CheckoutReady {
    pub fn id(&self) -> CheckoutId {
        CheckoutId(self.checkout_id)
    }
}

pg_step!(
    CheckoutReady,
    "subscription.checkout_ready",
    Priority::Urgent
);

/// `subscription.checkout_approve`: approves a checkout the buyer approved, paying the
/// subscription's overdue cycle. `round` tells a re-approval after reconciliation apart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckoutApprove {
    pub checkout_id: i64,
    #[serde(default)]
    pub round: i32,
}

impl CheckoutApprove {
    pub fn id(&self) -> CheckoutId {
        CheckoutId(self.checkout_id)
    }
}

pg_step!(
    CheckoutApprove,
    "subscription.checkout_approve",
    Priority::Urgent
);

/// `subscription.checkout_reconcile`: asks KakaoPay what became of a checkout's approval
/// that got no answer (order inquiry by tid).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckoutReconcile {
    pub checkout_id: i64,
    pub round: i32,
}

impl CheckoutReconcile {
    pub fn id(&self) -> CheckoutId {
        CheckoutId(self.checkout_id)
    }
}

pg_step!(
    CheckoutReconcile,
    "subscription.checkout_reconcile",
    Priority::Urgent
);

/// `subscription.retire_sid`: inactivates at KakaoPay the SID a checkout replaced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckoutRetireSid {
    pub checkout_id: i64,
}

impl CheckoutRetireSid {
    pub fn id(&self) -> CheckoutId {
        CheckoutId(self.checkout_id)
    }
}

pg_step!(
    CheckoutRetireSid,
    "subscription.retire_sid",
    Priority::Normal
);

/// `subscriptions.sweep`: enqueues the charge job of any due subscription that lacks one,
/// every five minutes (a safety net; normally every charge job is scheduled ahead).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionsSweep {
    /// Most subscriptions enqueued per run (default 10,000).
    #[serde(default)]
    pub limit: Option<i64>,
}

impl Task for SubscriptionsSweep {
    const NAME: &'static str = "subscriptions.sweep";

    fn unique(&self) -> bool {
        true
    }

    /// Only the unlimited sweep is periodic; one with a limit is an operator's (or a
    /// benchmark's) single run.
    fn cron(&self) -> Option<&'static str> {
        self.limit.is_none().then_some("0 */5 * * * *")
    }

    fn max_retries(&self) -> i32 {
        0
    }

    fn priority(&self) -> Priority {
        Priority::Bulk
    }

    const CANCEL: Cancel = Cancel::Refused(PERIODIC_REFUSAL);
}

/// `subscriptions.remind_renewals`: writes `subscription.renewal_upcoming` for the cycles
/// coming within `subscriptions.renewal_reminder_days`, every ten minutes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemindRenewals {}

periodic!(
    RemindRenewals,
    "subscriptions.remind_renewals",
    "0 */10 * * * *"
);

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

    pub fn id(&self) -> DeliveryId {
        DeliveryId(self.delivery_id)
    }
}

impl Task for WebhookDeliver {
    const NAME: &'static str = "webhooks.deliver";

    fn unique(&self) -> bool {
        true
    }

    fn task_type(&self) -> Cow<'static, str> {
        Cow::Borrowed(WEBHOOK_TASK_TYPE)
    }

    fn max_retries(&self) -> i32 {
        20
    }

    fn backoff(&self, retries: u32) -> Duration {
        Duration::from_secs(2u64.saturating_pow(retries).min(60))
    }

    const CANCEL: Cancel = Cancel::Refused(
        "a webhook delivery attempt: the delivery would stay pending forever (disable its endpoint instead)",
    );
}

/// A kind of task as operators' tools see it: its name and whether a waiting one may be
/// canceled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub name: &'static str,
    pub cancel: Cancel,
}

macro_rules! catalogue {
    ($($task:ty),* $(,)?) => {
        &[$(Kind { name: <$task>::NAME, cancel: <$task>::CANCEL }),*]
    };
}

/// Every task the engine queues (the worker's dispatch table runs the same names).
pub const CATALOGUE: &[Kind] = catalogue![
    PaymentReady,
    PaymentApprove,
    PaymentCancel,
    PaymentReconcile,
    SubscriptionCharge,
    SubscriptionReconcile,
    SubscriptionInactivateSid,
    CheckoutReady,
    CheckoutApprove,
    CheckoutReconcile,
    CheckoutRetireSid,
    OrderCountSales,
    OrderClearCart,
    FlushViews,
    FoldSales,
    PruneRetention,
    RemindRenewals,
    SubscriptionsSweep,
    WebhookDeliver,
    Probe,
    Noop,
];

/// An operator's cancel of a waiting job (`new` or `retried`), where the catalogue allows
/// its kind ([`cancel_policy`]); refused kinds are `Error::JobNotCancelable`, nothing
/// changed. The row is removed; the audit row (in the same transaction) keeps its payload.
pub async fn cancel(
    ctx: &crate::Ctx,
    actor: &crate::audit::Actor,
    id: uuid::Uuid,
) -> crate::Result<crate::jobs::JobView> {
    crate::jobs::cancel(ctx, actor, id, cancel_policy).await
}

/// The pools (`task_type`s) jobs go to: the engine's own, then those the worker's
/// settings add, each once.
pub fn pools(worker: &crate::settings::WorkerSettings) -> Vec<String> {
    let mut out: Vec<String> = ["common", PG_TASK_TYPE, WEBHOOK_TASK_TYPE]
        .into_iter()
        .map(String::from)
        .collect();
    for t in worker.pools.values().flat_map(|p| &p.task_types) {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

/// Whether a waiting task named `name` may be canceled. A name this release does not
/// know is refused: it may be a newer release's payment step.
pub fn cancel_policy(name: &str) -> Cancel {
    CATALOGUE
        .iter()
        .find(|k| k.name == name)
        .map_or(Cancel::Refused("a task this release does not know"), |k| {
            k.cancel
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::jobs::Job;

    #[test]
    fn rows_keep_fangs_format_and_uniqueness_key() {
        let job = Job::of(&SubscriptionReconcile {
            attempt_id: 7,
            round: 2,
        })
        .unwrap();
        assert_eq!(job.metadata["type"], "subscription.reconcile");
        assert_eq!(job.metadata["attempt_id"], 7);
        assert_eq!(job.task_type, PG_TASK_TYPE);
        assert_eq!(job.priority, Priority::Urgent);
        // fang's definition: sha256 of the metadata's JSON text, `type` first.
        let text = r#"{"type":"subscription.reconcile","attempt_id":7,"round":2}"#;
        let sorted = r#"{"attempt_id":7,"round":2,"type":"subscription.reconcile"}"#;
        let hash = |t: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(t.as_bytes()));
        let got = job.uniq_hash.unwrap();
        assert!(got == hash(text) || got == hash(sorted), "{got}");
    }

    #[test]
    fn a_row_written_by_earlier_releases_decodes() {
        // As typetag wrote it (fang's `AsyncRunnable`), including a field added later
        // (`seq`, defaulted) and the `type` tag, which payloads ignore.
        let row =
            serde_json::json!({"type": "subscription.charge", "subscription_id": 3, "cycle": 4});
        let t: SubscriptionCharge = serde_json::from_value(row).unwrap();
        assert_eq!((t.subscription_id, t.cycle, t.seq), (3, 4, 0));
    }

    #[test]
    fn only_tasks_nothing_waits_on_may_be_canceled() {
        let allowed: Vec<&str> = CATALOGUE
            .iter()
            .filter(|k| k.cancel == Cancel::Allowed)
            .map(|k| k.name)
            .collect();
        assert_eq!(allowed, ["diag.probe", "diag.noop"]);
        for name in ["subscription.charge", "payment.approve", "webhooks.deliver"] {
            assert!(matches!(cancel_policy(name), Cancel::Refused(_)), "{name}");
        }
        assert!(matches!(
            cancel_policy("payment.someday"),
            Cancel::Refused(_)
        ));
        let mut names: Vec<&str> = CATALOGUE.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len(), "a name twice");
    }

    #[test]
    fn bulk_work_yields_to_what_someone_waits_for() {
        let p = |j: Job| j.priority;
        let table = [
            (
                p(Job::of(&PaymentReady { payment_id: 1 }).unwrap()),
                Priority::Urgent,
            ),
            (
                p(Job::of(&PaymentApprove {
                    payment_id: 1,
                    round: 0,
                })
                .unwrap()),
                Priority::Urgent,
            ),
            (
                p(Job::of(&PaymentCancel {
                    payment_id: 1,
                    round: 0,
                })
                .unwrap()),
                Priority::Urgent,
            ),
            (
                p(Job::of(&PaymentReconcile {
                    payment_id: 1,
                    round: 1,
                })
                .unwrap()),
                Priority::Urgent,
            ),
            (
                p(Job::of(&SubscriptionReconcile {
                    attempt_id: 1,
                    round: 1,
                })
                .unwrap()),
                Priority::Urgent,
            ),
            (
                p(Job::of(&SubscriptionCharge {
                    subscription_id: 1,
                    cycle: 2,
                    seq: 0,
                })
                .unwrap()),
                Priority::Bulk,
            ),
            (
                p(Job::of(&OrderCountSales { order_id: 1 }).unwrap()),
                Priority::Bulk,
            ),
            (p(Job::of(&FlushViews {}).unwrap()), Priority::Bulk),
            (p(Job::of(&FoldSales {}).unwrap()), Priority::Bulk),
            (p(Job::of(&RemindRenewals {}).unwrap()), Priority::Bulk),
            (
                p(Job::of(&OrderClearCart { order_id: 1 }).unwrap()),
                Priority::Normal,
            ),
        ];
        for (got, want) in table {
            assert_eq!(got, want);
        }
    }
}
