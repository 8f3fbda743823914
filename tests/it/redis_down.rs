//! With Redis gone the API degrades (503 where it needs Redis) and recovers by itself;
//! the breaker in front of Redis keeps the degraded answers as fast as Postgres alone.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::redis_proc::RedisProcess;
use crate::helpers::{spawn_app_with, TestApp};

async fn wait_ready(app: &TestApp, want: StatusCode) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = app.get("/health/ready").send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "ready stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn redis_outage_degrades_to_503_and_recovers() {
    let mut redis = RedisProcess::start();
    let url = redis.url();
    let app = spawn_app_with(|s| {
        s.redis.url = url.into();
        s.redis.timeout_ms = Duration::from_millis(300);
    })
    .await;
    let user = app.signup().await;
    let tokens = app.login(&user).await;
    wait_ready(&app, StatusCode::OK).await;

    redis.stop();
    let body = wait_ready(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_ne!(body["checks"]["redis"], "ok", "{body}");
    assert_eq!(body["checks"]["postgres"], "ok", "{body}");
    // Sessions live in Postgres: logins, refreshes and token checks go on
    // (tests/it/sessions.rs covers them in depth).
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
    // The catalog reads from Postgres instead of the cache; the view is dropped, not an error.
    let item = crate::helpers::fixtures::item(&app.db, "루테인", 10_000, 10).await;
    let resp = app.get("/api/items?category=EYE").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page: Value = resp.json().await.unwrap();
    assert_eq!(page["items"][0]["id"], item);
    assert_eq!(
        app.get(&format!("/api/items/{item}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/items/main").send().await.unwrap().status(),
        StatusCode::OK
    );
    // Signup needs only Postgres and keeps working.
    assert_eq!(
        app.signup_with(&crate::helpers::signup_body())
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.get("/health/live").send().await.unwrap().status(),
        StatusCode::OK
    );

    redis.resume();
    wait_ready(&app, StatusCode::OK).await;
    // A fresh Redis lost nothing a session needs.
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
}

/// Items in EYE enough for the cached pages 1–5 and the uncached 6–10 (20 a page).
async fn seed_catalog(db: &sqlx::PgPool, n: i64) {
    sqlx::query(
        "INSERT INTO items (brand, title, main_function, origin_price, discount_rate, sales,
                            categories, created_at)
         SELECT '테스트브랜드', '루테인 ' || g, '눈 건강', 1000 * (g % 17 + 1), (g * 7) % 50,
                (g * 37) % 101, '{EYE}', now() - make_interval(mins => g::int)
         FROM generate_series(1, $1) g",
    )
    .bind(n)
    .execute(db)
    .await
    .unwrap();
}

/// One GET, which must answer 200: its latency.
async fn timed_get(app: &TestApp, path: &str) -> Duration {
    let started = Instant::now();
    let resp = app.get(path).send().await.unwrap();
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    let took = started.elapsed();
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    took
}

