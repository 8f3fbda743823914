//! What stands between a worker process and the PG: the circuit breaker, the bulkhead
//! (concurrent calls) and the rate cap (calls per second), with their metrics.
//!
//! A call first takes a [`Permit`] ([`PgGuard::admit`]: fails fast while the breaker is
//! open or a misconfiguration hold is on, then waits for a bulkhead slot and a rate
//! permit, first come first served), does its own preparation (e.g. records a charge
//! attempt), and sends through [`Permit::call`], which asks the breaker once more and
//! records the outcome. So a rate cap far below demand delays work before anything is
//! recorded, never after. A refusal is a [`GatewayError`] of kind `Unavailable` with
//! `retry_after`: nothing was sent, so the job runtime defers the work without using up
//! a retry, and no dunning attempt is consumed.
//!
//! The breaker is hand-written because the requirement is resilience4j's count-based
//! breaker with a minimum number of calls and a fixed number of half-open trial calls;
//! `recloser` (the maintained crate closest to it) lets every call through half-open and
//! has no minimum, and `failsafe` judges time windows.

use std::collections::VecDeque;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{GatewayError, PgResult};
use crate::settings::PgGuardSettings;

/// The breaker's rules (from [`PgGuardSettings`]).
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    pub window: usize,
    pub min_calls: usize,
    pub failure_rate: f64,
    pub open_for: Duration,
    pub half_open_calls: u32,
}

impl BreakerConfig {
    pub fn from_settings(s: &PgGuardSettings) -> Self {
        Self {
            window: s.breaker_window,
            min_calls: s.breaker_min_calls,
            failure_rate: s.breaker_failure_rate,
            open_for: s.breaker_open_ms,
            half_open_calls: s.breaker_half_open_calls,
        }
    }
}

/// The breaker's state as operators see it (the `pg_breaker_state` gauge's value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The state named by [`BreakerState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Closed, Self::Open, Self::HalfOpen]
            .into_iter()
            .find(|b| b.as_str() == s)
    }

    /// 0 closed, 1 half-open, 2 open: higher is worse, for alerting on `> 0`.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

/// The breaker's answer to "may I call now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead; report the outcome with this ticket.
    Call(Ticket),
    /// Refused: open (or all trial calls taken); try again after this long.
    Refused { retry_after: Duration },
}

/// Which state a call was let through in: an outcome counts only there, so the late
/// answers of calls sent before the breaker opened cannot close it or reopen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    generation: u64,
    trial: bool,
}

/// A state change, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    /// Failures and calls in the window when it opened from closed.
    pub failures: usize,
    pub calls: usize,
}

