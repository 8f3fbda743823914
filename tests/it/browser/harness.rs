//! The browser harness itself, against pages served by the test: filling and clicking,
//! console errors, unlabelled controls, viewports and screenshots.

use axum::extract::Query;
use axum::response::{Html, Redirect};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::{screenshot_path, Browser};

/// Every page names an empty icon: without one Chromium fetches /favicon.ico, and its
/// 404 is a console error.
const HEAD: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>harness</title></head>"#;

const FORM_BODY: &str = r#"<body>
<label for="name">Your name</label> <input id="name" name="name">
<button type="button" id="greet">Greet</button>
<p id="out">nobody yet</p>
<script>
  document.getElementById('greet').addEventListener('click', () => {
    document.getElementById('out').textContent = 'Hello, ' + document.getElementById('name').value;
  });
</script>
<form method="post" action="/greet">
  <label>Plan <select name="plan"><option value="m">Monthly</option><option value="y">Yearly</option></select></label>
  <label>Note <input name="note"></label>
  <button>Send</button>
</form>
</body></html>"#;

const BOOM_BODY: &str = r#"<body><p>about to fail</p>
<script>console.error("boom"); throw new Error("kaput");</script>
</body></html>"#;

/// Named in each of the ways that count, plus two controls whose labels say nothing.
const LABELS_BODY: &str = r#"<body><form>
<label for="a">For</label><input id="a">
<label>Wrapped <textarea name="b"></textarea></label>
<input name="c" aria-label="Aria">
<span id="d-label">Labelled by</span><select name="d" aria-labelledby="d-label"><option>x</option></select>
<input type="hidden" name="e"><input type="submit" value="Go">
<label for="orphan"> </label><input id="orphan" name="orphan" type="email">
<label><select name="options-only"><option>Not a label</option></select></label>
</form></body></html>"#;

#[derive(Deserialize)]
struct Greeting {
    plan: String,
    note: String,
}

/// Serves the pages above on 127.0.0.1 and returns the base URL.
async fn serve_pages() -> String {
    let page = |body: &'static str| Html(format!("{HEAD}{body}"));
    let app = Router::new()
        .route("/", get(move || async move { page(FORM_BODY) }))
        .route("/boom", get(move || async move { page(BOOM_BODY) }))
        .route("/labels", get(move || async move { page(LABELS_BODY) }))
        // a form post answered with 303, like the console's
        .route(
            "/greet",
            post(|Form(g): Form<Greeting>| async move {
                Redirect::to(&format!("/greeted?plan={}&note={}", g.plan, g.note))
            }),
        )
        .route(
            "/greeted",
            get(move |Query(g): Query<Greeting>| async move {
                Html(format!(
                    "{HEAD}<body><p id=\"result\">{} {}</p><a href=\"/\">Back</a></body></html>",
                    g.plan, g.note
                ))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn fill_and_click_change_the_page_and_follow_a_form_post() {
    let site = serve_pages().await;
    let browser = Browser::open().await;
    browser.goto(&site).await;
    assert_eq!(browser.client().title().await.unwrap(), "harness");
    assert_eq!(browser.text_of("#out").await, "nobody yet");

    browser.fill("Your name", "Ada").await;
    browser.click_button("Greet").await;
    assert_eq!(browser.text_of("#out").await, "Hello, Ada");
    // the same field by CSS, typed over, and the button by CSS
    browser.fill("#name", "Grace").await;
    browser.click("#greet").await;
    assert_eq!(browser.text_of("#out").await, "Hello, Grace");

    // A select by its option's text, an input by a label wrapping it, then a submit
    // button: the redirect has been followed when click_button returns.
    browser.fill("Plan", "Yearly").await;
    browser.fill("Note", "thanks").await;
    browser.click_button("Send").await;
    assert_eq!(browser.current_path().await, "/greeted?plan=y&note=thanks");
    assert_eq!(browser.text_of("#result").await, "y thanks");

    // a link, likewise followed
    browser.click("a").await;
    assert_eq!(browser.current_path().await, "/");
}

#[tokio::test]
async fn console_errors_reports_what_the_page_logged_and_threw() {
    let site = serve_pages().await;
    let browser = Browser::open().await;
    browser.goto(&site).await;
    assert_eq!(browser.console_errors().await, Vec::<String>::new());

    browser.goto(&format!("{site}/boom")).await;
    let errors = browser.console_errors().await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("\"boom\""), "{errors:?}");
    assert!(errors[1].contains("Uncaught Error: kaput"), "{errors:?}");
}

#[tokio::test]
async fn unlabelled_controls_names_only_the_unlabelled_one() {
    let site = serve_pages().await;
    let browser = Browser::open().await;
    browser.goto(&format!("{site}/labels")).await;
    assert_eq!(
        browser.unlabelled_controls().await,
        vec![
            "input[type=email]#orphan[name=orphan]".to_owned(),
            "select[name=options-only]".to_owned(),
        ]
    );
    browser.goto(&site).await;
    assert_eq!(browser.unlabelled_controls().await, Vec::<String>::new());
}

#[tokio::test]
async fn viewports_are_exact_and_screenshots_are_pngs() {
    let site = serve_pages().await;
    let browser = Browser::open().await;
    browser.goto(&site).await;
    let size = "return [innerWidth, innerHeight]";
    assert_eq!(browser.eval("return innerWidth").await, 1280);

    browser.set_viewport(1024, 700).await;
    assert_eq!(browser.eval(size).await, serde_json::json!([1024, 700]));

    browser.emulate_phone().await;
    browser.goto(&site).await;
    assert_eq!(browser.eval(size).await, serde_json::json!([390, 844]));

    let png = browser.screenshot("harness-probe").await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let written = screenshot_path("harness-probe");
    if std::env::var("PV_SCREENSHOTS").as_deref() == Ok("1") {
        // the probe proves the env switch; docs/console is for the console's pages
        assert_eq!(std::fs::read(&written).unwrap(), png);
        std::fs::remove_file(&written).unwrap();
        // and docs/console itself when the probe was all it held
        let _ = std::fs::remove_dir(written.parent().unwrap());
    } else {
        assert!(!written.exists(), "written without PV_SCREENSHOTS=1");
    }
}
