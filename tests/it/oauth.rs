//! Social login against a fake OAuth provider (wiremock) that checks PKCE like a real one:
//! a login is bound to the browser that started it, redeemed once, and its code is only
//! exchanged with the right `code_verifier`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use url::Url;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{expect_error, http_client, signup_body, spawn_app_with, TestApp, Tokens};

const COOKIE: &str = "pv_oauth_binding";

/// RFC 7636 S256, computed here independently of the code under test.
fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// What the provider remembers about a code it issued.
#[derive(Clone)]
struct Grant {
    challenge: String,
    redirect_uri: String,
}

/// A fake provider that checks what a real one checks. `/authorize` wants `client-1`, a
/// `code` response and an S256 `code_challenge`; it issues a code bound to that challenge
/// and redirect URI and sends the browser back with it and the `state`. `/token` redeems
/// a code once, only with the client secret, the same redirect URI and the
/// `code_verifier` whose S256 is the challenge; anything else is 400 `invalid_grant`.
/// Which account signs in at the provider is the test's choice (`login_hint`), and the
/// code it issues is that account's name, so `knows(code, …)` describes the account.
struct Provider {
    server: MockServer,
}

impl Provider {
    async fn start() -> Self {
        let server = MockServer::start().await;
        let grants: Arc<Mutex<HashMap<String, Grant>>> = Arc::default();

        let issued = grants.clone();
        Mock::given(method("GET"))
            .and(path("/authorize"))
            .respond_with(move |req: &wiremock::Request| {
                let q: HashMap<String, String> = req.url.query_pairs().into_owned().collect();
                let refuse = |why: &str| {
                    ResponseTemplate::new(400).set_body_json(
                        json!({"error": "invalid_request", "error_description": why}),
                    )
                };
                let arg = |name: &str| q.get(name).map(String::as_str).unwrap_or_default();
                if arg("response_type") != "code" || arg("client_id") != "client-1" {
                    return refuse("response_type or client_id");
                }
                if arg("code_challenge_method") != "S256" {
                    return refuse("code_challenge_method must be S256");
                }
                let challenge = arg("code_challenge");
                if challenge.len() != 43
                    || !challenge
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return refuse("code_challenge");
                }
                let (redirect_uri, state, account) =
                    (arg("redirect_uri"), arg("state"), arg("login_hint"));
                if redirect_uri.is_empty() || state.is_empty() || account.is_empty() {
                    return refuse("redirect_uri, state and login_hint are required");
                }
                issued.lock().unwrap().insert(
                    account.to_owned(),
                    Grant {
                        challenge: challenge.to_owned(),
                        redirect_uri: redirect_uri.to_owned(),
                    },
                );
                let mut back = Url::parse(redirect_uri).unwrap();
                back.query_pairs_mut()
                    .append_pair("code", account)
                    .append_pair("state", state);
                ResponseTemplate::new(302).insert_header("location", back.as_str())
            })
            .mount(&server)
            .await;

        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(move |req: &wiremock::Request| {
                let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body)
                    .into_owned()
                    .collect();
                let arg = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
                let invalid_grant =
                    ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"}));
                if arg("grant_type") != "authorization_code"
                    || arg("client_id") != "client-1"
                    || arg("client_secret") != "s3cret"
                {
                    return ResponseTemplate::new(401)
                        .set_body_json(json!({"error": "invalid_client"}));
                }
                let code = arg("code");
                let mut grants = grants.lock().unwrap();
                let Some(grant) = grants.get(code).cloned() else {
                    return invalid_grant;
                };
                if arg("redirect_uri") != grant.redirect_uri
                    || s256(arg("code_verifier")) != grant.challenge
                {
                    return invalid_grant;
                }
                grants.remove(code);
                ResponseTemplate::new(200).set_body_json(json!({
                    "access_token": format!("at-{code}"), "token_type": "bearer", "expires_in": 3600
                }))
            })
            // Below a test's own `/token` mocks (default priority 5), which win.
            .with_priority(10)
            .mount(&server)
            .await;
        Provider { server }
    }

    /// The account that signs in as `code` has this profile.
    async fn knows(&self, code: &str, profile: Value) {
        Mock::given(method("GET"))
            .and(path("/userinfo"))
            .and(header(
                "authorization",
                format!("Bearer at-{code}").as_str(),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(profile))
            .mount(&self.server)
            .await;
    }

    /// The user signs in at the provider as `account` and consents; answers where the
    /// provider sends the browser back (our callback's path and query).
    async fn consent(&self, login: &Login, account: &str) -> String {
        let mut url = login.provider_url.clone();
        url.query_pairs_mut().append_pair("login_hint", account);
        let resp = http_client().get(url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND, "the provider refused");
        let back = Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
        format!("{}?{}", back.path(), back.query().unwrap())
    }

    /// The token requests the provider received, as forms.
    async fn token_requests(&self) -> Vec<HashMap<String, String>> {
        self.server
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.url.path() == "/token")
            .map(|r| url::form_urlencoded::parse(&r.body).into_owned().collect())
            .collect()
    }

    /// `POST /token` straight at the provider, as a client would.
    async fn exchange(&self, code: &str, verifier: Option<&str>, redirect_uri: &str) -> StatusCode {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", "client-1"),
            ("client_secret", "s3cret"),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        http_client()
            .post(format!("{}/token", self.server.uri()))
            .form(&form)
            .send()
            .await
            .unwrap()
            .status()
    }
}

