//! Datasets: create (with the optional DICOMweb probe), get, delete, and the dataset jobs
//! `notify` (the server's validation, current labels, CL counting), `cacheimage` and
//! `nextimage` (a random unlabeled series from the dataset's DICOMweb server).

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

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
        let url = &spec.client_url;
        probe(url).await.map_err(|e| {
            err(
                StatusCode::BAD_REQUEST,
                3,
                format!("Unable to reach DICOMweb server {url}: {e}"),
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

async fn probe(url: &str) -> Result<(), String> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let r = c
        .get(format!("{}/studies?limit=1", url.trim_end_matches('/')))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().is_success() || r.status() == StatusCode::NO_CONTENT {
        Ok(())
    } else {
        Err(format!("HTTP {}", r.status()))
    }
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
        // the DICOMweb query happens without holding the state lock
        let found = {
            let emu = st.emu.lock().expect("emulator state");
            emu.datasets.get(&id).map(|ds| {
                let labeled: BTreeSet<String> = emu
                    .current_labels
                    .get(&id)
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                (ds.spec.clone(), labeled)
            })
        };
        let (ds, labeled) = found.ok_or_else(|| not_found(format!("Dataset {id} not found")))?;
        return next_image(&ds, &labeled).await;
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
            let mut counted = Vec::new();
            let mut sections = Vec::new();
            for (section, v) in specs {
                if !["added", "updated", "removed"].contains(&section.as_str()) {
                    return Err(not_found(format!("Invalid notify section: {section}")));
                }
                let entries = notify_entries(section, v).map_err(not_found)?;
                if section != "removed" {
                    counted.extend(entries.iter().map(|(i, _)| i.clone()));
                }
                sections.push((section.clone(), entries));
            }
            let labels = emu.current_labels.entry(id.clone()).or_default();
            for (section, entries) in sections {
                for (image, label) in entries {
                    if section == "removed" {
                        if labels.get(&image) == Some(&label) {
                            labels.remove(&image);
                        }
                    } else {
                        labels.insert(image, label);
                    }
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

/// `nextimage`: a random image series of the dataset (its DICOMweb server, its filters) that
/// has no current label.
async fn next_image(ds: &DatasetSpec, labeled: &BTreeSet<String>) -> Reply {
    let url = ds.client_url.trim_end_matches('/');
    if url.is_empty() {
        return Err(not_found("Dataset has no client_url"));
    }
    let filters = ds.filters_or_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| not_found(e.to_string()))?;
    let mut req = client
        .get(format!("{url}/series?{filters}&includefield=00080020&includefield=00080030&includefield=00100020"))
        .header("accept", "application/dicom+json");
    if let Some(user) = ds.client_id.as_deref().filter(|u| !u.is_empty()) {
        let secret = ds.client_secret.as_ref().map(|s| s.expose().to_string());
        req = req.basic_auth(user, Some(secret.unwrap_or_default()));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| not_found(format!("Unable to query DICOMweb server {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(not_found(format!(
            "DICOMweb server {url} answered HTTP {}",
            resp.status()
        )));
    }
    let text = resp.text().await.unwrap_or_default();
    let series: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
    use dicom_dictionary_std::tags;
    let tag = |v: &Value, t: dicom_core::Tag| -> String {
        // the DICOM JSON key: eight upper-case hex digits
        let t = format!("{:04X}{:04X}", t.group(), t.element());
        let t = t.as_str();
        v[t]["Value"][0]
            .as_str()
            .map(str::to_string)
            .or_else(|| v[t]["Value"][0].as_object().map(|_| "UNK".to_string()))
            .unwrap_or_else(|| "UNK".into())
    };
    let free: Vec<&Value> = series
        .iter()
        .filter(|s| !labeled.contains(&tag(s, tags::SERIES_INSTANCE_UID)))
        .collect();
    if free.is_empty() {
        return Err(not_found("No Unlabeled Images Found"));
    }
    let pick = free[rand::random::<u64>() as usize % free.len()];
    let (se, st) = (
        tag(pick, tags::SERIES_INSTANCE_UID),
        tag(pick, tags::STUDY_INSTANCE_UID),
    );
    let answer = NextImage {
        image: se.clone(),
        meta: Some(ImageMeta {
            retrieve_url: Some(format!("{url}/studies/{st}/series/{se}")),
            series_instance_uid: Some(se),
            study_instance_uid: Some(st),
            study_date: Some(tag(pick, tags::STUDY_DATE)),
            study_time: Some(tag(pick, tags::STUDY_TIME)),
            modality: Some(tag(pick, tags::MODALITY)),
            patient_id: Some(tag(pick, tags::PATIENT_ID)),
            extra: Default::default(),
        }),
        extra: Default::default(),
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}
