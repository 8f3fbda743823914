//! The billing harness: a fresh database, an in-process pgsim, the real worker runtime on a
//! `ManualClock`, and helpers to create subscriptions through the engine's own creation
//! path and to move simulated time forward event by event (`run_until`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use billing::clock::{Clock, ManualClock};
use billing::ids::{OrderId, SubscriptionId, UserId};
use billing::Settings;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{http_client, test_db, test_settings};

pub const SECRET: &str = "pv-billing-secret";

/// 2027-01-01 00:00 in Seoul: simulated time starts here. A fixed date the tests'
/// calendars are written against; every write and enqueue takes the Clock's time (and
/// wakes workers by it), so its distance from the real clock does not matter.
pub fn sim_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 31, 15, 0, 0).unwrap()
}

/// Where `run_until`'s wall time goes (the simulated-year test prints them per day when
/// `PV_SIM_PROF` is set): stops, `busy()` polls, and microseconds spent waiting for idle.
pub static PROF_STOPS: AtomicU64 = AtomicU64::new(0);
pub static PROF_BUSY: AtomicU64 = AtomicU64::new(0);
pub static PROF_IDLE_US: AtomicU64 = AtomicU64::new(0);

pub struct Billing {
    pub db: PgPool,
    pub url: String,
    pub ctx: billing::Ctx,
    pub clock: ManualClock,
    pub pg: pillivery_pgsim::Running,
    /// `run_until` never steps by less than this (after the first stop): follow-up jobs
    /// due close together run together. Zero = stop at every scheduled time exactly.
    pub granularity: chrono::Duration,
    client: reqwest::Client,
    runtime: Option<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
}

/// What a subscription fixture is made of.
pub struct NewSub {
    pub user: UserId,
    pub items: Vec<(i64, i32)>,
    pub period_days: i32,
    pub paid_at: DateTime<Utc>,
}

impl Billing {
    /// Starts everything with pgsim answering at once; `tune` adjusts the settings.
    pub async fn start(tune: impl FnOnce(&mut Settings)) -> Billing {
        let (url, db) = test_db().await;
        // Loopback only: TLS would cost both ends CPU on every message of a busy day.
        let url = if url.contains('?') {
            url
        } else {
            format!("{url}?sslmode=disable")
        };
        // Commits wait for the WAL flush: 3.3 ms each on this machine, measured, and most of
        // the statement time of a simulated day. This database is the harness's own and
        // nothing here survives a Postgres crash, so it does not wait (new sessions).
        sqlx::query(&format!(
            r#"ALTER DATABASE "{}" SET synchronous_commit = off"#,
            url.rsplit('/')
                .next()
                .unwrap()
                .trim_end_matches("?sslmode=disable")
        ))
        .execute(&db)
        .await
        .unwrap();
        // The harness's own sessions, opened after both choices.
        db.close().await;
        let db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect(&url)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pg = pillivery_pgsim::spawn(
            listener,
            pillivery_pgsim::Config {
                secret_key: Some(SECRET.into()),
                ..Default::default()
            },
        )
        .unwrap();
        let clock = ManualClock::new(sim_start());
        let mut settings = test_settings(&url);
        settings.database.max_connections = 20;
        settings.kakaopay.base_url = pg.url.clone();
        settings.kakaopay.secret_key = SECRET.to_owned().into();
        // Enqueues due by the Clock's "now" NOTIFY the workers and `set_time` does on each
        // move of the clock, so the poll is only a fallback: at 2 ms, each idle pool's two
        // statements per poll took CPU from the jobs on this 2-core machine.
        settings.worker.poll_interval_ms = Duration::from_millis(50);
        settings.worker.reap_interval_ms = Duration::from_millis(100);
        settings.worker.concurrency = 32;
        // Whole seconds at the PG and a manual clock: a small allowance is enough.
        settings.subscriptions.reconcile_skew_secs = Duration::from_secs(2);
        tune(&mut settings);
        settings.validate().unwrap();
        let mut ctx = billing::Ctx::new(settings, Arc::new(clock.clone())).unwrap();
        // Inquiry retries sleep in real time; keep them short under a simulated clock.
        let mut pg_config = billing::pg::KakaoPayConfig::from_settings(&ctx.settings.kakaopay);
        pg_config.retry_min_backoff = Duration::from_millis(5);
        pg_config.retry_max_backoff = Duration::from_millis(20);
        pg_config.request_timeout = Duration::from_secs(5);
        ctx.gateway = Arc::new(billing::pg::KakaoPay::new(&pg_config).unwrap());
        let b = Billing {
            db,
            url,
            ctx,
            clock,
            pg,
            granularity: chrono::Duration::zero(),
            client: http_client(),
            runtime: None,
        };
        b.sync_pg_clock().await;
        b
    }