fn provider_settings(uri: &str) -> billing::settings::OAuthProviderSettings {
    billing::settings::OAuthProviderSettings {
        client_id: "client-1".into(),
        client_secret: "s3cret".to_owned().into(),
        authorize_url: Some(format!("{uri}/authorize")),
        token_url: Some(format!("{uri}/token")),
        userinfo_url: Some(format!("{uri}/userinfo")),
        scopes: Some(vec!["email".into()]),
        subject_pointer: Some("/id".into()),
        email_pointer: Some("/account/email".into()),
    }
}

/// An API that knows the fake provider as `fake` (and, for cross-provider checks, the same
/// server again as `other`).
async fn app_with_provider(p: &Provider) -> TestApp {
    app_with_provider_and(p, |_| {}).await
}

async fn app_with_provider_and(
    p: &Provider,
    configure: impl FnOnce(&mut billing::settings::Settings),
) -> TestApp {
    let uri = p.server.uri();
    spawn_app_with(|s| {
        s.oauth.timeout_ms = Duration::from_millis(500);
        s.oauth
            .providers
            .insert("fake".into(), provider_settings(&uri));
        s.oauth
            .providers
            .insert("other".into(), provider_settings(&uri));
        configure(s);
    })
    .await
}

/// A browser after `GET /authorize`: the cookie it keeps and where it was sent.
struct Login {
    /// The browser binding (the cookie's value).
    cookie: String,
    /// The whole `Set-Cookie` line.
    set_cookie: String,
    provider_url: Url,
    state: String,
    challenge: String,
}

/// Starts a social login at `fake`, as a browser would.
async fn start_login(app: &TestApp) -> Login {
    let resp = app
        .get("/api/auth/oauth/fake/authorize")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    let cookie = set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.strip_prefix(&format!("{COOKIE}=")))
        .unwrap()
        .to_owned();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let provider_url = Url::parse(&location).unwrap();
    assert_eq!(provider_url.path(), "/authorize");
    let q: HashMap<_, _> = provider_url.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], "client-1");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(
        q["redirect_uri"],
        format!(
            "{}/api/auth/oauth/fake/callback",
            app.settings.api.public_url
        )
    );
    Login {
        cookie,
        set_cookie,
        state: q["state"].clone(),
        challenge: q["code_challenge"].clone(),
        provider_url,
    }
}

/// The browser follows a redirect to our callback, bringing `cookie` (or none).
async fn follow(app: &TestApp, callback: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = app.get(callback);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("theme=dark; {COOKIE}={c}"));
    }
    req.send().await.unwrap()
}

/// The whole journey in one browser: authorize, sign in at the provider as `account`,
/// come back with the cookie.
async fn sign_in(app: &TestApp, p: &Provider, account: &str) -> reqwest::Response {
    let login = start_login(app).await;
    let back = p.consent(&login, account).await;
    follow(app, &back, Some(&login.cookie)).await
}

