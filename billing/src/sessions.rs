//! Sessions: JWT access tokens, rotating refresh-token families in Redis, logout.
//!
//! A login opens a *family*. Each refresh consumes its token and issues the next one in
//! the same family; presenting a consumed token means it leaked, so the whole family is
//! revoked. Access tokens carry their family (`sid`), so revoking a family also kills the
//! access tokens issued in it, and logout denylists the token's `jti` until it expires.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use redis::AsyncCommands;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::users::{self, Role, User, UserStatus};
use crate::{passwords, validate, Ctx};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string per RFC 7519.
    pub sub: String,
    pub role: Role,
    pub jti: String,
    /// The refresh-token family this access token belongs to.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
}

/// The caller of an authenticated request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: UserId,
    pub role: Role,
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

fn encoding_key(ctx: &Ctx) -> EncodingKey {
    EncodingKey::from_secret(ctx.settings.auth.jwt_secret.expose_secret().as_bytes())
}

fn decoding_key(ctx: &Ctx) -> DecodingKey {
    DecodingKey::from_secret(ctx.settings.auth.jwt_secret.expose_secret().as_bytes())
}

/// Signs any short-lived claim set with the service key (access tokens, OAuth state,
/// signup tokens); `typ` in the header keeps one kind from passing for another.
pub(crate) fn sign<T: Serialize>(ctx: &Ctx, typ: &str, claims: &T) -> Result<String> {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some(typ.to_owned());
    jsonwebtoken::encode(&header, claims, &encoding_key(ctx))
        .map_err(|e| Error::Internal(format!("jwt encode: {e}")))
}

/// The claims of a token of type `typ` signed by us that has not expired by the `Clock`
/// (jsonwebtoken's own expiry check reads the system time, so it is off).
pub(crate) fn verify<T: for<'de> Deserialize<'de>>(ctx: &Ctx, typ: &str, token: &str) -> Option<T> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_exp = false;
    validation.required_spec_claims = ["exp"].into_iter().map(String::from).collect();
    let data =
        jsonwebtoken::decode::<serde_json::Value>(token, &decoding_key(ctx), &validation).ok()?;
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

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

struct Keys<'a>(&'a Ctx);

impl Keys<'_> {
    /// refresh token digest → "family user_id"
    fn token(&self, digest: &str) -> String {
        self.0.kv.key(&format!("rt:{digest}"))
    }
    /// set once a refresh token has been exchanged
    fn used(&self, digest: &str) -> String {
        self.0.kv.key(&format!("rtu:{digest}"))
    }
    /// live family → user id
    fn family(&self, family: &str) -> String {
        self.0.kv.key(&format!("fam:{family}"))
    }
    /// a user's families, so withdrawal can revoke them all
    fn user_families(&self, user: UserId) -> String {
        self.0.kv.key(&format!("ufam:{user}"))
    }
    fn denied(&self, jti: &str) -> String {
        self.0.kv.key(&format!("deny:{jti}"))
    }
}

fn access_token(ctx: &Ctx, user: &User, family: &str) -> Result<(String, u64)> {
    let now = ctx.clock.now().timestamp();
    let ttl = ctx.settings.auth.access_ttl_secs.as_secs();
    let claims = Claims {
        sub: user.id.to_string(),
        role: user.role,
        jti: Uuid::new_v4().to_string(),
        sid: family.to_owned(),
        iat: now,
        exp: now + ttl as i64,
    };
    Ok((sign(ctx, ACCESS_TYP, &claims)?, ttl))
}

/// Stores a new refresh token in `family` and signs its access token.
async fn issue_in_family(
    ctx: &Ctx,
    user: &User,
    family: &str,
    new_family: bool,
) -> Result<TokenPair> {
    let keys = Keys(ctx);
    let refresh = random_token();
    let ttl = ctx.settings.auth.refresh_ttl_secs.as_secs();
    let token_key = keys.token(&digest(&refresh));
    let family_key = keys.family(family);
    let user_key = keys.user_families(user.id);
    let value = format!("{family} {}", user.id);
    let uid = user.id.0;
    let fam = family.to_owned();
    ctx.kv
        .run(|mut c| async move {
            let mut pipe = redis::pipe();
            pipe.atomic().set_ex(&token_key, value, ttl).ignore();
            if new_family {
                pipe.set_ex(&family_key, uid, ttl).ignore();
            } else {
                // Rotation keeps the family alive as long as it is being used.
                pipe.expire(&family_key, ttl as i64).ignore();
            }
            pipe.sadd(&user_key, fam).ignore();
            pipe.expire(&user_key, ttl as i64).ignore();
            pipe.query_async::<()>(&mut c).await
        })
        .await?;
    let (access_token, expires_in) = access_token(ctx, user, family)?;
    Ok(TokenPair {
        access_token,
        refresh_token: refresh,
        token_type: "Bearer",
        expires_in,
    })
}

/// Opens a new session (family) for `user`.
pub async fn open(ctx: &Ctx, user: &User) -> Result<TokenPair> {
    let family = Uuid::new_v4().to_string();
    issue_in_family(ctx, user, &family, true).await
}

