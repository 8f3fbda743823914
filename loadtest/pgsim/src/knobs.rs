//! Runtime knobs (latency, injected failures, the failure ramp, the buyer's auto mode) and
//! the seeded fault roller that applies them.
//!
//! Every failure rate is a probability per request. A rate of exactly `0.0` never fires and
//! exactly `1.0` always fires without touching the RNG, so tests can rely on "always
//! decline" / "always drop". Rolls happen in this order, each independent:
//! 5xx (before any work) → timeout (before any work) → decline (approve / subscription,
//! after validation) → drop (after the work succeeded).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The seven KakaoPay endpoints; failure knobs can be scoped to some of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Ready,
    Approve,
    Subscription,
    Cancel,
    Order,
    #[serde(alias = "manage/subscription/inactive")]
    Inactive,
    #[serde(alias = "manage/subscription/status")]
    Status,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Ready,
        Endpoint::Approve,
        Endpoint::Subscription,
        Endpoint::Cancel,
        Endpoint::Order,
        Endpoint::Inactive,
        Endpoint::Status,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Ready => "ready",
            Endpoint::Approve => "approve",
            Endpoint::Subscription => "subscription",
            Endpoint::Cancel => "cancel",
            Endpoint::Order => "order",
            Endpoint::Inactive => "inactive",
            Endpoint::Status => "status",
        }
    }

    /// The path under `/online/v1/payment/`.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Ready => "ready",
            Endpoint::Approve => "approve",
            Endpoint::Subscription => "subscription",
            Endpoint::Cancel => "cancel",
            Endpoint::Order => "order",
            Endpoint::Inactive => "manage/subscription/inactive",
            Endpoint::Status => "manage/subscription/status",
        }
    }

    /// Endpoints whose business answer can be a decline.
    pub fn can_decline(self) -> bool {
        matches!(self, Endpoint::Approve | Endpoint::Subscription)
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::ALL
            .into_iter()
            .find(|e| e.name() == s || e.path() == s)
            .ok_or_else(|| {
                format!("unknown endpoint {s:?} (ready, approve, subscription, cancel, order, inactive, status)")
            })
    }
}

/// What the buyer page does by itself when `auto_approve` is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AutoAction {
    /// Redirect to `approval_url` with a `pg_token`.
    Approve,
    /// The buyer quits: status `QUIT_PAYMENT`, redirect to `cancel_url`.
    Cancel,
    /// Authentication fails: status `FAIL_PAYMENT`, redirect to `fail_url`.
    Fail,
}

/// Which failure the ramp drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    ServerError,
    Timeout,
    Decline,
    Drop,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ServerError => "server_error",
            FaultKind::Timeout => "timeout",
            FaultKind::Decline => "decline",
            FaultKind::Drop => "drop",
        }
    }
}

/// The body of an injected 5xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ErrorBody {
    /// No body at all.
    Empty,
    /// `{"error_code": -700, "error_message": "..."}`.
    Json,
    /// A proxy-style HTML page.
    Html,
}

/// `payment_method_type` of approvals and charges (a ready may ask for one explicitly).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "UPPERCASE")]
#[value(rename_all = "UPPERCASE")]
pub enum PaymentMethod {
    Card,
    Money,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Card => "CARD",
            PaymentMethod::Money => "MONEY",
        }
    }
}

