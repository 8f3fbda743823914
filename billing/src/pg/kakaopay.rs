//! The KakaoPay online-payment client: configuration, the two HTTP clients (retrying for
//! idempotent calls, plain for the rest), request validation, and the checks every success
//! response must pass before anyone treats it as one.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::{Jitter, RetryError, RetryTransientMiddleware};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{
    ApproveRequest, ApproveResponse, CancelRequest, CancelResponse, ChargeRequest, CidKind,
    OrderResponse, ReadyRequest, ReadyResponse, SidInactiveResponse, SidState, SidStatusResponse,
};
use super::{PaymentGateway, PgResult};
use crate::money::Money;
use crate::pg_error::{excerpt, from_status, transport_kind, ErrorKind, GatewayError, Transport};
use crate::settings::KakaoPaySettings;

/// Everything the client needs. `Debug` shows the secret as `[REDACTED]` (secrecy).
#[derive(Debug, Clone)]
pub struct KakaoPayConfig {
    /// e.g. `https://open-api.kakaopay.com` or a pgsim address; a trailing `/` is ignored.
    pub base_url: String,
    pub secret_key: SecretString,
    pub cid_one_time: String,
    pub cid_subscription: String,
    pub connect_timeout: Duration,
    /// Per attempt, from sending to the last byte of the response.
    pub request_timeout: Duration,
    /// Retries of an idempotent call (`order`, `sid_status`) after a transient failure.
    pub idempotent_retries: u32,
    pub retry_min_backoff: Duration,
    pub retry_max_backoff: Duration,
}

impl KakaoPayConfig {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_IDEMPOTENT_RETRIES: u32 = 3;
    pub const DEFAULT_RETRY_MIN_BACKOFF: Duration = Duration::from_millis(200);
    pub const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(2);

