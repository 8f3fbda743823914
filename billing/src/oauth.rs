//! Social login (OAuth2 authorization-code flow with PKCE) for providers configured by URL.
//!
//! Each `authorize` opens one login attempt in `oauth_states`: the hash of the opaque
//! `state` sent to the provider, the PKCE code verifier (RFC 7636, S256) and the hash of a
//! random *browser binding* that the API hands to the browser in an HttpOnly cookie. The
//! callback redeems an attempt once, and only with that cookie: a state that is unknown,
//! expired, already used, meant for another provider or presented by another browser (login
//! CSRF: an attacker's own callback URL sent to a victim) is refused before the provider is
//! called. The code exchange sends the verifier, so an intercepted code is useless alone.
//! Attempts live in Postgres, not Redis, so a login in progress survives a Redis restart.
//!
//! A first-time social user gets a signup token and finishes with contact details; an
//! e-mail that already belongs to an account is never silently attached to the social
//! identity.

use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Dependency, Error, Result};
use crate::sessions::{self, TokenPair};
use crate::settings::OAuthProvider;
use crate::users::{self, NewUser, Role, UserStatus};
use crate::validate::{self, Checks};
use crate::Ctx;

const SIGNUP_TYP: &str = "oauth-signup";

/// The cookie that binds a login attempt to the browser that started it.
pub const BINDING_COOKIE: &str = "pv_oauth_binding";

/// Expired attempts one `authorize` deletes at most: each call adds one row and removes up
/// to this many, so the expired backlog only shrinks while logins are started, and the
/// work per call stays small.
const PRUNE_BATCH: i64 = 100;

#[derive(Debug, Serialize, Deserialize)]
struct SignupClaims {
    prv: String,
    sub: String,
    email: Option<String>,
    exp: i64,
}

/// PKCE with the S256 method (RFC 7636).
pub mod pkce {
    use base64::Engine;
    use sha2::{Digest, Sha256};

    /// A fresh code verifier: 32 random octets in base64url, 43 characters of the
    /// unreserved set (§4.1 asks for 43–128 with 256 bits of entropy).
    pub fn verifier() -> String {
        super::random_token()
    }

    /// `BASE64URL(SHA256(ASCII(code_verifier)))`, unpadded (§4.2).
    pub fn challenge(verifier: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
    }
}

/// 32 random octets, base64url: a state, a browser binding or a code verifier.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the database keeps instead of a state or a binding.
fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Query parameters the provider sends back to the callback.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

pub enum CallbackOutcome {
    LoggedIn(TokenPair),
    SignupRequired {
        signup_token: String,
        email: Option<String>,
    },
}

/// `POST /api/auth/oauth/complete`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CompleteInput {
    #[schema(required = true)]
    pub signup_token: String,
    #[schema(required = true)]
    pub display_name: String,
    #[schema(required = true)]
    pub phone: String,
    #[schema(required = true)]
    pub city: String,
    #[schema(required = true)]
    pub detail_address: String,
    pub real_name: Option<String>,
    /// Only used when the provider did not share an e-mail.
    pub email: Option<String>,
}

fn provider(ctx: &Ctx, name: &str) -> Result<OAuthProvider> {
    ctx.settings
        .oauth
        .provider(name)
        .ok_or(Error::UnknownOAuthProvider)
}

fn redirect_uri(ctx: &Ctx, provider: &str) -> String {
    format!(
        "{}/api/auth/oauth/{provider}/callback",
        ctx.settings.api.public_url.trim_end_matches('/')
    )
}

/// A login attempt just opened: where to send the browser, and the cookie it must bring
/// back to the callback.
#[derive(Debug)]
pub struct Authorization {
    /// The provider's authorization URL (with `state` and the S256 `code_challenge`).
    pub url: String,
    /// The browser binding, the value of [`BINDING_COOKIE`]; only its hash is stored.
    pub binding: String,
    /// The path of the provider's callback: the cookie goes there and nowhere else.
    pub cookie_path: String,
    /// How long the attempt, and so the cookie, lives.
    pub max_age: Duration,
}

/// The path the browser will call back on, fit for a cookie's `Path` (`None` for an
/// unknown provider, or a configured name a `Set-Cookie` line could not carry safely).
/// It follows `api.public_url`, so a deployment under a path prefix scopes it right.
pub fn cookie_path(ctx: &Ctx, name: &str) -> Option<String> {
    let p = provider(ctx, name).ok()?;
    let url = url::Url::parse(&redirect_uri(ctx, &p.name)).ok()?;
    let path = url.path();
    path.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~%".contains(&b))
        .then(|| path.to_owned())
}

