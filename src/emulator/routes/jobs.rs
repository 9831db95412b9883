//! Experiment jobs: create (the `annotation` continual-learning job, or synchronous realtime
//! `inference`), list, get, logs, and `:cancel` / `:pause` / `:resume`.

use std::collections::BTreeSet;
use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::emulator::nrrd::inference_answer;
use crate::emulator::reply::{new_id, not_found, object, Reply};
use crate::emulator::state::{job_json, AppState, ClState, Emu, Job};
use crate::monai::types::{JobAction, JobStatus};

pub(super) async fn create_job(
    State(st): State<AppState>,
    Path((_o, exp)): Path<(String, String)>,
    body: Bytes,
) -> Reply {
    let m = object(&body)?;
    let mut emu = st.emu.lock().expect("emulator state");
    if !emu.experiments.contains_key(&exp) {
        return Err(not_found(format!("Experiment {exp} not found")));
    }
    let action = m.get("action").and_then(Value::as_str).unwrap_or("");
    let specs = m.get("specs").cloned().unwrap_or(json!({}));
    match action {
        "annotation" => {
            let round_size = specs.get("round_size").and_then(Value::as_u64).unwrap_or(0);
            if round_size == 0 {
                return Err(not_found(
                    "Invalid annotation specs: round_size must be a positive integer",
                ));
            }
            let stop = specs.get("stop_criteria").cloned().unwrap_or(json!({}));
            if let Some(o) = stop.as_object() {
                if let Some(k) = o.keys().find(|k| *k != "max_rounds" && *k != "key_metric") {
                    return Err(not_found(format!("Invalid stop_criteria key: {k}")));
                }
            }
            let id = new_id();
            emu.cl.insert(
                id.clone(),
                ClState {
                    job: id.clone(),
                    round_size: round_size as usize,
                    max_rounds: stop.get("max_rounds").and_then(Value::as_u64).unwrap_or(1) as u32,
                    key_metric: stop.get("key_metric").and_then(Value::as_f64),
                    pending_images: BTreeSet::new(),
                    rounds_started: 0,
                    rounds_done: 0,
                    last_metric: None,
                },
            );
            let job = Job {
                id: id.clone(),
                experiment: exp,
                action: JobAction::Annotation,
                status: JobStatus::Running,
                created: SystemTime::now(),
                specs,
                result: json!({"rounds": 0}),
                logs: vec![format!(
                    "continual learning started, round size {round_size}"
                )],
                parent: None,
                round: 0,
                started: Some(Instant::now()),
            };
            emu.job_order.push(id.clone());
            emu.jobs.insert(id.clone(), job);
            Ok((StatusCode::CREATED, Json(json!(id))).into_response())
        }
        "inference" => inference(&emu, &exp, &specs),
        other => Err(not_found(format!(
            "Unsupported experiment action: {other:?}"
        ))),
    }
}

/// Realtime inference: validates the specs and answers synchronously with a multipart body whose
/// `.nrrd` part is a small, valid label volume (the prompted classes drawn as blocks).
fn inference(emu: &Emu, exp: &str, specs: &Value) -> Reply {
    let e = &emu.experiments[exp];
    if !e
        .get("realtime_infer")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Err(not_found(
            "Realtime inference is not enabled for this experiment",
        ));
    }
    let image = specs.get("image").and_then(Value::as_str).unwrap_or("");
    if image.is_empty() {
        return Err(not_found("Invalid inference specs: \"image\" is required"));
    }
    let params = specs.get("bundle_params").cloned().unwrap_or(json!({}));
    let mut classes: Vec<u8> = Vec::new();
    if let Some(lp) = params.get("label_prompt") {
        for v in lp.as_array().cloned().unwrap_or_default() {
            match v.as_u64() {
                Some(c) if (1..=132).contains(&c) => classes.push(c as u8),
                _ => {
                    return Err(not_found(format!(
                        "Invalid label_prompt value {v}: expected 1..132"
                    )))
                }
            }
        }
    }
    let points = params
        .get("points")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let point_labels = params
        .get("point_labels")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if points.len() != point_labels.len() {
        return Err(not_found(
            "Invalid inference specs: points and point_labels differ in length",
        ));
    }
    for p in &points {
        if p.as_array()
            .is_none_or(|a| a.len() != 3 || a.iter().any(|x| !x.is_number()))
        {
            return Err(not_found(format!("Invalid point {p}: expected [x, y, z]")));
        }
    }
    if classes.is_empty() && points.is_empty() {
        classes.push(1);
    }
    Ok(inference_answer(image, &classes, &points, &point_labels))
}

