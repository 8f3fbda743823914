//! `pillivery-api`: serve the REST API, migrate, create an admin, print the OpenAPI document.

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pillivery-api", version, about = "Pillivery REST API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending database migrations.
    Migrate,
    /// Create an admin account, or promote the existing account with that e-mail.
    CreateAdmin {
        #[arg(long)]
        email: String,
        #[arg(long, env = "PILLIVERY_ADMIN_PASSWORD")]
        password: String,
        #[arg(long, default_value = "admin")]
        display_name: String,
        /// Accounts need a unique mobile number; admins rarely use theirs.
        #[arg(long, default_value = "010-0000-0000")]
        phone: String,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Bulk-import items from a JSON-lines or CSV (with header) file.
    ImportItems {
        file: std::path::PathBuf,
        /// `jsonl` or `csv`; by default from the file's extension.
        #[arg(long)]
        format: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        println!("{}", serde_json::to_string_pretty(&api::openapi())?);
        return Ok(());
    }
    let settings = billing::Settings::load()?;
    billing::telemetry::init_tracing(&settings.log);
    // Before anything records a metric (the PG guard sets its gauge when built).
    billing::telemetry::metrics_handle();
    let ctx = billing::Ctx::new(settings, Arc::new(billing::clock::SystemClock))?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(ctx).await,
        Command::Migrate => {
            let report = billing::db::apply_migrations(&ctx.db)
                .await
                .context("migrate")?;
            tracing::info!(migrations = report.migrations.len(), "migrations applied");
            Ok(())
        }
        Command::CreateAdmin {
            email,
            password,
            display_name,
            phone,
        } => create_admin(ctx, email, password, display_name, phone).await,
        Command::Openapi => Ok(()),
        Command::ImportItems { file, format } => import_items(ctx, file, format).await,
    }
}

async fn import_items(
    ctx: billing::Ctx,
    file: std::path::PathBuf,
    format: Option<String>,
) -> anyhow::Result<()> {
    use billing::items::ImportFormat;
    let format = format.unwrap_or_else(|| {
        file.extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_owned()
    });
    let format = match format.as_str() {
        "csv" => ImportFormat::Csv,
        "jsonl" | "ndjson" | "json" => ImportFormat::JsonLines,
        other => anyhow::bail!("unknown format `{other}`: use --format jsonl or csv"),
    };
    let body =
        std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    match billing::items::import(&ctx, &billing::audit::Actor::cli(), &body, format).await {
        Ok(report) => {
            println!("imported {} item(s)", report.inserted);
            Ok(())
        }
        Err(billing::Error::Validation(fields)) => {
            for f in &fields {
                eprintln!("{}: {}", f.field, f.reason);
            }
            anyhow::bail!("nothing imported: {} problem(s)", fields.len())
        }
        Err(e) => Err(e.into()),
    }
}

async fn serve(ctx: billing::Ctx) -> anyhow::Result<()> {
    let addr = ctx.settings.api.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    tracing::info!(%addr, "pillivery-api listening");
    let state = api::AppState::new(ctx);
    api::serve(listener, state, api::shutdown_signal()).await?;
    tracing::info!("pillivery-api stopped");
    Ok(())
}

async fn create_admin(
    ctx: billing::Ctx,
    email: String,
    password: String,
    display_name: String,
    phone: String,
) -> anyhow::Result<()> {
    let input = billing::users::AdminInput {
        email,
        password: Some(password),
        display_name,
        phone,
    };
    match billing::users::create_admin(&ctx, &billing::audit::Actor::cli(), input).await {
        Ok((user, true)) => {
            println!("created admin {} (id {})", user.email, user.id);
            Ok(())
        }
        Ok((user, false)) => {
            println!("{} is an admin", user.email);
            Ok(())
        }
        Err(billing::Error::Validation(fields)) | Err(billing::Error::AlreadyExists(fields)) => {
            let why: Vec<String> = fields
                .iter()
                .map(|f| format!("{} {}", f.field, f.reason))
                .collect();
            anyhow::bail!("cannot create admin: {}", why.join("; "))
        }
        Err(e) => Err(e.into()),
    }
}
