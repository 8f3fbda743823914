//! Redis: one lazily connecting, self-healing connection with a key prefix.
//!
//! Redis only holds what can be rebuilt or may expire, so its absence is a degraded
//! mode: every failure surfaces as `Error::Unavailable { Redis }`, never a panic.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;

use crate::error::{Error, Result};
use crate::settings::RedisSettings;

#[derive(Clone)]
pub struct Kv {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv").field("prefix", &self.prefix).finish()
    }
}

impl Kv {
    /// Does not connect: the first command does, and later ones reconnect after a loss.
    pub fn new(settings: &RedisSettings) -> Result<Self> {
        let client = redis::Client::open(settings.url.expose_secret()).map_err(Error::redis)?;
        let timeout = settings.timeout_ms;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(Error::redis)?;
        Ok(Self {
            conn,
            prefix: settings.prefix.clone(),
            timeout,
        })
    }

    pub fn key(&self, parts: &str) -> String {
        format!("{}{}", self.prefix, parts)
    }

    /// Runs one command or pipeline against Redis, bounded by the configured timeout.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        // The manager's own timeouts cover one attempt; this also bounds the reconnect.
        match tokio::time::timeout(self.timeout * 3, f(self.conn.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::redis(e)),
            Err(_) => Err(Error::redis("timed out")),
        }
    }

    pub async fn ping(&self) -> Result<()> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(|_| ())
    }
}
