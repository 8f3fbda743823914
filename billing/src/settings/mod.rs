//! The one `Settings` struct every binary reads: defaults → optional TOML file → env.
//!
//! Sources, later ones winning: built-in defaults, the file named by `PILLIVERY_CONFIG`,
//! then `PILLIVERY__SECTION__KEY` environment variables. `Settings::validate` turns a bad
//! value into an error naming the key, so a misconfigured process stops at start.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

mod sections;

pub use sections::*;

/// A configuration problem, always naming the offending key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    #[default]
    Dev,
    Test,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub environment: Environment,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub api: ApiSettings,
    pub worker: WorkerSettings,
    pub kakaopay: KakaoPaySettings,
    pub payments: PaymentsSettings,
    pub subscriptions: SubscriptionsSettings,
    pub pg_guard: PgGuardSettings,
    pub webhooks: WebhooksSettings,
    pub auth: AuthSettings,
    pub oauth: OAuthSettings,
    pub rate_limit: RateLimitSettings,
    pub log: LogSettings,
}

impl Settings {
    /// Defaults → `PILLIVERY_CONFIG` file (if set) → `PILLIVERY__…` env, then validated.
    pub fn load() -> Result<Self, SettingsError> {
        let file = std::env::var_os("PILLIVERY_CONFIG");
        Self::load_from(file.as_deref().map(Path::new))
    }

