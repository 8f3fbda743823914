//! The payment state machine: payments by tid, SIDs, the ledger, the buyer's actions and
//! the seven KakaoPay operations. Everything here runs under one lock, without awaiting.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::knobs::PaymentMethod;
use crate::protocol::{
    code, local_time, new_id, new_pg_token, quantity, request_amount, Amount, Fields, PgError,
};

/// KakaoPay's order statuses (the ones this simulator produces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Ready, the buyer has not opened the payment page.
    Ready,
    /// The buyer opened the payment page.
    OpenPayment,
    /// The buyer authenticated; a `pg_token` was issued; waiting for the merchant's approve.
    AuthPassword,
    SuccessPayment,
    PartCancelPayment,
    CancelPayment,
    /// Authentication failed at the buyer page, or the approve was declined.
    FailPayment,
    /// The buyer quit (cancel link).
    QuitPayment,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "READY",
            Status::OpenPayment => "OPEN_PAYMENT",
            Status::AuthPassword => "AUTH_PASSWORD",
            Status::SuccessPayment => "SUCCESS_PAYMENT",
            Status::PartCancelPayment => "PART_CANCEL_PAYMENT",
            Status::CancelPayment => "CANCEL_PAYMENT",
            Status::FailPayment => "FAIL_PAYMENT",
            Status::QuitPayment => "QUIT_PAYMENT",
        }
    }

    fn approved(self) -> bool {
        matches!(
            self,
            Status::SuccessPayment | Status::PartCancelPayment | Status::CancelPayment
        )
    }

    fn pending(self) -> bool {
        matches!(
            self,
            Status::Ready | Status::OpenPayment | Status::AuthPassword
        )
    }
}

struct Action {
    aid: String,
    kind: &'static str,
    amount: Amount,
    at: DateTime<Utc>,
    payload: Option<String>,
}

struct Payment {
    tid: String,
    cid: String,
    partner_order_id: String,
    partner_user_id: String,
    item_name: String,
    item_code: Option<String>,
    quantity: i64,
    amount: Amount,
    canceled: Amount,
    approval_url: String,
    cancel_url: String,
    fail_url: String,
    requested_method: Option<PaymentMethod>,
    method: Option<PaymentMethod>,
    status: Status,
    pg_token: Option<String>,
    aid: Option<String>,
    sid: Option<String>,
    created_at: DateTime<Utc>,
    approved_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
    actions: Vec<Action>,
}

struct Sid {
    cid: String,
    partner_user_id: String,
    item_name: String,
    method: PaymentMethod,
    created_at: DateTime<Utc>,
    last_approved_at: Option<DateTime<Utc>>,
    inactivated_at: Option<DateTime<Utc>>,
    decline: Option<SidDecline>,
}

/// A decline set for every recurring charge on one SID (`PUT /__sids/{sid}/decline`,
/// until `DELETE`), whatever the decline knobs say: a test gives one subscription a hard
/// code (e.g. −753) while the others follow the knobs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SidDecline {
    pub error_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_result_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_result_message: Option<String>,
}

impl SidDecline {
    fn error(&self) -> PgError {
        let e = PgError::new(self.error_code, "recurring payment failed (SID decline)");
        match &self.method_result_code {
            Some(c) => e.with_method_result(c, self.method_result_message.as_deref().unwrap_or("")),
            None => e,
        }
    }
}

/// One money movement: `approve` (a buyer-approved payment), `charge` (a recurring charge
/// by SID) or `cancel` (a refund, `amount` is the refunded amount, positive).
#[derive(Clone, Debug, Serialize)]
pub struct LedgerEntry {
    pub kind: &'static str,
    pub tid: String,
    pub sid: Option<String>,
    pub partner_order_id: String,
    pub amount: i64,
    pub at: DateTime<Utc>,
    pub aid: String,
    pub cid: String,
    pub partner_user_id: String,
}

/// One SID of `POST /__sids`: registered as if an earlier approve on a subscription cid
/// had issued it (fixtures and benchmarks need SIDs without walking the buyer flow).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidRegistration {
    pub sid: String,
    pub cid: String,
    pub partner_user_id: String,
    pub item_name: String,
    /// The last successful charge, if any (RFC 3339).
    #[serde(default)]
    pub last_approved_at: Option<DateTime<Utc>>,
    /// `CARD` or `MONEY`; by default the `payment_method` knob, as for an approve whose
    /// ready asked for no method.
    #[serde(default)]
    pub payment_method_type: Option<PaymentMethod>,
}

/// Why a `POST /__sids` batch was refused; a refused batch registers nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// 400: a field is invalid (empty, too long, not a subscription cid).
    Invalid(String),
    /// 409: the sid already exists for another cid or `partner_user_id`.
    Conflict(String),
}

