//! `pillivery-pgsim`: a KakaoPay-compatible online payment gateway simulator (DESIGN §9).
//!
//! It speaks the protocol of `notes/kakaopay-api.md`: `POST /online/v1/payment/{ready,
//! approve, subscription, cancel, order, manage/subscription/inactive,
//! manage/subscription/status}` with `Authorization: SECRET_KEY <key>`, JSON bodies, the
//! same field names, statuses and error bodies. State lives in memory. It keeps a ledger of
//! every approval, recurring charge and cancel so tests can prove there are no double
//! charges, and it has knobs for latency and failures (see [`knobs::Knobs`]).
//!
//! Other routes:
//! - `GET /buyer/{tid}` — the buyer's payment page (`next_redirect_*_url` of `ready`). With
//!   `auto_approve` it acts at once (`auto_action`: approve → 302 to `approval_url` with
//!   `pg_token`; cancel → `cancel_url`; fail → `fail_url`), otherwise it shows links to
//!   `GET /buyer/{tid}/{approve|cancel|fail}`, which do the same.
//! - `GET /__ledger` → `{"entries":[{"kind":"approve"|"charge"|"cancel","tid","sid",
//!   "partner_order_id","amount","at", "aid","cid","partner_user_id"}]}` in order;
//!   `DELETE /__ledger` clears it (only it).
//! - `GET /__knobs`, `PUT /__knobs` (a partial JSON object), `DELETE /__knobs` (back to the
//!   startup knobs).
//! - `GET /__stats` (requests per endpoint, injected failures), `GET /__health`.
//! - `GET /__clock` → `{"now": "<RFC 3339>", "offset_ms": N}`: the simulator's clock is real
//!   time plus `offset_ms` (startup: `--clock-offset-ms`, default 0). Every time it
//!   produces (ready expiry, payment and SID times, ledger `at`) comes from it.
//!   `PUT /__clock` with `{"now": "<RFC 3339>"}` (now is that instant, and keeps running)
//!   or `{"offset_ms": N}` answers like `GET`; `DELETE /__clock` sets the offset to 0.
//! - `POST /__sids` with `{"sids": [{"sid", "cid", "partner_user_id", "item_name",
//!   "last_approved_at"?: "<RFC 3339>", "payment_method_type"?: "CARD"|"MONEY"}]}` →
//!   `{"registered": n}`: SIDs as if issued by earlier approves (active, `created_at` =
//!   now; the method defaults to the `payment_method` knob), usable with `subscription`
//!   and `manage/subscription/*` like any other. All or nothing: 400 `{"error"}` for an
//!   invalid entry (e.g. not a subscription cid), 409 `{"error"}` for a sid that exists
//!   with another cid or `partner_user_id` (the same ones replace it with a fresh SID).
//! - `GET /__sids/{sid}` → `{"sid", "cid", "partner_user_id", "item_name",
//!   "payment_method_type", "status": "ACTIVE"|"INACTIVE", "created_at",
//!   "last_approved_at", "inactivated_at", "charges"}` (RFC 3339 or null; `charges` =
//!   its `charge` entries in the ledger); 404 `{"error"}` for an unknown sid.
//!
//! Error codes (HTTP 400 unless said otherwise; body `{"error_code", "error_message",
//! "extras"}`, or `{"code", "msg", "extras"}` with `legacy_errors`): see [`protocol::code`].

pub mod app;
pub mod clock;
pub mod config;
pub mod gateway;
pub mod knobs;
pub mod protocol;
pub mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use app::{router, Sim};
pub use clock::Clock;
pub use config::{Args, Config};
pub use knobs::Knobs;

/// Serves a simulator built from `config` on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| config::url_for(addr));
    let sim = Sim::new(config, public_url);
    server::serve(listener, router(sim), shutdown).await
}

/// A simulator running in the background (for tests); stops when dropped.
pub struct Running {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`: the KakaoPay base URL and the admin endpoints.
    pub url: String,
    pub sim: Arc<Sim>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a simulator on `listener` in a background task.
pub fn spawn(listener: TcpListener, config: Config) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let url = config::url_for(addr);
    let public_url = config.public_url.clone().unwrap_or_else(|| url.clone());
    let sim = Sim::new(config, public_url);
    let app = router(sim.clone());
    let task = tokio::spawn(server::serve(listener, app, std::future::pending()));
    Ok(Running {
        addr,
        url,
        sim,
        task,
    })
}