    pub fn load_from(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid(
                    "PILLIVERY_CONFIG",
                    format!("file {} does not exist", path.display()),
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("PILLIVERY__").split("__"));
        let settings: Settings = figment.extract().map_err(describe)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        let db = self.database.url.expose_secret();
        if !(db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            return Err(invalid("database.url", "must be a postgres:// URL"));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        let idle_tx = self.database.idle_in_transaction_timeout_ms;
        if idle_tx != 0 && idle_tx < 1_000 {
            // Shorter would end legitimate transactions that wait on a busy pool or lock.
            return Err(invalid(
                "database.idle_in_transaction_timeout_ms",
                "must be 0 (off) or at least 1000",
            ));
        }
        let redis = self.redis.url.expose_secret();
        if !(redis.starts_with("redis://") || redis.starts_with("rediss://")) {
            return Err(invalid("redis.url", "must be a redis:// URL"));
        }
        if self.redis.timeout_ms == 0 {
            return Err(invalid("redis.timeout_ms", "must be positive"));
        }
        if self.redis.page_cache_ttl_secs == 0 {
            return Err(invalid("redis.page_cache_ttl_secs", "must be positive"));
        }
        check_url("api.public_url", &self.api.public_url)?;
        check_url("kakaopay.base_url", &self.kakaopay.base_url)?;
        check_url("payments.result_url", &self.payments.result_url)?;
        let p = &self.payments;
        if p.reconcile_min_backoff_ms == 0
            || p.reconcile_max_backoff_ms < p.reconcile_min_backoff_ms
        {
            return Err(invalid(
                "payments.reconcile_max_backoff_ms",
                "backoffs must be positive and max ≥ min",
            ));
        }
        if p.ready_give_up_secs == 0 {
            return Err(invalid("payments.ready_give_up_secs", "must be positive"));
        }
        if !(1..=60).contains(&p.max_wait_secs) {
            return Err(invalid(
                "payments.max_wait_secs",
                "must be between 1 and 60",
            ));
        }
        let sub = &self.subscriptions;
        if chrono::NaiveTime::parse_from_str(&sub.charge_time, "%H:%M").is_err() {
            return Err(invalid("subscriptions.charge_time", "must be HH:MM"));
        }
        if sub.retry_delays_secs.len() > 30 {
            return Err(invalid(
                "subscriptions.retry_delays_secs",
                "at most 30 retries",
            ));
        }
        if sub.reconcile_window_secs == 0 || sub.review_after_secs < sub.reconcile_window_secs {
            return Err(invalid(
                "subscriptions.review_after_secs",
                "the window must be positive and review_after ≥ reconcile_window",
            ));
        }
        if !(1..=24).contains(&sub.upcoming) {
            return Err(invalid(
                "subscriptions.upcoming",
                "must be between 1 and 24",
            ));
        }
        let g = &self.pg_guard;
        if g.breaker_window == 0
            || g.breaker_min_calls == 0
            || g.breaker_min_calls > g.breaker_window
        {
            return Err(invalid(
                "pg_guard.breaker_min_calls",
                "window and minimum calls must be positive and min_calls ≤ window",
            ));
        }
        if !(g.breaker_failure_rate > 0.0 && g.breaker_failure_rate <= 1.0) {
            return Err(invalid(
                "pg_guard.breaker_failure_rate",
                "must be in (0, 1]",
            ));
        }
        if g.breaker_open_ms == 0 || g.breaker_half_open_calls == 0 {
            return Err(invalid(
                "pg_guard.breaker_open_ms",
                "the open time and the half-open trial calls must be positive",
            ));
        }
        if g.max_concurrent == 0 || g.rate_per_sec == 0 || g.rate_burst == 0 || g.max_wait_ms == 0 {
            return Err(invalid(
                "pg_guard.rate_per_sec",
                "max_concurrent, rate_per_sec, rate_burst and max_wait_ms must be positive",
            ));
        }
        let wh = &self.webhooks;
        if wh.retry_schedule_secs.is_empty() || wh.retry_schedule_secs.len() > 30 {
            return Err(invalid(
                "webhooks.retry_schedule_secs",
                "between 1 and 30 attempts",
            ));
        }
        if wh.retry_schedule_secs.iter().any(|d| *d > 7 * 86_400) {
            return Err(invalid(
                "webhooks.retry_schedule_secs",
                "no delay above 7 days",
            ));
        }
        if wh.timeout_ms == 0 || wh.connect_timeout_ms == 0 {
            return Err(invalid("webhooks.timeout_ms", "timeouts must be positive"));
        }
        if wh.disable_after_secs == 0 {
            return Err(invalid("webhooks.disable_after_secs", "must be positive"));
        }
        if !(1..=60_000).contains(&wh.dispatch_interval_ms) {
            return Err(invalid(
                "webhooks.dispatch_interval_ms",
                "must be between 1 and 60000",
            ));
        }
        if !(1..=10_000).contains(&wh.dispatch_batch) {
            return Err(invalid(
                "webhooks.dispatch_batch",
                "must be between 1 and 10000",
            ));
        }
        if self.api.body_limit_bytes < 1024 {
            return Err(invalid("api.body_limit_bytes", "must be at least 1024"));
        }
        if self.api.request_timeout_ms == 0 {
            return Err(invalid("api.request_timeout_ms", "must be positive"));
        }
        for origin in &self.api.cors_origins {
            if origin != "*" {
                check_url("api.cors_origins", origin)?;
            }
        }
        let w = &self.worker;
        if w.concurrency == 0 || w.concurrency > 10_000 {
            return Err(invalid("worker.concurrency", "must be between 1 and 10000"));
        }
        if w.claim_batch == 0 || w.claim_batch > 1_000 {
            return Err(invalid("worker.claim_batch", "must be between 1 and 1000"));
        }
        if w.poll_interval_ms == 0 || w.poll_interval_ms > 1_000 {
            return Err(invalid(
                "worker.poll_interval_ms",
                "must be between 1 and 1000",
            ));
        }
        if w.lease_ms < 300 {
            return Err(invalid("worker.lease_ms", "must be at least 300"));
        }
        if let Some((name, _)) = w.max_retries.iter().find(|(_, n)| **n < 0) {
            return Err(invalid(
                "worker.max_retries",
                format!("{name}: must not be negative"),
            ));
        }
        if w.reap_interval_ms == 0 || w.task_timeout_ms == 0 || w.max_backoff_ms == 0 {
            return Err(invalid(
                "worker.reap_interval_ms",
                "intervals and timeouts must be positive",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for pool in w.pools.values() {
            if pool.concurrency == 0 || pool.task_types.is_empty() {
                return Err(invalid(
                    "worker.pools",
                    "each pool needs task_types and a positive concurrency",
                ));
            }
            for t in &pool.task_types {
                if !seen.insert(t) {
                    return Err(invalid(
                        "worker.pools",
                        format!("task type `{t}` is in two pools"),
                    ));
                }
            }
        }
        for (key, cid) in [
            ("kakaopay.cid_one_time", &self.kakaopay.cid_one_time),
            ("kakaopay.cid_subscription", &self.kakaopay.cid_subscription),
        ] {
            if cid.len() != 10 {
                return Err(invalid(key, "a KakaoPay cid is 10 characters"));
            }
        }
        let secret = self.auth.jwt_secret.expose_secret();
        if secret.len() < 32 {
            return Err(invalid("auth.jwt_secret", "must be at least 32 bytes"));
        }
        if self.environment == Environment::Production && secret == DEV_JWT_SECRET {
            return Err(invalid(
                "auth.jwt_secret",
                "required outside dev: set PILLIVERY__AUTH__JWT_SECRET",
            ));
        }
        if self.auth.access_ttl_secs < 60 || self.auth.refresh_ttl_secs < self.auth.access_ttl_secs
        {
            return Err(invalid(
                "auth.access_ttl_secs",
                "access TTL must be ≥ 60 s and not above the refresh TTL",
            ));
        }
        for name in self.oauth.providers.keys() {
            let Some(p) = self.oauth.provider(name) else {
                return Err(invalid(
                    "oauth.providers",
                    format!("provider `{name}` has no preset: set authorize_url, token_url and userinfo_url"),
                ));
            };
            if p.client_id.is_empty() {
                return Err(invalid(
                    "oauth.providers",
                    format!("provider `{name}` needs a client_id"),
                ));
            }
            for url in [&p.authorize_url, &p.token_url, &p.userinfo_url] {
                check_url("oauth.providers", url)?;
            }
        }
        let rl = &self.rate_limit;
        if rl.per_ip_per_sec == 0 || rl.per_ip_burst == 0 {
            return Err(invalid(
                "rate_limit.per_ip_per_sec",
                "rate and burst must be positive",
            ));
        }
        if rl.login_per_min == 0 || rl.login_burst == 0 {
            return Err(invalid(
                "rate_limit.login_per_min",
                "rate and burst must be positive",
            ));
        }
        if tracing_level_is_empty(&self.log.level) {
            return Err(invalid("log.level", "must not be empty"));
        }
        Ok(())
    }
}

/// Figment's errors, one line each, naming the key as it is written in the file
/// (`api.listen`) and where the value came from.
fn describe(err: figment::Error) -> SettingsError {
    let lines: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_lowercase();
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("key `{key}`: {}{source}", e.kind)
            }
        })
        .collect();
    SettingsError::Load(lines.join("; "))
}

fn tracing_level_is_empty(level: &str) -> bool {
    level.trim().is_empty()
}

fn check_url(key: &'static str, value: &str) -> Result<(), SettingsError> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(()),
        _ => Err(invalid(key, format!("`{value}` is not an http(s) URL"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn production_refuses_the_dev_secret() {
        let s = Settings {
            environment: Environment::Production,
            ..Settings::default()
        };
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("auth.jwt_secret"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        type Mutation = Box<dyn Fn(&mut Settings)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "database.url",
                Box::new(|s| s.database.url = "mysql://x".into()),
            ),
            (
                "database.idle_in_transaction_timeout_ms",
                Box::new(|s| s.database.idle_in_transaction_timeout_ms = 500),
            ),
            ("redis.url", Box::new(|s| s.redis.url = "http://x".into())),
            (
                "api.public_url",
                Box::new(|s| s.api.public_url = "nope".into()),
            ),
            ("worker.concurrency", Box::new(|s| s.worker.concurrency = 0)),
            (
                "kakaopay.cid_one_time",
                Box::new(|s| s.kakaopay.cid_one_time = "short".into()),
            ),
            (
                "auth.jwt_secret",
                Box::new(|s| s.auth.jwt_secret = "x".into()),
            ),
            (
                "rate_limit.login_per_min",
                Box::new(|s| s.rate_limit.login_per_min = 0),
            ),
            (
                "webhooks.retry_schedule_secs",
                Box::new(|s| s.webhooks.retry_schedule_secs.clear()),
            ),
            (
                "webhooks.timeout_ms",
                Box::new(|s| s.webhooks.connect_timeout_ms = 0),
            ),
            (
                "webhooks.dispatch_batch",
                Box::new(|s| s.webhooks.dispatch_batch = 0),
            ),
            (
                "oauth.providers",
                Box::new(|s| {
                    s.oauth
                        .providers
                        .insert("acme".into(), OAuthProviderSettings::default());
                }),
            ),
        ];
        for (key, mutate) in cases {
            let mut s = Settings::default();
            mutate(&mut s);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(key), "expected {key} in {err}");
        }
    }

    #[test]
    fn the_store_time_zone_is_an_iana_name() {
        let cases: &[(&str, Option<chrono_tz::Tz>)] = &[
            ("Asia/Seoul", Some(chrono_tz::Asia::Seoul)),
            ("UTC", Some(chrono_tz::UTC)),
            ("America/New_York", Some(chrono_tz::America::New_York)),
            ("Europe/London", Some(chrono_tz::Europe::London)),
            ("", None),
            ("Seoul", None),
            ("KST", None),
            ("+09:00", None),
            ("UTC+9", None),
            ("Asia/Seoul ", None),
            ("Mars/Olympus_Mons", None),
        ];
        for (name, want) in cases {
            let got = name.parse::<StoreTimeZone>();
            match want {
                Some(tz) => assert_eq!(got.map(StoreTimeZone::tz), Ok(*tz), "{name:?}"),
                None => assert!(
                    got.as_ref().is_err_and(|e| e.contains("IANA")),
                    "{name:?} should be refused, got {got:?}"
                ),
            }
        }
        assert_eq!(StoreTimeZone::default().tz(), chrono_tz::Asia::Seoul);
    }

    #[test]
    fn the_store_day_follows_the_zone() {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let cases = [
            // Seoul is UTC+9 with no daylight saving.
            ("Asia/Seoul", "2026-01-01T14:59:59Z", "2026-01-01"),
            ("Asia/Seoul", "2026-01-01T15:00:00Z", "2026-01-02"),
            ("UTC", "2026-01-01T23:59:59Z", "2026-01-01"),
            // New York: UTC−5 in winter, UTC−4 in summer.
            ("America/New_York", "2026-01-02T04:59:59Z", "2026-01-01"),
            ("America/New_York", "2026-07-02T03:59:59Z", "2026-07-01"),
            ("America/New_York", "2026-07-02T04:00:00Z", "2026-07-02"),
        ];
        for (zone, instant, day) in cases {
            let tz: StoreTimeZone = zone.parse().unwrap();
            assert_eq!(
                tz.local_date(at(instant)).to_string(),
                day,
                "{zone} {instant}"
            );
        }
    }

    #[test]
    fn a_bad_time_zone_stops_loading_and_names_its_key() {
        let dir = std::env::temp_dir().join(format!("pv-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        std::fs::write(&path, "[subscriptions]\ntime_zone = \"Seoul\"\n").unwrap();
        let err = Settings::load_from(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("key `subscriptions.time_zone`"), "{err}");
        assert!(err.contains("IANA"), "{err}");
        std::fs::write(&path, "[subscriptions]\ntime_zone = \"UTC\"\n").unwrap();
        let s = Settings::load_from(Some(&path)).unwrap();
        assert_eq!(s.subscriptions.time_zone.tz(), chrono_tz::UTC);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_then_env_layering_and_debug_hides_secrets() {
        let dir = std::env::temp_dir().join(format!("pv-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        std::fs::write(
            &path,
            "[api]\nlisten = \"127.0.0.1:9999\"\n[auth]\njwt_secret = \"file-secret-file-secret-file-secret-123\"\n[oauth.providers.kakao]\nclient_id = \"abc\"\n",
        )
        .unwrap();
        let s = Settings::load_from(Some(&path)).unwrap();
        assert_eq!(s.api.listen.port(), 9999);
        let kakao = s.oauth.provider("kakao").unwrap();
        assert_eq!(kakao.token_url, "https://kauth.kakao.com/oauth/token");
        let debug = format!("{s:?}");
        assert!(!debug.contains("file-secret"), "secret leaked: {debug}");
        assert!(Settings::load_from(Some(&dir.join("missing.toml"))).is_err());
        std::fs::write(&path, "[api]\nlisten = \"not an address\"\n").unwrap();
        let err = Settings::load_from(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("key `api.listen`"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod example_file {
    /// The documented example must load and equal the defaults, so it cannot drift.
    #[test]
    fn the_example_config_is_complete_and_matches_the_defaults() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../ops/config/pillivery.example.toml"
        );
        let loaded = super::Settings::load_from(Some(std::path::Path::new(path))).unwrap();
        assert_eq!(
            format!("{loaded:?}"),
            format!("{:?}", super::Settings::default())
        );
    }
}
