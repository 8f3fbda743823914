//! Startup configuration and the command line (`pillivery-pgsim --listen ADDR [knobs]`).

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{FixedOffset, Offset, Utc};
use clap::Parser;

use crate::clock::Clock;
use crate::knobs::{AutoAction, Endpoint, ErrorBody, FaultKind, Knobs, PaymentMethod};

/// What does not change at runtime, plus the startup knobs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Base URL of this simulator as buyers reach it (the redirect URLs of `ready` point
    /// here); `None` = `http://<bound address>`.
    pub public_url: Option<String>,
    /// The expected secret key; `None` accepts any non-empty key.
    pub secret_key: Option<String>,
    /// cids that issue SIDs on approve and may charge, inactivate and query SIDs.
    pub subscription_cids: Vec<String>,
    /// Offset of the local time strings in responses (KakaoPay answers in KST).
    pub utc_offset: FixedOffset,
    /// How long a ready payment can be approved (and its buyer page used).
    pub ready_ttl: Duration,
    /// The knobs at startup (`DELETE /__knobs` returns to these).
    pub knobs: Knobs,
    /// The clock offset at startup: the simulator's "now" is real time plus this (ms);
    /// `/__clock` changes it at runtime.
    pub clock_offset_ms: i64,
}

pub const KST_SECONDS: i32 = 9 * 3600;

impl Default for Config {
    fn default() -> Self {
        Self {
            public_url: None,
            secret_key: None,
            subscription_cids: vec!["TCSUBSCRIP".to_owned()],
            utc_offset: FixedOffset::east_opt(KST_SECONDS).unwrap_or_else(|| Utc.fix()),
            ready_ttl: Duration::from_secs(900),
            knobs: Knobs::default(),
            clock_offset_ms: 0,
        }
    }
}

/// A KakaoPay-compatible payment gateway simulator (see the crate docs for the protocol,
/// the admin endpoints and the knobs). Knob flags set the startup values of the knobs of
/// the same name (`PUT /__knobs` changes them at runtime).
#[derive(Parser, Debug, Clone)]
#[command(name = "pillivery-pgsim", version, about)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// Base URL buyers reach this server at (default: http://<listen address>).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Expected secret key (`Authorization: SECRET_KEY <key>`); default: any non-empty key.
    #[arg(long, env = "PGSIM_SECRET_KEY")]
    pub secret_key: Option<String>,
    /// Subscription cids (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "TCSUBSCRIP")]
    pub subscription_cids: Vec<String>,
    /// UTC offset of the local time strings in responses.
    #[arg(long, default_value = "+09:00", allow_hyphen_values = true)]
    pub utc_offset: String,
    /// Seconds a ready payment stays approvable.
    #[arg(long, default_value_t = 900)]
    pub ready_ttl_secs: u64,
    /// Offset of the simulator's clock from real time (ms; `PUT /__clock` changes it).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub clock_offset_ms: i64,

    /// Fixed latency of every KakaoPay API answer (ms).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra random latency in 0..=N ms.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Probability of declining approve (−780) and recurring charges (−782).
    #[arg(long, default_value_t = 0.0)]
    pub decline_rate: f64,
    /// error_code of declines instead of −780/−782 (e.g. -797).
    #[arg(long, allow_hyphen_values = true)]
    pub decline_code: Option<i32>,
    /// extras.method_result_code of declines (e.g. USER_LOCKED).
    #[arg(long)]
    pub decline_result_code: Option<String>,
    /// extras.method_result_message of declines.
    #[arg(long)]
    pub decline_result_message: Option<String>,
    /// Probability of an HTTP 5xx before any work.
    #[arg(long, default_value_t = 0.0)]
    pub server_error_rate: f64,
    /// Status of injected 5xx answers.
    #[arg(long, default_value_t = 500)]
    pub server_error_status: u16,
    /// Body of injected 5xx answers.
    #[arg(long, value_enum, default_value = "empty")]
    pub server_error_body: ErrorBody,
    /// Probability of holding a request timeout_ms, then closing the connection unanswered.
    #[arg(long, default_value_t = 0.0)]
    pub timeout_rate: f64,
    /// How long timeouts and dropped responses are held (ms).
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Probability of doing the work, then holding timeout_ms and closing unanswered.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Failure ramp: the rate of --ramp-kind reached after --ramp-secs.
    #[arg(long, default_value_t = 0.0)]
    pub ramp_to: f64,
    /// Failure ramp duration (s); 0 = at once.
    #[arg(long, default_value_t = 0.0)]
    pub ramp_secs: f64,
    /// The failure the ramp drives.
    #[arg(long, value_enum, default_value = "server-error")]
    pub ramp_kind: FaultKind,
    /// Endpoints the failure knobs apply to (comma-separated: ready, approve,
    /// subscription, cancel, order, inactive, status); default all.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<Endpoint>,
    /// Inject at most this many failures, then heal.
    #[arg(long)]
    pub max_faults: Option<u64>,
    /// The buyer page acts at once (see --auto-action) instead of showing links.
    #[arg(long)]
    pub auto_approve: bool,
    /// What the buyer page does in auto mode.
    #[arg(long, value_enum, default_value = "approve")]
    pub auto_action: AutoAction,
    /// payment_method_type when the ready does not ask for one.
    #[arg(long, value_enum, default_value = "MONEY", ignore_case = true)]
    pub payment_method: PaymentMethod,
    /// Error bodies in the older {"code","msg"} shape.
    #[arg(long)]
    pub legacy_errors: bool,
    /// Seed of the fault RNG (default: from the OS).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl Args {
    pub fn knobs(&self) -> Result<Knobs, String> {
        let knobs = Knobs {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            decline_rate: self.decline_rate,
            decline_code: self.decline_code,
            decline_result_code: self.decline_result_code.clone(),
            decline_result_message: self.decline_result_message.clone(),
            server_error_rate: self.server_error_rate,
            server_error_status: self.server_error_status,
            server_error_body: self.server_error_body,
            timeout_rate: self.timeout_rate,
            timeout_ms: self.timeout_ms,
            drop_rate: self.drop_rate,
            ramp_to: self.ramp_to,
            ramp_secs: self.ramp_secs,
            ramp_kind: self.ramp_kind,
            endpoints: self.endpoints.clone(),
            max_faults: self.max_faults,
            auto_approve: self.auto_approve,
            auto_action: self.auto_action,
            payment_method: self.payment_method,
            legacy_errors: self.legacy_errors,
            seed: self.seed,
        };
        knobs.validate()?;
        Ok(knobs)
    }

    pub fn config(&self) -> Result<Config, String> {
        let utc_offset: FixedOffset = self
            .utc_offset
            .parse()
            .map_err(|e| format!("--utc-offset {:?}: {e}", self.utc_offset))?;
        let subscription_cids: Vec<String> = self
            .subscription_cids
            .iter()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        if let Some(bad) = subscription_cids.iter().find(|c| c.chars().count() != 10) {
            return Err(format!("--subscription-cids: {bad:?} is not 10 characters"));
        }
        Clock::new(self.clock_offset_ms).map_err(|e| format!("--clock-offset-ms: {e}"))?;
        Ok(Config {
            public_url: self.public_url.clone(),
            secret_key: self.secret_key.clone().filter(|k| !k.is_empty()),
            subscription_cids,
            utc_offset,
            ready_ttl: Duration::from_secs(self.ready_ttl_secs),
            knobs: self.knobs()?,
            clock_offset_ms: self.clock_offset_ms,
        })
    }
}

