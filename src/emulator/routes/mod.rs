//! The axum router: the MONAI API routes (behind the fault and token middleware) and the
//! `/_emulator/*` test routes, plus the notification and stats inspection handlers.

mod datasets;
mod experiments;
mod jobs;
mod workspaces;

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::login;
use super::faults::{add_fault, clear_faults, faults_and_auth};
use super::reply::not_found;
use super::state::{AppState, Emu};
use super::EmulatorConfig;
use datasets::{create_dataset, dataset_job, delete_dataset, get_dataset};
use experiments::{
    create_experiment, delete_experiment, get_experiment, list_bases, patch_experiment,
};
use jobs::{create_job, get_job, job_action, job_logs, list_jobs};
use workspaces::{create_workspace, delete_workspace};

/// Builds the router.
pub fn router(cfg: EmulatorConfig) -> Router {
    let state = AppState {
        cfg: Arc::new(cfg.clone()),
        emu: Arc::new(Mutex::new(Emu::default())),
    };
    let api = Router::new()
        .route("/api/v1/login", post(login))
        .route("/api/v1/orgs/{org}/datasets", post(create_dataset))
        .route(
            "/api/v1/orgs/{org}/datasets/{id}",
            get(get_dataset).delete(delete_dataset),
        )
        .route("/api/v1/orgs/{org}/datasets/{id}/jobs", post(dataset_job))
        .route("/api/v1/orgs/{org}/workspaces", post(create_workspace))
        .route(
            "/api/v1/orgs/{org}/workspaces/{id}",
            axum::routing::delete(delete_workspace),
        )
        .route("/api/v1/orgs/{org}/experiments:base", get(list_bases))
        .route("/api/v1/orgs/{org}/experiments", post(create_experiment))
        .route(
            "/api/v1/orgs/{org}/experiments/{id}",
            get(get_experiment)
                .patch(patch_experiment)
                .delete(delete_experiment),
        )
        .route(
            "/api/v1/orgs/{org}/experiments/{id}/jobs",
            get(list_jobs).post(create_job),
        )
        .route(
            "/api/v1/orgs/{org}/experiments/{id}/jobs/{job}",
            get(get_job).post(job_action),
        )
        .route(
            "/api/v1/orgs/{org}/experiments/{id}/jobs/{job}/logs",
            get(job_logs),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            faults_and_auth,
        ));
    Router::new()
        .route("/_emulator/notifications", get(notifications))
        .route("/_emulator/faults", post(add_fault).delete(clear_faults))
        .route("/_emulator/stats", get(stats))
        .merge(api)
        .fallback(|| async { not_found("Not Found") })
        .layer(axum::extract::DefaultBodyLimit::max(cfg.max_body))
        .with_state(state)
}

#[derive(Deserialize)]
struct NotifQuery {
    dataset: Option<String>,
    /// `timed=true`: `[{"received_ms": ..., "body": ...}]` instead of bodies only.
    #[serde(default)]
    timed: bool,
}

async fn notifications(State(st): State<AppState>, Query(q): Query<NotifQuery>) -> Response {
    let emu = st.emu.lock().expect("emulator state");
    let list: Vec<Value> = emu
        .notifications
        .iter()
        .filter(|(d, _, _)| q.dataset.as_ref().is_none_or(|x| x == d))
        .map(|(_, b, ms)| {
            if q.timed {
                json!({"received_ms": *ms as u64, "body": b})
            } else {
                b.clone()
            }
        })
        .collect();
    Json(list).into_response()
}

async fn stats(State(st): State<AppState>) -> Response {
    let emu = st.emu.lock().expect("emulator state");
    Json(
        json!({"calls": emu.calls, "notifications": emu.notifications.len(),
        "faults_queued": emu.faults.len(), "job_faults_queued": emu.job_faults.len()}),
    )
    .into_response()
}
