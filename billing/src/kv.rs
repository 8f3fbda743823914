//! Redis: one lazily connecting, self-healing connection with a key prefix, behind a
//! circuit breaker.
//!
//! Redis only holds what can be rebuilt or may expire, so its absence is a degraded
//! mode: every failure surfaces as `Error::Unavailable { Redis }`, never a panic. The
//! breaker makes that mode fast. After `redis.breaker_failures` consecutive commands
//! that found no Redis (refused, dropped or timed-out connections) it opens, and every
//! call fails at once, without connecting or waiting, for `redis.breaker_open_ms`. Then
//! the first call to arrive starts one background `PING` (half-open) and is itself
//! refused; the breaker closes when Redis answers and opens for another period when it
//! does not. So while Redis is down no request waits on it (cached reads go straight to
//! Postgres), and recovery needs no restart. Only [`Kv::ping`], the readiness check,
//! awaits the probe it starts, so it reports what Redis is now.
//!
//! The breaker is the PG guard's count-based one ([`crate::pg::guard::Breaker`]) set to
//! "the last N calls all failed": window = minimum calls = N, failure rate 100 %, one
//! trial call. An error Redis itself answers (a wrong type, a script error) is not a
//! failure: Redis is there.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use secrecy::ExposeSecret;

use crate::error::{Error, Result};
use crate::pg::guard::{Admission, Breaker, BreakerConfig, BreakerState, Ticket, Transition};
use crate::settings::RedisSettings;

#[derive(Clone)]
pub struct Kv {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    /// Shared by every clone: one breaker per process and Redis.
    breaker: Arc<Mutex<Breaker>>,
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv")
            .field("prefix", &self.prefix)
            .field("breaker", &self.breaker_state().as_str())
            .finish()
    }
}

/// The breaker's rules from the `redis` settings: open when the last `breaker_failures`
/// calls all failed; after `breaker_open_ms`, one probe decides.
pub fn breaker_config(settings: &RedisSettings) -> BreakerConfig {
    let n = settings.breaker_failures.max(1) as usize;
    BreakerConfig {
        window: n,
        min_calls: n,
        failure_rate: 1.0,
        open_for: settings.breaker_open_ms,
        half_open_calls: 1,
    }
}

/// Whether an error means Redis was not reached (or cannot serve), as opposed to Redis
/// answering a command with an error.
pub fn is_outage(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::TryAgain
            )
        )
}

/// Why a command let through did not succeed.
enum Failed {
    Redis(RedisError),
    TimedOut,
}

impl Failed {
    fn is_outage(&self) -> bool {
        match self {
            Failed::Redis(e) => is_outage(e),
            Failed::TimedOut => true,
        }
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failed::Redis(e) => e.fmt(f),
            Failed::TimedOut => f.write_str("timed out"),
        }
    }
}

