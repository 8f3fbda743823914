//! Session rows: a login's refresh-token family (`sessions`) and the refresh tokens it
//! issued (`session_refresh_tokens`, by SHA-256), written here and nowhere else — opening
//! one only for an active account, rotating a token, revoking one or all of a user's, and
//! the checks and reads the session use case and the account edits are built from.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;
use crate::ids::UserId;

/// Why a session ended (the migration's check lists the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    EndedByUser,
    SignOutEverywhere,
    PasswordChanged,
    Withdrawn,
    RefreshTokenReused,
    /// The account was disabled, or found withdrawn or disabled at a refresh.
    AccountInactive,
    /// A console session left without a request for `console.idle_timeout_secs`.
    IdleTimeout,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::EndedByUser => "ended_by_user",
            Self::SignOutEverywhere => "sign_out_everywhere",
            Self::PasswordChanged => "password_changed",
            Self::Withdrawn => "withdrawn",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::AccountInactive => "account_inactive",
            Self::IdleTimeout => "idle_timeout",
        }
    }
}

/// Where a login or refresh came from, as the session list shows it.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// What is stored: the user agent without control characters, at most 200 characters.
    pub fn new(ip: Option<String>, user_agent: Option<&str>) -> Self {
        let user_agent = user_agent
            .map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect::<String>()
            })
            .filter(|ua| !ua.trim().is_empty());
        Self { ip, user_agent }
    }
}

