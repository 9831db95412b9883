//! The hook endpoint's HTTP server: bounded whatever the callers do. axum's `serve` sets no
//! header-read timeout and takes every connection, so partial-header and idle connections used
//! to stay open and, past a thousand, took every file descriptor (the PACS sources then failed
//! with "Too many open files"). Here:
//! - at most [`MAX_CONNECTIONS`] connections are open at once; past that, new ones wait in the
//!   kernel's accept queue, where they cost the process no descriptor;
//! - a request's headers must arrive within [`HEADER_TIMEOUT`] (hyper's timer starts when the
//!   connection waits for a request, so an idle keep-alive connection is closed too);
//! - a connection lives at most [`CONNECTION_LIFETIME`] (a body trickled byte by byte).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Time for a request's headers to arrive (and for an idle connection to send one).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = &mut shutdown => return,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // out of descriptors, or a connection reset before it was accepted
                    tracing::debug!("hook endpoint: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let svc = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}
