//! The server's answers shared by every handler: its error body, JSON-object body parsing,
//! ids and `created_on` timestamps.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// A handler's answer: both sides are ready responses.
pub(super) type Reply = Result<Response, Response>;

/// The server's error body: `{"error_code": INT, "error_desc": "..."}`.
pub(super) fn err(status: StatusCode, code: i64, desc: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error_code": code, "error_desc": desc.into()})),
    )
        .into_response()
}

pub(super) fn not_found(desc: impl Into<String>) -> Response {
    err(StatusCode::NOT_FOUND, 2, desc)
}

pub(super) fn new_id() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub(super) fn created_str(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses a JSON object body, answering the server's error on anything else.
pub(super) fn object(body: &Bytes) -> Result<serde_json::Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(err(
            StatusCode::BAD_REQUEST,
            3,
            "Invalid request body: expected a JSON object",
        )),
        Err(e) => Err(err(
            StatusCode::BAD_REQUEST,
            3,
            format!("Invalid request body: {e}"),
        )),
    }
}
