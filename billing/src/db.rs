//! Postgres: the pool (a release check and server-side limits on every session), the
//! domain's handle on it whose transactions a stopped job waits for, and the embedded
//! migrations (the only schema source).

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Row};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::settings::DatabaseSettings;
use crate::wakeups::{Pending, Wakeups};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A lazily connecting pool: the process starts even while Postgres is down and
/// `/health/ready` reports it, rather than refusing to boot.
///
/// No connection goes back into the pool unless its session is idle outside any
/// transaction (see [`session_state`]): sqlx 0.8 can lose track of a transaction whose
/// `BEGIN` was cancelled in flight, and whatever the next borrower wrote would then run
/// inside that stale transaction and never commit.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.url.expose_secret().parse()?;
    // Present from the start at 0, so the alert's increase() sees the first discard.
    for state in [
        SessionState::InTransaction,
        SessionState::Aborted,
        SessionState::Unusable,
    ] {
        metrics::counter!("db_connections_discarded_total", "reason" => state.label()).increment(0);
    }
    let options = options
        .application_name("pillivery")
        .options(session_limits(settings));
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout_ms)
        .after_release(|conn, _meta| {
            Box::pin(async move {
                match session_state(conn).await {
                    Ok(SessionState::Idle) => Ok(true),
                    Ok(bad) => {
                        discarded(bad);
                        Ok(false)
                    }
                    Err(e) => {
                        // Broken: sqlx closes it without a goodbye.
                        discarded(SessionState::Unusable);
                        Err(e)
                    }
                }
            })
        })
        .connect_lazy_with(options))
}

/// `statement_timeout` and `idle_in_transaction_session_timeout` for every session
/// (0 leaves the server's default).
fn session_limits(settings: &DatabaseSettings) -> Vec<(&'static str, String)> {
    [
        ("statement_timeout", settings.statement_timeout_ms),
        (
            "idle_in_transaction_session_timeout",
            settings.idle_in_transaction_timeout_ms,
        ),
    ]
    .into_iter()
    // Postgres reads a bare number as milliseconds, and 0 as "no limit".
    .map(|(k, limit)| (k, limit.as_millis()))
    .filter(|(_, ms)| *ms > 0)
    .map(|(k, ms)| (k, ms.to_string()))
    .collect()
}

/// What a released connection's session is doing on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Outside any transaction: fit for the next borrower.
    Idle,
    /// Inside a transaction nobody will finish.
    InTransaction,
    /// Inside a failed transaction (every statement answers `25P02`).
    Aborted,
    /// The check itself failed: the connection is broken.
    Unusable,
}

impl SessionState {
    pub fn label(self) -> &'static str {
        match self {
            SessionState::Idle => "idle",
            SessionState::InTransaction => "in_transaction",
            SessionState::Aborted => "aborted",
            SessionState::Unusable => "unusable",
        }
    }
}

/// Asks the server whether `conn` is inside a transaction block. Outside one, a
/// statement's implicit transaction starts with the statement, so `now()` (transaction
/// start) equals `statement_timestamp()` to the microsecond; inside a block, `now()` is
/// the time of its `BEGIN`, at least one round trip earlier. Sent as a simple query,
/// the protocol that gives the statement its own start time; anything the dropped owner
/// left queued (a rollback) is flushed first.
pub async fn session_state(conn: &mut PgConnection) -> Result<SessionState, sqlx::Error> {
    use sqlx::Executor;
    // A bare `&str` without arguments goes out as a simple query.
    match conn.fetch_one("SELECT now() = statement_timestamp()").await {
        Ok(row) if row.try_get::<bool, _>(0)? => Ok(SessionState::Idle),
        Ok(_) => Ok(SessionState::InTransaction),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("25P02") => {
            Ok(SessionState::Aborted)
        }
        Err(e) => Err(e),
    }
}

