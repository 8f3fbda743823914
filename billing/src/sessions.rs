//! Sessions: JWT access tokens (signed with a key id, so keys rotate with overlap) and
//! rotating refresh-token families in Postgres (`store::sessions`), listed and ended by
//! their owner.
//!
//! A login opens a *family* (a session). Each refresh consumes its token and issues the
//! next one in the same family; presenting a consumed token means it leaked, so the whole
//! family is revoked. Access tokens carry their family (`sid`): every request checks, in
//! Postgres, that the family stands and the account is active, and takes the role from
//! the account — so a logout, a revocation, a withdrawal or a role change applies to the
//! next request, and losing Redis logs nobody out.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::ids::UserId;
pub use crate::store::sessions::ClientInfo;
use crate::store::sessions::{self as rows, RevokeReason};
use crate::users::{self, Role, User, UserStatus};
use crate::{passwords, validate, Ctx};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string per RFC 7519.
    pub sub: String,
    /// The role when the token was issued; requests use the account's role now.
    pub role: Role,
    pub jti: String,
    /// The refresh-token family (session) this access token belongs to.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
}

/// The caller of an authenticated request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: UserId,
    /// The account's role now (not the token's).
    pub role: Role,
    pub session: Uuid,
    pub claims: Claims,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// A signing key's id: the first 16 hex digits of its SHA-256 — stable, says nothing of
/// the key, and needs no configuration of its own.
fn key_id(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))[..16].to_owned()
}

/// The key that verifies a token whose header names `kid`: the current signing key, or a
/// previous one still verifying (`auth.jwt_previous_secrets`) while its tokens live. A
/// token without `kid` (issued before keys had ids) is the current key's.
fn decoding_key(ctx: &Ctx, kid: Option<&str>) -> Option<DecodingKey> {
    let current = ctx.settings.auth.jwt_secret.expose_secret();
    let Some(kid) = kid else {
        return Some(DecodingKey::from_secret(current.as_bytes()));
    };
    std::iter::once(current)
        .chain(
            ctx.settings
                .auth
                .jwt_previous_secrets
                .iter()
                .map(|s| s.expose_secret()),
        )
        .find(|secret| key_id(secret) == kid)
        .map(|secret| DecodingKey::from_secret(secret.as_bytes()))
}

/// Signs any short-lived claim set with the current service key (access tokens, social
/// signup tokens), its id in `kid`; `typ` in the header keeps one kind from passing for
/// another.
pub(crate) fn sign<T: Serialize>(ctx: &Ctx, typ: &str, claims: &T) -> Result<String> {
    let secret = ctx.settings.auth.jwt_secret.expose_secret();
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some(typ.to_owned());
    header.kid = Some(key_id(secret));
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| Error::Internal(format!("jwt encode: {e}")))
}

/// The claims of a token of type `typ` signed by one of our keys that has not expired by
/// the `Clock` (jsonwebtoken's own expiry check reads the system time, so it is off).
pub(crate) fn verify<T: for<'de> Deserialize<'de>>(ctx: &Ctx, typ: &str, token: &str) -> Option<T> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    let key = decoding_key(ctx, header.kid.as_deref())?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_exp = false;
    validation.required_spec_claims = ["exp"].into_iter().map(String::from).collect();
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).ok()?;
    if data.header.typ.as_deref() != Some(typ) {
        return None;
    }
    let exp = data.claims.get("exp")?.as_i64()?;
    if exp < ctx.clock.now().timestamp() {
        return None;
    }
    serde_json::from_value(data.claims).ok()
}

const ACCESS_TYP: &str = "at+jwt";

pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn access_token(ctx: &Ctx, user: &User, family: Uuid) -> Result<(String, u64)> {
    let now = ctx.clock.now().timestamp();
    let ttl = ctx.settings.auth.access_ttl_secs.as_secs();
    let claims = Claims {
        sub: user.id.to_string(),
        role: user.role,
        jti: Uuid::new_v4().to_string(),
        sid: family.to_string(),
        iat: now,
        exp: now + ttl as i64,
    };
    Ok((sign(ctx, ACCESS_TYP, &claims)?, ttl))
}