/// A count-based circuit breaker (pure: time is passed in).
#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: State,
    /// Outcomes of the last `window` calls while closed, `true` = failed.
    window: VecDeque<bool>,
    failures: usize,
    generation: u64,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            window: VecDeque::with_capacity(cfg.window),
            cfg,
            state: State::Closed,
            failures: 0,
            generation: 0,
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Calls and failures in the closed-state window.
    pub fn window(&self) -> (usize, usize) {
        (self.window.len(), self.failures)
    }

    /// How long an open breaker still refuses calls (zero when not open).
    pub fn open_remaining(&self, now: Instant) -> Duration {
        match self.state {
            State::Open { until } => until.saturating_duration_since(now),
            _ => Duration::ZERO,
        }
    }

    /// Whether a call would be refused now, without taking a trial slot.
    pub fn would_refuse(&self, now: Instant) -> bool {
        match self.state {
            State::Closed => false,
            State::Open { until } => now < until,
            State::HalfOpen { admitted, .. } => admitted >= self.cfg.half_open_calls,
        }
    }

    /// Lets a call through or refuses it; an open breaker whose time is up becomes
    /// half-open here.
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        let mut transition = None;
        if let State::Open { until } = self.state {
            if now < until {
                return (
                    Admission::Refused {
                        retry_after: until - now,
                    },
                    None,
                );
            }
            transition = Some(self.enter(
                State::HalfOpen {
                    admitted: 0,
                    succeeded: 0,
                },
                now,
            ));
        }
        let admission = match &mut self.state {
            State::Closed => Admission::Call(Ticket {
                generation: self.generation,
                trial: false,
            }),
            State::HalfOpen { admitted, .. } if *admitted < self.cfg.half_open_calls => {
                *admitted += 1;
                Admission::Call(Ticket {
                    generation: self.generation,
                    trial: true,
                })
            }
            State::HalfOpen { .. } | State::Open { .. } => Admission::Refused {
                retry_after: Duration::ZERO,
            },
        };
        (admission, transition)
    }

    /// Records the outcome of a call let through with `ticket`.
    pub fn record(&mut self, ticket: Ticket, failed: bool, now: Instant) -> Option<Transition> {
        if ticket.generation != self.generation {
            return None;
        }
        match &mut self.state {
            State::Closed => {
                self.window.push_back(failed);
                if failed {
                    self.failures += 1;
                }
                while self.window.len() > self.cfg.window {
                    if self.window.pop_front() == Some(true) {
                        self.failures -= 1;
                    }
                }
                let calls = self.window.len();
                let rate = self.failures as f64 / calls as f64;
                if calls >= self.cfg.min_calls && rate >= self.cfg.failure_rate {
                    let failures = self.failures;
                    let mut t = self.enter(
                        State::Open {
                            until: now + self.cfg.open_for,
                        },
                        now,
                    );
                    t.failures = failures;
                    t.calls = calls;
                    return Some(t);
                }
                None
            }
            State::HalfOpen { succeeded, .. } if ticket.trial => {
                if failed {
                    return Some(self.enter(
                        State::Open {
                            until: now + self.cfg.open_for,
                        },
                        now,
                    ));
                }
                *succeeded += 1;
                if *succeeded >= self.cfg.half_open_calls {
                    return Some(self.enter(State::Closed, now));
                }
                None
            }
            State::HalfOpen { .. } | State::Open { .. } => None,
        }
    }

    /// A trial call let through but never sent (its work found nothing to do): its slot
    /// goes to the next caller.
    pub fn release(&mut self, ticket: Ticket) {
        if ticket.generation != self.generation || !ticket.trial {
            return;
        }
        if let State::HalfOpen { admitted, .. } = &mut self.state {
            *admitted = admitted.saturating_sub(1);
        }
    }

    fn enter(&mut self, state: State, _now: Instant) -> Transition {
        let from = self.state();
        self.state = state;
        self.generation += 1;
        self.window.clear();
        self.failures = 0;
        Transition {
            from,
            to: self.state(),
            failures: 0,
            calls: 0,
        }
    }
}

/// One worker process's guard around the PG (shared by all its tasks).
pub struct PgGuard {
    breaker: Mutex<Breaker>,
    bulkhead: Arc<Semaphore>,
    max_concurrent: usize,
    limiter: DefaultDirectRateLimiter,
    /// Rate permits in arrival order: governor's own wait is not a queue, and under a cap
    /// far below demand an unlucky waiter would wait forever.
    rate_queue: tokio::sync::Mutex<()>,
    /// The same quota again at the moment of sending: what was recorded between the
    /// permit and the send takes varying time, and calls permitted a second apart must
    /// not reach the PG in the same second. Its waits are short (the permit already
    /// paced the work), in arrival order, and never refuse: the attempt is recorded.
    send_spacing: DefaultDirectRateLimiter,
    send_queue: tokio::sync::Mutex<()>,
    max_wait: Duration,
    defer_jitter: Duration,
    /// While set and in the future, nothing is sent: the PG refused our credentials.
    hold_until: Mutex<Option<Instant>>,
    misconfigured_hold: Duration,
    /// Calls sent since the process started (what its worker reports; refused ones are
    /// not calls).
    sent: AtomicU64,
}

impl std::fmt::Debug for PgGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgGuard")
            .field("state", &self.state())
            .field("bulkhead_free", &self.bulkhead.available_permits())
            .finish_non_exhaustive()
    }
}

