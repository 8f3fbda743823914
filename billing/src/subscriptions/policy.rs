//! The billing policy of DESIGN §5 as pure functions: when a cycle is due, what a skip,
//! pause, resume or period change does to the schedule, the dunning schedule, the
//! once-a-day guard — and the what-if timeline built from exactly these functions.

use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::pg_error::DeclineClass;
use crate::settings::SubscriptionsSettings;

/// The store's billing calendar and dunning schedule.
#[derive(Debug, Clone)]
pub struct Policy {
    tz: Tz,
    charge_time: NaiveTime,
    retry_delays: Vec<Duration>,
}

/// What follows a declined attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dunning {
    RetryAt(DateTime<Utc>),
    /// Dunning is over: cancel with `reason` — [`PAYMENT_FAILED`] when the schedule is
    /// exhausted, [`HARD_DECLINE`] at once after a hard decline.
    Cancel {
        reason: &'static str,
    },
}

/// The cancel reason after the last attempt of the dunning schedule was declined.
pub const PAYMENT_FAILED: &str = "payment_failed";
/// The cancel reason after a hard decline (no retry can succeed).
pub const HARD_DECLINE: &str = "hard_decline";

/// When the next cycle is charged: its scheduled local date and the instant to charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    pub due_on: NaiveDate,
    pub at: DateTime<Utc>,
}

impl Policy {
    pub fn new(tz: Tz, charge_time: NaiveTime, retry_delays: Vec<Duration>) -> Self {
        Self {
            tz,
            charge_time,
            retry_delays,
        }
    }

    /// From validated settings.
    pub fn from_settings(s: &SubscriptionsSettings) -> Result<Self> {
        let tz = s.time_zone.tz();
        let charge_time = NaiveTime::parse_from_str(&s.charge_time, "%H:%M")
            .map_err(|e| Error::Internal(format!("subscriptions.charge_time: {e}")))?;
        Ok(Self::new(tz, charge_time, s.retry_delays_secs.clone()))
    }

