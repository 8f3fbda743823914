//! The gateway's requests and responses, with KakaoPay's field names (see
//! `notes/kakaopay-api.md`): what we send, what we read back, and its times and statuses.
//!
//! Requests carry no `cid`: the client adds the configured one for the payment's
//! [`CidKind`], so callers cannot mix a one-time cid into a subscription flow. Responses
//! are lenient about fields we do not act on (optional, defaulted), and strict only about
//! what we check or need.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::money::Money;

/// Which of the two merchant ids (cids) a payment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CidKind {
    /// `cid_one_time` (e.g. `TC0ONETIME`).
    OneTime,
    /// `cid_subscription` (e.g. `TCSUBSCRIP`): its approve issues a SID; charges, SID status
    /// and inactivation always use it.
    Subscription,
}

/// A time as KakaoPay writes it: Asia/Seoul local time without a zone
/// (`2023-07-15T21:18:22`). Kept as sent so an unexpected format never turns a successful
/// payment into an unreadable response; parse with [`PgTime::naive`] / [`PgTime::utc`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PgTime(pub String);

/// Korea has had no daylight saving time since 1988, so Seoul is a fixed +09:00.
const SEOUL_OFFSET_SECS: i32 = 9 * 3600;

impl PgTime {
    /// The local (Seoul) wall-clock time, if the string is a time we recognise.
    pub fn naive(&self) -> Option<NaiveDateTime> {
        let s = self.0.trim();
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .find_map(|fmt| NaiveDateTime::parse_from_str(s, fmt).ok())
            .or_else(|| {
                // Tolerate a zoned form too, expressed in Seoul local time.
                let seoul = FixedOffset::east_opt(SEOUL_OFFSET_SECS)?;
                DateTime::parse_from_rfc3339(s)
                    .ok()
                    .map(|t| t.with_timezone(&seoul).naive_local())
            })
    }

    /// The instant in UTC (the Seoul local time minus nine hours).
    pub fn utc(&self) -> Option<DateTime<Utc>> {
        let seoul = FixedOffset::east_opt(SEOUL_OFFSET_SECS)?;
        let local = self.naive()?;
        seoul
            .from_local_datetime(&local)
            .single()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// A payment's amount breakdown as KakaoPay reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Amount {
    pub total: Money,
    #[serde(default)]
    pub tax_free: Money,
    #[serde(default)]
    pub vat: Money,
    #[serde(default)]
    pub point: Money,
    #[serde(default)]
    pub discount: Money,
    #[serde(default)]
    pub green_deposit: Money,
}

/// `POST …/ready`: starts a payment and returns the redirect URLs for the buyer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadyRequest {
    #[serde(skip)]
    pub kind: CidKind,
    pub partner_order_id: String,
    pub partner_user_id: String,
    pub item_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_code: Option<String>,
    pub quantity: u32,
    pub total_amount: Money,
    pub tax_free_amount: Money,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vat_amount: Option<Money>,
    pub approval_url: String,
    pub cancel_url: String,
    pub fail_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyResponse {
    pub tid: String,
    #[serde(default)]
    pub next_redirect_pc_url: Option<String>,
    #[serde(default)]
    pub next_redirect_mobile_url: Option<String>,
    #[serde(default)]
    pub next_redirect_app_url: Option<String>,
    #[serde(default)]
    pub android_app_scheme: Option<String>,
    #[serde(default)]
    pub ios_app_scheme: Option<String>,
    #[serde(default)]
    pub created_at: Option<PgTime>,
}

/// `POST …/approve` after the buyer came back with `pg_token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApproveRequest {
    #[serde(skip)]
    pub kind: CidKind,
    pub tid: String,
    /// Must equal ready's.
    pub partner_order_id: String,
    /// Must equal ready's.
    pub partner_user_id: String,
    pub pg_token: String,
    /// The amount sent to ready; the approval must report exactly this total. Not sent.
    #[serde(skip)]
    pub expected_total: Money,
}

/// `POST …/subscription`: a recurring charge on a SID (no redirect, a new tid per charge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeRequest {
    pub sid: String,
    /// Our id for this charge; KakaoPay does not reject duplicates, uniqueness is ours.
    pub partner_order_id: String,
    /// Must equal the SID's original.
    pub partner_user_id: String,
    pub item_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_code: Option<String>,
    pub quantity: u32,
    pub total_amount: Money,
    pub tax_free_amount: Money,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vat_amount: Option<Money>,
}

