//! The KakaoPay wire format: error codes and bodies, request field extraction with
//! KakaoPay-style validation errors, amounts, ids and local time strings.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, FixedOffset, Utc};
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// The error codes this simulator answers (see the crate docs for the table).
pub mod code {
    /// `Authorization` missing, malformed or with the wrong secret key (HTTP 401).
    pub const UNAUTHORIZED: i32 = -401;
    /// Injected 5xx with a JSON body.
    pub const INTERNAL: i32 = -700;
    /// Approve before the buyer authenticated (no `pg_token` issued yet).
    pub const NOT_AUTHENTICATED: i32 = -701;
    /// The tid was already approved.
    pub const ALREADY_APPROVED: i32 = -702;
    /// Approve's `partner_order_id` / `partner_user_id` differ from the ready's.
    pub const ORDER_MISMATCH: i32 = -703;
    /// A required parameter is missing, has the wrong type, is too long or out of range,
    /// or the body is not a JSON object.
    pub const INVALID_PARAMETER: i32 = -704;
    /// `pg_token` is not the one bound to the tid.
    pub const INVALID_PG_TOKEN: i32 = -705;
    /// No such tid (for this cid).
    pub const NO_TID: i32 = -721;
    /// An amount is invalid (≤ 0, tax-free above total, approve total ≠ ready total…).
    pub const INVALID_AMOUNT: i32 = -722;
    /// The payment expired (approve or buyer page after the ready's time to live).
    pub const EXPIRED: i32 = -723;
    /// `cid` is not 10 characters, or not a subscription cid where one is required.
    pub const INVALID_CID: i32 = -731;
    /// No such SID (for this cid).
    pub const NO_SID: i32 = -750;
    /// The SID is inactive.
    pub const INACTIVE_SID: i32 = -751;
    /// The charge's `partner_user_id` differs from the SID's original.
    pub const SID_USER_MISMATCH: i32 = -753;
    /// Approve declined by the card/wallet.
    pub const APPROVE_DECLINED: i32 = -780;
    /// Recurring charge declined (balance, limit).
    pub const CHARGE_DECLINED: i32 = -782;
    /// The payment is not in a state that allows this (approve after the buyer quit or
    /// failed, cancel before approval).
    pub const BAD_STATE: i32 = -783;
    /// Cancel amount above what is still cancelable (includes a fully canceled payment).
    pub const OVER_CANCEL: i32 = -784;
    /// The request's `cancel_available_amount` guard does not match the payment's.
    pub const CANCEL_GUARD: i32 = -785;
}

/// A KakaoPay error answer.
#[derive(Debug, Clone)]
pub struct PgError {
    pub status: StatusCode,
    pub code: i32,
    pub message: String,
    pub extras: Map<String, Value>,
}

impl PgError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
            extras: Map::new(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            ..Self::new(code::UNAUTHORIZED, message)
        }
    }

    pub fn param(name: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(code::INVALID_PARAMETER, message);
        e.extras.insert("parameter".into(), Value::from(name));
        e
    }

    pub fn amount(name: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(code::INVALID_AMOUNT, message);
        e.extras.insert("parameter".into(), Value::from(name));
        e
    }

    pub fn with_method_result(mut self, code: &str, message: &str) -> Self {
        self.extras
            .insert("method_result_code".into(), Value::from(code));
        self.extras
            .insert("method_result_message".into(), Value::from(message));
        self
    }

    /// The body in the current (`error_code`) or the older (`code`/`msg`) shape.
    pub fn body(&self, legacy: bool) -> Value {
        if legacy {
            json!({"code": self.code, "msg": self.message, "extras": self.extras})
        } else {
            json!({"error_code": self.code, "error_message": self.message, "extras": self.extras})
        }
    }

    pub fn into_response(self, legacy: bool) -> Response {
        (self.status, axum::Json(self.body(legacy))).into_response()
    }
}

/// The JSON object of a request, with typed getters that fail the KakaoPay way.
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// The body as a JSON object, or −704.
    pub fn parse(body: &[u8]) -> Result<Map<String, Value>, PgError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(PgError::param("", "the request body must be a JSON object")),
            Err(e) => Err(PgError::param(
                "",
                format!("the request body is not valid JSON: {e}"),
            )),
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn opt_str(&self, name: &str, max: usize) -> Result<Option<&'a str>, PgError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => {
                Err(PgError::param(name, format!("{name} must not be empty")))
            }
            Some(Value::String(s)) if s.chars().count() > max => Err(PgError::param(
                name,
                format!("{name} is longer than {max} characters"),
            )),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(PgError::param(name, format!("{name} must be a string"))),
        }
    }

    pub fn str(&self, name: &str, max: usize) -> Result<&'a str, PgError> {
        self.opt_str(name, max)?
            .ok_or_else(|| PgError::param(name, format!("{name} is required")))
    }

    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, PgError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| PgError::param(name, format!("{name} must be an integer"))),
        }
    }

    pub fn int(&self, name: &str) -> Result<i64, PgError> {
        self.opt_int(name)?
            .ok_or_else(|| PgError::param(name, format!("{name} is required")))
    }

    /// `cid`: required, exactly 10 characters (−731 otherwise).
    pub fn cid(&self) -> Result<&'a str, PgError> {
        let cid = self.str("cid", 100)?;
        if cid.chars().count() != 10 {
            return Err(PgError::new(
                code::INVALID_CID,
                format!("invalid cid {cid:?}: a cid has 10 characters"),
            ));
        }
        Ok(cid)
    }

    /// An absolute http(s) URL of at most 255 characters.
    pub fn url(&self, name: &str) -> Result<&'a str, PgError> {
        let s = self.str(name, 255)?;
        match url::Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(s),
            _ => Err(PgError::param(
                name,
                format!("{name} must be an absolute http(s) URL"),
            )),
        }
    }
}