/// Opens a login attempt at provider `name`: a fresh state, browser binding and PKCE
/// verifier, stored (state and binding as hashes) until `auth.oauth_state_ttl_secs`.
pub async fn authorize(ctx: &Ctx, name: &str) -> Result<Authorization> {
    let p = provider(ctx, name)?;
    let cookie_path = cookie_path(ctx, name)
        .ok_or_else(|| Error::Internal(format!("oauth provider name {name:?} is not URL-safe")))?;
    let state = random_token();
    let binding = random_token();
    let verifier = pkce::verifier();
    let max_age = ctx.settings.auth.oauth_state_ttl_secs;
    let now = ctx.clock.now();
    let expires_at = chrono::TimeDelta::from_std(max_age)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .ok_or_else(|| Error::Internal("oauth_state_ttl_secs out of range".into()))?;

    prune(ctx, now).await?;
    sqlx::query!(
        "INSERT INTO oauth_states
             (state_hash, provider, code_verifier, binding_hash, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        digest(&state),
        p.name,
        verifier,
        digest(&binding),
        now,
        expires_at,
    )
    .execute(ctx.db.pool())
    .await?;

    let mut url = url::Url::parse(&p.authorize_url)
        .map_err(|e| Error::Internal(format!("authorize_url: {e}")))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &p.client_id)
        .append_pair("redirect_uri", &redirect_uri(ctx, name))
        .append_pair("state", &state)
        .append_pair("code_challenge", &pkce::challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    if !p.scopes.is_empty() {
        url.query_pairs_mut()
            .append_pair("scope", &p.scopes.join(" "));
    }
    Ok(Authorization {
        url: url.into(),
        binding,
        cookie_path,
        max_age,
    })
}

/// Deletes a batch of expired attempts, oldest first; a concurrent `authorize` skips the
/// rows this one is deleting rather than waiting for them.
async fn prune(ctx: &Ctx, now: chrono::DateTime<chrono::Utc>) -> Result<()> {
    let pruned = sqlx::query!(
        "DELETE FROM oauth_states WHERE state_hash IN (
             SELECT state_hash FROM oauth_states WHERE expires_at <= $1
             ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        now,
        PRUNE_BATCH,
    )
    .execute(ctx.db.pool())
    .await?
    .rows_affected();
    if pruned > 0 {
        tracing::debug!(pruned, "expired oauth states pruned");
    }
    Ok(())
}

/// Redeems the attempt `state` names for provider `name`, once, from the browser that
/// started it; answers its code verifier. Every refusal is the same
/// `InvalidOAuthState`; the log says which one it was.
async fn redeem(
    ctx: &Ctx,
    provider: &str,
    state: Option<&str>,
    binding: Option<&str>,
) -> Result<String> {
    let refuse = |reason: &str| {
        tracing::info!(provider, reason, "oauth state refused");
        Err(Error::InvalidOAuthState)
    };
    let Some(state) = state.filter(|s| !s.is_empty()) else {
        return refuse("no state");
    };
    let Some(binding) = binding.filter(|b| !b.is_empty()) else {
        return refuse("no browser binding cookie");
    };
    let now = ctx.clock.now();
    let state_hash = digest(state);
    let redeemed = sqlx::query_scalar!(
        "UPDATE oauth_states SET used_at = $4
         WHERE state_hash = $1 AND provider = $2 AND binding_hash = $3
           AND used_at IS NULL AND expires_at > $4
         RETURNING code_verifier",
        state_hash,
        provider,
        digest(binding),
        now,
    )
    .fetch_optional(ctx.db.pool())
    .await?;
    if let Some(verifier) = redeemed {
        return Ok(verifier);
    }
    // Only for the log: the answer is the same whatever the reason.
    let row = sqlx::query!(
        r#"SELECT provider, used_at IS NOT NULL AS "used!", expires_at <= $2 AS "expired!"
           FROM oauth_states WHERE state_hash = $1"#,
        state_hash,
        now,
    )
    .fetch_optional(ctx.db.pool())
    .await?;
    refuse(match row {
        None => "unknown state",
        Some(r) if r.provider != provider => "state of another provider",
        Some(r) if r.used => "state already used",
        Some(r) if r.expired => "state expired",
        Some(_) => "state started in another browser",
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

fn provider_http_error(err: reqwest::Error) -> Error {
    if err.is_timeout() || err.is_connect() {
        Error::Unavailable {
            dependency: Dependency::OAuthProvider,
            detail: err.to_string(),
        }
    } else {
        Error::OAuthProvider(err.without_url().to_string())
    }
}

/// A provider's JSON answer; 5xx means it is down (503), any other refusal is 502.
async fn provider_json<T: serde::de::DeserializeOwned>(
    endpoint: &str,
    sent: reqwest::Result<reqwest::Response>,
) -> Result<T> {
    let response = sent.map_err(provider_http_error)?;
    let status = response.status();
    if status.is_server_error() {
        return Err(Error::Unavailable {
            dependency: Dependency::OAuthProvider,
            detail: format!("{endpoint} endpoint answered {status}"),
        });
    }
    if !status.is_success() {
        return Err(Error::OAuthProvider(format!(
            "{endpoint} endpoint answered {status}"
        )));
    }
    response.json().await.map_err(provider_http_error)
}

/// Exchanges the code and reads the profile: (subject, e-mail).
async fn fetch_identity(
    ctx: &Ctx,
    p: &OAuthProvider,
    code: &str,
    code_verifier: &str,
) -> Result<(String, Option<String>)> {
    use secrecy::ExposeSecret;
    let redirect = redirect_uri(ctx, &p.name);
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect.as_str()),
        ("client_id", p.client_id.as_str()),
        ("code_verifier", code_verifier),
    ];
    let secret = p.client_secret.expose_secret();
    if !secret.is_empty() {
        form.push(("client_secret", secret));
    }
    let token: TokenResponse = provider_json(
        "token",
        ctx.http.post(&p.token_url).form(&form).send().await,
    )
    .await?;
    let profile: serde_json::Value = provider_json(
        "profile",
        ctx.http
            .get(&p.userinfo_url)
            .bearer_auth(&token.access_token)
            .send()
            .await,
    )
    .await?;
    let subject = match profile.pointer(&p.subject_pointer) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => {
            return Err(Error::OAuthProvider(
                "profile has no subject at the configured pointer".into(),
            ))
        }
    };
    let email = profile
        .pointer(&p.email_pointer)
        .and_then(|v| v.as_str())
        .map(validate::normalize_email)
        .filter(|e| validate::email(e).is_ok());
    Ok((subject, email))
}

/// The provider sent the browser back: redeems the attempt (state + the browser's
/// `binding` cookie), exchanges the code with its PKCE verifier and reads the profile.
pub async fn callback(
    ctx: &Ctx,
    name: &str,
    binding: Option<&str>,
    params: CallbackParams,
) -> Result<CallbackOutcome> {
    let p = provider(ctx, name)?;
    let verifier = redeem(ctx, &p.name, params.state.as_deref(), binding).await?;
    if let Some(error) = params.error {
        let detail = params.error_description.unwrap_or_default();
        return Err(Error::OAuthProvider(
            format!("{error} {detail}").trim().to_owned(),
        ));
    }
    let code = params
        .code
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::validation("code", "is required"))?;
    let (subject, email) = fetch_identity(ctx, &p, &code, &verifier).await?;

    let mut conn = ctx.db.acquire().await?;
    if let Some(user) = users::find_by_oauth(&mut conn, &p.name, &subject).await? {
        if user.status == UserStatus::Withdrawn {
            return Err(Error::AccountWithdrawn);
        }
        drop(conn);
        let pair = sessions::open(ctx, &user).await?;
        tracing::info!(user_id = %user.id, provider = %p.name, "social login");
        return Ok(CallbackOutcome::LoggedIn(pair));
    }
    if let Some(email) = &email {
        if users::email_in_use(&mut conn, email).await? {
            return Err(Error::EmailRegisteredElsewhere);
        }
    }
    let signup_token = sessions::sign(
        ctx,
        SIGNUP_TYP,
        &SignupClaims {
            prv: p.name.clone(),
            sub: subject,
            email: email.clone(),
            exp: ctx.clock.now().timestamp()
                + ctx.settings.auth.signup_token_ttl_secs.as_secs() as i64,
        },
    )?;
    Ok(CallbackOutcome::SignupRequired {
        signup_token,
        email,
    })
}

