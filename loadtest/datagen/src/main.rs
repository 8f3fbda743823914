//! `pillivery-datagen`: the reference data set (DESIGN §10) — items, users, paid orders and
//! active subscriptions — generated deterministically from a seed and loaded with COPY into
//! a migrated database, in one transaction.
//!
//! Ids are computed here and written explicitly (COPY writes GENERATED ALWAYS identity
//! columns as given, like INSERT … OVERRIDING SYSTEM VALUE); the identity sequences are
//! moved past them with `setval` before the commit. `subscriptions.first_order_id` and
//! `orders.subscription_id` point at each other, so subscriptions go in first with a NULL
//! `first_order_id`, then the orders, then one UPDATE joins them — with the
//! `updated_at` trigger of `subscriptions` disabled inside the transaction for that
//! statement, so `updated_at` stays the generated value rather than the wall clock.

mod copy;
mod gen;
mod words;

use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use chrono::{DateTime, NaiveDate, Utc};
use clap::Parser;
use rand::Rng;
use sqlx::{Connection, PgConnection};

use crate::copy::{copy_in, Rows};
use crate::gen::{Data, Sizes};

#[derive(Debug, Parser)]
#[command(
    name = "pillivery-datagen",
    about = "Generate the reference data set (items, users, paid orders, active subscriptions) \
             deterministically and load it into a migrated database with COPY"
)]
struct Args {
    /// Same seed (and same --now) → byte-identical data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// A migrated Pillivery database.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long, default_value_t = 40_000)]
    items: usize,
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Paid orders in all, the subscriptions' first orders included.
    #[arg(long, default_value_t = 100_000)]
    orders: usize,
    /// Active subscriptions, due over the next 30 days.
    #[arg(long, default_value_t = 20_000)]
    subscriptions: usize,
    /// The reference "now" every generated time is relative to: `YYYY-MM-DD` (00:00 UTC)
    /// or RFC 3339. Default: today at 00:00 UTC.
    #[arg(long)]
    now: Option<String>,
    /// The one password every generated user has.
    #[arg(long, default_value = "Test1234!")]
    password: String,
    /// Empty users, items, orders, subscriptions (and every table referencing them,
    /// CASCADE) first, in the same transaction as the load.
    #[arg(long)]
    truncate: bool,
}

fn parse_now(now: Option<&str>) -> anyhow::Result<i64> {
    let Some(s) = now else {
        let today = Utc::now().date_naive();
        return Ok(today.and_time(chrono::NaiveTime::MIN).and_utc().timestamp());
    };
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp())
        .map_err(|e| anyhow!("--now {s:?}: expected YYYY-MM-DD or RFC 3339 ({e})"))
}

/// argon2 with the application's parameters (`Argon2::default()`, as in
/// `billing::passwords`) but a salt drawn from the seed, so the hash is reproducible too.
/// Computed once; every user row shares it.
fn password_hash(seed: u64, password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    gen::stream(seed, gen::STREAM_PASSWORD).fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow!("argon2: {e}"))
}

fn fmt_time(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| secs.to_string())
}

struct Timer {
    started: Instant,
}

