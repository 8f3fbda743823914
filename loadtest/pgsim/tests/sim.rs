//! End-to-end tests of the simulator over real HTTP: the KakaoPay flows, the buyer page,
//! the ledger, the fault knobs, the controllable clock and SID registration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use pillivery_pgsim::{spawn, Config, Knobs, Running};
use serde_json::{json, Value};

const KEY: &str = "test-secret-key";
const ONE: &str = "TC0ONETIME";
const SUB: &str = "TCSUBSCRIP";

struct Sim {
    run: Running,
    http: reqwest::Client,
}

async fn start(knobs: Knobs) -> Sim {
    start_with(Config {
        knobs,
        ..Config::default()
    })
    .await
}

async fn start_with(config: Config) -> Sim {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = Config {
        secret_key: Some(KEY.to_owned()),
        ..config
    };
    let run = spawn(listener, config).unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    Sim { run, http }
}

fn body_json(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
    }
}

impl Sim {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.run.url)
    }

    async fn call_with(
        &self,
        client: &reqwest::Client,
        endpoint: &str,
        body: &Value,
    ) -> reqwest::Result<(u16, Value)> {
        let res = client
            .post(self.url(&format!("/online/v1/payment/{endpoint}")))
            .header("Authorization", format!("SECRET_KEY {KEY}"))
            .json(body)
            .send()
            .await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        Ok((status, body_json(&text)))
    }

    async fn call(&self, endpoint: &str, body: Value) -> (u16, Value) {
        self.call_with(&self.http, endpoint, &body).await.unwrap()
    }

    /// Calls and expects a KakaoPay error with this code.
    async fn fails(&self, endpoint: &str, body: Value, code: i64) -> Value {
        let (status, v) = self.call(endpoint, body).await;
        assert_eq!(v["error_code"], code, "{endpoint}: {status} {v}");
        assert!(v["error_message"].is_string(), "{v}");
        assert!(v["extras"].is_object(), "{v}");
        assert_eq!(status, if code == -401 { 401 } else { 400 });
        v
    }

    async fn ok(&self, endpoint: &str, body: Value) -> Value {
        let (status, v) = self.call(endpoint, body).await;
        assert_eq!(status, 200, "{endpoint}: {v}");
        v
    }

    async fn knobs(&self, patch: Value) -> Value {
        let res = self
            .http
            .put(self.url("/__knobs"))
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    async fn ledger(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(self.url("/__ledger"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["entries"].as_array().unwrap().clone()
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        self.http.get(url).send().await.unwrap()
    }

    async fn ready(&self, cid: &str, order: &str, total: i64) -> Value {
        self.ok(
            "ready",
            json!({
                "cid": cid,
                "partner_order_id": order,
                "partner_user_id": "user-1",
                "item_name": "오메가3 외 1건",
                "quantity": 2,
                "total_amount": total,
                "tax_free_amount": 0,
                "approval_url": format!("http://shop.test/pay/approve/tok-{order}?lang=ko"),
                "cancel_url": format!("http://shop.test/pay/cancel/tok-{order}"),
                "fail_url": format!("http://shop.test/pay/fail/tok-{order}"),
            }),
        )
        .await
    }

    /// The buyer approves (auto mode or the approve link); returns the pg_token.
    async fn buyer_approves(&self, ready: &Value) -> String {
        let tid = ready["tid"].as_str().unwrap();
        let res = self.get(&self.url(&format!("/buyer/{tid}/approve"))).await;
        assert_eq!(res.status(), 302);
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let u = url::Url::parse(&location).unwrap();
        u.query_pairs()
            .find(|(k, _)| k == "pg_token")
            .map(|(_, v)| v.into_owned())
            .unwrap()
    }

    fn approve_body(&self, cid: &str, tid: &str, order: &str, token: &str) -> Value {
        json!({"cid": cid, "tid": tid, "partner_order_id": order, "partner_user_id": "user-1", "pg_token": token})
    }

    /// ready → buyer approves → approve; returns (tid, approve answer).
    async fn paid(&self, cid: &str, order: &str, total: i64) -> (String, Value) {
        let r = self.ready(cid, order, total).await;
        let token = self.buyer_approves(&r).await;
        let tid = r["tid"].as_str().unwrap().to_owned();
        let a = self
            .ok("approve", self.approve_body(cid, &tid, order, &token))
            .await;
        (tid, a)
    }

    async fn order(&self, cid: &str, tid: &str) -> Value {
        self.ok("order", json!({"cid": cid, "tid": tid})).await
    }

    fn charge_body(&self, sid: &str, order: &str, total: i64) -> Value {
        json!({
            "cid": SUB, "sid": sid, "partner_order_id": order, "partner_user_id": "user-1",
            "item_name": "오메가3", "quantity": 1, "total_amount": total, "tax_free_amount": 0,
        })
    }
}

impl Sim {
    /// A request to an admin endpoint; (status, JSON body).
    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, body_json(&res.text().await.unwrap()))
    }

    async fn clock(&self) -> Value {
        let (status, v) = self.admin(reqwest::Method::GET, "/__clock", None).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    async fn set_clock(&self, body: Value) -> Value {
        let (status, v) = self
            .admin(reqwest::Method::PUT, "/__clock", Some(body))
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }

    async fn register(&self, sids: Value) -> (u16, Value) {
        self.admin(
            reqwest::Method::POST,
            "/__sids",
            Some(json!({ "sids": sids })),
        )
        .await
    }

    async fn sid_state(&self, sid: &str) -> Value {
        let (status, v) = self
            .admin(reqwest::Method::GET, &format!("/__sids/{sid}"), None)
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }
}

fn rfc3339(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn utc(s: &str) -> chrono::DateTime<chrono::Utc> {
    rfc3339(&json!(s))
}

/// `a` is at or after `b`, by less than `secs` seconds.
fn just_after(
    a: chrono::DateTime<chrono::Utc>,
    b: chrono::DateTime<chrono::Utc>,
    secs: i64,
) -> bool {
    a >= b && a - b < chrono::TimeDelta::seconds(secs)
}

fn is_local_time(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").is_ok())
}

#[tokio::test]
async fn one_time_payment_round_trip() {
    let sim = start(Knobs {
        auto_approve: true,
        ..Knobs::default()
    })
    .await;
    let r = sim.ready(ONE, "order-1", 22_000).await;
    let tid = r["tid"].as_str().unwrap();
    assert_eq!(tid.len(), 20);
    assert!(tid.starts_with('T'));
    assert!(is_local_time(&r["created_at"]), "{r}");
    for k in [
        "next_redirect_pc_url",
        "next_redirect_mobile_url",
        "next_redirect_app_url",
    ] {
        assert!(r[k].as_str().unwrap().starts_with(&sim.run.url), "{r}");
    }
    assert!(r["android_app_scheme"]
        .as_str()
        .unwrap()
        .starts_with("kakaotalk://"));
    assert!(r["ios_app_scheme"].is_string());

    // the buyer page redirects at once to approval_url + pg_token, keeping lang=ko
    let res = sim.get(r["next_redirect_pc_url"].as_str().unwrap()).await;
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("http://shop.test/pay/approve/tok-order-1?lang=ko&pg_token="),
        "{location}"
    );
    let token = location.rsplit('=').next().unwrap().to_owned();
    assert_eq!(token.len(), 20);
    assert_eq!(sim.order(ONE, tid).await["status"], "AUTH_PASSWORD");

    let a = sim
        .ok("approve", sim.approve_body(ONE, tid, "order-1", &token))
        .await;
    assert_eq!(a["tid"], tid);
    assert_eq!(a["cid"], ONE);
    assert_eq!(a["aid"].as_str().unwrap().len(), 20);
    assert!(a.get("sid").is_none(), "one-time payments have no sid: {a}");
    assert_eq!(a["partner_order_id"], "order-1");
    assert_eq!(a["partner_user_id"], "user-1");
    assert_eq!(a["payment_method_type"], "MONEY");
    assert_eq!(a["quantity"], 2);
    assert_eq!(
        a["amount"],
        json!({"total": 22_000, "tax_free": 0, "vat": 2_000, "point": 0, "discount": 0, "green_deposit": 0})
    );
    assert!(
        is_local_time(&a["created_at"]) && is_local_time(&a["approved_at"]),
        "{a}"
    );

    let ledger = sim.ledger().await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["kind"], "approve");
    assert_eq!(ledger[0]["tid"], tid);
    assert_eq!(ledger[0]["amount"], 22_000);
    assert_eq!(ledger[0]["partner_order_id"], "order-1");
    assert!(ledger[0]["sid"].is_null());
    assert!(chrono::DateTime::parse_from_rfc3339(ledger[0]["at"].as_str().unwrap()).is_ok());

    let o = sim.order(ONE, tid).await;
    assert_eq!(o["status"], "SUCCESS_PAYMENT");
    assert_eq!(o["amount"]["total"], 22_000);
    assert_eq!(o["cancel_available_amount"]["total"], 22_000);
    assert_eq!(
        o["payment_action_details"][0]["payment_action_type"],
        "PAYMENT"
    );
    assert_eq!(o["payment_action_details"][0]["aid"], a["aid"]);
    assert_eq!(o["payment_action_details"][0]["amount"], 22_000);

    // a second approve of the same tid
    sim.fails(
        "approve",
        sim.approve_body(ONE, tid, "order-1", &token),
        -702,
    )
    .await;
    // a repeated buyer redirect hands out the same token, still one approval
    let again = sim.get(r["next_redirect_pc_url"].as_str().unwrap()).await;
    assert_eq!(again.headers()["location"].to_str().unwrap(), location);
    assert_eq!(sim.ledger().await.len(), 1);
}

