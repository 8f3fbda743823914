//! `pillivery-pgsim --listen ADDR [knobs]`: runs the KakaoPay simulator until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use pillivery_pgsim::Args;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = args.config().map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        public_url = config.public_url.as_deref().unwrap_or("(http://<listen>)"),
        secret_key = if config.secret_key.is_some() { "required" } else { "any" },
        subscription_cids = ?config.subscription_cids,
        knobs = %serde_json::to_string(&config.knobs).unwrap_or_default(),
        "pillivery-pgsim listening"
    );
    pillivery_pgsim::run(listener, config, shutdown()).await?;
    tracing::info!("pillivery-pgsim stopped");
    Ok(())
}

async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