fn pair(ctx: &Ctx, user: &User, family: Uuid, refresh: String) -> Result<TokenPair> {
    let (access_token, expires_in) = access_token(ctx, user, family)?;
    Ok(TokenPair {
        access_token,
        refresh_token: refresh,
        token_type: "Bearer",
        expires_in,
    })
}

/// Opens a new session (family) for `user` (a social login; no client details).
pub async fn open(ctx: &Ctx, user: &User) -> Result<TokenPair> {
    open_with(ctx, user, &ClientInfo::default()).await
}

/// Opens a new session for `user` from `client`. Refused (`AccountWithdrawn`) if the
/// account is not active when the session row is written — whatever was checked before.
pub async fn open_with(ctx: &Ctx, user: &User, client: &ClientInfo) -> Result<TokenPair> {
    let now = ctx.clock.now();
    let ttl = chrono::Duration::from_std(ctx.settings.auth.refresh_ttl_secs)
        .unwrap_or(chrono::Duration::days(7));
    let family = Uuid::new_v4();
    let refresh = random_token();
    let mut tx = ctx.db.begin().await?;
    // Sessions that ended long ago are of no use to anyone: the user's own go now.
    rows::prune(&mut tx, user.id, now - ttl).await?;
    if !rows::open(
        &mut tx,
        family,
        user.id,
        &digest(&refresh),
        client,
        now,
        now + ttl,
    )
    .await?
    {
        return Err(Error::AccountWithdrawn);
    }
    tx.commit().await?;
    pair(ctx, user, family, refresh)
}

pub async fn login(
    ctx: &Ctx,
    email: &str,
    password: &str,
    client: &ClientInfo,
) -> Result<TokenPair> {
    let user = check_credentials(ctx, email, password).await?;
    let pair = open_with(ctx, &user, client).await?;
    tracing::info!(user_id = %user.id, "logged in");
    Ok(pair)
}

/// The account an e-mail and password sign in to, if it may sign in: the same answer, in
/// about the same time, whether the e-mail is unknown or the password wrong.
async fn check_credentials(ctx: &Ctx, email: &str, password: &str) -> Result<User> {
    let email = validate::normalize_email(email);
    if email.is_empty() || password.is_empty() {
        return Err(Error::InvalidCredentials);
    }
    let mut conn = ctx.db.acquire().await?;
    let found = users::find_for_login(&mut conn, &email).await?;
    drop(conn);
    let Some((user, Some(hash))) = found else {
        passwords::verify_dummy(password.to_owned()).await;
        return Err(Error::InvalidCredentials);
    };
    if !passwords::verify(password.to_owned(), hash).await? {
        return Err(Error::InvalidCredentials);
    }
    if user.status == UserStatus::Withdrawn {
        return Err(Error::AccountWithdrawn);
    }
    if user.disabled_at.is_some() {
        return Err(Error::AccountDisabled);
    }
    Ok(user)
}

/// Exchanges a refresh token for the next pair of its family. A consumed token presented
/// again revokes the family (`RefreshTokenReused`); an ended family, an expired one or an
/// account no longer active is `InvalidRefreshToken`.
pub async fn refresh(ctx: &Ctx, refresh_token: &str, client: &ClientInfo) -> Result<TokenPair> {
    if !validate::plausible_token(refresh_token) {
        return Err(Error::InvalidRefreshToken);
    }
    let now = ctx.clock.now();
    let old = digest(refresh_token);
    let mut tx = ctx.db.begin().await?;
    let Some(p) = rows::presented(&mut tx, &old, now).await? else {
        return Err(Error::InvalidRefreshToken);
    };
    if !p.live {
        return Err(Error::InvalidRefreshToken);
    }
    if p.used {
        rows::revoke(
            &mut tx,
            p.user,
            p.session,
            RevokeReason::RefreshTokenReused,
            now,
        )
        .await?;
        tx.commit().await?;
        tracing::warn!(user_id = %p.user, "refresh token reused; session revoked");
        return Err(Error::RefreshTokenReused);
    }
    if !p.account_active {
        rows::revoke(
            &mut tx,
            p.user,
            p.session,
            RevokeReason::AccountInactive,
            now,
        )
        .await?;
        tx.commit().await?;
        return Err(Error::InvalidRefreshToken);
    }
    let user = users::find_by_id(&mut tx, p.user)
        .await?
        .ok_or(Error::InvalidRefreshToken)?;
    let next = random_token();
    rows::rotate(&mut tx, p.session, &old, &digest(&next), client, now).await?;
    tx.commit().await?;
    pair(ctx, &user, p.session, next)
}

