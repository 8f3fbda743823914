//! `pillivery-worker`: one process of the worker fleet, and operators' job commands.

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pillivery-worker", version, about = "Pillivery job worker")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker (the default).
    Run,
    /// Inspect and re-queue jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Inspect and redeliver webhook deliveries.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Subscription charges awaiting a decision.
    #[command(subcommand)]
    Charges(ChargesCommand),
}

#[derive(Subcommand)]
enum ChargesCommand {
    /// Charges sent with no answer yet (oldest first); `--review`: only those undecided
    /// past `subscriptions.review_after_secs`, which need an operator.
    Unknown {
        #[arg(long)]
        review: bool,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Ask KakaoPay about an unknown charge now instead of after its backoff (the id is
    /// `attempt_id` in `charges unknown`); the worker fleet decides it.
    Reconcile { attempt_id: i64 },
}

#[derive(Subcommand)]
enum DeliveriesCommand {
    /// List deliveries (optionally in one state: pending, delivered, dead), newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Redeliver one delivery now, with a fresh retry schedule.
    Redeliver { id: i64 },
    /// Redeliver every dead delivery that died since a time (RFC 3339).
    RedeliverDead {
        #[arg(long)]
        since: chrono::DateTime<chrono::Utc>,
        /// Only this endpoint's.
        #[arg(long)]
        endpoint: Option<i64>,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List jobs in a state (default: failed), newest first.
    List {
        #[arg(long, default_value = "failed")]
        state: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Re-queue a failed job to run now.
    Retry { id: uuid::Uuid },
    /// The queue per task type and state, with how long the oldest due job has waited.
    Stats,
    /// Enqueue N `diag.probe` tasks (an end-to-end check of the fleet).
    Probe {
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, default_value = "probe")]
        key: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = billing::Settings::load()?;
    billing::telemetry::init_tracing(&settings.log);
    // Before anything records a metric (the PG guard sets its gauge when built).
    billing::telemetry::metrics_handle();
    let ctx = billing::Ctx::new(settings, Arc::new(billing::clock::SystemClock))?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(ctx).await,
        Command::Jobs(cmd) => jobs(ctx, cmd).await,
        Command::Deliveries(cmd) => deliveries(ctx, cmd).await,
        Command::Charges(cmd) => charges(ctx, cmd).await,
    }
}

async fn run(ctx: billing::Ctx) -> anyhow::Result<()> {
    let addr = ctx.settings.worker.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    tracing::info!(%addr, "pillivery-worker started");
    worker::run(ctx, listener, worker::shutdown_signal()).await?;
    tracing::info!("pillivery-worker stopped");
    Ok(())
}

async fn jobs(ctx: billing::Ctx, cmd: JobsCommand) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::List { state, limit } => {
            let page = billing::page::PageRequest {
                page: 1,
                size: limit.clamp(1, 100),
            };
            let filter = billing::jobs::JobFilter {
                state: Some(state.clone()),
                ..Default::default()
            };
            let jobs = billing::jobs::list(&ctx, &filter, page).await?;
            println!("{} {state} job(s)", jobs.total);
            for j in jobs.items {
                println!(
                    "{}  {:<24} retries={}/{}  updated={}  {}",
                    j.id,
                    j.name.unwrap_or_default(),
                    j.retries,
                    j.max_retries,
                    j.updated_at.to_rfc3339(),
                    j.error_message.unwrap_or_default()
                );
            }
        }
        JobsCommand::Stats => {
            let stats = billing::jobs::stats(&ctx).await?;
            println!(
                "{:<12} {:<12} {:>10}  {:>9}  oldest due",
                "task_type", "state", "count", "lag (s)"
            );
            for s in stats {
                println!(
                    "{:<12} {:<12} {:>10}  {:>9.1}  {}",
                    s.task_type,
                    s.state,
                    s.count,
                    s.lag_seconds,
                    s.oldest_due_at.map(|t| t.to_rfc3339()).unwrap_or_default()
                );
            }
        }
        JobsCommand::Retry { id } => {
            let job = billing::jobs::retry_failed(&ctx, &billing::audit::Actor::cli(), id).await?;
            println!("re-queued {} ({})", job.id, job.name.unwrap_or_default());
        }
        JobsCommand::Probe { count, key } => {
            let mut conn = ctx.db.acquire().await?;
            for i in 0..count {
                let probe = billing::tasks::Probe::new(format!("{key}-{i}"));
                billing::jobs::enqueue(&mut conn, &probe, ctx.clock.now()).await?;
            }
            println!("enqueued {count} probe(s); see job_probe_runs");
        }
    }
    Ok(())
}