fn discarded(state: SessionState) {
    metrics::counter!("db_connections_discarded_total", "reason" => state.label()).increment(1);
    tracing::warn!(
        state = state.label(),
        "database connection discarded on release: its session was not idle"
    );
}

/// The domain's handle on the pool. Everything a [`PgPool`] does is reachable through
/// it; [`Db::begin`] opens a [`Tx`] counted in the handle's [`OpenTransactions`], so a
/// runner that must stop the work (a job's timeout, a lost lease) can wait until no
/// transaction of it is open instead of cutting one in the middle ([`stop_between_transactions`]).
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
    open: Option<OpenTransactions>,
    /// Sends what this pool's transactions announce, after they commit.
    wakeups: Wakeups,
}

impl Db {
    pub fn new(pool: PgPool) -> Self {
        let wakeups = Wakeups::new(&pool.connect_options());
        Self {
            pool,
            open: None,
            wakeups,
        }
    }

    /// The process's sender of wake-ups for this pool.
    pub fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The same pool, with its transactions counted in `open`.
    pub fn counted(&self, open: &OpenTransactions) -> Self {
        Self {
            pool: self.pool.clone(),
            open: Some(open.clone()),
            wakeups: self.wakeups.clone(),
        }
    }

    /// `BEGIN` on a pooled connection. Counted before the `BEGIN` is sent, so a stop that
    /// honours the count never cancels a `BEGIN` in flight.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Self::begin_for(std::slice::from_ref(self)).await
    }

    /// One transaction doing the work of several units at once (a batch of jobs): on the
    /// first handle's pool, counted in every handle's [`OpenTransactions`], so none of
    /// those units is stopped while it is open.
    pub async fn begin_for(handles: &[Db]) -> Result<Tx, sqlx::Error> {
        let first = handles.first().ok_or(sqlx::Error::PoolClosed)?;
        let open = handles
            .iter()
            .filter_map(|h| h.open.as_ref().map(OpenTransactions::enter))
            .collect();
        let tx = first.pool.begin().await?;
        Ok(Tx {
            tx,
            wake: Pending::default(),
            wakeups: first.wakeups.clone(),
            _open: open,
        })
    }
}

impl Deref for Db {
    type Target = PgPool;

    fn deref(&self) -> &PgPool {
        &self.pool
    }
}

/// A transaction opened by [`Db::begin`]: a `sqlx::Transaction` (dropped uncommitted, it
/// rolls back) that stays counted until committed, rolled back or dropped. What its
/// writes must announce (due jobs, changed orders) is sent once it commits, and only
/// then ([`crate::wakeups`]).
pub struct Tx {
    tx: sqlx::Transaction<'static, Postgres>,
    wake: Pending,
    wakeups: Wakeups,
    // Declared after `tx`: dropped after it, once its rollback is queued.
    _open: Vec<OpenTx>,
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Tx {
            tx,
            wake,
            wakeups,
            _open,
        } = self;
        tx.commit().await?;
        wakeups.send(wake);
        Ok(())
    }

    /// Rolls back; nothing it wrote is announced.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        let Tx { tx, _open, .. } = self;
        tx.rollback().await
    }
}

/// A connection that writes may announce themselves on (jobs enqueued, orders changed).
/// A [`Tx`] keeps the announcements for after its commit; on any other connection its
/// commit is not seen here, so they ride on the write itself (`pg_notify` inside the
/// statement: correct, but it takes Postgres' notify lock at the commit).
pub trait Wakes: Send {
    fn conn(&mut self) -> &mut PgConnection;

    /// Where to note what to announce after the commit; `None`: announce in the statement.
    fn after_commit(&mut self) -> Option<&mut Pending>;
}

impl Wakes for Tx {
    fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    fn after_commit(&mut self) -> Option<&mut Pending> {
        Some(&mut self.wake)
    }
}

impl Wakes for PgConnection {
    fn conn(&mut self) -> &mut PgConnection {
        self
    }

