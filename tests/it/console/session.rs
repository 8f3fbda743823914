//! Console sessions: who may sign in, the cookie, CSRF, sign-out, idle timeout, and that
//! whatever ends an account's sessions ends its console too.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

use super::{assert_error_page, console_admin, console_sign_in, post_sign_in, with_role};
use crate::helpers::spawn_app;

#[tokio::test]
async fn console_admins_and_operators_sign_in_with_a_strict_http_only_cookie() {
    let app = spawn_app().await;
    let admin = with_role(&app, "admin").await;
    let resp = post_sign_in(&app, &admin.email, &admin.password).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cookie = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("pv_console="))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    // Test settings are environment "test": plain HTTP, so not Secure here.
    assert!(!cookie.contains("Secure"), "{cookie}");

    let operator = with_role(&app, "operator").await;
    let console = console_sign_in(&app, &operator).await;
    let html = console.page("/admin").await;
    assert!(
        html.contains("Read-only"),
        "operators are told they cannot act"
    );
    assert!(html.contains(&operator.email));
}

#[tokio::test]
async fn console_refuses_customers_wrong_passwords_and_forged_sign_in_forms() {
    let app = spawn_app().await;
    let customer = app.signup().await;
    let resp = post_sign_in(&app, &customer.email, &customer.password).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("only admins and operators"));

    let admin = with_role(&app, "admin").await;
    let resp = post_sign_in(&app, &admin.email, "wrong-password-1!").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .all(|c| !c.to_str().unwrap().starts_with("pv_console=")));

    // A sign-in posted without the form's own cookie (a login CSRF) is refused.
    let resp = app
        .request(reqwest::Method::POST, "/admin/sign-in")
        .form(&[
            ("email", admin.email.as_str()),
            ("password", admin.password.as_str()),
            ("token", "forged"),
        ])
        .send()
        .await
        .unwrap();
    assert_error_page(resp, StatusCode::FORBIDDEN, "csrf_failed").await;
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE kind = 'console'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
}

#[tokio::test]
async fn console_pages_send_strangers_to_sign_in_and_back() {
    let app = spawn_app().await;
    let resp = app.get("/admin/overview/live?x=1").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        resp.headers()[LOCATION],
        "/admin/sign-in?next=%2Fadmin%2Foverview%2Flive%3Fx%3D1"
    );
    let resp = app
        .get("/admin")
        .header(COOKIE, "pv_console=not-a-session")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    // The sign-in form never sends anyone to another site afterwards.
    let html = app
        .get("/admin/sign-in?next=//evil.example/")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("name=\"next\" value=\"/admin\""), "{html}");
}

#[tokio::test]
async fn console_forms_without_the_session_csrf_token_are_refused() {
    let app = spawn_app().await;
    let (_, console) = console_admin(&app).await;
    let resp = console.post_raw("/admin/sign-out", &[]).await;
    assert_error_page(resp, StatusCode::FORBIDDEN, "csrf_failed").await;
    let resp = console
        .post_raw("/admin/sign-out", &[("csrf", "someone-elses-token")])
        .await;
    assert_error_page(resp, StatusCode::FORBIDDEN, "csrf_failed").await;
    // Still signed in: the refused form changed nothing.
    console.page("/admin").await;
    // With a valid token but from another site's page: refused too.
    let resp = app
        .request(reqwest::Method::POST, "/admin/sign-out")
        .header(COOKIE, format!("pv_console={}", console.cookie))
        .header("origin", "https://evil.example")
        .form(&[("csrf", console.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_error_page(resp, StatusCode::FORBIDDEN, "csrf_failed").await;
    console.page("/admin").await;
}

#[tokio::test]
async fn console_sign_out_ends_the_session() {
    let app = spawn_app().await;
    let (_, console) = console_admin(&app).await;
    let resp = console.post("/admin/sign-out", &[]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/admin/sign-in");
    let resp = console.get("/admin").await;
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "the old cookie is dead"
    );
}

#[tokio::test]
async fn console_session_ends_when_idle_and_when_the_account_is_disabled_or_demoted() {
    let app = spawn_app().await;
    let (_, console) = console_admin(&app).await;
    // Idle past `console.idle_timeout_secs` (30 min by default).
    sqlx::query(
        "UPDATE sessions SET last_used_at = now() - interval '31 minutes' WHERE kind = 'console'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(console.get("/admin").await.status(), StatusCode::SEE_OTHER);
    let reason: String =
        sqlx::query_scalar("SELECT revoke_reason FROM sessions WHERE kind = 'console'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(reason, "idle_timeout");

    // Another admin disables an operator: the operator's console ends at once.
    let (_, admin_tokens) = app.admin().await;
    let operator = with_role(&app, "operator").await;
    let op_console = console_sign_in(&app, &operator).await;
    let resp = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/admin/users/{}", operator.id),
        )
        .bearer_auth(&admin_tokens.access)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        op_console.get("/admin").await.status(),
        StatusCode::SEE_OTHER
    );

    // A demoted admin's console session stops at the next request.
    let other = with_role(&app, "admin").await;
    let other_console = console_sign_in(&app, &other).await;
    let resp = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/admin/users/{}", other.id),
        )
        .bearer_auth(&admin_tokens.access)
        .json(&json!({"role": "user"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        other_console.get("/admin").await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn console_overview_shows_the_queue_and_what_needs_attention() {
    let app = spawn_app().await;
    let job = crate::helpers::fixtures::failed_job(&app.db).await;
    let (_, console) = console_admin(&app).await;
    let html = console.page("/admin").await;
    assert!(html.contains("id=\"failed-jobs\">1<"), "{html}");
    let live = console.page("/admin/overview/live").await;
    assert!(live.contains("Job queue"));
    assert!(!live.contains("<html"), "the live part is a fragment");
    let _ = job;
    // Every console answer forbids framing and foreign scripts.
    let resp = console.get("/admin").await;
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
}
