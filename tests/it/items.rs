//! The catalog: admin writes and import, listing filters/sorts/paging, the page cache,
//! unique views and their flush.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{
    error_fields, expect_error, page_ids as ids, spawn_app, spawn_app_with, TestApp,
};

fn item_body(title: &str, origin: i64, rate: i32, main_function: &str) -> Value {
    json!({
        "brand": "닥터필", "title": title, "main_function": main_function,
        "origin_price": origin, "discount_rate": rate,
        "intake": "1일 1회", "thumbnail_url": "https://cdn.example.com/a.png"
    })
}

/// `n` items with spread-out, deterministic prices, discounts, sales and categories.
async fn seed_items(db: &PgPool, n: i64) {
    sqlx::query(
        "INSERT INTO items (brand, title, main_function, origin_price, discount_rate, sales,
                            review_count, categories, created_at)
         SELECT CASE WHEN g % 3 = 0 THEN '종근당' WHEN g % 3 = 1 THEN '뉴트리원' ELSE 'GNC' END,
                '상품 ' || g || CASE WHEN g % 10 = 0 THEN ' 루테인' ELSE '' END,
                CASE WHEN g % 4 = 0 THEN '눈 건강' WHEN g % 4 = 1 THEN '눈과 피부 건강'
                     ELSE '면역력' END,
                1000 * (g % 17 + 1), (g * 7) % 50, (g * 37) % 23, g % 5,
                CASE WHEN g % 4 = 0 THEN '{EYE}'::text[] WHEN g % 4 = 1 THEN '{EYE,SKIN}'
                     ELSE '{ETC}' END,
                now() - make_interval(hours => ((g * 13) % 29)::int)
         FROM generate_series(1, $1) g",
    )
    .bind(n)
    .execute(db)
    .await
    .unwrap();
}

