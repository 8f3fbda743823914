//! The gateway-error policy: for every PG step and every kind of failed call, what the
//! step does. The one place this is decided; steps match on [`Action`], and the generic
//! actions become the job's [`Outcome`] here.

use std::time::Duration;

use super::{DeclineClass, ErrorKind, GatewayError};
use crate::jobs::Outcome;

/// A step of the payment flows that calls the PG (each runs as a job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// `payment.ready`: starts a checkout (nothing is charged).
    Ready,
    /// `payment.approve`: the buyer's approval (charges).
    Approve,
    /// `payment.cancel`: a refund (returns money).
    Cancel,
    /// `subscription.charge`: a recurring charge on the SID (charges).
    Charge,
    /// `payment.reconcile`: the order inquiry by tid (idempotent).
    Inquiry,
    /// `subscription.reconcile`: the SID status inquiry (idempotent).
    SidStatus,
    /// `payment.inactivate_sid` (idempotent).
    SidInactivate,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::Ready,
        Step::Approve,
        Step::Cancel,
        Step::Charge,
        Step::Inquiry,
        Step::SidStatus,
        Step::SidInactivate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Ready => "ready",
            Step::Approve => "approve",
            Step::Cancel => "cancel",
            Step::Charge => "charge",
            Step::Inquiry => "inquiry",
            Step::SidStatus => "sid_status",
            Step::SidInactivate => "sid_inactivate",
        }
    }
}

/// What a step does about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The customer's payment was refused (a soft decline, a checkout the buyer let
    /// expire): the step records it — the order fails, or dunning runs — and the job is
    /// done.
    CustomerFailure,
    /// It may have happened at the PG: decide by inquiry, never by sending it again.
    Reconcile,
    /// Nothing happened at the PG (or the call is idempotent): call again after the
    /// job's backoff, using up one retry.
    Retry,
    /// Not sent: this process's guard refused it. Run again later; no retry is used.
    Defer,
    /// The PG refuses our credentials or our address: the work waits (no retry used),
    /// operators are alerted, and no customer's order or subscription is failed for it.
    DeferMisconfigured,
    /// The request itself is wrong and will fail again: never re-sent. The step records
    /// the PG's code where the customer's row shows it, the job fails to the operators'
    /// list, and an alert fires.
    Reject,
    /// A hard decline of a recurring charge: no retry can succeed, so dunning ends at
    /// once — the subscription is canceled (`hard_decline`) as after its last attempt.
    HardDecline,
    /// What the step wanted is already so (a SID KakaoPay no longer accepts is as good as
    /// inactivated).
    AlreadyDone,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::CustomerFailure => "customer_failure",
            Action::Reconcile => "reconcile",
            Action::Retry => "retry",
            Action::Defer => "defer",
            Action::DeferMisconfigured => "defer_misconfigured",
            Action::Reject => "reject",
            Action::HardDecline => "hard_decline",
            Action::AlreadyDone => "already_done",
        }
    }
}

/// The table. Read a column as "what `step` does when its call fails with this kind".
pub fn action(step: Step, kind: ErrorKind) -> Action {
    use Action::*;
    use ErrorKind as K;
    use Step::*;
    match (kind, step) {
        (K::Configuration, _) => DeferMisconfigured,
        (K::Unavailable, _) => Defer,
        (K::Transient, _) => Retry,

        (K::Permanent, _) => Reject,

        // No retry can fix it (the SID is gone or not the buyer's): dunning ends now; and
        // a SID KakaoPay no longer accepts is as good as inactivated.
        (K::Decline(DeclineClass::Hard), Charge) => HardDecline,
        (K::Decline(DeclineClass::Hard), SidInactivate) => AlreadyDone,
        (K::Decline(_), Ready | Approve | Charge) => CustomerFailure,
        (K::Expired, Ready | Approve) => CustomerFailure,
        // A refund or an inquiry is not the customer's to refuse: an operator's call.
        (K::Decline(_) | K::Expired, Cancel | Charge | Inquiry | SidStatus | SidInactivate) => {
            Reject
        }

        // Sent, answer lost: where the call moves money, only an inquiry may decide.
        (K::Ambiguous | K::AlreadyDone | K::Mismatch, Approve | Cancel | Charge) => Reconcile,
        // A second ready only makes a new tid, and inquiries change nothing: ask again.
        (K::Ambiguous, Ready | Inquiry | SidStatus | SidInactivate) => Retry,
        (K::AlreadyDone, SidInactivate) => AlreadyDone,
        (K::AlreadyDone | K::Mismatch, Ready | Inquiry | SidStatus | SidInactivate) => Reject,
    }
}

