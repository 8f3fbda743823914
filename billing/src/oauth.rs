//! Social login (OAuth2 authorization-code flow) for providers configured by URL.
//!
//! The `state` is a signed, short-lived token naming the provider, so a callback cannot be
//! forged or replayed against another provider. A first-time social user gets a signup
//! token and finishes with contact details; an e-mail that already belongs to an account
//! is never silently attached to the social identity.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Dependency, Error, Result};
use crate::sessions::{self, TokenPair};
use crate::settings::OAuthProvider;
use crate::users::{self, NewUser, Role, UserStatus};
use crate::validate::{self, Checks};
use crate::Ctx;

const STATE_TYP: &str = "oauth-state";
const SIGNUP_TYP: &str = "oauth-signup";

#[derive(Debug, Serialize, Deserialize)]
struct StateClaims {
    prv: String,
    nonce: String,
    exp: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SignupClaims {
    prv: String,
    sub: String,
    email: Option<String>,
    exp: i64,
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

/// The provider's authorization URL with a fresh signed `state`.
pub fn authorize_url(ctx: &Ctx, name: &str) -> Result<String> {
    let p = provider(ctx, name)?;
    let state = sessions::sign(
        ctx,
        STATE_TYP,
        &StateClaims {
            prv: p.name.clone(),
            nonce: Uuid::new_v4().to_string(),
            exp: ctx.clock.now().timestamp()
                + ctx.settings.auth.oauth_state_ttl_secs.as_secs() as i64,
        },
    )?;
    let mut url = url::Url::parse(&p.authorize_url)
        .map_err(|e| Error::Internal(format!("authorize_url: {e}")))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &p.client_id)
        .append_pair("redirect_uri", &redirect_uri(ctx, name))
        .append_pair("state", &state);
    if !p.scopes.is_empty() {
        url.query_pairs_mut()
            .append_pair("scope", &p.scopes.join(" "));
    }
    Ok(url.into())
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
) -> Result<(String, Option<String>)> {
    use secrecy::ExposeSecret;
    let redirect = redirect_uri(ctx, &p.name);
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect.as_str()),
        ("client_id", p.client_id.as_str()),
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

pub async fn callback(ctx: &Ctx, name: &str, params: CallbackParams) -> Result<CallbackOutcome> {
    let p = provider(ctx, name)?;
    let state: StateClaims = params
        .state
        .as_deref()
        .and_then(|s| sessions::verify(ctx, STATE_TYP, s))
        .ok_or(Error::InvalidOAuthState)?;
    if state.prv != p.name {
        return Err(Error::InvalidOAuthState);
    }
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
    let (subject, email) = fetch_identity(ctx, &p, &code).await?;

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