#[tokio::test]
async fn approve_is_checked() {
    let sim = start(Knobs::default()).await;
    let r = sim.ready(ONE, "order-2", 1_000).await;
    let tid = r["tid"].as_str().unwrap();
    // the buyer has not authenticated yet
    sim.fails(
        "approve",
        sim.approve_body(ONE, tid, "order-2", "whatever"),
        -701,
    )
    .await;
    let token = sim.buyer_approves(&r).await;
    sim.fails(
        "approve",
        sim.approve_body(ONE, tid, "order-2", "wrong-token"),
        -705,
    )
    .await;
    sim.fails(
        "approve",
        sim.approve_body(ONE, tid, "order-X", &token),
        -703,
    )
    .await;
    sim.fails(
        "approve",
        sim.approve_body(ONE, "T0000000000000000000", "order-2", &token),
        -721,
    )
    .await;
    sim.fails(
        "approve",
        sim.approve_body("TCOTHERCID", tid, "order-2", &token),
        -721,
    )
    .await;
    sim.fails(
        "approve",
        json!({"cid": ONE, "tid": tid, "partner_order_id": "order-2", "partner_user_id": "user-1"}),
        -704,
    )
    .await;
    let mut wrong_total = sim.approve_body(ONE, tid, "order-2", &token);
    wrong_total["total_amount"] = json!(999);
    sim.fails("approve", wrong_total, -722).await;
    assert!(sim.ledger().await.is_empty());
    // the right one still works after all that
    sim.ok("approve", sim.approve_body(ONE, tid, "order-2", &token))
        .await;

    // a pg_token is bound to its tid
    let r2 = sim.ready(ONE, "order-3", 1_000).await;
    sim.buyer_approves(&r2).await;
    sim.fails(
        "approve",
        sim.approve_body(ONE, r2["tid"].as_str().unwrap(), "order-3", &token),
        -705,
    )
    .await;
}