/// A SID as `GET /__sids/{sid}` shows it (times in RFC 3339 UTC, like the ledger's).
#[derive(Clone, Debug, Serialize)]
pub struct SidState {
    pub sid: String,
    pub cid: String,
    pub partner_user_id: String,
    pub item_name: String,
    pub payment_method_type: &'static str,
    /// `ACTIVE` or `INACTIVE`.
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
    pub last_approved_at: Option<DateTime<Utc>>,
    pub inactivated_at: Option<DateTime<Utc>>,
    /// Recurring charges on this SID in the ledger (`DELETE /__ledger` forgets them).
    pub charges: usize,
    /// The decline set for this SID's charges, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline: Option<SidDecline>,
}

/// Per-request context.
pub struct Ctx<'a> {
    pub config: &'a Config,
    /// Base URL of the buyer pages.
    pub public_url: &'a str,
    pub now: DateTime<Utc>,
    pub default_method: PaymentMethod,
}

impl Ctx<'_> {
    fn local(&self, t: DateTime<Utc>) -> String {
        local_time(t, self.config.utc_offset)
    }

    fn is_subscription_cid(&self, cid: &str) -> bool {
        self.config.subscription_cids.iter().any(|c| c == cid)
    }

    fn expired(&self, created_at: DateTime<Utc>) -> bool {
        let ttl =
            chrono::Duration::from_std(self.config.ready_ttl).unwrap_or(chrono::Duration::MAX);
        self.now.signed_duration_since(created_at) > ttl
    }
}

/// What the buyer does on the payment page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuyerAction {
    View,
    Approve,
    Cancel,
    Fail,
}

/// What the buyer page answers.
#[derive(Debug, PartialEq, Eq)]
pub enum BuyerOutcome {
    /// 302 to this URL.
    Redirect(String),
    /// The page with its approve / cancel / fail links.
    Page {
        item_name: String,
        total: i64,
        status: &'static str,
    },
    NotFound,
    /// 410: the payment expired.
    Expired,
    /// 409: the payment is no longer open for this action.
    Closed(&'static str),
}

/// `url` with `pg_token` appended to its query (the merchant's own parameters are kept).
pub fn with_pg_token(url: &str, token: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.query_pairs_mut().append_pair("pg_token", token);
            u.to_string()
        }
        Err(_) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}pg_token={token}")
        }
    }
}

/// A decline decided by the fault knobs, asked at the point where a decline would happen.
pub type DeclineRoll<'a> = &'a mut dyn FnMut() -> Option<PgError>;

/// All payments, SIDs and the ledger.
#[derive(Default)]
pub struct Store {
    payments: HashMap<String, Payment>,
    sids: HashMap<String, Sid>,
    ledger: Vec<LedgerEntry>,
}

impl Store {
    pub fn ledger(&self) -> &[LedgerEntry] {
        &self.ledger
    }

