//! Login (API key → bearer token with a TTL) and the token check every API call passes.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::reply::{err, new_id, object, Reply};
use super::state::AppState;
use crate::monai::types::{LoginAnswer, LoginRequest};
use crate::util::Secret;

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
    let login = serde_json::from_value::<LoginRequest>(Value::Object(m)).ok();
    if login.is_none_or(|l| l.ngc_api_key.expose() != st.cfg.api_key) {
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
    let answer = LoginAnswer {
        token: Secret::new(token),
        user_id: Some("emulator-user".into()),
        extra: Default::default(),
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}
