//! `serve`: the HTTP endpoint Orthanc's Lua hooks (or any PACS webhook) call, plus `/healthz`,
//! `/metrics` and the operators' status page at `/` (`page_route`, rendered by `page`). A hook call is checked (token, size, JSON), answered 202 at once, and its work
//! done in the background: the hook never blocks Orthanc, and a lost call is caught by the
//! changes feed and the periodic reconcile of the same pipeline. A refused call is answered with
//! its reason and counted by reason (`/metrics`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::monai::Secret;
use crate::util::Metrics;

mod body;
mod debounce;
pub mod http;
mod lua;
mod metrics;
pub mod page;
mod page_cl;
mod page_route;
mod relay;
pub mod token;
mod worker;
pub use body::{parse_hook, HookBody, HookEvent, HookKind, StoredBody};
pub use lua::{orthanc_lua, write_private};
use metrics::metrics_text;
pub use metrics::render_metrics;
pub use page_cl::ClWatch;
pub use page_route::PageConfig;
pub use relay::Relay;
pub use worker::{worker, WorkerOutputs};

/// Largest hook body accepted; the Lua script sends a few hundred bytes.
pub const MAX_HOOK_BODY: usize = 16 * 1024;

/// Compares without leaking where the first difference is (only whether the lengths differ).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Health as `/healthz` reports it; filled in by the pipeline.
#[derive(Clone)]
struct AppState {
    token: Option<Secret>,
    events: mpsc::Sender<HookEvent>,
    metrics: Arc<Metrics>,
    sources: Arc<Vec<String>>,
    page: Arc<PageConfig>,
    cl: ClWatch,
}

/// The endpoint; its status page shows the CL job `cl` watches (`ClWatch::none()`: none).
pub fn router(
    token: Option<Secret>,
    events: mpsc::Sender<HookEvent>,
    metrics: Arc<Metrics>,
    sources: Vec<String>,
    page: PageConfig,
    cl: ClWatch,
) -> Router {
    let st = AppState {
        token,
        events,
        metrics,
        sources: Arc::new(sources),
        page: Arc::new(page),
        cl,
    };
    Router::new()
        // read-only: any other method is 405
        .route("/", get(page_route::status_page))
        .route("/hooks/orthanc/stored-instance", post(stored))
        .route("/hooks/orthanc/stable-series", post(stable))
        .route("/hooks/orthanc/deleted-series", post(deleted))
        .route("/hooks/series", post(stable))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_HOOK_BODY))
        .with_state(st)
}

/// Why a hook call was refused. Each is counted (`segbridge_hooks_refused_total{reason}`), so
/// a script with a stale token or a caller sending bad bodies shows on `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Looks like a web page's request (foreign Origin, cross-site, not declared JSON).
    Browser,
    /// No bearer token, or the wrong one.
    Unauthorized,
    /// A body over [`MAX_HOOK_BODY`].
    TooLarge,
    /// A body that is not the hook's JSON, or whose IDs or UIDs break their grammar.
    Malformed,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::Browser,
        Refusal::Unauthorized,
        Refusal::TooLarge,
        Refusal::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Browser => "browser",
            Refusal::Unauthorized => "unauthorized",
            Refusal::TooLarge => "too-large",
            Refusal::Malformed => "malformed",
        }
    }

    pub fn counter(self, m: &Metrics) -> &std::sync::atomic::AtomicU64 {
        match self {
            Refusal::Browser => &m.hooks_refused_browser,
            Refusal::Unauthorized => &m.hooks_refused_unauthorized,
            Refusal::TooLarge => &m.hooks_refused_too_large,
            Refusal::Malformed => &m.hooks_refused_malformed,
        }
    }
}

fn refuse(st: &AppState, why: Refusal, status: StatusCode, reason: &str) -> Response {
    why.counter(&st.metrics).fetch_add(1, Ordering::Relaxed);
    debug!(
        reason = why.as_str(),
        status = status.as_u16(),
        "hook call refused: {reason}"
    );
    (status, Json(json!({"error": reason}))).into_response()
}