    /// The configured endpoint and credentials with DESIGN §8's default timeouts (the
    /// settings have no timeout keys yet).
    pub fn from_settings(s: &KakaoPaySettings) -> Self {
        Self {
            base_url: s.base_url.clone(),
            secret_key: s.secret_key.clone(),
            cid_one_time: s.cid_one_time.clone(),
            cid_subscription: s.cid_subscription.clone(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            idempotent_retries: Self::DEFAULT_IDEMPOTENT_RETRIES,
            retry_min_backoff: Self::DEFAULT_RETRY_MIN_BACKOFF,
            retry_max_backoff: Self::DEFAULT_RETRY_MAX_BACKOFF,
        }
    }
}

/// One endpoint: its path under `/online/v1/payment/` and whether repeating it is harmless.
#[derive(Debug, Clone, Copy)]
struct Endpoint {
    name: &'static str,
    path: &'static str,
    idempotent: bool,
}

const READY: Endpoint = Endpoint {
    name: "ready",
    path: "ready",
    idempotent: false,
};
const APPROVE: Endpoint = Endpoint {
    name: "approve",
    path: "approve",
    idempotent: false,
};
const SUBSCRIPTION: Endpoint = Endpoint {
    name: "subscription",
    path: "subscription",
    idempotent: false,
};
const CANCEL: Endpoint = Endpoint {
    name: "cancel",
    path: "cancel",
    idempotent: false,
};
const ORDER: Endpoint = Endpoint {
    name: "order",
    path: "order",
    idempotent: true,
};
const SID_STATUS: Endpoint = Endpoint {
    name: "sid_status",
    path: "manage/subscription/status",
    idempotent: true,
};
const SID_INACTIVE: Endpoint = Endpoint {
    name: "sid_inactivate",
    path: "manage/subscription/inactive",
    idempotent: false,
};

/// The KakaoPay client. Cheap to clone: both clients share one connection pool.
#[derive(Clone)]
pub struct KakaoPay {
    base_url: String,
    cid_one_time: String,
    cid_subscription: String,
    request_timeout: Duration,
    /// Approve, charge, cancel, ready, inactivate: one attempt, whatever happens.
    once: ClientWithMiddleware,
    /// Order inquiry and SID status: retried with exponential backoff on transient failures.
    retrying: ClientWithMiddleware,
}

impl std::fmt::Debug for KakaoPay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret lives only in the clients' default headers, marked sensitive.
        f.debug_struct("KakaoPay")
            .field("base_url", &self.base_url)
            .field("cid_one_time", &self.cid_one_time)
            .field("cid_subscription", &self.cid_subscription)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl KakaoPay {
    pub fn new(config: &KakaoPayConfig) -> crate::Result<Self> {
        crate::install_crypto_provider();
        let internal = |what: &str| crate::Error::Internal(format!("kakaopay client: {what}"));
        let secret = config.secret_key.expose_secret();
        if secret.is_empty() {
            tracing::warn!("kakaopay secret_key is empty; every call will be refused");
        }
        let mut auth = HeaderValue::from_str(&format!("SECRET_KEY {secret}"))
            .map_err(|_| internal("the secret key is not a valid header value"))?;
        // Keeps it out of Debug output of requests and headers.
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);

        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("pillivery/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // Idle connections the server may already have closed make a sent-or-not
            // question out of a plain reconnect; keep them short-lived.
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_keepalive(Duration::from_secs(30))
            // A redirect is not part of the protocol; following one could replay a POST.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| internal(&e.to_string()))?;

        let min = config.retry_min_backoff;
        // retry_bounds panics when min > max; a misconfiguration must not.
        let max = config.retry_max_backoff.max(min);
        let policy = ExponentialBackoff::builder()
            .retry_bounds(min, max)
            .jitter(Jitter::Bounded)
            .build_with_max_retries(config.idempotent_retries);
        let retrying = ClientBuilder::new(http.clone())
            .with(RetryTransientMiddleware::new_with_policy(policy))
            .build();
        let once = ClientBuilder::new(http).build();

        Ok(Self {
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            cid_one_time: config.cid_one_time.clone(),
            cid_subscription: config.cid_subscription.clone(),
            request_timeout: config.request_timeout,
            once,
            retrying,
        })
    }

    fn cid(&self, kind: CidKind) -> &str {
        match kind {
            CidKind::OneTime => &self.cid_one_time,
            CidKind::Subscription => &self.cid_subscription,
        }
    }

    /// One exchange: sends `cid` + `body`, returns the decoded 2xx body or the classified
    /// failure. Records a metric and a log line for every outcome.
    async fn call<B: Serialize + Sync, R: DeserializeOwned>(
        &self,
        ep: Endpoint,
        cid: &str,
        body: &B,
    ) -> PgResult<R> {
        let started = Instant::now();
        let result = self.exchange(ep, cid, body).await;
        record(ep, started, result.as_ref().err());
        result
    }

    async fn exchange<B: Serialize + Sync, R: DeserializeOwned>(
        &self,
        ep: Endpoint,
        cid: &str,
        body: &B,
    ) -> PgResult<R> {
        #[derive(Serialize)]
        struct WithCid<'a, B> {
            cid: &'a str,
            #[serde(flatten)]
            body: &'a B,
        }
        let url = format!("{}/online/v1/payment/{}", self.base_url, ep.path);
        let client = if ep.idempotent {
            &self.retrying
        } else {
            &self.once
        };
        let response = client
            .post(&url)
            .json(&WithCid { cid, body })
            .send()
            .await
            .map_err(|e| send_error(ep, &e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            // The PG answered, so it saw the request; only the body got lost.
            GatewayError {
                http_status: Some(status.as_u16()),
                ..GatewayError::new(
                    ep.name,
                    transport_kind(Transport::MaybeProcessed, ep.idempotent),
                    format!("reading the {status} response: {}", chain(&e)),
                )
            }
        })?;
        if !status.is_success() {
            return Err(from_status(ep.name, status.as_u16(), &bytes, ep.idempotent));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            // A success we cannot read: for a non-idempotent call it probably happened, so
            // it must be reconciled; an unreadable inquiry will not fix itself by retrying.
            let kind = if ep.idempotent {
                ErrorKind::Permanent
            } else {
                ErrorKind::Ambiguous
            };
            GatewayError {
                http_status: Some(status.as_u16()),
                ..GatewayError::new(
                    ep.name,
                    kind,
                    format!(
                        "unreadable {status} response: {e}; body: {}",
                        excerpt(&bytes)
                    ),
                )
            }
        })
    }
}