impl Timer {
    fn start() -> Self {
        Self {
            started: Instant::now(),
        }
    }
    fn report(&mut self, what: &str, rows: u64) {
        let secs = self.started.elapsed().as_secs_f64();
        println!("  {what:<34} {rows:>8} rows {secs:>7.2} s");
        self.started = Instant::now();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let now = parse_now(args.now.as_deref())?;
    let sizes = Sizes {
        items: args.items,
        users: args.users,
        orders: args.orders,
        subscriptions: args.subscriptions,
    };
    if sizes.subscriptions > sizes.orders {
        bail!(
            "--orders ({}) counts the subscriptions' first orders, so it must be at least --subscriptions ({})",
            sizes.orders,
            sizes.subscriptions
        );
    }
    if sizes.orders > 0 && (sizes.items == 0 || sizes.users == 0) {
        bail!("orders and subscriptions need at least one item and one user");
    }
    println!(
        "pillivery-datagen: seed={} now={} items={} users={} orders={} subscriptions={}",
        args.seed,
        fmt_time(now),
        sizes.items,
        sizes.users,
        sizes.orders,
        sizes.subscriptions
    );

    billing::install_crypto_provider();
    let mut conn = PgConnection::connect(&args.database_url)
        .await
        .context("connecting to --database-url")?;
    check_empty(&mut conn, args.truncate).await?;

    let mut timer = Timer::start();
    let data = gen::generate(args.seed, sizes, now);
    timer.report("generate (in memory)", 0);
    println!(
        "  generated: order_items={} subscription_items={}",
        data.order_item_count(),
        data.subscription_item_count()
    );
    let hash = password_hash(args.seed, &args.password)?;
    timer.report("argon2 hash (once)", 1);
    print_categories(&data);

    load(&mut conn, &data, &hash, args.truncate).await?;

    let mut timer = Timer::start();
    sqlx::raw_sql("ANALYZE items, users, orders, order_items, subscriptions, subscription_items")
        .execute(&mut conn)
        .await
        .context("ANALYZE")?;
    timer.report("analyze", 0);

    // The known password opens the first account, checked the way login checks it.
    if let Some(user) = data.users.first() {
        let stored: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
            .bind(user.id)
            .fetch_one(&mut conn)
            .await?;
        if !billing::passwords::verify(args.password.clone(), stored).await? {
            bail!("the stored password hash does not verify");
        }
        println!("  login check: {} / {} verifies", user.email, args.password);
    }
    conn.close().await?;

    println!(
        "RESULT items={} users={} orders={} order_items={} subscriptions={} seconds={:.1}",
        data.items.len(),
        data.users.len(),
        data.orders.len(),
        data.order_item_count(),
        data.subscriptions.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn check_empty(conn: &mut PgConnection, truncate: bool) -> anyhow::Result<()> {
    let counts: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM users),
                (SELECT count(*) FROM orders), (SELECT count(*) FROM subscriptions)",
    )
    .fetch_one(&mut *conn)
    .await
    .context("reading items/users/orders/subscriptions — is the database migrated?")?;
    let (items, users, orders, subscriptions) = counts;
    if items + users + orders + subscriptions > 0 && !truncate {
        bail!(
            "the database already has data (items={items}, users={users}, orders={orders}, \
             subscriptions={subscriptions}); refusing to load over it. Pass --truncate to \
             empty users, items, orders, subscriptions and everything that references them \
             (TRUNCATE … CASCADE) first."
        );
    }
    Ok(())
}

fn print_categories(data: &Data) {
    let mut line = String::from("  categories:");
    for c in billing::items::Category::ALL {
        let n = data
            .items
            .iter()
            .filter(|i| i.categories.contains(&c.as_str()))
            .count();
        line.push_str(&format!(" {}={n}", c.as_str()));
    }
    let several = data.items.iter().filter(|i| i.categories.len() > 1).count();
    line.push_str(&format!(" (several: {several})"));
    println!("{line}");
}

async fn load(
    conn: &mut PgConnection,
    data: &Data,
    password_hash: &str,
    truncate: bool,
) -> anyhow::Result<()> {
    let mut tx = conn.begin().await?;
    let mut timer = Timer::start();
    if truncate {
        sqlx::raw_sql(
            "TRUNCATE users, items, orders, order_items, subscriptions, subscription_items, \
             carts, cart_items, reviews, item_view_days RESTART IDENTITY CASCADE",
        )
        .execute(&mut *tx)
        .await
        .context("TRUNCATE")?;
        timer.report("truncate", 0);
    }

    let n = copy_in(
        &mut tx,
        "COPY items (id, brand, title, description, main_function, intake, precautions, \
         serving_use, preservation, distribution_period, standard, capacity, thumbnail_url, \
         description_image_url, origin_price, discount_rate, categories, selling, sales, \
         view_count, deleted_at, created_at, updated_at) FROM STDIN",
        &data.items,
        |r: &mut Rows, i| {
            r.int(i.id)
                .text(&i.brand)
                .text(&i.title)
                .text(&i.description)
                .text(&i.main_function)
                .text(&i.intake)
                .text(&i.precautions)
                .text(&i.serving_use)
                .text(&i.preservation)
                .text(&i.distribution_period)
                .text(&i.standard)
                .text(&i.capacity)
                .text(&i.thumbnail_url)
                .text(&i.description_image_url)
                .int(i.origin_price)
                .int(i64::from(i.discount_rate))
                .words(&i.categories)
                .bool(i.selling)
                .int(i.sales)
                .int(i.view_count)
                .opt_ts(i.deleted_at)
                .ts(i.created_at)
                .ts(i.updated_at)
                .end();
        },
    )
    .await
    .context("COPY items")?;
    timer.report("items", n);

    let n = copy_in(
        &mut tx,
        "COPY users (id, email, password_hash, display_name, real_name, phone, city, \
         detail_address, role, status, created_at, updated_at) FROM STDIN",
        &data.users,
        |r: &mut Rows, u| {
            r.int(u.id)
                .text(&u.email)
                .text(password_hash)
                .text(&u.display_name)
                .text(&u.real_name)
                .text(&u.phone)
                .text(&u.city)
                .text(&u.detail_address)
                .text("user")
                .text("active")
                .ts(u.created_at)
                .ts(u.created_at)
                .end();
        },
    )
    .await
    .context("COPY users")?;
    timer.report("users", n);

    let n = copy_in(
        &mut tx,
        "COPY subscriptions (id, user_id, status, period_days, sid, anchor_at, next_charge_at, \
         current_cycle, last_charged_at, created_at, updated_at) FROM STDIN",
        &data.subscriptions,
        |r: &mut Rows, s| {
            r.int(s.id)
                .int(i64::from(s.user) + 1)
                .text("active")
                .int(i64::from(s.period_days))
                .text(&s.sid)
                .ts(s.anchor_at)
                .ts(s.next_charge_at)
                .int(i64::from(s.current_cycle))
                .ts(s.last_charged_at)
                .ts(s.anchor_at)
                .ts(s.last_charged_at)
                .end();
        },
    )
    .await
    .context("COPY subscriptions")?;
    timer.report("subscriptions", n);

    let n = copy_in(
        &mut tx,
        "COPY subscription_items (subscription_id, item_id, quantity, created_at, updated_at) \
         FROM STDIN",
        data.subscriptions
            .iter()
            .flat_map(|s| s.lines.iter().map(move |l| (s, l))),
        |r: &mut Rows, (s, l)| {
            r.int(s.id)
                .int(i64::from(l.item) + 1)
                .int(i64::from(l.quantity))
                .ts(s.anchor_at)
                .ts(s.anchor_at)
                .end();
        },
    )
    .await
    .context("COPY subscription_items")?;
    timer.report("subscription_items", n);

    let n = copy_in(
        &mut tx,
        "COPY orders (id, user_id, kind, status, receiver_name, receiver_phone, receiver_city, \
         receiver_address, total_amount, total_discount, item_count, period_days, \
         subscription_id, cycle, paid_at, created_at, updated_at) FROM STDIN",
        &data.orders,
        |r: &mut Rows, o| {
            let user = &data.users[o.user as usize];
            let (mut amount, mut discount, mut count) = (0i64, 0i64, 0i64);
            for l in &o.lines {
                let item = &data.items[l.item as usize];
                let q = i64::from(l.quantity);
                amount += item.unit_price() * q;
                discount += item.unit_discount() * q;
                count += q;
            }
            r.int(o.id)
                .int(user.id)
                .text(if o.subscription_id.is_some() {
                    "subscription"
                } else {
                    "one_time"
                })
                .text("paid")
                .text(&user.real_name)
                .text(&user.phone)
                .text(&user.city)
                .text(&user.detail_address)
                .int(amount)
                .int(discount)
                .int(count)
                .opt_int(o.period_days.map(i64::from))
                .opt_int(o.subscription_id)
                .opt_int(o.subscription_id.map(|_| 1))
                .ts(o.paid_at)
                .ts(o.created_at)
                .ts(o.paid_at)
                .end();
        },
    )
    .await
    .context("COPY orders")?;
    timer.report("orders", n);

    let mut line_id = 0i64;
    let n = copy_in(
        &mut tx,
        "COPY order_items (id, order_id, item_id, item_name, unit_price, unit_discount, \
         quantity, created_at, updated_at) FROM STDIN",
        data.orders
            .iter()
            .flat_map(|o| o.lines.iter().map(move |l| (o, l))),
        |r: &mut Rows, (o, l)| {
            line_id += 1;
            let item = &data.items[l.item as usize];
            r.int(line_id)
                .int(o.id)
                .int(item.id)
                .text(&item.title)
                .int(item.unit_price())
                .int(item.unit_discount())
                .int(i64::from(l.quantity))
                .ts(o.created_at)
                .ts(o.created_at)
                .end();
        },
    )
    .await
    .context("COPY order_items")?;
    timer.report("order_items", n);

    // Close the subscriptions ⇄ orders cycle. The trigger would stamp updated_at with the
    // transaction's clock; it is off for this one statement only, inside the transaction.
    sqlx::raw_sql("ALTER TABLE subscriptions DISABLE TRIGGER subscriptions_set_updated_at")
        .execute(&mut *tx)
        .await
        .context("disabling subscriptions_set_updated_at")?;
    let linked = sqlx::query(
        "UPDATE subscriptions s SET first_order_id = o.id FROM orders o \
         WHERE o.subscription_id = s.id AND o.cycle = 1",
    )
    .execute(&mut *tx)
    .await
    .context("linking subscriptions.first_order_id")?
    .rows_affected();
    sqlx::raw_sql("ALTER TABLE subscriptions ENABLE TRIGGER subscriptions_set_updated_at")
        .execute(&mut *tx)
        .await?;
    if linked != data.subscriptions.len() as u64 {
        bail!(
            "linked {linked} subscriptions to their first order, expected {}",
            data.subscriptions.len()
        );
    }
    timer.report("subscriptions.first_order_id", linked);

    // Identity sequences continue after the explicit ids.
    for table in ["items", "users", "orders", "order_items", "subscriptions"] {
        sqlx::raw_sql(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
             COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
        ))
        .execute(&mut *tx)
        .await
        .with_context(|| format!("setval for {table}"))?;
    }
    tx.commit().await.context("COMMIT")?;
    timer.report("setval + commit", 0);
    Ok(())
}
