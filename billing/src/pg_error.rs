//! What a failed payment-gateway call means: the error kinds and the rules that map
//! KakaoPay's HTTP statuses, error codes and transport failures onto them. Plain types
//! and pure functions (foundation: the crate's `Error` carries a `GatewayError`); the
//! client in `pg` produces them and `pg::policy` decides what each step does with them.
//!
//! The rules are pure functions so the whole table is unit-tested without a server.

use serde::Deserialize;

mod declines;
pub use declines::{class_in, decline_class, DeclineClass, DeclineRule, DECLINE_RULES};

/// What the caller should do about a failed call. Only a soft `Decline` consumes a dunning
/// attempt (a hard one ends dunning);
/// `Ambiguous`, `AlreadyDone` and `Mismatch` go to reconciliation, never to a blind retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// KakaoPay declined the payment: the buyer's problem, not ours. Soft (−780, −782,
    /// −797, −752, and any code the notes do not list): a later retry may succeed. Hard
    /// (−750, −751, −753: the SID is gone or not the buyer's): none can. The table is
    /// [`DECLINE_RULES`].
    Decline(DeclineClass),
    /// The PG says it already did this or the payment is in another state (−702, −783…−785):
    /// decide by inquiry.
    AlreadyDone,
    /// Our request is wrong (invalid parameters, an unknown tid, a wrong cid); the same
    /// request will fail again. Never re-sent; alert.
    Permanent,
    /// The PG refuses *us*, not the request: a wrong or rotated secret key (HTTP 401/403)
    /// or a server address KakaoPay does not allow (−798). Our misconfiguration: the work
    /// waits for the fix and operators are alerted; customers are never failed for it.
    Configuration,
    /// The buyer let the payment expire (−723) and must start again.
    Expired,
    /// Nothing happened at the PG (or the call is idempotent): back off and call again.
    Transient,
    /// A non-idempotent call may have been processed (timeout after sending, 5xx, lost
    /// response): reconcile, never resend.
    Ambiguous,
    /// The PG answered success but about something else (tid, order id, amount, sid):
    /// treat like `Ambiguous` and alert.
    Mismatch,
    /// Not sent: this process's circuit breaker is open, or no bulkhead slot or rate permit
    /// came in time. Nothing happened at the PG; the work is deferred (`retry_after`),
    /// which uses up neither a dunning attempt nor a job retry.
    Unavailable,
}

impl ErrorKind {
    /// Stable lower-case name for logs, metrics and stored failure reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Decline(DeclineClass::Soft) => "decline",
            ErrorKind::Decline(DeclineClass::Hard) => "hard_decline",
            ErrorKind::AlreadyDone => "already_done",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Configuration => "configuration",
            ErrorKind::Expired => "expired",
            ErrorKind::Transient => "transient",
            ErrorKind::Ambiguous => "ambiguous",
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed gateway call with the PG's own code and message kept for the order's record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kakaopay {endpoint}: {kind}{}: {message}", code_suffix(*.code))]
pub struct GatewayError {
    pub kind: ErrorKind,
    /// KakaoPay's `error_code` (or the older `code`), when the PG sent one.
    pub code: Option<i64>,
    pub message: String,
    /// `extras.method_result_code` (the card/wallet's own reason), when present.
    pub method_result_code: Option<String>,
    pub method_result_message: Option<String>,
    /// The HTTP status, when a response arrived.
    pub http_status: Option<u16>,
    /// Which endpoint failed (`approve`, `order`, …).
    pub endpoint: &'static str,
    /// Run the work again after this many milliseconds (set when the call was never sent
    /// because of the local guard: an open breaker, or no permit in time). Milliseconds
    /// in a u32 keep the error small.
    pub retry_after_ms: Option<u32>,
}

fn code_suffix(code: Option<i64>) -> String {
    code.map(|c| format!(" ({c})")).unwrap_or_default()
}

impl GatewayError {
    pub fn new(endpoint: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: None,
            message: message.into(),
            method_result_code: None,
            method_result_message: None,
            http_status: None,
            endpoint,
            retry_after_ms: None,
        }
    }

    /// A call the local guard did not send; the work should run again after `retry_after`.
    pub fn unavailable(
        endpoint: &'static str,
        message: impl Into<String>,
        retry_after: std::time::Duration,
    ) -> Self {
        let ms = u32::try_from(retry_after.as_millis()).unwrap_or(u32::MAX);
        Self {
            retry_after_ms: Some(ms),
            ..Self::new(endpoint, ErrorKind::Unavailable, message)
        }
    }