fn record(ep: Endpoint, started: Instant, err: Option<&GatewayError>) {
    let elapsed = started.elapsed();
    let outcome = err.map_or("ok", |e| e.kind.as_str());
    metrics::counter!("pg_requests_total", "endpoint" => ep.name, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("pg_request_duration_seconds", "endpoint" => ep.name)
        .record(elapsed.as_secs_f64());
    let elapsed_ms = elapsed.as_millis() as u64;
    match err {
        None => tracing::debug!(endpoint = ep.name, elapsed_ms, "kakaopay call succeeded"),
        Some(e) if e.kind == ErrorKind::Mismatch => tracing::error!(
            endpoint = ep.name, elapsed_ms, error = %e,
            "kakaopay answered about something else; needs reconciliation"
        ),
        Some(e) => tracing::warn!(
            endpoint = ep.name,
            elapsed_ms,
            kind = e.kind.as_str(),
            code = e.code,
            http_status = e.http_status,
            method_result_code = e.method_result_code.as_deref(),
            error = %e,
            "kakaopay call failed"
        ),
    }
}

/// An error and its causes on one line (reqwest's own message is only the outermost).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// A failure before any response arrived.
fn send_error(ep: Endpoint, err: &reqwest_middleware::Error) -> GatewayError {
    match err {
        reqwest_middleware::Error::Reqwest(e) => reqwest_send_error(ep, e),
        reqwest_middleware::Error::Middleware(any) => match any.downcast_ref::<RetryError>() {
            // The retry middleware wraps the last attempt's failure.
            Some(RetryError::WithRetries { retries, err }) => {
                with_retries(send_error(ep, err), *retries)
            }
            Some(RetryError::Error(err)) => send_error(ep, err),
            None => GatewayError::new(
                ep.name,
                transport_kind(Transport::MaybeProcessed, ep.idempotent),
                format!("middleware: {any:#}"),
            ),
        },
    }
}

fn with_retries(mut e: GatewayError, retries: u32) -> GatewayError {
    e.message = format!("{} (after {retries} retries)", e.message);
    e
}

fn reqwest_send_error(ep: Endpoint, e: &reqwest::Error) -> GatewayError {
    let (kind, what) = if e.is_builder() {
        // We could not even build the request: our bug, nothing was sent.
        (ErrorKind::Permanent, "building the request")
    } else if e.is_connect() {
        // No connection (refused, DNS, TLS, connect timeout): the PG never saw it.
        (
            transport_kind(Transport::NotSent, ep.idempotent),
            "connecting",
        )
    } else if e.is_timeout() {
        (
            transport_kind(Transport::MaybeProcessed, ep.idempotent),
            "timed out waiting for the answer",
        )
    } else {
        (
            transport_kind(Transport::MaybeProcessed, ep.idempotent),
            "sending the request",
        )
    };
    GatewayError::new(ep.name, kind, format!("{what}: {}", chain(e)))
}

// ---- request validation: the notes' limits, checked before anything is sent ----

const MAX_ID_CHARS: usize = 100;
const MAX_URL_CHARS: usize = 255;

struct Check {
    ep: &'static str,
    problems: Vec<String>,
}

impl Check {
    fn new(ep: Endpoint) -> Self {
        Self {
            ep: ep.name,
            problems: Vec::new(),
        }
    }

    fn text(&mut self, field: &str, value: &str, max: usize) -> &mut Self {
        if value.trim().is_empty() {
            self.problems.push(format!("{field} is empty"));
        } else if value.chars().count() > max {
            self.problems
                .push(format!("{field} is longer than {max} characters"));
        }
        self
    }

    fn amount(&mut self, field: &str, value: Money, positive: bool) -> &mut Self {
        if positive && value.0 <= 0 {
            self.problems.push(format!("{field} must be > 0"));
        } else if value.0 < 0 {
            self.problems.push(format!("{field} must be ≥ 0"));
        }
        self
    }

    fn not_above(&mut self, field: &str, value: Money, limit: Money) -> &mut Self {
        if value > limit {
            self.problems
                .push(format!("{field} exceeds the total ({value} > {limit})"));
        }
        self
    }

    fn quantity(&mut self, value: u32) -> &mut Self {
        if value == 0 {
            self.problems.push("quantity must be > 0".into());
        }
        self
    }

    fn finish(&mut self) -> PgResult<()> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(GatewayError::new(
                self.ep,
                ErrorKind::Permanent,
                format!("invalid request: {}", self.problems.join("; ")),
            ))
        }
    }
}