async fn deliveries(ctx: billing::Ctx, cmd: DeliveriesCommand) -> anyhow::Result<()> {
    use billing::webhooks::{Delivery, DeliveryFilter, DeliveryState, RedeliverDead};
    let line = |d: &Delivery| {
        format!(
            "{:>8}  {:<9} endpoint={} {:<24} event={} attempts={} (round {})  {}",
            d.id,
            format!("{:?}", d.state).to_lowercase(),
            d.endpoint_id,
            d.event_type,
            d.event_id,
            d.attempts,
            d.round,
            d.last_error.as_deref().unwrap_or_default()
        )
    };
    match cmd {
        DeliveriesCommand::List { state, limit } => {
            let state = match state.as_deref() {
                None => None,
                Some("pending") => Some(DeliveryState::Pending),
                Some("delivered") => Some(DeliveryState::Delivered),
                Some("dead") => Some(DeliveryState::Dead),
                Some(other) => anyhow::bail!("unknown state `{other}` (pending, delivered, dead)"),
            };
            let filter = DeliveryFilter {
                state,
                ..DeliveryFilter::default()
            };
            let page = billing::page::PageRequest {
                page: 1,
                size: limit.clamp(1, 100),
            };
            let list = billing::webhooks::list_deliveries(&ctx, filter, page).await?;
            println!("{} delivery(ies)", list.total);
            for d in &list.items {
                println!("{}", line(d));
            }
        }
        DeliveriesCommand::Redeliver { id } => {
            let d = billing::webhooks::redeliver(
                &ctx,
                &billing::audit::Actor::cli(),
                billing::ids::DeliveryId(id),
            )
            .await?;
            println!("redelivering {}", line(&d));
        }
        DeliveriesCommand::RedeliverDead { since, endpoint } => {
            let n = billing::webhooks::redeliver_dead(
                &ctx,
                &billing::audit::Actor::cli(),
                RedeliverDead {
                    since,
                    endpoint_id: endpoint.map(billing::ids::WebhookEndpointId),
                },
            )
            .await?;
            println!("redelivering {n} dead delivery(ies)");
        }
    }
    Ok(())
}

async fn charges(ctx: billing::Ctx, cmd: ChargesCommand) -> anyhow::Result<()> {
    match cmd {
        ChargesCommand::Unknown { review, limit } => {
            let page = billing::page::PageRequest {
                page: 1,
                size: limit.clamp(1, 100),
            };
            let list = billing::subscriptions::unknown_charges(&ctx, review, page).await?;
            println!("{} unknown charge(s)", list.total);
            for c in &list.items {
                println!(
                    "attempt_id={} subscription={} user={} cycle={} attempt={} {} {} started={} rounds={}{}",
                    c.attempt_id,
                    c.subscription_id.0,
                    c.user_id.0,
                    c.cycle,
                    c.attempt,
                    c.partner_order_id,
                    c.amount,
                    c.started_at.to_rfc3339(),
                    c.reconcile_rounds,
                    c.review_required_at
                        .map(|t| format!(" review since {}", t.to_rfc3339()))
                        .unwrap_or_default()
                );
            }
        }
        ChargesCommand::Reconcile { attempt_id } => {
            let action = billing::subscriptions::charge::reconcile_now(
                &ctx,
                &billing::audit::Actor::cli(),
                attempt_id,
            )
            .await?;
            println!("attempt {attempt_id}: {}", action.as_str());
        }
    }
    Ok(())
}
