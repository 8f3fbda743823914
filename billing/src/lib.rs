//! Pillivery's domain: types, policies, all SQL, sessions, settings and the clock.
//!
//! `api/` and `worker/` stay thin: they extract input, call one function here, and map
//! the result. Every function takes the `Ctx` (shared handles) or a `&mut PgConnection`
//! so one service call owns its transaction.

pub mod accounts;
pub mod audit;
pub mod carts;
pub mod clock;
pub mod coalesce;
pub mod db;
pub mod editor;
pub mod error;
pub mod history;
pub mod ids;
pub mod items;
pub mod jobs;
pub mod kv;
pub mod money;
pub mod oauth;
pub mod orders;
pub mod outbox;
pub mod overview;
pub mod page;
pub mod passwords;
pub mod payments;
pub mod pg;
pub mod pg_error;
pub mod probes;
pub mod retention;
pub mod reviews;
pub mod search;
pub mod sessions;
pub mod settings;
pub mod store;
pub mod subscriptions;
pub mod tasks;
pub mod telemetry;
pub mod users;
pub mod validate;
pub mod wakeups;
pub mod webhooks;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

pub use error::{Error, Result};
pub use settings::Settings;

/// Handles every service call needs; cheap to clone.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The pool; its `begin` opens transactions a stopped job waits for.
    pub db: db::Db,
    pub kv: kv::Kv,
    pub settings: Arc<Settings>,
    pub clock: clock::SharedClock,
    /// For calls to outside parties (OAuth providers); its own pool and timeouts.
    pub http: reqwest::Client,
    /// The payment gateway (KakaoPay); only workers call it, each call through `pg_guard`.
    pub gateway: pg::SharedGateway,
    /// This process's circuit breaker, bulkhead and rate cap around the gateway.
    pub pg_guard: Arc<pg::PgGuard>,
    /// For webhook deliveries: its own pool and timeouts, no redirects (a receiver
    /// answers for itself; a redirect is a failed attempt), and the destination policy's
    /// resolver ([`webhooks::destination`]).
    pub webhook_http: reqwest::Client,
    /// This process's charge batches: concurrent charges share transactions.
    pub charges: Arc<subscriptions::charge::Batches>,
    /// This process's snapshot of the items on sale, for listings and search.
    pub catalog: Arc<items::CatalogSnapshot>,
}

impl Ctx {
    /// Builds the handles without connecting: Postgres and Redis connect on first use,
    /// so a process starts while a dependency is down and reports it as not ready.
    pub fn new(settings: Settings, clock: clock::SharedClock) -> Result<Self> {
        install_crypto_provider();
        let db = db::Db::new(db::pool(&settings.database)?);
        let kv = kv::Kv::new(&settings.redis)?;
        let http = reqwest::Client::builder()
            .timeout(settings.oauth.timeout_ms)
            .connect_timeout(settings.oauth.timeout_ms.min(Duration::from_secs(3)))
            .build()
            .map_err(|e| Error::Internal(format!("http client: {e}")))?;
        let webhook_http = webhooks::http_client(&settings.webhooks)
            .map_err(|e| Error::Internal(format!("webhook http client: {e}")))?;
        let gateway: pg::SharedGateway = Arc::new(pg::KakaoPay::new(
            &pg::KakaoPayConfig::from_settings(&settings.kakaopay),
        )?);
        let pg_guard = Arc::new(pg::PgGuard::new(&settings.pg_guard));
        let charges = Arc::new(subscriptions::charge::Batches::new(&settings.subscriptions));
        Ok(Self {
            db,
            kv,
            settings: Arc::new(settings),
            clock,
            http,
            gateway,
            pg_guard,
            webhook_http,
            charges,
            catalog: Arc::default(),
        })
    }
}

impl Ctx {
    /// The same handles, with the transactions begun through them counted in `open`: a
    /// job runs on this, so its runner can stop it between transactions.
    pub fn counting_transactions(&self, open: &db::OpenTransactions) -> Self {
        Self {
            db: self.db.counted(open),
            ..self.clone()
        }
    }
}

/// rustls needs one process-wide crypto provider; ring is the one sqlx already uses.
pub fn install_crypto_provider() {
    // Err only means another caller installed it first, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
