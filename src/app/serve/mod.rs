//! `serve`: the HTTP endpoint Orthanc's Lua hooks (or any PACS webhook) call, plus `/healthz`
//! and `/metrics`. A hook call is checked (token, size, JSON), answered 202 at once, and its work
//! done in the background: the hook never blocks Orthanc, and a lost call is caught by the
//! changes feed and the periodic reconcile of the same pipeline.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::monai::Secret;
use crate::util::Metrics;

pub mod http;
mod metrics;
pub mod token;
use metrics::metrics_text;
pub use metrics::render_metrics;

/// Largest hook body accepted; the Lua script sends a few hundred bytes.
pub const MAX_HOOK_BODY: usize = 16 * 1024;

/// What a hook call asks for, queued for the background worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEvent {
    /// A series became stable in Orthanc (its Orthanc ID).
    OrthancStable { id: String },
    /// A series was deleted in Orthanc (its Orthanc ID).
    OrthancDeleted { id: String },
    /// A generic webhook: a series was stored (by SeriesInstanceUID).
    SeriesStored { uid: String, study: Option<String> },
}

/// The body the shipped Lua script sends (Orthanc ID plus main tags), or a generic webhook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookBody {
    pub id: Option<String>,
    pub modality: Option<String>,
    pub uid: Option<String>,
    pub series_uid: Option<String>,
    pub study_uid: Option<String>,
}

/// Why a hook body was refused (400), with the reason shown to the caller. Orthanc IDs and UIDs
/// must match their grammar: they become parts of PACS requests (with the PACS credentials).
pub fn parse_hook(body: &[u8], deleted: bool) -> Result<Option<HookEvent>, String> {
    use crate::source::endpoint::{is_orthanc_id, is_uid};
    let b: HookBody = serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let orthanc_id = |id: Option<String>, what: &str| match id {
        Some(id) if is_orthanc_id(&id) => Ok(id),
        Some(_) => Err(
            "\"id\" is not an Orthanc series ID (40 hex digits in five groups of 8)".to_string(),
        ),
        None => Err(format!("\"id\" (the Orthanc series ID){what} is required")),
    };
    if deleted {
        let id = orthanc_id(b.id, "")?;
        return Ok(Some(HookEvent::OrthancDeleted { id }));
    }
    if let Some(uid) = b.series_uid {
        if !is_uid(&uid) {
            return Err("\"series_uid\" is not a DICOM UID".into());
        }
        if b.study_uid.as_deref().is_some_and(|s| !is_uid(s)) {
            return Err("\"study_uid\" is not a DICOM UID".into());
        }
        return Ok(Some(HookEvent::SeriesStored {
            uid,
            study: b.study_uid,
        }));
    }
    let id = orthanc_id(b.id, " or \"series_uid\"")?;
    match b.modality.as_deref() {
        Some(m) if !m.eq_ignore_ascii_case("SEG") => Ok(None), // not a label: ignored cheaply
        _ => Ok(Some(HookEvent::OrthancStable { id })),
    }
}

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
}

pub fn router(
    token: Option<Secret>,
    events: mpsc::Sender<HookEvent>,
    metrics: Arc<Metrics>,
    sources: Vec<String>,
) -> Router {
    let st = AppState {
        token,
        events,
        metrics,
        sources: Arc::new(sources),
    };
    Router::new()
        .route("/hooks/orthanc/stable-series", post(stable))
        .route("/hooks/orthanc/deleted-series", post(deleted))
        .route("/hooks/series", post(stable))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_HOOK_BODY))
        .with_state(st)
}

