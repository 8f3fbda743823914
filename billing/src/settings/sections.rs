//! The configuration's sections, each with its defaults (the file form is the same path
//! in TOML; see ops/config/pillivery.example.toml), and the typed values parsed at load
//! (durations, the store's time zone, the OAuth provider presets).
//!
//! Durations are `Duration`s in the code; the file and the environment give them as whole
//! numbers in the unit their key's name ends with (`_ms`, `_secs`), since those names and
//! units are what every deployed configuration is written in.

use serde_with::{serde_as, DurationMilliSeconds, DurationSeconds};

use super::*;

#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// May carry a password, hence secret.
    pub url: SecretString,
    pub max_connections: u32,
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub acquire_timeout_ms: Duration,
    /// Server-side `statement_timeout` of every pooled session (0 = none). Migrations run
    /// on their own connection without it.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub statement_timeout_ms: Duration,
    /// Server-side `idle_in_transaction_session_timeout` (0 = none): the last resort that
    /// ends a session some bug left inside a transaction, releasing its locks.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub idle_in_transaction_timeout_ms: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://postgres@127.0.0.1:5432/pillivery"),
            max_connections: 20,
            acquire_timeout_ms: Duration::from_millis(3_000),
            statement_timeout_ms: Duration::from_millis(30_000),
            idle_in_transaction_timeout_ms: Duration::from_millis(60_000),
        }
    }
}

#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    pub url: SecretString,
    pub prefix: String,
    /// Bound on connecting and on each command, so a dead Redis degrades quickly.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub timeout_ms: Duration,
    /// Consecutive failed commands (refused, dropped or timed out connections) that open
    /// the Redis breaker: while open, every Redis call fails at once instead of waiting.
    pub breaker_failures: u32,
    /// How long an open Redis breaker refuses calls before one background `PING` probes
    /// Redis; the breaker closes when it answers and stays open another period otherwise.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub breaker_open_ms: Duration,
    /// Lifetime of a cached catalog page (main page, category pages), ±20 % jitter so
    /// pages cached together do not expire together. Item writes invalidate at once.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub page_cache_ttl_secs: Duration,
    /// Category pages 1..=this (default sort and size, no filter but the category) are
    /// cached; deeper pages are read rarely enough that caching them only costs
    /// invalidation work. Every process must agree: an item write drops exactly these.
    pub cached_pages: u32,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("redis://127.0.0.1:6379"),
            prefix: "pillivery:".into(),
            timeout_ms: Duration::from_millis(500),
            breaker_failures: 2,
            breaker_open_ms: Duration::from_millis(1_000),
            page_cache_ttl_secs: Duration::from_secs(60),
            cached_pages: 5,
        }
    }
}

#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    pub public_url: String,
    pub body_limit_bytes: usize,
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub request_timeout_ms: Duration,
    /// Allowed CORS origins; `["*"]` allows any origin (without credentials).
    pub cors_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed (e.g. the nginx in front).
    pub trusted_proxies: Vec<IpAddr>,
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub shutdown_grace_ms: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".into(),
            body_limit_bytes: 256 * 1024,
            request_timeout_ms: Duration::from_millis(15_000),
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            shutdown_grace_ms: Duration::from_millis(10_000),
        }
    }
}