/// `http://<addr>`, with an unspecified address (0.0.0.0, ::) replaced by loopback.
pub fn url_for(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    };
    format!("http://{ip}:{}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_run_invocation_parses() {
        let a = Args::try_parse_from([
            "pillivery-pgsim",
            "--listen",
            "127.0.0.1:8090",
            "--auto-approve",
            "--latency-ms",
            "2000",
            "--endpoints",
            "approve,subscription",
            "--decline-code",
            "-797",
            "--ramp-kind",
            "timeout",
            "--payment-method",
            "CARD",
        ])
        .unwrap();
        let c = a.config().unwrap();
        assert!(c.knobs.auto_approve);
        assert_eq!(c.knobs.latency_ms, 2000);
        assert_eq!(
            c.knobs.endpoints,
            vec![Endpoint::Approve, Endpoint::Subscription]
        );
        assert_eq!(c.knobs.decline_code, Some(-797));
        assert_eq!(c.knobs.ramp_kind, FaultKind::Timeout);
        assert_eq!(c.knobs.payment_method, PaymentMethod::Card);
        assert_eq!(c.utc_offset.local_minus_utc(), KST_SECONDS);
        assert_eq!(c.subscription_cids, vec!["TCSUBSCRIP"]);

        let a = Args::try_parse_from(["pillivery-pgsim", "--utc-offset", "-05:00"]).unwrap();
        assert_eq!(a.config().unwrap().utc_offset.local_minus_utc(), -5 * 3600);
        let a = Args::try_parse_from(["pillivery-pgsim", "--decline-rate", "2"]).unwrap();
        assert!(a.config().is_err());

        assert_eq!(c.clock_offset_ms, 0);
        let a =
            Args::try_parse_from(["pillivery-pgsim", "--clock-offset-ms", "-86400000"]).unwrap();
        assert_eq!(a.config().unwrap().clock_offset_ms, -86_400_000);
        let a = Args::try_parse_from([
            "pillivery-pgsim",
            "--clock-offset-ms",
            "9223372036854775807",
        ])
        .unwrap();
        assert!(a.config().is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            url_for("0.0.0.0:80".parse().unwrap()),
            "http://127.0.0.1:80"
        );
        assert_eq!(
            url_for("127.0.0.1:8090".parse().unwrap()),
            "http://127.0.0.1:8090"
        );
        assert_eq!(url_for("[::1]:1".parse().unwrap()), "http://[::1]:1");
    }
}
