//! The recurring charge (DESIGN §4/§5): decide under the subscription's lock, record the
//! attempt, call KakaoPay's `subscription` API, and apply its answer in one transaction
//! (`outcome`); the attempt rows (`attempts`); the reconciliation of ambiguous charges
//! (`reconcile`); SID inactivation and the sweep that re-enqueues any due subscription
//! whose charge job is missing (`housekeeping`).

mod attempts;
mod batch;
mod housekeeping;
mod outcome;
mod reconcile;

use attempts::*;
pub(crate) use attempts::{mark_not_charged, mark_unknown, open_attempt_of};
pub use batch::Batches;
pub use housekeeping::{inactivate_sid, sweep};
use outcome::*;
pub(crate) use outcome::{apply_success, ViaCheckout};
pub use reconcile::{reconcile, reconcile_now, ReconcileAction};
// The attempt status as the query macros in the submodules name it (`super::…`).
use super::AttemptStatus;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::{
    cancel_locked, cancel_locked_with_code, lock, policy, record_event, reschedule, EventExtra,
    Next, Policy, Row, SubscriptionStatus,
};
use crate::error::{Error, Result};
use crate::ids::{OrderId, SubscriptionId};
use crate::jobs::{self, Outcome, Task};
use crate::money::Money;
use crate::pg::policy::{self as error_policy, Action, Step};
use crate::pg::{self, ChargeRequest, DeclineClass, GatewayError};
use crate::{store, tasks, Ctx};

/// A product as priced when an attempt started; the cycle's order is written from these.
pub(crate) type PricedLine = crate::store::orders::LineRow;

/// An attempt as the outcome handlers need it.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) id: i64,
    pub(crate) subscription_id: SubscriptionId,
    pub(crate) cycle: i32,
    pub(crate) partner_order_id: String,
    pub(crate) amount: Money,
    pub(crate) lines: Vec<PricedLine>,
    pub(crate) started_at: DateTime<Utc>,
}

/// What KakaoPay said about a successful charge (nothing when reconciliation found it).
#[derive(Debug, Default)]
pub(crate) struct Approval {
    pub(crate) tid: Option<String>,
    pub(crate) aid: Option<String>,
    pub(crate) digest: Option<String>,
}

/// Task `subscription.charge {subscription_id, cycle, seq}`.
///
/// Under the subscription's lock: a canceled, paused, already charged or rescheduled
/// (`seq` superseded) subscription is not charged; an attempt left `in_flight` by a
/// crashed worker becomes `unknown` and goes to reconciliation; the once-a-day guard moves
/// a charge that would be the second of a local day. Otherwise the attempt is recorded
/// and committed before KakaoPay is called, so a crash at any point leaves evidence.
/// Charges running at once in this process are started and finished in shared
/// transactions ([`batch`]).
pub async fn charge(ctx: &Ctx, id: SubscriptionId, cycle: i32, seq: i32) -> Result<Outcome> {
    let policy = policy(ctx)?;
    // Before anything is recorded: while the breaker is open, or the rate cap has no
    // permit in time, the charge is deferred untouched, and no attempt (dunning or
    // otherwise) is used up.
    let permit = match ctx.pg_guard.admit("subscription").await {
        Ok(p) => p,
        Err(e) => return Ok(job_outcome(ctx, error_policy::decide(Step::Charge, &e), &e)),
    };
    let (s, sid, attempt) = match batch::start(ctx, batch::Due { id, cycle, seq }).await? {
        batch::Started::Charge { s, sid, attempt } => (s, sid, attempt),
        batch::Started::Finished(outcome) => return Ok(outcome),
    };

    let lines = &attempt.lines;
    let units: i64 = lines.iter().map(|l| i64::from(l.quantity)).sum();
    let req = ChargeRequest {
        sid,
        partner_order_id: attempt.partner_order_id.clone(),
        partner_user_id: partner_user_id(&s),
        item_name: pg::item_name(lines[0].name.clone(), lines.len() as i64),
        item_code: None,
        quantity: u32::try_from(units).unwrap_or(u32::MAX),
        total_amount: attempt.amount,
        tax_free_amount: Money::ZERO,
        vat_amount: None,
    };
    match permit.call(ctx.gateway.subscription_charge(&req)).await {
        Ok(res) => {
            let approval = Approval {
                tid: Some(res.tid.clone()),
                aid: Some(res.aid.clone()),
                digest: pg::digest(&res),
            };
            let charged_at = ctx.clock.now();
            batch::finish(
                ctx,
                batch::Charged {
                    attempt,
                    approval,
                    charged_at,
                },
            )
            .await?;
            Ok(Outcome::Done)
        }
        Err(e) => apply_failure(ctx, &policy, &s, &attempt, e).await,
    }
}

/// The job's outcome for an action the charge steps leave to the runtime.
pub(crate) fn job_outcome(ctx: &Ctx, action: Action, e: &GatewayError) -> Outcome {
    error_policy::job_outcome(action, e, ctx.pg_guard.misconfigured_hold())
}

/// The SID's original partner user id (the first payment's).
pub(crate) fn partner_user_id(s: &Row) -> String {
    format!("pv-user-{}", s.user_id.0)
}
