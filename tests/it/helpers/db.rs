//! A fresh database per test, cloned from a template migrated once per migration set.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};
use uuid::Uuid;

pub fn admin_url() -> String {
    std::env::var("PILLIVERY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn url_for(database: &str) -> String {
    let mut url = url::Url::parse(&admin_url()).expect("PILLIVERY_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{database}"));
    url.into()
}

async fn admin_conn() -> PgConnection {
    let opts: PgConnectOptions = admin_url().parse().unwrap();
    opts.connect()
        .await
        .unwrap_or_else(|e| panic!("cannot reach test Postgres at {}: {e}", admin_url()))
}

/// The template's name changes whenever a migration does, so a stale one is never used.
fn template_name() -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for m in billing::db::MIGRATOR.iter() {
        for b in m.version.to_le_bytes().iter().chain(m.checksum.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("pillivery_tpl_{h:016x}")
}

async fn ensure_template(conn: &mut PgConnection) -> String {
    let name = template_name();
    // One process migrates; the others wait on the lock and then find it ready.
    conn.execute("SELECT pg_advisory_lock(727274)")
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    if !exists {
        let building = format!("{name}_building");
        conn.execute(format!(r#"DROP DATABASE IF EXISTS "{building}""#).as_str())
            .await
            .unwrap();
        conn.execute(format!(r#"CREATE DATABASE "{building}""#).as_str())
            .await
            .unwrap();
        {
            let mut tpl = PgConnection::connect(&url_for(&building)).await.unwrap();
            billing::db::MIGRATOR.run(&mut tpl).await.unwrap();
            tpl.close().await.unwrap();
        }
        conn.execute(format!(r#"ALTER DATABASE "{building}" RENAME TO "{name}""#).as_str())
            .await
            .unwrap();
        conn.execute(format!(r#"ALTER DATABASE "{name}" WITH IS_TEMPLATE true"#).as_str())
            .await
            .unwrap();
    }
    conn.execute("SELECT pg_advisory_unlock(727274)")
        .await
        .unwrap();
    name
}

/// Creates `pillivery_test_<uuid>` from the template and returns its URL.
pub async fn fresh_database() -> String {
    let mut conn = admin_conn().await;
    let template = ensure_template(&mut conn).await;
    let name = format!("pillivery_test_{}", Uuid::new_v4().simple());
    let mut attempt = 0;
    loop {
        let sql = format!(r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#);
        match conn.execute(sql.as_str()).await {
            Ok(_) => break,
            // Another test may be copying the template at this instant.
            Err(e) if attempt < 20 && e.to_string().contains("being accessed") => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => panic!("create test database: {e}"),
        }
    }
    conn.close().await.ok();
    url_for(&name)
}

/// Creates an empty `pillivery_test_<uuid>` (no migrations) and returns its URL.
pub async fn fresh_empty_database() -> String {
    let mut conn = admin_conn().await;
    let name = format!("pillivery_test_{}", Uuid::new_v4().simple());
    conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .unwrap();
    conn.close().await.ok();
    url_for(&name)
}

/// Sessions of `db`'s database that sit inside a transaction block between statements
/// (`idle in transaction`, aborted or not).
pub async fn sessions_in_transaction(db: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

/// Every session of the database is out of its transaction within 10 s: work still
/// finishing after its client went away ends by then, while a session that a cancelled
/// `BEGIN` left inside a transaction never does (Postgres would end it only after the
/// pools' `idle_in_transaction_session_timeout`, 60 s by default).
pub async fn assert_no_session_left_in_transaction(db: &sqlx::PgPool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n = sessions_in_transaction(db).await;
        if n == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} session(s) still idle inside a transaction after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