    /// Clears the ledger (only the ledger); returns how many entries it had.
    pub fn clear_ledger(&mut self) -> usize {
        std::mem::take(&mut self.ledger).len()
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.payments.len(), self.sids.len())
    }

    /// Registers a batch of SIDs (`POST /__sids`), all or nothing. An existing sid is
    /// replaced (a fresh, active SID) when the cid and `partner_user_id` are the same, and
    /// refused otherwise: another user's SID must never silently change hands.
    pub fn register_sids(
        &mut self,
        ctx: &Ctx<'_>,
        batch: Vec<SidRegistration>,
    ) -> Result<usize, RegisterError> {
        // Validate the whole batch before touching the store, so a refusal leaves no half
        // registered fixture behind. `seen` makes a sid repeated within the batch behave
        // like a re-registration of its earlier occurrence.
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            for (name, value) in [
                ("sid", &r.sid),
                ("partner_user_id", &r.partner_user_id),
                ("item_name", &r.item_name),
            ] {
                // the same limits the KakaoPay endpoints apply, so the SID stays usable
                if value.is_empty() || value.chars().count() > 100 {
                    return Err(RegisterError::Invalid(format!(
                        "sids[{i}]: {name} must have 1 to 100 characters"
                    )));
                }
            }
            if !ctx.is_subscription_cid(&r.cid) {
                return Err(RegisterError::Invalid(format!(
                    "sids[{i}]: cid {:?} is not a subscription cid (these are: {})",
                    r.cid,
                    ctx.config.subscription_cids.join(", ")
                )));
            }
            let owner = match seen.get(r.sid.as_str()) {
                Some(&j) => batch
                    .get(j)
                    .map(|o| (o.cid.as_str(), o.partner_user_id.as_str())),
                None => self
                    .sids
                    .get(&r.sid)
                    .map(|s| (s.cid.as_str(), s.partner_user_id.as_str())),
            };
            if let Some((cid, user)) = owner {
                if cid != r.cid || user != r.partner_user_id {
                    return Err(RegisterError::Conflict(format!(
                        "sids[{i}]: SID {:?} exists for cid {cid:?} and partner_user_id {user:?}",
                        r.sid
                    )));
                }
            }
            seen.insert(r.sid.as_str(), i);
        }
        let n = batch.len();
        self.sids.reserve(n);
        for r in batch {
            self.sids.insert(
                r.sid,
                Sid {
                    cid: r.cid,
                    partner_user_id: r.partner_user_id,
                    item_name: r.item_name,
                    method: r.payment_method_type.unwrap_or(ctx.default_method),
                    created_at: ctx.now,
                    last_approved_at: r.last_approved_at,
                    inactivated_at: None,
                    decline: None,
                },
            );
        }
        Ok(n)
    }

    /// A SID's state for `GET /__sids/{sid}`, whichever way it was issued.
    pub fn sid_state(&self, sid_id: &str) -> Option<SidState> {
        let sid = self.sids.get(sid_id)?;
        let charges = self
            .ledger
            .iter()
            .filter(|e| e.kind == "charge" && e.sid.as_deref() == Some(sid_id))
            .count();
        Some(SidState {
            sid: sid_id.to_owned(),
            cid: sid.cid.clone(),
            partner_user_id: sid.partner_user_id.clone(),
            item_name: sid.item_name.clone(),
            payment_method_type: sid.method.as_str(),
            status: if sid.inactivated_at.is_none() {
                "ACTIVE"
            } else {
                "INACTIVE"
            },
            created_at: sid.created_at,
            last_approved_at: sid.last_approved_at,
            inactivated_at: sid.inactivated_at,
            charges,
            decline: sid.decline.clone(),
        })
    }

    /// Sets (or with `None` clears) the decline of one SID's charges; `false` if there is
    /// no such SID.
    pub fn set_sid_decline(&mut self, sid_id: &str, decline: Option<SidDecline>) -> bool {
        match self.sids.get_mut(sid_id) {
            Some(sid) => {
                sid.decline = decline;
                true
            }
            None => false,
        }
    }

    fn fresh_tid(&self) -> String {
        loop {
            let tid = new_id('T');
            if !self.payments.contains_key(&tid) {
                return tid;
            }
        }
    }

    fn fresh_sid(&self) -> String {
        loop {
            let sid = new_id('S');
            if !self.sids.contains_key(&sid) {
                return sid;
            }
        }
    }

    fn payment_mut(&mut self, cid: &str, tid: &str) -> Result<&mut Payment, PgError> {
        self.payments
            .get_mut(tid)
            .filter(|p| p.cid == cid)
            .ok_or_else(|| {
                PgError::new(
                    code::NO_TID,
                    format!("no payment with tid {tid:?} for cid {cid:?}"),
                )
            })
    }

    // ---------------------------------------------------------------- ready

    pub fn ready(&mut self, ctx: &Ctx<'_>, f: &Fields<'_>) -> Result<Value, PgError> {
        let cid = f.cid()?;
        let partner_order_id = f.str("partner_order_id", 100)?;
        let partner_user_id = f.str("partner_user_id", 100)?;
        let item_name = f.str("item_name", 100)?;
        let item_code = f.opt_str("item_code", 100)?;
        let quantity = quantity(f)?;
        let amount = request_amount(f)?;
        let approval_url = f.url("approval_url")?;
        let cancel_url = f.url("cancel_url")?;
        let fail_url = f.url("fail_url")?;
        let requested_method = match f.opt_str("payment_method_type", 10)? {
            None => None,
            Some("CARD") => Some(PaymentMethod::Card),
            Some("MONEY") => Some(PaymentMethod::Money),
            Some(other) => {
                return Err(PgError::param(
                    "payment_method_type",
                    format!("payment_method_type must be CARD or MONEY (got {other:?})"),
                ))
            }
        };

        let tid = self.fresh_tid();
        let pc = format!("{}/buyer/{tid}", ctx.public_url);
        let scheme = format!(
            "kakaotalk://kakaopay/pg?url={}",
            url::form_urlencoded::byte_serialize(pc.as_bytes()).collect::<String>()
        );
        let body = json!({
            "tid": tid,
            "tms_result": false,
            "created_at": ctx.local(ctx.now),
            "next_redirect_app_url": format!("{pc}?channel=app"),
            "next_redirect_mobile_url": format!("{pc}?channel=mobile"),
            "next_redirect_pc_url": pc,
            "android_app_scheme": scheme,
            "ios_app_scheme": scheme,
        });
        self.payments.insert(
            tid.clone(),
            Payment {
                tid,
                cid: cid.to_owned(),
                partner_order_id: partner_order_id.to_owned(),
                partner_user_id: partner_user_id.to_owned(),
                item_name: item_name.to_owned(),
                item_code: item_code.map(str::to_owned),
                quantity,
                amount,
                canceled: Amount::default(),
                approval_url: approval_url.to_owned(),
                cancel_url: cancel_url.to_owned(),
                fail_url: fail_url.to_owned(),
                requested_method,
                method: None,
                status: Status::Ready,
                pg_token: None,
                aid: None,
                sid: None,
                created_at: ctx.now,
                approved_at: None,
                canceled_at: None,
                actions: Vec::new(),
            },
        );
        Ok(body)
    }

    // ---------------------------------------------------------------- buyer page

    pub fn buyer(&mut self, ctx: &Ctx<'_>, tid: &str, action: BuyerAction) -> BuyerOutcome {
        let Some(p) = self.payments.get_mut(tid) else {
            return BuyerOutcome::NotFound;
        };
        if p.approval_url.is_empty() {
            // a recurring charge has no buyer
            return BuyerOutcome::NotFound;
        }
        let expired = p.status.pending() && ctx.expired(p.created_at);
        match action {
            BuyerAction::View => {
                if expired {
                    return BuyerOutcome::Expired;
                }
                if !p.status.pending() {
                    return BuyerOutcome::Closed(p.status.as_str());
                }
                if p.status == Status::Ready {
                    p.status = Status::OpenPayment;
                }
                BuyerOutcome::Page {
                    item_name: p.item_name.clone(),
                    total: p.amount.total,
                    status: p.status.as_str(),
                }
            }
            BuyerAction::Approve => {
                if p.status.approved() {
                    // a repeated redirect: same token, the merchant's approve answers −702
                    if let Some(token) = &p.pg_token {
                        return BuyerOutcome::Redirect(with_pg_token(&p.approval_url, token));
                    }
                }
                if !p.status.pending() {
                    return BuyerOutcome::Closed(p.status.as_str());
                }
                if expired {
                    return BuyerOutcome::Expired;
                }
                let token = p.pg_token.get_or_insert_with(new_pg_token).clone();
                p.status = Status::AuthPassword;
                BuyerOutcome::Redirect(with_pg_token(&p.approval_url, &token))
            }
            BuyerAction::Cancel | BuyerAction::Fail => {
                let (to, url) = if action == BuyerAction::Cancel {
                    (Status::QuitPayment, p.cancel_url.clone())
                } else {
                    (Status::FailPayment, p.fail_url.clone())
                };
                if p.status == to {
                    return BuyerOutcome::Redirect(url);
                }
                if !p.status.pending() {
                    return BuyerOutcome::Closed(p.status.as_str());
                }
                if expired {
                    return BuyerOutcome::Expired;
                }
                p.status = to;
                BuyerOutcome::Redirect(url)
            }
        }
    }

    // ---------------------------------------------------------------- approve

    pub fn approve(
        &mut self,
        ctx: &Ctx<'_>,
        f: &Fields<'_>,
        decline: DeclineRoll<'_>,
    ) -> Result<Value, PgError> {
        let cid = f.cid()?;
        let tid = f.str("tid", 100)?;
        let partner_order_id = f.str("partner_order_id", 100)?;
        let partner_user_id = f.str("partner_user_id", 100)?;
        let pg_token = f.str("pg_token", 100)?;
        let total_amount = f.opt_int("total_amount")?;
        let payload = f.opt_str("payload", 200)?;

        let aid = new_id('A');
        let sid = ctx.is_subscription_cid(cid).then(|| self.fresh_sid());
        let p = self.payment_mut(cid, tid)?;
        if p.partner_order_id != partner_order_id || p.partner_user_id != partner_user_id {
            return Err(PgError::new(
                code::ORDER_MISMATCH,
                "partner_order_id or partner_user_id differs from the ready request",
            ));
        }
        match p.status {
            s if s.approved() => {
                return Err(PgError::new(
                    code::ALREADY_APPROVED,
                    format!("tid {tid} is already approved"),
                ))
            }
            Status::QuitPayment | Status::FailPayment => {
                return Err(PgError::new(
                    code::BAD_STATE,
                    format!("tid {tid} cannot be approved: {}", p.status.as_str()),
                ))
            }
            Status::Ready | Status::OpenPayment => {
                return Err(PgError::new(
                    code::NOT_AUTHENTICATED,
                    "the buyer has not authenticated the payment yet",
                ))
            }
            _ => {}
        }
        if ctx.expired(p.created_at) {
            return Err(PgError::new(
                code::EXPIRED,
                format!("tid {tid} has expired"),
            ));
        }
        if p.pg_token.as_deref() != Some(pg_token) {
            return Err(PgError::new(
                code::INVALID_PG_TOKEN,
                "invalid pg_token for this tid",
            ));
        }
        if total_amount.is_some_and(|t| t != p.amount.total) {
            return Err(PgError::amount(
                "total_amount",
                "total_amount differs from the ready request",
            ));
        }
        if let Some(e) = decline() {
            p.status = Status::FailPayment;
            return Err(e);
        }
        let method = p.requested_method.unwrap_or(ctx.default_method);
        p.status = Status::SuccessPayment;
        p.aid = Some(aid.clone());
        p.approved_at = Some(ctx.now);
        p.method = Some(method);
        p.sid.clone_from(&sid);
        p.actions.push(Action {
            aid: aid.clone(),
            kind: "PAYMENT",
            amount: p.amount,
            at: ctx.now,
            payload: payload.map(str::to_owned),
        });
        let body = approval_json(ctx, p, payload);
        let entry = ledger_entry("approve", p, &aid, p.amount.total, ctx.now);
        let (item_name, user) = (p.item_name.clone(), p.partner_user_id.clone());
        if let Some(sid) = sid {
            self.sids.insert(
                sid,
                Sid {
                    cid: cid.to_owned(),
                    partner_user_id: user,
                    item_name,
                    method,
                    created_at: ctx.now,
                    last_approved_at: Some(ctx.now),
                    inactivated_at: None,
                    decline: None,
                },
            );
        }
        self.ledger.push(entry);
        Ok(body)
    }

    // ---------------------------------------------------------------- recurring charge

    pub fn charge(
        &mut self,
        ctx: &Ctx<'_>,
        f: &Fields<'_>,
        decline: DeclineRoll<'_>,
    ) -> Result<Value, PgError> {
        let cid = subscription_cid(ctx, f)?;
        let sid_id = f.str("sid", 100)?;
        let partner_order_id = f.str("partner_order_id", 100)?;
        let partner_user_id = f.str("partner_user_id", 100)?;
        let item_name = f.str("item_name", 100)?;
        let item_code = f.opt_str("item_code", 100)?;
        let quantity = quantity(f)?;
        let amount = request_amount(f)?;
        let payload = f.opt_str("payload", 200)?;

        let tid = self.fresh_tid();
        let sid = self
            .sids
            .get_mut(sid_id)
            .filter(|s| s.cid == cid)
            .ok_or_else(|| {
                PgError::new(code::NO_SID, format!("no SID {sid_id:?} for cid {cid:?}"))
            })?;
        if sid.inactivated_at.is_some() {
            return Err(PgError::new(
                code::INACTIVE_SID,
                format!("SID {sid_id} is inactive"),
            ));
        }
        if sid.partner_user_id != partner_user_id {
            return Err(PgError::new(
                code::SID_USER_MISMATCH,
                "partner_user_id differs from the SID's original",
            ));
        }
        if let Some(d) = &sid.decline {
            return Err(d.error());
        }
        if let Some(e) = decline() {
            return Err(e);
        }
        sid.last_approved_at = Some(ctx.now);
        let method = sid.method;
        let aid = new_id('A');
        let p = Payment {
            tid: tid.clone(),
            cid: cid.to_owned(),
            partner_order_id: partner_order_id.to_owned(),
            partner_user_id: partner_user_id.to_owned(),
            item_name: item_name.to_owned(),
            item_code: item_code.map(str::to_owned),
            quantity,
            amount,
            canceled: Amount::default(),
            approval_url: String::new(),
            cancel_url: String::new(),
            fail_url: String::new(),
            requested_method: Some(method),
            method: Some(method),
            status: Status::SuccessPayment,
            pg_token: None,
            aid: Some(aid.clone()),
            sid: Some(sid_id.to_owned()),
            created_at: ctx.now,
            approved_at: Some(ctx.now),
            canceled_at: None,
            actions: vec![Action {
                aid: aid.clone(),
                kind: "PAYMENT",
                amount,
                at: ctx.now,
                payload: payload.map(str::to_owned),
            }],
        };
        let body = approval_json(ctx, &p, payload);
        self.ledger
            .push(ledger_entry("charge", &p, &aid, amount.total, ctx.now));
        self.payments.insert(tid, p);
        Ok(body)
    }

    // ---------------------------------------------------------------- cancel

    pub fn cancel(&mut self, ctx: &Ctx<'_>, f: &Fields<'_>) -> Result<Value, PgError> {
        let cid = f.cid()?;
        let tid = f.str("tid", 100)?;
        let cancel_amount = f.int("cancel_amount")?;
        let cancel_tax_free = f.int("cancel_tax_free_amount")?;
        let cancel_vat = f.opt_int("cancel_vat_amount")?;
        let guard = f.opt_int("cancel_available_amount")?;
        let payload = f.opt_str("payload", 200)?;
        if cancel_amount <= 0 {
            return Err(PgError::amount(
                "cancel_amount",
                "cancel_amount must be greater than 0",
            ));
        }
        if cancel_tax_free < 0 || cancel_tax_free > cancel_amount {
            return Err(PgError::amount(
                "cancel_tax_free_amount",
                "cancel_tax_free_amount must be within 0..=cancel_amount",
            ));
        }
        if cancel_vat.is_some_and(|v| v < 0 || v > cancel_amount - cancel_tax_free) {
            return Err(PgError::amount(
                "cancel_vat_amount",
                "cancel_vat_amount must be within 0..=cancel_amount-cancel_tax_free_amount",
            ));
        }

        let aid = new_id('A');
        let p = self.payment_mut(cid, tid)?;
        if !p.status.approved() {
            return Err(PgError::new(
                code::BAD_STATE,
                format!("tid {tid} is not approved ({})", p.status.as_str()),
            ));
        }
        let available = p.amount.minus(p.canceled);
        if guard.is_some_and(|g| g != available.total) {
            return Err(PgError::new(
                code::CANCEL_GUARD,
                format!(
                    "cancel_available_amount {} does not match the payment's {}",
                    guard.unwrap_or_default(),
                    available.total
                ),
            ));
        }
        if cancel_amount > available.total {
            return Err(PgError::new(
                code::OVER_CANCEL,
                format!(
                    "cancel_amount {cancel_amount} exceeds the cancelable amount {}",
                    available.total
                ),
            ));
        }
        if cancel_tax_free > available.tax_free {
            return Err(PgError::new(
                code::OVER_CANCEL,
                format!(
                    "cancel_tax_free_amount {cancel_tax_free} exceeds the cancelable tax-free amount {}",
                    available.tax_free
                ),
            ));
        }
        let this = if cancel_amount == available.total {
            // the rest: every component that is left
            Amount {
                tax_free: cancel_tax_free,
                ..available
            }
        } else {
            let vat = cancel_vat
                .unwrap_or_else(|| crate::protocol::default_vat(cancel_amount, cancel_tax_free))
                .min(available.vat);
            Amount {
                total: cancel_amount,
                tax_free: cancel_tax_free,
                vat,
                ..Amount::default()
            }
        };
        p.canceled = p.canceled.plus(this);
        p.status = if p.canceled.total >= p.amount.total {
            Status::CancelPayment
        } else {
            Status::PartCancelPayment
        };
        p.canceled_at = Some(ctx.now);
        p.actions.push(Action {
            aid: aid.clone(),
            kind: "CANCEL",
            amount: this,
            at: ctx.now,
            payload: payload.map(str::to_owned),
        });
        let mut body = Map::new();
        body.insert("aid".into(), json!(aid));
        body.insert("tid".into(), json!(p.tid));
        body.insert("cid".into(), json!(p.cid));
        body.insert("status".into(), json!(p.status.as_str()));
        body.insert("partner_order_id".into(), json!(p.partner_order_id));
        body.insert("partner_user_id".into(), json!(p.partner_user_id));
        // KakaoPay's inquiry names the SID a subscription-cid payment issued.
        if let Some(sid) = &p.sid {
            body.insert("sid".into(), json!(sid));
        }
        if let Some(m) = p.method {
            body.insert("payment_method_type".into(), json!(m.as_str()));
        }
        body.insert("item_name".into(), json!(p.item_name));
        if let Some(c) = &p.item_code {
            body.insert("item_code".into(), json!(c));
        }
        body.insert("quantity".into(), json!(p.quantity));
        body.insert("amount".into(), json!(p.amount));
        body.insert("approved_cancel_amount".into(), json!(this));
        body.insert("canceled_amount".into(), json!(p.canceled));
        body.insert(
            "cancel_available_amount".into(),
            json!(p.amount.minus(p.canceled)),
        );
        body.insert("created_at".into(), json!(ctx.local(p.created_at)));
        if let Some(t) = p.approved_at {
            body.insert("approved_at".into(), json!(ctx.local(t)));
        }
        body.insert("canceled_at".into(), json!(ctx.local(ctx.now)));
        if let Some(pl) = payload {
            body.insert("payload".into(), json!(pl));
        }
        let entry = ledger_entry("cancel", p, &aid, cancel_amount, ctx.now);
        self.ledger.push(entry);
        Ok(Value::Object(body))
    }

    // ---------------------------------------------------------------- order inquiry

    pub fn order(&mut self, ctx: &Ctx<'_>, f: &Fields<'_>) -> Result<Value, PgError> {
        let cid = f.cid()?;
        let tid = f.str("tid", 100)?;
        let p = self.payment_mut(cid, tid)?;
        let mut body = Map::new();
        body.insert("tid".into(), json!(p.tid));
        body.insert("cid".into(), json!(p.cid));
        body.insert("status".into(), json!(p.status.as_str()));
        body.insert("partner_order_id".into(), json!(p.partner_order_id));
        body.insert("partner_user_id".into(), json!(p.partner_user_id));
        // The SID a subscription-cid payment issued, as in the cancel answer: what a
        // client whose approve answer was lost learns its new SID from.
        if let Some(sid) = &p.sid {
            body.insert("sid".into(), json!(sid));
        }
        if let Some(m) = p.method {
            body.insert("payment_method_type".into(), json!(m.as_str()));
        }
        body.insert("amount".into(), json!(p.amount));
        body.insert("canceled_amount".into(), json!(p.canceled));
        let available = if p.status.approved() {
            p.amount.minus(p.canceled)
        } else {
            Amount::default()
        };
        body.insert("cancel_available_amount".into(), json!(available));
        body.insert("item_name".into(), json!(p.item_name));
        if let Some(c) = &p.item_code {
            body.insert("item_code".into(), json!(c));
        }
        body.insert("quantity".into(), json!(p.quantity));
        body.insert("created_at".into(), json!(ctx.local(p.created_at)));
        if let Some(t) = p.approved_at {
            body.insert("approved_at".into(), json!(ctx.local(t)));
        }
        if let Some(t) = p.canceled_at {
            body.insert("canceled_at".into(), json!(ctx.local(t)));
        }
        if p.method == Some(PaymentMethod::Card) {
            body.insert(
                "selected_card_info".into(),
                json!({
                    "card_bin": "515594",
                    "install_month": 0,
                    "installment_type": "CARD_INSTALLMENT",
                    "card_corp_name": "비씨카드",
                    "interest_free_install": "N",
                }),
            );
        }
        let details: Vec<Value> = p
            .actions
            .iter()
            .map(|a| {
                let mut d = json!({
                    "aid": a.aid,
                    "approved_at": ctx.local(a.at),
                    "amount": a.amount.total,
                    "point_amount": a.amount.point,
                    "discount_amount": a.amount.discount,
                    "green_deposit": a.amount.green_deposit,
                    "payment_action_type": a.kind,
                });
                if let (Some(pl), Some(obj)) = (&a.payload, d.as_object_mut()) {
                    obj.insert("payload".into(), json!(pl));
                }
                d
            })
            .collect();
        body.insert("payment_action_details".into(), Value::Array(details));
        Ok(Value::Object(body))
    }

    // ---------------------------------------------------------------- SID management

    pub fn sid_status(&mut self, ctx: &Ctx<'_>, f: &Fields<'_>) -> Result<Value, PgError> {
        let (cid, sid_id) = sid_request(ctx, f)?;
        let sid = self.sid(cid, sid_id)?;
        let mut body = Map::new();
        body.insert("available".into(), json!(sid.inactivated_at.is_none()));
        body.insert("cid".into(), json!(cid));
        body.insert("sid".into(), json!(sid_id));
        body.insert(
            "status".into(),
            json!(if sid.inactivated_at.is_none() {
                "ACTIVE"
            } else {
                "INACTIVE"
            }),
        );
        body.insert("payment_method_type".into(), json!(sid.method.as_str()));
        body.insert("item_name".into(), json!(sid.item_name));
        sid_times(ctx, sid, &mut body);
        Ok(Value::Object(body))
    }

    /// Inactivating an inactive SID answers the same as the first time.
    pub fn sid_inactivate(&mut self, ctx: &Ctx<'_>, f: &Fields<'_>) -> Result<Value, PgError> {
        let (cid, sid_id) = sid_request(ctx, f)?;
        self.sid(cid, sid_id)?;
        let sid = self
            .sids
            .get_mut(sid_id)
            .ok_or_else(|| PgError::new(code::NO_SID, format!("no SID {sid_id:?}")))?;
        sid.inactivated_at.get_or_insert(ctx.now);
        let mut body = Map::new();
        body.insert("cid".into(), json!(cid));
        body.insert("sid".into(), json!(sid_id));
        body.insert("status".into(), json!("INACTIVE"));
        sid_times(ctx, sid, &mut body);
        Ok(Value::Object(body))
    }

    fn sid(&self, cid: &str, sid: &str) -> Result<&Sid, PgError> {
        self.sids
            .get(sid)
            .filter(|s| s.cid == cid)
            .ok_or_else(|| PgError::new(code::NO_SID, format!("no SID {sid:?} for cid {cid:?}")))
    }
}

