//! The console's audit log: every action with who (their e-mail), the channel, the row
//! (linked to its page) and the details; filtered by row.

use reqwest::StatusCode;
use serde_json::json;

use super::{assert_done, assert_error_page, console_admin, console_sign_in, with_role};
use crate::helpers::spawn_app;

#[tokio::test]
async fn console_audit_log_shows_who_did_what_to_which_row() {
    let app = spawn_app().await;
    let (admin, console) = console_admin(&app).await;
    let job = crate::helpers::fixtures::failed_job(&app.db).await;
    let customer = app.signup().await;
    assert_done(
        &console.post(&format!("/admin/jobs/{job}/retry"), &[]).await,
        "job_retried",
    );
    assert_done(
        &console
            .post(
                &format!("/admin/users/{}/access", customer.id),
                &[("role", "operator")],
            )
            .await,
        "access_changed",
    );
    // An action through the JSON routes is there too, with its channel.
    let (api_admin, tokens) = app.admin().await;
    let resp = app
        .post_json(
            "/api/admin/webhooks",
            &json!({"url": "https://partner.example/hooks", "event_types": ["*"]}),
        )
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let html = console.page("/admin/audit").await;
    for needle in [
        "job_retried",
        &format!("href=\"/admin/jobs/{job}\""),
        "user_role_changed",
        &format!("href=\"/admin/users?q={}\"", customer.id),
        "webhook_endpoint_created",
        &admin.email,
        &api_admin.email,
        "<td>console</td>",
        "<td>api</td>",
    ] {
        assert!(html.contains(needle), "{needle}: {html}");
    }
    // Newest first.
    assert!(html.find("webhook_endpoint_created").unwrap() < html.find("job_retried").unwrap());

    // One row's actions.
    let one = console
        .page(&format!("/admin/audit?target_type=job&target_id={job}"))
        .await;
    assert!(one.contains("job_retried") && !one.contains("user_role_changed"));
    assert!(one.contains("<option value=\"job\" selected>"));
    let users = console
        .page("/admin/audit?target_type=user&target_id=")
        .await;
    assert!(users.contains("user_role_changed") && !users.contains("job_retried"));
    assert!(
        users.contains("&quot;to&quot;: &quot;operator&quot;")
            || users.contains("&#34;to&#34;: &#34;operator&#34;"),
        "{users}"
    );
    // An id alone would read the whole log: the kind is required with it.
    let resp = console.get(&format!("/admin/audit?target_id={job}")).await;
    assert_error_page(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    // Operators read it too.
    let operator = with_role(&app, "operator").await;
    let op = console_sign_in(&app, &operator).await;
    assert!(op.page("/admin/audit").await.contains("job_retried"));
}