/// Everything adjustable at runtime through `GET/PUT/DELETE /__knobs` (JSON, these field
/// names) and at startup through the matching `--kebab-case` flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    /// Fixed delay before every KakaoPay API answer.
    pub latency_ms: u64,
    /// Extra uniform random delay in `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// Probability that an approve (−780) or a recurring charge (−782) is declined.
    pub decline_rate: f64,
    /// Overrides the decline's `error_code` (e.g. −797 per-transaction limit, −752 SID
    /// monthly limit).
    pub decline_code: Option<i32>,
    /// Overrides `extras.method_result_code` of a decline (e.g. `USER_LOCKED`).
    pub decline_result_code: Option<String>,
    /// Overrides `extras.method_result_message` of a decline.
    pub decline_result_message: Option<String>,
    /// Probability of answering an HTTP 5xx before doing anything.
    pub server_error_rate: f64,
    /// The status of an injected 5xx (500..=599).
    pub server_error_status: u16,
    /// The body of an injected 5xx.
    pub server_error_body: ErrorBody,
    /// Probability of holding a request `timeout_ms` without doing anything, then closing
    /// the connection without an answer.
    pub timeout_rate: f64,
    /// How long timeouts and dropped responses are held before the connection is closed.
    pub timeout_ms: u64,
    /// Probability of doing the work (ledger entry and all), then holding `timeout_ms` and
    /// closing the connection without an answer.
    pub drop_rate: f64,
    /// The failure ramp: `ramp_kind`'s rate grows linearly from 0 to `ramp_to` over
    /// `ramp_secs` (0 = at once), counted from the last PUT that touched a `ramp_*` knob
    /// (or startup). The effective rate is the larger of the ramp and the base rate.
    pub ramp_to: f64,
    pub ramp_secs: f64,
    pub ramp_kind: FaultKind,
    /// Endpoints the failure knobs (5xx, timeout, decline, drop, ramp) apply to; empty =
    /// all. Latency always applies to every KakaoPay endpoint.
    pub endpoints: Vec<Endpoint>,
    /// When set, at most this many failures are injected (counted from the PUT or startup
    /// that set it); then everything succeeds again — "5xx for a while, then heal".
    pub max_faults: Option<u64>,
    /// The buyer page acts at once (`auto_action`) instead of showing its links.
    pub auto_approve: bool,
    pub auto_action: AutoAction,
    /// `payment_method_type` used when the ready did not ask for one.
    pub payment_method: PaymentMethod,
    /// Error bodies in the older `{"code", "msg"}` shape instead of
    /// `{"error_code", "error_message", "extras"}`.
    pub legacy_errors: bool,
    /// Seed of the fault RNG (setting it reseeds); none = from the OS.
    pub seed: Option<u64>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            jitter_ms: 0,
            decline_rate: 0.0,
            decline_code: None,
            decline_result_code: None,
            decline_result_message: None,
            server_error_rate: 0.0,
            server_error_status: 500,
            server_error_body: ErrorBody::Empty,
            timeout_rate: 0.0,
            timeout_ms: 30_000,
            drop_rate: 0.0,
            ramp_to: 0.0,
            ramp_secs: 0.0,
            ramp_kind: FaultKind::ServerError,
            endpoints: Vec::new(),
            max_faults: None,
            auto_approve: false,
            auto_action: AutoAction::Approve,
            payment_method: PaymentMethod::Money,
            legacy_errors: false,
            seed: None,
        }
    }
}

impl Knobs {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("decline_rate", self.decline_rate),
            ("server_error_rate", self.server_error_rate),
            ("timeout_rate", self.timeout_rate),
            ("drop_rate", self.drop_rate),
            ("ramp_to", self.ramp_to),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be within 0.0..=1.0 (got {rate})"));
            }
        }
        if !self.ramp_secs.is_finite() || self.ramp_secs < 0.0 {
            return Err(format!("ramp_secs must be ≥ 0 (got {})", self.ramp_secs));
        }
        if !(500..=599).contains(&self.server_error_status) {
            return Err(format!(
                "server_error_status must be within 500..=599 (got {})",
                self.server_error_status
            ));
        }
        Ok(())
    }

    /// Applies the fields of a JSON object over these knobs (a partial update).
    pub fn merged(&self, patch: &serde_json::Value) -> Result<Knobs, String> {
        let patch = patch
            .as_object()
            .ok_or_else(|| "the knobs must be a JSON object".to_owned())?;
        let mut current = serde_json::to_value(self).map_err(|e| e.to_string())?;
        if let Some(obj) = current.as_object_mut() {
            for (k, v) in patch {
                obj.insert(k.clone(), v.clone());
            }
        }
        let knobs: Knobs = serde_json::from_value(current).map_err(|e| e.to_string())?;
        knobs.validate()?;
        Ok(knobs)
    }
}

fn rng_from(seed: Option<u64>) -> StdRng {
    match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    }
}

/// The knobs plus the mutable state that applies them.
pub struct Faults {
    knobs: Knobs,
    rng: StdRng,
    ramp_started: Instant,
    faults_left: Option<u64>,
    injected: BTreeMap<&'static str, u64>,
}

impl Faults {
    pub fn new(knobs: Knobs) -> Self {
        Self {
            rng: rng_from(knobs.seed),
            ramp_started: Instant::now(),
            faults_left: knobs.max_faults,
            injected: BTreeMap::new(),
            knobs,
        }
    }

    pub fn knobs(&self) -> &Knobs {
        &self.knobs
    }

    /// Replaces the knobs; `touched` are the keys the caller set (to restart the ramp
    /// clock, reseed, or restart the fault budget only when asked).
    pub fn set(&mut self, knobs: Knobs, touched: &[String]) {
        let touched_any = |keys: &[&str]| touched.iter().any(|t| keys.contains(&t.as_str()));
        if touched_any(&["ramp_to", "ramp_secs", "ramp_kind"]) {
            self.ramp_started = Instant::now();
        }
        if touched_any(&["seed"]) {
            self.rng = rng_from(knobs.seed);
        }
        if touched_any(&["max_faults"]) {
            self.faults_left = knobs.max_faults;
        }
        self.knobs = knobs;
    }

    /// Everything back to the given knobs, as at startup.
    pub fn reset(&mut self, knobs: Knobs) {
        *self = Faults::new(knobs);
    }

    pub fn faults_left(&self) -> Option<u64> {
        self.faults_left
    }