async fn list(app: &TestApp, query: &str) -> Value {
    let resp = app
        .get(&format!("/api/items?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{query}");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn admins_write_items_with_derived_prices_and_categories() {
    let app = spawn_app().await;
    let (_, admin) = app.admin().await;
    let post = |body: Value| {
        app.post_json("/api/admin/items", &body)
            .bearer_auth(&admin.access)
            .send()
    };
    let resp = post(item_body("루테인 30정", 9_990, 15, "눈과 피부 건강에 도움"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let item: Value = resp.json().await.unwrap();
    assert_eq!(item["discount_price"], 1_499); // 1498.5 rounds half up
    assert_eq!(item["real_price"], 8_491);
    assert_eq!(item["categories"], json!(["EYE", "SKIN"]));
    assert_eq!(item["selling"], true);
    let id = item["id"].as_i64().unwrap();

    let mut bad = item_body("x", 1000, 91, "간");
    bad.as_object_mut().unwrap().remove("origin_price");
    let err = expect_error(
        post(bad).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(error_fields(&err), vec!["origin_price", "discount_rate"]);

    let patch = |body: Value| {
        app.request(Method::PATCH, &format!("/api/admin/items/{id}"))
            .bearer_auth(&admin.access)
            .json(&body)
            .send()
    };
    let updated: Value = patch(json!({"discount_rate": 50, "main_function": "면역력"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(updated["real_price"], 4_995);
    assert_eq!(updated["categories"], json!(["ETC"]));
    assert_eq!(updated["title"], "루테인 30정");
    expect_error(
        patch(json!({"origin_price": -1})).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    // Customers may not write the catalog.
    let user = app.signup().await;
    let t = app.login(&user).await;
    let resp = app
        .post_json("/api/admin/items", &item_body("x", 1000, 0, "간"))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;

    let del = || {
        app.request(Method::DELETE, &format!("/api/admin/items/{id}"))
            .bearer_auth(&admin.access)
            .send()
    };
    assert_eq!(del().await.unwrap().status(), StatusCode::NO_CONTENT);
    expect_error(del().await.unwrap(), StatusCode::NOT_FOUND, "not_found").await;
    expect_error(
        app.get(&format!("/api/items/{id}")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn bulk_import_takes_json_lines_and_csv_and_rejects_a_bad_file_whole() {
    let app = spawn_app().await;
    let (_, admin) = app.admin().await;
    let import = |content_type: &'static str, body: String| {
        app.request(Method::POST, "/api/admin/items/import")
            .bearer_auth(&admin.access)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let lines = [
        item_body("오메가3", 20_000, 10, "혈액순환").to_string(),
        item_body("밀크씨슬", 15_000, 0, "간 건강").to_string(),
        item_body("유산균", 30_000, 30, "장 건강").to_string(),
    ]
    .join("\n");
    let resp = import("application/x-ndjson", lines).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["inserted"], 3);

    let bad = [
        item_body("좋음", 1_000, 0, "눈").to_string(),
        json!({"brand": "b", "title": "t", "main_function": "눈", "discount_rate": 95}).to_string(),
    ]
    .join("\n");
    let err = expect_error(
        import("application/x-ndjson", bad).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(
        error_fields(&err),
        vec!["line 2: origin_price", "line 2: discount_rate"]
    );

    let csv = "brand,title,main_function,origin_price,discount_rate\n\
               종근당,루테인 골드,눈 건강,12000,20\n\
               GNC,비타민C,항산화,8000,0\n"
        .to_owned();
    let resp = import("text/csv", csv).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    expect_error(
        import("text/plain", "x".into()).await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let titles: Vec<(String, i64, Vec<String>)> =
        sqlx::query_as("SELECT title, real_price, categories FROM items ORDER BY id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(titles.len(), 5, "the rejected file wrote nothing");
    assert_eq!(titles[3], ("루테인 골드".into(), 9_600, vec!["EYE".into()]));
}

#[tokio::test]
async fn listing_filters_sorts_and_pages_with_ties_by_id() {
    let app = spawn_app().await;
    seed_items(&app.db, 130).await;
    type Row = (
        i64,
        i64,
        i32,
        i64,
        i32,
        chrono::DateTime<chrono::Utc>,
        String,
        String,
        Vec<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, real_price, discount_rate, sales, review_count, created_at, title, brand,
                categories FROM items",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();

    // Every sort, compared with the same order computed here; all 130 on one page.
    let sorted = |key: &dyn Fn(&Row) -> (i128, i64)| {
        let mut r = rows.clone();
        r.sort_by_key(|row| key(row));
        r.iter().map(|row| row.0).collect::<Vec<_>>()
    };
    let cases: Vec<(&str, Vec<i64>)> = vec![
        ("sales", sorted(&|r| (-(r.3 as i128), r.0))),
        ("price_desc", sorted(&|r| (-(r.1 as i128), r.0))),
        ("price_asc", sorted(&|r| (r.1 as i128, r.0))),
        ("discount_desc", sorted(&|r| (-(r.2 as i128), r.0))),
        ("discount_asc", sorted(&|r| (r.2 as i128, r.0))),
        ("reviews", sorted(&|r| (-(r.4 as i128), r.0))),
        (
            "newest",
            sorted(&|r| (-(r.5.timestamp_micros() as i128), r.0)),
        ),
    ];
    for (sort, want) in &cases {
        let page = list(&app, &format!("sort={sort}&size=100")).await;
        let mut got = ids(&page);
        got.extend(ids(
            &list(&app, &format!("sort={sort}&size=100&page=2")).await
        ));
        assert_eq!(&got, want, "sort {sort}");
        assert_eq!(page["total"], 130);
    }
    // Default sort is sales; pages of 20 concatenate to the full order, page 6 included.
    let mut paged = Vec::new();
    for p in 1..=7 {
        let page = list(&app, &format!("page={p}")).await;
        assert_eq!(page["page"], p);
        assert_eq!(page["size"], 20);
        paged.extend(ids(&page));
    }
    assert_eq!(paged, cases[0].1);
    assert!(ids(&list(&app, "page=8").await).is_empty());

    // Filters, each checked against the rows.
    let count = |f: &dyn Fn(&Row) -> bool| rows.iter().filter(|r| f(r)).count() as i64;
    let filters: Vec<(&str, i64)> = vec![
        ("category=eye", count(&|r| r.8.contains(&"EYE".to_owned()))),
        (
            "category=SKIN",
            count(&|r| r.8.contains(&"SKIN".to_owned())),
        ),
        (
            "keyword=%EB%A3%A8%ED%85%8C%EC%9D%B8",
            count(&|r| r.6.contains("루테인")),
        ),
        ("keyword=gnc", count(&|r| r.7 == "GNC")),
        // Two characters go through the bigram index: 루테 (of 루테인), 근당 (of 종근당).
        (
            "keyword=%EB%A3%A8%ED%85%8C",
            count(&|r| r.6.contains("루테")),
        ),
        ("keyword=%EA%B7%BC%EB%8B%B9", count(&|r| r.7 == "종근당")),
        (
            "brand=%EC%A2%85%EA%B7%BC%EB%8B%B9",
            count(&|r| r.7 == "종근당"),
        ),
        (
            "min_price=5000&max_price=9000",
            count(&|r| (5000..=9000).contains(&r.1)),
        ),
        ("on_sale=true", count(&|r| r.2 > 0)),
        ("on_sale=false", count(&|r| r.2 == 0)),
        (
            "category=EYE&on_sale=true&max_price=10000",
            count(&|r| r.8.contains(&"EYE".to_owned()) && r.2 > 0 && r.1 <= 10000),
        ),
    ];
    for (query, want) in filters {
        let page = list(&app, &format!("{query}&size=100")).await;
        assert_eq!(page["total"], want, "{query}");
        assert!(
            want > 0,
            "{query} matches nothing; the test data is too thin"
        );
    }

    // Boundaries.
    for (query, field) in [
        ("page=0", "page"),
        ("size=101", "size"),
        ("size=0", "size"),
        ("min_price=9000&max_price=5000", "min_price"),
        ("category=VITAMIN", "category"),
        ("sort=cheapest", "sort"),
        ("keyword=a", "keyword"),
    ] {
        let resp = app
            .get(&format!("/api/items?{query}"))
            .send()
            .await
            .unwrap();
        let err = expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(error_fields(&err), vec![field], "{query}");
    }
    let resp = app.get("/api/items?min_price=abc").send().await.unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "malformed_request").await;
}

#[tokio::test]
async fn the_main_page_has_the_top_nine_by_sales_and_by_discount() {
    let app = spawn_app().await;
    seed_items(&app.db, 40).await;
    let main: Value = app
        .get("/api/items/main")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let top = |order: &str| {
        let db = app.db.clone();
        let sql = format!(
            "SELECT id FROM items WHERE selling AND deleted_at IS NULL ORDER BY {order}, id LIMIT 9"
        );
        async move {
            sqlx::query_scalar::<_, i64>(&sql)
                .fetch_all(&db)
                .await
                .unwrap()
        }
    };
    let ids_of = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids_of(&main["best_sellers"]), top("sales DESC").await);
    assert_eq!(
        ids_of(&main["best_discounts"]),
        top("discount_rate DESC").await
    );
}

/// Makes the test database refuse the app's connections (cached answers must not need it).
/// Renames item `id` through the admin API; the item as answered.
async fn rename(app: &TestApp, admin: &str, id: i64, title: &str) -> Value {
    let resp = app
        .request(Method::PATCH, &format!("/api/admin/items/{id}"))
        .bearer_auth(admin)
        .json(&json!({ "title": title }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

async fn cut_database(app: &TestApp, allow: bool) {
    let admin = sqlx::PgPool::connect(&crate::helpers::db::admin_url())
        .await
        .unwrap();
    let name = app.database_url.rsplit('/').next().unwrap().to_owned();
    sqlx::query(&format!(
        r#"ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {allow}"#
    ))
    .execute(&admin)
    .await
    .unwrap();
    if !allow {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'pillivery'",
        )
        .bind(&name)
        .execute(&admin)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn cached_pages_are_served_without_postgres_and_item_writes_invalidate_them() {
    // The SQL path's Redis page cache (the snapshot, on by default, answers every listing
    // from memory; see the snapshot tests below).
    let app = spawn_app_with(|s| {
        s.database.acquire_timeout_ms = std::time::Duration::from_millis(500);
        s.catalog.snapshot = false;
    })
    .await;
    seed_items(&app.db, 130).await;
    let (_, admin) = app.admin().await;
    let first = list(&app, "category=EYE").await;
    let fifth = list(&app, "category=EYE&page=3").await;
    let main: Value = app
        .get("/api/items/main")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    cut_database(&app, false).await;
    assert_eq!(list(&app, "category=EYE").await, first);
    assert_eq!(list(&app, "category=EYE&page=3").await, fifth);
    let again: Value = app
        .get("/api/items/main")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, main);
    // Not cached: page 6, another sort, a keyword.
    for query in [
        "category=EYE&page=6",
        "category=EYE&sort=newest",
        "keyword=xyz",
    ] {
        let resp = app
            .get(&format!("/api/items?{query}"))
            .send()
            .await
            .unwrap();
        expect_error(
            resp,
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency_unavailable",
        )
        .await;
    }
    cut_database(&app, true).await;

    // Renaming the first item on the cached page shows at once.
    let top = first["items"][0]["id"].as_i64().unwrap();
    let patched = rename(&app, &admin.access, top, "새 이름").await;
    assert_eq!(patched["title"], "새 이름");
    assert_eq!(patched["id"], top);
    let after = list(&app, "category=EYE").await;
    assert_eq!(after["items"][0]["title"], "새 이름");
    // Totals are cached too, and dropped with the pages.
    let resp = app
        .post_json(
            "/api/admin/items",
            &item_body("새 루테인", 1_000, 0, "눈 건강"),
        )
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let grown = list(&app, "category=EYE&page=9").await;
    assert_eq!(grown["total"], first["total"].as_i64().unwrap() + 1);
    let main: Value = app
        .get("/api/items/main")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The main page was dropped too: it matches the database again.
    let titles: Vec<String> = sqlx::query_scalar(
        "SELECT title FROM items WHERE selling AND deleted_at IS NULL ORDER BY sales DESC, id LIMIT 9",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let shown: Vec<String> = main["best_sellers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(shown, titles);
    assert!(
        titles.contains(&"새 이름".to_owned()),
        "the renamed item is a best seller"
    );
}

async fn main_page(app: &TestApp) -> Value {
    let resp = app.get("/api/items/main").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_snapshot_answers_every_filter_sort_and_page_size_as_postgres_does() {
    let app = spawn_app().await;
    seed_items(&app.db, 240).await;
    // Mixed case and text across title and brand, for the case-insensitive keyword.
    sqlx::query(
        "INSERT INTO items (brand, title, main_function, origin_price, discount_rate, sales,
                            categories)
         VALUES ('NOW Foods', 'Lutein 20mg', '눈', 9000, 10, 4, '{EYE}'),
                ('now foods', '루테인 LUTEIN 골드', '눈', 12000, 0, 4, '{EYE}'),
                ('Solgar', '비타민D', '뼈', 7000, 5, 2, '{BONE}')",
    )
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("UPDATE items SET selling = false WHERE id % 50 = 7")
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("UPDATE items SET deleted_at = now() WHERE id % 50 = 9")
        .execute(&app.db)
        .await
        .unwrap();
    // A second API process of the same store answering from Postgres.
    let sql = crate::helpers::spawn_app_on(app.database_url.clone(), |s| {
        s.catalog.snapshot = false;
    })
    .await;

    let filters = [
        "",
        "category=EYE",
        "category=skin",
        "category=ETC&on_sale=true",
        "keyword=루테인",
        "keyword=테인",
        "keyword=lutein",
        "keyword=w%20f",
        "keyword=상품%2012",
        "keyword=zzz",
        "keyword=%25%25",
        "brand=GNC",
        "brand=now%20foods&keyword=gold",
        "min_price=5000&max_price=9000",
        "on_sale=false&category=EYE",
        "keyword=상품&min_price=3000&on_sale=true&category=EYE",
    ];
    let sorts = [
        "sales",
        "price_desc",
        "price_asc",
        "discount_desc",
        "discount_asc",
        "reviews",
        "newest",
    ];
    let mut compared = 0;
    for filter in filters {
        for sort in sorts {
            for paging in [
                "page=1&size=20",
                "page=2&size=8",
                "page=3&size=7",
                "page=50&size=8",
            ] {
                let query = format!("{filter}&sort={sort}&{paging}");
                let (ours, theirs) = (list(&app, &query).await, list(&sql, &query).await);
                assert_eq!(ours, theirs, "{query}");
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 16 * 7 * 4);
    // The checks were not vacuous: keyword pages had matches to page through.
    let lutein = list(&app, "keyword=lutein&size=100").await;
    assert_eq!(lutein["total"], 2, "{lutein}");
    assert!(list(&app, "keyword=상품").await["total"].as_i64().unwrap() > 200);
    assert_eq!(main_page(&app).await, main_page(&sql).await);
}

#[tokio::test]
async fn the_snapshot_follows_item_writes_in_every_process_and_answers_without_postgres() {
    let app =
        spawn_app_with(|s| s.database.acquire_timeout_ms = std::time::Duration::from_millis(500))
            .await;
    seed_items(&app.db, 60).await;
    let prefix = app.settings.redis.prefix.clone();
    let other = crate::helpers::spawn_app_on(app.database_url.clone(), |s| {
        s.redis.prefix = prefix;
        s.database.acquire_timeout_ms = std::time::Duration::from_millis(500);
    })
    .await;
    let (_, admin) = app.admin().await;
    let before = list(&other, "keyword=루테인&size=8").await;
    let top = before["items"][0]["id"].as_i64().unwrap();
    assert_eq!(list(&app, "keyword=루테인&size=8").await, before);

    // A write through one process shows at once in the other's snapshot.
    rename(&app, &admin.access, top, "새 루테인 골드").await;
    let after = list(&other, "keyword=루테인&size=8").await;
    assert_eq!(after["items"][0]["title"], "새 루테인 골드");
    assert_eq!(after["total"], before["total"]);
    let resp = app
        .request(Method::DELETE, &format!("/api/admin/items/{top}"))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let gone = list(&other, "keyword=루테인&size=8").await;
    assert_eq!(gone["total"], before["total"].as_i64().unwrap() - 1);
    assert!(!ids(&gone).contains(&top));

    // Without Postgres, any listing is still answered from the snapshot.
    let queries = [
        "keyword=루테인&size=8",
        "category=EYE&page=6&size=8",
        "sort=newest&on_sale=true",
        "brand=GNC&size=100",
    ];
    let mut answers = Vec::new();
    for q in queries {
        answers.push(list(&other, q).await);
    }
    let main = main_page(&other).await;
    cut_database(&other, false).await;
    for (q, answer) in queries.iter().zip(&answers) {
        assert_eq!(&list(&other, q).await, answer, "{q}");
    }
    assert_eq!(main_page(&other).await, main);
    cut_database(&other, true).await;
}

async fn view(app: &TestApp, id: i64, ip: &str) {
    let resp = app
        .get(&format!("/api/items/{id}"))
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

async fn view_count(db: &PgPool, id: i64) -> i64 {
    sqlx::query_scalar("SELECT view_count FROM items WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn unique_views_count_once_per_ip_per_day_and_flushes_never_double_count() {
    let app = spawn_app_with(|s| s.api.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let a = crate::helpers::fixtures::item(&app.db, "루테인", 10_000, 0).await;
    let b = crate::helpers::fixtures::item(&app.db, "비타민", 10_000, 0).await;
    view(&app, a, "198.51.100.1").await;
    view(&app, a, "198.51.100.1").await;
    view(&app, b, "198.51.100.1").await;
    view(&app, b, "198.51.100.2").await;

    let ctx = app.ctx();
    // A flusher reads the counts and dies before committing: nothing is added...
    let today = billing::items::store_day(&ctx);
    let read = billing::items::read_view_counts(&ctx, today).await.unwrap();
    assert_eq!(read, vec![(a, 1), (b, 2)]);
    {
        let mut tx = app.db.begin().await.unwrap();
        billing::items::apply_view_counts(&mut tx, today, &read, ctx.clock.now())
            .await
            .unwrap();
        tx.rollback().await.unwrap();
    }
    assert_eq!(
        (view_count(&app.db, a).await, view_count(&app.db, b).await),
        (0, 0)
    );
    // ...the next flush adds each view once, and flushing again adds nothing.
    assert_eq!(billing::items::flush_views(&ctx).await.unwrap(), 3);
    assert_eq!(billing::items::flush_views(&ctx).await.unwrap(), 0);
    let mut conn = app.db.acquire().await.unwrap();
    assert_eq!(
        billing::items::apply_view_counts(&mut conn, today, &read, ctx.clock.now())
            .await
            .unwrap(),
        0,
        "re-applying counts already added adds nothing"
    );
    assert_eq!(
        (view_count(&app.db, a).await, view_count(&app.db, b).await),
        (1, 2)
    );

    // New views later the same day add only the growth, never overwrite.
    sqlx::query("UPDATE items SET view_count = view_count + 100 WHERE id = $1")
        .bind(a)
        .execute(&app.db)
        .await
        .unwrap();
    view(&app, a, "198.51.100.3").await;
    view(&app, a, "198.51.100.1").await;
    assert_eq!(billing::items::flush_views(&ctx).await.unwrap(), 1);
    assert_eq!(view_count(&app.db, a).await, 102);
}

async fn sales_of(db: &PgPool, id: i64) -> i64 {
    sqlx::query_scalar("SELECT sales FROM items WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_paid_orders_sales_are_counted_once_and_folded_once_even_by_two_folds_at_once() {
    let app = spawn_app().await;
    let ctx = app.ctx();
    let fx = crate::helpers::fixtures::item;
    let (a, b) = (
        fx(&app.db, "루테인", 10_000, 0).await,
        fx(&app.db, "오메가3", 20_000, 0).await,
    );
    let user = crate::helpers::fixtures::user(&app.db).await;
    let first = crate::helpers::fixtures::paid_order(&app.db, user, a, 2).await;
    let second = crate::helpers::fixtures::paid_order(&app.db, user, b, 3).await;

    // Counting is once per order however often it is asked (a job re-run, an old
    // `orders.count_sales` row beside the paying transaction's own count).
    for id in [first, first, second] {
        billing::orders::count_sales(&ctx, billing::ids::OrderId(id))
            .await
            .unwrap();
    }
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM item_sales_deltas")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(pending, 2);
    // Counted, not yet folded: the item rows are untouched until the fold.
    assert_eq!(
        (sales_of(&app.db, a).await, sales_of(&app.db, b).await),
        (0, 0)
    );

    // Two folds at once add each delta exactly once between them.
    let (x, y) = tokio::join!(
        billing::items::fold_sales(&ctx),
        billing::items::fold_sales(&ctx)
    );
    assert_eq!(x.unwrap() + y.unwrap(), 5);
    assert_eq!(
        (sales_of(&app.db, a).await, sales_of(&app.db, b).await),
        (2, 3)
    );
    assert_eq!(billing::items::fold_sales(&ctx).await.unwrap(), 0);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM item_sales_deltas")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_fold_works_off_a_burst_in_short_statements() {
    let app = spawn_app().await;
    let ctx = app.ctx();
    seed_items(&app.db, 3).await;
    // A billing-day burst's deltas: 2.5 fold statements' worth over three items.
    let deltas = billing::items::FOLD_BATCH * 5 / 2;
    sqlx::query(
        "INSERT INTO item_sales_deltas (item_id, order_id, quantity, created_at, updated_at)
         SELECT (SELECT min(id) FROM items) + g % 3, g, 1 + g % 2, now(), now()
         FROM generate_series(1, $1) g",
    )
    .bind(deltas)
    .execute(&app.db)
    .await
    .unwrap();
    let total = || async {
        sqlx::query_scalar::<_, i64>("SELECT sum(sales)::bigint FROM items")
            .fetch_one(&app.db)
            .await
            .unwrap()
    };
    let left = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM item_sales_deltas")
            .fetch_one(&app.db)
            .await
            .unwrap()
    };
    let before = total().await;
    // One statement takes one batch, however many are waiting.
    let mut conn = app.db.acquire().await.unwrap();
    let first = billing::items::fold_sales_on(&mut conn, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(left().await, deltas - billing::items::FOLD_BATCH);
    // A run works off the rest, statement after statement.
    let rest = billing::items::fold_sales(&ctx).await.unwrap();
    let units: i64 = (1..=deltas).map(|g| 1 + g % 2).sum();
    assert_eq!(first + rest, units);
    assert_eq!(total().await - before, units);
    assert_eq!(left().await, 0);
    assert_eq!(billing::items::fold_sales(&ctx).await.unwrap(), 0);
}

/// The value of the first sample of `name` carrying every label of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .find(|l| l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

fn misses(metrics: &str) -> f64 {
    sample(
        metrics,
        "cache_requests_total",
        &[r#"cache="page""#, r#"result="miss""#],
    )
}

#[tokio::test]
async fn concurrent_misses_of_one_page_load_it_once() {
    let app = spawn_app_with(|s| s.catalog.snapshot = false).await;
    seed_items(&app.db, 50).await;
    let metrics = || app.get_text("/metrics");
    let before = misses(&metrics().await);
    let pages = futures::future::join_all((0..20).map(|_| list(&app, "category=SKIN"))).await;
    assert!(pages.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(misses(&metrics().await) - before, 1.0);
}

#[tokio::test]
async fn concurrent_first_listings_load_the_snapshot_once() {
    let app = spawn_app().await;
    seed_items(&app.db, 50).await;
    let loads = |m: &str| sample(m, "catalog_snapshot_loads_total", &[]);
    let before = loads(&app.get_text("/metrics").await);
    let queries = ["category=SKIN", "keyword=루테인", "sort=newest&size=8"];
    let pages = futures::future::join_all((0..21).map(|i| list(&app, queries[i % 3]))).await;
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page, &pages[i % 3]);
    }
    let after = app.get_text("/metrics").await;
    assert_eq!(loads(&after) - before, 1.0, "{after}");
    assert_eq!(sample(&after, "catalog_snapshot_items", &[]), 50.0);
}
