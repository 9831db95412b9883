//! Workspaces: create (the cloud-specific validation; secrets kept, never echoed) and delete.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::emulator::reply::{err, new_id, not_found, object, Reply};
use crate::emulator::state::AppState;

pub(super) async fn create_workspace(
    State(st): State<AppState>,
    Path(_org): Path<String>,
    body: Bytes,
) -> Reply {
    let mut m = object(&body)?;
    let cloud = m.get("cloud_type").and_then(Value::as_str).unwrap_or("");
    if !["aws", "azure"].contains(&cloud) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            3,
            "Invalid workspace: cloud_type must be \"aws\" or \"azure\"",
        ));
    }
    if m.get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(err(
            StatusCode::BAD_REQUEST,
            3,
            "Invalid workspace: missing \"name\"",
        ));
    }
    let (account, secret) = if cloud == "azure" {
        ("account_name", "access_key")
    } else {
        ("access_key", "secret_key")
    };
    let details = m
        .get("cloud_specific_details")
        .cloned()
        .unwrap_or(Value::Null);
    for k in ["cloud_bucket_name", account, secret] {
        if details
            .get(k)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(err(
                StatusCode::BAD_REQUEST,
                3,
                format!("Invalid workspace: cloud_specific_details.{k} is required for {cloud}"),
            ));
        }
    }
    let id = new_id();
    m.insert("id".into(), json!(id));
    // secrets are stored, never echoed back
    if let Some(Value::Object(d)) = m.get_mut("cloud_specific_details") {
        d.retain(|k, _| k == "cloud_bucket_name" || k == "cloud_region");
    }
    let v = Value::Object(m);
    st.emu
        .lock()
        .expect("emulator state")
        .workspaces
        .insert(id, v.clone());
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub(super) async fn delete_workspace(
    State(st): State<AppState>,
    Path((_o, id)): Path<(String, String)>,
) -> Reply {
    let mut emu = st.emu.lock().expect("emulator state");
    emu.workspaces
        .remove(&id)
        .map(|_| Json(json!({})).into_response())
        .ok_or_else(|| not_found(format!("Workspace {id} not found")))
}