#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    pub listen: SocketAddr,
    /// In-flight tasks of the default pool (task types no other pool names).
    pub concurrency: usize,
    /// On SIGTERM: how long in-flight tasks may finish before the rest are released.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub shutdown_grace_ms: Duration,
    /// Most tasks claimed by one statement.
    pub claim_batch: usize,
    /// Longest idle sleep between claims when no NOTIFY arrives (≤ 1000).
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub poll_interval_ms: Duration,
    /// A claim's lease; renewed every `lease_ms / 3` while the task runs.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub lease_ms: Duration,
    /// How often expired leases (crashed workers) are looked for.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub reap_interval_ms: Duration,
    /// Default per-task timeout; `task_timeouts_ms` overrides it by task name.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub task_timeout_ms: Duration,
    #[serde_as(as = "BTreeMap<_, DurationMilliSeconds<u64>>")]
    pub task_timeouts_ms: BTreeMap<String, Duration>,
    /// Retry budgets by task name, overriding the one each task carries (the payment
    /// steps' is 1,500: over a day of a PG outage at the 60 s backoff ceiling).
    pub max_retries: BTreeMap<String, i32>,
    /// Ceiling of a retry's backoff.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub max_backoff_ms: Duration,
    /// Keep finished tasks as `finished` rows instead of deleting them.
    pub keep_finished: bool,
    /// Extra pools by name, each taking only its task types with its own concurrency
    /// (e.g. PG calls apart from housekeeping).
    pub pools: BTreeMap<String, WorkerPoolSettings>,
    /// How often the process reports its breaker and counters to Postgres for the
    /// console (1–300); it counts as missing after three intervals without a report.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub report_interval_secs: Duration,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerPoolSettings {
    /// `task_type()` values this pool takes.
    pub task_types: Vec<String>,
    pub concurrency: usize,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            concurrency: 256,
            shutdown_grace_ms: Duration::from_millis(20_000),
            claim_batch: 100,
            poll_interval_ms: Duration::from_millis(500),
            lease_ms: Duration::from_millis(30_000),
            reap_interval_ms: Duration::from_millis(5_000),
            task_timeout_ms: Duration::from_millis(300_000),
            task_timeouts_ms: BTreeMap::new(),
            max_retries: BTreeMap::new(),
            max_backoff_ms: Duration::from_millis(3_600_000),
            keep_finished: false,
            pools: BTreeMap::new(),
            report_interval_secs: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KakaoPaySettings {
    pub base_url: String,
    pub secret_key: SecretString,
    pub cid_one_time: String,
    pub cid_subscription: String,
}

impl Default for KakaoPaySettings {
    fn default() -> Self {
        Self {
            base_url: "https://open-api.kakaopay.com".into(),
            secret_key: SecretString::from(""),
            cid_one_time: "TC0ONETIME".into(),
            cid_subscription: "TCSUBSCRIP".into(),
        }
    }
}

/// How orders are paid: where buyers land after KakaoPay, and how long the workers keep
/// trying before they give up or ask again.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsSettings {
    /// The storefront page buyers are sent to after KakaoPay's redirect, with
    /// `?order_id=…&result=approving|canceled|failed` added.
    pub result_url: String,
    /// A payment whose `ready` still fails (PG down) this long after the order was placed
    /// is marked `payment_failed` (`pg_unavailable`) so the buyer can order again.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub ready_give_up_secs: Duration,
    /// Inquiries about an undecided approval or refund back off from this…
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub reconcile_min_backoff_ms: Duration,
    /// …to at most this.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub reconcile_max_backoff_ms: Duration,
    /// Longest `?wait=N` a client may ask for, in seconds.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub max_wait_secs: Duration,
}

impl Default for PaymentsSettings {
    fn default() -> Self {
        Self {
            result_url: "http://127.0.0.1:3000/payments/result".into(),
            ready_give_up_secs: Duration::from_secs(900),
            reconcile_min_backoff_ms: Duration::from_millis(500),
            reconcile_max_backoff_ms: Duration::from_millis(60_000),
            max_wait_secs: Duration::from_secs(10),
        }
    }
}

