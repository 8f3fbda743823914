//! `pillivery-loadgen approval`: `--buyers` concurrent buyers, each its own logged-in
//! user, walking the whole one-time payment flow in a loop against pillivery-pgsim started
//! with `--auto-approve`:
//!
//! 1. `POST /api/orders` (201, `pending_payment`);
//! 2. `GET /api/orders/{id}?wait=5` until `payment_ready` with `payment.redirect_url`
//!    (a worker ran `payment.ready` at the simulator);
//! 3. `GET` that URL — the simulator's buyer page, which answers 302 to our approval URL
//!    with a `pg_token`;
//! 4. `GET` the approval URL (the approve redirect: records and enqueues, 303) — timed on
//!    its own;
//! 5. `GET /api/orders/{id}?wait=5` until `paid` (a worker ran `payment.approve`).
//!
//! Buyers start one by one over `--ramp-seconds` and run for `--warmup-seconds` (ramp
//! included), then the measurement window of `--seconds`; after it no buyer starts a new
//! order, and the cycles under way finish. A cycle counts in the window by when its order
//! was seen paid (throughput, end to end, ready, approve → paid) or, for the approve
//! redirect's latency, when that request was sent. `in_flight_avg`
//! is the time-average, over the window, of the approvals under way (approve redirect
//! sent, paid not yet seen): by Little's law approvals/s ≈ in_flight_avg / approval time.
//!
//! Prints `RESULT name=… buyers=… seconds=… approvals=… approvals_per_sec=…
//! in_flight_avg=… approve_p50_ms=… approve_p99_ms=… … e2e_p50_ms=… e2e_p99_ms=…
//! errors=…` last.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{self, Failures, Latencies, Shop};
use crate::cpu::CpuArgs;

#[derive(Args)]
pub struct ApprovalArgs {
    /// A label for the RESULT line.
    #[arg(long, default_value = "approval")]
    name: String,
    #[command(flatten)]
    shop: Shop,
    /// Concurrent buyers (each logs in as a user of its own).
    #[arg(long, default_value_t = 100)]
    buyers: usize,
    /// Buyers start one after the other over this many seconds (so that they do not
    /// move in lockstep waves behind the simulator's fixed latency).
    #[arg(long, default_value_t = 4.0)]
    ramp_seconds: f64,
    /// Buyers run this long (ramp included) before the measurement window opens.
    #[arg(long, default_value_t = 10)]
    warmup_seconds: u64,
    /// The measurement window.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// A buyer gives up on an order that has not moved on after this long.
    #[arg(long, default_value_t = 60)]
    step_timeout_secs: u64,
    /// Accounted over the window, per order seen paid in it.
    #[command(flatten)]
    cpu: CpuArgs,
}

/// One buyer's order, from placing it to seeing it paid.
struct Cycle {
    placed: Instant,
    ready: Instant,
    approve_sent: Instant,
    approve_answered: Instant,
    paid: Instant,
}

struct Buyer {
    client: reqwest::Client,
    shop: Arc<Shop>,
    token: String,
    step_timeout: Duration,
}

impl Buyer {
    async fn order(&self, id: i64) -> Result<Value, String> {
        let resp = self
            .client
            .get(self.shop.url(&format!("/api/orders/{id}?wait=5")))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("get order: transport: {e}"))?;
        let status = resp.status();
        if status != StatusCode::OK {
            return Err(format!("get order: status {}", status.as_u16()));
        }
        resp.json()
            .await
            .map_err(|e| format!("get order: body: {e}"))
    }

    /// Waits (long polls) until the order leaves `from`; returns it.
    async fn wait_past(&self, id: i64, from: &str) -> Result<Value, String> {
        let give_up = Instant::now() + self.step_timeout;
        loop {
            let order = self.order(id).await?;
            if order["status"].as_str() != Some(from) {
                return Ok(order);
            }
            if Instant::now() >= give_up {
                return Err(format!("order stayed {from}"));
            }
        }
    }

    async fn cycle(&self, rng: &mut StdRng) -> Result<Cycle, String> {
        let placed = Instant::now();
        let resp = self
            .client
            .post(self.shop.url("/api/orders"))
            .bearer_auth(&self.token)
            .json(&self.shop.order_body(rng))
            .send()
            .await
            .map_err(|e| format!("place: transport: {e}"))?;
        if resp.status() != StatusCode::CREATED {
            return Err(format!("place: status {}", resp.status().as_u16()));
        }
        let order: Value = resp.json().await.map_err(|e| format!("place: body: {e}"))?;
        let id = order["id"].as_i64().ok_or("place: no id")?;

        let order = self.wait_past(id, "pending_payment").await?;
        let status = order["status"].as_str().unwrap_or_default();
        let redirect = order["payment"]["redirect_url"].as_str();
        let (Some(redirect), "payment_ready") = (redirect, status) else {
            return Err(format!("after ready: status {status}"));
        };
        let ready = Instant::now();

        let resp = self
            .client
            .get(redirect)
            .send()
            .await
            .map_err(|e| format!("buyer page: transport: {e}"))?;
        if resp.status() != StatusCode::FOUND {
            return Err(format!("buyer page: status {}", resp.status().as_u16()));
        }
        let approval_url = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or("buyer page: no Location")?
            .to_owned();
        if !approval_url.contains("pg_token=") {
            return Err("buyer page: not redirected to the approval URL".into());
        }

        let approve_sent = Instant::now();
        let resp = self
            .client
            .get(&approval_url)
            .send()
            .await
            .map_err(|e| format!("approve redirect: transport: {e}"))?;
        let code = resp.status();
        let _ = resp.bytes().await;
        let approve_answered = Instant::now();
        if code != StatusCode::SEE_OTHER {
            return Err(format!("approve redirect: status {}", code.as_u16()));
        }

        let order = self.wait_past(id, "approving").await?;
        match order["status"].as_str() {
            Some("paid") => {}
            other => return Err(format!("after approve: status {}", other.unwrap_or("?"))),
        }
        Ok(Cycle {
            placed,
            ready,
            approve_sent,
            approve_answered,
            paid: Instant::now(),
        })
    }
}

