//! The console's users page: search by e-mail or id and role; an admin changes someone's
//! role or disables the account (audited; its sessions end), never their own.

use reqwest::StatusCode;

use super::{
    assert_done, assert_error_page, assert_form_guarded, audit_rows, console_admin,
    console_audit_row, console_sign_in, with_role,
};
use crate::helpers::{spawn_app, TestApp};

async fn access_of(app: &TestApp, id: i64) -> (String, bool) {
    sqlx::query_as("SELECT role, disabled_at IS NOT NULL FROM users WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn console_users_are_found_by_email_id_and_role() {
    let app = spawn_app().await;
    let (admin, console) = console_admin(&app).await;
    let customer = app.signup().await;
    let operator = with_role(&app, "operator").await;

    let all = console.page("/admin/users").await;
    for u in [&admin, &customer, &operator] {
        assert!(all.contains(&u.email), "{all}");
    }
    let part = &customer.email[..customer.email.find('@').unwrap()];
    let found = console
        .page(&format!("/admin/users?q={}&role=", part.to_uppercase()))
        .await;
    assert!(found.contains(&customer.email) && !found.contains(&operator.email));
    let by_id = console
        .page(&format!("/admin/users?q={}", operator.id))
        .await;
    assert!(by_id.contains(&operator.email) && !by_id.contains(&customer.email));
    let operators = console.page("/admin/users?role=operator").await;
    assert!(operators.contains(&operator.email) && !operators.contains(&customer.email));
    assert!(operators.contains("role-operator"));
    // Paged: three accounts, one a page; the links keep the search.
    let second = console.page("/admin/users?q=&role=&size=1&page=2").await;
    assert!(second.contains("2–2 of 3"), "{second}");
    assert!(
        second.contains("href=\"/admin/users?page=1&#38;size=1\" rel=\"prev\""),
        "{second}"
    );
    assert!(second.contains("href=\"/admin/users?page=3&#38;size=1\" rel=\"next\""));
    let resp = console.get("/admin/users?role=superuser").await;
    assert_error_page(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn console_admin_changes_roles_and_disables_accounts_with_audit_rows() {
    let app = spawn_app().await;
    let (admin, console) = console_admin(&app).await;
    let customer = app.signup().await;
    let path = format!("/admin/users/{}/access", customer.id);

    let resp = console.post(&path, &[("role", "operator")]).await;
    assert_done(&resp, "access_changed");
    assert_eq!(
        access_of(&app, customer.id).await,
        ("operator".into(), false)
    );
    let row = console_audit_row(&app, "user_role_changed", &admin).await;
    assert_eq!(
        (row.target_type.as_str(), row.target_id.as_deref()),
        ("user", Some(customer.id.to_string().as_str()))
    );
    assert_eq!(row.details["to"], "operator");
    let page = console
        .page(&format!(
            "/admin/users?q={}&done=access_changed",
            customer.id
        ))
        .await;
    assert!(page.contains("access was changed") && page.contains("role-operator"));

    // Disabled: it cannot sign in any more; enabled again.
    let resp = console.post(&path, &[("disabled", "true")]).await;
    assert_done(&resp, "access_changed");
    assert_eq!(
        access_of(&app, customer.id).await,
        ("operator".into(), true)
    );
    console_audit_row(&app, "user_disabled", &admin).await;
    let login = app.login_raw(&customer.email, &customer.password).await;
    assert_eq!(login.status(), StatusCode::FORBIDDEN);
    assert!(console
        .page(&format!("/admin/users?q={}", customer.id))
        .await
        .contains("status-failed\">disabled</span>"));
    let resp = console.post(&path, &[("disabled", "false")]).await;
    assert_done(&resp, "access_changed");
    assert_eq!(
        access_of(&app, customer.id).await,
        ("operator".into(), false)
    );
    console_audit_row(&app, "user_enabled", &admin).await;

    // Bad input changes nothing.
    let resp = console.post(&path, &[("role", "root")]).await;
    assert_error_page(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let resp = console.post(&path, &[]).await;
    assert_error_page(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(
        access_of(&app, customer.id).await,
        ("operator".into(), false)
    );

    // Never one's own access: no form on one's own row, and a 409 if posted anyway.
    let page = console.page(&format!("/admin/users?q={}", admin.id)).await;
    assert!(!page.contains(&format!("/admin/users/{}/access", admin.id)));
    let resp = console
        .post(
            &format!("/admin/users/{}/access", admin.id),
            &[("role", "user")],
        )
        .await;
    assert_error_page(resp, StatusCode::CONFLICT, "cannot_change_own_access").await;
    assert_eq!(access_of(&app, admin.id).await, ("admin".into(), false));
    assert_eq!(audit_rows(&app, "user_role_changed").await.len(), 1);
}

#[tokio::test]
async fn console_user_actions_are_admins_only_and_need_the_csrf_token() {
    let app = spawn_app().await;
    let (_, admin) = console_admin(&app).await;
    let operator_user = with_role(&app, "operator").await;
    let operator = console_sign_in(&app, &operator_user).await;
    let customer = app.signup().await;

    let page = operator.page("/admin/users").await;
    assert!(page.contains(&customer.email));
    assert!(!page.contains("/access\""), "no action forms: {page}");
    let path = format!("/admin/users/{}/access", customer.id);
    assert_form_guarded(&admin, &operator, &path, &[("role", "admin")]).await;
    assert_form_guarded(&admin, &operator, &path, &[("disabled", "true")]).await;
    assert_eq!(access_of(&app, customer.id).await, ("user".into(), false));
}