    /// The store-local date of an instant.
    pub fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }

    /// The charge instant of a local date. A charge time skipped by a DST jump falls to
    /// the first valid instant after it.
    pub fn slot(&self, date: NaiveDate) -> DateTime<Utc> {
        let local = date.and_time(self.charge_time);
        let mut probe = local;
        for _ in 0..4 {
            if let Some(t) = self.tz.from_local_datetime(&probe).earliest() {
                return t.with_timezone(&Utc);
            }
            probe += chrono::Duration::minutes(30);
        }
        // Only reachable with a corrupt zone table; UTC is a defined fallback.
        Utc.from_utc_datetime(&local)
    }

    fn plus_days(date: NaiveDate, days: i32) -> NaiveDate {
        date.checked_add_days(Days::new(days.max(0) as u64))
            .unwrap_or(NaiveDate::MAX)
    }

    /// Never before `now` ("if already past → the next run"), and never on the local day
    /// of the last successful charge (the once-a-day guard): then the next day's slot.
    pub fn not_before(
        &self,
        due_on: NaiveDate,
        now: DateTime<Utc>,
        last_charged_at: Option<DateTime<Utc>>,
    ) -> Next {
        let at = self.slot(due_on).max(now);
        match last_charged_at {
            Some(last) if self.local_date(at) <= self.local_date(last) => {
                let day = Self::plus_days(self.local_date(last), 1);
                Next {
                    due_on: due_on.max(day),
                    at: self.slot(day).max(now),
                }
            }
            _ => Next { due_on, at },
        }
    }

    /// A new subscription paid at `paid_at` (the anchor): cycle 2 is one period later.
    pub fn first_due(&self, paid_at: DateTime<Utc>, period_days: i32) -> Next {
        let due_on = Self::plus_days(self.local_date(paid_at), period_days);
        self.not_before(due_on, paid_at, Some(paid_at))
    }

    /// After cycle `due_on` was charged at `charged_at`: the grid continues (anchor +
    /// k × period), however late dunning made the charge.
    pub fn after_success(
        &self,
        due_on: NaiveDate,
        period_days: i32,
        charged_at: DateTime<Utc>,
    ) -> Next {
        self.not_before(
            Self::plus_days(due_on, period_days),
            charged_at,
            Some(charged_at),
        )
    }

    /// After the `declines`-th decline (1-based) of a cycle at `now`, of `class`: a hard
    /// decline ends dunning at once, whatever attempts the schedule has left.
    pub fn after_decline(&self, class: DeclineClass, declines: u32, now: DateTime<Utc>) -> Dunning {
        if class == DeclineClass::Hard {
            return Dunning::Cancel {
                reason: HARD_DECLINE,
            };
        }
        match self.retry_delays.get(declines.saturating_sub(1) as usize) {
            Some(d) => Dunning::RetryAt(now + chrono::Duration::from_std(*d).unwrap_or_default()),
            None => Dunning::Cancel {
                reason: PAYMENT_FAILED,
            },
        }
    }

    /// Whether a decline of `class` makes an active subscription `past_due`: a soft one
    /// opens dunning; a hard one cancels it straight away.
    pub fn enters_past_due(class: DeclineClass) -> bool {
        class == DeclineClass::Soft
    }

    /// Declines a cycle may take before the subscription is canceled.
    pub fn max_declines(&self) -> usize {
        self.retry_delays.len() + 1
    }

    /// A new period applies from the last successful charge.
    pub fn after_period_change(
        &self,
        last_charged_at: DateTime<Utc>,
        new_period_days: i32,
        now: DateTime<Utc>,
    ) -> Next {
        let due_on = Self::plus_days(self.local_date(last_charged_at), new_period_days);
        self.not_before(due_on, now, Some(last_charged_at))
    }

    /// Skip moves the next charge one period forward, once per call.
    pub fn after_skip(
        &self,
        due_on: NaiveDate,
        period_days: i32,
        now: DateTime<Utc>,
        last_charged_at: Option<DateTime<Utc>>,
    ) -> Next {
        self.not_before(Self::plus_days(due_on, period_days), now, last_charged_at)
    }

    /// Resume: next = max(today, last charge + period).
    pub fn after_resume(
        &self,
        last_charged_at: DateTime<Utc>,
        period_days: i32,
        now: DateTime<Utc>,
    ) -> Next {
        let due_on = Self::plus_days(self.local_date(last_charged_at), period_days)
            .max(self.local_date(now));
        self.not_before(due_on, now, Some(last_charged_at))
    }

    /// The next `n` charge instants of an undisturbed schedule, starting at `next`.
    pub fn upcoming(&self, next: Next, period_days: i32, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut cur = next;
        for _ in 0..n {
            out.push(cur.at);
            cur = self.after_success(cur.due_on, period_days, cur.at);
        }
        out
    }

    /// The timeline the engine would follow from `start` if the PG answered `outcomes` in
    /// order — built from the same functions the charge task applies.
    pub fn preview(&self, start: &PreviewStart, outcomes: &[Outcome]) -> Vec<TimelineEvent> {
        let mut events = Vec::new();
        let mut next = start.next;
        let mut cycle = start.cycle;
        let mut attempt = start.attempts_so_far + 1;
        let mut declines = start.declines_so_far;
        let mut past_due = start.past_due;
        for &outcome in outcomes {
            let at = next.at;
            if outcome == Outcome::Recovery {
                if !past_due {
                    // Only a past-due cycle has a recovery checkout; nothing changes.
                    events.push(TimelineEvent::state(at, "recovery_unavailable", None));
                    continue;
                }
                // The customer pays the overdue cycle through the checkout before the
                // pending retry: a new SID, active again, the calendar kept.
                events.push(TimelineEvent::attempt(at, cycle, attempt, outcome));
                events.push(TimelineEvent::state(at, "recovered", Some("checkout")));
                events.push(TimelineEvent::state(at, "sid_replaced", None));
                events.push(TimelineEvent::state(at, "active", None));
                past_due = false;
                next = self.after_success(next.due_on, start.period_days, at);
                cycle += 1;
                attempt = 1;
                declines = 0;
                continue;
            }
            events.push(TimelineEvent::attempt(at, cycle, attempt, outcome));
            if !outcome.charged_or_declined() {
                // Nothing was charged and no dunning attempt is used: the job retries
                // after its backoff (seconds, shown at the same time) with a new attempt.
                if outcome == Outcome::Ambiguous {
                    events.push(TimelineEvent::state(at, "reconciled", Some("not_landed")));
                }
                attempt += 1;
                continue;
            }
            match outcome.decline_class() {
                None => {
                    if past_due {
                        events.push(TimelineEvent::state(at, "active", None));
                        past_due = false;
                    }
                    next = self.after_success(next.due_on, start.period_days, at);
                    cycle += 1;
                    attempt = 1;
                    declines = 0;
                }
                Some(class) => {
                    declines += 1;
                    if !past_due && Self::enters_past_due(class) {
                        events.push(TimelineEvent::state(at, "past_due", None));
                        past_due = true;
                    }
                    match self.after_decline(class, declines, at) {
                        Dunning::RetryAt(t) => {
                            next = Next {
                                due_on: next.due_on,
                                at: t,
                            };
                            attempt += 1;
                        }
                        Dunning::Cancel { reason } => {
                            events.push(TimelineEvent::state(at, "canceled", Some(reason)));
                            events.push(TimelineEvent::state(at, "sid_inactivated", None));
                            return events;
                        }
                    }
                }
            }
        }
        events.push(TimelineEvent {
            at: next.at,
            event: "next_attempt".into(),
            cycle: Some(cycle),
            attempt: Some(attempt),
            outcome: None,
            reason: None,
        });
        events
    }
}