#[tokio::test]
async fn ready_expires() {
    let sim = start_with(Config {
        ready_ttl: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let r = sim.ready(ONE, "order-15", 1_000).await;
    let token = sim.buyer_approves(&r).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let tid = r["tid"].as_str().unwrap();
    sim.fails(
        "approve",
        sim.approve_body(ONE, tid, "order-15", &token),
        -723,
    )
    .await;
    let r = sim.ready(ONE, "order-16", 1_000).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let res = sim.get(r["next_redirect_pc_url"].as_str().unwrap()).await;
    assert_eq!(res.status(), 410);
    assert!(sim.ledger().await.is_empty());
}

#[tokio::test]
async fn requests_are_validated() {
    let sim = start(Knobs::default()).await;
    let good = json!({
        "cid": ONE, "partner_order_id": "o", "partner_user_id": "u", "item_name": "i",
        "quantity": 1, "total_amount": 100, "tax_free_amount": 0,
        "approval_url": "http://a.test/ok", "cancel_url": "http://a.test/c", "fail_url": "http://a.test/f",
    });
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    sim.ok("ready", good.clone()).await;
    sim.fails("ready", with("cid", json!("SHORT")), -731).await;
    sim.fails("ready", without("cid"), -704).await;
    sim.fails("ready", without("fail_url"), -704).await;
    sim.fails("ready", with("approval_url", json!("not a url")), -704)
        .await;
    sim.fails("ready", with("item_name", json!("x".repeat(101))), -704)
        .await;
    sim.fails("ready", with("quantity", json!(0)), -704).await;
    sim.fails("ready", with("quantity", json!("1")), -704).await;
    sim.fails("ready", with("total_amount", json!(0)), -722)
        .await;
    sim.fails("ready", with("total_amount", json!(10.5)), -704)
        .await;
    sim.fails("ready", with("tax_free_amount", json!(101)), -722)
        .await;
    sim.fails("ready", with("tax_free_amount", json!(-1)), -722)
        .await;

    // auth
    let res = sim
        .http
        .post(sim.url("/online/v1/payment/ready"))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error_code"], -401);
    for auth in ["SECRET_KEY wrong", "KakaoAK test-secret-key", "SECRET_KEY "] {
        let res = sim
            .http
            .post(sim.url("/online/v1/payment/ready"))
            .header("Authorization", auth)
            .json(&good)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{auth}");
    }
    // not JSON
    let res = sim
        .http
        .post(sim.url("/online/v1/payment/ready"))
        .header("Authorization", format!("SECRET_KEY {KEY}"))
        .form(&[("cid", ONE)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error_code"], -704);

    // the older error shape on demand
    sim.knobs(json!({"legacy_errors": true})).await;
    let (status, v) = sim.call("ready", with("cid", json!("SHORT"))).await;
    assert_eq!(status, 400);
    assert_eq!(v["code"], -731);
    assert!(v["msg"].is_string());
}

#[tokio::test]
async fn buyer_page_links() {
    let sim = start(Knobs::default()).await;
    let r = sim.ready(ONE, "order-4", 5_000).await;
    let tid = r["tid"].as_str().unwrap();
    let res = sim
        .get(r["next_redirect_mobile_url"].as_str().unwrap())
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    for action in ["approve", "cancel", "fail"] {
        assert!(html.contains(&format!("/buyer/{tid}/{action}")), "{html}");
    }
    assert_eq!(sim.order(ONE, tid).await["status"], "OPEN_PAYMENT");

    // cancel link → cancel_url, QUIT_PAYMENT, approve impossible
    let res = sim.get(&sim.url(&format!("/buyer/{tid}/cancel"))).await;
    assert_eq!(res.status(), 302);
    assert_eq!(
        res.headers()["location"],
        "http://shop.test/pay/cancel/tok-order-4"
    );
    assert_eq!(sim.order(ONE, tid).await["status"], "QUIT_PAYMENT");
    assert_eq!(
        sim.get(&sim.url(&format!("/buyer/{tid}/approve")))
            .await
            .status(),
        409
    );
    sim.fails("approve", sim.approve_body(ONE, tid, "order-4", "x"), -783)
        .await;

    // fail link → fail_url, FAIL_PAYMENT
    let r = sim.ready(ONE, "order-5", 5_000).await;
    let tid = r["tid"].as_str().unwrap();
    let res = sim.get(&sim.url(&format!("/buyer/{tid}/fail"))).await;
    assert_eq!(
        res.headers()["location"],
        "http://shop.test/pay/fail/tok-order-5"
    );
    assert_eq!(sim.order(ONE, tid).await["status"], "FAIL_PAYMENT");

    // auto mode with another action, switched at runtime
    sim.knobs(json!({"auto_approve": true, "auto_action": "cancel"}))
        .await;
    let r = sim.ready(ONE, "order-6", 5_000).await;
    let res = sim.get(r["next_redirect_pc_url"].as_str().unwrap()).await;
    assert_eq!(res.status(), 302);
    assert_eq!(
        res.headers()["location"],
        "http://shop.test/pay/cancel/tok-order-6"
    );

    assert_eq!(
        sim.get(&sim.url("/buyer/T0000000000000000000"))
            .await
            .status(),
        404
    );
    assert!(sim.ledger().await.is_empty());
}

#[tokio::test]
async fn subscription_sid_charges_and_inactivation() {
    let sim = start(Knobs::default()).await;
    let (tid, a) = sim.paid(SUB, "sub-order-1", 15_000).await;
    let sid = a["sid"].as_str().unwrap().to_owned();
    assert_eq!(sid.len(), 20);
    assert!(sid.starts_with('S'));

    let st = sim
        .ok(
            "manage/subscription/status",
            json!({"cid": SUB, "sid": sid}),
        )
        .await;
    assert_eq!(st["status"], "ACTIVE");
    assert_eq!(st["available"], true);
    assert_eq!(st["last_approved_at"], a["approved_at"]);
    assert!(st.get("inactivated_at").is_none());

    tokio::time::sleep(Duration::from_millis(1_100)).await; // a new second for last_approved_at
    let c = sim
        .ok("subscription", sim.charge_body(&sid, "sub-order-2", 15_000))
        .await;
    assert_ne!(c["tid"], tid);
    assert_ne!(c["aid"], a["aid"]);
    assert_eq!(c["sid"], sid);
    assert_eq!(c["amount"]["total"], 15_000);
    let st = sim
        .ok(
            "manage/subscription/status",
            json!({"cid": SUB, "sid": sid}),
        )
        .await;
    assert_eq!(st["last_approved_at"], c["approved_at"]);
    assert!(st["last_approved_at"].as_str() > a["approved_at"].as_str());
    // the charge's tid answers inquiries
    assert_eq!(
        sim.order(SUB, c["tid"].as_str().unwrap()).await["status"],
        "SUCCESS_PAYMENT"
    );

    let mut other_user = sim.charge_body(&sid, "sub-order-3", 15_000);
    other_user["partner_user_id"] = json!("user-2");
    sim.fails("subscription", other_user, -753).await;
    sim.fails(
        "subscription",
        sim.charge_body("S0000000000000000000", "x", 1),
        -750,
    )
    .await;
    let mut one_time_cid = sim.charge_body(&sid, "sub-order-3", 15_000);
    one_time_cid["cid"] = json!(ONE);
    sim.fails("subscription", one_time_cid, -731).await;
    sim.fails(
        "manage/subscription/status",
        json!({"cid": SUB, "sid": "S0000000000000000000"}),
        -750,
    )
    .await;

    let i = sim
        .ok(
            "manage/subscription/inactive",
            json!({"cid": SUB, "sid": sid}),
        )
        .await;
    assert_eq!(i["status"], "INACTIVE");
    assert!(is_local_time(&i["inactivated_at"]));
    // idempotent
    let i2 = sim
        .ok(
            "manage/subscription/inactive",
            json!({"cid": SUB, "sid": sid}),
        )
        .await;
    assert_eq!(i2["inactivated_at"], i["inactivated_at"]);
    sim.fails(
        "subscription",
        sim.charge_body(&sid, "sub-order-3", 15_000),
        -751,
    )
    .await;
    let st = sim
        .ok(
            "manage/subscription/status",
            json!({"cid": SUB, "sid": sid}),
        )
        .await;
    assert_eq!(st["status"], "INACTIVE");
    assert_eq!(st["available"], false);
    assert_eq!(st["inactivated_at"], i["inactivated_at"]);

    let kinds: Vec<_> = sim
        .ledger()
        .await
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["sid"].clone(),
                e["amount"].clone(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("approve".to_owned(), json!(sid), json!(15_000)),
            ("charge".to_owned(), json!(sid), json!(15_000)),
        ]
    );
}

#[tokio::test]
async fn partial_and_full_cancels() {
    let sim = start(Knobs::default()).await;
    let (tid, _) = sim.paid(ONE, "order-7", 10_000).await;
    let cancel = |amount: i64| json!({"cid": ONE, "tid": tid, "cancel_amount": amount, "cancel_tax_free_amount": 0});

    let c1 = sim.ok("cancel", cancel(3_000)).await;
    assert_eq!(c1["status"], "PART_CANCEL_PAYMENT");
    assert_eq!(c1["approved_cancel_amount"]["total"], 3_000);
    assert_eq!(c1["canceled_amount"]["total"], 3_000);
    assert_eq!(c1["cancel_available_amount"]["total"], 7_000);
    assert_eq!(c1["amount"]["total"], 10_000);
    assert!(is_local_time(&c1["canceled_at"]));

    // the optimistic guard
    let mut guarded = cancel(1_000);
    guarded["cancel_available_amount"] = json!(10_000);
    sim.fails("cancel", guarded, -785).await;
    sim.fails("cancel", cancel(7_001), -784).await;
    sim.fails("cancel", cancel(0), -722).await;

    let mut rest = cancel(7_000);
    rest["cancel_available_amount"] = json!(7_000);
    let c2 = sim.ok("cancel", rest).await;
    assert_eq!(c2["status"], "CANCEL_PAYMENT");
    assert_eq!(c2["canceled_amount"], c2["amount"]);
    assert_eq!(c2["cancel_available_amount"]["total"], 0);
    assert_eq!(c2["cancel_available_amount"]["vat"], 0);
    sim.fails("cancel", cancel(1), -784).await;

    let o = sim.order(ONE, &tid).await;
    assert_eq!(o["status"], "CANCEL_PAYMENT");
    let actions: Vec<_> = o["payment_action_details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["payment_action_type"].as_str().unwrap().to_owned(),
                a["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("PAYMENT".to_owned(), 10_000),
            ("CANCEL".to_owned(), 3_000),
            ("CANCEL".to_owned(), 7_000)
        ]
    );
    let ledger: Vec<_> = sim
        .ledger()
        .await
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ledger,
        vec![
            ("approve".to_owned(), 10_000),
            ("cancel".to_owned(), 3_000),
            ("cancel".to_owned(), 7_000)
        ]
    );

    // not approved yet → cannot cancel
    let r = sim.ready(ONE, "order-8", 1_000).await;
    sim.fails(
        "cancel",
        json!({"cid": ONE, "tid": r["tid"], "cancel_amount": 1_000, "cancel_tax_free_amount": 0}),
        -783,
    )
    .await;
}

#[tokio::test]
async fn decline_knob() {
    let sim = start(Knobs::default()).await;
    let (_, a) = sim.paid(SUB, "sub-1", 9_900).await;
    let sid = a["sid"].as_str().unwrap().to_owned();
    let before = sim
        .ok(
            "manage/subscription/status",
            json!({"cid": SUB, "sid": sid}),
        )
        .await;

    sim.knobs(json!({"decline_rate": 1.0})).await;
    let r = sim.ready(ONE, "order-9", 1_000).await; // ready is never declined
    let token = sim.buyer_approves(&r).await;
    let tid = r["tid"].as_str().unwrap();
    let e = sim
        .fails(
            "approve",
            sim.approve_body(ONE, tid, "order-9", &token),
            -780,
        )
        .await;
    assert!(e["extras"]["method_result_code"].is_string(), "{e}");
    assert_eq!(sim.order(ONE, tid).await["status"], "FAIL_PAYMENT");
    let e = sim
        .fails("subscription", sim.charge_body(&sid, "sub-2", 9_900), -782)
        .await;
    assert!(e["extras"]["method_result_message"].is_string(), "{e}");
    let after = sim
        .ok(
            "manage/subscription/status",
            json!({"cid": SUB, "sid": sid}),
        )
        .await;
    assert_eq!(after["last_approved_at"], before["last_approved_at"]);

    // another decline code and a transient-looking result code
    sim.knobs(json!({"decline_code": -797, "decline_result_code": "USER_LOCKED"}))
        .await;
    let e = sim
        .fails("subscription", sim.charge_body(&sid, "sub-2", 9_900), -797)
        .await;
    assert_eq!(e["extras"]["method_result_code"], "USER_LOCKED");

    // scoped to approve only: charges go through
    sim.knobs(json!({"decline_code": null, "endpoints": ["approve"]}))
        .await;
    sim.ok("subscription", sim.charge_body(&sid, "sub-2", 9_900))
        .await;

    let kinds: Vec<_> = sim
        .ledger()
        .await
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, vec![json!("approve"), json!("charge")]);
}

#[tokio::test]
async fn server_error_knob_and_fault_budget() {
    let sim = start(Knobs::default()).await;
    sim.knobs(json!({"server_error_rate": 1.0})).await;
    let (status, body) = sim.call("ready", json!({"cid": ONE})).await;
    assert_eq!(status, 500);
    assert!(body.is_null(), "empty body by default: {body}");
    sim.knobs(json!({"server_error_status": 503, "server_error_body": "html"}))
        .await;
    let (status, body) = sim.call("order", json!({"cid": ONE, "tid": "x"})).await;
    assert_eq!(status, 503);
    assert!(body.as_str().unwrap().contains("<html>"));

    // 5xx on approve only, twice, then healed
    sim.knobs(
        json!({"server_error_rate": 1.0, "server_error_status": 500, "server_error_body": "json",
                     "endpoints": ["approve"], "max_faults": 2}),
    )
    .await;
    let r = sim.ready(ONE, "order-10", 3_000).await;
    let token = sim.buyer_approves(&r).await;
    let body = sim.approve_body(ONE, r["tid"].as_str().unwrap(), "order-10", &token);
    for _ in 0..2 {
        let (status, v) = sim.call("approve", body.clone()).await;
        assert_eq!(status, 500);
        assert_eq!(v["error_code"], -700);
    }
    assert!(sim.ledger().await.is_empty(), "5xx does no work");
    sim.ok("approve", body).await;
    assert_eq!(sim.ledger().await.len(), 1);

    let stats: Value = sim.get(&sim.url("/__stats")).await.json().await.unwrap();
    assert_eq!(stats["faults_injected"]["server_error"], 4);
    assert_eq!(stats["faults_left"], 0);
    assert_eq!(stats["requests"]["approve"], 3);
}

#[tokio::test]
async fn api_requests_are_counted_per_second() {
    let sim = start(Knobs::default()).await;
    let before = chrono::Utc::now().timestamp();
    for i in 0..5 {
        sim.call("order", json!({"cid": ONE, "tid": format!("t{i}")}))
            .await;
    }
    // the buyer page and the admin routes are not KakaoPay API requests
    sim.get(&sim.url("/__ledger")).await;
    let after = chrono::Utc::now().timestamp();
    let stats: Value = sim.get(&sim.url("/__stats")).await.json().await.unwrap();
    let seconds = stats["per_second"].as_array().unwrap();
    let total: u64 = seconds
        .iter()
        .map(|s| s["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 5, "{stats}");
    for s in seconds {
        let at = s["at"].as_i64().unwrap();
        assert!(
            (before..=after).contains(&at),
            "{s} outside {before}..={after}"
        );
    }
    let max = seconds
        .iter()
        .map(|s| s["requests"].as_u64().unwrap())
        .max();
    assert_eq!(stats["max_per_second"].as_u64(), max);
}

#[tokio::test]
async fn drop_after_success_then_reconcile_by_inquiry() {
    let sim = start(Knobs::default()).await;
    let r = sim.ready(ONE, "order-11", 4_400).await;
    let token = sim.buyer_approves(&r).await;
    let tid = r["tid"].as_str().unwrap();
    sim.knobs(json!({"drop_rate": 1.0, "timeout_ms": 300, "endpoints": ["approve"]}))
        .await;

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(1_500))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = sim
        .call_with(
            &impatient,
            "approve",
            &sim.approve_body(ONE, tid, "order-11", &token),
        )
        .await
        .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "held first"
    );
    assert!(!err.is_status(), "no answer at all: {err}");

    // the work was done: one ledger entry, and the inquiry says it was paid
    let ledger = sim.ledger().await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["tid"], tid);
    assert_eq!(ledger[0]["amount"], 4_400);
    assert_eq!(sim.order(ONE, tid).await["status"], "SUCCESS_PAYMENT");
    // a blind retry would be told it is already approved
    sim.knobs(json!({"drop_rate": 0.0})).await;
    sim.fails(
        "approve",
        sim.approve_body(ONE, tid, "order-11", &token),
        -702,
    )
    .await;
    assert_eq!(sim.ledger().await.len(), 1);
}

