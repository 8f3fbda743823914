//! The operator console over real HTTP: signing in with a cookie session, CSRF-checked
//! forms, read-only operators; one module per area. (Browser tests drive the same pages in
//! headless Chromium: `crate::browser`.)

mod audit;
mod jobs;
pub mod orders;
mod overview;
mod session;
mod subscriptions;
mod users;
mod webhooks;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Response, StatusCode};

use crate::helpers::{TestApp, TestUser};

/// A browser-like console client: the session cookie, and the CSRF token its pages carry.
pub struct ConsoleClient<'a> {
    pub app: &'a TestApp,
    pub cookie: String,
    pub csrf: String,
}

/// The value of cookie `name` among a response's `Set-Cookie` headers.
pub fn set_cookie_value(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let first = v.split(';').next()?;
            let (k, val) = first.split_once('=')?;
            (k.trim() == name).then(|| val.trim().to_owned())
        })
}

/// The `value` of the first `<input name="{name}" …>` in a page.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.find("value=\"")? + "value=\"".len();
    let end = tag[v..].find('"')?;
    Some(tag[v..v + end].to_owned())
}

/// `GET /admin/sign-in` then `POST` it: the raw answer of the sign-in, and the sign-in
/// form's cookie (for tests of the sign-in itself).
pub async fn post_sign_in(app: &TestApp, email: &str, password: &str) -> Response {
    let form = app.get("/admin/sign-in").send().await.unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let pre = set_cookie_value(&form, "pv_console_signin").expect("sign-in cookie");
    let html = form.text().await.unwrap();
    let token = hidden_field(&html, "token").expect("sign-in token");
    app.request(reqwest::Method::POST, "/admin/sign-in")
        .header(COOKIE, format!("pv_console_signin={pre}"))
        .form(&[
            ("email", email),
            ("password", password),
            ("token", token.as_str()),
            ("next", "/admin"),
        ])
        .send()
        .await
        .unwrap()
}

/// Signs `user` in to the console (it must be an admin or operator).
pub async fn console_sign_in<'a>(app: &'a TestApp, user: &TestUser) -> ConsoleClient<'a> {
    let resp = post_sign_in(app, &user.email, &user.password).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "sign-in");
    assert_eq!(resp.headers()[LOCATION], "/admin");
    let cookie = set_cookie_value(&resp, "pv_console").expect("session cookie");
    let mut client = ConsoleClient {
        app,
        cookie,
        csrf: String::new(),
    };
    let html = client.page("/admin").await;
    client.csrf = hidden_field(&html, "csrf").expect("csrf token on the page");
    client
}

/// An admin account (made so in the database), signed in to the console.
pub async fn console_admin(app: &TestApp) -> (TestUser, ConsoleClient<'_>) {
    let user = with_role(app, "admin").await;
    let client = console_sign_in(app, &user).await;
    (user, client)
}

/// A fresh account given `role` in the database.
pub async fn with_role(app: &TestApp, role: &str) -> TestUser {
    let user = app.signup().await;
    sqlx::query("UPDATE users SET role = $2 WHERE id = $1")
        .bind(user.id)
        .bind(role)
        .execute(&app.db)
        .await
        .unwrap();
    user
}

impl ConsoleClient<'_> {
    pub async fn get(&self, path: &str) -> Response {
        self.app
            .get(path)
            .header(COOKIE, format!("pv_console={}", self.cookie))
            .send()
            .await
            .unwrap()
    }

    /// A page that must answer 200; its HTML.
    pub async fn page(&self, path: &str) -> String {
        let resp = self.get(path).await;
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        resp.text().await.unwrap()
    }

    /// A form post with this session's CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    /// A form post with exactly these fields (no token added).
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.app
            .request(reqwest::Method::POST, path)
            .header(COOKIE, format!("pv_console={}", self.cookie))
            .form(fields)
            .send()
            .await
            .unwrap()
    }
}

/// An action's answer: 303 back to a console page, with `?done=`.
#[allow(dead_code)] // the area modules use it
pub fn assert_done(resp: &Response, done: &str) {
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{resp:?}");
    let to = resp.headers()[LOCATION].to_str().unwrap();
    assert!(to.contains(&format!("done={done}")), "{to}");
}

/// An error page's status and stable code.
pub async fn assert_error_page(resp: Response, status: StatusCode, code: &str) {
    assert_eq!(resp.status(), status);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains(&format!("<code id=\"error-code\">{code}</code>")),
        "{html}"
    );
}

/// One `audit_log` row, as the console's tests check it.
#[allow(dead_code)] // the area modules read the fields they check
#[derive(Debug, sqlx::FromRow)]
pub struct AuditRow {
    pub actor_user_id: Option<i64>,
    pub channel: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub details: serde_json::Value,
}

/// The audit rows of `action`, oldest first.
pub async fn audit_rows(app: &TestApp, action: &str) -> Vec<AuditRow> {
    sqlx::query_as(
        "SELECT actor_user_id, channel, target_type, target_id, details FROM audit_log
         WHERE action = $1 ORDER BY id",
    )
    .bind(action)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

/// The one audit row of `action`, written by `actor` through the console.
pub async fn console_audit_row(app: &TestApp, action: &str, actor: &TestUser) -> AuditRow {
    let mut rows = audit_rows(app, action).await;
    assert_eq!(rows.len(), 1, "{action}: {rows:?}");
    let row = rows.remove(0);
    assert_eq!(row.actor_user_id, Some(actor.id), "{row:?}");
    assert_eq!(row.channel, "console", "{row:?}");
    row
}

/// A console form is only an admin's, with the session's token: an operator posting it
/// gets 403 `forbidden`, an admin posting it without the token 403 `csrf_failed`.
pub async fn assert_form_guarded(
    admin: &ConsoleClient<'_>,
    operator: &ConsoleClient<'_>,
    path: &str,
    fields: &[(&str, &str)],
) {
    assert_error_page(
        operator.post(path, fields).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_error_page(
        admin.post_raw(path, fields).await,
        StatusCode::FORBIDDEN,
        "csrf_failed",
    )
    .await;
}
