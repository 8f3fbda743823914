//! Postgres: the pool and the embedded migrations (the only schema source).

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::settings::DatabaseSettings;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A lazily connecting pool: the process starts even while Postgres is down and
/// `/health/ready` reports it, rather than refusing to boot.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.url.expose_secret().parse()?;
    let options = options.application_name("pillivery");
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(options))
}

pub async fn migrate(pool: &PgPool) -> std::result::Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// One migration, embedded in this binary or applied to the database (or both).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MigrationStatus {
    pub version: i64,
    pub description: String,
    /// When the database applied it; absent while pending.
    pub applied_at: Option<DateTime<Utc>>,
    /// `applied`, `pending`, `modified` (applied from a different text than this binary
    /// embeds), `failed` (left half-applied) or `unknown` (applied by a newer binary).
    pub state: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MigrationReport {
    pub migrations: Vec<MigrationStatus>,
    pub pending: usize,
    /// False when a `modified`, `failed` or `unknown` migration makes migrating unsafe.
    pub consistent: bool,
}

/// A `_sqlx_migrations` row: version, description, installed_on, success, checksum.
type Applied = (i64, String, DateTime<Utc>, bool, Vec<u8>);

/// The embedded migrations against the database's `_sqlx_migrations` (absent before the
/// first migration: everything pending).
pub async fn migration_status(pool: &PgPool) -> Result<MigrationReport> {
    let table = sqlx::query_scalar::<_, bool>("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    // `_sqlx_migrations` belongs to sqlx, not to our schema, hence the unchecked query.
    let applied: Vec<Applied> = if table {
        sqlx::query_as(
            "SELECT version, description, installed_on, success, checksum
             FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(pool)
        .await?
    } else {
        Vec::new()
    };
    let mut migrations = Vec::new();
    for m in MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
    {
        let row = applied.iter().find(|a| a.0 == m.version);
        let state = match row {
            None => "pending",
            Some(a) if !a.3 => "failed",
            Some(a) if a.4.as_slice() != &*m.checksum => "modified",
            Some(_) => "applied",
        };
        migrations.push(MigrationStatus {
            version: m.version,
            description: m.description.to_string(),
            applied_at: row.map(|a| a.2),
            state: state.into(),
        });
    }
    for a in &applied {
        if !migrations.iter().any(|m| m.version == a.0) {
            migrations.push(MigrationStatus {
                version: a.0,
                description: a.1.clone(),
                applied_at: Some(a.2),
                state: "unknown".into(),
            });
        }
    }
    migrations.sort_by_key(|m| m.version);
    Ok(MigrationReport {
        pending: migrations.iter().filter(|m| m.state == "pending").count(),
        consistent: migrations
            .iter()
            .all(|m| m.state == "applied" || m.state == "pending"),
        migrations,
    })
}

/// `migrate` (CLI and admin route): applies the pending migrations under sqlx's advisory
/// lock, so concurrent callers take turns, and reports the result. Refuses, changing
/// nothing, when the database has diverged from this binary's migrations.
pub async fn apply_migrations(pool: &PgPool) -> Result<MigrationReport> {
    let before = migration_status(pool).await?;
    if !before.consistent {
        let odd: Vec<String> = before
            .migrations
            .iter()
            .filter(|m| m.state != "applied" && m.state != "pending")
            .map(|m| format!("{} {} ({})", m.version, m.description, m.state))
            .collect();
        return Err(Error::MigrationsDiverged(odd.join(", ")));
    }
    migrate(pool).await.map_err(|e| match e {
        MigrateError::VersionMissing(v) | MigrateError::VersionMismatch(v) => {
            Error::MigrationsDiverged(format!("migration {v}"))
        }
        MigrateError::Execute(e) => Error::Database(e),
        other => Error::Internal(format!("migrate: {other}")),
    })?;
    migration_status(pool).await
}