#[tokio::test]
async fn timeout_knob_does_no_work() {
    let sim = start(Knobs::default()).await;
    let r = sim.ready(ONE, "order-12", 1_000).await;
    let token = sim.buyer_approves(&r).await;
    let tid = r["tid"].as_str().unwrap();
    sim.knobs(json!({"timeout_rate": 1.0, "timeout_ms": 2_000, "endpoints": ["approve"]}))
        .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = sim
        .call_with(
            &impatient,
            "approve",
            &sim.approve_body(ONE, tid, "order-12", &token),
        )
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(sim.ledger().await.is_empty());
    assert_eq!(sim.order(ONE, tid).await["status"], "AUTH_PASSWORD");

    // short hold: the connection is closed unanswered
    sim.knobs(json!({"timeout_ms": 100})).await;
    let err = sim
        .call_with(
            &sim.http,
            "approve",
            &sim.approve_body(ONE, tid, "order-12", &token),
        )
        .await
        .unwrap_err();
    assert!(!err.is_timeout() && !err.is_status(), "{err}");
    sim.knobs(json!({"timeout_rate": 0.0})).await;
    sim.ok("approve", sim.approve_body(ONE, tid, "order-12", &token))
        .await;
}

#[tokio::test]
async fn latency_and_ramp() {
    let sim = start(Knobs::default()).await;
    sim.knobs(json!({"latency_ms": 200, "jitter_ms": 50})).await;
    let started = Instant::now();
    sim.call("order", json!({"cid": ONE, "tid": "x"})).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_millis(1_000), "{took:?}");

    // a ramp reached at once
    sim.knobs(json!({"latency_ms": 0, "jitter_ms": 0, "ramp_to": 1.0, "ramp_secs": 0, "ramp_kind": "server_error"}))
        .await;
    assert_eq!(
        sim.call("order", json!({"cid": ONE, "tid": "x"})).await.0,
        500
    );
    // a slow ramp starts near zero (seeded, so this is deterministic)
    sim.knobs(json!({"ramp_secs": 36_000, "seed": 1})).await;
    for _ in 0..20 {
        assert_eq!(
            sim.call("order", json!({"cid": ONE, "tid": "x"})).await.0,
            400
        );
    }
}