    /// When the work should run again, if the local guard refused to send it.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after_ms
            .map(|ms| std::time::Duration::from_millis(u64::from(ms)))
    }

    pub fn mismatch(endpoint: &'static str, message: impl Into<String>) -> Self {
        Self::new(endpoint, ErrorKind::Mismatch, message)
    }

    /// A soft decline: the charge failed at the card/wallet and a dunning attempt is used
    /// up (a hard decline ends dunning instead).
    pub fn consumes_dunning_attempt(&self) -> bool {
        self.kind == ErrorKind::Decline(DeclineClass::Soft)
    }

    /// The outcome at the PG is unknown or disputed: decide by inquiry (order by tid, or the
    /// SID's `last_approved_at`), never by sending the same non-idempotent call again.
    pub fn needs_reconciliation(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Ambiguous | ErrorKind::AlreadyDone | ErrorKind::Mismatch
        )
    }

    /// Safe to call again later (with backoff) without risking a second effect.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Transient | ErrorKind::Unavailable)
    }

    /// Whether this failure says the PG is in trouble (for the circuit breaker): no answer
    /// (timeout, connection error), a 5xx, or a 408/429 refusal. Declines and other
    /// answers show a working PG.
    pub fn is_pg_failure(&self) -> bool {
        match self.kind {
            ErrorKind::Unavailable => false,
            _ => match self.http_status {
                None => true,
                Some(s) => s >= 500 || s == 408 || s == 429,
            },
        }
    }

    /// The code recorded on an order, payment or attempt: KakaoPay's own code, or
    /// `pg_<kind>` when the PG sent none.
    pub fn record_code(&self) -> String {
        self.code
            .map(|c| c.to_string())
            .unwrap_or_else(|| format!("pg_{}", self.kind.as_str()))
    }
}

/// The per-code rule of the notes' error table; declines get their class from
/// [`DECLINE_RULES`].
pub fn classify_code(code: i64, method_result_code: Option<&str>) -> ErrorKind {
    match code {
        // "Transaction in progress" at the wallet: nothing was charged, try again later.
        -780 if method_result_code == Some("USER_LOCKED") => ErrorKind::Transient,
        -702 | -783 | -784 | -785 => ErrorKind::AlreadyDone,
        -723 => ErrorKind::Expired,
        -708..=-701 | -710 | -726..=-721 | -733..=-730 | -761 | -799 => ErrorKind::Permanent,
        // "This server's IP is not allowed": the PG refuses us whatever we send.
        -798 => ErrorKind::Configuration,
        _ => match decline_class(code, method_result_code) {
            Some(class) => ErrorKind::Decline(class),
            None => {
                // A code the notes do not list: a decline we cannot place. Soft, because a
                // wrong "soft" costs a few retries and a wrong "hard" ends a subscription;
                // logged so the table can learn it.
                tracing::warn!(
                    code,
                    method_result_code,
                    "KakaoPay code not in the decline table; treated as a soft decline"
                );
                ErrorKind::Decline(DeclineClass::Soft)
            }
        },
    }
}

/// How far a failed exchange got before it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Failed before the request could reach the PG (DNS, refused, TLS, connect timeout).
    NotSent,
    /// The request may have reached the PG: timeout after sending, connection lost, a
    /// response body that could not be read.
    MaybeProcessed,
}

/// The kind for a failure without a usable PG answer.
pub fn transport_kind(transport: Transport, idempotent: bool) -> ErrorKind {
    match (transport, idempotent) {
        (Transport::NotSent, _) | (_, true) => ErrorKind::Transient,
        (Transport::MaybeProcessed, false) => ErrorKind::Ambiguous,
    }
}

/// Both error body shapes: `{error_code, error_message, extras{…}}` and the older `{code, msg}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    error_message: Option<String>,
    code: Option<i64>,
    msg: Option<String>,
    extras: Option<Extras>,
}

#[derive(Debug, Default, Deserialize)]
struct Extras {
    method_result_code: Option<String>,
    method_result_message: Option<String>,
}

/// The parsed PG error, if the body is one of the two known shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgErrorBody {
    pub code: i64,
    pub message: String,
    pub method_result_code: Option<String>,
    pub method_result_message: Option<String>,
}