pub async fn login(ctx: &Ctx, email: &str, password: &str) -> Result<TokenPair> {
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
    let pair = open(ctx, &user).await?;
    tracing::info!(user_id = %user.id, "logged in");
    Ok(pair)
}

pub async fn refresh(ctx: &Ctx, refresh_token: &str) -> Result<TokenPair> {
    let keys = Keys(ctx);
    let d = digest(refresh_token);
    let token_key = keys.token(&d);
    let stored: Option<String> = ctx
        .kv
        .run(|mut c| async move { c.get(&token_key).await })
        .await?;
    let Some((family, user_id)) = stored.as_deref().and_then(|s| s.split_once(' ')) else {
        return Err(Error::InvalidRefreshToken);
    };
    let user_id = UserId(user_id.parse().map_err(|_| Error::InvalidRefreshToken)?);
    let family = family.to_owned();

    let family_key = keys.family(&family);
    let used_key = keys.used(&d);
    let ttl = ctx.settings.auth.refresh_ttl_secs.as_secs();
    // SET NX makes "first use" atomic: of two concurrent exchanges only one wins.
    let (alive, first_use): (bool, bool) = ctx
        .kv
        .run(|mut c| async move {
            let alive: bool = c.exists(&family_key).await?;
            let first: Option<String> = redis::cmd("SET")
                .arg(&used_key)
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(ttl)
                .query_async(&mut c)
                .await?;
            Ok((alive, first.is_some()))
        })
        .await?;
    if !alive {
        return Err(Error::InvalidRefreshToken);
    }
    if !first_use {
        revoke_family(ctx, user_id, &family).await?;
        tracing::warn!(user_id = %user_id, "refresh token reused; session family revoked");
        return Err(Error::RefreshTokenReused);
    }
    let mut conn = ctx.db.acquire().await?;
    let user = users::find_by_id(&mut conn, user_id).await?;
    drop(conn);
    match user {
        Some(user) if user.status == UserStatus::Active => {
            issue_in_family(ctx, &user, &family, false).await
        }
        _ => {
            revoke_family(ctx, user_id, &family).await?;
            Err(Error::InvalidRefreshToken)
        }
    }
}

async fn revoke_family(ctx: &Ctx, user: UserId, family: &str) -> Result<()> {
    let keys = Keys(ctx);
    let family_key = keys.family(family);
    let user_key = keys.user_families(user);
    let fam = family.to_owned();
    ctx.kv
        .run(|mut c| async move {
            redis::pipe()
                .atomic()
                .del(&family_key)
                .ignore()
                .srem(&user_key, fam)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
}

/// Ends the caller's session: the access token is denylisted until it would have
/// expired and its family (every refresh token of this login) is revoked.
pub async fn logout(ctx: &Ctx, principal: &Principal) -> Result<()> {
    let keys = Keys(ctx);
    let remaining = (principal.claims.exp - ctx.clock.now().timestamp()).max(1) as u64;
    let deny_key = keys.denied(&principal.claims.jti);
    ctx.kv
        .run(|mut c| async move { c.set_ex::<_, _, ()>(&deny_key, 1, remaining).await })
        .await?;
    revoke_family(ctx, principal.user_id, &principal.claims.sid).await
}

/// Revokes every session of a user (withdrawal).
pub async fn revoke_all(ctx: &Ctx, user: UserId) -> Result<()> {
    let keys = Keys(ctx);
    let user_key = keys.user_families(user);
    let families: Vec<String> = {
        let k = user_key.clone();
        ctx.kv
            .run(|mut c| async move { c.smembers(&k).await })
            .await?
    };
    let family_keys: Vec<String> = families.iter().map(|f| keys.family(f)).collect();
    ctx.kv
        .run(|mut c| async move {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for k in &family_keys {
                pipe.del(k).ignore();
            }
            pipe.del(&user_key).ignore();
            pipe.query_async::<()>(&mut c).await
        })
        .await
}

/// Checks a bearer token: signature, expiry, then that neither it nor its family has
/// been revoked. Redis being down is `Unavailable`, never a pass.
pub async fn authenticate(ctx: &Ctx, bearer: &str) -> Result<Principal> {
    let claims: Claims = verify(ctx, ACCESS_TYP, bearer).ok_or(Error::InvalidToken)?;
    let user_id = UserId(claims.sub.parse().map_err(|_| Error::InvalidToken)?);
    let keys = Keys(ctx);
    let deny_key = keys.denied(&claims.jti);
    let family_key = keys.family(&claims.sid);
    let (denied, family_alive): (bool, bool) = ctx
        .kv
        .run(|mut c| async move {
            redis::pipe()
                .exists(&deny_key)
                .exists(&family_key)
                .query_async(&mut c)
                .await
        })
        .await?;
    if denied || !family_alive {
        return Err(Error::InvalidToken);
    }
    Ok(Principal {
        user_id,
        role: claims.role,
        claims,
    })
}