    fn after_commit(&mut self) -> Option<&mut Pending> {
        None
    }
}

impl Wakes for sqlx::pool::PoolConnection<Postgres> {
    fn conn(&mut self) -> &mut PgConnection {
        self
    }

    fn after_commit(&mut self) -> Option<&mut Pending> {
        None
    }
}

impl Wakes for sqlx::Transaction<'_, Postgres> {
    fn conn(&mut self) -> &mut PgConnection {
        self
    }

    fn after_commit(&mut self) -> Option<&mut Pending> {
        None
    }
}

impl Deref for Tx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// How many transactions of one unit of work (a job's run) are open right now.
#[derive(Clone, Debug)]
pub struct OpenTransactions(Arc<watch::Sender<usize>>);

impl Default for OpenTransactions {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl OpenTransactions {
    pub fn count(&self) -> usize {
        *self.0.borrow()
    }

    fn enter(&self) -> OpenTx {
        self.0.send_modify(|n| *n += 1);
        OpenTx(self.clone())
    }

    async fn none(&self) {
        // `wait_for` looks at the current value first, so no wake-up is missed.
        let _ = self.0.subscribe().wait_for(|n| *n == 0).await;
    }
}

struct OpenTx(OpenTransactions);

impl Drop for OpenTx {
    fn drop(&mut self) {
        self.0 .0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Runs `work` to its end, unless `stop` resolves first: then `work` is dropped at the
/// first moment none of its transactions counted in `open` is open — never between a
/// `BEGIN` and its `COMMIT` — and the stop's value is returned. A transaction open when
/// the stop came thus commits (or rolls back) as the work decides, and is reported.
pub async fn stop_between_transactions<W, S>(
    work: W,
    open: &OpenTransactions,
    stop: impl Future<Output = S>,
) -> std::result::Result<W::Output, S>
where
    W: Future,
{
    tokio::pin!(work);
    tokio::pin!(stop);
    let reason = tokio::select! {
        biased;
        out = &mut work => return Ok(out),
        s = &mut stop => s,
    };
    loop {
        if open.count() == 0 {
            return Err(reason);
        }
        tokio::select! {
            biased;
            out = &mut work => return Ok(out),
            () = open.none() => {}
        }
    }
}

/// Migrations on a connection of their own: without the pool's `statement_timeout`
/// (building an index on a large table may take longer) and outside the pool's release
/// check. sqlx's advisory lock makes concurrent callers take turns.
async fn migration_pool(pool: &PgPool) -> Result<PgPool, sqlx::Error> {
    let options = (*pool.connect_options())
        .clone()
        .options([("statement_timeout", "0")]);
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
}

pub async fn migrate(pool: &PgPool) -> std::result::Result<(), MigrateError> {
    let own = migration_pool(pool).await?;
    let result = MIGRATOR.run(&own).await;
    own.close().await;
    result
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

/// `POST /api/admin/migrations`: [`apply_migrations`], then the audit row naming what was
/// applied. The migrator commits each migration in a transaction of its own, so this row
/// follows them (it cannot share theirs); a refused run applies nothing and logs nothing.
pub async fn apply_migrations_as(
    ctx: &crate::Ctx,
    actor: &crate::audit::Actor,
) -> Result<MigrationReport> {
    let pool = ctx.db.pool();
    let before = migration_status(pool).await?;
    let report = apply_migrations(pool).await?;
    let applied: Vec<i64> = before
        .migrations
        .iter()
        .filter(|m| m.state == "pending")
        .map(|m| m.version)
        .collect();
    let mut conn = ctx.db.acquire().await?;
    crate::audit::record(
        &mut conn,
        actor,
        crate::audit::Action::MigrationsApplied,
        crate::audit::Target::many("migration"),
        serde_json::json!({ "applied": applied }),
        ctx.clock.now(),
    )
    .await?;
    Ok(report)
}