    pub fn injected(&self) -> &BTreeMap<&'static str, u64> {
        &self.injected
    }

    /// The fixed latency plus a jitter draw.
    pub fn delay(&mut self) -> Duration {
        let jitter = if self.knobs.jitter_ms > 0 {
            self.rng.random_range(0..=self.knobs.jitter_ms)
        } else {
            0
        };
        Duration::from_millis(self.knobs.latency_ms.saturating_add(jitter))
    }

    /// The current rate of one kind of failure, ramp included.
    pub fn rate(&self, kind: FaultKind) -> f64 {
        let k = &self.knobs;
        let base = match kind {
            FaultKind::ServerError => k.server_error_rate,
            FaultKind::Timeout => k.timeout_rate,
            FaultKind::Decline => k.decline_rate,
            FaultKind::Drop => k.drop_rate,
        };
        if kind != k.ramp_kind || k.ramp_to <= 0.0 {
            return base;
        }
        let progress = if k.ramp_secs <= 0.0 {
            1.0
        } else {
            (self.ramp_started.elapsed().as_secs_f64() / k.ramp_secs).min(1.0)
        };
        base.max(k.ramp_to * progress)
    }

    /// Whether this request suffers `kind`; counts it when it does.
    pub fn roll(&mut self, endpoint: Endpoint, kind: FaultKind) -> bool {
        if !self.knobs.endpoints.is_empty() && !self.knobs.endpoints.contains(&endpoint) {
            return false;
        }
        if kind == FaultKind::Decline && !endpoint.can_decline() {
            return false;
        }
        if self.faults_left == Some(0) {
            return false;
        }
        let rate = self.rate(kind);
        let hit = if rate <= 0.0 {
            false
        } else if rate >= 1.0 {
            true
        } else {
            self.rng.random::<f64>() < rate
        };
        if hit {
            if let Some(left) = self.faults_left.as_mut() {
                *left -= 1;
            }
            *self.injected.entry(kind.name()).or_insert(0) += 1;
        }
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_rates_are_exact() {
        let mut f = Faults::new(Knobs {
            decline_rate: 1.0,
            server_error_rate: 0.0,
            ..Knobs::default()
        });
        for _ in 0..1000 {
            assert!(f.roll(Endpoint::Approve, FaultKind::Decline));
            assert!(!f.roll(Endpoint::Approve, FaultKind::ServerError));
            // declines only exist for approve and subscription
            assert!(!f.roll(Endpoint::Order, FaultKind::Decline));
        }
    }

    #[test]
    fn seeded_rolls_repeat_and_roughly_match_the_rate() {
        let knobs = Knobs {
            server_error_rate: 0.3,
            seed: Some(7),
            ..Knobs::default()
        };
        let run = || {
            let mut f = Faults::new(knobs.clone());
            (0..10_000)
                .map(|_| f.roll(Endpoint::Ready, FaultKind::ServerError))
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|h| **h).count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
    }

    #[test]
    fn scope_and_budget() {
        let mut f = Faults::new(Knobs {
            drop_rate: 1.0,
            endpoints: vec![Endpoint::Approve],
            max_faults: Some(2),
            ..Knobs::default()
        });
        assert!(!f.roll(Endpoint::Ready, FaultKind::Drop));
        assert!(f.roll(Endpoint::Approve, FaultKind::Drop));
        assert!(f.roll(Endpoint::Approve, FaultKind::Drop));
        assert!(!f.roll(Endpoint::Approve, FaultKind::Drop));
        assert_eq!(f.faults_left(), Some(0));
        assert_eq!(f.injected().get("drop"), Some(&2));
    }

    #[test]
    fn ramp_grows_to_its_target() {
        let mut f = Faults::new(Knobs {
            ramp_to: 0.5,
            ramp_secs: 0.0,
            ramp_kind: FaultKind::Timeout,
            timeout_rate: 0.1,
            ..Knobs::default()
        });
        assert_eq!(f.rate(FaultKind::Timeout), 0.5);
        assert_eq!(f.rate(FaultKind::ServerError), 0.0);
        let knobs = Knobs {
            ramp_secs: 3600.0,
            ..f.knobs().clone()
        };
        f.set(knobs, &["ramp_secs".to_owned()]);
        // just restarted: the base rate dominates
        assert!((f.rate(FaultKind::Timeout) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn partial_updates_and_validation() {
        let k = Knobs::default();
        let k2 = k
            .merged(&serde_json::json!({"decline_rate": 1.0, "endpoints": ["approve", "manage/subscription/status"]}))
            .unwrap();
        assert_eq!(k2.decline_rate, 1.0);
        assert_eq!(k2.endpoints, vec![Endpoint::Approve, Endpoint::Status]);
        assert_eq!(k2.timeout_ms, 30_000);
        assert!(k.merged(&serde_json::json!({"decline_rate": 1.5})).is_err());
        assert!(k.merged(&serde_json::json!({"no_such_knob": 1})).is_err());
        assert!(k
            .merged(&serde_json::json!({"server_error_status": 404}))
            .is_err());
        assert!(k.merged(&serde_json::json!([1])).is_err());
    }
}
