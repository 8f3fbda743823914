//! Extractors that turn a request into typed input or a clear 4xx in the error envelope.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use billing::error::FieldError;
use billing::sessions::Principal;
use billing::users::Role;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::AppState;

/// A JSON body: syntax errors are 400 `malformed_json`; a well-formed body with a field of
/// the wrong type is 422 `validation_failed` naming the field.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes =
            axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|e: BytesRejection| {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge
                    } else {
                        ApiError::MalformedRequest(e.body_text())
                    }
                })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be left out: no body at all is `T::default()`; any body is read
/// as [`ApiJson`] reads it.
pub struct OptionalApiJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalApiJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0")
            || (!req.headers().contains_key(header::CONTENT_LENGTH)
                && !req.headers().contains_key(header::TRANSFER_ENCODING));
        if empty {
            return Ok(OptionalApiJson(T::default()));
        }
        ApiJson::<T>::from_request(req, state)
            .await
            .map(|ApiJson(v)| OptionalApiJson(v))
    }
}

/// A body is one JSON value and nothing after it; where a struct is expected it is an
/// object (a positional array is 400 `malformed_json`); no string holds a control
/// character but a line break or a tab (422 `invalid_characters`, naming the field) — all
/// decided before any handler runs a query ([`crate::strict_json`]).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    use crate::strict_json::{Strict, ARRAY_MARK, CONTROL_MARK};
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = match serde_path_to_error::deserialize(Strict(&mut de)) {
        Ok(v) => v,
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            use serde_json::error::Category;
            // `?` is a map key the path cannot name: the object holding it.
            let field = match path.trim_end_matches(".?") {
                "." | "?" => "body".to_owned(),
                p => p.to_owned(),
            };
            return Err(match inner.classify() {
                Category::Data if inner.to_string().starts_with(CONTROL_MARK) => {
                    ApiError::Billing(billing::Error::InvalidCharacters(vec![FieldError::new(
                        field,
                        "must not contain control characters",
                    )]))
                }
                Category::Data if inner.to_string().starts_with(ARRAY_MARK) => {
                    ApiError::MalformedJson(format!("{field}: an object is expected, not an array"))
                }
                Category::Data => {
                    ApiError::Billing(billing::Error::Validation(vec![FieldError::new(
                        field,
                        data_reason(&inner),
                    )]))
                }
                Category::Syntax | Category::Eof | Category::Io => {
                    ApiError::MalformedJson(inner.to_string())
                }
            });
        }
    };
    // One value only: trailing data (a second object, anything) is malformed.
    de.end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}

/// serde's message without its "at line 1 column 9" suffix.
fn data_reason(err: &serde_json::Error) -> String {
    let msg = err.to_string();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg,
    }
}

/// Query parameters; a bad one is 400 `malformed_request`.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded_from_str(query).map(ApiQuery)
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| ApiError::MalformedRequest("bad query string".into()))?,
    )
    .map(|q| q.0)
    .map_err(|e| ApiError::MalformedRequest(e.body_text()))
}

/// Path parameters; one that does not parse (e.g. a malformed id) is 404 `not_found`,
/// like any other missing row.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|_| ApiError::Billing(billing::Error::NotFound))
    }
}

/// The authenticated caller (a valid, unrevoked bearer token).
pub struct AuthUser(pub Principal);

impl<S> FromRequestParts<S> for AuthUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let principal = billing::sessions::authenticate(&state.ctx, token).await?;
        tracing::Span::current().record("user_id", principal.user_id.0);
        Ok(AuthUser(principal))
    }
}

/// Where a login or refresh comes from (the client address the middleware settled on, and
/// the user agent), for the session list.
pub struct Client(pub billing::sessions::ClientInfo);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts.extensions.get::<ClientIp>().map(|c| c.0.to_string());
        let ua = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        Ok(Client(billing::sessions::ClientInfo::new(ip, ua)))
    }
}

/// The authenticated caller if their role (the account's, now) is one of `allowed`;
/// otherwise 403.
async fn with_role<S>(parts: &mut Parts, state: &S, allowed: &[Role]) -> Result<Principal, ApiError>
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    let AuthUser(principal) = AuthUser::from_request_parts(parts, state).await?;
    if !allowed.contains(&principal.role) {
        return Err(ApiError::Forbidden);
    }
    Ok(principal)
}