/// When and how subscriptions are charged: the store's calendar, the dunning schedule and
/// how ambiguous charges are reconciled.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionsSettings {
    /// The store's time zone (an IANA name, parsed once at load): billing dates and the
    /// days views are counted in are its local dates.
    pub time_zone: StoreTimeZone,
    /// Local time of day charges are scheduled at, `HH:MM`.
    pub charge_time: String,
    /// The dunning schedule: after the n-th decline of a cycle the next attempt waits the
    /// n-th delay (seconds); a decline after the last one cancels the subscription. The
    /// default is DESIGN §5's "1 / 3-day / cancel": once at once, then daily for 3 days.
    #[serde_as(as = "Vec<DurationSeconds<u64>>")]
    pub retry_delays_secs: Vec<Duration>,
    /// KakaoPay reports `last_approved_at` in whole seconds from its own clock: a charge
    /// approved up to this long before an attempt started still counts as that attempt's.
    /// Safe because a subscription is never charged twice in a day.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub reconcile_skew_secs: Duration,
    /// How long after an ambiguous attempt started an earlier `last_approved_at` is taken as
    /// "did not land" (before that, the SID status is asked again).
    #[serde_as(as = "DurationSeconds<u64>")]
    pub reconcile_window_secs: Duration,
    /// An attempt still undecided this long after it started goes on the operators'
    /// review list (and keeps being reconciled).
    #[serde_as(as = "DurationSeconds<u64>")]
    pub review_after_secs: Duration,
    /// How many upcoming charge dates a subscription shows.
    pub upcoming: usize,
    /// `subscription.renewal_upcoming` is written this many days before each cycle's
    /// charge (0: no reminders).
    pub renewal_reminder_days: u32,
    /// How long a recovery link (the `recovery_url` of `subscription.past_due` and of a
    /// dunning cancellation) opens its checkout. Default 14 days: past the default
    /// dunning schedule's 3 days, so a customer who reads the mail late can still come back.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub recovery_link_ttl_secs: Duration,
    /// Most charges a worker process starts (records their attempts) or finishes (writes
    /// their orders) in one transaction. Charges running at once are batched; one
    /// running alone is a batch of one and waits for nothing.
    pub charge_batch_size: usize,
    /// Most batches of each kind a worker process runs at once (each holds one
    /// connection); beyond the first, only while a full batch is waiting.
    pub charge_batches: usize,
}

impl Default for SubscriptionsSettings {
    fn default() -> Self {
        Self {
            time_zone: StoreTimeZone::default(),
            charge_time: "02:00".into(),
            retry_delays_secs: [0, 86_400, 86_400, 86_400]
                .map(Duration::from_secs)
                .to_vec(),
            reconcile_skew_secs: Duration::from_secs(60),
            reconcile_window_secs: Duration::from_secs(300),
            review_after_secs: Duration::from_secs(3_600),
            upcoming: 3,
            renewal_reminder_days: 3,
            recovery_link_ttl_secs: Duration::from_secs(14 * 86_400),
            charge_batch_size: 64,
            charge_batches: 4,
        }
    }
}

/// The store's time zone: read from its IANA name once, when the settings load (a bad
/// name stops the process there, naming the key), then used as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTimeZone(chrono_tz::Tz);

impl StoreTimeZone {
    pub fn tz(self) -> chrono_tz::Tz {
        self.0
    }

    /// The store-local calendar date of an instant.
    pub fn local_date(self, at: chrono::DateTime<chrono::Utc>) -> chrono::NaiveDate {
        at.with_timezone(&self.0).date_naive()
    }
}

impl Default for StoreTimeZone {
    fn default() -> Self {
        Self(chrono_tz::Asia::Seoul)
    }
}

impl From<chrono_tz::Tz> for StoreTimeZone {
    fn from(tz: chrono_tz::Tz) -> Self {
        Self(tz)
    }
}

impl std::str::FromStr for StoreTimeZone {
    type Err = String;

    /// Exactly an IANA zone name (`Asia/Seoul`, `UTC`); offsets and abbreviations are
    /// refused because they do not follow a zone's daylight-saving rules.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<chrono_tz::Tz>()
            .map(Self)
            .map_err(|_| format!("`{s}` is not an IANA time zone such as Asia/Seoul"))
    }
}