/// The sum of the `/metrics` samples named `name` whose labels contain all of `labels`.
async fn metric(app: &TestApp, name: &str, labels: &[&str]) -> f64 {
    let text = app.get_text("/metrics").await;
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The old behaviour waited on Redis in every cached read (0.55–1.45 s each). With the
/// breaker open every read goes straight to Postgres: each one answers well under that,
/// in about the time an uncached read takes, and the cache comes back by itself.
#[tokio::test]
async fn with_redis_stopped_cached_reads_answer_like_uncached_ones_and_the_cache_comes_back() {
    const ROUNDS: usize = 12;
    // Far below the old per-request wait, far above a Postgres page read here.
    let bound = Duration::from_millis(250);
    let mut redis = RedisProcess::start();
    let url = redis.url();
    // The SQL path's page cache (the snapshot needs no Redis to answer).
    let app = spawn_app_with(|s| {
        s.redis.url = url.into();
        s.redis.timeout_ms = Duration::from_millis(300);
        s.catalog.snapshot = false;
    })
    .await;
    seed_catalog(&app.db, 240).await;
    let item: i64 = sqlx::query_scalar("SELECT min(id) FROM items")
        .fetch_one(&app.db)
        .await
        .unwrap();
    wait_ready(&app, StatusCode::OK).await;
    let cached: Vec<String> = (1..=5)
        .map(|p| format!("/api/items?category=EYE&page={p}"))
        .chain(["/api/items/main".to_owned()])
        .collect();
    let uncached: Vec<String> = (6..=10)
        .map(|p| format!("/api/items?category=EYE&page={p}"))
        .chain(["/api/items?category=EYE&sort=price_asc".to_owned()])
        .collect();
    for path in &cached {
        timed_get(&app, path).await;
    }
    let mut kv = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pattern = format!("{}cache:items:*", app.settings.redis.prefix);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut kv)
        .await
        .unwrap();
    assert!(keys.len() >= cached.len(), "{keys:?}");

    redis.stop();
    // Readiness names Redis, and its failures open the breaker.
    let body = wait_ready(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["checks"]["postgres"], "ok", "{body}");
    assert!(
        body["checks"]["redis"]
            .as_str()
            .is_some_and(|r| r.contains("redis")),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&app, "redis_breaker_state", &[]).await != 2.0 {
        assert!(Instant::now() < deadline, "the Redis breaker did not open");
        let _ = app.get("/health/ready").send().await.unwrap();
    }
    // Pages come from Postgres; the totals are right.
    let page: Value = app
        .get("/api/items?category=EYE&page=3")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            page["total"].as_i64(),
            page["items"].as_array().map(Vec::len)
        ),
        (Some(240), Some(20))
    );
    let bypassed = metric(&app, "cache_requests_total", &[r#"result="bypass""#]).await;
    let dropped = metric(&app, "item_views_dropped_total", &[]).await;
    let half_open = [r#"to="half_open""#];
    let probes = metric(&app, "redis_breaker_transitions_total", &half_open).await;

    // Rounds over about two seconds, so the breaker's cool-down (1 s) passes and a probe
    // starts during the reads: no read may wait for it.
    let (mut cached_ms, mut uncached_ms) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for path in &cached {
            cached_ms.push(timed_get(&app, path).await);
        }
        cached_ms.push(timed_get(&app, &format!("/api/items/{item}")).await);
        for path in &uncached {
            uncached_ms.push(timed_get(&app, path).await);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        metric(&app, "redis_breaker_transitions_total", &half_open).await > probes,
        "a probe started during the reads"
    );
    let ready = Instant::now();
    let resp = app.get("/health/ready").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.elapsed() < Duration::from_secs(2));
    cached_ms.sort();
    uncached_ms.sort();
    let (c_max, u_max) = (
        cached_ms[cached_ms.len() - 1],
        uncached_ms[uncached_ms.len() - 1],
    );
    let (c_mid, u_mid) = (
        cached_ms[cached_ms.len() / 2],
        uncached_ms[uncached_ms.len() / 2],
    );
    println!(
        "Redis stopped: {} cached reads median {:.1} ms max {:.1} ms; {} uncached reads median {:.1} ms max {:.1} ms",
        cached_ms.len(),
        ms(c_mid),
        ms(c_max),
        uncached_ms.len(),
        ms(u_mid),
        ms(u_max)
    );
    assert!(
        c_max < bound,
        "a cached read took {c_max:?} with Redis stopped"
    );
    assert!(
        c_mid <= u_mid * 2 + Duration::from_millis(20),
        "cached median {c_mid:?} against uncached {u_mid:?}"
    );
    // Every cached page went to Postgres without the cache, and every view was dropped.
    let bypassed_now = metric(&app, "cache_requests_total", &[r#"result="bypass""#]).await;
    assert!(
        bypassed_now - bypassed >= (ROUNDS * cached.len()) as f64,
        "{bypassed} → {bypassed_now}"
    );
    assert_eq!(
        metric(&app, "item_views_dropped_total", &[]).await - dropped,
        ROUNDS as f64
    );
    assert!(metric(&app, "redis_calls_refused_total", &[]).await > 0.0);

    // Back without a restart: a probe closes the breaker, the pages are cached again.
    redis.resume();
    wait_ready(&app, StatusCode::OK).await;
    assert_eq!(metric(&app, "redis_breaker_state", &[]).await, 0.0);
    let mut kv = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut kv)
        .await
        .unwrap();
    assert!(keys.is_empty(), "a fresh Redis starts empty: {keys:?}");
    let page = "/api/items?category=EYE&page=2";
    let hit = [r#"cache="page""#, r#"result="hit""#];
    let hits = metric(&app, "cache_requests_total", &hit).await;
    let first = app.get_text(page).await;
    let again = app.get_text(page).await;
    assert_eq!(first, again);
    assert_eq!(
        metric(&app, "cache_requests_total", &hit).await - hits,
        1.0,
        "the second read is a cache hit"
    );
    let stored: Option<String> = redis::cmd("GET")
        .arg(format!("{}cache:items:EYE:p2", app.settings.redis.prefix))
        .query_async(&mut kv)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(first.as_str()));
    // Views are counted again.
    timed_get(&app, &format!("/api/items/{item}")).await;
    let dirty: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}views:dirty:*", app.settings.redis.prefix))
        .query_async(&mut kv)
        .await
        .unwrap();
    assert_eq!(dirty.len(), 1, "{dirty:?}");
}
