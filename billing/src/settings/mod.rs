//! The one `Settings` struct every binary reads: defaults → optional TOML file → env.
//!
//! Sources, later ones winning: built-in defaults, the file named by `PILLIVERY_CONFIG`,
//! then `PILLIVERY__SECTION__KEY` environment variables. `Settings::validate` turns a bad
//! value into an error naming the key, so a misconfigured process stops at start.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

mod sections;

pub use sections::*;

/// Where `PILLIVERY__SECTION__KEY` variables are read from.
const ENV_PREFIX: &str = "PILLIVERY__";

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
    pub console: ConsoleSettings,
    pub retention: RetentionSettings,
    pub catalog: CatalogSettings,
    pub log: LogSettings,
}

impl Settings {
    /// Whether the console's cookie is sent over HTTPS only (`console.secure_cookie`, by
    /// default everywhere but dev and test).
    pub fn console_cookie_secure(&self) -> bool {
        self.console
            .secure_cookie
            .unwrap_or(self.environment == Environment::Production)
    }

    /// Defaults → `PILLIVERY_CONFIG` file (if set) → `PILLIVERY__…` env, then validated.
    pub fn load() -> Result<Self, SettingsError> {
        let file = std::env::var_os("PILLIVERY_CONFIG");
        Self::load_from(file.as_deref().map(Path::new))
    }

    pub fn load_from(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_with_env(file, ENV_PREFIX)
    }