    /// Starts the worker runtime (no periodic tasks: the test drives time).
    pub fn start_worker(&mut self) {
        let cfg = worker::runtime::RuntimeConfig::from_settings(&self.ctx.settings.worker);
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(worker::runtime::run(
            self.ctx.clone(),
            cfg,
            worker::tasks::Registry::standard(),
            Vec::new(),
            async {
                let _ = rx.await;
            },
        ));
        self.runtime = Some((tx, handle));
    }

    pub async fn stop_worker(&mut self) {
        if let Some((tx, handle)) = self.runtime.take() {
            let _ = tx.send(());
            handle.await.unwrap().unwrap();
        }
    }

    /// pgsim's clock follows simulated time, so `last_approved_at` is comparable.
    async fn sync_pg_clock(&self) {
        let resp = self
            .client
            .put(format!("{}/__clock", self.pg.url))
            .json(&json!({ "now": self.clock.now() }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }

    /// Moves the clock and wakes the workers: their idle sleep is in real time, so a jump
    /// of the simulated clock is a timer firing that only this NOTIFY tells them about.
    pub async fn set_time(&self, t: DateTime<Utc>) {
        self.clock.set(t);
        self.sync_pg_clock().await;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(billing::jobs::NOTIFY_CHANNEL)
            .execute(&self.db)
            .await
            .unwrap();
    }

    pub async fn set_knobs(&self, knobs: Value) {
        let resp = self
            .client
            .put(format!("{}/__knobs", self.pg.url))
            .json(&knobs)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }

    /// Declines every charge on `sid` with `decline` (`{"error_code": …}`), whatever the
    /// knobs say.
    pub async fn set_sid_decline(&self, sid: &str, decline: Value) {
        let resp = self
            .client
            .put(format!("{}/__sids/{sid}/decline", self.pg.url))
            .json(&decline)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }

    /// `sid`'s charges follow the knobs again.
    pub async fn clear_sid_decline(&self, sid: &str) {
        let resp = self
            .client
            .delete(format!("{}/__sids/{sid}/decline", self.pg.url))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }

    /// The JSON pgsim answers at `path` (one of its `/__…` routes).
    async fn pg_get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.pg.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// KakaoPay requests pgsim answered for `endpoint` (e.g. `subscription`).
    pub async fn pg_requests(&self, endpoint: &str) -> i64 {
        self.pg_get("/__stats").await["requests"][endpoint]
            .as_i64()
            .unwrap_or(0)
    }

    pub async fn ledger(&self, kind: &str) -> Vec<Value> {
        let v = self.pg_get("/__ledger").await;
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .cloned()
            .collect()
    }

    pub async fn sid_state(&self, sid: &str) -> Value {
        self.pg_get(&format!("/__sids/{sid}")).await
    }

    /// Jobs due now or running.
    async fn busy(&self) -> i64 {
        PROF_BUSY.fetch_add(1, Relaxed);
        sqlx::query_scalar(
            "SELECT count(*) FROM fang_tasks
             WHERE state = 'in_progress' OR (state IN ('new', 'retried') AND scheduled_at <= $1)",
        )
        .bind(self.clock.now())
        .fetch_one(&self.db)
        .await
        .unwrap()
    }

    /// Waits until no job is due at the current simulated time or running.
    pub async fn run_until_idle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut idle_checks = 0;
        while idle_checks < 2 {
            if self.busy().await == 0 {
                idle_checks += 1;
            } else {
                idle_checks = 0;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "jobs did not settle at {}",
                self.clock.now()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Does what autovacuum would: the test Postgres runs with `autovacuum = off` (its
    /// configuration file), so over a simulated year the hot tables fill with dead tuples
    /// every claim, poll and charge has to step over, and each simulated day ran slower
    /// than the one before: the queue's rows are inserted and deleted tens of thousands of
    /// times, `subscriptions`' 1,000 rows updated twice per charge. The simulated year calls
    /// this once a simulated week, not daily: each VACUUM updates the table's statistics in
    /// `pg_class`, which makes every session re-plan every statement on that table (and the
    /// foreign-key checks on it) at its next use. Vacuumed daily, re-planning took a quarter
    /// of the year's statement time (pg_stat_statements) and the year took 59 s, not 47 s.
    pub async fn vacuum(&self) {
        sqlx::query("VACUUM fang_tasks, subscriptions")
            .execute(&self.db)
            .await
            .unwrap();
    }

    /// Moves simulated time to `until`, stopping at every job's scheduled time on the way
    /// and letting the worker run what fell due.
    pub async fn run_until(&self, until: DateTime<Utc>) {
        loop {
            let t0 = std::time::Instant::now();
            self.run_until_idle().await;
            PROF_IDLE_US.fetch_add(t0.elapsed().as_micros() as u64, Relaxed);
            PROF_STOPS.fetch_add(1, Relaxed);
            let next: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT min(scheduled_at) FROM fang_tasks WHERE state IN ('new', 'retried')",
            )
            .fetch_one(&self.db)
            .await
            .unwrap();
            match next {
                Some(t) if t <= until => {
                    let now = self.clock.now();
                    if t > now {
                        self.set_time(t.max(now + self.granularity).min(until))
                            .await;
                    }
                }
                _ => break,
            }
        }
        if until > self.clock.now() {
            self.set_time(until).await;
        }
        self.run_until_idle().await;
    }

    pub async fn user(&self) -> UserId {
        UserId(super::fixtures::user(&self.db).await)
    }

    pub async fn item(&self, price: i64) -> i64 {
        super::fixtures::item(
            &self.db,
            &format!("루테인 {}", rand::random::<u32>()),
            price,
            0,
        )
        .await
    }

    /// A subscription as a paid subscription order creates it: the first order (paid),
    /// then the engine's own `create_from_order` with a SID registered at pgsim.
    pub async fn subscription(&self, s: NewSub) -> SubscriptionId {
        let user = s.user;
        let (id, sid) = self.subscription_unregistered(s).await;
        self.register_sids(&[(sid, user)]).await;
        id
    }

    /// [`Billing::subscription`] without registering its SID at pgsim (for batches).
    pub async fn subscription_unregistered(&self, s: NewSub) -> (SubscriptionId, String) {
        let mut tx = self.db.begin().await.unwrap();
        let order: i64 = sqlx::query_scalar(
            "INSERT INTO orders (user_id, kind, status, receiver_name, receiver_phone,
                                 receiver_city, receiver_address, total_amount, item_count,
                                 period_days, paid_at)
             VALUES ($1, 'subscription', 'paid', '홍길동', '01012345678', 'Seoul', '1 Road',
                     0, 0, $2, $3) RETURNING id",
        )
        .bind(s.user.0)
        .bind(s.period_days)
        .bind(s.paid_at)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        for (item, qty) in &s.items {
            sqlx::query(
                "INSERT INTO order_items (order_id, item_id, item_name, unit_price, quantity)
                 SELECT $1, id, title, real_price, $3 FROM items WHERE id = $2",
            )
            .bind(order)
            .bind(item)
            .bind(qty)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        let sid = format!("S{:019}", order);
        let policy = billing::subscriptions::policy(&self.ctx).unwrap();
        let id = billing::subscriptions::create_from_order(
            &mut tx,
            &policy,
            OrderId(order),
            &sid,
            s.paid_at,
        )
        .await
        .unwrap()
        .unwrap();
        tx.commit().await.unwrap();
        (id, sid)
    }

    pub async fn register_sids(&self, sids: &[(String, UserId)]) {
        let sids: Vec<(String, i64)> = sids.iter().map(|(s, u)| (s.clone(), u.0)).collect();
        super::fixtures::register_sids(&self.client, &self.pg.url, &sids).await;
    }

    pub async fn sub(&self, id: SubscriptionId) -> billing::subscriptions::Subscription {
        billing::subscriptions::get(&self.ctx, None, id)
            .await
            .unwrap()
    }

    pub async fn sid_of(&self, id: SubscriptionId) -> String {
        sqlx::query_scalar("SELECT sid FROM subscriptions WHERE id = $1")
            .bind(id.0)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }
}

impl Billing {
    /// The real API on this harness's context (and so its clock).
    pub async fn api(&self) -> super::TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = api::AppState::new(self.ctx.clone());
        tokio::spawn(api::serve(listener, state, std::future::pending()));
        super::TestApp {
            base: format!("http://{addr}"),
            client: http_client(),
            db: self.db.clone(),
            settings: self.ctx.settings.clone(),
            database_url: self.url.clone(),
        }
    }
}

/// Seoul local time as UTC (Seoul is UTC+9 all year).
pub fn kst(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap() - chrono::Duration::hours(9)
}
