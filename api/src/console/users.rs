//! The console's users pages: accounts by e-mail or id and role, and an admin's change of
//! someone's role or access (never their own: `billing::accounts::set_access`).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use billing::accounts::AccessPatch;
use billing::audit::Actor;
use billing::users::{Role, User, UserFilter};
use serde::Deserialize;

use super::listing::{choice, paging, query_string, row_id, Pager};
use super::listing::{filters, nonempty};
use super::{done, page, Action, Chrome, ConsoleError, Viewer};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/users", get(list))
        .route("/admin/users/{id}/access", post(set_access))
}

const ROLES: [Role; 3] = [Role::User, Role::Operator, Role::Admin];

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    /// An account id, or part of an e-mail.
    q: Option<String>,
    role: Option<String>,
    page: Option<String>,
    size: Option<String>,
    done: Option<String>,
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct ListPage<'a> {
    chrome: Chrome<'a>,
    users: Vec<User>,
    pager: Pager,
    roles: Vec<&'static str>,
    q: String,
    role: String,
    size: i64,
}

impl ListPage<'_> {
    fn href(&self, page: i64) -> String {
        let (page, size) = (page.to_string(), self.size.to_string());
        let qs = query_string(&[
            ("q", &self.q),
            ("role", &self.role),
            ("page", &page),
            ("size", &size),
        ]);
        format!("/admin/users?{qs}")
    }
}

/// `GET /admin/users?q=&role=&page=`: newest accounts first.
pub async fn list(
    State(state): State<AppState>,
    Viewer(me): Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    let search = nonempty(q.q);
    let role: Option<Role> = choice("role", q.role.as_deref())?;
    // A number is an account id; anything else a part of an e-mail.
    let id = search.as_deref().and_then(|s| s.parse::<i64>().ok());
    let filter = UserFilter {
        email: search.clone().filter(|_| id.is_none()),
        id,
        role,
        status: None,
    };
    let request = paging(q.page.as_deref(), q.size.as_deref())?;
    let users = billing::users::list(&state.ctx, filter, request).await?;
    let pager = Pager::of(&users);
    Ok(page(&ListPage {
        chrome: Chrome::new(&me, "users").with_notice(q.done.as_deref()),
        pager,
        users: users.items,
        roles: ROLES.iter().map(|r| r.as_str()).collect(),
        q: search.unwrap_or_default(),
        role: role.map(Role::as_str).unwrap_or_default().to_owned(),
        size: users.size,
    }))
}

/// Either field, or both: `role`, `disabled` (`true`/`false`).
#[derive(Deserialize)]
pub struct AccessForm {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    disabled: Option<bool>,
}

/// `POST /admin/users/{id}/access`: its sessions end at once when it is disabled.
pub async fn set_access(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Action { session, form }: Action<AccessForm>,
) -> Result<Response, ConsoleError> {
    let id = row_id(&id)?;
    let patch = AccessPatch {
        role: choice("role", form.role.as_deref())?,
        disabled: form.disabled,
    };
    billing::accounts::set_access(
        &state.ctx,
        &Actor::console(session.user_id),
        billing::ids::UserId(id),
        patch,
    )
    .await?;
    Ok(done(&format!("/admin/users?q={id}"), "access_changed"))
}