/// Opens session `id` for `user` with its first refresh token — only while the account
/// is active: the user row is share-locked, so a withdrawal committing meanwhile is
/// either seen (no session) or waits for this one, which it then revokes. False if the
/// account is not active.
pub(crate) async fn open(
    conn: &mut PgConnection,
    id: Uuid,
    user: UserId,
    token_hash: &str,
    client: &ClientInfo,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<bool> {
    let opened = sqlx::query_scalar!(
        r#"WITH u AS (SELECT id FROM users
                      WHERE id = $2 AND status = 'active' AND disabled_at IS NULL FOR SHARE)
           INSERT INTO sessions (id, user_id, expires_at, last_used_at, ip, user_agent)
           SELECT $1, u.id, $3, $4, $5, $6 FROM u
           RETURNING id"#,
        id,
        user.0,
        expires_at,
        now,
        client.ip,
        client.user_agent,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if opened.is_none() {
        return Ok(false);
    }
    add_token(conn, id, token_hash, now).await?;
    Ok(true)
}

async fn add_token(
    conn: &mut PgConnection,
    session: Uuid,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO session_refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        token_hash,
        session,
        now
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A refresh token's family as a refresh must judge it, locked (token and session) for
/// the rest of the transaction: of two exchanges of one token, the second waits and then
/// sees it used.
#[derive(Debug)]
pub(crate) struct Presented {
    pub session: Uuid,
    pub user: UserId,
    pub used: bool,
    pub live: bool,
    pub account_active: bool,
}

pub(crate) async fn presented(
    conn: &mut PgConnection,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<Presented>> {
    let r = sqlx::query!(
        r#"SELECT t.session_id, t.used_at IS NOT NULL AS "used!", s.user_id,
                  (s.revoked_at IS NULL AND s.expires_at > $2) AS "live!",
                  (u.status = 'active' AND u.disabled_at IS NULL) AS "account_active!"
           FROM session_refresh_tokens t
           JOIN sessions s ON s.id = t.session_id
           JOIN users u ON u.id = s.user_id
           WHERE t.token_hash = $1
           FOR UPDATE OF t, s"#,
        token_hash,
        now
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(r.map(|r| Presented {
        session: r.session_id,
        user: UserId(r.user_id),
        used: r.used,
        live: r.live,
        account_active: r.account_active,
    }))
}

/// Consumes `old` and adds `new` to the session, noting where it was used from.
pub(crate) async fn rotate(
    conn: &mut PgConnection,
    session: Uuid,
    old: &str,
    new: &str,
    client: &ClientInfo,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "UPDATE session_refresh_tokens SET used_at = $2 WHERE token_hash = $1",
        old,
        now
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE sessions SET last_used_at = $2, ip = COALESCE($3, ip),
                user_agent = COALESCE($4, user_agent)
         WHERE id = $1",
        session,
        now,
        client.ip,
        client.user_agent
    )
    .execute(&mut *conn)
    .await?;
    add_token(conn, session, new, now).await
}

/// Revokes one of `user`'s live sessions; false if there is none such (not theirs, or
/// already ended).
pub(crate) async fn revoke(
    conn: &mut PgConnection,
    user: UserId,
    session: Uuid,
    reason: RevokeReason,
    now: DateTime<Utc>,
) -> Result<bool> {
    let n = sqlx::query!(
        "UPDATE sessions SET revoked_at = $3, revoke_reason = $4
         WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
        session,
        user.0,
        now,
        reason.as_str()
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Revokes every live session of `user` but `except`; how many.
pub(crate) async fn revoke_all(
    conn: &mut PgConnection,
    user: UserId,
    except: Option<Uuid>,
    reason: RevokeReason,
    now: DateTime<Utc>,
) -> Result<u64> {
    let n = sqlx::query!(
        "UPDATE sessions SET revoked_at = $3, revoke_reason = $4
         WHERE user_id = $1 AND revoked_at IS NULL AND ($2::uuid IS NULL OR id <> $2)",
        user.0,
        except,
        now,
        reason.as_str()
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n)
}

/// What an access token's session says now: the account's role and whether the session
/// (and the account) still stand. `None`: no such session of that user.
#[derive(Debug)]
pub(crate) struct Standing {
    pub role: crate::users::Role,
    pub valid: bool,
}

pub(crate) async fn standing(
    conn: &mut PgConnection,
    session: Uuid,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<Option<Standing>> {
    let r = sqlx::query!(
        r#"SELECT u.role AS "role: crate::users::Role",
                  (s.revoked_at IS NULL AND s.expires_at > $3 AND u.status = 'active'
                   AND u.disabled_at IS NULL) AS "valid!"
           FROM sessions s JOIN users u ON u.id = s.user_id
           WHERE s.id = $1 AND s.user_id = $2"#,
        session,
        user.0,
        now
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(r.map(|r| Standing {
        role: r.role,
        valid: r.valid,
    }))
}

/// A live session as its owner sees it.
#[derive(Debug, Clone)]
pub(crate) struct SessionRow {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// `user`'s live sessions, the last used first.
pub(crate) async fn live(
    conn: &mut PgConnection,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<Vec<SessionRow>> {
    let rows = sqlx::query_as!(
        SessionRow,
        "SELECT id, created_at, last_used_at, expires_at, ip, user_agent FROM sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
         ORDER BY last_used_at DESC LIMIT 100",
        user.0,
        now
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// Deletes `user`'s sessions that ended more than `keep` ago (their tokens go with them):
/// a reused token of an ended family can no longer be told from an unknown one, which is
/// refused all the same.
pub(crate) async fn prune(
    conn: &mut PgConnection,
    user: UserId,
    before: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "DELETE FROM sessions WHERE user_id = $1
           AND (expires_at < $2 OR revoked_at < $2)",
        user.0,
        before
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Opens console session `id` for `user`, held by the cookie whose SHA-256 is
/// `cookie_hash` — only while the account is active and may use the console (the user
/// row share-locked, as [`open`] does). False otherwise.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn open_console(
    conn: &mut PgConnection,
    id: Uuid,
    user: UserId,
    cookie_hash: &str,
    csrf_token: &str,
    client: &ClientInfo,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<bool> {
    let opened = sqlx::query_scalar!(
        r#"WITH u AS (SELECT id FROM users
                      WHERE id = $2 AND status = 'active' AND disabled_at IS NULL
                        AND role IN ('admin', 'operator') FOR SHARE)
           INSERT INTO sessions (id, user_id, expires_at, last_used_at, ip, user_agent,
                                 kind, cookie_hash, csrf_token)
           SELECT $1, u.id, $3, $4, $5, $6, 'console', $7, $8 FROM u
           RETURNING id"#,
        id,
        user.0,
        expires_at,
        now,
        client.ip,
        client.user_agent,
        cookie_hash,
        csrf_token,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(opened.is_some())
}

/// A console session found by its cookie, with its account as it is now.
#[derive(Debug)]
pub(crate) struct ConsoleRow {
    pub id: Uuid,
    pub user_id: UserId,
    pub email: String,
    pub role: crate::users::Role,
    pub csrf_token: String,
    pub last_used_at: DateTime<Utc>,
    /// Not revoked, not expired, and the account active, enabled and still an admin or
    /// operator (idleness is judged by the caller, which knows the timeout).
    pub standing: bool,
}

pub(crate) async fn console_by_cookie(
    conn: &mut PgConnection,
    cookie_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<ConsoleRow>> {
    let row = sqlx::query_as!(
        ConsoleRow,
        r#"SELECT s.id, s.user_id AS "user_id: UserId", u.email,
                  u.role AS "role: crate::users::Role", s.csrf_token AS "csrf_token!",
                  s.last_used_at,
                  (s.revoked_at IS NULL AND s.expires_at > $2 AND u.status = 'active'
                   AND u.disabled_at IS NULL AND u.role IN ('admin', 'operator')) AS "standing!"
           FROM sessions s JOIN users u ON u.id = s.user_id
           WHERE s.cookie_hash = $1 AND s.kind = 'console'"#,
        cookie_hash,
        now
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row)
}

/// Notes a request of session `id`, at most once per `every` (a page view must not cost
/// a write each time; the idle timeout is far coarser).
pub(crate) async fn touch(
    conn: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
    every: chrono::Duration,
) -> Result<()> {
    sqlx::query!(
        "UPDATE sessions SET last_used_at = $2 WHERE id = $1 AND last_used_at < $3",
        id,
        now,
        now - every
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