impl<'de> Deserialize<'de> for StoreTimeZone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// How each worker process protects the PG and itself (DESIGN §8): the circuit breaker,
/// the bulkhead (concurrent calls) and the rate cap (calls per second).
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgGuardSettings {
    /// The breaker judges the last this-many calls…
    pub breaker_window: usize,
    /// …once at least this many are in the window…
    pub breaker_min_calls: usize,
    /// …and opens when this share of them failed (timeouts, connection errors, 5xx, 429;
    /// declines and other answers are not failures).
    pub breaker_failure_rate: f64,
    /// How long an open breaker refuses calls before it lets trial calls through.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub breaker_open_ms: Duration,
    /// Trial calls let through half-open; all must succeed to close the breaker again.
    pub breaker_half_open_calls: u32,
    /// Work refused by the breaker is rescheduled after the open window plus a random
    /// share of this, so a backlog does not return all at once.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub defer_jitter_ms: Duration,
    /// Most PG calls in flight at once per process (the bulkhead).
    pub max_concurrent: usize,
    /// Most PG calls started per second per process, spread evenly once `rate_burst`
    /// calls have gone at once: in any second at most `rate_per_sec + rate_burst` start.
    pub rate_per_sec: u32,
    /// How many calls may start together. One batch of charges' worth (64) lets the
    /// charges admitted together be started and finished in shared transactions; a
    /// burst of 1 admits them a millisecond apart, one per transaction, which cost the
    /// billing burst two thirds of its throughput (loadtest/REPORT.md, issue 20).
    pub rate_burst: u32,
    /// Longest a call waits for its bulkhead slot and rate permit (granted first come,
    /// first served, before anything is recorded); after that the work is deferred like
    /// an open-breaker refusal (nothing was sent, nothing recorded).
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub max_wait_ms: Duration,
    /// After the PG refuses our credentials or address (HTTP 401/403, −798), this process
    /// sends nothing for this long and defers the work (operators are alerted).
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub misconfigured_hold_ms: Duration,
}

impl Default for PgGuardSettings {
    fn default() -> Self {
        Self {
            breaker_window: 40,
            breaker_min_calls: 20,
            breaker_failure_rate: 0.75,
            breaker_open_ms: Duration::from_millis(10_000),
            breaker_half_open_calls: 3,
            defer_jitter_ms: Duration::from_millis(5_000),
            max_concurrent: 256,
            rate_per_sec: 1_000,
            rate_burst: 64,
            max_wait_ms: Duration::from_millis(30_000),
            misconfigured_hold_ms: Duration::from_millis(60_000),
        }
    }
}

/// Outbox delivery to webhook endpoints: the retry schedule, the HTTP client's limits, when
/// a failing endpoint is disabled, and the dispatcher's pace.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksSettings {
    /// Delays (seconds) of a delivery's attempts: attempt n waits the n-th delay after
    /// the previous attempt failed (the first, after the event was dispatched). After a
    /// failed last attempt the delivery is `dead`; so the list's length is the number of
    /// attempts. Default DESIGN §7: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    #[serde_as(as = "Vec<DurationSeconds<u64>>")]
    pub retry_schedule_secs: Vec<Duration>,
    /// Whole-request timeout of one attempt; no 2xx within it is a failed attempt.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub timeout_ms: Duration,
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub connect_timeout_ms: Duration,
    /// An endpoint whose attempts have all failed for this long is disabled.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub disable_after_secs: Duration,
    /// How often each worker looks for undispatched outbox events (again at once while
    /// batches come back full).
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub dispatch_interval_ms: Duration,
    /// Most events dispatched per transaction.
    pub dispatch_batch: i64,
    /// Lets endpoints point at loopback, private, link-local, metadata and other
    /// non-public addresses (refused otherwise, at registration and at delivery). Off by
    /// default; dev and test setups, whose receivers listen on 127.0.0.1, turn it on.
    pub allow_private_destinations: bool,
    /// After a secret rotation the replaced secret keeps signing, beside the new one,
    /// this long (0: it stops at once), so receivers can switch without a gap.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub secret_rotation_overlap_secs: Duration,
}