/// The length of `[a, b]` inside `[lo, hi]`.
fn overlap(a: Instant, b: Instant, lo: Instant, hi: Instant) -> Duration {
    let start = a.max(lo);
    let end = b.min(hi);
    end.saturating_duration_since(start)
}

pub async fn run(args: ApprovalArgs) -> anyhow::Result<()> {
    // Every buyer long-polls on its own connection, and follows two redirects.
    let client = common::client(args.buyers * 2 + 8, Duration::from_secs(30))?;
    let tokens = args.shop.login(&client, args.buyers).await?;
    let shop = Arc::new(args.shop);

    let started = Instant::now();
    let window_start = started + Duration::from_secs(args.warmup_seconds);
    let window_end = window_start + Duration::from_secs(args.seconds);
    let cycles: Arc<Mutex<Vec<Cycle>>> = Arc::default();
    let failures = Failures::default();
    let mut handles = Vec::new();
    let ramp = Duration::from_secs_f64(args.ramp_seconds.max(0.0));
    let buyers = tokens.len() as u32;
    for (i, token) in (0u32..).zip(tokens) {
        let start_at = started + ramp * i / buyers.max(1);
        let buyer = Buyer {
            client: client.clone(),
            shop: shop.clone(),
            token,
            step_timeout: Duration::from_secs(args.step_timeout_secs),
        };
        let (cycles, failures) = (cycles.clone(), failures.clone());
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::from_os_rng();
            tokio::time::sleep_until(start_at.into()).await;
            while Instant::now() < window_end {
                match buyer.cycle(&mut rng).await {
                    Ok(c) => {
                        if let Ok(mut v) = cycles.lock() {
                            v.push(c);
                        }
                    }
                    Err(e) => {
                        failures.add(e);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }));
    }
    let cpu_args = args.cpu.clone();
    let cpu_window = tokio::spawn(async move {
        tokio::time::sleep_until(window_start.into()).await;
        let start = cpu_args.sample();
        tokio::time::sleep_until(window_end.into()).await;
        (start, cpu_args.sample())
    });
    for h in handles {
        h.await?;
    }
    let (cpu_start, cpu_end) = cpu_window.await?;
    failures.report("failed cycles");
    let cycles = Arc::try_unwrap(cycles)
        .ok()
        .context("buyers still hold the results")?
        .into_inner()
        .ok()
        .context("poisoned results")?;

    let in_window = |t: Instant| t >= window_start && t < window_end;
    let secs = args.seconds as f64;
    let mut approve = Latencies::default();
    let mut ready = Latencies::default();
    let mut to_paid = Latencies::default();
    let mut e2e = Latencies::default();
    let mut approvals = 0usize;
    let mut in_flight = Duration::ZERO;
    for c in &cycles {
        in_flight += overlap(c.approve_sent, c.paid, window_start, window_end);
        if in_window(c.approve_sent) {
            approve.push(c.approve_answered - c.approve_sent);
        }
        if in_window(c.paid) {
            approvals += 1;
            ready.push(c.ready - c.placed);
            to_paid.push(c.paid - c.approve_sent);
            e2e.push(c.paid - c.placed);
        }
    }
    anyhow::ensure!(approvals > 0, "no order was paid in the window");
    let cpu = args.cpu.per_request(&cpu_start, &cpu_end, approvals as u64);
    for l in [&mut approve, &mut ready, &mut to_paid, &mut e2e] {
        l.sort();
    }
    println!(
        "RESULT name={} buyers={} seconds={} approvals={} approvals_per_sec={:.2} in_flight_avg={:.1} approve_p50_ms={:.2} approve_p90_ms={:.2} approve_p99_ms={:.2} approve_max_ms={:.2} ready_p50_ms={:.0} ready_p99_ms={:.0} approve_to_paid_p50_ms={:.0} approve_to_paid_p99_ms={:.0} e2e_p50_ms={:.0} e2e_p99_ms={:.0} e2e_max_ms={:.0} errors={}{cpu}",
        args.name.replace(char::is_whitespace, "_"),
        args.buyers,
        args.seconds,
        approvals,
        approvals as f64 / secs,
        in_flight.as_secs_f64() / secs,
        approve.pct(0.5),
        approve.pct(0.9),
        approve.pct(0.99),
        approve.max(),
        ready.pct(0.5),
        ready.pct(0.99),
        to_paid.pct(0.5),
        to_paid.pct(0.99),
        e2e.pct(0.5),
        e2e.pct(0.99),
        e2e.max(),
        failures.total()
    );
    Ok(())
}