/// An authenticated caller with the `admin` role; anyone else gets 403.
pub struct AdminUser(pub Principal);

impl<S> FromRequestParts<S> for AdminUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        with_role(parts, state, &[Role::Admin]).await.map(AdminUser)
    }
}

/// An authenticated caller who may see what admins see: an `admin`, or a read-only
/// `operator`; anyone else gets 403. Routes that act take [`AdminUser`].
pub struct OperatorUser(pub Principal);

impl<S> FromRequestParts<S> for OperatorUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        with_role(parts, state, &[Role::Admin, Role::Operator])
            .await
            .map(OperatorUser)
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// The client's address: the socket peer, or the `X-Forwarded-For` hop just before the
/// first trusted proxy when the peer is one (so clients cannot spoof it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

pub(crate) fn client_ip(
    headers: &HeaderMap,
    peer: Option<&ConnectInfo<SocketAddr>>,
    trusted: &[IpAddr],
) -> ClientIp {
    let peer_ip = peer
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    if !trusted.contains(&peer_ip) {
        return ClientIp(peer_ip);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    // Walk from the nearest hop outwards, skipping our own proxies.
    let ip = forwarded
        .iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .copied()
        .unwrap_or(peer_ip);
    ClientIp(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_only_believed_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let peer_proxy = ConnectInfo(SocketAddr::new(proxy, 1234));
        let peer_other = ConnectInfo(SocketAddr::new("203.0.113.9".parse().unwrap(), 1));
        let h = headers("198.51.100.7, 203.0.113.5");
        assert_eq!(
            client_ip(&h, Some(&peer_proxy), &[proxy]).0,
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(&h, Some(&peer_other), &[proxy]).0,
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(&HeaderMap::new(), Some(&peer_proxy), &[proxy]).0,
            proxy
        );
    }

    #[test]
    fn json_errors_are_classified() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            a: String,
        }
        assert!(matches!(
            parse_json::<T>(b"{"),
            Err(ApiError::MalformedJson(_))
        ));
        match parse_json::<T>(br#"{"a": 5}"#) {
            Err(ApiError::Billing(billing::Error::Validation(f))) => assert_eq!(f[0].field, "a"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_bodies_are_one_object_without_control_characters() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            b: String,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            a: String,
            #[serde(default)]
            inner: Option<Inner>,
            #[serde(default)]
            list: Vec<Inner>,
        }
        // (body, Ok or the error's code and field)
        type Case<'a> = (&'a [u8], Result<(), (&'a str, &'a str)>);
        let cases: Vec<Case> = vec![
            (br#"{"a": "line\nbreak\ttab"}"#, Ok(())),
            (br#"{"a": "x"} {"a": "y"}"#, Err(("malformed_json", ""))),
            (br#"{"a": "x"}garbage"#, Err(("malformed_json", ""))),
            (br#"["x"]"#, Err(("malformed_json", ""))),
            (
                br#"{"a": "x", "inner": ["y"]}"#,
                Err(("malformed_json", "")),
            ),
            (
                br#"{"a": "x", "list": [["y"]]}"#,
                Err(("malformed_json", "")),
            ),
            (br#"{"a": "a\u0000b"}"#, Err(("invalid_characters", "a"))),
            (
                br#"{"a": "x", "inner": {"b": "\u001b[31m"}}"#,
                Err(("invalid_characters", "inner.b")),
            ),
            (
                br#"{"a": "x", "list": [{"b": "\u0085"}]}"#,
                Err(("invalid_characters", "list[0].b")),
            ),
            (
                br#"{"a\u0000": "x", "a": "y"}"#,
                Err(("invalid_characters", "body")),
            ),
        ];
        for (body, want) in cases {
            let got = parse_json::<T>(body).map(|_| ());
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err((code, field))) => {
                    assert_eq!(
                        e.status_and_code().1,
                        code,
                        "{}",
                        String::from_utf8_lossy(body)
                    );
                    if let ApiError::Billing(billing::Error::InvalidCharacters(f)) = &e {
                        assert_eq!(f[0].field, field, "{}", String::from_utf8_lossy(body));
                    }
                }
                (got, want) => panic!("{}: {got:?} vs {want:?}", String::from_utf8_lossy(body)),
            }
        }
    }
}