/// The attempt a login opened, as stored: (code_verifier, binding_hash, used).
async fn stored(app: &TestApp, login: &Login) -> (String, String, bool) {
    sqlx::query_as(
        "SELECT code_verifier, binding_hash, used_at IS NOT NULL FROM oauth_states
         WHERE state_hash = $1",
    )
    .bind(sha256_hex(&login.state))
    .fetch_one(&app.db)
    .await
    .unwrap()
}

/// Every answer of the callback tells the browser to forget the cookie.
fn assert_clears_cookie(resp: &reqwest::Response) {
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set_cookie.starts_with(&format!("{COOKIE}=;"))
            && set_cookie.contains("Max-Age=0")
            && set_cookie.contains("Path=/api/auth/oauth/fake/callback"),
        "{set_cookie}"
    );
}

fn contact() -> Value {
    let b = signup_body();
    json!({"display_name": b["display_name"], "phone": b["phone"], "city": "Incheon",
           "detail_address": "2 Harbor-ro"})
}

#[tokio::test]
async fn a_first_time_social_user_completes_signup_then_returns() {
    let p = Provider::start().await;
    p.knows(
        "c1",
        json!({"id": 4242, "account": {"email": "Soc@Example.com"}}),
    )
    .await;
    let app = app_with_provider(&p).await;

    let resp = sign_in(&app, &p, "c1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_clears_cookie(&resp);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "signup_required");
    assert_eq!(body["email"], "soc@example.com");
    let signup_token = body["signup_token"].as_str().unwrap().to_owned();
    assert_eq!(app.user_count().await, 0);

    // Contact details are validated like a normal signup.
    let mut bad = contact();
    bad["phone"] = json!("nope");
    bad["signup_token"] = json!(signup_token);
    expect_error(
        app.post_json("/api/auth/oauth/complete", &bad)
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    let mut done = contact();
    done["signup_token"] = json!(signup_token);
    let resp = app
        .post_json("/api/auth/oauth/complete", &done)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let tokens = Tokens::from_json(&resp.json().await.unwrap());
    let me: Value = app.me(&tokens.access).await.json().await.unwrap();
    assert_eq!(me["email"], "soc@example.com");
    assert_eq!(me["oauth_provider"], "fake");
    assert_eq!(me["city"], "Incheon");

    // Returning: straight to tokens, same account.
    let resp = sign_in(&app, &p, "c1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "logged_in");
    let again = Tokens::from_json(&body);
    let me2: Value = app.me(&again.access).await.json().await.unwrap();
    assert_eq!(me2["id"], me["id"]);
    assert_eq!(app.user_count().await, 1);
    // Both code exchanges carried a verifier the provider accepted.
    let exchanges = p.token_requests().await;
    assert_eq!(exchanges.len(), 2);
    assert!(exchanges.iter().all(|f| f["code_verifier"].len() == 43));
    // A social account has no password to log in with.
    expect_error(
        app.login_raw("soc@example.com", "Whatever1!").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
}

#[tokio::test]
async fn authorize_binds_a_cookie_and_sends_the_s256_challenge_of_the_stored_verifier() {
    let p = Provider::start().await;
    let app = app_with_provider(&p).await;

    let login = start_login(&app).await;
    // HttpOnly (no script reads it), Lax (the provider's top-level redirect back carries
    // it), Secure outside dev, only sent to this provider's callback, gone with the state.
    let attrs: Vec<&str> = login.set_cookie.split("; ").skip(1).collect();
    for want in [
        "Path=/api/auth/oauth/fake/callback",
        "Max-Age=600",
        "HttpOnly",
        "SameSite=Lax",
        "Secure",
    ] {
        assert!(attrs.contains(&want), "{want} in {}", login.set_cookie);
    }
    assert_eq!(login.cookie.len(), 43);

    // The challenge sent to the provider is S256 of the verifier kept for the callback;
    // the state and the binding are kept only as hashes.
    let (verifier, binding_hash, used) = stored(&app, &login).await;
    assert!(
        (43..=128).contains(&verifier.len()),
        "RFC 7636 length: {verifier}"
    );
    assert_eq!(s256(&verifier), login.challenge);
    assert_ne!(verifier, login.challenge);
    assert_eq!(binding_hash, sha256_hex(&login.cookie));
    assert!(!used);
    let in_clear: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM oauth_states
         WHERE state_hash = $1 OR binding_hash = $2 OR code_verifier = $1",
    )
    .bind(&login.state)
    .bind(&login.cookie)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(in_clear, 0);

    // Every login gets its own state, binding and verifier.
    let second = start_login(&app).await;
    assert_ne!(second.state, login.state);
    assert_ne!(second.cookie, login.cookie);
    assert_ne!(second.challenge, login.challenge);

    // In dev over http the cookie cannot be Secure (browsers would drop it); its path
    // follows a public URL under a prefix.
    let dev = app_with_provider_and(&p, |s| {
        s.environment = billing::settings::Environment::Dev;
        s.api.public_url = "http://127.0.0.1:8080/shop".into();
    })
    .await;
    let resp = dev
        .get("/api/auth/oauth/fake/authorize")
        .send()
        .await
        .unwrap();
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set_cookie.contains("; Path=/shop/api/auth/oauth/fake/callback;"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
}

/// Login CSRF: an attacker signs in at the provider in their own browser, stops before the
/// callback and gets a victim's browser to open it. Without the attacker's cookie, the
/// victim's browser logs nobody in, whatever cookie it has.
#[tokio::test]
async fn a_callback_from_another_browser_logs_nobody_in() {
    let p = Provider::start().await;
    p.knows(
        "mallory",
        json!({"id": 666, "account": {"email": "m@example.com"}}),
    )
    .await;
    let app = app_with_provider(&p).await;

    let attacker = start_login(&app).await;
    let trap = p.consent(&attacker, "mallory").await;
    let victim = start_login(&app).await;

    for cookie in [None, Some(victim.cookie.as_str()), Some("made-up")] {
        let resp = follow(&app, &trap, cookie).await;
        assert_clears_cookie(&resp);
        expect_error(resp, StatusCode::BAD_REQUEST, "invalid_oauth_state").await;
    }
    assert!(p.token_requests().await.is_empty(), "code exchanged");
    assert_eq!(app.user_count().await, 0);
    // The refusals did not spend the attempt: it still belongs to the attacker's browser.
    let (_, _, used) = stored(&app, &attacker).await;
    assert!(!used);
    let resp = follow(&app, &trap, Some(&attacker.cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_state_is_redeemed_only_once() {
    let p = Provider::start().await;
    p.knows(
        "c1",
        json!({"id": 7, "account": {"email": "once@example.com"}}),
    )
    .await;
    let app = app_with_provider(&p).await;
    let mut done = contact();
    let first = sign_in(&app, &p, "c1").await;
    done["signup_token"] = first.json::<Value>().await.unwrap()["signup_token"].clone();
    let resp = app
        .post_json("/api/auth/oauth/complete", &done)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    // A returning user's login, then the same callback again from the same browser (a
    // reload, or someone who copied the URL and the cookie).
    let login = start_login(&app).await;
    let back = p.consent(&login, "c1").await;
    let resp = follow(&app, &back, Some(&login.cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "logged_in");
    let (_, _, used) = stored(&app, &login).await;
    assert!(used);
    let exchanges = p.token_requests().await.len();

    let replay = follow(&app, &back, Some(&login.cookie)).await;
    expect_error(replay, StatusCode::BAD_REQUEST, "invalid_oauth_state").await;
    assert_eq!(
        p.token_requests().await.len(),
        exchanges,
        "replay reached the provider"
    );
}

#[tokio::test]
async fn an_expired_state_is_refused_and_later_pruned() {
    let p = Provider::start().await;
    p.knows(
        "c1",
        json!({"id": 8, "account": {"email": "late@example.com"}}),
    )
    .await;
    let app = app_with_provider(&p).await;

    let login = start_login(&app).await;
    let back = p.consent(&login, "c1").await;
    // The user took longer than `auth.oauth_state_ttl_secs` (600 s) at the provider.
    sqlx::query(
        "UPDATE oauth_states SET created_at = created_at - interval '601 seconds',
                                 expires_at = expires_at - interval '601 seconds'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    expect_error(
        follow(&app, &back, Some(&login.cookie)).await,
        StatusCode::BAD_REQUEST,
        "invalid_oauth_state",
    )
    .await;
    assert!(p.token_requests().await.is_empty());
    assert_eq!(app.user_count().await, 0);

    // The next login start clears expired attempts away.
    let next = start_login(&app).await;
    let left: Vec<String> = sqlx::query_scalar("SELECT state_hash FROM oauth_states")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(left, vec![sha256_hex(&next.state)]);
}

/// The fake provider is only a proof if it really refuses: straight at its endpoints.
#[tokio::test]
async fn the_fake_provider_insists_on_the_pkce_pair() {
    let p = Provider::start().await;
    let app = app_with_provider(&p).await;
    let login = start_login(&app).await;
    let redirect_uri = format!(
        "{}/api/auth/oauth/fake/callback",
        app.settings.api.public_url
    );

    // No challenge, or the `plain` method: no code at all.
    for (param, replacement) in [
        ("code_challenge_method", None),
        ("code_challenge", None),
        ("code_challenge_method", Some("plain")),
    ] {
        let pairs: Vec<(String, String)> = login
            .provider_url
            .query_pairs()
            .into_owned()
            .filter(|(k, _)| k != param)
            .chain(replacement.map(|v| (param.to_owned(), v.to_owned())))
            .chain([("login_hint".to_owned(), "c1".to_owned())])
            .collect();
        let mut url = login.provider_url.clone();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        let resp = http_client().get(url).send().await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::BAD_REQUEST,
            "{param} = {replacement:?}"
        );
    }

    p.consent(&login, "c1").await;
    let (verifier, _, _) = stored(&app, &login).await;
    let other = start_login(&app).await;
    let (other_verifier, _, _) = stored(&app, &other).await;
    let cases = [
        ("no verifier", None, StatusCode::BAD_REQUEST),
        (
            "another login's verifier",
            Some(other_verifier.as_str()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "the challenge itself",
            Some(login.challenge.as_str()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "the right verifier",
            Some(verifier.as_str()),
            StatusCode::OK,
        ),
        (
            "the code again",
            Some(verifier.as_str()),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (name, sent, want) in cases {
        assert_eq!(p.exchange("c1", sent, &redirect_uri).await, want, "{name}");
    }
}

#[tokio::test]
async fn our_code_exchange_sends_the_stored_verifier() {
    let p = Provider::start().await;
    p.knows(
        "c1",
        json!({"id": 9, "account": {"email": "pkce@example.com"}}),
    )
    .await;
    let app = app_with_provider(&p).await;

    let login = start_login(&app).await;
    let back = p.consent(&login, "c1").await;
    let resp = follow(&app, &back, Some(&login.cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (verifier, _, _) = stored(&app, &login).await;
    let sent = p.token_requests().await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["code_verifier"], verifier);
    assert_eq!(s256(&sent[0]["code_verifier"]), login.challenge);

    // With a verifier that does not match its challenge the provider refuses the code,
    // so the callback logs nobody in.
    let login = start_login(&app).await;
    let back = p.consent(&login, "c1").await;
    sqlx::query("UPDATE oauth_states SET code_verifier = $2 WHERE state_hash = $1")
        .bind(sha256_hex(&login.state))
        .bind("x".repeat(43))
        .execute(&app.db)
        .await
        .unwrap();
    expect_error(
        follow(&app, &back, Some(&login.cookie)).await,
        StatusCode::BAD_GATEWAY,
        "oauth_provider_error",
    )
    .await;
    assert_eq!(p.token_requests().await[1]["code_verifier"], "x".repeat(43));
    assert_eq!(app.user_count().await, 0);
}

#[tokio::test]
async fn wrong_or_missing_state_is_400() {
    let p = Provider::start().await;
    p.knows(
        "c1",
        json!({"id": "u1", "account": {"email": "a@example.com"}}),
    )
    .await;
    let app = app_with_provider(&p).await;
    let login = start_login(&app).await;
    let cookie = Some(login.cookie.as_str());

    for callback in [
        "/api/auth/oauth/fake/callback?code=c1".to_owned(),
        "/api/auth/oauth/fake/callback?code=c1&state=".to_owned(),
        "/api/auth/oauth/fake/callback?code=c1&state=forged".to_owned(),
        // A state from this provider is no good at another provider's callback.
        format!(
            "/api/auth/oauth/other/callback?code=c1&state={}",
            login.state
        ),
    ] {
        expect_error(
            follow(&app, &callback, cookie).await,
            StatusCode::BAD_REQUEST,
            "invalid_oauth_state",
        )
        .await;
    }
    let resp = follow(
        &app,
        &format!(
            "/api/auth/oauth/kakao/callback?code=c1&state={}",
            login.state
        ),
        cookie,
    )
    .await;
    assert!(resp.headers().get("set-cookie").is_none());
    expect_error(resp, StatusCode::NOT_FOUND, "unknown_oauth_provider").await;
    assert_eq!(p.server.received_requests().await.unwrap().len(), 0);
    assert_eq!(app.user_count().await, 0);
}

#[tokio::test]
async fn provider_errors_and_timeouts_are_502_and_503_and_create_nothing() {
    let p = Provider::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("code=bad"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"})))
        .mount(&p.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("code=slow"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "x"}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&p.server)
        .await;
    let app = app_with_provider(&p).await;

    let err = expect_error(
        sign_in(&app, &p, "bad").await,
        StatusCode::BAD_GATEWAY,
        "oauth_provider_error",
    )
    .await;
    assert!(
        !err.to_string().contains("invalid_grant"),
        "provider detail leaked: {err}"
    );
    expect_error(
        sign_in(&app, &p, "slow").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "oauth_provider_unavailable",
    )
    .await;
    // The user denied consent at the provider; the attempt is spent all the same.
    let login = start_login(&app).await;
    let denied = format!(
        "/api/auth/oauth/fake/callback?error=access_denied&state={}",
        login.state
    );
    expect_error(
        follow(&app, &denied, Some(&login.cookie)).await,
        StatusCode::BAD_GATEWAY,
        "oauth_provider_error",
    )
    .await;
    expect_error(
        follow(&app, &denied, Some(&login.cookie)).await,
        StatusCode::BAD_REQUEST,
        "invalid_oauth_state",
    )
    .await;
    assert_eq!(app.user_count().await, 0);
}

#[tokio::test]
async fn an_email_of_a_password_account_is_not_taken_over() {
    let p = Provider::start().await;
    let app = app_with_provider(&p).await;
    let owner = app.signup().await;
    p.knows(
        "c9",
        json!({"id": 9, "account": {"email": owner.email.to_uppercase()}}),
    )
    .await;

    expect_error(
        sign_in(&app, &p, "c9").await,
        StatusCode::CONFLICT,
        "email_already_registered",
    )
    .await;
    assert_eq!(app.user_count().await, 1);
    let oauth: Option<String> =
        sqlx::query_scalar("SELECT oauth_provider FROM users WHERE id = $1")
            .bind(owner.id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(oauth, None);
}

#[tokio::test]
async fn signup_tokens_are_checked() {
    let p = Provider::start().await;
    let app = app_with_provider(&p).await;
    let mut body = contact();
    body["signup_token"] = json!("not-a-token");
    expect_error(
        app.post_json("/api/auth/oauth/complete", &body)
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_signup_token",
    )
    .await;
    expect_error(
        app.get("/api/auth/oauth/nope/authorize")
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "unknown_oauth_provider",
    )
    .await;
    assert_eq!(app.user_count().await, 0);
}

/// Attempts live in Postgres: a social login starts and comes back with Redis gone.
#[tokio::test]
async fn a_login_in_progress_does_not_need_redis() {
    let p = Provider::start().await;
    p.knows(
        "c1",
        json!({"id": 31, "account": {"email": "noredis@example.com"}}),
    )
    .await;
    let dead_redis = format!("redis://127.0.0.1:{}", crate::helpers::free_port());
    let app = app_with_provider_and(&p, |s| {
        s.redis.url = dead_redis.into();
        s.redis.timeout_ms = Duration::from_millis(300);
    })
    .await;

    let resp = sign_in(&app, &p, "c1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "signup_required");
}
