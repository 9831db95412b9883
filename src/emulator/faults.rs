//! Fault injection for tests: `POST /_emulator/faults` queues faults (fail with a status, hang,
//! drop the connection, before or after processing; or, with `job_error`, end a job in `Error`),
//! `DELETE` clears them, and the middleware applies the next matching one to each API call
//! before checking its token (job faults are applied as jobs advance: `state::JobFault`).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::check_token;
use super::reply::{err, Reply};
use super::state::{AppState, Fault};
use crate::monai::types::JobAction;

/// The API middleware: applies the next queued fault matching the path (before or after the
/// handler), then checks the bearer token of every call but login.
pub(super) async fn faults_and_auth(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let fault = {
        let mut emu = st.emu.lock().expect("emulator state");
        emu.calls += 1;
        let pos = emu.faults.iter().position(|f| {
            f.path_contains
                .as_ref()
                .is_none_or(|p| path.contains(p.as_str()))
        });
        pos.map(|i| {
            let f = emu.faults[i].clone();
            emu.faults[i].count -= 1;
            if emu.faults[i].count == 0 {
                emu.faults.remove(i);
            }
            f
        })
    };
    if let Some(f) = &fault {
        if !f.after_processing {
            if let Some(ms) = f.delay_ms {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if let Some(s) = f.status {
                let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut r = err(status, 500, format!("injected fault: HTTP {s}"));
                if let Some(ra) = f.retry_after {
                    r.headers_mut().insert("retry-after", HeaderValue::from(ra));
                }
                return r;
            }
            if f.drop {
                return dropped();
            }
        }
    }
    if path != "/api/v1/login" {
        if let Err(r) = check_token(&st, req.headers()) {
            return r;
        }
    }
    let resp = next.run(req).await;
    if let Some(f) = fault.filter(|f| f.after_processing) {
        if let Some(ms) = f.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if f.drop {
            return dropped();
        }
    }
    resp
}

/// A response whose body breaks off: the client sees the connection fail mid-body.
fn dropped() -> Response {
    let stream = futures_stream();
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn futures_stream() -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> {
    struct Broken(u8);
    impl futures_core::Stream for Broken {
        type Item = Result<Bytes, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            self.0 += 1;
            std::task::Poll::Ready(match self.0 {
                1 => Some(Ok(Bytes::from_static(b"{\"partial\": "))),
                _ => Some(Err(std::io::Error::other("injected: connection dropped"))),
            })
        }
    }
    Broken(0)
}

pub(super) async fn add_fault(State(st): State<AppState>, body: Bytes) -> Reply {
    let f: Fault = serde_json::from_slice(&body)
        .map_err(|e| err(StatusCode::BAD_REQUEST, 3, format!("Invalid fault: {e}")))?;
    if f.count == 0 {
        return Ok(Json(json!({"queued": 0})).into_response());
    }
    let mut emu = st.emu.lock().expect("emulator state");
    if let Some(jf) = f.job_error.clone() {
        let bad = |why: &str| err(StatusCode::BAD_REQUEST, 3, format!("Invalid fault: {why}"));
        if f.status.is_some()
            || f.delay_ms.is_some()
            || f.retry_after.is_some()
            || f.drop
            || f.after_processing
            || f.path_contains.is_some()
        {
            return Err(bad("a job_error takes no other field but count"));
        }
        if !matches!(jf.action, JobAction::Annotation | JobAction::Train) {
            return Err(bad("job_error.action must be \"annotation\" or \"train\""));
        }
        if jf.message.trim().is_empty() || jf.message.len() > 4096 {
            return Err(bad("job_error.message must be 1 to 4096 bytes"));
        }
        emu.job_faults.push((jf, f.count));
        return Ok(Json(json!({"queued": emu.job_faults.len()})).into_response());
    }
    emu.faults.push(f);
    Ok(Json(json!({"queued": emu.faults.len()})).into_response())
}

pub(super) async fn clear_faults(State(st): State<AppState>) -> Response {
    let mut emu = st.emu.lock().expect("emulator state");
    emu.faults.clear();
    emu.job_faults.clear();
    Json(json!({})).into_response()
}
