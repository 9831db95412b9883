//! Datasets: create (with the optional DICOMweb probe), get, delete, and the dataset jobs
//! `notify` (the server's validation, the record, CL counting), `cacheimage` and
//! `nextimage` (a random unlabeled series from the dataset's DICOMweb server).

use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::emulator::dicomweb::Dicomweb;
use crate::emulator::reply::{err, new_id, not_found, object, Reply};
use crate::emulator::state::{AppState, StoredDataset};
use crate::monai::types::{DatasetSpec, ImageMeta, NextImage};

pub(super) async fn create_dataset(
    State(st): State<AppState>,
    Path(_org): Path<String>,
    body: Bytes,
) -> Reply {
    let m = object(&body)?;
    let spec: DatasetSpec = serde_json::from_value(Value::Object(m))
        .map_err(|e| err(StatusCode::BAD_REQUEST, 3, format!("Invalid dataset: {e}")))?;
    for (f, v) in [
        ("name", &spec.name),
        ("type", &spec.kind),
        ("format", &spec.format),
    ] {
        if v.is_empty() {
            return Err(err(
                StatusCode::BAD_REQUEST,
                3,
                format!("Invalid dataset: missing \"{f}\""),
            ));
        }
    }
    if st.cfg.probe_dicomweb {
        // with the dataset's credentials, as the real server reads it; the message names the
        // server (without credentials) and the status, never the secret
        let server = Dicomweb::of(&spec)
            .map_err(|e| err(StatusCode::BAD_REQUEST, 3, format!("Invalid dataset: {e}")))?;
        server.probe().await.map_err(|e| {
            err(
                StatusCode::BAD_REQUEST,
                3,
                format!("Unable to reach DICOMweb server {e}"),
            )
        })?;
    }
    let id = new_id();
    let ds = StoredDataset {
        spec,
        created: SystemTime::now(),
    };
    let answer = ds.answer(&id);
    st.emu
        .lock()
        .expect("emulator state")
        .datasets
        .insert(id, ds);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

pub(super) async fn get_dataset(
    State(st): State<AppState>,
    Path((_o, id)): Path<(String, String)>,
) -> Reply {
    let emu = st.emu.lock().expect("emulator state");
    emu.datasets
        .get(&id)
        .map(|d| Json(d.answer(&id)).into_response())
        .ok_or_else(|| not_found(format!("Dataset {id} not found")))
}

pub(super) async fn delete_dataset(
    State(st): State<AppState>,
    Path((_o, id)): Path<(String, String)>,
) -> Reply {
    let mut emu = st.emu.lock().expect("emulator state");
    emu.datasets
        .remove(&id)
        .map(|_| Json(json!({})).into_response())
        .ok_or_else(|| not_found(format!("Dataset {id} not found")))
}

/// The notify section rule: a list of entries or one entry, each with non-empty image and label.
fn notify_entries(section: &str, v: &Value) -> Result<Vec<(String, String)>, String> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        _ => return Err(format!("Invalid {section}: expected a list of entries")),
    };
    items
        .into_iter()
        .map(|e| {
            let field = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_string)
            };
            match (field("image"), field("label")) {
                (Some(i), Some(l)) => Ok((i, l)),
                _ => Err(format!(
                    "Invalid {section} entry: \"image\" and \"label\" are required"
                )),
            }
        })
        .collect()
}

pub(super) async fn dataset_job(
    State(st): State<AppState>,
    Path((_o, id)): Path<(String, String)>,
    body: Bytes,
) -> Reply {
    let m = object(&body)?;
    let action = m.get("action").and_then(Value::as_str).unwrap_or("");
    if action == "nextimage" {
        // the DICOMweb queries happen without holding the state lock
        let spec = {
            let emu = st.emu.lock().expect("emulator state");
            emu.datasets.get(&id).map(|ds| ds.spec.clone())
        };
        let spec = spec.ok_or_else(|| not_found(format!("Dataset {id} not found")))?;
        return next_image(&spec).await;
    }
    let mut emu = st.emu.lock().expect("emulator state");
    if !emu.datasets.contains_key(&id) {
        return Err(not_found(format!("Dataset {id} not found")));
    }
    let specs = m.get("specs").cloned().unwrap_or(Value::Null);
    match action {
        "notify" => {
            let specs = specs
                .as_object()
                .ok_or_else(|| not_found("Invalid notify: \"specs\" must be an object"))?;
            // the server only records and counts: which images are labeled is read from the
            // PACS (`nextimage`), never from these records
            let mut counted = Vec::new();
            for (section, v) in specs {
                if !["added", "updated", "removed"].contains(&section.as_str()) {
                    return Err(not_found(format!("Invalid notify section: {section}")));
                }
                let entries = notify_entries(section, v).map_err(not_found)?;
                if section != "removed" {
                    counted.extend(entries.into_iter().map(|(i, _)| i));
                }
            }
            let raw: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let ms = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            emu.notifications.push((id.clone(), raw, ms));
            let now = Instant::now();
            emu.tick(now, st.cfg.train_seconds);
            emu.count_images(&id, counted, now);
            Ok((StatusCode::CREATED, Json(json!({}))).into_response())
        }
        "cacheimage" => {
            let image = specs.get("image").and_then(Value::as_str).unwrap_or("");
            if image.is_empty() {
                return Err(not_found("Invalid cacheimage: \"image\" is required"));
            }
            Ok((StatusCode::CREATED, Json(json!({}))).into_response())
        }
        "nextimage" => unreachable!("handled before the lock"),
        other => Err(not_found(format!("Unsupported dataset action: {other:?}"))),
    }
}

/// `nextimage`, as the real server answers it: a random image series of the dataset (its
/// DICOMweb server, its filters) that no SEG series on that server labels. The notify records
/// play no part. A server that cannot be read is the server's generic 404, with the reason.
async fn next_image(ds: &DatasetSpec) -> Reply {
    let unreachable = |e: String| not_found(format!("Unable to query DICOMweb server {e}"));
    let server = Dicomweb::of(ds).map_err(|e| unreachable(format!("of the dataset: {e}")))?;
    let free = server
        .unlabeled(ds.filters_or_default())
        .await
        .map_err(unreachable)?;
    if free.is_empty() {
        return Err(not_found("No Unlabeled Images Found"));
    }
    let pick = &free[rand::random_range(0..free.len())];
    let unk = |tag: &str| Some(pick.text(tag).unwrap_or_else(|| "UNK".into()));
    let answer = NextImage {
        image: pick.series.clone(),
        meta: Some(ImageMeta {
            retrieve_url: Some(server.retrieve_url(&pick.study, &pick.series)),
            series_instance_uid: Some(pick.series.clone()),
            study_instance_uid: Some(pick.study.clone()),
            study_date: unk("00080020"),
            study_time: unk("00080030"),
            modality: unk("00080060"),
            patient_id: unk("00100020"),
            extra: Default::default(),
        }),
        extra: Default::default(),
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}