/// The answer to approve and to a recurring charge (the same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproveResponse {
    pub aid: String,
    pub tid: String,
    #[serde(default)]
    pub cid: Option<String>,
    /// Only for a subscription cid: the key for later charges.
    #[serde(default)]
    pub sid: Option<String>,
    pub partner_order_id: String,
    #[serde(default)]
    pub partner_user_id: Option<String>,
    /// `CARD` or `MONEY`.
    #[serde(default)]
    pub payment_method_type: Option<String>,
    pub amount: Amount,
    /// Present for `CARD` payments; kept as sent (issuer, bin, installments, …).
    #[serde(default)]
    pub card_info: Option<serde_json::Value>,
    #[serde(default)]
    pub item_name: Option<String>,
    #[serde(default)]
    pub item_code: Option<String>,
    #[serde(default)]
    pub quantity: Option<i64>,
    #[serde(default)]
    pub created_at: Option<PgTime>,
    #[serde(default)]
    pub approved_at: Option<PgTime>,
    #[serde(default)]
    pub payload: Option<String>,
}

/// `POST …/cancel`: a full or partial refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CancelRequest {
    #[serde(skip)]
    pub kind: CidKind,
    pub tid: String,
    pub cancel_amount: Money,
    pub cancel_tax_free_amount: Money,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_vat_amount: Option<Money>,
    /// Optimistic guard: the PG refuses if the refundable amount is not this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_available_amount: Option<Money>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelResponse {
    pub aid: String,
    pub tid: String,
    #[serde(default)]
    pub cid: Option<String>,
    /// `PART_CANCEL_PAYMENT` or `CANCEL_PAYMENT`.
    pub status: OrderStatus,
    #[serde(default)]
    pub partner_order_id: Option<String>,
    #[serde(default)]
    pub partner_user_id: Option<String>,
    #[serde(default)]
    pub payment_method_type: Option<String>,
    #[serde(default)]
    pub amount: Option<Amount>,
    /// What this request refunded.
    #[serde(default)]
    pub approved_cancel_amount: Option<Amount>,
    /// Refunded so far, all cancels included.
    #[serde(default)]
    pub canceled_amount: Option<Amount>,
    #[serde(default)]
    pub cancel_available_amount: Option<Amount>,
    #[serde(default)]
    pub item_name: Option<String>,
    #[serde(default)]
    pub created_at: Option<PgTime>,
    #[serde(default)]
    pub approved_at: Option<PgTime>,
    #[serde(default)]
    pub canceled_at: Option<PgTime>,
    #[serde(default)]
    pub payload: Option<String>,
}

/// A payment's state as `order` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Ready,
    SendTms,
    OpenPayment,
    SelectMethod,
    ArsWaiting,
    AuthPassword,
    /// A SID was issued without a charge.
    IssuedSid,
    SuccessPayment,
    PartCancelPayment,
    CancelPayment,
    FailAuthPassword,
    QuitPayment,
    FailPayment,
    /// A status the notes do not list; callers must treat it as undecided.
    Other(String),
}

impl OrderStatus {
    pub fn as_str(&self) -> &str {
        match self {
            OrderStatus::Ready => "READY",
            OrderStatus::SendTms => "SEND_TMS",
            OrderStatus::OpenPayment => "OPEN_PAYMENT",
            OrderStatus::SelectMethod => "SELECT_METHOD",
            OrderStatus::ArsWaiting => "ARS_WAITING",
            OrderStatus::AuthPassword => "AUTH_PASSWORD",
            OrderStatus::IssuedSid => "ISSUED_SID",
            OrderStatus::SuccessPayment => "SUCCESS_PAYMENT",
            OrderStatus::PartCancelPayment => "PART_CANCEL_PAYMENT",
            OrderStatus::CancelPayment => "CANCEL_PAYMENT",
            OrderStatus::FailAuthPassword => "FAIL_AUTH_PASSWORD",
            OrderStatus::QuitPayment => "QUIT_PAYMENT",
            OrderStatus::FailPayment => "FAIL_PAYMENT",
            OrderStatus::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "READY" => OrderStatus::Ready,
            "SEND_TMS" => OrderStatus::SendTms,
            "OPEN_PAYMENT" => OrderStatus::OpenPayment,
            "SELECT_METHOD" => OrderStatus::SelectMethod,
            "ARS_WAITING" => OrderStatus::ArsWaiting,
            "AUTH_PASSWORD" => OrderStatus::AuthPassword,
            "ISSUED_SID" => OrderStatus::IssuedSid,
            "SUCCESS_PAYMENT" => OrderStatus::SuccessPayment,
            "PART_CANCEL_PAYMENT" => OrderStatus::PartCancelPayment,
            "CANCEL_PAYMENT" => OrderStatus::CancelPayment,
            "FAIL_AUTH_PASSWORD" => OrderStatus::FailAuthPassword,
            "QUIT_PAYMENT" => OrderStatus::QuitPayment,
            "FAIL_PAYMENT" => OrderStatus::FailPayment,
            other => OrderStatus::Other(other.to_owned()),
        }
    }