/// The breaker's answer for one call.
enum Gate {
    /// Send it; record the outcome with the ticket.
    Call(Ticket),
    /// The cool-down is over and this call is the one to start the probe.
    Probe(Ticket),
    /// Fail at once; the reason says why and for how long.
    Refused(String),
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
        metrics::gauge!("redis_breaker_state").set(BreakerState::Closed.gauge());
        Ok(Self {
            conn,
            prefix: settings.prefix.clone(),
            timeout,
            breaker: Arc::new(Mutex::new(Breaker::new(breaker_config(settings)))),
        })
    }

    pub fn key(&self, parts: &str) -> String {
        format!("{}{}", self.prefix, parts)
    }

    /// The breaker's state now (the `redis_breaker_state` gauge's value).
    pub fn breaker_state(&self) -> BreakerState {
        self.lock().state()
    }

    /// Runs one command or pipeline against Redis, bounded by the configured timeout;
    /// while the breaker is open it fails at once without touching Redis.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let ticket = match self.gate() {
            Gate::Call(ticket) => ticket,
            Gate::Probe(ticket) => {
                // Requests never wait on a probe: it runs on its own.
                self.spawn_probe(ticket);
                return Err(self.refused("not tried: breaker half-open, probing Redis"));
            }
            Gate::Refused(why) => return Err(self.refused(&why)),
        };
        let result = self.bounded(f(self.conn.clone())).await;
        self.record(ticket, result.as_ref().err().is_some_and(Failed::is_outage));
        result.map_err(Error::redis)
    }

    /// Whether Redis answers. While the breaker is open this fails at once; once its
    /// cool-down is over, the call starts the probe and awaits it.
    pub async fn ping(&self) -> Result<()> {
        match self.gate() {
            Gate::Call(ticket) => {
                let result = self.bounded(ping(self.conn.clone())).await;
                self.record(ticket, result.as_ref().err().is_some_and(Failed::is_outage));
                result.map(|_| ()).map_err(Error::redis)
            }
            Gate::Probe(ticket) => match self.spawn_probe(ticket) {
                Some(probe) => match probe.await {
                    Ok(result) => result.map_err(Error::redis),
                    Err(e) => Err(Error::redis(format!("probe: {e}"))),
                },
                None => Err(self.refused("not tried: no runtime to probe on")),
            },
            Gate::Refused(why) => Err(self.refused(&why)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn gate(&self) -> Gate {
        let now = Instant::now();
        let (gate, transition) = {
            let mut b = self.lock();
            let remaining = b.open_remaining(now);
            let (admission, transition) = b.admit(now);
            let gate = match admission {
                // Half-open lets exactly one trial through: that is the probe.
                Admission::Call(ticket) if b.state() == BreakerState::HalfOpen => {
                    Gate::Probe(ticket)
                }
                Admission::Call(ticket) => Gate::Call(ticket),
                Admission::Refused { .. } if b.state() == BreakerState::HalfOpen => {
                    Gate::Refused("not tried: breaker half-open, probing Redis".into())
                }
                Admission::Refused { .. } => Gate::Refused(format!(
                    "not tried: breaker open, next probe in {} ms",
                    remaining.as_millis()
                )),
            };
            (gate, transition)
        };
        transitioned(transition);
        gate
    }

    fn record(&self, ticket: Ticket, failed: bool) {
        let transition = self.lock().record(ticket, failed, Instant::now());
        transitioned(transition);
    }

    fn refused(&self, why: &str) -> Error {
        metrics::counter!("redis_calls_refused_total").increment(1);
        Error::redis(why)
    }

    /// The manager's own timeouts cover one attempt; this also bounds the reconnect.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> std::result::Result<T, Failed> {
        match tokio::time::timeout(self.timeout * 3, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failed::Redis(e)),
            Err(_) => Err(Failed::TimedOut),
        }
    }

    /// Starts the half-open probe on its own task, so a dropped request cannot strand
    /// the breaker half-open; its outcome closes or reopens the breaker.
    fn spawn_probe(
        &self,
        ticket: Ticket,
    ) -> Option<tokio::task::JoinHandle<std::result::Result<(), String>>> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to probe on (not the case in the binaries): count it as failed
            // so the breaker opens again rather than staying half-open.
            self.record(ticket, true);
            return None;
        };
        let kv = self.clone();
        Some(runtime.spawn(async move {
            let result = kv.probe().await;
            // Any error fails the probe: a Redis that answers PING with an error cannot
            // serve the cache or the sessions either.
            kv.record(ticket, result.is_err());
            result.map_err(|e| e.to_string())
        }))
    }

    async fn probe(&self) -> std::result::Result<(), Failed> {
        self.bounded(async {
            match ping(self.conn.clone()).await {
                // The manager hands out its last failed connection attempt until a
                // command sees it fail, which starts a new one: a second PING gets that,
                // so a Redis that is back closes the breaker in one probe.
                Err(e) if is_outage(&e) => ping(self.conn.clone()).await,
                other => other,
            }
        })
        .await
        .map(|_| ())
    }
}

async fn ping(mut c: ConnectionManager) -> redis::RedisResult<String> {
    redis::cmd("PING").query_async::<String>(&mut c).await
}