/// A hypothetical PG answer to a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Approved,
    /// A soft decline: the older name of `soft_decline`, still accepted (and echoed) so
    /// existing callers keep working.
    Declined,
    /// A decline a later retry may fix: the dunning schedule runs.
    SoftDecline,
    /// A decline no retry can fix: the subscription is canceled at once (`hard_decline`).
    HardDecline,
    /// An infrastructure failure (5xx, timeout before sending, rate cap, open breaker):
    /// the attempt is `not_charged`, no dunning attempt is used, the job retries.
    Transient,
    /// Sent, no answer: the attempt is `unknown` until reconciliation. Here it is found not
    /// to have landed (`not_charged`) and the charge is retried; one that did land is
    /// simply `approved`.
    Ambiguous,
    /// Instead of the pending retry, the customer pays the overdue cycle through a
    /// recovery checkout (only while `past_due`): a new SID, `active`, the calendar kept.
    Recovery,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Declined => "declined",
            Outcome::SoftDecline => "soft_decline",
            Outcome::HardDecline => "hard_decline",
            Outcome::Transient => "transient",
            Outcome::Ambiguous => "ambiguous",
            Outcome::Recovery => "recovery",
        }
    }

    /// Whether KakaoPay decided the charge (approved or declined); otherwise nothing was
    /// charged and the cycle stays due as it was.
    pub fn charged_or_declined(self) -> bool {
        !matches!(self, Outcome::Transient | Outcome::Ambiguous)
    }

    /// The decline's class; `None` for an approval (or no decision).
    pub fn decline_class(self) -> Option<DeclineClass> {
        match self {
            Outcome::Approved | Outcome::Transient | Outcome::Ambiguous | Outcome::Recovery => None,
            Outcome::Declined | Outcome::SoftDecline => Some(DeclineClass::Soft),
            Outcome::HardDecline => Some(DeclineClass::Hard),
        }
    }
}

/// Where a preview starts: the subscription's pending charge.
#[derive(Debug, Clone)]
pub struct PreviewStart {
    pub next: Next,
    pub cycle: i32,
    pub period_days: i32,
    pub attempts_so_far: i32,
    pub declines_so_far: u32,
    pub past_due: bool,
}