fn authorized(st: &AppState, headers: &HeaderMap) -> bool {
    let Some(want) = &st.token else { return true };
    let got = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(got.as_bytes(), want.expose().as_bytes())
}

/// Why a request looks like one a web page made (a page in the operator's browser can reach
/// loopback): a foreign `Origin`, a cross-site fetch, or a body that is not declared JSON (the
/// only kinds a page can send without asking the server first).
fn browser_made(headers: &HeaderMap) -> Option<(StatusCode, &'static str)> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get("origin") {
        let same = header("host").is_some_and(|h| {
            origin.to_str().ok() == Some(&format!("http://{h}"))
                || origin.to_str().ok() == Some(&format!("https://{h}"))
        });
        if !same {
            return Some((StatusCode::FORBIDDEN, "cross-origin requests are refused"));
        }
    }
    if header("sec-fetch-site").is_some_and(|v| v != "same-origin" && v != "none") {
        return Some((StatusCode::FORBIDDEN, "cross-site requests are refused"));
    }
    let json = header("content-type").is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return Some((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    None
}

async fn hook(
    st: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: HookKind,
) -> Response {
    if let Some((code, why)) = browser_made(&headers) {
        return refuse(&st, Refusal::Browser, code, why);
    }
    if !authorized(&st, &headers) {
        let why = "missing or wrong bearer token";
        return refuse(&st, Refusal::Unauthorized, StatusCode::UNAUTHORIZED, why);
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let why = format!("hook bodies are at most {MAX_HOOK_BODY} bytes");
            return refuse(&st, Refusal::TooLarge, e.status(), &why);
        }
        Err(e) => return refuse(&st, Refusal::Malformed, e.status(), &e.body_text()),
    };
    st.metrics.hooks_received.fetch_add(1, Ordering::Relaxed);
    match parse_hook(&body, kind) {
        Err(reason) => refuse(&st, Refusal::Malformed, StatusCode::BAD_REQUEST, &reason),
        Ok(None) => (StatusCode::ACCEPTED, Json(json!({"ignored": "not a SEG"}))).into_response(),
        Ok(Some(ev)) => match st.events.try_send(ev) {
            Ok(()) => (StatusCode::ACCEPTED, Json(json!({"queued": true}))).into_response(),
            // a full queue: the reconcile will find it; tell the caller, never block it
            Err(_) => {
                warn!("hook queue full: event dropped, the next reconcile will catch it");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": "busy; retried by reconcile"})),
                )
                    .into_response()
            }
        },
    }
}

type Body = Result<Bytes, BytesRejection>;

async fn stored(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    hook(st, headers, body, HookKind::StoredInstance).await
}

async fn stable(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    hook(st, headers, body, HookKind::StableSeries).await
}

async fn deleted(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    hook(st, headers, body, HookKind::DeletedSeries).await
}

async fn healthz(State(st): State<AppState>) -> Response {
    let m = &st.metrics;
    let last = m.last_success.load(Ordering::Relaxed);
    let api_down = m.api_down.load(Ordering::Relaxed) == 1;
    let sources_down = m.sources_down.load(Ordering::Relaxed);
    let ok = !api_down && sources_down == 0;
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "api_reachable": !api_down,
        "sources": *st.sources,
        "sources_down": sources_down,
        "outbox_depth": m.outbox_depth.load(Ordering::Relaxed),
        "last_successful_notify": (last > 0).then(|| crate::ledger::fmt_time(last as i64)),
        "seconds_since_last_success": (last > 0).then(|| crate::ledger::now() - last as i64),
        "cluster": m.cluster(),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Binds the endpoint. Off loopback a token is required: refuses to start otherwise.
pub async fn bind(
    listen: SocketAddr,
    token: &Option<Secret>,
) -> Result<tokio::net::TcpListener, String> {
    if !listen.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "--listen {listen} is not a loopback address: set SEGBRIDGE_HOOK_TOKEN so that hook calls are authenticated"
        ));
    }
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