impl PgGuard {
    pub fn new(s: &PgGuardSettings) -> Self {
        let nz = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(nz(s.rate_per_sec)).allow_burst(nz(s.rate_burst));
        metrics::gauge!("pg_breaker_state").set(BreakerState::Closed.gauge());
        Self {
            breaker: Mutex::new(Breaker::new(BreakerConfig::from_settings(s))),
            bulkhead: Arc::new(Semaphore::new(s.max_concurrent)),
            max_concurrent: s.max_concurrent,
            limiter: RateLimiter::direct(quota),
            rate_queue: tokio::sync::Mutex::new(()),
            send_spacing: RateLimiter::direct(quota),
            send_queue: tokio::sync::Mutex::new(()),
            max_wait: s.max_wait_ms,
            defer_jitter: s.defer_jitter_ms,
            hold_until: Mutex::new(None),
            misconfigured_hold: s.misconfigured_hold_ms,
            sent: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state()
    }

    /// PG calls sent through this guard since the process started.
    pub fn calls_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When refused work should run again: after the open window plus a random share of
    /// the jitter (at least a tenth of it, so half-open refusals do not spin).
    fn defer(&self, remaining: Duration) -> Duration {
        let jitter = self.defer_jitter.as_millis() as u64;
        let extra = rand::rng().random_range(jitter / 10..=jitter.max(1));
        remaining + Duration::from_millis(extra)
    }

    fn refused(&self, endpoint: &'static str, why: &str, remaining: Duration) -> GatewayError {
        metrics::counter!("pg_calls_refused_total", "endpoint" => endpoint, "reason" => why.to_owned())
            .increment(1);
        GatewayError::unavailable(endpoint, format!("not sent: {why}"), self.defer(remaining))
    }

    /// How long the misconfiguration hold has left, if one is on.
    fn held(&self, now: Instant) -> Option<Duration> {
        let until = (*self
            .hold_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner))?;
        (until > now).then(|| until - now)
    }

    /// The PG refused our credentials or address: send nothing for the hold's length.
    fn hold(&self, now: Instant) {
        *self
            .hold_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(now + self.misconfigured_hold);
        metrics::counter!("pg_misconfigured_holds_total").increment(1);
    }

    /// The misconfiguration hold (how long work refused for it waits).
    pub fn misconfigured_hold(&self) -> Duration {
        self.misconfigured_hold
    }

    /// A permit for one call to `endpoint`: refused at once while the breaker is open or
    /// a misconfiguration hold is on; otherwise waits (up to `max_wait_ms` in all) for a
    /// bulkhead slot, then for a rate permit in arrival order. Waiting is not a failure.
    pub async fn admit(&self, endpoint: &'static str) -> PgResult<Permit<'_>> {
        let now = Instant::now();
        if let Some(left) = self.held(now) {
            return Err(self.refused(endpoint, "misconfigured", left));
        }
        {
            let b = self.lock();
            if b.would_refuse(now) {
                return Err(self.refused(endpoint, "circuit_open", b.open_remaining(now)));
            }
        }
        let started = Instant::now();
        let slot = tokio::time::timeout(self.max_wait, self.bulkhead.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| self.refused(endpoint, "bulkhead_full", Duration::ZERO))?;
        metrics::histogram!("pg_permit_wait_seconds", "permit" => "bulkhead")
            .record(started.elapsed().as_secs_f64());
        let waited = Instant::now();
        let left = self.max_wait.saturating_sub(started.elapsed());
        let rate = async {
            let _turn = self.rate_queue.lock().await;
            self.limiter.until_ready().await;
        };
        if tokio::time::timeout(left, rate).await.is_err() {
            return Err(self.refused(endpoint, "rate_capped", Duration::ZERO));
        }
        metrics::histogram!("pg_permit_wait_seconds", "permit" => "rate")
            .record(waited.elapsed().as_secs_f64());
        metrics::gauge!("pg_calls_in_flight").set(
            self.max_concurrent
                .saturating_sub(self.bulkhead.available_permits()) as f64,
        );
        Ok(Permit {
            guard: self,
            endpoint,
            _slot: slot,
        })
    }

    /// [`PgGuard::admit`] then [`Permit::call`], for a call with nothing to prepare between.
    pub async fn run<T>(
        &self,
        endpoint: &'static str,
        call: impl Future<Output = PgResult<T>>,
    ) -> PgResult<T> {
        self.admit(endpoint).await?.call(call).await
    }

    fn transitioned(&self, t: Option<Transition>, endpoint: &'static str) {
        let Some(t) = t else { return };
        metrics::gauge!("pg_breaker_state").set(t.to.gauge());
        metrics::counter!("pg_breaker_transitions_total", "to" => t.to.as_str()).increment(1);
        match t.to {
            BreakerState::Open => tracing::warn!(
                from = t.from.as_str(),
                endpoint,
                window_failures = t.failures,
                window_calls = t.calls,
                "PG circuit breaker opened: calls are refused and due work is deferred"
            ),
            _ => tracing::info!(
                from = t.from.as_str(),
                to = t.to.as_str(),
                "PG circuit breaker changed state"
            ),
        }
    }
}

/// A bulkhead slot for one call; send with [`Permit::call`].
#[derive(Debug)]
pub struct Permit<'a> {
    guard: &'a PgGuard,
    endpoint: &'static str,
    _slot: OwnedSemaphorePermit,
}