pub(super) async fn list_jobs(
    State(st): State<AppState>,
    Path((_o, exp)): Path<(String, String)>,
) -> Reply {
    let mut emu = st.emu.lock().expect("emulator state");
    if !emu.experiments.contains_key(&exp) {
        return Err(not_found(format!("Experiment {exp} not found")));
    }
    emu.tick(Instant::now(), st.cfg.train_seconds);
    let jobs: Vec<Value> = emu
        .job_order
        .iter()
        .map(|id| &emu.jobs[id])
        .filter(|j| j.experiment == exp)
        .map(|j| job_json(j, emu.cl.get(&j.id)))
        .collect();
    Ok(Json(json!({ "jobs": jobs })).into_response())
}

pub(super) async fn get_job(
    State(st): State<AppState>,
    Path((_o, exp, job)): Path<(String, String, String)>,
) -> Reply {
    let mut emu = st.emu.lock().expect("emulator state");
    emu.tick(Instant::now(), st.cfg.train_seconds);
    match emu.jobs.get(&job) {
        Some(j) if j.experiment == exp => Ok(Json(job_json(j, emu.cl.get(&j.id))).into_response()),
        _ => Err(not_found(format!("Job {job} not found"))),
    }
}

pub(super) async fn job_logs(
    State(st): State<AppState>,
    Path((_o, exp, job)): Path<(String, String, String)>,
) -> Reply {
    let mut emu = st.emu.lock().expect("emulator state");
    emu.tick(Instant::now(), st.cfg.train_seconds);
    match emu.jobs.get(&job) {
        Some(j) if j.experiment == exp => Ok((
            [("content-type", "text/plain; charset=utf-8")],
            j.logs.join("\n") + "\n",
        )
            .into_response()),
        _ => Err(not_found(format!("Job {job} not found"))),
    }
}

/// `POST .../jobs/{job}:cancel|:pause|:resume`
pub(super) async fn job_action(
    State(st): State<AppState>,
    Path((_o, exp, job_action)): Path<(String, String, String)>,
) -> Reply {
    let (job, action) = job_action
        .rsplit_once(':')
        .ok_or_else(|| not_found(format!("Unsupported job action on {job_action}")))?;
    let mut emu = st.emu.lock().expect("emulator state");
    emu.tick(Instant::now(), st.cfg.train_seconds);
    let status = match emu.jobs.get(job) {
        Some(j) if j.experiment == exp => j.status.clone(),
        _ => return Err(not_found(format!("Job {job} not found"))),
    };
    let new_status = match action {
        "cancel" if !status.is_terminal() => JobStatus::Canceled,
        "pause" if status == JobStatus::Running => JobStatus::Paused,
        "resume" if status == JobStatus::Paused => JobStatus::Running,
        "cancel" | "pause" | "resume" => {
            return Err(not_found(format!("Job {job} is {status}: cannot {action}")))
        }
        other => return Err(not_found(format!("Unsupported job action: {other}"))),
    };
    // only the job named: cancelling a CL job leaves its running train round alone, which the
    // guide then cancels itself ("cancel the train job if not Done"), as on the real service
    if let Some(j) = emu.jobs.get_mut(job) {
        j.logs.push(format!("{action} requested: now {new_status}"));
        j.status = new_status;
    }
    Ok(Json(json!({})).into_response())
}
