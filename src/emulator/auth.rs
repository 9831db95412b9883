//! Login (API key → bearer token with a TTL) and the token check every API call passes.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::reply::{err, new_id, object, Reply};
use super::state::AppState;

pub(super) fn check_token(st: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let unauthorized = || {
        err(
            StatusCode::UNAUTHORIZED,
            1,
            "Unauthorized: Credentials error: Invalid or expired token",
        )
    };
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let emu = st.emu.lock().expect("emulator state");
    match emu.tokens.get(token) {
        Some(exp) if *exp > Instant::now() => Ok(()),
        _ => Err(unauthorized()),
    }
}

pub(super) async fn login(State(st): State<AppState>, body: Bytes) -> Reply {
    let m = object(&body)?;
    let key = m.get("ngc_api_key").and_then(Value::as_str).unwrap_or("");
    if key != st.cfg.api_key {
        return Err(err(
            StatusCode::UNAUTHORIZED,
            1,
            "Unauthorized: Credentials error: Invalid NGC_API_KEY",
        ));
    }
    let token = format!("emu-{}", new_id());
    let mut emu = st.emu.lock().expect("emulator state");
    let ttl = st.cfg.token_ttl;
    emu.tokens.insert(token.clone(), Instant::now() + ttl);
    Ok((
        StatusCode::CREATED,
        Json(json!({"user_id": "emulator-user", "token": token})),
    )
        .into_response())
}
