//! The accept loop: HTTP/1.1 over hyper, with a per-connection handle that lets a handler
//! close its connection without answering (injected timeouts and dropped responses).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

/// Put in every request's extensions: [`ConnHandle::close`] drops the connection, and the
/// request with it, without an answer.
#[derive(Clone)]
pub struct ConnHandle(Arc<Notify>);

impl ConnHandle {
    pub fn close(&self) {
        self.0.notify_one();
    }
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, app.clone()));
                }
                Err(e) => {
                    // e.g. too many open files: back off instead of spinning
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_connection(stream: TcpStream, app: Router) {
    let _ = stream.set_nodelay(true);
    let kill = Arc::new(Notify::new());
    let handle = ConnHandle(kill.clone());
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(handle.clone());
        let app = app.clone();
        async move {
            let res = app.oneshot(req.map(Body::new)).await;
            Ok::<_, Infallible>(match res {
                Ok(r) => r,
                Err(never) => match never {},
            })
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = kill.notified() => {
            tracing::debug!("closing a connection without an answer");
        }
    }
}