pub async fn complete(ctx: &Ctx, input: CompleteInput) -> Result<TokenPair> {
    let claims: SignupClaims =
        sessions::verify(ctx, SIGNUP_TYP, &input.signup_token).ok_or(Error::InvalidSignupToken)?;
    let mut checks = Checks::default();
    let email = match &claims.email {
        Some(e) => e.clone(),
        None => {
            let e = input.email.as_deref().unwrap_or_default();
            checks.check("email", validate::email(e.trim()));
            validate::normalize_email(e)
        }
    };
    if let Some(real) = &input.real_name {
        checks.check("real_name", validate::real_name(real));
    }
    let contact = users::check_contact(
        &mut checks,
        &input.display_name,
        &input.phone,
        &input.city,
        &input.detail_address,
    );
    checks.finish()?;
    let new = NewUser {
        email,
        password_hash: None,
        display_name: contact.display_name,
        real_name: input.real_name,
        phone: contact.phone,
        city: contact.city,
        detail_address: contact.detail_address,
        oauth: Some((claims.prv.clone(), claims.sub.clone())),
        role: Role::User,
    };
    let mut tx = ctx.db.begin().await?;
    let inserted = users::insert(&mut tx, &new).await;
    if inserted.is_ok() {
        tx.commit().await?;
    } else {
        // The failed INSERT aborted the transaction; what follows reads afresh.
        drop(tx);
    }
    let user = match inserted {
        Ok(user) => user,
        // The e-mail came from the provider, so a clash is an existing account, not a typo.
        Err(Error::AlreadyExists(fields))
            if claims.email.is_some() && fields.iter().any(|f| f.field == "email") =>
        {
            return Err(Error::EmailRegisteredElsewhere)
        }
        Err(Error::AlreadyExists(fields)) if fields.iter().any(|f| f.field == "oauth_subject") => {
            // A double submit of the same signup token: the account exists; log it in.
            let mut conn = ctx.db.acquire().await?;
            let existing = users::find_by_oauth(&mut conn, &claims.prv, &claims.sub)
                .await?
                .ok_or(Error::InvalidSignupToken)?;
            drop(conn);
            return sessions::open(ctx, &existing).await;
        }
        Err(e) => return Err(e),
    };
    tracing::info!(user_id = %user.id, provider = %claims.prv, "social signup");
    sessions::open(ctx, &user).await
}