fn sid_times(ctx: &Ctx<'_>, sid: &Sid, body: &mut Map<String, Value>) {
    body.insert("created_at".into(), json!(ctx.local(sid.created_at)));
    if let Some(t) = sid.last_approved_at {
        body.insert("last_approved_at".into(), json!(ctx.local(t)));
    }
    if let Some(t) = sid.inactivated_at {
        body.insert("inactivated_at".into(), json!(ctx.local(t)));
    }
}

/// `cid` that must be a subscription cid (−731 otherwise).
fn subscription_cid<'a>(ctx: &Ctx<'_>, f: &Fields<'a>) -> Result<&'a str, PgError> {
    let cid = f.cid()?;
    if !ctx.is_subscription_cid(cid) {
        return Err(PgError::new(
            code::INVALID_CID,
            format!("cid {cid:?} is not a subscription cid"),
        ));
    }
    Ok(cid)
}

fn sid_request<'a>(ctx: &Ctx<'_>, f: &Fields<'a>) -> Result<(&'a str, &'a str), PgError> {
    let cid = subscription_cid(ctx, f)?;
    let sid = f.str("sid", 100)?;
    Ok((cid, sid))
}

fn ledger_entry(
    kind: &'static str,
    p: &Payment,
    aid: &str,
    amount: i64,
    at: DateTime<Utc>,
) -> LedgerEntry {
    LedgerEntry {
        kind,
        tid: p.tid.clone(),
        sid: p.sid.clone(),
        partner_order_id: p.partner_order_id.clone(),
        amount,
        at,
        aid: aid.to_owned(),
        cid: p.cid.clone(),
        partner_user_id: p.partner_user_id.clone(),
    }
}