fn refuse(status: StatusCode, reason: &str) -> Response {
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

async fn hook(st: AppState, headers: HeaderMap, body: Bytes, deleted: bool) -> Response {
    if let Some((code, why)) = browser_made(&headers) {
        return refuse(code, why);
    }
    if !authorized(&st, &headers) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    st.metrics.hooks_received.fetch_add(1, Ordering::Relaxed);
    match parse_hook(&body, deleted) {
        Err(reason) => refuse(StatusCode::BAD_REQUEST, &reason),
        Ok(None) => (
            StatusCode::ACCEPTED,
            Json(json!({"ignored": "not a SEG series"})),
        )
            .into_response(),
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

async fn stable(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    hook(st, headers, body, false).await
}

async fn deleted(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    hook(st, headers, body, true).await
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

/// The Lua script for Orthanc's `LuaScripts`: OnStableSeries (SEG only) and OnDeletedSeries
/// post to segbridge with the token. Failures are swallowed (pcall): the hook must never
/// disturb Orthanc; segbridge's reconcile catches what a lost call missed.
pub fn orthanc_lua(url: &str, token: Option<&Secret>) -> String {
    let url = url.trim_end_matches('/');
    let auth = match token {
        Some(t) => format!(
            "['Authorization'] = {}, ",
            lua_string(&format!("Bearer {}", t.expose()))
        ),
        None => String::new(),
    };
    format!(
        r#"-- segbridge hooks for Orthanc (generated by `segbridge orthanc-lua`).
-- List this file in Orthanc's "LuaScripts". It tells segbridge the moment a SEG series is
-- stable or a series is deleted; segbridge's periodic reconcile catches anything missed.
local SEGBRIDGE = {url}
local HEADERS = {{ {auth}['Content-Type'] = 'application/json' }}

local function post(path, body)
  local ok, err = pcall(HttpPost, SEGBRIDGE .. path, DumpJson(body, true), HEADERS)
  if not ok then
    print('segbridge hook failed (reconcile will catch it): ' .. tostring(err))
  end
end

function OnStableSeries(seriesId, tags, metadata)
  if tags['Modality'] == 'SEG' then
    post('/hooks/orthanc/stable-series',
      {{ id = seriesId, modality = tags['Modality'], uid = tags['SeriesInstanceUID'] }})
  end
end

function OnDeletedSeries(seriesId)
  post('/hooks/orthanc/deleted-series', {{ id = seriesId }})
end
"#,
        url = lua_string(url),
    )
}

/// A Lua string literal of any text (quotes, backslashes and control bytes escaped).
fn lua_string(s: &str) -> String {
    let mut out = String::from("'");
    for b in s.bytes() {
        match b {
            b'\'' => out.push_str("\\'"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('\'');
    out
}

/// Processes hook events in the background: a stable SEG is read and sent as a partial scan;
/// a deletion goes to the ledger by Orthanc ID.
pub async fn worker(
    mut events: mpsc::Receiver<HookEvent>,
    orthanc: Option<crate::source::orthanc::Orthanc>,
    dicomweb: Option<crate::source::dicomweb::DicomWeb>,
    state: std::path::PathBuf,
    scans: mpsc::Sender<crate::app::pipeline::Scan>,
    removals: mpsc::Sender<Vec<String>>,
) {
    let known = crate::ledger::KnownLookup::State(state);
    while let Some(first) = events.recv().await {
        // take what else is queued: a burst of stored SEGs is read as one scan
        let mut batch = vec![first];
        while batch.len() < 200 {
            match events.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(_) => break,
            }
        }
        debug!(events = batch.len(), "hook events");
        let mut stable = Vec::new();
        let mut gone = Vec::new();
        for ev in batch {
            match ev {
                HookEvent::OrthancStable { id } => stable.push(id),
                HookEvent::OrthancDeleted { id } => gone.push(id),
                HookEvent::SeriesStored { uid, study } => {
                    let dw = orthanc.as_ref().map(|o| &o.dicomweb).or(dicomweb.as_ref());
                    let r = match dw {
                        Some(dw) => dw
                            .read_series_by_uid(&uid, study.as_deref(), &known, &scans)
                            .await
                            .map_err(|e| e.to_string()),
                        None => Err("segbridge serve has no --dicomweb or --orthanc".into()),
                    };
                    if let Err(e) = r {
                        warn!("webhook for series {uid}: {e}; the next reconcile will catch it");
                    }
                }
            }
        }
        if !stable.is_empty() {
            let r = match &orthanc {
                Some(o) => o
                    .read_series(&stable, &known, &scans)
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("segbridge serve was not given --orthanc".to_string()),
            };
            if let Err(e) = r {
                warn!(
                    "stable-series hook ({} series): {e}; the next reconcile will catch it",
                    stable.len()
                );
            }
        }
        let gone = confirmed_gone(orthanc.as_ref(), gone).await;
        if !gone.is_empty() && removals.send(gone).await.is_err() {
            return;
        }
    }
}

/// The series of deletion hooks that Orthanc confirms gone (its `/series/{id}` answers 404). A
/// series that still exists, or that cannot be checked now, is left alone: a forged or stale
/// hook removes nothing, and the reconcile removes what is really gone.
async fn confirmed_gone(
    orthanc: Option<&crate::source::orthanc::Orthanc>,
    ids: Vec<String>,
) -> Vec<String> {
    let Some(o) = orthanc else {
        if !ids.is_empty() {
            warn!(
                "{} deletion hook(s) ignored: serve has no --orthanc to check them against",
                ids.len()
            );
        }
        return Vec::new();
    };
    let mut gone = Vec::new();
    for id in ids {
        match o.series(&id).await {
            Ok(None) => gone.push(id),
            Ok(Some(_)) => {
                warn!("deletion hook for series {id}, which Orthanc still has: ignored")
            }
            Err(e) => warn!(
                "deletion hook for series {id} not checked ({e}): ignored; the next reconcile \
                 will remove it if it is gone"
            ),
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_bodies() {
        let id = crate::source::orthanc::series_id("P", "1.2", "1.2.3");
        let body = |s: &str| s.replace("ID", &id).into_bytes();
        assert_eq!(
            parse_hook(
                &body(r#"{"id": "ID", "modality": "SEG", "uid": "1.2"}"#),
                false
            )
            .unwrap(),
            Some(HookEvent::OrthancStable { id: id.clone() })
        );
        assert_eq!(
            parse_hook(&body(r#"{"id": "ID", "modality": "CT"}"#), false).unwrap(),
            None
        );
        assert_eq!(
            parse_hook(br#"{"series_uid": "1.2.3"}"#, false).unwrap(),
            Some(HookEvent::SeriesStored {
                uid: "1.2.3".into(),
                study: None
            })
        );
        assert_eq!(
            parse_hook(&body(r#"{"id": "ID"}"#), true).unwrap(),
            Some(HookEvent::OrthancDeleted { id: id.clone() })
        );
        for bad in [
            &b"{"[..],
            b"[]",
            b"null",
            br#"{"id": 5}"#,
            br#"{"evil": 1}"#,
            br#"{"series_uid": "1.2; DROP"}"#,
            br#"{}"#,
            br#"{"id": "../tools/find"}"#,
            br#"{"id": "x/../../instances?expand=1&"}"#,
            br#"{"id": "%2e%2e/%2e%2e/changes"}"#,
            br#"{"series_uid": "1.2", "study_uid": "../../../tools/reset?x="}"#,
        ] {
            assert!(
                parse_hook(bad, false).is_err() && parse_hook(bad, true).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!(r#"{{"id": "{}"}}"#, "a".repeat(500));
        assert!(parse_hook(long.as_bytes(), true).is_err());
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn lua_escapes_the_token_and_filters_seg() {
        let lua = orthanc_lua("http://127.0.0.1:8765/", Some(&Secret::new("a'b\\c\nd")));
        assert!(lua.contains(r"'Bearer a\'b\\c\010d'"), "{lua}");
        assert!(lua.contains("tags['Modality'] == 'SEG'"));
        assert!(lua.contains("'http://127.0.0.1:8765'"));
        assert!(lua.contains("function OnDeletedSeries"));
    }
}