// ---- response checks: a success about another tid, order or amount is not a success ----

fn same(ep: Endpoint, field: &str, sent: &str, got: &str) -> PgResult<()> {
    if sent == got {
        Ok(())
    } else {
        Err(GatewayError::mismatch(
            ep.name,
            format!("{field} mismatch: sent {sent:?}, got {got:?}"),
        ))
    }
}

/// Fields the PG may omit are only checked when present.
fn same_if_present(ep: Endpoint, field: &str, sent: &str, got: Option<&str>) -> PgResult<()> {
    got.map_or(Ok(()), |got| same(ep, field, sent, got))
}

fn same_amount(ep: Endpoint, field: &str, expected: Money, got: Money) -> PgResult<()> {
    if expected == got {
        Ok(())
    } else {
        Err(GatewayError::mismatch(
            ep.name,
            format!("{field} mismatch: expected {}, got {}", expected.0, got.0),
        ))
    }
}

fn non_empty(ep: Endpoint, field: &str, got: &str) -> PgResult<()> {
    if got.trim().is_empty() {
        Err(GatewayError::mismatch(
            ep.name,
            format!("{field} is empty in a success response"),
        ))
    } else {
        Ok(())
    }
}

#[async_trait]
impl PaymentGateway for KakaoPay {
    async fn ready(&self, req: &ReadyRequest) -> PgResult<ReadyResponse> {
        Check::new(READY)
            .text("partner_order_id", &req.partner_order_id, MAX_ID_CHARS)
            .text("partner_user_id", &req.partner_user_id, MAX_ID_CHARS)
            .text("item_name", &req.item_name, MAX_ID_CHARS)
            .quantity(req.quantity)
            .amount("total_amount", req.total_amount, true)
            .amount("tax_free_amount", req.tax_free_amount, false)
            .not_above("tax_free_amount", req.tax_free_amount, req.total_amount)
            .amount("vat_amount", req.vat_amount.unwrap_or_default(), false)
            .text("approval_url", &req.approval_url, MAX_URL_CHARS)
            .text("cancel_url", &req.cancel_url, MAX_URL_CHARS)
            .text("fail_url", &req.fail_url, MAX_URL_CHARS)
            .finish()?;
        let res: ReadyResponse = self.call(READY, self.cid(req.kind), req).await?;
        non_empty(READY, "tid", &res.tid)?;
        Ok(res)
    }

    async fn approve(&self, req: &ApproveRequest) -> PgResult<ApproveResponse> {
        Check::new(APPROVE)
            .text("tid", &req.tid, MAX_ID_CHARS)
            .text("partner_order_id", &req.partner_order_id, MAX_ID_CHARS)
            .text("partner_user_id", &req.partner_user_id, MAX_ID_CHARS)
            .text("pg_token", &req.pg_token, MAX_URL_CHARS)
            .finish()?;
        let cid = self.cid(req.kind);
        let res: ApproveResponse = self.call(APPROVE, cid, req).await?;
        same(APPROVE, "tid", &req.tid, &res.tid)?;
        same(
            APPROVE,
            "partner_order_id",
            &req.partner_order_id,
            &res.partner_order_id,
        )?;
        same_amount(
            APPROVE,
            "amount.total",
            req.expected_total,
            res.amount.total,
        )?;
        same_if_present(APPROVE, "cid", cid, res.cid.as_deref())?;
        same_if_present(
            APPROVE,
            "partner_user_id",
            &req.partner_user_id,
            res.partner_user_id.as_deref(),
        )?;
        if req.kind == CidKind::Subscription {
            // Without a SID the subscription can never be charged again: the payment went
            // through, but the outcome is not the one we asked for.
            match res.sid.as_deref() {
                Some(sid) if !sid.trim().is_empty() => {}
                _ => {
                    return Err(GatewayError::mismatch(
                        APPROVE.name,
                        "approve with the subscription cid returned no sid",
                    ))
                }
            }
        }
        Ok(res)
    }

