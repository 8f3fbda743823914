//! The console's users pages: accounts by e-mail or id and role, and an admin's change of
//! someone's role or access (never their own: `billing::accounts::set_access`).

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use billing::accounts::AccessPatch;
use billing::audit::Actor;
use billing::page::PageRequest;
use billing::users::{Role, User, UserFilter};
use serde::Deserialize;

use super::listing::{filters, nonempty, query, Pager, Params, RowId};
use super::{done, page, Action, Chrome, ConsoleError, Viewer};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/users", get(list))
        .route("/admin/users/{id}/access", post(set_access))
}

const ROLES: [Role; 3] = [Role::User, Role::Operator, Role::Admin];

fn parse_role(s: &str) -> Result<Role, ConsoleError> {
    ROLES
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| billing::Error::validation("role", "must be user, operator or admin").into())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    /// An account id, or part of an e-mail.
    q: Option<String>,
    role: Option<String>,
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
}

/// `GET /admin/users?q=&role=&page=`: newest accounts first.
pub async fn list(
    State(state): State<AppState>,
    Viewer(me): Viewer,
    Params(q): Params<ListQuery>,
    Params(p): Params<PageRequest>,
) -> Result<Response, ConsoleError> {
    let search = nonempty(q.q);
    let role = nonempty(q.role);
    // A number is an account id; anything else a part of an e-mail.
    let id = search.as_deref().and_then(|s| s.parse::<i64>().ok());
    let filter = UserFilter {
        email: search.clone().filter(|_| id.is_none()),
        id,
        role: role.as_deref().map(parse_role).transpose()?,
        status: None,
    };
    let users = billing::users::list(&state.ctx, filter, p).await?;
    let pager = Pager::of(
        &users,
        "/admin/users",
        &query(&[
            ("q", search.as_deref()),
            ("role", role.as_deref()),
            ("size", nonempty(q.size).as_deref()),
        ]),
    );
    Ok(page(&ListPage {
        chrome: Chrome::new(&me, "users").with_notice(q.done.as_deref()),
        users: users.items,
        pager,
        roles: ROLES.iter().map(|r| r.as_str()).collect(),
        q: search.unwrap_or_default(),
        role: role.unwrap_or_default(),
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
    RowId(id): RowId<i64>,
    Action { session, form }: Action<AccessForm>,
) -> Result<Response, ConsoleError> {
    let patch = AccessPatch {
        role: nonempty(form.role).as_deref().map(parse_role).transpose()?,
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
