//! `pillivery-loadgen`: N concurrent clients, each sending its next request as soon as the
//! last one answered (closed loop, like the seed's 30-user test), for a fixed time. URLs
//! come from a template whose `{a|b|c}` alternatives and `{1..10}` ranges are drawn at
//! random per request. Prints `RESULT name=… requests=… rps=… p50_ms=… p90_ms=… p99_ms=…
//! max_ms=… errors=…` last.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Cli {
    /// A label for the RESULT line.
    #[arg(long)]
    name: String,
    /// Base URL of the API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    /// Path template, e.g. `/api/items?category={EYE|SKIN}&page={1..5}`.
    #[arg(long)]
    path: String,
    #[arg(long, default_value_t = 30)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests before measuring (fills caches and connection pools).
    #[arg(long, default_value_t = 200)]
    warmup: usize,
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
    let parts = std::sync::Arc::new(parse(&cli.path)?);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cli.clients)
        .timeout(Duration::from_secs(10))
        .build()?;

    let mut rng = rand::rng();
    for _ in 0..cli.warmup {
        let url = format!("{}{}", cli.base, render(&parts, &mut rng));
        let _ = client.get(url).send().await.map(|r| r.bytes());
    }

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
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (lat, e) = h.await?;
        all.extend(lat);
        errors += e;
    }
    anyhow::ensure!(!all.is_empty(), "no successful request");
    all.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: f64| ms(all[((all.len() as f64 - 1.0) * p).round() as usize]);
    println!(
        "RESULT name={} clients={} seconds={} requests={} rps={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} errors={}",
        cli.name,
        cli.clients,
        cli.seconds,
        all.len(),
        all.len() as f64 / cli.seconds as f64,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        ms(all[all.len() - 1]),
        errors
    );
    Ok(())
}