/// One step of a what-if timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TimelineEvent {
    pub at: DateTime<Utc>,
    /// `attempt`, `past_due`, `active`, `canceled`, `sid_inactivated` or `next_attempt`
    /// (where the timeline ends when outcomes run out).
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl TimelineEvent {
    fn attempt(at: DateTime<Utc>, cycle: i32, attempt: i32, outcome: Outcome) -> Self {
        Self {
            at,
            event: "attempt".into(),
            cycle: Some(cycle),
            attempt: Some(attempt),
            outcome: Some(outcome),
            reason: None,
        }
    }

    fn state(at: DateTime<Utc>, event: &str, reason: Option<&str>) -> Self {
        Self {
            at,
            event: event.into(),
            cycle: None,
            attempt: None,
            outcome: None,
            reason: reason.map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const DAY: u64 = 86_400;

    fn seoul() -> Policy {
        Policy::from_settings(&SubscriptionsSettings::default()).unwrap()
    }

    /// Seoul local time → UTC (Seoul is UTC+9, no DST).
    fn kst(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap() - chrono::Duration::hours(9)
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn charges_fall_on_the_local_charge_time() {
        let p = seoul();
        // 23:30 UTC on the 1st is 08:30 on the 2nd in Seoul.
        let paid = Utc.with_ymd_and_hms(2027, 3, 1, 23, 30, 0).unwrap();
        let next = p.first_due(paid, 30);
        assert_eq!(next.due_on, date(2027, 4, 1));
        assert_eq!(next.at, kst(2027, 4, 1, 2, 0));
        assert_eq!(
            next.at,
            Utc.with_ymd_and_hms(2027, 3, 31, 17, 0, 0).unwrap()
        );
    }

    #[test]
    fn the_schedule_is_anchor_plus_k_periods_whatever_dunning_delays() {
        let p = seoul();
        let anchor = kst(2027, 1, 10, 15, 0);
        let upcoming = p.upcoming(p.first_due(anchor, 14), 14, 4);
        assert_eq!(
            upcoming,
            vec![
                kst(2027, 1, 24, 2, 0),
                kst(2027, 2, 7, 2, 0),
                kst(2027, 2, 21, 2, 0),
                kst(2027, 3, 7, 2, 0)
            ]
        );
        // Cycle due on 24 Jan charged two days late (dunning) → the next stays on the grid.
        let next = p.after_success(date(2027, 1, 24), 14, kst(2027, 1, 26, 2, 0));
        assert_eq!(next.at, kst(2027, 2, 7, 2, 0));
    }

    /// A 30-day subscription's pending cycle 2, due at `t0`, no attempt yet.
    fn fresh_cycle_2(t0: DateTime<Utc>) -> PreviewStart {
        PreviewStart {
            next: Next {
                due_on: seoul().local_date(t0),
                at: t0,
            },
            cycle: 2,
            period_days: 30,
            attempts_so_far: 0,
            declines_so_far: 0,
            past_due: false,
        }
    }

    /// The dunning table of DESIGN §5: the decline/approve sequences and what follows each.
    #[test]
    fn dunning_table() {
        let p = seoul();
        let t0 = kst(2027, 5, 1, 2, 0);
        let start = fresh_cycle_2(t0);
        use Outcome::{Approved as A, Declined as D};
        struct Case {
            outcomes: Vec<Outcome>,
            attempts: Vec<(DateTime<Utc>, i32, i32)>,
            end: &'static str,
            end_at: DateTime<Utc>,
        }
        let day = |n: i64| t0 + chrono::Duration::days(n);
        let cases = vec![
            Case {
                outcomes: vec![A],
                attempts: vec![(t0, 2, 1)],
                end: "next_attempt",
                end_at: kst(2027, 5, 31, 2, 0),
            },
            Case {
                outcomes: vec![D, A],
                attempts: vec![(t0, 2, 1), (t0, 2, 2)],
                end: "next_attempt",
                end_at: kst(2027, 5, 31, 2, 0),
            },
            Case {
                outcomes: vec![D, D, A],
                attempts: vec![(t0, 2, 1), (t0, 2, 2), (day(1), 2, 3)],
                end: "next_attempt",
                end_at: kst(2027, 5, 31, 2, 0),
            },
            Case {
                outcomes: vec![D, D, D, D, A],
                attempts: vec![
                    (t0, 2, 1),
                    (t0, 2, 2),
                    (day(1), 2, 3),
                    (day(2), 2, 4),
                    (day(3), 2, 5),
                ],
                end: "next_attempt",
                end_at: kst(2027, 5, 31, 2, 0),
            },
            // D D D D D → canceled on day 3, SID inactivated.
            Case {
                outcomes: vec![D, D, D, D, D],
                attempts: vec![
                    (t0, 2, 1),
                    (t0, 2, 2),
                    (day(1), 2, 3),
                    (day(2), 2, 4),
                    (day(3), 2, 5),
                ],
                end: "sid_inactivated",
                end_at: day(3),
            },
            // A decline in the next cycle starts the schedule afresh.
            Case {
                outcomes: vec![A, D, D, A],
                attempts: vec![
                    (t0, 2, 1),
                    (kst(2027, 5, 31, 2, 0), 3, 1),
                    (kst(2027, 5, 31, 2, 0), 3, 2),
                    (kst(2027, 6, 1, 2, 0), 3, 3),
                ],
                end: "next_attempt",
                end_at: kst(2027, 6, 30, 2, 0),
            },
        ];
        for case in cases {
            let timeline = p.preview(&start, &case.outcomes);
            let attempts: Vec<_> = timeline
                .iter()
                .filter(|e| e.event == "attempt")
                .map(|e| (e.at, e.cycle.unwrap(), e.attempt.unwrap()))
                .collect();
            assert_eq!(attempts, case.attempts, "{:?}", case.outcomes);
            let last = timeline.last().unwrap();
            assert_eq!(
                (last.event.as_str(), last.at),
                (case.end, case.end_at),
                "{:?}",
                case.outcomes
            );
            let canceled = timeline.iter().any(|e| e.event == "canceled");
            assert_eq!(canceled, case.end == "sid_inactivated");
            let past_due = timeline.iter().filter(|e| e.event == "past_due").count();
            // Each run of declines enters past_due once.
            assert_eq!(past_due, usize::from(case.outcomes.contains(&D)));
        }
    }

    /// Infrastructure failures and answers lost then found not to have landed use no
    /// dunning attempt: the same cycle is tried again (a new attempt row) at once, and the
    /// dunning schedule counts only the declines.
    #[test]
    fn transient_and_ambiguous_answers_use_no_dunning_attempt() {
        let p = seoul();
        let t0 = kst(2027, 5, 1, 2, 0);
        let start = fresh_cycle_2(t0);
        use Outcome::{Ambiguous as U, Approved as A, Declined as D, Transient as T};
        let day = |n: i64| t0 + chrono::Duration::days(n);
        // (outcomes, the attempts (at, attempt), the events in order, how it ends)
        type Case = (
            Vec<Outcome>,
            Vec<(DateTime<Utc>, i32)>,
            Vec<&'static str>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                vec![T, T, A],
                vec![(t0, 1), (t0, 2), (t0, 3)],
                vec!["attempt", "attempt", "attempt", "next_attempt"],
                "next_attempt",
            ),
            (
                vec![U, A],
                vec![(t0, 1), (t0, 2)],
                vec!["attempt", "reconciled", "attempt", "next_attempt"],
                "next_attempt",
            ),
            // Two declines, then transient failures between them: still day 1 for the
            // third decline's retry, and the fifth decline (not the seventh attempt)
            // cancels.
            (
                vec![D, D, T, D, U, D, D],
                vec![
                    (t0, 1),
                    (t0, 2),
                    (day(1), 3),
                    (day(1), 4),
                    (day(2), 5),
                    (day(2), 6),
                    (day(3), 7),
                ],
                vec![
                    "attempt",
                    "past_due",
                    "attempt",
                    "attempt",
                    "attempt",
                    "attempt",
                    "reconciled",
                    "attempt",
                    "attempt",
                    "canceled",
                    "sid_inactivated",
                ],
                "sid_inactivated",
            ),
        ];
        for (outcomes, attempts, events, end) in cases {
            let timeline = p.preview(&start, &outcomes);
            let got: Vec<_> = timeline
                .iter()
                .filter(|e| e.event == "attempt")
                .map(|e| (e.at, e.attempt.unwrap()))
                .collect();
            assert_eq!(got, attempts, "{outcomes:?}");
            let names: Vec<&str> = timeline.iter().map(|e| e.event.as_str()).collect();
            assert_eq!(names, events, "{outcomes:?}");
            assert_eq!(timeline.last().unwrap().event, end);
        }
    }

    /// A recovery checkout paid while past due replaces the pending retry: recovered, a new
    /// SID, active, and the next cycle on the original calendar (not a period after the
    /// payment); before any decline it changes nothing.
    #[test]
    fn a_recovery_ends_dunning_on_the_original_calendar() {
        let p = seoul();
        let t0 = kst(2027, 5, 1, 2, 0);
        let start = fresh_cycle_2(t0);
        use Outcome::{Approved as A, Recovery as R, SoftDecline as S};
        let day = |n: i64| t0 + chrono::Duration::days(n);
        // (outcomes, the events, the last event's time, the cycle it ends on)
        type Case = (Vec<Outcome>, Vec<&'static str>, DateTime<Utc>, i32);
        let cases: Vec<Case> = vec![
            (
                vec![S, S, R],
                vec![
                    "attempt",
                    "past_due",
                    "attempt",
                    "attempt:recovery",
                    "recovered",
                    "sid_replaced",
                    "active",
                    "next_attempt",
                ],
                day(30),
                3,
            ),
            (
                vec![S, S, S, R, A],
                vec![
                    "attempt",
                    "past_due",
                    "attempt",
                    "attempt",
                    "attempt:recovery",
                    "recovered",
                    "sid_replaced",
                    "active",
                    "attempt",
                    "next_attempt",
                ],
                day(60),
                4,
            ),
            (
                vec![R, A],
                vec!["recovery_unavailable", "attempt", "next_attempt"],
                day(30),
                3,
            ),
        ];
        for (outcomes, events, end_at, end_cycle) in cases {
            let timeline = p.preview(&start, &outcomes);
            let names: Vec<String> = timeline
                .iter()
                .map(|e| match e.outcome {
                    Some(Outcome::Recovery) => "attempt:recovery".to_owned(),
                    _ => e.event.clone(),
                })
                .collect();
            assert_eq!(names, events, "{outcomes:?}");
            let last = timeline.last().unwrap();
            assert_eq!(
                (last.at, last.cycle),
                (end_at, Some(end_cycle)),
                "{outcomes:?}"
            );
        }
    }

    /// A hard decline ends dunning at once — first attempt or later, past due or not —
    /// without using the attempts the schedule has left; `declined` is `soft_decline`.
    #[test]
    fn a_hard_decline_cancels_at_once_and_declined_means_soft() {
        let p = seoul();
        let t0 = kst(2027, 5, 1, 2, 0);
        let start = fresh_cycle_2(t0);
        use Outcome::{Approved as A, Declined as D, HardDecline as H, SoftDecline as S};
        let day = |n: i64| t0 + chrono::Duration::days(n);
        // (outcomes, the events, when it ends)
        let cases: Vec<(Vec<Outcome>, Vec<&str>, DateTime<Utc>)> = vec![
            (
                vec![H, A],
                vec!["attempt", "canceled:hard_decline", "sid_inactivated"],
                t0,
            ),
            (
                vec![S, S, H],
                vec![
                    "attempt",
                    "past_due",
                    "attempt",
                    "attempt",
                    "canceled:hard_decline",
                    "sid_inactivated",
                ],
                day(1),
            ),
            (
                vec![A, H],
                vec![
                    "attempt",
                    "attempt",
                    "canceled:hard_decline",
                    "sid_inactivated",
                ],
                kst(2027, 5, 31, 2, 0),
            ),
            (
                vec![S, D, S, S, D],
                vec![
                    "attempt",
                    "past_due",
                    "attempt",
                    "attempt",
                    "attempt",
                    "attempt",
                    "canceled:payment_failed",
                    "sid_inactivated",
                ],
                day(3),
            ),
        ];
        for (outcomes, want, end_at) in cases {
            let timeline = p.preview(&start, &outcomes);
            let got: Vec<String> = timeline
                .iter()
                .map(|e| match &e.reason {
                    Some(r) => format!("{}:{r}", e.event),
                    None => e.event.clone(),
                })
                .collect();
            assert_eq!(got, want, "{outcomes:?}");
            assert_eq!(timeline.last().unwrap().at, end_at, "{outcomes:?}");
        }
        assert_eq!(
            p.preview(&start, &[D, A]),
            p.preview(&start, &[S, A])
                .into_iter()
                .map(|mut e| {
                    if e.outcome == Some(S) {
                        e.outcome = Some(D);
                    }
                    e
                })
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_dunning_schedule_is_configuration() {
        let p = Policy::new(
            chrono_tz::Asia::Seoul,
            NaiveTime::from_hms_opt(2, 0, 0).unwrap(),
            vec![Duration::from_secs(3_600)],
        );
        let t = kst(2027, 1, 1, 2, 0);
        let soft = DeclineClass::Soft;
        let failed = Dunning::Cancel {
            reason: PAYMENT_FAILED,
        };
        assert_eq!(
            p.after_decline(soft, 1, t),
            Dunning::RetryAt(t + chrono::Duration::hours(1))
        );
        assert_eq!(p.after_decline(soft, 2, t), failed);
        let none = Policy::new(chrono_tz::UTC, NaiveTime::MIN, vec![]);
        assert_eq!(none.after_decline(soft, 1, t), failed);
        assert_eq!(seoul().max_declines(), 5);
        assert_eq!(
            seoul().after_decline(soft, 4, t),
            Dunning::RetryAt(t + chrono::Duration::seconds(DAY as i64))
        );
    }

    #[test]
    fn a_period_change_counts_from_the_last_charge() {
        let p = seoul();
        let last = kst(2027, 1, 1, 2, 0);
        // Still ahead: last + new period.
        let n = p.after_period_change(last, 10, kst(2027, 1, 5, 12, 0));
        assert_eq!(n.at, kst(2027, 1, 11, 2, 0));
        // Already past → the next run (now).
        let now = kst(2027, 1, 20, 12, 0);
        let n = p.after_period_change(last, 14, now);
        assert_eq!(n.at, now);
        // Never the same local day as the last charge.
        let now = kst(2027, 1, 1, 9, 0);
        let n = p.after_period_change(last, 7, now);
        assert_eq!(n.at, kst(2027, 1, 8, 2, 0));
    }

    #[test]
    fn skip_moves_one_period_once_per_call() {
        let p = seoul();
        let last = Some(kst(2027, 1, 1, 2, 0));
        let now = kst(2027, 1, 10, 2, 0);
        let once = p.after_skip(date(2027, 1, 31), 30, now, last);
        assert_eq!(once.at, kst(2027, 3, 2, 2, 0));
        let twice = p.after_skip(once.due_on, 30, now, last);
        assert_eq!(twice.at, kst(2027, 4, 1, 2, 0));
    }

    #[test]
    fn resume_charges_at_the_later_of_today_and_last_plus_period() {
        let p = seoul();
        let last = kst(2027, 1, 1, 2, 0);
        // Resumed early: last + period.
        let n = p.after_resume(last, 30, kst(2027, 1, 5, 10, 0));
        assert_eq!(n.at, kst(2027, 1, 31, 2, 0));
        // Resumed late, before today's slot: today's slot.
        let n = p.after_resume(last, 30, kst(2027, 3, 1, 1, 0));
        assert_eq!(n.at, kst(2027, 3, 1, 2, 0));
        // Resumed late, after today's slot: now.
        let now = kst(2027, 3, 1, 15, 0);
        assert_eq!(p.after_resume(last, 30, now).at, now);
    }

    #[test]
    fn the_guard_never_allows_two_charges_on_one_local_day() {
        let p = seoul();
        let charged = kst(2027, 1, 1, 23, 50);
        // A due date on the same local day moves to the next day's slot.
        let n = p.not_before(date(2027, 1, 1), charged, Some(charged));
        assert_eq!(n.at, kst(2027, 1, 2, 2, 0));
        // 18:30 UTC on 1 Jan is 03:30 on 2 Jan in Seoul: a new local day, past its slot,
        // so allowed at once.
        let utc_late = Utc.with_ymd_and_hms(2027, 1, 1, 18, 30, 0).unwrap();
        let n = p.not_before(date(2027, 1, 2), utc_late, Some(kst(2027, 1, 1, 2, 0)));
        assert_eq!(n.at, utc_late);
    }

    #[test]
    fn other_zones_and_dst_gaps() {
        // New York skips 02:00–03:00 on 14 March 2027.
        let p = Policy::new(
            chrono_tz::America::New_York,
            NaiveTime::from_hms_opt(2, 30, 0).unwrap(),
            vec![],
        );
        let at = p.slot(date(2027, 3, 14));
        assert_eq!(at, Utc.with_ymd_and_hms(2027, 3, 14, 7, 0, 0).unwrap());
        let at = p.slot(date(2027, 3, 15));
        assert_eq!(at, Utc.with_ymd_and_hms(2027, 3, 15, 6, 30, 0).unwrap());
    }
}
