//! What the scenarios share: latency percentiles, logging users in, order bodies.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rand::seq::index;
use rand::Rng;
use serde_json::{json, Value};

/// Sorted-on-demand latencies with nearest-rank percentiles in milliseconds.
#[derive(Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn extend(&mut self, ds: impl IntoIterator<Item = Duration>) {
        self.0.extend(ds);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn sort(&mut self) {
        self.0.sort();
    }

    /// Percentile `p` (0–1) in ms of the sorted values; 0 when empty.
    pub fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        ms(self.0[i.min(self.0.len() - 1)])
    }

    pub fn max(&self) -> f64 {
        self.0.last().copied().map(ms).unwrap_or(0.0)
    }

    pub fn mean(&self) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        ms(self.0.iter().sum::<Duration>()) / self.0.len() as f64
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Counts of failures by a short reason (`status 422`, `transport`, …), for stderr.
#[derive(Default, Clone)]
pub struct Failures(Arc<Mutex<BTreeMap<String, u64>>>);

impl Failures {
    pub fn add(&self, reason: impl Into<String>) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(reason.into()).or_default() += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

    pub fn report(&self, what: &str) {
        if let Ok(m) = self.0.lock() {
            for (reason, n) in m.iter() {
                eprintln!("==> {what}: {n} × {reason}");
            }
        }
    }
}

/// The users the scenarios log in as, and the catalog they order from.
#[derive(Args, Clone)]
pub struct Shop {
    /// Base URL of the API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub base: String,
    /// Existing users are `--email-pattern` with `{}` replaced by an id in 1..=user-range
    /// (the reference data set: user{id}@pillivery.test, password Test1234!).
    #[arg(long, default_value = "user{}@pillivery.test")]
    pub email_pattern: String,
    #[arg(long, default_value = "Test1234!")]
    pub password: String,
    #[arg(long, default_value_t = 10_000)]
    pub user_range: u64,
    /// Lines name random item ids in 1..=items (all must be on sale).
    #[arg(long, default_value_t = 40_000)]
    pub items: i64,
    /// Lines per order: 1..=max-lines, distinct items, quantities 1–3.
    #[arg(long, default_value_t = 3)]
    pub max_lines: usize,
    /// Logins run this many at a time (each is an argon2 verification).
    #[arg(long, default_value_t = 4)]
    pub login_parallelism: usize,
}

impl Shop {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.trim_end_matches('/'), path)
    }

    /// Logs `n` distinct random users in; returns their access tokens.
    pub async fn login(&self, client: &reqwest::Client, n: usize) -> anyhow::Result<Vec<String>> {
        anyhow::ensure!(
            n as u64 <= self.user_range,
            "{n} users wanted, only {} exist",
            self.user_range
        );
        let ids: Vec<u64> = index::sample(&mut rand::rng(), self.user_range as usize, n)
            .into_iter()
            .map(|i| i as u64 + 1)
            .collect();
        let ids = Arc::new(ids);
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..self.login_parallelism.max(1) {
            let (ids, next, client, shop) =
                (ids.clone(), next.clone(), client.clone(), self.clone());
            handles.push(tokio::spawn(async move {
                let mut tokens = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { break };
                    let email = shop.email_pattern.replace("{}", &id.to_string());
                    let resp = client
                        .post(shop.url("/api/auth/login"))
                        .json(&json!({"email": email, "password": shop.password}))
                        .send()
                        .await?;
                    let status = resp.status();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    anyhow::ensure!(status.is_success(), "login {email}: {status} {body}");
                    let token = body["access_token"]
                        .as_str()
                        .context("login answer without access_token")?;
                    tokens.push(token.to_owned());
                }
                anyhow::Ok(tokens)
            }));
        }
        let mut tokens = Vec::with_capacity(n);
        for h in handles {
            tokens.extend(h.await??);
        }
        eprintln!(
            "==> logged in {} users in {:.1} s",
            tokens.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(tokens)
    }

    /// A one-time order of 1..=max_lines distinct random items.
    pub fn order_body(&self, rng: &mut impl Rng) -> Value {
        let n = rng.random_range(1..=self.max_lines.max(1));
        let lines: Vec<Value> = index::sample(rng, self.items as usize, n)
            .into_iter()
            .map(|i| json!({"item_id": i as i64 + 1, "quantity": rng.random_range(1..=3)}))
            .collect();
        json!({
            "kind": "one_time",
            "lines": lines,
            "receiver": {
                "name": "홍길동",
                "phone": "010-1234-5678",
                "city": "Seoul",
                "detail_address": "1 Sejong-daero"
            }
        })
    }
}

/// An HTTP client for `conns` concurrent connections that never follows redirects.
pub fn client(conns: usize, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()?)
}
