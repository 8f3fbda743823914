//! `pillivery-loadgen`: closed-loop load against the API — N concurrent clients, each
//! sending its next request as soon as the last one answered, for a fixed time.
//!
//! - Without a subcommand (the catalog benchmarks): GETs of a URL template whose
//!   `{a|b|c}` alternatives and `{1..10}` ranges are drawn at random per request. Prints
//!   `RESULT name=… requests=… rps=… p50_ms=… p90_ms=… p99_ms=… max_ms=… errors=…` last.
//! - `orders`: logged-in users placing orders (`POST /api/orders`, 1–3 random lines).
//! - `approval`: buyers walking the whole KakaoPay flow (place, wait for the redirect,
//!   the simulator's buyer page, the approve redirect, wait until paid).

mod approval;
mod common;
mod cpu;
mod orders;

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::Latencies;

#[derive(Parser)]
#[command(
    name = "pillivery-loadgen",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    get: GetArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Authenticated order placement: `POST /api/orders` with 1–3 random lines.
    Orders(orders::OrdersArgs),
    /// Buyers through the whole payment flow against pillivery-pgsim (auto-approve).
    Approval(approval::ApprovalArgs),
}

#[derive(Args)]
struct GetArgs {
    /// A label for the RESULT line.
    #[arg(long, required = true)]
    name: Option<String>,
    /// Base URL of the API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    /// Path template, e.g. `/api/items?category={EYE|SKIN}&page={1..5}`.
    #[arg(long, required = true)]
    path: Option<String>,
    #[arg(long, default_value_t = 30)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests before measuring (fills caches and connection pools).
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// An extra request header, `Name: value` (repeatable), e.g. a console session cookie.
    #[arg(long = "header")]
    headers: Vec<String>,
    #[command(flatten)]
    cpu: cpu::CpuArgs,
}

enum Part {
    Text(String),
    Choice(Vec<String>),
    Range(i64, i64),
}

fn parse(template: &str) -> anyhow::Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        parts.push(Part::Text(rest[..open].to_owned()));
        let close = rest[open..].find('}').context("unclosed {")? + open;
        let inner = &rest[open + 1..close];
        if let Some((a, b)) = inner.split_once("..") {
            parts.push(Part::Range(a.parse()?, b.parse()?));
        } else {
            parts.push(Part::Choice(inner.split('|').map(str::to_owned).collect()));
        }
        rest = &rest[close + 1..];
    }
    parts.push(Part::Text(rest.to_owned()));
    Ok(parts)
}

fn render(parts: &[Part], rng: &mut impl Rng) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Choice(c) => out.push_str(&c[rng.random_range(0..c.len())]),
            Part::Range(a, b) => out.push_str(&rng.random_range(*a..=*b).to_string()),
        }
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    billing::install_crypto_provider();
    match cli.command {
        Some(Command::Orders(args)) => orders::run(args).await,
        Some(Command::Approval(args)) => approval::run(args).await,
        None => get(cli.get).await,
    }
}

async fn get(cli: GetArgs) -> anyhow::Result<()> {
    let name = cli.name.context("--name is required")?;
    let path = cli.path.context("--path is required")?;
    let parts = std::sync::Arc::new(parse(&path)?);
    let mut headers = reqwest::header::HeaderMap::new();
    for h in &cli.headers {
        let (k, v) = h.split_once(':').context("--header takes `Name: value`")?;
        headers.insert(
            reqwest::header::HeaderName::from_bytes(k.trim().as_bytes())?,
            reqwest::header::HeaderValue::from_str(v.trim())?,
        );
    }
    // A redirect is not an answer (e.g. a console session that ended sends the client to
    // sign in): counted as an error, never measured.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cli.clients)
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()?;

    let mut rng = rand::rng();
    for _ in 0..cli.warmup {
        let url = format!("{}{}", cli.base, render(&parts, &mut rng));
        let _ = client.get(url).send().await.map(|r| r.bytes());
    }

    let cpu_start = cli.cpu.sample();
    let deadline = Instant::now() + Duration::from_secs(cli.seconds);
    let mut handles = Vec::new();
    for _ in 0..cli.clients {
        let client = client.clone();
        let parts = parts.clone();
        let base = cli.base.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::from_os_rng();
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let url = format!("{base}{}", render(&parts, &mut rng));
                let started = Instant::now();
                match client.get(url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(started.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Latencies::default();
    let mut errors = 0;
    for h in handles {
        let (lat, e) = h.await?;
        all.extend(lat);
        errors += e;
    }
    let cpu = cli
        .cpu
        .per_request(&cpu_start, &cli.cpu.sample(), all.len() as u64 + errors);
    anyhow::ensure!(!all.is_empty(), "no successful request");
    all.sort();
    println!(
        "RESULT name={} clients={} seconds={} requests={} rps={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} errors={}{cpu}",
        name,
        cli.clients,
        cli.seconds,
        all.len(),
        all.len() as f64 / cli.seconds as f64,
        all.pct(0.5),
        all.pct(0.9),
        all.pct(0.99),
        all.max(),
        errors
    );
    Ok(())
}