    /// The buyer has not finished yet.
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            OrderStatus::Ready
                | OrderStatus::SendTms
                | OrderStatus::OpenPayment
                | OrderStatus::SelectMethod
                | OrderStatus::ArsWaiting
                | OrderStatus::AuthPassword
        )
    }

    /// Approved: charged, or (for a SID-only payment) the SID issued.
    pub fn is_approved(&self) -> bool {
        matches!(self, OrderStatus::SuccessPayment | OrderStatus::IssuedSid)
    }

    /// Approved once, then (partly) refunded.
    pub fn is_refunded(&self) -> bool {
        matches!(
            self,
            OrderStatus::PartCancelPayment | OrderStatus::CancelPayment
        )
    }

    /// Ended without a charge.
    pub fn is_failed(&self) -> bool {
        matches!(
            self,
            OrderStatus::FailAuthPassword | OrderStatus::QuitPayment | OrderStatus::FailPayment
        )
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for OrderStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OrderStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(OrderStatus::parse(&s))
    }
}

/// `payment_action_details[]`: one approval, cancel or SID issue on a tid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAction {
    pub aid: String,
    /// `PAYMENT`, `CANCEL` or `ISSUED_SID`.
    pub payment_action_type: String,
    #[serde(default)]
    pub payment_method_type: Option<String>,
    /// KakaoPay's own docs give an integer here; an `{total, …}` object is accepted too
    /// because the notes do not pin the shape down.
    #[serde(default, deserialize_with = "int_or_total")]
    pub amount: Money,
    #[serde(default)]
    pub point_amount: Option<Money>,
    #[serde(default)]
    pub discount_amount: Option<Money>,
    #[serde(default)]
    pub approved_at: Option<PgTime>,
    #[serde(default)]
    pub payload: Option<String>,
}

fn int_or_total<'de, D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrAmount {
        Int(Money),
        Obj(Amount),
    }
    Ok(match IntOrAmount::deserialize(d)? {
        IntOrAmount::Int(m) => m,
        IntOrAmount::Obj(a) => a.total,
    })
}

/// `POST …/order`: what KakaoPay knows about a tid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderResponse {
    pub tid: String,
    #[serde(default)]
    pub cid: Option<String>,
    /// Present for payments made with the subscription cid (not in the notes; kept if sent).
    #[serde(default)]
    pub sid: Option<String>,
    pub status: OrderStatus,
    #[serde(default)]
    pub partner_order_id: Option<String>,
    #[serde(default)]
    pub partner_user_id: Option<String>,
    #[serde(default)]
    pub payment_method_type: Option<String>,
    #[serde(default)]
    pub amount: Option<Amount>,
    #[serde(default)]
    pub canceled_amount: Option<Amount>,
    #[serde(default)]
    pub cancel_available_amount: Option<Amount>,
    #[serde(default)]
    pub item_name: Option<String>,
    #[serde(default)]
    pub item_code: Option<String>,
    #[serde(default)]
    pub quantity: Option<i64>,
    #[serde(default)]
    pub created_at: Option<PgTime>,
    #[serde(default)]
    pub approved_at: Option<PgTime>,
    #[serde(default)]
    pub canceled_at: Option<PgTime>,
    #[serde(default)]
    pub payment_action_details: Vec<PaymentAction>,
}

/// A SID's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SidState {
    Active,
    Inactive,
    Other(String),
}

impl SidState {
    pub fn as_str(&self) -> &str {
        match self {
            SidState::Active => "ACTIVE",
            SidState::Inactive => "INACTIVE",
            SidState::Other(s) => s,
        }
    }
}