/// The answer of approve and of a recurring charge.
fn approval_json(ctx: &Ctx<'_>, p: &Payment, payload: Option<&str>) -> Value {
    let method = p.method.unwrap_or(ctx.default_method);
    let mut body = Map::new();
    body.insert("aid".into(), json!(p.aid));
    body.insert("tid".into(), json!(p.tid));
    body.insert("cid".into(), json!(p.cid));
    if let Some(sid) = &p.sid {
        body.insert("sid".into(), json!(sid));
    }
    body.insert("partner_order_id".into(), json!(p.partner_order_id));
    body.insert("partner_user_id".into(), json!(p.partner_user_id));
    body.insert("payment_method_type".into(), json!(method.as_str()));
    body.insert("item_name".into(), json!(p.item_name));
    if let Some(c) = &p.item_code {
        body.insert("item_code".into(), json!(c));
    }
    body.insert("quantity".into(), json!(p.quantity));
    body.insert("amount".into(), json!(p.amount));
    if method == PaymentMethod::Card {
        body.insert(
            "card_info".into(),
            json!({
                "kakaopay_purchase_corp": "비씨카드",
                "kakaopay_purchase_corp_code": "104",
                "kakaopay_issuer_corp": "수협은행",
                "kakaopay_issuer_corp_code": "212",
                "bin": "515594",
                "card_type": "체크",
                "install_month": "00",
                "approved_id": p.aid.as_deref().and_then(|a| a.get(12..)).unwrap_or_default(),
                "card_mid": "123456789",
                "interest_free_install": "N",
                "installment_type": "CARD_INSTALLMENT",
                "card_item_code": "",
            }),
        );
    }
    body.insert("created_at".into(), json!(ctx.local(p.created_at)));
    body.insert(
        "approved_at".into(),
        json!(ctx.local(p.approved_at.unwrap_or(ctx.now))),
    );
    if let Some(pl) = payload {
        body.insert("payload".into(), json!(pl));
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_token_keeps_the_merchants_query() {
        assert_eq!(
            with_pg_token("http://a.test/approve/tok?x=1&y=%20", "abc"),
            "http://a.test/approve/tok?x=1&y=%20&pg_token=abc"
        );
        assert_eq!(
            with_pg_token("http://a.test/approve", "abc"),
            "http://a.test/approve?pg_token=abc"
        );
    }
}