    async fn subscription_charge(&self, req: &ChargeRequest) -> PgResult<ApproveResponse> {
        Check::new(SUBSCRIPTION)
            .text("sid", &req.sid, MAX_ID_CHARS)
            .text("partner_order_id", &req.partner_order_id, MAX_ID_CHARS)
            .text("partner_user_id", &req.partner_user_id, MAX_ID_CHARS)
            .text("item_name", &req.item_name, MAX_ID_CHARS)
            .quantity(req.quantity)
            .amount("total_amount", req.total_amount, true)
            .amount("tax_free_amount", req.tax_free_amount, false)
            .not_above("tax_free_amount", req.tax_free_amount, req.total_amount)
            .amount("vat_amount", req.vat_amount.unwrap_or_default(), false)
            .finish()?;
        let cid = self.cid(CidKind::Subscription);
        let res: ApproveResponse = self.call(SUBSCRIPTION, cid, req).await?;
        // A charge gets a new tid, so there is none to compare; it must exist though.
        non_empty(SUBSCRIPTION, "tid", &res.tid)?;
        same(
            SUBSCRIPTION,
            "partner_order_id",
            &req.partner_order_id,
            &res.partner_order_id,
        )?;
        same_amount(
            SUBSCRIPTION,
            "amount.total",
            req.total_amount,
            res.amount.total,
        )?;
        same_if_present(SUBSCRIPTION, "cid", cid, res.cid.as_deref())?;
        same_if_present(SUBSCRIPTION, "sid", &req.sid, res.sid.as_deref())?;
        same_if_present(
            SUBSCRIPTION,
            "partner_user_id",
            &req.partner_user_id,
            res.partner_user_id.as_deref(),
        )?;
        Ok(res)
    }

    async fn cancel(&self, req: &CancelRequest) -> PgResult<CancelResponse> {
        Check::new(CANCEL)
            .text("tid", &req.tid, MAX_ID_CHARS)
            .amount("cancel_amount", req.cancel_amount, true)
            .amount("cancel_tax_free_amount", req.cancel_tax_free_amount, false)
            .not_above(
                "cancel_tax_free_amount",
                req.cancel_tax_free_amount,
                req.cancel_amount,
            )
            .amount(
                "cancel_vat_amount",
                req.cancel_vat_amount.unwrap_or_default(),
                false,
            )
            .amount(
                "cancel_available_amount",
                req.cancel_available_amount.unwrap_or_default(),
                false,
            )
            .finish()?;
        let cid = self.cid(req.kind);
        let res: CancelResponse = self.call(CANCEL, cid, req).await?;
        same(CANCEL, "tid", &req.tid, &res.tid)?;
        same_if_present(CANCEL, "cid", cid, res.cid.as_deref())?;
        if let Some(done) = &res.approved_cancel_amount {
            same_amount(
                CANCEL,
                "approved_cancel_amount.total",
                req.cancel_amount,
                done.total,
            )?;
        }
        if !res.status.is_refunded() {
            return Err(GatewayError::mismatch(
                CANCEL.name,
                format!("cancel answered with status {}", res.status),
            ));
        }
        Ok(res)
    }