/// [`action`] for a failed call, counted in `pg_failures_total{step, kind, action}` (the
/// alerts on rejected requests and on misconfiguration read it).
pub fn decide(step: Step, err: &GatewayError) -> Action {
    let a = action(step, err.kind);
    metrics::counter!("pg_failures_total", "step" => step.as_str(), "kind" => err.kind.as_str(),
        "action" => a.as_str())
    .increment(1);
    match a {
        Action::Reject => {
            tracing::error!(step = step.as_str(), error = %err, "the PG rejected the request; not re-sent, job failed for operators")
        }
        Action::DeferMisconfigured => {
            tracing::error!(step = step.as_str(), error = %err, "the PG refuses our credentials or address; work deferred until fixed")
        }
        _ => {}
    }
    a
}

/// The job's outcome for the actions that end in the runtime rather than in the step:
/// `Retry`, `Defer`, `DeferMisconfigured` (after `hold`, the guard's misconfiguration
/// hold) and `Reject`. `None` for the actions the step itself carries out.
pub fn outcome(action: Action, err: &GatewayError, hold: Duration) -> Option<Outcome> {
    let reason = err.to_string();
    match action {
        Action::Retry => Some(Outcome::Retry {
            after: None,
            reason,
        }),
        Action::Defer => Some(Outcome::Defer {
            after: err.retry_after().unwrap_or(hold),
            reason,
        }),
        Action::DeferMisconfigured => Some(Outcome::Defer {
            after: err.retry_after().unwrap_or(hold).max(hold),
            reason,
        }),
        Action::Reject => Some(Outcome::Fail { reason }),
        Action::CustomerFailure | Action::Reconcile | Action::HardDecline | Action::AlreadyDone => {
            None
        }
    }
}

/// [`outcome`] for a step that has nothing of its own to do for `action` (every action
/// it does not match itself): one the table gives a step that cannot carry it out is a
/// bug, and fails the job for operators rather than guessing.
pub fn job_outcome(action: Action, err: &GatewayError, hold: Duration) -> Outcome {
    outcome(action, err, hold)
        .unwrap_or_else(|| Outcome::fail(format!("no handling for {} of {err}", action.as_str())))
}

