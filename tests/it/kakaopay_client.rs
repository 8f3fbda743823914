//! The KakaoPay client against a fake KakaoPay (wiremock): exact paths, the `SECRET_KEY`
//! header, JSON bodies with integer amounts, response checks, error classification,
//! retries only for idempotent calls, timeouts and refused connections.

use std::time::Duration;

use billing::money::Money;
use billing::pg::{
    ApproveRequest, CancelRequest, ChargeRequest, CidKind, DeclineClass, ErrorKind, KakaoPay,
    KakaoPayConfig, OrderStatus, PaymentGateway, ReadyRequest, SidState,
};
use secrecy::SecretString;
use serde_json::{json, Value};
use wiremock::matchers::{body_json, body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TID: &str = "T1234567890123456789";
const TID2: &str = "T9876543210987654321";
const AID: &str = "A1234567890123456789";
const SID: &str = "S1234567890123456789";
const ORDER_ID: &str = "order-42";
const USER_ID: &str = "user-7";

fn config(base_url: String) -> KakaoPayConfig {
    KakaoPayConfig {
        base_url,
        secret_key: SecretString::from("test-secret"),
        cid_one_time: "TC0ONETIME".into(),
        cid_subscription: "TCSUBSCRIP".into(),
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(400),
        idempotent_retries: 2,
        retry_min_backoff: Duration::from_millis(10),
        retry_max_backoff: Duration::from_millis(40),
    }
}

async fn setup() -> (MockServer, KakaoPay) {
    billing::install_crypto_provider();
    let server = MockServer::start().await;
    // A trailing slash in the configured base URL must not double the path separator.
    let client = KakaoPay::new(&config(format!("{}/", server.uri()))).unwrap();
    (server, client)
}

/// A POST to `endpoint` with our auth and content type.
fn kakao(endpoint: &str) -> wiremock::MockBuilder {
    Mock::given(method("POST"))
        .and(path(format!("/online/v1/payment/{endpoint}")))
        .and(header("authorization", "SECRET_KEY test-secret"))
        .and(header("content-type", "application/json"))
}

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

fn ready_req() -> ReadyRequest {
    ReadyRequest {
        kind: CidKind::OneTime,
        partner_order_id: ORDER_ID.into(),
        partner_user_id: USER_ID.into(),
        item_name: "Omega-3 x2".into(),
        item_code: None,
        quantity: 2,
        total_amount: Money(22_000),
        tax_free_amount: Money(0),
        vat_amount: None,
        approval_url: "http://127.0.0.1:8080/api/payments/kakaopay/approve/tok".into(),
        cancel_url: "http://127.0.0.1:8080/api/payments/kakaopay/cancel/tok".into(),
        fail_url: "http://127.0.0.1:8080/api/payments/kakaopay/fail/tok".into(),
    }
}

fn approve_req(kind: CidKind) -> ApproveRequest {
    ApproveRequest {
        kind,
        tid: TID.into(),
        partner_order_id: ORDER_ID.into(),
        partner_user_id: USER_ID.into(),
        pg_token: "pgtoken123".into(),
        expected_total: Money(22_000),
    }
}

fn charge_req() -> ChargeRequest {
    ChargeRequest {
        sid: SID.into(),
        partner_order_id: "sub-9-cycle-3".into(),
        partner_user_id: USER_ID.into(),
        item_name: "Vitamin D".into(),
        item_code: None,
        quantity: 1,
        total_amount: Money(15_900),
        tax_free_amount: Money(0),
        vat_amount: Some(Money(1_445)),
    }
}

fn approve_body(cid: &str, sid: Option<&str>) -> Value {
    let mut v = json!({
        "aid": AID, "tid": TID, "cid": cid,
        "partner_order_id": ORDER_ID, "partner_user_id": USER_ID,
        "payment_method_type": "MONEY",
        "amount": {"total": 22000, "tax_free": 0, "vat": 2000, "point": 0, "discount": 0, "green_deposit": 0},
        "item_name": "Omega-3 x2", "item_code": null, "quantity": 2,
        "created_at": "2023-07-15T21:18:00", "approved_at": "2023-07-15T21:18:22",
        "payload": null
    });
    if let Some(sid) = sid {
        v["sid"] = json!(sid);
    }
    v
}

fn charge_body() -> Value {
    json!({
        "aid": AID, "tid": TID2, "cid": "TCSUBSCRIP", "sid": SID,
        "partner_order_id": "sub-9-cycle-3", "partner_user_id": USER_ID,
        "payment_method_type": "CARD",
        "amount": {"total": 15900, "tax_free": 0, "vat": 1445, "point": 0, "discount": 0, "green_deposit": 0},
        "card_info": {"kakaopay_purchase_corp": "BC", "install_month": "00"},
        "item_name": "Vitamin D", "quantity": 1,
        "created_at": "2024-01-01T09:00:00", "approved_at": "2024-01-01T09:00:01"
    })
}

#[tokio::test]
async fn kakaopay_ready_sends_every_required_field_with_integer_amounts() {
    let (server, pg) = setup().await;
    kakao("ready")
        .and(body_json(json!({
            "cid": "TC0ONETIME",
            "partner_order_id": ORDER_ID,
            "partner_user_id": USER_ID,
            "item_name": "Omega-3 x2",
            "quantity": 2,
            "total_amount": 22000,
            "tax_free_amount": 0,
            "approval_url": "http://127.0.0.1:8080/api/payments/kakaopay/approve/tok",
            "cancel_url": "http://127.0.0.1:8080/api/payments/kakaopay/cancel/tok",
            "fail_url": "http://127.0.0.1:8080/api/payments/kakaopay/fail/tok",
        })))
        .respond_with(ok(json!({
            "tid": TID,
            "next_redirect_app_url": "https://online-pay.kakao.com/mockup/v1/abc/aInfo",
            "next_redirect_mobile_url": "https://online-pay.kakao.com/mockup/v1/abc/mInfo",
            "next_redirect_pc_url": "https://online-pay.kakao.com/mockup/v1/abc/info",
            "android_app_scheme": "kakaotalk://kakaopay/pg?url=x",
            "ios_app_scheme": "kakaotalk://kakaopay/pg?url=x",
            "created_at": "2023-07-15T21:18:00"
        })))
        .expect(1)
        .mount(&server)
        .await;

    let res = pg.ready(&ready_req()).await.unwrap();
    assert_eq!(res.tid, TID);
    assert_eq!(
        res.next_redirect_pc_url.as_deref(),
        Some("https://online-pay.kakao.com/mockup/v1/abc/info")
    );
    assert_eq!(
        res.created_at.unwrap().utc().unwrap().to_rfc3339(),
        "2023-07-15T12:18:00+00:00"
    );
    // Integers on the wire, never floats.
    let sent = &server.received_requests().await.unwrap()[0];
    let raw = String::from_utf8(sent.body.clone()).unwrap();
    assert!(raw.contains(r#""total_amount":22000"#), "{raw}");
    assert!(raw.contains(r#""quantity":2"#), "{raw}");
    server.verify().await;
}

#[tokio::test]
async fn kakaopay_ready_with_subscription_cid_and_optional_fields() {
    let (server, pg) = setup().await;
    kakao("ready")
        .and(body_partial_json(json!({
            "cid": "TCSUBSCRIP", "item_code": "SKU-1", "vat_amount": 2000, "total_amount": 22000
        })))
        .respond_with(ok(json!({"tid": TID, "next_redirect_pc_url": "https://x"})))
        .expect(1)
        .mount(&server)
        .await;
    let req = ReadyRequest {
        kind: CidKind::Subscription,
        item_code: Some("SKU-1".into()),
        vat_amount: Some(Money(2000)),
        ..ready_req()
    };
    assert_eq!(pg.ready(&req).await.unwrap().tid, TID);
    server.verify().await;
}

#[tokio::test]
async fn kakaopay_approve_one_time_has_no_sid() {
    let (server, pg) = setup().await;
    kakao("approve")
        .and(body_json(json!({
            "cid": "TC0ONETIME", "tid": TID, "partner_order_id": ORDER_ID,
            "partner_user_id": USER_ID, "pg_token": "pgtoken123"
        })))
        .respond_with(ok(approve_body("TC0ONETIME", None)))
        .expect(1)
        .mount(&server)
        .await;
    let res = pg.approve(&approve_req(CidKind::OneTime)).await.unwrap();
    assert_eq!(res.aid, AID);
    assert_eq!(res.sid, None);
    assert_eq!(res.amount.total, Money(22_000));
    assert_eq!(res.amount.vat, Money(2_000));
    assert_eq!(res.payment_method_type.as_deref(), Some("MONEY"));
    assert_eq!(
        res.approved_at.unwrap().utc().unwrap().to_rfc3339(),
        "2023-07-15T12:18:22+00:00"
    );
    server.verify().await;
}

#[tokio::test]
async fn kakaopay_approve_subscription_returns_sid() {
    let (server, pg) = setup().await;
    kakao("approve")
        .and(body_partial_json(json!({"cid": "TCSUBSCRIP", "tid": TID})))
        .respond_with(ok(approve_body("TCSUBSCRIP", Some(SID))))
        .expect(1)
        .mount(&server)
        .await;
    let res = pg
        .approve(&approve_req(CidKind::Subscription))
        .await
        .unwrap();
    assert_eq!(res.sid.as_deref(), Some(SID));
    server.verify().await;
}

#[tokio::test]
async fn kakaopay_subscription_approve_without_sid_is_a_mismatch() {
    let (server, pg) = setup().await;
    kakao("approve")
        .respond_with(ok(approve_body("TCSUBSCRIP", None)))
        .mount(&server)
        .await;
    let err = pg
        .approve(&approve_req(CidKind::Subscription))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Mismatch);
    assert!(err.needs_reconciliation());
}

#[tokio::test]
async fn kakaopay_approve_mismatches_are_not_success() {
    let cases: Vec<(&str, Value)> = vec![
        ("tid", {
            let mut v = approve_body("TC0ONETIME", None);
            v["tid"] = json!(TID2);
            v
        }),
        ("partner_order_id", {
            let mut v = approve_body("TC0ONETIME", None);
            v["partner_order_id"] = json!("order-43");
            v
        }),
        ("amount.total", {
            let mut v = approve_body("TC0ONETIME", None);
            v["amount"]["total"] = json!(22001);
            v
        }),
        ("cid", approve_body("TCSUBSCRIP", None)),
    ];
    for (field, body) in cases {
        let (server, pg) = setup().await;
        kakao("approve").respond_with(ok(body)).mount(&server).await;
        let err = pg
            .approve(&approve_req(CidKind::OneTime))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Mismatch, "{field}: {err}");
        assert!(err.message.contains(field), "{field}: {}", err.message);
    }
}

#[tokio::test]
async fn kakaopay_subscription_charge_sends_sid_and_checks_the_answer() {
    let (server, pg) = setup().await;
    kakao("subscription")
        .and(body_json(json!({
            "cid": "TCSUBSCRIP", "sid": SID, "partner_order_id": "sub-9-cycle-3",
            "partner_user_id": USER_ID, "item_name": "Vitamin D", "quantity": 1,
            "total_amount": 15900, "tax_free_amount": 0, "vat_amount": 1445
        })))
        .respond_with(ok(charge_body()))
        .expect(1)
        .mount(&server)
        .await;
    let res = pg.subscription_charge(&charge_req()).await.unwrap();
    assert_eq!(res.tid, TID2, "a charge has its own new tid");
    assert_eq!(res.amount.total, Money(15_900));
    assert!(res.card_info.is_some());
    server.verify().await;
}

#[tokio::test]
async fn kakaopay_subscription_charge_mismatches() {
    for (field, patch) in [
        ("amount.total", json!({"amount": {"total": 1}})),
        ("partner_order_id", json!({"partner_order_id": "other"})),
        ("sid", json!({"sid": "S0000000000000000000"})),
    ] {
        let (server, pg) = setup().await;
        let mut body = charge_body();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        kakao("subscription")
            .respond_with(ok(body))
            .mount(&server)
            .await;
        let err = pg.subscription_charge(&charge_req()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Mismatch, "{field}: {err}");
        assert!(err.message.contains(field), "{field}: {}", err.message);
    }
}

#[tokio::test]
async fn kakaopay_cancel_sends_amounts_and_reads_status() {
    let (server, pg) = setup().await;
    kakao("cancel")
        .and(body_json(json!({
            "cid": "TC0ONETIME", "tid": TID, "cancel_amount": 22000,
            "cancel_tax_free_amount": 0, "cancel_available_amount": 22000
        })))
        .respond_with(ok(json!({
            "aid": "A0000000000000000002", "tid": TID, "cid": "TC0ONETIME",
            "status": "CANCEL_PAYMENT", "partner_order_id": ORDER_ID,
            "partner_user_id": USER_ID, "payment_method_type": "MONEY",
            "amount": {"total": 22000, "tax_free": 0, "vat": 2000, "point": 0, "discount": 0},
            "approved_cancel_amount": {"total": 22000, "tax_free": 0, "vat": 2000, "point": 0, "discount": 0},
            "canceled_amount": {"total": 22000, "tax_free": 0, "vat": 2000, "point": 0, "discount": 0},
            "cancel_available_amount": {"total": 0, "tax_free": 0, "vat": 0, "point": 0, "discount": 0},
            "item_name": "Omega-3 x2",
            "created_at": "2023-07-15T21:18:00", "approved_at": "2023-07-15T21:18:22",
            "canceled_at": "2023-07-16T10:00:00"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let res = pg
        .cancel(&CancelRequest {
            kind: CidKind::OneTime,
            tid: TID.into(),
            cancel_amount: Money(22_000),
            cancel_tax_free_amount: Money(0),
            cancel_vat_amount: None,
            cancel_available_amount: Some(Money(22_000)),
        })
        .await
        .unwrap();
    assert_eq!(res.status, OrderStatus::CancelPayment);
    assert_eq!(res.cancel_available_amount.unwrap().total, Money(0));
    server.verify().await;
}

#[tokio::test]
async fn kakaopay_cancel_for_another_amount_is_a_mismatch() {
    let (server, pg) = setup().await;
    kakao("cancel")
        .respond_with(ok(json!({
            "aid": AID, "tid": TID, "status": "PART_CANCEL_PAYMENT",
            "approved_cancel_amount": {"total": 500}
        })))
        .mount(&server)
        .await;
    let err = pg
        .cancel(&CancelRequest {
            kind: CidKind::OneTime,
            tid: TID.into(),
            cancel_amount: Money(1_000),
            cancel_tax_free_amount: Money(0),
            cancel_vat_amount: None,
            cancel_available_amount: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Mismatch);
}

#[tokio::test]
async fn kakaopay_order_inquiry_by_tid() {
    let (server, pg) = setup().await;
    kakao("order")
        .and(body_json(json!({"cid": "TC0ONETIME", "tid": TID})))
        .respond_with(ok(json!({
            "tid": TID, "cid": "TC0ONETIME", "status": "SUCCESS_PAYMENT",
            "partner_order_id": ORDER_ID, "partner_user_id": USER_ID,
            "payment_method_type": "MONEY",
            "amount": {"total": 22000, "tax_free": 0, "vat": 2000, "point": 0, "discount": 0},
            "cancel_available_amount": {"total": 22000, "tax_free": 0, "vat": 2000, "point": 0, "discount": 0},
            "item_name": "Omega-3 x2", "quantity": 2,
            "created_at": "2023-07-15T21:18:00", "approved_at": "2023-07-15T21:18:22",
            "payment_action_details": [{
                "aid": AID, "approved_at": "2023-07-15T21:18:22", "amount": 22000,
                "point_amount": 0, "discount_amount": 0, "green_deposit": 0,
                "payment_action_type": "PAYMENT", "payload": ""
            }]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let res = pg.order(CidKind::OneTime, TID).await.unwrap();
    assert!(res.status.is_approved());
    assert_eq!(res.partner_order_id.as_deref(), Some(ORDER_ID));
    assert_eq!(res.payment_action_details.len(), 1);
    assert_eq!(res.payment_action_details[0].amount, Money(22_000));
    server.verify().await;
}

#[tokio::test]
async fn kakaopay_order_about_another_tid_is_a_mismatch() {
    let (server, pg) = setup().await;
    kakao("order")
        .respond_with(ok(json!({"tid": TID2, "status": "SUCCESS_PAYMENT"})))
        .mount(&server)
        .await;
    let err = pg.order(CidKind::OneTime, TID).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Mismatch);
}

#[tokio::test]
async fn kakaopay_sid_status_and_inactivate() {
    let (server, pg) = setup().await;
    kakao("manage/subscription/status")
        .and(body_json(json!({"cid": "TCSUBSCRIP", "sid": SID})))
        .respond_with(ok(json!({
            "available": true, "cid": "TCSUBSCRIP", "sid": SID, "status": "ACTIVE",
            "payment_method_type": "CARD", "item_name": "Vitamin D",
            "created_at": "2023-07-15T21:18:22", "last_approved_at": "2024-01-01T09:00:01",
            "inactivated_at": null
        })))
        .expect(1)
        .mount(&server)
        .await;
    kakao("manage/subscription/inactive")
        .and(body_json(json!({"cid": "TCSUBSCRIP", "sid": SID})))
        .respond_with(ok(json!({
            "cid": "TCSUBSCRIP", "sid": SID, "status": "INACTIVE",
            "created_at": "2023-07-15T21:18:22", "last_approved_at": "2024-01-01T09:00:01",
            "inactivated_at": "2024-02-01T10:00:00"
        })))
        .expect(1)
        .mount(&server)
        .await;

    let st = pg.sid_status(SID).await.unwrap();
    assert_eq!(st.status, SidState::Active);
    assert_eq!(st.available, Some(true));
    let last = st.last_approved_at.as_ref().unwrap().utc().unwrap();
    assert_eq!(last.to_rfc3339(), "2024-01-01T00:00:01+00:00");
    assert_eq!(st.approved_since(last), Some(true));
    assert_eq!(
        st.approved_since(last + chrono::TimeDelta::seconds(1)),
        Some(false)
    );

    let off = pg.sid_inactivate(SID).await.unwrap();
    assert_eq!(off.status, SidState::Inactive);
    assert!(off.inactivated_at.is_some());
    server.verify().await;
}

#[tokio::test]
async fn kakaopay_error_bodies_in_both_shapes_are_classified() {
    let cases: Vec<(u16, Value, ErrorKind, i64, Option<&str>)> = vec![
        (
            400,
            json!({"error_code": -780, "error_message": "approval failure",
                   "extras": {"method_result_code": "8003", "method_result_message": "limit exceeded"}}),
            ErrorKind::Decline(DeclineClass::Soft),
            -780,
            Some("8003"),
        ),
        (
            400,
            json!({"error_code": -780, "error_message": "approval failure",
                   "extras": {"method_result_code": "USER_LOCKED", "method_result_message": "in progress"}}),
            ErrorKind::Transient,
            -780,
            Some("USER_LOCKED"),
        ),
        (
            400,
            json!({"code": -780, "msg": "approval failure"}),
            ErrorKind::Decline(DeclineClass::Soft),
            -780,
            None,
        ),
        (
            400,
            json!({"code": -702, "msg": "payment already completed"}),
            ErrorKind::AlreadyDone,
            -702,
            None,
        ),
        (
            400,
            json!({"error_code": -723, "error_message": "payment expired"}),
            ErrorKind::Expired,
            -723,
            None,
        ),
        (
            401,
            json!({"error_code": -401, "error_message": "invalid secret key"}),
            ErrorKind::Configuration,
            -401,
            None,
        ),
        (
            400,
            json!({"code": -705, "msg": "invalid pg_token"}),
            ErrorKind::Permanent,
            -705,
            None,
        ),
    ];
    for (status, body, kind, code, mrc) in cases {
        let (server, pg) = setup().await;
        kakao("approve")
            .respond_with(ResponseTemplate::new(status).set_body_json(body.clone()))
            .expect(1)
            .mount(&server)
            .await;
        let err = pg
            .approve(&approve_req(CidKind::OneTime))
            .await
            .unwrap_err();
        assert_eq!(err.kind, kind, "{body}");
        assert_eq!(err.code, Some(code), "{body}");
        assert_eq!(err.method_result_code.as_deref(), mrc, "{body}");
        assert_eq!(err.http_status, Some(status));
        let message = body
            .get("error_message")
            .or(body.get("msg"))
            .and_then(Value::as_str)
            .unwrap();
        assert_eq!(err.message, message);
        server.verify().await;
    }
}

#[tokio::test]
async fn kakaopay_charge_declines_and_dead_sids() {
    for (body, kind, dunning, hard) in [
        (
            json!({"error_code": -782, "error_message": "insufficient balance"}),
            ErrorKind::Decline(DeclineClass::Soft),
            true,
            false,
        ),
        (
            json!({"code": -752, "msg": "SID monthly limit"}),
            ErrorKind::Decline(DeclineClass::Soft),
            true,
            false,
        ),
        (
            json!({"error_code": -751, "error_message": "inactive SID"}),
            ErrorKind::Decline(DeclineClass::Hard),
            false,
            true,
        ),
        (
            json!({"error_code": -753, "error_message": "partner_user_id mismatch"}),
            ErrorKind::Decline(DeclineClass::Hard),
            false,
            true,
        ),
        (
            json!({"error_code": -789, "error_message": "a code the notes do not list"}),
            ErrorKind::Decline(DeclineClass::Soft),
            true,
            false,
        ),
        (
            json!({"code": -784, "msg": "state conflict"}),
            ErrorKind::AlreadyDone,
            false,
            false,
        ),
    ] {
        let (server, pg) = setup().await;
        kakao("subscription")
            .respond_with(ResponseTemplate::new(400).set_body_json(body.clone()))
            .expect(1)
            .mount(&server)
            .await;
        let err = pg.subscription_charge(&charge_req()).await.unwrap_err();
        assert_eq!(err.kind, kind, "{body}");
        assert_eq!(err.consumes_dunning_attempt(), dunning, "{body}");
        assert_eq!(
            err.kind == ErrorKind::Decline(DeclineClass::Hard),
            hard,
            "{body}"
        );
        server.verify().await;
    }
}

#[tokio::test]
async fn kakaopay_unparseable_4xx_is_permanent_or_ours_with_the_status() {
    // 401/403: KakaoPay refuses our key or address (configuration); other 4xx: the
    // request itself.
    for (status, kind) in [
        (404, ErrorKind::Permanent),
        (403, ErrorKind::Configuration),
        (401, ErrorKind::Configuration),
    ] {
        let (server, pg) = setup().await;
        kakao("cancel")
            .respond_with(ResponseTemplate::new(status).set_body_string("<html>Forbidden</html>"))
            .mount(&server)
            .await;
        let err = pg
            .cancel(&CancelRequest {
                kind: CidKind::OneTime,
                tid: TID.into(),
                cancel_amount: Money(100),
                cancel_tax_free_amount: Money(0),
                cancel_vat_amount: None,
                cancel_available_amount: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind, kind, "{status}");
        assert_eq!(err.code, None);
        assert!(err.message.contains(&status.to_string()), "{}", err.message);
    }
}

#[tokio::test]
async fn kakaopay_5xx_is_ambiguous_for_approve_and_never_retried() {
    let (server, pg) = setup().await;
    kakao("approve")
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&server)
        .await;
    let err = pg
        .approve(&approve_req(CidKind::OneTime))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert_eq!(err.http_status, Some(500));
    // Give a stray retry time to show up before counting.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    server.verify().await;
}

#[tokio::test]
async fn kakaopay_5xx_is_retried_for_order_then_transient() {
    let (server, pg) = setup().await;
    kakao("order")
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let err = pg.order(CidKind::OneTime, TID).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.is_retryable());
    let seen = server.received_requests().await.unwrap().len();
    assert!(seen > 1, "order was sent {seen} time(s)");
    assert_eq!(seen, 3, "one try plus idempotent_retries = 2");
}

#[tokio::test]
async fn kakaopay_order_recovers_when_the_pg_heals() {
    let (server, pg) = setup().await;
    kakao("order")
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    kakao("order")
        .respond_with(ok(json!({"tid": TID, "status": "QUIT_PAYMENT"})))
        .mount(&server)
        .await;
    let res = pg.order(CidKind::OneTime, TID).await.unwrap();
    assert!(res.status.is_failed());
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn kakaopay_sid_status_5xx_is_retried_but_inactivate_is_not() {
    let (server, pg) = setup().await;
    kakao("manage/subscription/status")
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    kakao("manage/subscription/inactive")
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        pg.sid_status(SID).await.unwrap_err().kind,
        ErrorKind::Transient
    );
    assert_eq!(
        pg.sid_inactivate(SID).await.unwrap_err().kind,
        ErrorKind::Ambiguous
    );
    let reqs = server.received_requests().await.unwrap();
    let status_calls = reqs
        .iter()
        .filter(|r| r.url.path().ends_with("/status"))
        .count();
    assert_eq!(status_calls, 3);
    server.verify().await;
}

#[tokio::test]
async fn kakaopay_timeout_after_sending_is_ambiguous_for_approve() {
    let (server, pg) = setup().await;
    kakao("approve")
        .respond_with(ok(approve_body("TC0ONETIME", None)).set_delay(Duration::from_millis(1_500)))
        .expect(1)
        .mount(&server)
        .await;
    let started = std::time::Instant::now();
    let err = pg
        .approve(&approve_req(CidKind::OneTime))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous, "{err}");
    assert!(err.needs_reconciliation());
    assert!(
        started.elapsed() < Duration::from_millis(1_200),
        "the request timeout (400 ms) applies: {:?}",
        started.elapsed()
    );
    server.verify().await;
}

#[tokio::test]
async fn kakaopay_timeout_on_charge_is_ambiguous_and_on_order_transient() {
    let (server, pg) = setup().await;
    kakao("subscription")
        .respond_with(ok(charge_body()).set_delay(Duration::from_millis(1_000)))
        .expect(1)
        .mount(&server)
        .await;
    kakao("order")
        .respond_with(
            ok(json!({"tid": TID, "status": "SUCCESS_PAYMENT"}))
                .set_delay(Duration::from_millis(1_000)),
        )
        .mount(&server)
        .await;
    let err = pg.subscription_charge(&charge_req()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous, "{err}");
    let err = pg.order(CidKind::OneTime, TID).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
}

#[tokio::test]
async fn kakaopay_unreadable_success_is_ambiguous_for_approve() {
    let (server, pg) = setup().await;
    kakao("approve")
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"tid\":"))
        .mount(&server)
        .await;
    let err = pg
        .approve(&approve_req(CidKind::OneTime))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous, "{err}");
}

#[tokio::test]
async fn kakaopay_connection_refused_is_transient() {
    billing::install_crypto_provider();
    // Bind and release a port so nothing listens on it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pg = KakaoPay::new(&config(format!("http://127.0.0.1:{port}"))).unwrap();
    let err = pg
        .approve(&approve_req(CidKind::OneTime))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(!err.needs_reconciliation());
    let err = pg.order(CidKind::OneTime, TID).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains("retries"), "{}", err.message);
}

#[tokio::test]
async fn kakaopay_errors_never_show_the_secret() {
    billing::install_crypto_provider();
    let cfg = config("http://127.0.0.1:9".into());
    assert!(!format!("{cfg:?}").contains("test-secret"));
    let pg = KakaoPay::new(&cfg).unwrap();
    assert!(!format!("{pg:?}").contains("test-secret"));
    let err = pg
        .approve(&approve_req(CidKind::OneTime))
        .await
        .unwrap_err();
    assert!(!format!("{err:?} {err}").contains("test-secret"));
}
