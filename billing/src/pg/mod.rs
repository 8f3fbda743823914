//! The payment gateway (PG) boundary: the [`PaymentGateway`] trait workers call, its typed
//! requests and responses, the error classification, and the KakaoPay implementation.
//!
//! Only workers call it (DESIGN §1: the API never calls the PG). Every method is one HTTP
//! exchange; the client retries only the idempotent ones (`order`, `sid_status`). What to
//! do with an ambiguous outcome (reconciliation) is the job layer's decision, so the client
//! reports it as [`ErrorKind::Ambiguous`] rather than guessing.

pub mod guard;
mod kakaopay;
pub mod policy;
mod types;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};

pub use crate::pg_error::{
    classify_code, decline_class, from_status, parse_error_body, transport_kind, DeclineClass,
    ErrorKind, GatewayError, PgErrorBody, Transport,
};
pub use guard::{BreakerState, Permit, PgGuard};

/// Which of our return URLs KakaoPay sent the buyer back through (a payment's or a
/// checkout's): approved (with a `pg_token`), canceled by the buyer, or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RedirectAction {
    Approve,
    Cancel,
    Fail,
}

impl RedirectAction {
    /// A return's input as far as it can be judged without a lookup: a token no row can
    /// have is `NotFound`; an approval needs its `pg_token` (at most 100 characters,
    /// no control characters). The `pg_token` to record, trimmed.
    pub fn check<'a>(
        self,
        token: &str,
        pg_token: Option<&'a str>,
    ) -> crate::error::Result<Option<&'a str>> {
        if !crate::validate::plausible_token(token) {
            return Err(crate::error::Error::NotFound);
        }
        let pg_token = pg_token.map(str::trim).filter(|t| !t.is_empty());
        let usable = |t: &str| t.len() <= 100 && !t.chars().any(char::is_control);
        if self == RedirectAction::Approve && !pg_token.is_some_and(usable) {
            return Err(crate::error::Error::validation("pg_token", "is required"));
        }
        Ok(pg_token)
    }
}
pub use kakaopay::{KakaoPay, KakaoPayConfig};
pub use types::{
    Amount, ApproveRequest, ApproveResponse, CancelRequest, CancelResponse, ChargeRequest, CidKind,
    OrderResponse, OrderStatus, PaymentAction, PgTime, ReadyRequest, ReadyResponse,
    SidInactiveResponse, SidState, SidStatusResponse,
};

pub type PgResult<T> = Result<T, GatewayError>;

/// A digest of a PG answer, kept with the row it decided (evidence without the payload).
pub fn digest<T: serde::Serialize>(value: &T) -> Option<String> {
    use sha2::Digest;
    serde_json::to_vec(value)
        .ok()
        .map(|b| hex::encode(sha2::Sha256::digest(&b)))
}

/// KakaoPay's `item_name` for an order: the first line's name and how many more there
/// are ("루테인 외 2건"), at most 100 characters.
pub fn item_name(first: String, lines: i64) -> String {
    let mut name = if lines > 1 {
        format!("{first} 외 {}건", lines - 1)
    } else {
        first
    };
    if name.chars().count() > 100 {
        name = name.chars().take(99).collect::<String>() + "…";
    }
    name
}

/// The operations Pillivery needs from a PG. Object-safe so workers hold a
/// [`SharedGateway`] and tests can substitute their own.
#[async_trait]
pub trait PaymentGateway: Send + Sync + std::fmt::Debug {
    /// Starts a payment; the buyer is sent to the returned redirect URL. Never retried here
    /// (a new ready is harmless, so the job layer may call again).
    async fn ready(&self, req: &ReadyRequest) -> PgResult<ReadyResponse>;

    /// Approves a readied payment with the buyer's `pg_token`. Not idempotent; an ambiguous
    /// outcome is decided by [`PaymentGateway::order`] on the same tid.
    async fn approve(&self, req: &ApproveRequest) -> PgResult<ApproveResponse>;

    /// Charges a SID (recurring payment). Not idempotent and has no lookup by our ids; an
    /// ambiguous outcome is decided by [`PaymentGateway::sid_status`]'s `last_approved_at`.
    async fn subscription_charge(&self, req: &ChargeRequest) -> PgResult<ApproveResponse>;

    /// Refunds all or part of a payment. Not idempotent; decide ambiguity by `order`.
    async fn cancel(&self, req: &CancelRequest) -> PgResult<CancelResponse>;

    /// What KakaoPay knows about a tid (idempotent; retried on transient failures).
    async fn order(&self, kind: CidKind, tid: &str) -> PgResult<OrderResponse>;

    /// A SID's state and last approval time (idempotent; retried on transient failures).
    async fn sid_status(&self, sid: &str) -> PgResult<SidStatusResponse>;

    /// Makes a SID unusable for further charges.
    async fn sid_inactivate(&self, sid: &str) -> PgResult<SidInactiveResponse>;
}

pub type SharedGateway = Arc<dyn PaymentGateway>;

impl SidStatusResponse {
    /// Whether the SID was charged at or after `attempt_started` — the notes' only evidence
    /// for an ambiguous recurring charge. `Some(false)` means "not yet": the caller decides
    /// "did not land" only after its safety window. `None` if `last_approved_at` is present
    /// but unreadable.
    ///
    /// KakaoPay reports whole seconds, so the start is floored to the second: a charge in the
    /// same second as the start counts as landed, which errs towards not charging twice.
    pub fn approved_since(&self, attempt_started: DateTime<Utc>) -> Option<bool> {
        let Some(last) = &self.last_approved_at else {
            return Some(false);
        };
        let last = last.utc()?;
        let started = attempt_started
            .duration_trunc(TimeDelta::seconds(1))
            .unwrap_or(attempt_started);
        Some(last >= started)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use chrono::TimeZone;

    fn status(last: Option<&str>) -> SidStatusResponse {
        SidStatusResponse {
            available: Some(true),
            cid: None,
            sid: "S1".into(),
            status: SidState::Active,
            payment_method_type: None,
            item_name: None,
            created_at: None,
            last_approved_at: last.map(|s| PgTime(s.into())),
            inactivated_at: None,
        }
    }

    #[test]
    fn kakaopay_approved_since_compares_in_utc_and_floors_to_seconds() {
        // 21:18:22 Seoul == 12:18:22 UTC.
        let at = |h, m, s, ms| {
            Utc.with_ymd_and_hms(2023, 7, 15, h, m, s).unwrap() + TimeDelta::milliseconds(ms)
        };
        let st = status(Some("2023-07-15T21:18:22"));
        assert_eq!(st.approved_since(at(12, 18, 21, 0)), Some(true));
        assert_eq!(st.approved_since(at(12, 18, 22, 700)), Some(true));
        assert_eq!(st.approved_since(at(12, 18, 23, 0)), Some(false));
        assert_eq!(status(None).approved_since(at(0, 0, 0, 0)), Some(false));
        assert_eq!(status(Some("garbage")).approved_since(at(0, 0, 0, 0)), None);
    }
}