pub fn parse_error_body(body: &[u8]) -> Option<PgErrorBody> {
    let raw: ErrorBody = serde_json::from_slice(body).ok()?;
    let code = raw.error_code.or(raw.code)?;
    let extras = raw.extras.unwrap_or_default();
    Some(PgErrorBody {
        code,
        message: raw.error_message.or(raw.msg).unwrap_or_default(),
        method_result_code: extras.method_result_code.filter(|s| !s.is_empty()),
        method_result_message: extras.method_result_message.filter(|s| !s.is_empty()),
    })
}

/// A short, printable excerpt of a body for error messages (bodies can be large HTML pages).
pub(crate) fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The error for a non-2xx HTTP answer.
pub fn from_status(
    endpoint: &'static str,
    status: u16,
    body: &[u8],
    idempotent: bool,
) -> GatewayError {
    let parsed = parse_error_body(body);
    let kind = if status >= 500 {
        // 5xx bodies are not reliable (notes): the call may or may not have been processed.
        transport_kind(Transport::MaybeProcessed, idempotent)
    } else if status == 408 || status == 429 {
        // The server refused to process it (request timeout, rate limit): nothing happened,
        // and DESIGN §5 says rate limits never count as declines.
        ErrorKind::Transient
    } else if status == 401 || status == 403 {
        // The secret key is wrong, expired or rotated, or our address is refused.
        ErrorKind::Configuration
    } else if (400..500).contains(&status) {
        match &parsed {
            Some(p) => classify_code(p.code, p.method_result_code.as_deref()),
            None => ErrorKind::Permanent,
        }
    } else {
        // 1xx/3xx are not part of the protocol; we cannot tell whether it was processed.
        transport_kind(Transport::MaybeProcessed, idempotent)
    };
    match parsed {
        Some(p) => GatewayError {
            kind,
            code: Some(p.code),
            message: if p.message.is_empty() {
                format!("HTTP {status}")
            } else {
                p.message
            },
            method_result_code: p.method_result_code,
            method_result_message: p.method_result_message,
            http_status: Some(status),
            endpoint,
            retry_after_ms: None,
        },
        None => {
            let text = excerpt(body);
            let message = if text.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {text}")
            };
            GatewayError {
                http_status: Some(status),
                ..GatewayError::new(endpoint, kind, message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use ErrorKind::*;
    const SOFT: ErrorKind = Decline(DeclineClass::Soft);
    const HARD: ErrorKind = Decline(DeclineClass::Hard);

    #[test]
    fn kakaopay_code_table() {
        let cases: &[(i64, Option<&str>, ErrorKind)] = &[
            (-780, None, SOFT),
            (-780, Some("CARD_LIMIT"), SOFT),
            (-780, Some("USER_LOCKED"), Transient),
            (-782, None, SOFT),
            (-782, Some("USER_LOCKED"), SOFT),
            (-797, None, SOFT),
            (-752, None, SOFT),
            (-702, None, AlreadyDone),
            (-783, None, AlreadyDone),
            (-784, None, AlreadyDone),
            (-785, None, AlreadyDone),
            (-701, None, Permanent),
            (-703, None, Permanent),
            (-704, None, Permanent),
            (-705, None, Permanent),
            (-706, None, Permanent),
            (-707, None, Permanent),
            (-708, None, Permanent),
            (-710, None, Permanent),
            (-721, None, Permanent),
            (-722, None, Permanent),
            (-723, None, Expired),
            (-724, None, Permanent),
            (-725, None, Permanent),
            (-726, None, Permanent),
            (-730, None, Permanent),
            (-731, None, Permanent),
            (-732, None, Permanent),
            (-733, None, Permanent),
            (-750, None, HARD),
            (-751, None, HARD),
            (-753, None, HARD),
            (-761, None, Permanent),
            (-798, None, Configuration),
            (-799, None, Permanent),
            // Not in the notes: a soft decline (logged).
            (-709, None, SOFT),
            (-789, Some("NEW_REASON"), SOFT),
            (-1, None, SOFT),
        ];
        for &(code, mrc, want) in cases {
            assert_eq!(classify_code(code, mrc), want, "code {code} mrc {mrc:?}");
        }
    }

    #[test]
    fn kakaopay_transport_table() {
        let cases = [
            (Transport::NotSent, false, Transient),
            (Transport::NotSent, true, Transient),
            (Transport::MaybeProcessed, false, Ambiguous),
            (Transport::MaybeProcessed, true, Transient),
        ];
        for (t, idem, want) in cases {
            assert_eq!(transport_kind(t, idem), want, "{t:?} idempotent={idem}");
        }
    }

    #[test]
    fn kakaopay_status_table() {
        let new = r#"{"error_code":-780,"error_message":"approval failure","extras":{"method_result_code":"8003","method_result_message":"limit exceeded"}}"#;
        let locked = r#"{"error_code":-780,"error_message":"approval failure","extras":{"method_result_code":"USER_LOCKED","method_result_message":"in progress"}}"#;
        let old = r#"{"code":-702,"msg":"payment already approved"}"#;
        let old_expired = r#"{"code":-723,"msg":"expired"}"#;
        let no_sid = r#"{"error_code":-750,"error_message":"no sid"}"#;
        let with_code_5xx = r#"{"error_code":-799,"error_message":"internal"}"#;
        // (status, body, idempotent) → (kind, code, method_result_code)
        type Case<'a> = (u16, &'a str, bool, ErrorKind, Option<i64>, Option<&'a str>);
        let cases: &[Case] = &[
            (400, new, false, SOFT, Some(-780), Some("8003")),
            (400, new, true, SOFT, Some(-780), Some("8003")),
            (
                400,
                locked,
                false,
                Transient,
                Some(-780),
                Some("USER_LOCKED"),
            ),
            (400, old, false, AlreadyDone, Some(-702), None),
            (400, old_expired, false, Expired, Some(-723), None),
            (400, no_sid, false, HARD, Some(-750), None),
            (401, "", false, Configuration, None, None),
            (
                403,
                r#"{"error_code":-798,"error_message":"ip"}"#,
                false,
                Configuration,
                Some(-798),
                None,
            ),
            (
                400,
                r#"{"error_code":-798,"error_message":"ip"}"#,
                false,
                Configuration,
                Some(-798),
                None,
            ),
            (404, "<html>nope</html>", false, Permanent, None, None),
            (400, "{not json", true, Permanent, None, None),
            (408, "", false, Transient, None, None),
            (429, new, false, Transient, Some(-780), Some("8003")),
            (500, "", false, Ambiguous, None, None),
            (502, "bad gateway", false, Ambiguous, None, None),
            (503, "", true, Transient, None, None),
            (500, with_code_5xx, false, Ambiguous, Some(-799), None),
            (500, with_code_5xx, true, Transient, Some(-799), None),
            (302, "", false, Ambiguous, None, None),
            (302, "", true, Transient, None, None),
        ];
        for &(status, body, idem, kind, code, mrc) in cases {
            let e = from_status("approve", status, body.as_bytes(), idem);
            assert_eq!(e.kind, kind, "{status} {body} idempotent={idem}");
            assert_eq!(e.code, code, "{status} {body}");
            assert_eq!(e.method_result_code.as_deref(), mrc, "{status} {body}");
            assert_eq!(e.http_status, Some(status));
        }
    }

    #[test]
    fn kakaopay_unparseable_4xx_names_the_status() {
        let e = from_status("cancel", 403, b"Forbidden", false);
        assert_eq!(e.kind, Configuration);
        assert!(e.message.contains("403"), "{}", e.message);
        assert!(e.message.contains("Forbidden"));
    }

    #[test]
    fn kakaopay_both_shapes_keep_message() {
        let a = parse_error_body(br#"{"error_code":-780,"error_message":"m1"}"#).unwrap();
        assert_eq!((a.code, a.message.as_str()), (-780, "m1"));
        let b = parse_error_body(br#"{"code":-780,"msg":"m2"}"#).unwrap();
        assert_eq!((b.code, b.message.as_str()), (-780, "m2"));
        assert!(parse_error_body(br#"{"message":"x"}"#).is_none());
        assert!(parse_error_body(b"").is_none());
    }

    #[test]
    fn kakaopay_helpers() {
        let e = from_status(
            "subscription",
            400,
            br#"{"code":-751,"msg":"inactive"}"#,
            false,
        );
        assert_eq!(e.kind, HARD);
        assert!(!e.consumes_dunning_attempt());
        let e = from_status(
            "subscription",
            400,
            br#"{"code":-782,"msg":"balance"}"#,
            false,
        );
        assert!(e.consumes_dunning_attempt());
        assert!(from_status("approve", 500, b"", false).needs_reconciliation());
        assert!(from_status("order", 500, b"", true).is_retryable());
        let shown =
            from_status("approve", 400, br#"{"code":-702,"msg":"done"}"#, false).to_string();
        assert_eq!(shown, "kakaopay approve: already_done (-702): done");
    }

    #[test]
    fn kakaopay_excerpt_is_bounded_on_char_boundaries() {
        let long = "가".repeat(500);
        let e = excerpt(long.as_bytes());
        assert_eq!(e.chars().count(), 201);
    }
}