impl Permit<'_> {
    /// Asks the breaker (and the misconfiguration hold) once more, sends `call` and
    /// records its outcome. Refused → `Unavailable` with `retry_after` (nothing sent).
    pub async fn call<T>(self, call: impl Future<Output = PgResult<T>>) -> PgResult<T> {
        let guard = self.guard;
        let endpoint = self.endpoint;
        if let Some(left) = guard.held(Instant::now()) {
            return Err(guard.refused(endpoint, "misconfigured", left));
        }
        {
            let _turn = guard.send_queue.lock().await;
            guard.send_spacing.until_ready().await;
        }
        let (admission, t) = guard.lock().admit(Instant::now());
        guard.transitioned(t, endpoint);
        let ticket = match admission {
            Admission::Call(ticket) => ticket,
            Admission::Refused { retry_after } => {
                return Err(guard.refused(endpoint, "circuit_open", retry_after));
            }
        };
        // If this future is dropped mid-call (task timeout), the trial slot is given
        // back rather than held forever.
        let mut pending = Pending {
            guard,
            ticket: Some(ticket),
        };
        guard.sent.fetch_add(1, Ordering::Relaxed);
        let result = call.await;
        if let Err(e) = &result {
            if e.kind == super::ErrorKind::Configuration {
                guard.hold(Instant::now());
            }
        }
        let failed = result
            .as_ref()
            .err()
            .is_some_and(GatewayError::is_pg_failure);
        pending.ticket = None;
        let t = {
            let mut b = guard.lock();
            let t = b.record(ticket, failed, Instant::now());
            let (calls, failures) = b.window();
            metrics::gauge!("pg_breaker_window_calls").set(calls as f64);
            metrics::gauge!("pg_breaker_window_failures").set(failures as f64);
            t
        };
        guard.transitioned(t, endpoint);
        result
    }
}