/// Ends the caller's session: its refresh tokens and every access token of it stop
/// working at once.
pub async fn logout(ctx: &Ctx, principal: &Principal) -> Result<()> {
    let mut conn = ctx.db.acquire().await?;
    rows::revoke(
        &mut conn,
        principal.user_id,
        principal.session,
        RevokeReason::Logout,
        ctx.clock.now(),
    )
    .await?;
    Ok(())
}

/// One of the caller's sessions, as `GET /api/users/me/sessions` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    /// The session making this request.
    pub current: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The last login or refresh (access tokens live 30 minutes between them).
    pub last_used_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The caller's live sessions, the last used first.
pub async fn list(ctx: &Ctx, principal: &Principal) -> Result<Vec<SessionView>> {
    let mut conn = ctx.db.acquire().await?;
    let rows = rows::live(&mut conn, principal.user_id, ctx.clock.now()).await?;
    Ok(rows
        .into_iter()
        .map(|r| SessionView {
            current: r.id == principal.session,
            id: r.id,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            expires_at: r.expires_at,
            ip: r.ip,
            user_agent: r.user_agent,
        })
        .collect())
}

/// Ends one of the caller's sessions (another device's, or this one); someone else's, or
/// one already ended, is `NotFound`.
pub async fn end(ctx: &Ctx, principal: &Principal, id: Uuid) -> Result<()> {
    let mut conn = ctx.db.acquire().await?;
    let now = ctx.clock.now();
    if !rows::revoke(
        &mut conn,
        principal.user_id,
        id,
        RevokeReason::EndedByUser,
        now,
    )
    .await?
    {
        return Err(Error::NotFound);
    }
    tracing::info!(user_id = %principal.user_id, "session ended by its owner");
    Ok(())
}

/// "Sign out everywhere": every session of the caller ends, this one too. How many.
pub async fn end_all(ctx: &Ctx, principal: &Principal) -> Result<u64> {
    let mut conn = ctx.db.acquire().await?;
    let n = rows::revoke_all(
        &mut conn,
        principal.user_id,
        None,
        RevokeReason::SignOutEverywhere,
        ctx.clock.now(),
    )
    .await?;
    tracing::info!(user_id = %principal.user_id, sessions = n, "signed out everywhere");
    Ok(n)
}

/// Revokes every session of a user but `except`, in the caller's transaction (a password
/// change keeps the session that made it; a withdrawal keeps none).
pub(crate) async fn revoke_all(
    conn: &mut sqlx::PgConnection,
    user: UserId,
    except: Option<Uuid>,
    reason: RevokeReason,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64> {
    rows::revoke_all(conn, user, except, reason, now).await
}

/// Checks a bearer token: signature (any live key), expiry, then — in Postgres — that its
/// session stands and its account is active; the role is the account's now.
pub async fn authenticate(ctx: &Ctx, bearer: &str) -> Result<Principal> {
    let claims: Claims = verify(ctx, ACCESS_TYP, bearer).ok_or(Error::InvalidToken)?;
    let user_id = UserId(claims.sub.parse().map_err(|_| Error::InvalidToken)?);
    let session = Uuid::parse_str(&claims.sid).map_err(|_| Error::InvalidToken)?;
    let mut conn = ctx.db.acquire().await?;
    let standing = rows::standing(&mut conn, session, user_id, ctx.clock.now())
        .await?
        .filter(|s| s.valid)
        .ok_or(Error::InvalidToken)?;
    Ok(Principal {
        user_id,
        role: standing.role,
        session,
        claims,
    })
}

/// A signed-in operator console: who (their role now) and the CSRF token every form of
/// the session must send back.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub id: Uuid,
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    pub csrf_token: String,
}

