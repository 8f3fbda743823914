//! The dispatch table: which `billing` call runs for each task name, above the domain.
//! A row's `metadata.type` picks the entry, the entry decodes the payload (plain data
//! from `billing::tasks`) and runs it with the worker's handles; what comes back is a
//! typed [`Outcome`] the runtime acts on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use billing::jobs::{Outcome, Task};
use billing::tasks::*;
use billing::Ctx;

/// Running a task: one `billing` call with the worker's handles.
#[async_trait]
pub trait Perform: Task {
    async fn perform(&self, ctx: &Ctx) -> Outcome;
}

/// A decoded task, ready to run.
#[async_trait]
pub trait Runnable: Send + Sync {
    async fn run(&self, ctx: &Ctx) -> Outcome;
    /// The wait before retry number `retries + 1` (before jitter and the cap).
    fn backoff(&self, retries: u32) -> Duration;
    /// A periodic task's pattern, and whether it is unique (to queue its next occurrence).
    fn cron(&self) -> Option<&'static str>;
    fn unique(&self) -> bool;
}

struct Decoded<T>(T);

#[async_trait]
impl<T: Perform> Runnable for Decoded<T> {
    async fn run(&self, ctx: &Ctx) -> Outcome {
        self.0.perform(ctx).await
    }

    fn backoff(&self, retries: u32) -> Duration {
        self.0.backoff(retries)
    }

    fn cron(&self) -> Option<&'static str> {
        self.0.cron()
    }

    fn unique(&self) -> bool {
        self.0.unique()
    }
}

type Decoder = fn(serde_json::Value) -> Result<Box<dyn Runnable>, serde_json::Error>;

fn decode<T: Perform>(metadata: serde_json::Value) -> Result<Box<dyn Runnable>, serde_json::Error> {
    Ok(Box::new(Decoded(serde_json::from_value::<T>(metadata)?)))
}

/// Why a row could not become a runnable task (the row fails; the worker goes on).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("no task named `{0}` in this worker")]
    Unknown(String),
    #[error("task `{name}` does not decode: {source}")]
    Malformed {
        name: String,
        source: serde_json::Error,
    },
}

/// Task names → decoders. [`Registry::standard`] holds every task of `billing::tasks`.
#[derive(Clone, Default)]
pub struct Registry {
    decoders: Arc<HashMap<&'static str, Decoder>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.decoders.keys().collect();
        names.sort();
        f.debug_struct("Registry").field("tasks", &names).finish()
    }
}

impl Registry {
    /// Adds (or replaces) the entry of `T`.
    pub fn with<T: Perform>(mut self) -> Self {
        Arc::make_mut(&mut self.decoders).insert(T::NAME, decode::<T>);
        self
    }

    /// Every task the engine queues.
    pub fn standard() -> Self {
        Self::default()
            .with::<Probe>()
            .with::<Noop>()
            .with::<FlushViews>()
            .with::<FoldSales>()
            .with::<PruneRetention>()
            .with::<PaymentReady>()
            .with::<PaymentApprove>()
            .with::<PaymentCancel>()
            .with::<PaymentReconcile>()
            .with::<OrderCountSales>()
            .with::<OrderClearCart>()
            .with::<SubscriptionCharge>()
            .with::<SubscriptionReconcile>()
            .with::<SubscriptionInactivateSid>()
            .with::<SubscriptionsSweep>()
            .with::<CheckoutReady>()
            .with::<CheckoutApprove>()
            .with::<CheckoutReconcile>()
            .with::<CheckoutRetireSid>()
            .with::<RemindRenewals>()
            .with::<WebhookDeliver>()
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.decoders.keys().copied()
    }

    /// The row's task, decoded.
    pub fn decode(&self, metadata: &serde_json::Value) -> Result<Box<dyn Runnable>, DecodeError> {
        let name = metadata
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        let decoder = self
            .decoders
            .get(name)
            .ok_or_else(|| DecodeError::Unknown(name.to_owned()))?;
        decoder(metadata.clone()).map_err(|source| DecodeError::Malformed {
            name: name.to_owned(),
            source,
        })
    }
}

#[async_trait]
impl Perform for Probe {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of_unit(billing::probes::run(ctx, self).await)
    }
}

#[async_trait]
impl Perform for Noop {
    async fn perform(&self, _ctx: &Ctx) -> Outcome {
        Outcome::Done
    }
}

#[async_trait]
impl Perform for FlushViews {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of_unit(billing::items::flush_views(ctx).await.map(|_| ()))
    }
}

#[async_trait]
impl Perform for PruneRetention {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of_unit(billing::retention::prune(ctx).await.map(|_| ()))
    }
}