/// An amount breakdown as KakaoPay reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Amount {
    pub total: i64,
    pub tax_free: i64,
    pub vat: i64,
    pub point: i64,
    pub discount: i64,
    pub green_deposit: i64,
}

impl Amount {
    pub fn plus(self, o: Amount) -> Amount {
        Amount {
            total: self.total + o.total,
            tax_free: self.tax_free + o.tax_free,
            vat: self.vat + o.vat,
            point: self.point + o.point,
            discount: self.discount + o.discount,
            green_deposit: self.green_deposit + o.green_deposit,
        }
    }

    pub fn minus(self, o: Amount) -> Amount {
        Amount {
            total: self.total - o.total,
            tax_free: self.tax_free - o.tax_free,
            vat: self.vat - o.vat,
            point: self.point - o.point,
            discount: self.discount - o.discount,
            green_deposit: self.green_deposit - o.green_deposit,
        }
    }
}

/// KakaoPay's default VAT: (total − tax free) / 11, rounded half up.
pub fn default_vat(total: i64, tax_free: i64) -> i64 {
    let taxable = (total - tax_free).max(0);
    (taxable + 5) / 11
}

/// Validated `total_amount` / `tax_free_amount` / `vat_amount` / `green_deposit` of a
/// ready or a recurring charge.
pub fn request_amount(f: &Fields<'_>) -> Result<Amount, PgError> {
    let total = f.int("total_amount")?;
    if total <= 0 {
        return Err(PgError::amount(
            "total_amount",
            "total_amount must be greater than 0",
        ));
    }
    let tax_free = f.int("tax_free_amount")?;
    if tax_free < 0 || tax_free > total {
        return Err(PgError::amount(
            "tax_free_amount",
            "tax_free_amount must be within 0..=total_amount",
        ));
    }
    let vat = match f.opt_int("vat_amount")? {
        Some(v) if v < 0 || v > total - tax_free => {
            return Err(PgError::amount(
                "vat_amount",
                "vat_amount must be within 0..=total_amount-tax_free_amount",
            ))
        }
        Some(v) => v,
        None => default_vat(total, tax_free),
    };
    let green_deposit = match f.opt_int("green_deposit")? {
        Some(g) if g < 0 || g > total => {
            return Err(PgError::amount(
                "green_deposit",
                "green_deposit must be within 0..=total_amount",
            ))
        }
        Some(g) => g,
        None => 0,
    };
    Ok(Amount {
        total,
        tax_free,
        vat,
        point: 0,
        discount: 0,
        green_deposit,
    })
}

/// `quantity`: required, > 0.
pub fn quantity(f: &Fields<'_>) -> Result<i64, PgError> {
    let q = f.int("quantity")?;
    if q <= 0 {
        return Err(PgError::param(
            "quantity",
            "quantity must be greater than 0",
        ));
    }
    Ok(q)
}

const ID_CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const TOKEN_CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn random_chars(n: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// A 20-character id: the prefix letter and 19 random digits/capitals.
pub fn new_id(prefix: char) -> String {
    let mut s = String::with_capacity(20);
    s.push(prefix);
    s.push_str(&random_chars(19, ID_CHARS));
    s
}

/// A `pg_token` (20 lower-case alphanumerics).
pub fn new_pg_token() -> String {
    random_chars(20, TOKEN_CHARS)
}

/// A local time string without a zone, as KakaoPay writes them (`2023-07-15T21:18:22`).
pub fn local_time(t: DateTime<Utc>, offset: FixedOffset) -> String {
    t.with_timezone(&offset)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vat_and_ids() {
        assert_eq!(default_vat(11_000, 0), 1_000);
        assert_eq!(default_vat(10_000, 0), 909);
        assert_eq!(default_vat(100, 100), 0);
        assert_eq!(default_vat(16, 0), 1); // 1.45 → 1
        assert_eq!(default_vat(17, 0), 2); // 1.55 → 2
        let tid = new_id('T');
        assert_eq!(tid.len(), 20);
        assert!(tid.starts_with('T'));
        assert_eq!(new_pg_token().len(), 20);
    }

    #[test]
    fn field_errors() {
        let map = Fields::parse(br#"{"cid":"TC0ONETIME","quantity":"1","n":null,"e":""}"#).unwrap();
        let f = Fields(&map);
        assert_eq!(f.cid().unwrap(), "TC0ONETIME");
        assert_eq!(f.int("quantity").unwrap_err().code, code::INVALID_PARAMETER);
        assert_eq!(f.str("n", 10).unwrap_err().code, code::INVALID_PARAMETER);
        assert!(f.opt_str("n", 10).unwrap().is_none());
        assert!(f.opt_str("e", 10).is_err());
        assert_eq!(
            Fields::parse(b"[1]").unwrap_err().code,
            code::INVALID_PARAMETER
        );
        assert_eq!(
            Fields::parse(b"cid=x").unwrap_err().code,
            code::INVALID_PARAMETER
        );
        let map = Fields::parse(br#"{"cid":"SHORT"}"#).unwrap();
        assert_eq!(Fields(&map).cid().unwrap_err().code, code::INVALID_CID);
    }

    #[test]
    fn error_shapes() {
        let e = PgError::new(code::ALREADY_APPROVED, "x");
        assert_eq!(e.body(false)["error_code"], -702);
        assert_eq!(e.body(true)["code"], -702);
        assert_eq!(e.body(true)["msg"], "x");
    }

    #[test]
    fn local_times() {
        let t = DateTime::parse_from_rfc3339("2023-07-15T12:18:22.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let kst: FixedOffset = "+09:00".parse().unwrap();
        assert_eq!(local_time(t, kst), "2023-07-15T21:18:22");
    }
}