impl Default for WebhooksSettings {
    fn default() -> Self {
        Self {
            retry_schedule_secs: [0, 5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
                .map(Duration::from_secs)
                .to_vec(),
            timeout_ms: Duration::from_millis(10_000),
            connect_timeout_ms: Duration::from_millis(3_000),
            disable_after_secs: Duration::from_secs(5 * 86_400),
            dispatch_interval_ms: Duration::from_millis(500),
            dispatch_batch: 500,
            allow_private_destinations: false,
            secret_rotation_overlap_secs: Duration::from_secs(86_400),
        }
    }
}

/// The dev-only JWT secret; refused outside `environment = "dev"`/`"test"`.
pub const DEV_JWT_SECRET: &str = "pillivery-dev-secret-do-not-use-in-production";

#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Signs every token we issue (its key id, derived from it, is in each token's `kid`).
    pub jwt_secret: SecretString,
    /// Earlier signing secrets that still verify the tokens they signed (rotation with
    /// overlap: put the old secret here when setting a new `jwt_secret`; remove it once
    /// `access_ttl_secs` has passed). At most 3.
    pub jwt_previous_secrets: Vec<SecretString>,
    #[serde_as(as = "DurationSeconds<u64>")]
    pub access_ttl_secs: Duration,
    #[serde_as(as = "DurationSeconds<u64>")]
    pub refresh_ttl_secs: Duration,
    /// Lifetime of the token a first-time social user finishes signing up with.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub signup_token_ttl_secs: Duration,
    /// Lifetime of an OAuth login attempt: its `state`, PKCE verifier and browser cookie.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub oauth_state_ttl_secs: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: SecretString::from(DEV_JWT_SECRET),
            jwt_previous_secrets: Vec::new(),
            access_ttl_secs: Duration::from_secs(30 * 60),
            refresh_ttl_secs: Duration::from_secs(7 * 24 * 3600),
            signup_token_ttl_secs: Duration::from_secs(15 * 60),
            oauth_state_ttl_secs: Duration::from_secs(10 * 60),
        }
    }
}

#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthSettings {
    /// Timeout of each call to a provider (token exchange, profile).
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub timeout_ms: Duration,
    /// Providers by name; `kakao` and `google` get their public URLs as presets.
    pub providers: BTreeMap<String, OAuthProviderSettings>,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        Self {
            timeout_ms: Duration::from_millis(5_000),
            providers: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthProviderSettings {
    pub client_id: String,
    pub client_secret: SecretString,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub userinfo_url: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// JSON pointer to the stable user id in the profile (e.g. `/id`, `/sub`).
    pub subject_pointer: Option<String>,
    /// JSON pointer to the e-mail in the profile.
    pub email_pointer: Option<String>,
}

/// A provider with every URL resolved (preset or configured).
#[derive(Debug, Clone)]
pub struct OAuthProvider {
    pub name: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub authorize_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    pub scopes: Vec<String>,
    pub subject_pointer: String,
    pub email_pointer: String,
}

pub(super) struct Preset {
    authorize: &'static str,
    token: &'static str,
    userinfo: &'static str,
    scopes: &'static [&'static str],
    subject: &'static str,
    email: &'static str,
}

pub(super) fn preset(name: &str) -> Option<Preset> {
    match name {
        "kakao" => Some(Preset {
            authorize: "https://kauth.kakao.com/oauth/authorize",
            token: "https://kauth.kakao.com/oauth/token",
            userinfo: "https://kapi.kakao.com/v2/user/me",
            scopes: &["account_email"],
            subject: "/id",
            email: "/kakao_account/email",
        }),
        "google" => Some(Preset {
            authorize: "https://accounts.google.com/o/oauth2/v2/auth",
            token: "https://oauth2.googleapis.com/token",
            userinfo: "https://openidconnect.googleapis.com/v1/userinfo",
            scopes: &["openid", "email", "profile"],
            subject: "/sub",
            email: "/email",
        }),
        _ => None,
    }
}