#[async_trait]
impl Perform for FoldSales {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of_unit(billing::items::fold_sales(ctx).await.map(|_| ()))
    }
}

#[async_trait]
impl Perform for RemindRenewals {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of_unit(
            billing::subscriptions::remind_renewals(ctx)
                .await
                .map(|_| ()),
        )
    }
}

#[async_trait]
impl Perform for PaymentReady {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of(billing::payments::ready(ctx, self.id()).await)
    }
}

#[async_trait]
impl Perform for PaymentApprove {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of(billing::payments::approve(ctx, self.id()).await)
    }
}

#[async_trait]
impl Perform for PaymentCancel {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of(billing::payments::refund(ctx, self.id()).await)
    }
}

#[async_trait]
impl Perform for PaymentReconcile {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of(billing::payments::reconcile(ctx, self.id()).await)
    }
}

#[async_trait]
impl Perform for OrderCountSales {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of_unit(billing::orders::count_sales(ctx, self.id()).await)
    }
}

#[async_trait]
impl Perform for OrderClearCart {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of_unit(billing::orders::clear_cart(ctx, self.id()).await)
    }
}

#[async_trait]
impl Perform for SubscriptionCharge {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of(
            billing::subscriptions::charge::charge(ctx, self.id(), self.cycle, self.seq).await,
        )
    }
}

#[async_trait]
impl Perform for SubscriptionReconcile {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of(
            billing::subscriptions::charge::reconcile(ctx, self.attempt_id, self.round).await,
        )
    }
}

#[async_trait]
impl Perform for SubscriptionInactivateSid {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of(billing::subscriptions::charge::inactivate_sid(ctx, self.id()).await)
    }
}

#[async_trait]
impl Perform for CheckoutReady {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of(billing::subscriptions::checkout::ready(ctx, self.id()).await)
    }
}

#[async_trait]
impl Perform for CheckoutApprove {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of(billing::subscriptions::checkout::approve(ctx, self.id()).await)
    }
}

#[async_trait]
impl Perform for CheckoutReconcile {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of(billing::subscriptions::checkout::reconcile(ctx, self.id()).await)
    }
}

#[async_trait]
impl Perform for CheckoutRetireSid {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of(billing::subscriptions::checkout::retire_sid(ctx, self.id()).await)
    }
}

#[async_trait]
impl Perform for SubscriptionsSweep {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        let limit = self.limit.unwrap_or(10_000);
        Outcome::of_unit(
            billing::subscriptions::charge::sweep(ctx, limit)
                .await
                .map(|_| ()),
        )
    }
}

#[async_trait]
impl Perform for WebhookDeliver {
    async fn perform(&self, ctx: &Ctx) -> Outcome {
        Outcome::of_unit(billing::webhooks::deliver(ctx, self.id(), self.round, self.attempt).await)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_queued_name_has_an_entry_and_rows_decode_by_name() {
        let r = Registry::standard();
        let mut names: Vec<_> = r.names().collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "diag.noop",
                "diag.probe",
                "items.flush_views",
                "items.fold_sales",
                "maintenance.prune",
                "orders.clear_cart",
                "orders.count_sales",
                "payment.approve",
                "payment.cancel",
                "payment.inactivate_sid",
                "payment.ready",
                "payment.reconcile",
                "subscription.charge",
                "subscription.checkout_approve",
                "subscription.checkout_ready",
                "subscription.checkout_reconcile",
                "subscription.reconcile",
                "subscription.retire_sid",
                "subscriptions.remind_renewals",
                "subscriptions.sweep",
                "webhooks.deliver",
            ]
        );
        // Operators' tools (the cancel policy) know the same tasks this table runs.
        let mut catalogue: Vec<_> = billing::tasks::CATALOGUE.iter().map(|k| k.name).collect();
        catalogue.sort_unstable();
        assert_eq!(names, catalogue);
        let row = serde_json::json!({"type": "payment.approve", "payment_id": 9});
        assert!(r.decode(&row).is_ok());
        // A checkout approval queued before `round` existed decodes as round 0.
        let row = serde_json::json!({"type": "subscription.checkout_approve", "checkout_id": 4});
        assert!(r.decode(&row).is_ok());
        let unknown = serde_json::json!({"type": "no.such", "x": 1});
        assert!(matches!(r.decode(&unknown), Err(DecodeError::Unknown(n)) if n == "no.such"));
        let bad = serde_json::json!({"type": "payment.approve", "payment_id": "nine"});
        assert!(matches!(r.decode(&bad), Err(DecodeError::Malformed { .. })));
        let sweep = r
            .decode(&serde_json::json!({"type": "subscriptions.sweep"}))
            .unwrap();
        assert_eq!(sweep.cron(), Some("0 */5 * * * *"));
        assert!(sweep.unique());
    }
}