    /// `load_from` with the environment read under `env_prefix`, so tests can give
    /// variables of their own without racing each other over `PILLIVERY__…`.
    fn load_with_env(file: Option<&Path>, env_prefix: &str) -> Result<Self, SettingsError> {
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
        figment = figment.merge(Env::prefixed(env_prefix).split("__"));
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
        if !idle_tx.is_zero() && idle_tx < Duration::from_millis(1_000) {
            // Shorter would end legitimate transactions that wait on a busy pool or lock.
            return Err(invalid(
                "database.idle_in_transaction_timeout_ms",
                "must be 0 (off) or at least 1000",
            ));
        }
        if self.catalog.snapshot_max_items == 0 || self.catalog.snapshot_max_age_secs.is_zero() {
            return Err(invalid(
                "catalog",
                "snapshot_max_items and snapshot_max_age_secs must be at least 1",
            ));
        }
        let r = &self.retention;
        if r.delivered_events_days == 0 || r.failed_jobs_days == 0 || r.probe_runs_days == 0 {
            return Err(invalid("retention", "every retention is at least 1 day"));
        }
        if r.view_days_days < 3 {
            return Err(invalid(
                "retention.view_days_days",
                "must be at least 3 (yesterday's counts are still flushed)",
            ));
        }
        if !(10..=10_000).contains(&r.batch_size) || r.max_batches == 0 {
            return Err(invalid(
                "retention.batch_size",
                "batch_size must be 10-10000 and max_batches at least 1",
            ));
        }
        let console = &self.console;
        if console.idle_timeout_secs < Duration::from_secs(60)
            || console.idle_timeout_secs > console.session_ttl_secs
        {
            return Err(invalid(
                "console.idle_timeout_secs",
                "must be at least 60 and at most console.session_ttl_secs",
            ));
        }
        if !(1..=300).contains(&console.overview_refresh_secs) {
            return Err(invalid(
                "console.overview_refresh_secs",
                "must be between 1 and 300",
            ));
        }
        let redis = self.redis.url.expose_secret();
        if !(redis.starts_with("redis://") || redis.starts_with("rediss://")) {
            return Err(invalid("redis.url", "must be a redis:// URL"));
        }
        if self.redis.timeout_ms.is_zero() {
            return Err(invalid("redis.timeout_ms", "must be positive"));
        }
        if !(1..=100).contains(&self.redis.breaker_failures) {
            return Err(invalid(
                "redis.breaker_failures",
                "must be between 1 and 100",
            ));
        }
        // Shorter would probe a dead Redis many times a second; longer keeps the cache
        // and the sessions off for a minute after Redis is back.
        if !(Duration::from_millis(100)..=Duration::from_millis(60_000))
            .contains(&self.redis.breaker_open_ms)
        {
            return Err(invalid(
                "redis.breaker_open_ms",
                "must be between 100 and 60000",
            ));
        }
        if self.redis.page_cache_ttl_secs.is_zero() {
            return Err(invalid("redis.page_cache_ttl_secs", "must be positive"));
        }
        if !(1..=100).contains(&self.redis.cached_pages) {
            return Err(invalid("redis.cached_pages", "must be between 1 and 100"));
        }
        check_url("api.public_url", &self.api.public_url)?;
        check_url("kakaopay.base_url", &self.kakaopay.base_url)?;
        check_url("payments.result_url", &self.payments.result_url)?;
        let p = &self.payments;
        if p.reconcile_min_backoff_ms.is_zero()
            || p.reconcile_max_backoff_ms < p.reconcile_min_backoff_ms
        {
            return Err(invalid(
                "payments.reconcile_max_backoff_ms",
                "backoffs must be positive and max ≥ min",
            ));
        }
        if p.ready_give_up_secs.is_zero() {
            return Err(invalid("payments.ready_give_up_secs", "must be positive"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&p.max_wait_secs) {
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
        if sub.reconcile_window_secs.is_zero() || sub.review_after_secs < sub.reconcile_window_secs
        {
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
        if sub.renewal_reminder_days > 60 {
            return Err(invalid(
                "subscriptions.renewal_reminder_days",
                "must be between 0 (no reminders) and 60",
            ));
        }
        if sub.recovery_link_ttl_secs < Duration::from_secs(3_600)
            || sub.recovery_link_ttl_secs > Duration::from_secs(90 * 86_400)
        {
            return Err(invalid(
                "subscriptions.recovery_link_ttl_secs",
                "must be between 1 hour and 90 days",
            ));
        }
        if !(1..=500).contains(&sub.charge_batch_size) {
            return Err(invalid(
                "subscriptions.charge_batch_size",
                "must be between 1 and 500",
            ));
        }
        if !(1..=64).contains(&sub.charge_batches) {
            return Err(invalid(
                "subscriptions.charge_batches",
                "must be between 1 and 64",
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
        if g.breaker_open_ms.is_zero() || g.breaker_half_open_calls == 0 {
            return Err(invalid(
                "pg_guard.breaker_open_ms",
                "the open time and the half-open trial calls must be positive",
            ));
        }
        if g.max_concurrent == 0
            || g.rate_per_sec == 0
            || g.rate_burst == 0
            || g.max_wait_ms.is_zero()
        {
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
        if wh
            .retry_schedule_secs
            .iter()
            .any(|d| *d > Duration::from_secs(7 * 86_400))
        {
            return Err(invalid(
                "webhooks.retry_schedule_secs",
                "no delay above 7 days",
            ));
        }
        if wh.timeout_ms.is_zero() || wh.connect_timeout_ms.is_zero() {
            return Err(invalid("webhooks.timeout_ms", "timeouts must be positive"));
        }
        if wh.disable_after_secs.is_zero() {
            return Err(invalid("webhooks.disable_after_secs", "must be positive"));
        }
        if !(Duration::from_millis(1)..=Duration::from_millis(60_000))
            .contains(&wh.dispatch_interval_ms)
        {
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
        if wh.secret_rotation_overlap_secs > Duration::from_secs(30 * 86_400) {
            return Err(invalid(
                "webhooks.secret_rotation_overlap_secs",
                "at most 30 days",
            ));
        }
        if self.api.body_limit_bytes < 1024 {
            return Err(invalid("api.body_limit_bytes", "must be at least 1024"));
        }
        if self.api.request_timeout_ms.is_zero() {
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
        if !(Duration::from_millis(1)..=Duration::from_millis(1_000)).contains(&w.poll_interval_ms)
        {
            return Err(invalid(
                "worker.poll_interval_ms",
                "must be between 1 and 1000",
            ));
        }
        if w.lease_ms < Duration::from_millis(300) {
            return Err(invalid("worker.lease_ms", "must be at least 300"));
        }
        if let Some((name, _)) = w.max_retries.iter().find(|(_, n)| **n < 0) {
            return Err(invalid(
                "worker.max_retries",
                format!("{name}: must not be negative"),
            ));
        }
        if w.reap_interval_ms.is_zero() || w.task_timeout_ms.is_zero() || w.max_backoff_ms.is_zero()
        {
            return Err(invalid(
                "worker.reap_interval_ms",
                "intervals and timeouts must be positive",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&w.report_interval_secs) {
            return Err(invalid(
                "worker.report_interval_secs",
                "must be between 1 and 300",
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
        if self.auth.jwt_previous_secrets.len() > 3
            || self
                .auth
                .jwt_previous_secrets
                .iter()
                .any(|s| s.expose_secret().len() < 32 || s.expose_secret() == secret)
        {
            return Err(invalid(
                "auth.jwt_previous_secrets",
                "at most 3, each at least 32 bytes and not the current jwt_secret",
            ));
        }
        if self.auth.access_ttl_secs < Duration::from_secs(60)
            || self.auth.refresh_ttl_secs < self.auth.access_ttl_secs
        {
            return Err(invalid(
                "auth.access_ttl_secs",
                "access TTL must be ≥ 60 s and not above the refresh TTL",
            ));
        }
        // Long enough to sign in at the provider; short, since each attempt is a row and a
        // cookie that a replay could aim at.
        if !(60..=3_600).contains(&self.auth.oauth_state_ttl_secs.as_secs()) {
            return Err(invalid(
                "auth.oauth_state_ttl_secs",
                "must be between 60 and 3600",
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
        if rl.per_account_per_min == 0 || rl.per_account_burst == 0 {
            return Err(invalid(
                "rate_limit.per_account_per_min",
                "the per-account limit and burst must be at least 1",
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

    pub(super) fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    pub(super) fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

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
                Box::new(|s| s.database.idle_in_transaction_timeout_ms = ms(500)),
            ),
            ("redis.url", Box::new(|s| s.redis.url = "http://x".into())),
            (
                "api.public_url",
                Box::new(|s| s.api.public_url = "nope".into()),
            ),
            ("worker.concurrency", Box::new(|s| s.worker.concurrency = 0)),
            ("catalog", Box::new(|s| s.catalog.snapshot_max_items = 0)),
            (
                "catalog",
                Box::new(|s| s.catalog.snapshot_max_age_secs = Duration::ZERO),
            ),
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
                "rate_limit.per_account_per_min",
                Box::new(|s| s.rate_limit.per_account_burst = 0),
            ),
            (
                "webhooks.retry_schedule_secs",
                Box::new(|s| s.webhooks.retry_schedule_secs.clear()),
            ),
            (
                "webhooks.timeout_ms",
                Box::new(|s| s.webhooks.connect_timeout_ms = Duration::ZERO),
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
            (
                "worker.poll_interval_ms",
                Box::new(|s| s.worker.poll_interval_ms = Duration::ZERO),
            ),
            (
                "worker.poll_interval_ms",
                Box::new(|s| s.worker.poll_interval_ms = ms(1_001)),
            ),
            // Below the millisecond the key is counted in: not "between 1 and 1000".
            (
                "worker.poll_interval_ms",
                Box::new(|s| s.worker.poll_interval_ms = Duration::from_micros(500)),
            ),
            ("worker.lease_ms", Box::new(|s| s.worker.lease_ms = ms(299))),
            (
                "worker.report_interval_secs",
                Box::new(|s| s.worker.report_interval_secs = Duration::ZERO),
            ),
            (
                "worker.report_interval_secs",
                Box::new(|s| s.worker.report_interval_secs = secs(301)),
            ),
            (
                "worker.reap_interval_ms",
                Box::new(|s| s.worker.max_backoff_ms = Duration::ZERO),
            ),
            (
                "payments.reconcile_max_backoff_ms",
                Box::new(|s| s.payments.reconcile_max_backoff_ms = ms(499)),
            ),
            (
                "payments.max_wait_secs",
                Box::new(|s| s.payments.max_wait_secs = secs(61)),
            ),
            (
                "subscriptions.review_after_secs",
                Box::new(|s| s.subscriptions.review_after_secs = secs(299)),
            ),
            (
                "subscriptions.recovery_link_ttl_secs",
                Box::new(|s| s.subscriptions.recovery_link_ttl_secs = secs(3_599)),
            ),
            (
                "subscriptions.recovery_link_ttl_secs",
                Box::new(|s| s.subscriptions.recovery_link_ttl_secs = secs(90 * 86_400 + 1)),
            ),
            (
                "webhooks.retry_schedule_secs",
                Box::new(|s| s.webhooks.retry_schedule_secs[7] = secs(7 * 86_400 + 1)),
            ),
            (
                "webhooks.dispatch_interval_ms",
                Box::new(|s| s.webhooks.dispatch_interval_ms = ms(60_001)),
            ),
            (
                "webhooks.secret_rotation_overlap_secs",
                Box::new(|s| s.webhooks.secret_rotation_overlap_secs = secs(30 * 86_400 + 1)),
            ),
            (
                "auth.access_ttl_secs",
                Box::new(|s| s.auth.access_ttl_secs = secs(59)),
            ),
            (
                "auth.access_ttl_secs",
                Box::new(|s| s.auth.refresh_ttl_secs = secs(1_799)),
            ),
            (
                "auth.oauth_state_ttl_secs",
                Box::new(|s| s.auth.oauth_state_ttl_secs = secs(59)),
            ),
            (
                "auth.oauth_state_ttl_secs",
                Box::new(|s| s.auth.oauth_state_ttl_secs = secs(3_601)),
            ),
            ("redis.cached_pages", Box::new(|s| s.redis.cached_pages = 0)),
            (
                "redis.cached_pages",
                Box::new(|s| s.redis.cached_pages = 101),
            ),
            (
                "redis.breaker_failures",
                Box::new(|s| s.redis.breaker_failures = 0),
            ),
            (
                "redis.breaker_failures",
                Box::new(|s| s.redis.breaker_failures = 101),
            ),
            (
                "redis.breaker_open_ms",
                Box::new(|s| s.redis.breaker_open_ms = ms(99)),
            ),
            (
                "redis.breaker_open_ms",
                Box::new(|s| s.redis.breaker_open_ms = ms(60_001)),
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
    fn the_bounds_themselves_are_valid() {
        type Mutation = Box<dyn Fn(&mut Settings)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "idle_in_transaction_timeout off",
                Box::new(|s| s.database.idle_in_transaction_timeout_ms = Duration::ZERO),
            ),
            (
                "idle_in_transaction_timeout 1000",
                Box::new(|s| s.database.idle_in_transaction_timeout_ms = ms(1_000)),
            ),
            (
                "statement_timeout off",
                Box::new(|s| s.database.statement_timeout_ms = Duration::ZERO),
            ),
            ("poll 1", Box::new(|s| s.worker.poll_interval_ms = ms(1))),
            (
                "poll 1000",
                Box::new(|s| s.worker.poll_interval_ms = ms(1_000)),
            ),
            ("lease 300", Box::new(|s| s.worker.lease_ms = ms(300))),
            (
                "report every second",
                Box::new(|s| s.worker.report_interval_secs = secs(1)),
            ),
            (
                "report every 5 minutes",
                Box::new(|s| s.worker.report_interval_secs = secs(300)),
            ),
            (
                "oauth state 60",
                Box::new(|s| s.auth.oauth_state_ttl_secs = secs(60)),
            ),
            (
                "oauth state 3600",
                Box::new(|s| s.auth.oauth_state_ttl_secs = secs(3_600)),
            ),
            (
                "backoffs equal",
                Box::new(|s| s.payments.reconcile_max_backoff_ms = ms(500)),
            ),
            ("wait 1", Box::new(|s| s.payments.max_wait_secs = secs(1))),
            ("wait 60", Box::new(|s| s.payments.max_wait_secs = secs(60))),
            (
                "review at the window",
                Box::new(|s| s.subscriptions.review_after_secs = secs(300)),
            ),
            (
                "no dunning retries",
                Box::new(|s| s.subscriptions.retry_delays_secs.clear()),
            ),
            (
                "a week's delay",
                Box::new(|s| s.webhooks.retry_schedule_secs = vec![secs(7 * 86_400)]),
            ),
            (
                "dispatch 60000",
                Box::new(|s| s.webhooks.dispatch_interval_ms = ms(60_000)),
            ),
            (
                "no rotation overlap",
                Box::new(|s| s.webhooks.secret_rotation_overlap_secs = Duration::ZERO),
            ),
            (
                "30 days of rotation overlap",
                Box::new(|s| s.webhooks.secret_rotation_overlap_secs = secs(30 * 86_400)),
            ),
            (
                "refresh = access",
                Box::new(|s| s.auth.refresh_ttl_secs = secs(1_800)),
            ),
            ("one cached page", Box::new(|s| s.redis.cached_pages = 1)),
            ("100 cached pages", Box::new(|s| s.redis.cached_pages = 100)),
            (
                "redis breaker after 1 failure",
                Box::new(|s| s.redis.breaker_failures = 1),
            ),
            (
                "redis breaker after 100 failures",
                Box::new(|s| s.redis.breaker_failures = 100),
            ),
            (
                "redis breaker open 100 ms",
                Box::new(|s| s.redis.breaker_open_ms = ms(100)),
            ),
            (
                "redis breaker open 60 s",
                Box::new(|s| s.redis.breaker_open_ms = ms(60_000)),
            ),
        ];
        for (what, mutate) in cases {
            let mut s = Settings::default();
            mutate(&mut s);
            if let Err(e) = s.validate() {
                panic!("{what}: {e}");
            }
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

/// Durations are `Duration`s in the code and whole `_ms`/`_secs` numbers in the file and
/// the environment; these pin the second form to what it always was.
#[cfg(test)]
mod durations {
    use super::tests::{ms, secs};
    use super::*;
    use serde_with::ser::SerializeAsWrap;
    use serde_with::{DurationMilliSeconds, DurationSeconds};

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Unit {
        Ms,
        Secs,
    }
    use Unit::{Ms, Secs};

    type Get = fn(&Settings) -> Duration;

    /// Every single-valued duration key, its unit, and its default as the number it was
    /// when these fields were integers.
    fn scalars() -> Vec<(&'static str, Unit, u64, Get)> {
        vec![
            ("database.acquire_timeout_ms", Ms, 3_000, |s| {
                s.database.acquire_timeout_ms
            }),
            ("database.statement_timeout_ms", Ms, 30_000, |s| {
                s.database.statement_timeout_ms
            }),
            ("database.idle_in_transaction_timeout_ms", Ms, 60_000, |s| {
                s.database.idle_in_transaction_timeout_ms
            }),
            ("redis.timeout_ms", Ms, 500, |s| s.redis.timeout_ms),
            ("redis.breaker_open_ms", Ms, 1_000, |s| {
                s.redis.breaker_open_ms
            }),
            ("redis.page_cache_ttl_secs", Secs, 60, |s| {
                s.redis.page_cache_ttl_secs
            }),
            ("catalog.snapshot_max_age_secs", Secs, 60, |s| {
                s.catalog.snapshot_max_age_secs
            }),
            ("api.request_timeout_ms", Ms, 15_000, |s| {
                s.api.request_timeout_ms
            }),
            ("api.shutdown_grace_ms", Ms, 10_000, |s| {
                s.api.shutdown_grace_ms
            }),
            ("worker.shutdown_grace_ms", Ms, 20_000, |s| {
                s.worker.shutdown_grace_ms
            }),
            ("worker.poll_interval_ms", Ms, 500, |s| {
                s.worker.poll_interval_ms
            }),
            ("worker.lease_ms", Ms, 30_000, |s| s.worker.lease_ms),
            ("worker.report_interval_secs", Secs, 5, |s| {
                s.worker.report_interval_secs
            }),
            ("console.session_ttl_secs", Secs, 43_200, |s| {
                s.console.session_ttl_secs
            }),
            ("console.idle_timeout_secs", Secs, 1_800, |s| {
                s.console.idle_timeout_secs
            }),
            ("worker.reap_interval_ms", Ms, 5_000, |s| {
                s.worker.reap_interval_ms
            }),
            ("worker.task_timeout_ms", Ms, 300_000, |s| {
                s.worker.task_timeout_ms
            }),
            ("worker.max_backoff_ms", Ms, 3_600_000, |s| {
                s.worker.max_backoff_ms
            }),
            ("payments.ready_give_up_secs", Secs, 900, |s| {
                s.payments.ready_give_up_secs
            }),
            ("payments.reconcile_min_backoff_ms", Ms, 500, |s| {
                s.payments.reconcile_min_backoff_ms
            }),
            ("payments.reconcile_max_backoff_ms", Ms, 60_000, |s| {
                s.payments.reconcile_max_backoff_ms
            }),
            ("payments.max_wait_secs", Secs, 10, |s| {
                s.payments.max_wait_secs
            }),
            ("subscriptions.reconcile_skew_secs", Secs, 60, |s| {
                s.subscriptions.reconcile_skew_secs
            }),
            ("subscriptions.reconcile_window_secs", Secs, 300, |s| {
                s.subscriptions.reconcile_window_secs
            }),
            ("subscriptions.review_after_secs", Secs, 3_600, |s| {
                s.subscriptions.review_after_secs
            }),
            (
                "subscriptions.recovery_link_ttl_secs",
                Secs,
                1_209_600,
                |s| s.subscriptions.recovery_link_ttl_secs,
            ),
            ("pg_guard.breaker_open_ms", Ms, 10_000, |s| {
                s.pg_guard.breaker_open_ms
            }),
            ("pg_guard.defer_jitter_ms", Ms, 5_000, |s| {
                s.pg_guard.defer_jitter_ms
            }),
            ("pg_guard.max_wait_ms", Ms, 30_000, |s| {
                s.pg_guard.max_wait_ms
            }),
            ("pg_guard.misconfigured_hold_ms", Ms, 60_000, |s| {
                s.pg_guard.misconfigured_hold_ms
            }),
            ("webhooks.timeout_ms", Ms, 10_000, |s| s.webhooks.timeout_ms),
            ("webhooks.connect_timeout_ms", Ms, 3_000, |s| {
                s.webhooks.connect_timeout_ms
            }),
            ("webhooks.disable_after_secs", Secs, 432_000, |s| {
                s.webhooks.disable_after_secs
            }),
            ("webhooks.dispatch_interval_ms", Ms, 500, |s| {
                s.webhooks.dispatch_interval_ms
            }),
            ("webhooks.secret_rotation_overlap_secs", Secs, 86_400, |s| {
                s.webhooks.secret_rotation_overlap_secs
            }),
            ("auth.access_ttl_secs", Secs, 1_800, |s| {
                s.auth.access_ttl_secs
            }),
            ("auth.refresh_ttl_secs", Secs, 604_800, |s| {
                s.auth.refresh_ttl_secs
            }),
            ("auth.signup_token_ttl_secs", Secs, 900, |s| {
                s.auth.signup_token_ttl_secs
            }),
            ("auth.oauth_state_ttl_secs", Secs, 600, |s| {
                s.auth.oauth_state_ttl_secs
            }),
            ("oauth.timeout_ms", Ms, 5_000, |s| s.oauth.timeout_ms),
        ]
    }

    /// A duration as the file and the environment write it, through the same `serde_with`
    /// adapters the fields load with.
    fn written(d: Duration, unit: Unit) -> u64 {
        let value = match unit {
            Ms => serde_json::to_value(SerializeAsWrap::<_, DurationMilliSeconds<u64>>::new(&d)),
            Secs => serde_json::to_value(SerializeAsWrap::<_, DurationSeconds<u64>>::new(&d)),
        };
        value.unwrap().as_u64().unwrap()
    }

    /// Every duration by key (list entries and per-task timeouts included), to compare two
    /// loads key by key.
    fn all(s: &Settings) -> BTreeMap<String, Vec<Duration>> {
        let mut all: BTreeMap<String, Vec<Duration>> = scalars()
            .into_iter()
            .map(|(key, _, _, get)| (key.to_owned(), vec![get(s)]))
            .collect();
        all.insert(
            "subscriptions.retry_delays_secs".into(),
            s.subscriptions.retry_delays_secs.clone(),
        );
        all.insert(
            "webhooks.retry_schedule_secs".into(),
            s.webhooks.retry_schedule_secs.clone(),
        );
        for (task, d) in &s.worker.task_timeouts_ms {
            all.insert(format!("worker.task_timeouts_ms.{task}"), vec![*d]);
        }
        all
    }

    /// Removes the variables it set, even when the test fails.
    struct EnvVars(Vec<String>);

    impl Drop for EnvVars {
        fn drop(&mut self) {
            for name in &self.0 {
                std::env::remove_var(name);
            }
        }
    }

    /// Loads `file` (TOML) and `env` (`SECTION__KEY` → value) the way `Settings::load`
    /// does, the variables under a prefix of this call's own.
    fn load(file: &str, env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        let prefix = format!("PVTEST_{id}__");
        let _vars = EnvVars(
            env.iter()
                .map(|(key, value)| {
                    let name = format!("{prefix}{key}");
                    std::env::set_var(&name, value);
                    name
                })
                .collect(),
        );
        let dir = std::env::temp_dir().join(format!("pv-settings-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        std::fs::write(&path, file).unwrap();
        let loaded = Settings::load_with_env(Some(&path), &prefix);
        std::fs::remove_dir_all(&dir).unwrap();
        loaded
    }

    #[test]
    fn every_default_is_the_number_it_was_in_its_unit() {
        let d = Settings::default();
        for (key, unit, was, get) in scalars() {
            let want = match unit {
                Ms => ms(was),
                Secs => secs(was),
            };
            assert_eq!(get(&d), want, "{key}");
            assert_eq!(written(get(&d), unit), was, "{key}");
        }
        let as_secs = |v: &[Duration]| v.iter().map(|d| written(*d, Secs)).collect::<Vec<_>>();
        assert_eq!(
            as_secs(&d.subscriptions.retry_delays_secs),
            [0, 86_400, 86_400, 86_400]
        );
        assert_eq!(
            as_secs(&d.webhooks.retry_schedule_secs),
            [0, 5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
        );
        assert!(d.worker.task_timeouts_ms.is_empty());
        assert_eq!(d.redis.cached_pages, 5);
        assert_eq!(d.redis.breaker_failures, 2);
        // A duration key added later must join the table (the two lists and the map are
        // three more, and `console.overview_refresh_secs`, a whole number, one).
        let debug = format!("{d:?}");
        let keys = debug.matches("_ms: ").count() + debug.matches("_secs: ").count();
        assert_eq!(keys, scalars().len() + 4, "{debug}");
    }

    /// Defaults → their numbers in the file form → loaded again: the same `Duration`s.
    #[test]
    fn the_defaults_round_trip_through_the_file_form() {
        let d = Settings::default();
        let mut file = String::new();
        for (key, unit, _, get) in scalars() {
            file.push_str(&format!("{key} = {}\n", written(get(&d), unit)));
        }
        let list = |v: &[Duration]| {
            let n: Vec<String> = v.iter().map(|d| written(*d, Secs).to_string()).collect();
            format!("[{}]", n.join(", "))
        };
        file.push_str(&format!(
            "subscriptions.retry_delays_secs = {}\n",
            list(&d.subscriptions.retry_delays_secs)
        ));
        file.push_str(&format!(
            "webhooks.retry_schedule_secs = {}\n",
            list(&d.webhooks.retry_schedule_secs)
        ));
        file.push_str(
            "worker.task_timeouts_ms = {}\nredis.cached_pages = 5\nredis.breaker_failures = 2\n",
        );
        let loaded = load(&file, &[]).unwrap();
        assert_eq!(all(&loaded), all(&d), "{file}");
        assert_eq!(format!("{loaded:?}"), format!("{d:?}"));
    }

    #[test]
    fn durations_load_from_the_file_and_the_environment_in_their_units() {
        struct Case {
            file: &'static str,
            env: Vars,
            /// The keys that differ from the defaults, and their values.
            want: Vec<(&'static str, Vec<Duration>)>,
        }
        let cases = [
            Case {
                file: "[worker]\npoll_interval_ms = 50\n",
                env: &[],
                want: vec![("worker.poll_interval_ms", vec![ms(50)])],
            },
            Case {
                file: "",
                env: &[("WORKER__POLL_INTERVAL_MS", "50")],
                want: vec![("worker.poll_interval_ms", vec![ms(50)])],
            },
            // The environment wins over the file.
            Case {
                file: "[worker]\npoll_interval_ms = 250\nlease_ms = 9000\n",
                env: &[("WORKER__POLL_INTERVAL_MS", "50")],
                want: vec![
                    ("worker.poll_interval_ms", vec![ms(50)]),
                    ("worker.lease_ms", vec![secs(9)]),
                ],
            },
            // Milliseconds keep their sub-second part.
            Case {
                file: "",
                env: &[("PG_GUARD__BREAKER_OPEN_MS", "2500")],
                want: vec![("pg_guard.breaker_open_ms", vec![ms(2_500)])],
            },
            Case {
                file: "",
                env: &[
                    ("PAYMENTS__READY_GIVE_UP_SECS", "1200"),
                    ("AUTH__ACCESS_TTL_SECS", "900"),
                ],
                want: vec![
                    ("payments.ready_give_up_secs", vec![secs(1_200)]),
                    ("auth.access_ttl_secs", vec![secs(900)]),
                ],
            },
            Case {
                file: "[subscriptions]\nreconcile_window_secs = 120\nreview_after_secs = 7200\n",
                env: &[],
                want: vec![
                    ("subscriptions.reconcile_window_secs", vec![secs(120)]),
                    ("subscriptions.review_after_secs", vec![secs(7_200)]),
                ],
            },
            // 0 turns a server-side limit off.
            Case {
                file: "",
                env: &[("DATABASE__STATEMENT_TIMEOUT_MS", "0")],
                want: vec![("database.statement_timeout_ms", vec![Duration::ZERO])],
            },
            Case {
                file: "",
                env: &[("SUBSCRIPTIONS__RETRY_DELAYS_SECS", "[0,86400]")],
                want: vec![("subscriptions.retry_delays_secs", vec![secs(0), secs(86_400)])],
            },
            Case {
                file: "",
                env: &[("WEBHOOKS__RETRY_SCHEDULE_SECS", "[0, 5, 60]")],
                want: vec![(
                    "webhooks.retry_schedule_secs",
                    vec![secs(0), secs(5), secs(60)],
                )],
            },
            Case {
                file: "",
                env: &[("SUBSCRIPTIONS__RETRY_DELAYS_SECS", "[]")],
                want: vec![("subscriptions.retry_delays_secs", vec![])],
            },
            Case {
                file: "[webhooks]\nretry_schedule_secs = [1]\n",
                env: &[],
                want: vec![("webhooks.retry_schedule_secs", vec![secs(1)])],
            },
            Case {
                file: "[worker.task_timeouts_ms]\n\"subscription.charge\" = 60000\n\"diag.probe\" = 100\n",
                env: &[],
                want: vec![
                    ("worker.task_timeouts_ms.subscription.charge", vec![secs(60)]),
                    ("worker.task_timeouts_ms.diag.probe", vec![ms(100)]),
                ],
            },
            Case {
                file: "[redis]\nbreaker_open_ms = 1500\n",
                env: &[],
                want: vec![("redis.breaker_open_ms", vec![ms(1_500)])],
            },
            Case {
                file: "",
                env: &[("WORKER__TASK_TIMEOUTS_MS__PROBE", "250")],
                want: vec![("worker.task_timeouts_ms.probe", vec![ms(250)])],
            },
        ];
        let defaults = all(&Settings::default());
        for case in cases {
            let loaded = load(case.file, case.env)
                .unwrap_or_else(|e| panic!("{:?} {:?}: {e}", case.file, case.env));
            let mut want = defaults.clone();
            for (key, value) in &case.want {
                want.insert((*key).to_owned(), value.clone());
            }
            assert_eq!(all(&loaded), want, "{:?} {:?}", case.file, case.env);
        }
    }

    /// Variables as `SECTION__KEY` → value.
    type Vars = &'static [(&'static str, &'static str)];

    #[test]
    fn a_bad_duration_stops_loading_and_names_its_key() {
        // (file, environment, the key the error must name)
        let cases: &[(&str, Vars, &str)] = &[
            (
                "",
                &[("WORKER__POLL_INTERVAL_MS", "fast")],
                "worker.poll_interval_ms",
            ),
            ("", &[("WORKER__LEASE_MS", "-5")], "worker.lease_ms"),
            (
                "[worker]\npoll_interval_ms = 1.5\n",
                &[],
                "worker.poll_interval_ms",
            ),
            (
                "[worker]\npoll_interval_ms = \"50ms\"\n",
                &[],
                "worker.poll_interval_ms",
            ),
            ("[webhooks]\ntimeout_ms = -1\n", &[], "webhooks.timeout_ms"),
            (
                "[subscriptions]\nretry_delays_secs = [0, \"1d\"]\n",
                &[],
                "subscriptions.retry_delays_secs",
            ),
            (
                "",
                &[("WEBHOOKS__RETRY_SCHEDULE_SECS", "[0,-5]")],
                "webhooks.retry_schedule_secs",
            ),
            (
                "[worker.task_timeouts_ms]\nprobe = \"soon\"\n",
                &[],
                "worker.task_timeouts_ms",
            ),
            // Loaded, then refused by validation: still named.
            (
                "",
                &[("WORKER__POLL_INTERVAL_MS", "0")],
                "worker.poll_interval_ms",
            ),
            (
                "",
                &[("WORKER__POLL_INTERVAL_MS", "1001")],
                "worker.poll_interval_ms",
            ),
            ("", &[("REDIS__CACHED_PAGES", "0")], "redis.cached_pages"),
            (
                "",
                &[("REDIS__BREAKER_OPEN_MS", "50")],
                "redis.breaker_open_ms",
            ),
            (
                "[redis]\nbreaker_failures = 0\n",
                &[],
                "redis.breaker_failures",
            ),
        ];
        for (file, env, key) in cases {
            match load(file, env) {
                Ok(_) => panic!("{file:?} {env:?} loaded"),
                Err(e) => assert!(e.to_string().contains(key), "{key} not in {e}"),
            }
        }
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