impl OAuthSettings {
    /// Resolves a configured provider against its preset; `None` if unknown or incomplete.
    pub fn provider(&self, name: &str) -> Option<OAuthProvider> {
        let cfg = self.providers.get(name)?;
        let preset = preset(name);
        let pick = |own: &Option<String>, from_preset: Option<&'static str>| {
            own.clone().or_else(|| from_preset.map(str::to_owned))
        };
        Some(OAuthProvider {
            name: name.to_owned(),
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone(),
            authorize_url: pick(&cfg.authorize_url, preset.as_ref().map(|p| p.authorize))?,
            token_url: pick(&cfg.token_url, preset.as_ref().map(|p| p.token))?,
            userinfo_url: pick(&cfg.userinfo_url, preset.as_ref().map(|p| p.userinfo))?,
            scopes: cfg.scopes.clone().unwrap_or_else(|| {
                preset
                    .as_ref()
                    .map(|p| p.scopes.iter().map(|s| (*s).to_owned()).collect())
                    .unwrap_or_default()
            }),
            subject_pointer: pick(&cfg.subject_pointer, preset.as_ref().map(|p| p.subject))
                .unwrap_or_else(|| "/sub".into()),
            email_pointer: pick(&cfg.email_pointer, preset.as_ref().map(|p| p.email))
                .unwrap_or_else(|| "/email".into()),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    pub per_ip_per_sec: u32,
    pub per_ip_burst: u32,
    /// Login, signup, refresh and OAuth completion, per client IP.
    pub login_per_min: u32,
    pub login_burst: u32,
    /// Per account, whatever the client's address: login attempts for one e-mail, and a
    /// user's profile edits answered 409 (which would otherwise tell whether a phone
    /// number or display name is someone's).
    pub per_account_per_min: u32,
    pub per_account_burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_ip_per_sec: 50,
            per_ip_burst: 100,
            login_per_min: 20,
            login_burst: 10,
            per_account_per_min: 10,
            per_account_burst: 5,
        }
    }
}

/// How long what is only history is kept; `maintenance.prune` deletes the rest every ten
/// minutes, in batches. Money records (orders, payments, charge attempts, checkouts,
/// subscriptions) and the audit log are never pruned.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Outbox events older than this whose every webhook delivery was delivered (or that
    /// had none), with those deliveries and their attempts. Events with a pending or dead
    /// delivery stay until it is resolved.
    pub delivered_events_days: u32,
    /// Failed jobs (kept, with their error, for operators) older than this.
    pub failed_jobs_days: u32,
    /// The per-day unique-view counts folded into `items.view_count` (only yesterday's and
    /// today's are still read, so at least 3).
    pub view_days_days: u32,
    /// End-to-end probe runs.
    pub probe_runs_days: u32,
    /// Rows per delete statement (each its own short transaction).
    pub batch_size: u32,
    /// Batches per table per run: a backlog is worked off over several runs.
    pub max_batches: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            delivered_events_days: 30,
            failed_jobs_days: 90,
            view_days_days: 35,
            probe_runs_days: 7,
            batch_size: 1000,
            max_batches: 50,
        }
    }
}

/// The storefront's catalog reads (`GET /api/items`, `GET /api/items/main`).
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogSettings {
    /// Serve listings and keyword search from a per-process snapshot of the items on
    /// sale (every filter, sort, page and page size, exact totals) instead of Postgres.
    /// Off: the SQL path with the Redis page cache for default-size category pages.
    pub snapshot: bool,
    /// The snapshot is not taken when more items than this are on sale (it holds about
    /// 1 KB per item); listings then take the SQL path.
    pub snapshot_max_items: u32,
    /// How stale sales, views and review counts in the snapshot may get (item writes
    /// replace it at once, in every process, through the Redis generation; without Redis,
    /// only this process's writes do).
    #[serde_as(as = "DurationSeconds<u64>")]
    pub snapshot_max_age_secs: Duration,
}

impl Default for CatalogSettings {
    fn default() -> Self {
        Self {
            snapshot: true,
            snapshot_max_items: 200_000,
            snapshot_max_age_secs: Duration::from_secs(60),
        }
    }
}

/// The operator console at `/admin` (server-rendered pages on the API).
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// A console sign-in ends this long after it began, however busy.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub session_ttl_secs: Duration,
    /// …and this long after its last request.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub idle_timeout_secs: Duration,
    /// Whether the session cookie is `Secure` (sent over HTTPS only). Unset: yes, except
    /// with `environment = "dev"` or `"test"`, which serve plain HTTP on 127.0.0.1.
    pub secure_cookie: Option<bool>,
    /// How often the overview refreshes its figures in the browser.
    pub overview_refresh_secs: u32,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            session_ttl_secs: Duration::from_secs(12 * 3600),
            idle_timeout_secs: Duration::from_secs(30 * 60),
            secure_cookie: None,
            overview_refresh_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}