    async fn order(&self, kind: CidKind, tid: &str) -> PgResult<OrderResponse> {
        #[derive(Serialize)]
        struct Body<'a> {
            tid: &'a str,
        }
        Check::new(ORDER).text("tid", tid, MAX_ID_CHARS).finish()?;
        let cid = self.cid(kind);
        let res: OrderResponse = self.call(ORDER, cid, &Body { tid }).await?;
        same(ORDER, "tid", tid, &res.tid)?;
        same_if_present(ORDER, "cid", cid, res.cid.as_deref())?;
        Ok(res)
    }

    async fn sid_status(&self, sid: &str) -> PgResult<SidStatusResponse> {
        #[derive(Serialize)]
        struct Body<'a> {
            sid: &'a str,
        }
        Check::new(SID_STATUS)
            .text("sid", sid, MAX_ID_CHARS)
            .finish()?;
        let cid = self.cid(CidKind::Subscription);
        let res: SidStatusResponse = self.call(SID_STATUS, cid, &Body { sid }).await?;
        same(SID_STATUS, "sid", sid, &res.sid)?;
        same_if_present(SID_STATUS, "cid", cid, res.cid.as_deref())?;
        Ok(res)
    }

    async fn sid_inactivate(&self, sid: &str) -> PgResult<SidInactiveResponse> {
        #[derive(Serialize)]
        struct Body<'a> {
            sid: &'a str,
        }
        Check::new(SID_INACTIVE)
            .text("sid", sid, MAX_ID_CHARS)
            .finish()?;
        let cid = self.cid(CidKind::Subscription);
        let res: SidInactiveResponse = self.call(SID_INACTIVE, cid, &Body { sid }).await?;
        same(SID_INACTIVE, "sid", sid, &res.sid)?;
        same_if_present(SID_INACTIVE, "cid", cid, res.cid.as_deref())?;
        if res.status != SidState::Inactive {
            return Err(GatewayError::mismatch(
                SID_INACTIVE.name,
                format!("inactivate answered with status {}", res.status.as_str()),
            ));
        }
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn config() -> KakaoPayConfig {
        KakaoPayConfig::from_settings(&KakaoPaySettings {
            base_url: "http://127.0.0.1:9/".into(),
            secret_key: SecretString::from("very-secret-key"),
            cid_one_time: "TC0ONETIME".into(),
            cid_subscription: "TCSUBSCRIP".into(),
        })
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let cfg = config();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("very-secret-key"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
        let client = KakaoPay::new(&cfg).unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("very-secret-key"), "{shown}");
        assert!(shown.contains("http://127.0.0.1:9"), "{shown}");
    }

    #[test]
    fn defaults_follow_design() {
        let cfg = config();
        assert_eq!(cfg.connect_timeout, Duration::from_secs(3));
        assert_eq!(cfg.request_timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_secret_that_is_not_a_header_value_is_refused() {
        let mut cfg = config();
        cfg.secret_key = SecretString::from("bad\nsecret");
        let err = KakaoPay::new(&cfg).unwrap_err().to_string();
        assert!(!err.contains("bad\nsecret"), "{err}");
    }

    #[tokio::test]
    async fn invalid_requests_are_refused_before_sending() {
        // Port 9 (discard) is never contacted: validation fails first.
        let client = KakaoPay::new(&config()).unwrap();
        let err = client
            .ready(&ReadyRequest {
                kind: CidKind::OneTime,
                partner_order_id: "x".repeat(101),
                partner_user_id: "u".into(),
                item_name: "".into(),
                item_code: None,
                quantity: 0,
                total_amount: Money(100),
                tax_free_amount: Money(200),
                vat_amount: None,
                approval_url: "http://a".into(),
                cancel_url: "http://c".into(),
                fail_url: "http://f".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
        for needle in [
            "partner_order_id",
            "item_name",
            "quantity",
            "tax_free_amount",
        ] {
            assert!(err.message.contains(needle), "{needle}: {}", err.message);
        }
        let err = client
            .cancel(&CancelRequest {
                kind: CidKind::OneTime,
                tid: "T".into(),
                cancel_amount: Money(0),
                cancel_tax_free_amount: Money(0),
                cancel_vat_amount: None,
                cancel_available_amount: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
    }
}
