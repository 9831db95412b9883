//! Experiments: the base-experiment catalogue, create (checking bases, datasets and workspace),
//! get, patch (`realtime_infer` cannot be turned back on) and delete.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::emulator::reply::{created_str, err, new_id, not_found, object, Reply};
use crate::emulator::state::AppState;

/// The base experiments the emulator offers (a small catalogue shaped like the real one).
fn base_experiments() -> Value {
    json!({"experiments": [
        {"id": "b7a3f2c0-0001-4000-8000-000000000001", "name": "VISTA-3D", "version": "0.5.4",
         "network_arch": "monai_vista3d", "description": "Versatile imaging segmentation (CT)"},
        {"id": "b7a3f2c0-0001-4000-8000-000000000002", "name": "VISTA-3D", "version": "0.5.8",
         "network_arch": "monai_vista3d", "description": "Versatile imaging segmentation (CT)"},
        {"id": "b7a3f2c0-0001-4000-8000-000000000003", "name": "SegResNet", "version": "1.0.0",
         "network_arch": "monai_segresnet", "description": "Generic 3D segmentation"}
    ]})
}

pub(super) async fn list_bases(Path(_org): Path<String>) -> Reply {
    Ok(Json(base_experiments()).into_response())
}

pub(super) async fn create_experiment(
    State(st): State<AppState>,
    Path(_org): Path<String>,
    body: Bytes,
) -> Reply {
    let mut m = object(&body)?;
    let mut emu = st.emu.lock().expect("emulator state");
    let name_ok = m
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if !name_ok {
        return Err(err(
            StatusCode::BAD_REQUEST,
            3,
            "Invalid experiment: missing \"name\"",
        ));
    }
    let bases = base_experiments();
    let base_ids: Vec<&str> = bases["experiments"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["id"].as_str()).collect())
        .unwrap_or_default();
    for b in m
        .get("base_experiment")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        if !b.as_str().is_some_and(|b| base_ids.contains(&b)) {
            return Err(not_found(format!("Base experiment {b} not found")));
        }
    }
    for key in ["train_datasets"] {
        for d in m
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            if !d.as_str().is_some_and(|d| emu.datasets.contains_key(d)) {
                return Err(not_found(format!("Dataset {d} not found")));
            }
        }
    }
    for key in ["eval_dataset", "inference_dataset"] {
        if let Some(d) = m.get(key).and_then(Value::as_str) {
            if !d.is_empty() && !emu.datasets.contains_key(d) {
                return Err(not_found(format!("Dataset {d} not found")));
            }
        }
    }
    if let Some(w) = m.get("workspace").and_then(Value::as_str) {
        if !emu.workspaces.contains_key(w) {
            return Err(not_found(format!("Workspace {w} not found")));
        }
    }
    let id = new_id();
    m.insert("id".into(), json!(id));
    m.insert("created_on".into(), json!(created_str(SystemTime::now())));
    let v = Value::Object(m);
    emu.experiments.insert(id, v.clone());
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub(super) async fn get_experiment(
    State(st): State<AppState>,
    Path((_o, id)): Path<(String, String)>,
) -> Reply {
    let emu = st.emu.lock().expect("emulator state");
    emu.experiments
        .get(&id)
        .map(|e| Json(e.clone()).into_response())
        .ok_or_else(|| not_found(format!("Experiment {id} not found")))
}

pub(super) async fn patch_experiment(
    State(st): State<AppState>,
    Path((_o, id)): Path<(String, String)>,
    body: Bytes,
) -> Reply {
    let m = object(&body)?;
    let mut emu = st.emu.lock().expect("emulator state");
    let e = emu
        .experiments
        .get_mut(&id)
        .ok_or_else(|| not_found(format!("Experiment {id} not found")))?;
    if let Some(v) = m.get("realtime_infer") {
        let was = e
            .get("realtime_infer")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if v.as_bool() == Some(true) && !was {
            return Err(not_found(
                "realtime_infer cannot be turned on again once it was turned off",
            ));
        }
        e["realtime_infer"] = v.clone();
    }
    Ok(Json(e.clone()).into_response())
}

pub(super) async fn delete_experiment(
    State(st): State<AppState>,
    Path((_o, id)): Path<(String, String)>,
) -> Reply {
    let mut emu = st.emu.lock().expect("emulator state");
    emu.experiments
        .remove(&id)
        .map(|_| Json(json!({})).into_response())
        .ok_or_else(|| not_found(format!("Experiment {id} not found")))
}
