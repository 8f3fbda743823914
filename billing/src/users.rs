//! Accounts: signup, profile, withdrawal, and the `users` table.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::error::{unique_violation, Error, FieldError, Result};
use crate::ids::UserId;
use crate::validate::{self, Checks};
use crate::{passwords, Ctx};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Role {
    User,
    /// Sees what admins see (lists, jobs, audit log, previews) and acts on nothing.
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Withdrawn,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    pub real_name: Option<String>,
    /// Digits only; see `validate::format_phone`.
    pub phone: String,
    pub city: String,
    pub detail_address: String,
    pub oauth_provider: Option<String>,
    pub role: Role,
    pub status: UserStatus,
    /// Set while an admin has disabled the account (it cannot log in).
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /api/users`. Fields default to empty so a missing one is reported like a blank one.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SignupInput {
    #[schema(required = true, example = "jane@example.com")]
    pub email: String,
    #[schema(required = true, example = "Secret12!")]
    pub password: String,
    #[schema(required = true, example = "jane")]
    pub display_name: String,
    #[schema(required = true, example = "김영희")]
    pub real_name: String,
    #[schema(required = true, example = "010-1234-5678")]
    pub phone: String,
    #[schema(required = true, example = "Seoul")]
    pub city: String,
    #[schema(required = true, example = "1 Sejong-daero, Jung-gu")]
    pub detail_address: String,
}

/// `PATCH /api/users/me`: only the fields present change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ProfilePatch {
    pub display_name: Option<String>,
    pub real_name: Option<String>,
    pub phone: Option<String>,
    pub city: Option<String>,
    pub detail_address: Option<String>,
    /// A new password; requires `current_password`.
    pub password: Option<String>,
    pub current_password: Option<String>,
}

/// A validated account ready to insert.
pub(crate) struct NewUser {
    pub email: String,
    pub password_hash: Option<String>,
    pub display_name: String,
    pub real_name: Option<String>,
    pub phone: String,
    pub city: String,
    pub detail_address: String,
    pub oauth: Option<(String, String)>,
    pub role: Role,
}

/// Contact fields every account has, however it signs up.
pub(crate) struct Contact {
    pub display_name: String,
    pub phone: String,
    pub city: String,
    pub detail_address: String,
}

pub(crate) fn check_contact(
    checks: &mut Checks,
    display_name: &str,
    phone: &str,
    city: &str,
    detail_address: &str,
) -> Contact {
    checks.check("display_name", validate::display_name(display_name));
    checks.check("phone", validate::phone(phone));
    checks.check("city", validate::text(city, 100));
    checks.check("detail_address", validate::text(detail_address, 200));
    Contact {
        display_name: display_name.to_owned(),
        phone: validate::normalize_phone(phone).unwrap_or_default(),
        city: city.trim().to_owned(),
        detail_address: detail_address.trim().to_owned(),
    }
}

pub async fn signup(ctx: &Ctx, input: SignupInput) -> Result<User> {
    signup_with_role(ctx, input, Role::User).await
}

pub async fn signup_with_role(ctx: &Ctx, input: SignupInput, role: Role) -> Result<User> {
    create(ctx, input, role, None).await
}

/// A checked signup written with `role`; an operator's (`actor`) is audited in its
/// transaction.
async fn create(
    ctx: &Ctx,
    input: SignupInput,
    role: Role,
    actor: Option<&crate::audit::Actor>,
) -> Result<User> {
    let mut checks = Checks::default();
    checks.check("email", validate::email(input.email.trim()));
    checks.check("password", validate::password(&input.password));
    checks.check("real_name", validate::real_name(&input.real_name));
    let contact = check_contact(
        &mut checks,
        &input.display_name,
        &input.phone,
        &input.city,
        &input.detail_address,
    );
    checks.finish()?;
    let password_hash = passwords::hash(input.password).await?;
    let new = NewUser {
        email: validate::normalize_email(&input.email),
        password_hash: Some(password_hash),
        display_name: contact.display_name,
        real_name: Some(input.real_name),
        phone: contact.phone,
        city: contact.city,
        detail_address: contact.detail_address,
        oauth: None,
        role,
    };
    let mut tx = ctx.db.begin().await?;
    let user = insert(&mut tx, &new).await?;
    if let Some(actor) = actor {
        audit_admin_granted(&mut tx, actor, user.id, true, ctx.clock.now()).await?;
    }
    tx.commit().await?;
    Ok(user)
}

async fn audit_admin_granted(
    conn: &mut PgConnection,
    actor: &crate::audit::Actor,
    user: UserId,
    created: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    crate::audit::record(
        conn,
        actor,
        crate::audit::Action::AdminGranted,
        crate::audit::Target::row("user", &user),
        serde_json::json!({ "created": created }),
        now,
    )
    .await
}

pub async fn get(ctx: &Ctx, id: UserId) -> Result<User> {
    let mut conn = ctx.db.acquire().await?;
    match find_by_id(&mut conn, id).await? {
        Some(user) if user.status == UserStatus::Active => Ok(user),
        _ => Err(Error::NotFound),
    }
}

/// Checks and applies a profile patch on the caller's transaction (which holds the user's
/// row from here on): the caller commits it, with whatever else the change implies.
pub(crate) async fn update_profile(
    conn: &mut PgConnection,
    id: UserId,
    patch: ProfilePatch,
) -> Result<User> {
    let mut checks = Checks::default();
    if let Some(v) = &patch.display_name {
        checks.check("display_name", validate::display_name(v));
    }
    if let Some(v) = &patch.real_name {
        checks.check("real_name", validate::real_name(v));
    }
    if let Some(v) = &patch.phone {
        checks.check("phone", validate::phone(v));
    }
    if let Some(v) = &patch.city {
        checks.check("city", validate::text(v, 100));
    }
    if let Some(v) = &patch.detail_address {
        checks.check("detail_address", validate::text(v, 200));
    }
    if let Some(v) = &patch.password {
        checks.check("password", validate::password(v));
        if patch
            .current_password
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            checks.check(
                "current_password",
                Err("is required to change the password"),
            );
        }
    }
    checks.finish()?;

    let current = sqlx::query!(
        r#"SELECT password_hash FROM users WHERE id = $1 AND status = 'active' FOR UPDATE"#,
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound)?;
    let new_hash = match (&patch.password, &patch.current_password) {
        (Some(new), Some(old)) => {
            let Some(stored) = current.password_hash else {
                return Err(Error::validation(
                    "current_password",
                    "this account signs in with a social provider",
                ));
            };
            if !passwords::verify(old.clone(), stored).await? {
                return Err(Error::validation("current_password", "is not correct"));
            }
            Some(passwords::hash(new.clone()).await?)
        }
        _ => None,
    };
    let phone = patch.phone.as_deref().and_then(validate::normalize_phone);
    let result = sqlx::query!(
        r#"UPDATE users SET
             display_name = COALESCE($2, display_name),
             real_name = COALESCE($3, real_name),
             phone = COALESCE($4, phone),
             city = COALESCE($5, city),
             detail_address = COALESCE($6, detail_address),
             password_hash = COALESCE($7, password_hash)
           WHERE id = $1"#,
        id.0,
        patch.display_name,
        patch.real_name,
        phone,
        patch.city.as_deref().map(str::trim),
        patch.detail_address.as_deref().map(str::trim),
        new_hash,
    )
    .execute(&mut *conn)
    .await;
    if let Err(err) = result {
        return Err(map_unique(err));
    }
    let user = find_by_id(conn, id).await?.ok_or(Error::NotFound)?;
    Ok(user)
}

/// `active` → `withdrawn`; false if the account was not active (the caller ends its
/// sessions: `accounts::withdraw`).
pub(crate) async fn mark_withdrawn(
    conn: &mut PgConnection,
    id: UserId,
    now: DateTime<Utc>,
) -> Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE users SET status = 'withdrawn', withdrawn_at = $2
           WHERE id = $1 AND status = 'active'"#,
        id.0,
        now
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// An active account, its row locked for the rest of the transaction.
pub(crate) async fn lock_active(conn: &mut PgConnection, id: UserId) -> Result<Option<User>> {
    sqlx::query_scalar!(
        "SELECT id FROM users WHERE id = $1 AND status = 'active' FOR UPDATE",
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?;
    find_by_id(conn, id)
        .await
        .map(|u| u.filter(|u| u.status == UserStatus::Active))
}

/// Sets an account's role and/or disabled state (disabling keeps the first time).
pub(crate) async fn set_access(
    conn: &mut PgConnection,
    id: UserId,
    role: Option<Role>,
    disabled: Option<bool>,
    now: DateTime<Utc>,
) -> Result<User> {
    sqlx::query!(
        "UPDATE users SET role = COALESCE($2, role),
                disabled_at = CASE WHEN $3::boolean IS NULL THEN disabled_at
                                   WHEN $3 THEN COALESCE(disabled_at, $4)
                                   ELSE NULL END
         WHERE id = $1",
        id.0,
        role.map(Role::as_str),
        disabled,
        now
    )
    .execute(&mut *conn)
    .await?;
    find_by_id(conn, id).await?.ok_or(Error::NotFound)
}

// ---- repository -------------------------------------------------------------------------

struct UserRow {
    id: i64,
    email: String,
    display_name: String,
    real_name: Option<String>,
    phone: String,
    city: String,
    detail_address: String,
    oauth_provider: Option<String>,
    role: Role,
    status: UserStatus,
    disabled_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Selected everywhere for one row shape; only login reads it, `User` never holds it.
    password_hash: Option<String>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: UserId(r.id),
            email: r.email,
            display_name: r.display_name,
            real_name: r.real_name,
            phone: r.phone,
            city: r.city,
            detail_address: r.detail_address,
            oauth_provider: r.oauth_provider,
            role: r.role,
            status: r.status,
            disabled_at: r.disabled_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Maps the named unique indexes of `users` to the field a 409 names.
fn map_unique(err: sqlx::Error) -> Error {
    let field = match unique_violation(&err) {
        Some("users_email_key") => "email",
        Some("users_phone_key") => "phone",
        Some("users_display_name_key") => "display_name",
        Some("users_oauth_key") => "oauth_subject",
        _ => return Error::from(err),
    };
    Error::AlreadyExists(vec![FieldError::new(field, "is already registered")])
}

pub(crate) async fn insert(conn: &mut PgConnection, new: &NewUser) -> Result<User> {
    // Report every duplicate at once; the unique indexes still decide under races.
    let taken = sqlx::query!(
        r#"SELECT
             COALESCE(bool_or(email = $1), false) AS "email!",
             COALESCE(bool_or(phone = $2), false) AS "phone!",
             COALESCE(bool_or(display_name = $3), false) AS "display_name!"
           FROM users
           WHERE status = 'active' AND (email = $1 OR phone = $2 OR display_name = $3)"#,
        new.email,
        new.phone,
        new.display_name
    )
    .fetch_one(&mut *conn)
    .await?;
    {
        let t = taken;
        let fields: Vec<FieldError> = [
            ("email", t.email),
            ("phone", t.phone),
            ("display_name", t.display_name),
        ]
        .into_iter()
        .filter(|(_, hit)| *hit)
        .map(|(f, _)| FieldError::new(f, "is already registered"))
        .collect();
        if !fields.is_empty() {
            return Err(Error::AlreadyExists(fields));
        }
    }
    let (provider, subject) = match &new.oauth {
        Some((p, s)) => (Some(p.as_str()), Some(s.as_str())),
        None => (None, None),
    };
    sqlx::query_as!(
        UserRow,
        r#"INSERT INTO users (email, password_hash, display_name, real_name, phone, city,
                              detail_address, oauth_provider, oauth_subject, role)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           RETURNING id, email, display_name, real_name, phone, city, detail_address,
                     oauth_provider, role AS "role: Role", status AS "status: UserStatus", disabled_at,
                     created_at, updated_at, password_hash"#,
        new.email,
        new.password_hash,
        new.display_name,
        new.real_name,
        new.phone,
        new.city,
        new.detail_address,
        provider,
        subject,
        new.role.as_str(),
    )
    .fetch_one(&mut *conn)
    .await
    .map(User::from)
    .map_err(map_unique)
}

pub(crate) async fn find_by_id(conn: &mut PgConnection, id: UserId) -> Result<Option<User>> {
    Ok(sqlx::query_as!(
        UserRow,
        r#"SELECT id, email, display_name, real_name, phone, city, detail_address,
                  oauth_provider, role AS "role: Role", status AS "status: UserStatus", disabled_at,
                  created_at, updated_at, password_hash
           FROM users WHERE id = $1"#,
        id.0
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(User::from))
}

/// The account and its password hash for a login: the active one if any, else the
/// newest withdrawn one (so a withdrawn customer hears why).
pub(crate) async fn find_for_login(
    conn: &mut PgConnection,
    email: &str,
) -> Result<Option<(User, Option<String>)>> {
    let row = sqlx::query_as!(
        UserRow,
        r#"SELECT id, email, display_name, real_name, phone, city, detail_address,
                  oauth_provider, role AS "role: Role", status AS "status: UserStatus", disabled_at,
                  created_at, updated_at, password_hash
           FROM users WHERE email = $1
           ORDER BY (status = 'active') DESC, id DESC LIMIT 1"#,
        email
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|mut r| {
        let hash = r.password_hash.take();
        (User::from(r), hash)
    }))
}

pub(crate) async fn find_by_oauth(
    conn: &mut PgConnection,
    provider: &str,
    subject: &str,
) -> Result<Option<User>> {
    Ok(sqlx::query_as!(
        UserRow,
        r#"SELECT id, email, display_name, real_name, phone, city, detail_address,
                  oauth_provider, role AS "role: Role", status AS "status: UserStatus", disabled_at,
                  created_at, updated_at, password_hash
           FROM users WHERE oauth_provider = $1 AND oauth_subject = $2
           ORDER BY (status = 'active') DESC, id DESC LIMIT 1"#,
        provider,
        subject
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(User::from))
}

pub(crate) async fn email_in_use(conn: &mut PgConnection, email: &str) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE email = $1 AND status = 'active') AS "e!""#,
        email
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// For `create-admin`: promotes an existing active account or reports none.
async fn promote_to_admin(
    ctx: &Ctx,
    actor: &crate::audit::Actor,
    email: &str,
) -> Result<Option<UserId>> {
    let mut tx = ctx.db.begin().await?;
    let promoted = sqlx::query_scalar!(
        r#"UPDATE users SET role = 'admin' WHERE email = $1 AND status = 'active'
           RETURNING id AS "id: UserId""#,
        validate::normalize_email(email)
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = promoted {
        audit_admin_granted(&mut tx, actor, id, false, ctx.clock.now()).await?;
    }
    tx.commit().await?;
    Ok(promoted)
}

/// An operator account to create (or an existing account to promote).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminInput {
    #[schema(example = "ops@example.com")]
    pub email: String,
    /// Required when the account does not exist yet; an existing account keeps its own.
    pub password: Option<String>,
    #[serde(default = "default_admin_name")]
    pub display_name: String,
    /// Accounts need a unique mobile number; admins rarely use theirs.
    #[serde(default = "default_admin_phone")]
    pub phone: String,
}

fn default_admin_name() -> String {
    "admin".into()
}

fn default_admin_phone() -> String {
    "010-0000-0000".into()
}

/// `create-admin`: the active account with this e-mail becomes an admin (`false`), or a new
/// admin account is created (`true`).
pub async fn create_admin(
    ctx: &Ctx,
    actor: &crate::audit::Actor,
    input: AdminInput,
) -> Result<(User, bool)> {
    if let Some(id) = promote_to_admin(ctx, actor, &input.email).await? {
        return Ok((get(ctx, id).await?, false));
    }
    let Some(password) = input.password else {
        return Err(Error::validation(
            "password",
            "required to create a new admin account",
        ));
    };
    let signup = SignupInput {
        email: input.email,
        password,
        display_name: input.display_name,
        real_name: "admin".into(),
        phone: input.phone,
        city: "-".into(),
        detail_address: "-".into(),
    };
    Ok((create(ctx, signup, Role::Admin, Some(actor)).await?, true))
}

/// Admin search over accounts, newest first.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Part of the e-mail (case-insensitive).
    pub email: Option<String>,
    pub status: Option<UserStatus>,
    /// `user`, `operator` or `admin`.
    pub role: Option<Role>,
    /// One account by id.
    pub id: Option<i64>,
}

pub async fn list(
    ctx: &Ctx,
    filter: UserFilter,
    page: crate::page::PageRequest,
) -> Result<crate::page::Page<User>> {
    let page = page.validate()?;
    let pattern = filter.email.map(|e| {
        format!(
            "%{}%",
            e.to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let status = filter.status.map(|s| match s {
        UserStatus::Active => "active",
        UserStatus::Withdrawn => "withdrawn",
    });
    let role = filter.role.map(Role::as_str);
    let mut conn = ctx.db.acquire().await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM users
           WHERE ($1::text IS NULL OR email LIKE $1) AND ($2::text IS NULL OR status = $2)
             AND ($3::text IS NULL OR role = $3) AND ($4::bigint IS NULL OR id = $4)"#,
        pattern,
        status,
        role,
        filter.id
    )
    .fetch_one(&mut *conn)
    .await?;
    let items = sqlx::query_as!(
        UserRow,
        r#"SELECT id, email, display_name, real_name, phone, city, detail_address,
                  oauth_provider, role AS "role: Role", status AS "status: UserStatus", disabled_at,
                  created_at, updated_at, password_hash
           FROM users
           WHERE ($1::text IS NULL OR email LIKE $1) AND ($2::text IS NULL OR status = $2)
             AND ($3::text IS NULL OR role = $3) AND ($4::bigint IS NULL OR id = $4)
           ORDER BY id DESC LIMIT $5 OFFSET $6"#,
        pattern,
        status,
        role,
        filter.id,
        page.size,
        page.offset()
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(crate::page::Page {
        items: items.into_iter().map(User::from).collect(),
        page: page.page,
        size: page.size,
        total,
    })
}