#[tokio::test]
async fn admin_endpoints() {
    let sim = start(Knobs::default()).await;
    assert_eq!(sim.get(&sim.url("/__health")).await.status(), 200);

    let k: Value = sim.get(&sim.url("/__knobs")).await.json().await.unwrap();
    assert_eq!(k["decline_rate"], 0.0);
    assert_eq!(k["timeout_ms"], 30_000);
    assert_eq!(k["auto_approve"], false);
    let k = sim
        .knobs(json!({"auto_approve": true, "latency_ms": 5}))
        .await;
    assert_eq!(k["auto_approve"], true);
    assert_eq!(k["latency_ms"], 5);
    for bad in [
        json!({"decline_rate": 1.5}),
        json!({"nope": 1}),
        json!({"endpoints": ["refund"]}),
    ] {
        let res = sim
            .http
            .put(sim.url("/__knobs"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
        assert!(res.json::<Value>().await.unwrap()["error"].is_string());
    }
    let k: Value = sim
        .http
        .delete(sim.url("/__knobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(k["auto_approve"], false);
    assert_eq!(k["latency_ms"], 0);

    // DELETE /__ledger clears the ledger and nothing else
    let (tid, _) = sim.paid(ONE, "order-13", 2_000).await;
    assert_eq!(sim.ledger().await.len(), 1);
    let res: Value = sim
        .http
        .delete(sim.url("/__ledger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["cleared"], 1);
    assert!(sim.ledger().await.is_empty());
    assert_eq!(sim.order(ONE, &tid).await["status"], "SUCCESS_PAYMENT");
    let cancel =
        json!({"cid": ONE, "tid": tid, "cancel_amount": 2_000, "cancel_tax_free_amount": 0});
    sim.ok("cancel", cancel).await;
    let ledger = sim.ledger().await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["kind"], "cancel");
}

#[tokio::test]
async fn concurrent_approves_approve_once() {
    let sim = start(Knobs::default()).await;
    let r = sim.ready(ONE, "order-14", 7_000).await;
    let token = sim.buyer_approves(&r).await;
    let body = sim.approve_body(ONE, r["tid"].as_str().unwrap(), "order-14", &token);
    let calls = (0..10).map(|_| sim.call("approve", body.clone()));
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let already = results
        .iter()
        .filter(|(_, v)| v["error_code"] == -702)
        .count();
    assert_eq!((ok, already), (1, 9));
    assert_eq!(sim.ledger().await.len(), 1);
}

#[tokio::test]
async fn clock_offset_moves_ledger_and_sid_times() {
    let sim = start(Knobs::default()).await;
    let start_at = utc("2027-03-01T00:00:00Z");
    let c = sim
        .set_clock(json!({"now": "2027-03-01T09:00:00+09:00"}))
        .await;
    assert!(just_after(rfc3339(&c["now"]), start_at, 5), "{c}");
    assert!(c["offset_ms"].as_i64().unwrap() > 0, "{c}");

    let (status, v) = sim
        .register(
            json!([{"sid": "S-CLOCK-1", "cid": SUB, "partner_user_id": "user-1",
                          "item_name": "오메가3", "last_approved_at": "2027-02-01T00:00:00Z"}]),
        )
        .await;
    assert_eq!((status, &v), (200, &json!({"registered": 1})));
    let st = sim
        .ok(
            "manage/subscription/status",
            json!({"cid": SUB, "sid": "S-CLOCK-1"}),
        )
        .await;
    // KakaoPay answers in KST
    assert_eq!(st["last_approved_at"], "2027-02-01T09:00:00");
    assert!(
        st["created_at"]
            .as_str()
            .unwrap()
            .starts_with("2027-03-01T09:00:0"),
        "{st}"
    );

    let c1 = sim
        .ok(
            "subscription",
            sim.charge_body("S-CLOCK-1", "month-1", 9_900),
        )
        .await;
    assert!(
        c1["approved_at"]
            .as_str()
            .unwrap()
            .starts_with("2027-03-01T09:00:0"),
        "{c1}"
    );
    let st = sim
        .ok(
            "manage/subscription/status",
            json!({"cid": SUB, "sid": "S-CLOCK-1"}),
        )
        .await;
    assert_eq!(st["last_approved_at"], c1["approved_at"]);

    // a simulated month later, by offset this time
    let month_ms = 31 * 24 * 3600 * 1000_i64;
    let offset = c["offset_ms"].as_i64().unwrap() + month_ms;
    let c = sim.set_clock(json!({"offset_ms": offset})).await;
    assert_eq!(c["offset_ms"], offset);
    let c2 = sim
        .ok(
            "subscription",
            sim.charge_body("S-CLOCK-1", "month-2", 9_900),
        )
        .await;
    assert!(
        c2["approved_at"]
            .as_str()
            .unwrap()
            .starts_with("2027-04-01T09:00:"),
        "{c2}"
    );
    let st = sim
        .ok(
            "manage/subscription/status",
            json!({"cid": SUB, "sid": "S-CLOCK-1"}),
        )
        .await;
    assert_eq!(st["last_approved_at"], c2["approved_at"]);
    let order = sim.order(SUB, c2["tid"].as_str().unwrap()).await;
    assert_eq!(order["approved_at"], c2["approved_at"]);

    let ledger = sim.ledger().await;
    assert_eq!(ledger.len(), 2);
    assert!(
        just_after(rfc3339(&ledger[0]["at"]), start_at, 60),
        "{ledger:?}"
    );
    assert!(
        just_after(rfc3339(&ledger[1]["at"]), utc("2027-04-01T00:00:00Z"), 60),
        "{ledger:?}"
    );
    let s = sim.sid_state("S-CLOCK-1").await;
    assert_eq!(s["charges"], 2);
    assert_eq!(rfc3339(&s["last_approved_at"]), rfc3339(&ledger[1]["at"]));
    assert!(just_after(rfc3339(&s["created_at"]), start_at, 60), "{s}");

    // inactivation is stamped with the simulated time too
    let i = sim
        .ok(
            "manage/subscription/inactive",
            json!({"cid": SUB, "sid": "S-CLOCK-1"}),
        )
        .await;
    assert!(
        i["inactivated_at"]
            .as_str()
            .unwrap()
            .starts_with("2027-04-01T09:00:"),
        "{i}"
    );

    // ready expiry follows the simulated clock: 16 simulated minutes pass at once
    let r = sim.ready(ONE, "order-clock", 1_000).await;
    assert!(
        r["created_at"]
            .as_str()
            .unwrap()
            .starts_with("2027-04-01T09:00:"),
        "{r}"
    );
    let token = sim.buyer_approves(&r).await;
    sim.set_clock(json!({"offset_ms": offset + 16 * 60 * 1000}))
        .await;
    sim.fails(
        "approve",
        sim.approve_body(ONE, r["tid"].as_str().unwrap(), "order-clock", &token),
        -723,
    )
    .await;
}

#[tokio::test]
async fn clock_admin_endpoints() {
    let sim = start_with(Config {
        clock_offset_ms: -3_600_000,
        ..Config::default()
    })
    .await;
    let c = sim.clock().await;
    assert_eq!(c["offset_ms"], -3_600_000);
    let behind = chrono::Utc::now() - rfc3339(&c["now"]);
    assert!(
        (3_595..=3_605).contains(&behind.num_seconds()),
        "{c} vs real time: {behind}"
    );

    let c = sim.set_clock(json!({"offset_ms": 86_400_000})).await;
    assert_eq!(c["offset_ms"], 86_400_000);
    let ahead = rfc3339(&c["now"]) - chrono::Utc::now();
    assert!((86_395..=86_405).contains(&ahead.num_seconds()), "{c}");

    // set to an instant, the clock keeps running from there
    let c = sim.set_clock(json!({"now": "2030-01-01T00:00:00Z"})).await;
    assert!(
        just_after(rfc3339(&c["now"]), utc("2030-01-01T00:00:00Z"), 5),
        "{c}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = rfc3339(&sim.clock().await["now"]);
    assert!(
        later - rfc3339(&c["now"]) >= chrono::TimeDelta::milliseconds(250),
        "{later} after {c}"
    );

    for bad in [
        json!({}),
        json!({"now": "2030-01-01T00:00:00Z", "offset_ms": 0}),
        json!({"now": "2030-01-01 00:00"}),
        json!({"now": "2030-01-01T00:00:00"}),
        json!({"offset_ms": "5"}),
        json!({"offset_ms": i64::MAX}),
        json!({"now": "9999-01-01T00:00:00Z", "offset": 1}),
        json!([1]),
    ] {
        let (status, v) = sim
            .admin(reqwest::Method::PUT, "/__clock", Some(bad.clone()))
            .await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].is_string(), "{bad}: {v}");
    }
    // the refused requests changed nothing
    assert!(just_after(
        rfc3339(&sim.clock().await["now"]),
        utc("2030-01-01T00:00:00Z"),
        5
    ));

    let (status, c) = sim.admin(reqwest::Method::DELETE, "/__clock", None).await;
    assert_eq!(status, 200);
    assert_eq!(c["offset_ms"], 0);
    let c = sim.clock().await;
    assert_eq!(c["offset_ms"], 0);
    let drift = chrono::Utc::now() - rfc3339(&c["now"]);
    assert!(drift.num_seconds().abs() <= 5, "{c}");
}

#[tokio::test]
async fn bulk_registered_sids_work_like_issued_ones() {
    let sim = start(Knobs::default()).await;
    let sids: Vec<Value> = (0..10_000)
        .map(|i| {
            json!({"sid": format!("S{i:019}"), "cid": SUB, "partner_user_id": format!("pv-user-{i}"),
                   "item_name": "종합비타민 정기배송"})
        })
        .collect();
    let started = Instant::now();
    let (status, v) = sim.register(Value::Array(sids)).await;
    assert_eq!((status, &v), (200, &json!({"registered": 10_000})));
    // generous for a shared debug build; this is a bulk insert, not 10,000 requests
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let stats: Value = sim.get(&sim.url("/__stats")).await.json().await.unwrap();
    assert_eq!(stats["sids"], 10_000);

    let sid = "S0000000000000004321";
    let s = sim.sid_state(sid).await;
    assert_eq!(s["sid"], sid);
    assert_eq!(s["cid"], SUB);
    assert_eq!(s["partner_user_id"], "pv-user-4321");
    assert_eq!(s["status"], "ACTIVE");
    assert_eq!(s["payment_method_type"], "MONEY");
    assert!(
        s["last_approved_at"].is_null() && s["inactivated_at"].is_null(),
        "{s}"
    );
    assert_eq!(s["charges"], 0);
    assert!(
        just_after(chrono::Utc::now(), rfc3339(&s["created_at"]), 30),
        "{s}"
    );

    let st = sim
        .ok(
            "manage/subscription/status",
            json!({"cid": SUB, "sid": sid}),
        )
        .await;
    assert_eq!(st["status"], "ACTIVE");
    assert_eq!(st["available"], true);
    assert_eq!(st["payment_method_type"], "MONEY");
    assert_eq!(st["item_name"], "종합비타민 정기배송");
    assert!(st.get("last_approved_at").is_none(), "{st}");

    // the charge keeps the SID's checks: its user, its cid
    let mut charge = sim.charge_body(sid, "bench-1", 12_000);
    charge["partner_user_id"] = json!("pv-user-4321");
    let mut wrong_user = charge.clone();
    wrong_user["partner_user_id"] = json!("pv-user-1");
    sim.fails("subscription", wrong_user, -753).await;
    let mut wrong_cid = charge.clone();
    wrong_cid["cid"] = json!(ONE);
    sim.fails("subscription", wrong_cid, -731).await;

    let c = sim.ok("subscription", charge.clone()).await;
    assert_eq!(c["sid"], sid);
    assert_eq!(c["cid"], SUB);
    assert_eq!(c["partner_user_id"], "pv-user-4321");
    assert_eq!(c["payment_method_type"], "MONEY");
    assert_eq!(c["amount"]["total"], 12_000);
    let ledger = sim.ledger().await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["kind"], "charge");
    assert_eq!(ledger[0]["sid"], sid);
    assert_eq!(ledger[0]["tid"], c["tid"]);
    assert_eq!(ledger[0]["aid"], c["aid"]);
    assert_eq!(ledger[0]["cid"], SUB);
    assert_eq!(ledger[0]["partner_user_id"], "pv-user-4321");
    assert_eq!(ledger[0]["partner_order_id"], "bench-1");
    assert_eq!(ledger[0]["amount"], 12_000);
    let st = sim
        .ok(
            "manage/subscription/status",
            json!({"cid": SUB, "sid": sid}),
        )
        .await;
    assert_eq!(st["last_approved_at"], c["approved_at"]);
    // the charge's payment refunds like any other
    sim.ok(
        "cancel",
        json!({"cid": SUB, "tid": c["tid"], "cancel_amount": 12_000, "cancel_tax_free_amount": 0}),
    )
    .await;

    sim.ok(
        "manage/subscription/inactive",
        json!({"cid": SUB, "sid": sid}),
    )
    .await;
    sim.fails("subscription", charge, -751).await;
    let s = sim.sid_state(sid).await;
    assert_eq!(s["status"], "INACTIVE");
    assert!(s["inactivated_at"].is_string(), "{s}");
    assert_eq!(s["charges"], 1, "the cancel is not a charge");
    // the neighbours are untouched
    assert_eq!(
        sim.sid_state("S0000000000000004322").await["status"],
        "ACTIVE"
    );

    let (status, v) = sim
        .admin(reqwest::Method::GET, "/__sids/S-NOT-REGISTERED", None)
        .await;
    assert_eq!(status, 404);
    assert!(v["error"].is_string());
    // an SID issued by approve is visible the same way
    let (_, a) = sim.paid(SUB, "sub-approve", 5_000).await;
    let s = sim.sid_state(a["sid"].as_str().unwrap()).await;
    assert_eq!(s["partner_user_id"], "user-1");
    assert_eq!(rfc3339(&s["last_approved_at"]), rfc3339(&s["created_at"]));
}

#[tokio::test]
async fn sid_registration_is_validated() {
    let sim = start_with(Config {
        subscription_cids: vec![SUB.to_owned(), "TCSUBSCR02".to_owned()],
        ..Config::default()
    })
    .await;
    let reg = |sid: &str, cid: &str, user: &str| json!({"sid": sid, "cid": cid, "partner_user_id": user, "item_name": "오메가3"});

    // all or nothing: a one-time cid refuses the whole batch
    let (status, v) = sim
        .register(json!([
            reg("S-OK-1", SUB, "user-1"),
            reg("S-BAD-1", ONE, "user-1")
        ]))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("subscription"), "{v}");
    let (status, _) = sim
        .admin(reqwest::Method::GET, "/__sids/S-OK-1", None)
        .await;
    assert_eq!(status, 404);

    let mut bad_fields = vec![
        json!({"sid": "S-X", "cid": SUB, "partner_user_id": "user-1"}),
        reg("", SUB, "user-1"),
        reg("S-X", SUB, ""),
        reg(&"S".repeat(101), SUB, "user-1"),
        reg("S-X", "SHORT", "user-1"),
    ];
    let mut extra = reg("S-X", SUB, "user-1");
    extra["status"] = json!("ACTIVE");
    bad_fields.push(extra);
    let mut bad_time = reg("S-X", SUB, "user-1");
    bad_time["last_approved_at"] = json!("yesterday");
    bad_fields.push(bad_time);
    for bad in bad_fields {
        let (status, v) = sim.register(json!([bad.clone()])).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].is_string(), "{bad}: {v}");
    }
    let (status, v) = sim
        .admin(
            reqwest::Method::POST,
            "/__sids",
            Some(json!({"sid": "S-X"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");

    let (status, v) = sim.register(json!([reg("S-DUP", SUB, "user-1")])).await;
    assert_eq!((status, &v), (200, &json!({"registered": 1})));
    sim.ok("subscription", sim.charge_body("S-DUP", "dup-1", 1_000))
        .await;
    sim.ok(
        "manage/subscription/inactive",
        json!({"cid": SUB, "sid": "S-DUP"}),
    )
    .await;

    // another user or another cid: 409, and the SID is left as it was
    for conflicting in [
        reg("S-DUP", SUB, "user-2"),
        reg("S-DUP", "TCSUBSCR02", "user-1"),
    ] {
        let (status, v) = sim.register(json!([conflicting.clone()])).await;
        assert_eq!(status, 409, "{conflicting}: {v}");
        assert!(v["error"].as_str().unwrap().contains("S-DUP"), "{v}");
    }
    // within one batch too, and nothing of that batch is registered
    let (status, _) = sim
        .register(json!([
            reg("S-NEW", SUB, "user-1"),
            reg("S-NEW", SUB, "user-9")
        ]))
        .await;
    assert_eq!(status, 409);
    let (status, _) = sim.admin(reqwest::Method::GET, "/__sids/S-NEW", None).await;
    assert_eq!(status, 404);
    let s = sim.sid_state("S-DUP").await;
    assert_eq!(
        (s["status"].as_str(), s["charges"].as_i64()),
        (Some("INACTIVE"), Some(1))
    );

    // the same cid and user replace it: a fresh, active SID with the given history
    let mut again = reg("S-DUP", SUB, "user-1");
    again["last_approved_at"] = json!("2026-01-15T10:00:00+09:00");
    again["payment_method_type"] = json!("CARD");
    let (status, v) = sim.register(json!([again.clone(), again])).await;
    assert_eq!((status, &v), (200, &json!({"registered": 2})));
    let s = sim.sid_state("S-DUP").await;
    assert_eq!(s["status"], "ACTIVE");
    assert!(s["inactivated_at"].is_null());
    assert_eq!(rfc3339(&s["last_approved_at"]), utc("2026-01-15T01:00:00Z"));
    assert_eq!(s["payment_method_type"], "CARD");
    let c = sim
        .ok("subscription", sim.charge_body("S-DUP", "dup-2", 1_000))
        .await;
    assert_eq!(c["payment_method_type"], "CARD");
    assert!(c["card_info"].is_object(), "{c}");
    // a registered SID is bound to its cid like an issued one
    sim.fails(
        "manage/subscription/status",
        json!({"cid": "TCSUBSCR02", "sid": "S-DUP"}),
        -750,
    )
    .await;
    assert_eq!(sim.sid_state("S-DUP").await["charges"], 2);
}

#[tokio::test]
async fn registered_sid_charges_respect_the_knobs() {
    let sim = start(Knobs::default()).await;
    let (status, _) = sim
        .register(
            json!([{"sid": "S-KNOB-1", "cid": SUB, "partner_user_id": "user-1",
                          "item_name": "루테인", "last_approved_at": "2026-05-01T00:00:00Z"}]),
        )
        .await;
    assert_eq!(status, 200);

    sim.knobs(json!({"decline_rate": 1.0})).await;
    let e = sim
        .fails(
            "subscription",
            sim.charge_body("S-KNOB-1", "knob-1", 3_300),
            -782,
        )
        .await;
    assert_eq!(e["extras"]["method_result_code"], "INSUFFICIENT_BALANCE");
    sim.knobs(json!({"decline_code": -797, "decline_result_code": "USER_LOCKED"}))
        .await;
    let e = sim
        .fails(
            "subscription",
            sim.charge_body("S-KNOB-1", "knob-1", 3_300),
            -797,
        )
        .await;
    assert_eq!(e["extras"]["method_result_code"], "USER_LOCKED");
    // a declined charge leaves no trace on the SID
    let st = sim
        .ok(
            "manage/subscription/status",
            json!({"cid": SUB, "sid": "S-KNOB-1"}),
        )
        .await;
    assert_eq!(st["last_approved_at"], "2026-05-01T09:00:00");

    sim.knobs(
        json!({"decline_rate": 0.0, "server_error_rate": 1.0, "endpoints": ["subscription"]}),
    )
    .await;
    let (status, _) = sim
        .call("subscription", sim.charge_body("S-KNOB-1", "knob-1", 3_300))
        .await;
    assert_eq!(status, 500);
    assert!(sim.ledger().await.is_empty());
    let s = sim.sid_state("S-KNOB-1").await;
    assert_eq!(s["charges"], 0);
    assert_eq!(rfc3339(&s["last_approved_at"]), utc("2026-05-01T00:00:00Z"));

    let (status, _) = sim.admin(reqwest::Method::DELETE, "/__knobs", None).await;
    assert_eq!(status, 200);
    let c = sim
        .ok("subscription", sim.charge_body("S-KNOB-1", "knob-1", 3_300))
        .await;
    let s = sim.sid_state("S-KNOB-1").await;
    assert_eq!(s["charges"], 1);
    let st = sim
        .ok(
            "manage/subscription/status",
            json!({"cid": SUB, "sid": "S-KNOB-1"}),
        )
        .await;
    assert_eq!(st["last_approved_at"], c["approved_at"]);
}

#[tokio::test]
async fn the_webhook_sink_answers_204_and_counts_per_name() {
    let sim = start(Knobs::default()).await;
    for name in ["partner", "partner", "notify"] {
        let res = sim
            .http
            .post(sim.url(&format!("/__webhooks/{name}")))
            .header("Pillivery-Signature", "t=1,v1=00")
            .json(&json!({"type": "order.paid"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 204);
    }
    let stats: Value = sim.get(&sim.url("/__stats")).await.json().await.unwrap();
    assert_eq!(stats["webhooks"], json!({"partner": 2, "notify": 1}));
    // not a KakaoPay request
    assert_eq!(stats["per_second"], json!([]), "{stats}");
}