fn transitioned(t: Option<Transition>) {
    let Some(t) = t else { return };
    metrics::gauge!("redis_breaker_state").set(t.to.gauge());
    metrics::counter!("redis_breaker_transitions_total", "to" => t.to.as_str()).increment(1);
    match t.to {
        BreakerState::Open if t.from == BreakerState::Closed => tracing::warn!(
            failures = t.failures,
            "Redis circuit breaker opened: Redis calls fail at once (no cache, views dropped, \
             token checks 503) until a probe finds Redis again"
        ),
        BreakerState::Open => tracing::debug!("Redis probe failed: breaker open again"),
        BreakerState::HalfOpen => tracing::debug!("Redis breaker half-open: probing"),
        BreakerState::Closed => tracing::info!("Redis answered the probe: breaker closed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(failures: u32, open_ms: u64) -> RedisSettings {
        RedisSettings {
            breaker_failures: failures,
            breaker_open_ms: Duration::from_millis(open_ms),
            ..RedisSettings::default()
        }
    }

    /// Feeds outcomes (`x` failed, `.` succeeded) through a breaker made from the
    /// settings, each call admitted first, and returns the state after each.
    fn feed(b: &mut Breaker, outcomes: &str, now: Instant) -> String {
        outcomes
            .chars()
            .map(|c| {
                let (admission, _) = b.admit(now);
                match admission {
                    Admission::Call(t) => {
                        b.record(t, c == 'x', now);
                    }
                    Admission::Refused { .. } => return 'R',
                }
                match b.state() {
                    BreakerState::Closed => 'C',
                    BreakerState::Open => 'O',
                    BreakerState::HalfOpen => 'H',
                }
            })
            .collect()
    }

    #[test]
    fn the_breaker_opens_after_n_consecutive_failures_only() {
        // (breaker_failures, outcomes, states after each call; R = refused while open)
        let cases = [
            (2, "x", "C"),
            (2, "xx", "CO"),
            (2, "xxx", "COR"),
            (2, "x.x.x.", "CCCCCC"),
            (2, "x.xx.", "CCCOR"),
            (1, "x.", "OR"),
            (1, ".", "C"),
            (3, "xx.xx", "CCCCC"),
            (3, "xx.xxx.", "CCCCCOR"),
            (5, "xxxxx", "CCCCO"),
        ];
        for (n, outcomes, want) in cases {
            let mut b = Breaker::new(breaker_config(&settings(n, 1_000)));
            assert_eq!(
                feed(&mut b, outcomes, Instant::now()),
                want,
                "{n} {outcomes}"
            );
        }
    }

    #[test]
    fn after_the_cool_down_one_probe_decides() {
        // (probe outcome, state after it)
        let cases = [(false, BreakerState::Closed), (true, BreakerState::Open)];
        for (probe_fails, want) in cases {
            let start = Instant::now();
            let mut b = Breaker::new(breaker_config(&settings(2, 1_500)));
            assert_eq!(feed(&mut b, "xx", start), "CO");
            let early = start + Duration::from_millis(1_499);
            assert!(matches!(b.admit(early).0, Admission::Refused { .. }));
            let due = start + Duration::from_millis(1_500);
            let (Admission::Call(probe), _) = b.admit(due) else {
                panic!("the probe is let through after the cool-down")
            };
            assert_eq!(b.state(), BreakerState::HalfOpen);
            // Only one: the rest are refused while it runs.
            assert!(matches!(b.admit(due).0, Admission::Refused { .. }));
            b.record(probe, probe_fails, due);
            assert_eq!(b.state(), want, "probe failed: {probe_fails}");
            if want == BreakerState::Open {
                assert_eq!(
                    b.open_remaining(due),
                    Duration::from_millis(1_500),
                    "a failed probe starts a whole new cool-down"
                );
            }
        }
    }

    #[test]
    fn only_errors_that_mean_no_redis_are_failures() {
        use std::io;
        let io_err = |kind: io::ErrorKind| RedisError::from(io::Error::new(kind, "socket trouble"));
        let cases: Vec<(&str, RedisError, bool)> = vec![
            ("refused", io_err(io::ErrorKind::ConnectionRefused), true),
            ("reset", io_err(io::ErrorKind::ConnectionReset), true),
            ("timed out", io_err(io::ErrorKind::TimedOut), true),
            ("eof", io_err(io::ErrorKind::UnexpectedEof), true),
            (
                "loading",
                RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "LOADING")),
                true,
            ),
            (
                "auth",
                RedisError::from((ErrorKind::AuthenticationFailed, "NOAUTH")),
                true,
            ),
            (
                "wrong type",
                RedisError::from((ErrorKind::UnexpectedReturnType, "not an int")),
                false,
            ),
            (
                "script error",
                RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "ERR")),
                false,
            ),
            (
                "no script",
                RedisError::from((ErrorKind::Server(ServerErrorKind::NoScript), "NOSCRIPT")),
                false,
            ),
        ];
        for (what, err, want) in cases {
            assert_eq!(is_outage(&err), want, "{what}: {err}");
        }
    }

    /// A Redis that refuses connections (nothing listens on the port): after the
    /// configured failures every call fails at once, the readiness ping included, until
    /// the cool-down; then a probe runs and, failing, opens the breaker again.
    #[tokio::test]
    async fn a_dead_redis_fails_fast_once_the_breaker_opens() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let s = RedisSettings {
            url: format!("redis://127.0.0.1:{port}").into(),
            timeout_ms: Duration::from_millis(200),
            ..settings(2, 300)
        };
        let kv = Kv::new(&s).unwrap();
        let get = || {
            kv.run(|mut c| async move {
                redis::cmd("GET")
                    .arg("k")
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
        };
        for _ in 0..2 {
            assert!(get().await.is_err());
        }
        assert_eq!(kv.breaker_state(), BreakerState::Open);
        for _ in 0..50 {
            let t = Instant::now();
            let err = get().await.unwrap_err();
            assert!(t.elapsed() < Duration::from_millis(20), "{:?}", t.elapsed());
            assert!(
                matches!(&err, Error::Unavailable { dependency: crate::error::Dependency::Redis, detail } if detail.contains("breaker open")),
                "{err}"
            );
        }
        let err = kv.ping().await.unwrap_err().to_string();
        assert!(err.starts_with("redis unavailable"), "{err}");
        tokio::time::sleep(Duration::from_millis(320)).await;
        // The first call after the cool-down starts the probe and is refused at once.
        let t = Instant::now();
        let err = get().await.unwrap_err().to_string();
        assert!(t.elapsed() < Duration::from_millis(20), "{:?}", t.elapsed());
        assert!(err.contains("probing"), "{err}");
        let deadline = Instant::now() + Duration::from_secs(3);
        while kv.breaker_state() != BreakerState::Open {
            assert!(Instant::now() < deadline, "the probe never reported");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
