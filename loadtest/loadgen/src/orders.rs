//! `pillivery-loadgen orders`: `--clients` closed-loop clients placing one-time orders
//! (`POST /api/orders`, 1–3 random lines) as random users of a pool of `--users` logged-in
//! users, for `--seconds`. Only 201s are timed; anything else counts as an error (stderr
//! says which). Prints `RESULT name=… requests=… orders_per_sec=… p50_ms=… p90_ms=…
//! p95_ms=… p99_ms=… max_ms=… errors=…` last.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{self, Failures, Latencies, Shop};
use crate::cpu::CpuArgs;

#[derive(Args)]
pub struct OrdersArgs {
    /// A label for the RESULT line.
    #[arg(long, default_value = "orders")]
    name: String,
    #[command(flatten)]
    shop: Shop,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Users logged in up front; every order is placed as a random one of them.
    #[arg(long, default_value_t = 256)]
    users: usize,
    /// Orders placed before measuring (connection pools, caches, prepared statements).
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    #[command(flatten)]
    cpu: CpuArgs,
}

async fn place(
    client: &reqwest::Client,
    shop: &Shop,
    token: &str,
    rng: &mut impl Rng,
) -> Result<(), String> {
    let resp = client
        .post(shop.url("/api/orders"))
        .bearer_auth(token)
        .json(&shop.order_body(rng))
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
    if status == reqwest::StatusCode::CREATED {
        Ok(())
    } else {
        let snippet: String = String::from_utf8_lossy(&body).chars().take(120).collect();
        Err(format!("status {} {snippet}", status.as_u16()))
    }
}

pub async fn run(args: OrdersArgs) -> anyhow::Result<()> {
    let client = common::client(args.clients + 8, Duration::from_secs(10))?;
    let tokens = Arc::new(args.shop.login(&client, args.users).await?);
    let shop = Arc::new(args.shop);

    let failures = Failures::default();
    let mut rng = StdRng::from_os_rng();
    for _ in 0..args.warmup {
        let token = &tokens[rng.random_range(0..tokens.len())];
        if let Err(e) = place(&client, &shop, token, &mut rng).await {
            failures.add(format!("warm-up {e}"));
        }
    }
    failures.report("warm-up failures");
    let failures = Failures::default();

    let cpu_start = args.cpu.sample();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut handles = Vec::new();
    for _ in 0..args.clients {
        let (client, shop, tokens, failures) = (
            client.clone(),
            shop.clone(),
            tokens.clone(),
            failures.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::from_os_rng();
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let token = &tokens[rng.random_range(0..tokens.len())];
                let t = Instant::now();
                match place(&client, &shop, token, &mut rng).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => failures.add(e),
                }
            }
            lat
        }));
    }
    let mut all = Latencies::default();
    for h in handles {
        all.extend(h.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = args
        .cpu
        .per_request(&cpu_start, &args.cpu.sample(), all.len() as u64);
    failures.report("failed orders");
    anyhow::ensure!(!all.is_empty(), "no order was placed");
    all.sort();
    println!(
        "RESULT name={} clients={} users={} seconds={} requests={} orders_per_sec={:.1} p50_ms={:.2} p90_ms={:.2} p95_ms={:.2} p99_ms={:.2} max_ms={:.2} mean_ms={:.2} errors={}{cpu}",
        args_name(&args.name),
        args.clients,
        tokens.len(),
        args.seconds,
        all.len(),
        all.len() as f64 / elapsed,
        all.pct(0.5),
        all.pct(0.9),
        all.pct(0.95),
        all.pct(0.99),
        all.max(),
        all.mean(),
        failures.total()
    );
    Ok(())
}

fn args_name(name: &str) -> String {
    name.replace(char::is_whitespace, "_")
}