impl Serialize for SidState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SidState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "ACTIVE" => SidState::Active,
            "INACTIVE" => SidState::Inactive,
            _ => SidState::Other(s),
        })
    }
}

/// `POST …/manage/subscription/status`. `last_approved_at` is the only way to decide an
/// ambiguous recurring charge (notes: reconciliation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidStatusResponse {
    #[serde(default)]
    pub available: Option<bool>,
    #[serde(default)]
    pub cid: Option<String>,
    pub sid: String,
    pub status: SidState,
    #[serde(default)]
    pub payment_method_type: Option<String>,
    #[serde(default)]
    pub item_name: Option<String>,
    #[serde(default)]
    pub created_at: Option<PgTime>,
    #[serde(default)]
    pub last_approved_at: Option<PgTime>,
    #[serde(default)]
    pub inactivated_at: Option<PgTime>,
}

/// `POST …/manage/subscription/inactive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidInactiveResponse {
    #[serde(default)]
    pub cid: Option<String>,
    pub sid: String,
    pub status: SidState,
    #[serde(default)]
    pub created_at: Option<PgTime>,
    #[serde(default)]
    pub last_approved_at: Option<PgTime>,
    #[serde(default)]
    pub inactivated_at: Option<PgTime>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn kakaopay_seoul_times_become_utc() {
        let t = PgTime("2023-07-15T21:18:22".into());
        assert_eq!(t.naive().unwrap().to_string(), "2023-07-15 21:18:22");
        assert_eq!(t.utc().unwrap().to_rfc3339(), "2023-07-15T12:18:22+00:00");
        // Crossing midnight backwards.
        let t = PgTime("2024-01-01T03:00:00".into());
        assert_eq!(t.utc().unwrap().to_rfc3339(), "2023-12-31T18:00:00+00:00");
        // Fractions, a space separator and an explicit zone are tolerated.
        assert!(PgTime("2023-07-15T21:18:22.123".into()).naive().is_some());
        assert!(PgTime("2023-07-15 21:18:22".into()).naive().is_some());
        let z = PgTime("2023-07-15T12:18:22Z".into());
        assert_eq!(z.naive().unwrap().to_string(), "2023-07-15 21:18:22");
        assert!(PgTime("yesterday".into()).utc().is_none());
    }

    #[test]
    fn kakaopay_statuses_round_trip_and_unknown_ones_survive() {
        for s in [
            "READY",
            "SEND_TMS",
            "OPEN_PAYMENT",
            "SELECT_METHOD",
            "ARS_WAITING",
            "AUTH_PASSWORD",
            "ISSUED_SID",
            "SUCCESS_PAYMENT",
            "PART_CANCEL_PAYMENT",
            "CANCEL_PAYMENT",
            "FAIL_AUTH_PASSWORD",
            "QUIT_PAYMENT",
            "FAIL_PAYMENT",
            "SOMETHING_NEW",
        ] {
            let st: OrderStatus = serde_json::from_value(serde_json::json!(s)).unwrap();
            assert_eq!(st.as_str(), s);
            let decided = [
                st.is_pending(),
                st.is_approved(),
                st.is_refunded(),
                st.is_failed(),
            ];
            let n = decided.iter().filter(|b| **b).count();
            assert_eq!(n, usize::from(s != "SOMETHING_NEW"), "{s}");
        }
    }

    #[test]
    fn kakaopay_action_amount_in_either_shape() {
        let a: PaymentAction =
            serde_json::from_str(r#"{"aid":"A1","payment_action_type":"PAYMENT","amount":2200}"#)
                .unwrap();
        assert_eq!(a.amount, Money(2200));
        let b: PaymentAction = serde_json::from_str(
            r#"{"aid":"A1","payment_action_type":"PAYMENT","amount":{"total":2200,"tax_free":0}}"#,
        )
        .unwrap();
        assert_eq!(b.amount, Money(2200));
    }

    #[test]
    fn kakaopay_requests_never_carry_internal_fields() {
        let r = ApproveRequest {
            kind: CidKind::OneTime,
            tid: "T1".into(),
            partner_order_id: "o".into(),
            partner_user_id: "u".into(),
            pg_token: "p".into(),
            expected_total: Money(1),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"tid":"T1","partner_order_id":"o","partner_user_id":"u","pg_token":"p"})
        );
    }
}