struct Pending<'a> {
    guard: &'a PgGuard,
    ticket: Option<Ticket>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.guard.lock().release(t);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::pg::ErrorKind;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn cfg() -> BreakerConfig {
        BreakerConfig::from_settings(&PgGuardSettings::default())
    }

    /// Feeds `outcomes` (`F` failed, `S` succeeded) through a closed breaker, one call at
    /// a time; returns the state after each.
    fn feed(b: &mut Breaker, outcomes: &str, now: Instant) -> Vec<BreakerState> {
        outcomes
            .chars()
            .map(|c| {
                let (Admission::Call(t), _) = b.admit(now) else {
                    return b.state();
                };
                b.record(t, c == 'F', now);
                b.state()
            })
            .collect()
    }

    #[test]
    fn the_breaker_opens_only_with_enough_calls_and_enough_failures() {
        let now = Instant::now();
        let rep = |c: &str, n| c.repeat(n);
        // (calls, state after the last one) with the defaults: window 40, min 20, 75 %
        let table: Vec<(String, BreakerState)> = vec![
            (rep("F", 19), BreakerState::Closed),
            (rep("F", 20), BreakerState::Open),
            (rep("S", 5) + &rep("F", 15), BreakerState::Open), // 15/20
            (rep("S", 6) + &rep("F", 14), BreakerState::Closed), // 14/20
            (rep("S", 10) + &rep("F", 29), BreakerState::Closed), // 29/39
            (rep("S", 10) + &rep("F", 30), BreakerState::Open), // 30/40
            // the oldest calls leave the window: 30 failures among the last 40
            (
                rep("F", 5) + &rep("S", 40) + &rep("F", 29),
                BreakerState::Closed,
            ),
            (rep("S", 40) + &rep("F", 30), BreakerState::Open),
            // declines and other answers never reach the breaker as failures
            (rep("S", 100), BreakerState::Closed),
        ];
        for (outcomes, want) in table {
            let mut b = Breaker::new(cfg());
            let states = feed(&mut b, &outcomes, now);
            assert_eq!(*states.last().unwrap(), want, "{outcomes}");
            if want == BreakerState::Open {
                // it opened on the very last call, not before
                assert!(states[..states.len() - 1]
                    .iter()
                    .all(|s| *s == BreakerState::Closed));
            }
        }
    }

    #[test]
    fn open_refuses_then_three_trials_decide() {
        let t0 = Instant::now();
        let open_for = cfg().open_for;
        // (trial outcomes, state after them)
        let table = [
            ("SSS", BreakerState::Closed),
            ("SSF", BreakerState::Open),
            ("F", BreakerState::Open),
            ("SS", BreakerState::HalfOpen),
        ];
        for (trials, want) in table {
            let mut b = Breaker::new(cfg());
            feed(&mut b, &"F".repeat(20), t0);
            assert_eq!(b.state(), BreakerState::Open);
            let (a, _) = b.admit(t0 + open_for / 2);
            assert_eq!(
                a,
                Admission::Refused {
                    retry_after: open_for / 2
                }
            );
            let t1 = t0 + open_for;
            let tickets: Vec<Ticket> = (0..3)
                .map(|_| match b.admit(t1).0 {
                    Admission::Call(t) => t,
                    a => panic!("trial refused: {a:?}"),
                })
                .collect();
            assert_eq!(b.state(), BreakerState::HalfOpen);
            assert!(
                matches!(b.admit(t1).0, Admission::Refused { .. }),
                "a 4th trial"
            );
            for (t, c) in tickets.iter().zip(trials.chars()) {
                b.record(*t, c == 'F', t1);
            }
            assert_eq!(b.state(), want, "{trials}");
            if want == BreakerState::Open {
                assert!(b.would_refuse(t1 + open_for / 2));
                assert!(!b.would_refuse(t1 + open_for));
            }
        }
    }

    #[test]
    fn late_answers_of_an_earlier_state_do_not_count_and_unused_trials_are_given_back() {
        let t0 = Instant::now();
        let mut b = Breaker::new(cfg());
        let (Admission::Call(early), _) = b.admit(t0) else {
            panic!()
        };
        feed(&mut b, &"F".repeat(20), t0);
        let t1 = t0 + cfg().open_for;
        let trials: Vec<Ticket> = (0..3)
            .map(|_| match b.admit(t1).0 {
                Admission::Call(t) => t,
                a => panic!("{a:?}"),
            })
            .collect();
        // a call sent while closed fails late: the half-open trial run is not affected
        assert_eq!(b.record(early, true, t1), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.release(trials[2]);
        let (Admission::Call(again), _) = b.admit(t1) else {
            panic!("the released slot is free again")
        };
        for t in [trials[0], trials[1], again] {
            b.record(t, false, t1);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.window(), (0, 0));
    }

    fn error(status: Option<u16>, kind: ErrorKind) -> GatewayError {
        GatewayError {
            http_status: status,
            ..GatewayError::new("subscription", kind, "x")
        }
    }

    #[test]
    fn only_no_answer_5xx_408_and_429_are_failures() {
        let table = [
            (None, ErrorKind::Ambiguous, true),
            (None, ErrorKind::Transient, true),
            (Some(500), ErrorKind::Ambiguous, true),
            (Some(503), ErrorKind::Transient, true),
            (Some(429), ErrorKind::Transient, true),
            (Some(408), ErrorKind::Transient, true),
            (
                Some(400),
                ErrorKind::Decline(crate::pg::DeclineClass::Soft),
                false,
            ),
            (Some(400), ErrorKind::Permanent, false),
            (Some(400), ErrorKind::AlreadyDone, false),
            (Some(200), ErrorKind::Mismatch, false),
            (None, ErrorKind::Unavailable, false),
        ];
        for (status, kind, failure) in table {
            assert_eq!(
                error(status, kind).is_pg_failure(),
                failure,
                "{status:?} {kind}"
            );
        }
    }

    fn settings() -> PgGuardSettings {
        PgGuardSettings {
            breaker_open_ms: Duration::from_millis(60_000),
            defer_jitter_ms: Duration::from_millis(1_000),
            ..PgGuardSettings::default()
        }
    }

    #[tokio::test]
    async fn an_open_breaker_refuses_without_calling_and_defers_past_the_window() {
        let guard = PgGuard::new(&settings());
        let sent = AtomicUsize::new(0);
        let fail = || async {
            sent.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(error(Some(500), ErrorKind::Ambiguous))
        };
        for _ in 0..20 {
            let e = guard.run("subscription", fail()).await.unwrap_err();
            assert_eq!(e.kind, ErrorKind::Ambiguous);
        }
        assert_eq!(guard.state(), BreakerState::Open);
        let e = guard.run("subscription", fail()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert_eq!(
            sent.load(Ordering::SeqCst),
            20,
            "the refused call was not sent"
        );
        assert_eq!(guard.calls_sent(), 20, "only calls sent are counted");
        let after = e.retry_after().unwrap();
        assert!(
            after >= Duration::from_secs(59) && after <= Duration::from_secs(61),
            "{after:?}"
        );
        assert!(e.is_retryable() && !e.consumes_dunning_attempt() && !e.needs_reconciliation());
    }

    #[tokio::test]
    async fn a_full_bulkhead_defers_after_the_longest_wait() {
        let guard = PgGuard::new(&PgGuardSettings {
            max_concurrent: 2,
            max_wait_ms: Duration::from_millis(50),
            ..settings()
        });
        let a = guard.admit("approve").await.unwrap();
        let _b = guard.admit("approve").await.unwrap();
        let e = guard.admit("approve").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.message.contains("bulkhead_full"), "{e}");
        drop(a);
        guard.admit("approve").await.unwrap();
        assert_eq!(
            guard.state(),
            BreakerState::Closed,
            "waiting is not a failure"
        );
    }

    #[tokio::test]
    async fn the_rate_cap_spaces_calls_evenly() {
        let guard = PgGuard::new(&PgGuardSettings {
            rate_per_sec: 50,
            rate_burst: 1,
            ..settings()
        });
        let mut sent = Vec::new();
        for _ in 0..11 {
            guard
                .run("order", async {
                    sent.push(Instant::now());
                    Ok::<_, GatewayError>(())
                })
                .await
                .unwrap();
        }
        // 50/s with no burst: one call per 20 ms at most, so 10 gaps span ≥ 200 ms
        for w in sent.windows(2) {
            assert!(
                w[1] - w[0] >= Duration::from_millis(19),
                "{:?}",
                w[1] - w[0]
            );
        }
        assert!(sent[10] - sent[0] >= Duration::from_millis(199));
    }
}