#[cfg(test)]
mod tests {
    use super::pkce;

    /// 43–128 characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1).
    fn is_valid_verifier(v: &str) -> bool {
        (43..=128).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    }

    #[test]
    fn s256_challenges_match_known_vectors() {
        let cases: &[(&str, String, &str)] = &[
            (
                "RFC 7636 appendix B",
                "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            ),
            (
                "shortest verifier (43)",
                "a".repeat(43),
                "ZtNPunH49FD35FWYhT5Tv8I7vRKQJ8uxMaL0_9eHjNA",
            ),
            (
                "longest verifier (128)",
                "~".repeat(128),
                "zNhOm5Jyonenca7bQzzpjUpwFDVrfhrbbOGCqgWA6HU",
            ),
        ];
        for (name, verifier, challenge) in cases {
            assert!(is_valid_verifier(verifier), "{name}: test vector itself");
            assert_eq!(pkce::challenge(verifier), *challenge, "{name}");
        }
    }

    #[test]
    fn generated_verifiers_are_valid_distinct_and_unpadded() {
        let a = pkce::verifier();
        let b = pkce::verifier();
        for v in [&a, &b] {
            assert_eq!(v.len(), 43, "{v}");
            assert!(is_valid_verifier(v), "{v}");
            let challenge = pkce::challenge(v);
            assert_eq!(challenge.len(), 43);
            assert!(!challenge.contains('='), "{challenge}");
        }
        assert_ne!(a, b);
    }

    #[test]
    fn the_verifier_rules_themselves() {
        let cases = [
            ("42 characters", "a".repeat(42), false),
            ("43 characters", "a".repeat(43), true),
            ("128 characters", "a".repeat(128), true),
            ("129 characters", "a".repeat(129), false),
            ("a plus sign", format!("{}+", "a".repeat(42)), false),
            ("a slash", format!("{}/", "a".repeat(42)), false),
            ("padding", format!("{}=", "a".repeat(42)), false),
        ];
        for (name, v, valid) in cases {
            assert_eq!(is_valid_verifier(&v), valid, "{name}");
        }
    }
}