/// The wait before inquiry number `round` (1-based) about an undecided payment or
/// charge: doubling from `min`, capped at `max`, then between half and all of it (`unit`
/// in [0, 1)) so a burst spreads out.
pub fn inquiry_delay(round: i32, min: Duration, max: Duration, unit: f64) -> Duration {
    let exp = u32::try_from(round.saturating_sub(1)).unwrap_or(0).min(20);
    let full = min.saturating_mul(1u32 << exp).min(max);
    full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// When inquiry `round` about an undecided payment, charge or checkout runs: after
/// [`inquiry_delay`] with the configured backoff, but never after `not_after`.
pub fn inquiry_at(
    settings: &crate::settings::PaymentsSettings,
    round: i32,
    now: chrono::DateTime<chrono::Utc>,
    not_after: Option<chrono::DateTime<chrono::Utc>>,
) -> chrono::DateTime<chrono::Utc> {
    let delay = inquiry_delay(
        round,
        settings.reconcile_min_backoff_ms,
        settings.reconcile_max_backoff_ms,
        rand::random::<f64>(),
    );
    let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
    not_after.map_or(at, |cap| at.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    #[test]
    fn inquiry_delays_double_from_the_minimum_up_to_the_cap_with_jitter() {
        let ms = Duration::from_millis;
        let (min, max) = (ms(500), ms(60_000));
        // (round, jitter unit, expected)
        let table = [
            (1, 1.0, ms(500)),
            (1, 0.0, ms(250)),
            (2, 1.0, ms(1_000)),
            (3, 1.0, ms(2_000)),
            (8, 1.0, ms(60_000)),
            (40, 0.0, ms(30_000)),
            (0, 1.0, ms(500)),
        ];
        for (round, unit, want) in table {
            assert_eq!(inquiry_delay(round, min, max, unit), want, "round {round}");
        }
    }
    use ErrorKind as K;

    const SOFT: ErrorKind = K::Decline(DeclineClass::Soft);
    const HARD: ErrorKind = K::Decline(DeclineClass::Hard);

    const KINDS: [ErrorKind; 10] = [
        SOFT,
        HARD,
        K::AlreadyDone,
        K::Permanent,
        K::Configuration,
        K::Expired,
        K::Transient,
        K::Ambiguous,
        K::Mismatch,
        K::Unavailable,
    ];

    #[test]
    fn every_step_and_kind_has_the_documented_action() {
        // Columns: Ready, Approve, Cancel, Charge, Inquiry, SidStatus, SidInactivate.
        let table: [(ErrorKind, [Action; 7]); 10] = [
            (
                HARD,
                [
                    CustomerFailure,
                    CustomerFailure,
                    Reject,
                    HardDecline,
                    Reject,
                    Reject,
                    AlreadyDone,
                ],
            ),
            (
                SOFT,
                [
                    CustomerFailure,
                    CustomerFailure,
                    Reject,
                    CustomerFailure,
                    Reject,
                    Reject,
                    Reject,
                ],
            ),
            (
                K::Expired,
                [
                    CustomerFailure,
                    CustomerFailure,
                    Reject,
                    Reject,
                    Reject,
                    Reject,
                    Reject,
                ],
            ),
            (K::Permanent, [Reject; 7]),
            (K::Configuration, [DeferMisconfigured; 7]),
            (K::Transient, [Retry; 7]),
            (K::Unavailable, [Defer; 7]),
            (
                K::Ambiguous,
                [Retry, Reconcile, Reconcile, Reconcile, Retry, Retry, Retry],
            ),
            (
                K::AlreadyDone,
                [
                    Reject,
                    Reconcile,
                    Reconcile,
                    Reconcile,
                    Reject,
                    Reject,
                    AlreadyDone,
                ],
            ),
            (
                K::Mismatch,
                [
                    Reject, Reconcile, Reconcile, Reconcile, Reject, Reject, Reject,
                ],
            ),
        ];
        assert_eq!(table.len(), KINDS.len());
        for (kind, row) in table {
            for (step, want) in Step::ALL.into_iter().zip(row) {
                assert_eq!(action(step, kind), want, "{step:?} × {kind:?}");
            }
        }
    }

    #[test]
    fn a_hard_decline_ends_dunning_and_a_soft_one_follows_it() {
        let charge = |code, mrc| action(Step::Charge, crate::pg_error::classify_code(code, mrc));
        // (KakaoPay code, method_result_code, the charge's action)
        let table = [
            (-782, None, CustomerFailure),
            (-780, Some("8003"), CustomerFailure),
            (-797, None, CustomerFailure),
            (-752, None, CustomerFailure),
            (-750, None, HardDecline),
            (-751, None, HardDecline),
            (-753, None, HardDecline),
            // Not in the table: soft.
            (-789, None, CustomerFailure),
            (-780, Some("USER_LOCKED"), Retry),
            (-701, None, Reject),
        ];
        for (code, mrc, want) in table {
            assert_eq!(charge(code, mrc), want, "{code} {mrc:?}");
        }
    }

    #[test]
    fn no_money_moving_step_ever_resends_after_an_ambiguous_answer() {
        for kind in [K::Ambiguous, K::AlreadyDone, K::Mismatch] {
            for step in [Step::Approve, Step::Cancel, Step::Charge] {
                assert_eq!(action(step, kind), Reconcile, "{step:?} × {kind:?}");
            }
        }
    }

    #[test]
    fn rejected_and_misconfigured_calls_use_no_retry() {
        let hold = Duration::from_secs(60);
        let err = |kind| GatewayError::new("subscription", kind, "x");
        let table = [
            (K::Permanent, Reject, "fail"),
            (K::Configuration, DeferMisconfigured, "defer"),
            (K::Transient, Retry, "retry"),
            (K::Unavailable, Defer, "defer"),
        ];
        for (kind, a, want) in table {
            let got = outcome(a, &err(kind), hold);
            let name = match got {
                Some(Outcome::Fail { .. }) => "fail",
                Some(Outcome::Defer { after, .. }) => {
                    assert_eq!(after, hold, "{kind:?}");
                    "defer"
                }
                Some(Outcome::Retry { .. }) => "retry",
                Some(Outcome::Done) | None => "step",
            };
            assert_eq!(name, want, "{kind:?}");
        }
        for a in [CustomerFailure, Reconcile, HardDecline, AlreadyDone] {
            assert_eq!(outcome(a, &err(SOFT), hold), None, "{a:?}");
        }
    }
}