impl ConsoleSession {
    /// Admins act; operators only look.
    pub fn can_act(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether a form's token is this session's. Compared as digests, so the time taken
    /// says nothing about how much of the token was right.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        Sha256::digest(presented.as_bytes()) == Sha256::digest(self.csrf_token.as_bytes())
    }
}

/// A console sign-in: the session, and the value of the cookie that holds it (only its
/// SHA-256 is stored).
#[derive(Debug)]
pub struct ConsoleSignIn {
    pub cookie: String,
    pub session: ConsoleSession,
}

/// Signs an admin or operator in to the console; any other account is
/// `ConsoleNotAllowed` once its password is proven.
pub async fn console_sign_in(
    ctx: &Ctx,
    email: &str,
    password: &str,
    client: &ClientInfo,
) -> Result<ConsoleSignIn> {
    let user = check_credentials(ctx, email, password).await?;
    if !matches!(user.role, Role::Admin | Role::Operator) {
        return Err(Error::ConsoleNotAllowed);
    }
    let now = ctx.clock.now();
    let ttl = chrono::Duration::from_std(ctx.settings.console.session_ttl_secs)
        .unwrap_or(chrono::Duration::hours(12));
    let id = Uuid::new_v4();
    let cookie = random_token();
    let csrf_token = random_token();
    let mut tx = ctx.db.begin().await?;
    rows::prune(&mut tx, user.id, now - ttl).await?;
    if !rows::open_console(
        &mut tx,
        id,
        user.id,
        &digest(&cookie),
        &csrf_token,
        client,
        now,
        now + ttl,
    )
    .await?
    {
        // Withdrawn, disabled or demoted between the password check and now.
        return Err(Error::ConsoleNotAllowed);
    }
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "signed in to the console");
    Ok(ConsoleSignIn {
        cookie,
        session: ConsoleSession {
            id,
            user_id: user.id,
            email: user.email,
            role: user.role,
            csrf_token,
        },
    })
}

/// The console session a cookie holds, if it stands: not signed out, revoked or expired,
/// used within the idle timeout, its account active and still an admin or operator. An
/// idle session found here is ended for good.
pub async fn console_session(ctx: &Ctx, cookie: &str) -> Result<Option<ConsoleSession>> {
    if !validate::plausible_token(cookie) {
        return Ok(None);
    }
    let now = ctx.clock.now();
    let idle = chrono::Duration::from_std(ctx.settings.console.idle_timeout_secs)
        .unwrap_or(chrono::Duration::minutes(30));
    let mut conn = ctx.db.acquire().await?;
    let Some(row) = rows::console_by_cookie(&mut conn, &digest(cookie), now).await? else {
        return Ok(None);
    };
    if !row.standing {
        return Ok(None);
    }
    if row.last_used_at + idle <= now {
        rows::revoke(
            &mut conn,
            row.user_id,
            row.id,
            RevokeReason::IdleTimeout,
            now,
        )
        .await?;
        return Ok(None);
    }
    // A minute's precision is plenty against a timeout of many.
    rows::touch(&mut conn, row.id, now, chrono::Duration::seconds(60)).await?;
    Ok(Some(ConsoleSession {
        id: row.id,
        user_id: row.user_id,
        email: row.email,
        role: row.role,
        csrf_token: row.csrf_token,
    }))
}

/// Signs the console session out.
pub async fn console_sign_out(ctx: &Ctx, session: &ConsoleSession) -> Result<()> {
    let mut conn = ctx.db.acquire().await?;
    rows::revoke(
        &mut conn,
        session.user_id,
        session.id,
        RevokeReason::Logout,
        ctx.clock.now(),
    )
    .await?;
    tracing::info!(user_id = %session.user_id, "signed out of the console");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_stable_short_and_distinct() {
        let a = key_id("a-secret-of-at-least-thirty-two-bytes!!");
        assert_eq!(a.len(), 16);
        assert_eq!(a, key_id("a-secret-of-at-least-thirty-two-bytes!!"));
        assert_ne!(a, key_id("another-secret-of-at-least-32-bytes!!!"));
    }
}
