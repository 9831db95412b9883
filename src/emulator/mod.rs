//! A local MONAI Cloud API server that follows `shared/monai-api.md`: login with token TTLs,
//! datasets, workspaces, base experiments, experiments, the annotation (continual-learning) job
//! with its counting rule and train rounds, job status/logs/cancel/pause/resume, notify with the
//! server's validation, and the server's error bodies.
//!
//! For tests it also serves `GET /_emulator/notifications` (every accepted notify body, in order)
//! and `POST /_emulator/faults` (the next N API calls fail, hang or drop the connection).
//! Job state advances with the clock, evaluated on every request, so there are no timers to leak.

// Handlers answer with a ready `Response` on both sides, as axum handlers do.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

/// How the emulator behaves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub api_key: String,
    pub token_ttl: Duration,
    pub train_seconds: f64,
    /// Probe a dataset's `client_url` on create (the real server does; off by default).
    pub probe_dicomweb: bool,
    /// Largest request body accepted.
    pub max_body: usize,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            api_key: "demo".into(),
            token_ttl: Duration::from_secs(24 * 3600),
            train_seconds: 5.0,
            probe_dicomweb: false,
            max_body: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Fault {
    /// Answer this status (with the server's error body) instead of processing.
    pub status: Option<u16>,
    /// How many API calls the fault applies to.
    #[serde(default = "one")]
    pub count: u32,
    /// Sleep this long before answering.
    pub delay_ms: Option<u64>,
    /// A `Retry-After` header (seconds) on the fault answer.
    pub retry_after: Option<u64>,
    /// Drop the connection mid-body instead of answering.
    #[serde(default)]
    pub drop: bool,
    /// Apply the delay or drop AFTER the request was processed (the server did the work, the
    /// client does not learn it).
    #[serde(default)]
    pub after_processing: bool,
    /// Only calls whose path contains this string.
    pub path_contains: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone)]
struct Job {
    id: String,
    experiment: String,
    action: String,
    status: String,
    created: SystemTime,
    specs: Value,
    result: Value,
    logs: Vec<String>,
    /// For train rounds: the CL job that started it, and its round number.
    parent: Option<String>,
    round: u32,
    started: Option<Instant>,
}

#[derive(Debug, Clone)]
struct ClState {
    job: String,
    round_size: usize,
    max_rounds: u32,
    key_metric: f64,
    pending_images: BTreeSet<String>,
    rounds_started: u32,
    rounds_done: u32,
    last_metric: Option<f64>,
}

#[derive(Default)]
struct Emu {
    tokens: HashMap<String, Instant>,
    datasets: HashMap<String, Value>,
    workspaces: HashMap<String, Value>,
    experiments: HashMap<String, Value>,
    jobs: HashMap<String, Job>,
    job_order: Vec<String>,
    cl: HashMap<String, ClState>,
    /// (dataset, body, unix milliseconds when received)
    notifications: Vec<(String, Value, u128)>,
    /// dataset → its DICOMweb credentials (kept, never echoed)
    dataset_secrets: HashMap<String, String>,
    /// dataset → image → its current label, as notify told it
    current_labels: HashMap<String, HashMap<String, String>>,
    faults: Vec<Fault>,
    calls: u64,
}

#[derive(Clone)]
struct AppState {
    cfg: Arc<EmulatorConfig>,
    emu: Arc<Mutex<Emu>>,
}

type Reply = Result<Response, Response>;

/// The server's error body: `{"error_code": INT, "error_desc": "..."}`.
fn err(status: StatusCode, code: i64, desc: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error_code": code, "error_desc": desc.into()})),
    )
        .into_response()
}

fn not_found(desc: impl Into<String>) -> Response {
    err(StatusCode::NOT_FOUND, 2, desc)
}

fn new_id() -> String {
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

fn created_str(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

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

/// A running emulator.
pub struct Running {
    pub addr: SocketAddr,
    pub handle: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Binds and serves on the current tokio runtime.
pub async fn spawn(listen: SocketAddr, cfg: EmulatorConfig) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = router(cfg);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("emulator stopped: {e}");
        }
    });
    Ok(Running { addr, handle })
}

async fn faults_and_auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let fault = {
        let mut emu = st.emu.lock().expect("emulator state");
        emu.calls += 1;
        let pos = emu.faults.iter().position(|f| {
            f.path_contains
                .as_ref()
                .is_none_or(|p| path.contains(p.as_str()))
        });
        pos.map(|i| {
            let f = emu.faults[i].clone();
            emu.faults[i].count -= 1;
            if emu.faults[i].count == 0 {
                emu.faults.remove(i);
            }
            f
        })
    };
    if let Some(f) = &fault {
        if !f.after_processing {
            if let Some(ms) = f.delay_ms {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if let Some(s) = f.status {
                let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut r = err(status, 500, format!("injected fault: HTTP {s}"));
                if let Some(ra) = f.retry_after {
                    r.headers_mut().insert("retry-after", HeaderValue::from(ra));
                }
                return r;
            }
            if f.drop {
                return dropped();
            }
        }
    }
    if path != "/api/v1/login" {
        if let Err(r) = check_token(&st, req.headers()) {
            return r;
        }
    }
    let resp = next.run(req).await;
    if let Some(f) = fault.filter(|f| f.after_processing) {
        if let Some(ms) = f.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if f.drop {
            return dropped();
        }
    }
    resp
}

/// A response whose body breaks off: the client sees the connection fail mid-body.
fn dropped() -> Response {
    let stream = futures_stream();
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn futures_stream() -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> {
    struct Broken(u8);
    impl futures_core::Stream for Broken {
        type Item = Result<Bytes, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            self.0 += 1;
            std::task::Poll::Ready(match self.0 {
                1 => Some(Ok(Bytes::from_static(b"{\"partial\": "))),
                _ => Some(Err(std::io::Error::other("injected: connection dropped"))),
            })
        }
    }
    Broken(0)
}

fn check_token(st: &AppState, headers: &HeaderMap) -> Result<(), Response> {
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

/// Parses a JSON object body, answering the server's error on anything else.
fn object(body: &Bytes) -> Result<serde_json::Map<String, Value>, Response> {
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

async fn login(State(st): State<AppState>, body: Bytes) -> Reply {
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

async fn create_dataset(
    State(st): State<AppState>,
    Path(_org): Path<String>,
    body: Bytes,
) -> Reply {
    let mut m = object(&body)?;
    for f in ["name", "type", "format"] {
        if m.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(err(
                StatusCode::BAD_REQUEST,
                3,
                format!("Invalid dataset: missing \"{f}\""),
            ));
        }
    }
    if st.cfg.probe_dicomweb {
        let url = m.get("client_url").and_then(Value::as_str).unwrap_or("");
        probe(url).await.map_err(|e| {
            err(
                StatusCode::BAD_REQUEST,
                3,
                format!("Unable to reach DICOMweb server {url}: {e}"),
            )
        })?;
    }
    let id = new_id();
    m.insert("id".into(), json!(id));
    let secret = m
        .remove("client_secret")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    m.insert("created_on".into(), json!(created_str(SystemTime::now())));
    let v = Value::Object(m);
    let mut emu = st.emu.lock().expect("emulator state");
    emu.dataset_secrets.insert(id.clone(), secret);
    emu.datasets.insert(id, v.clone());
    Ok((StatusCode::CREATED, Json(v)).into_response())
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

async fn get_dataset(State(st): State<AppState>, Path((_o, id)): Path<(String, String)>) -> Reply {
    let emu = st.emu.lock().expect("emulator state");
    emu.datasets
        .get(&id)
        .map(|d| Json(d.clone()).into_response())
        .ok_or_else(|| not_found(format!("Dataset {id} not found")))
}

async fn delete_dataset(
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

async fn dataset_job(
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
            emu.datasets.get(&id).cloned().map(|ds| {
                let secret = emu.dataset_secrets.get(&id).cloned().unwrap_or_default();
                let labeled: BTreeSet<String> = emu
                    .current_labels
                    .get(&id)
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                (ds, secret, labeled)
            })
        };
        let (ds, secret, labeled) =
            found.ok_or_else(|| not_found(format!("Dataset {id} not found")))?;
        return next_image(&ds, &secret, &labeled).await;
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
async fn next_image(ds: &Value, secret: &str, labeled: &BTreeSet<String>) -> Reply {
    let url = ds["client_url"]
        .as_str()
        .unwrap_or("")
        .trim_end_matches('/');
    if url.is_empty() {
        return Err(not_found("Dataset has no client_url"));
    }
    let filters = ds["filters"]
        .as_str()
        .filter(|f| !f.is_empty())
        .unwrap_or("Modality=CT");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| not_found(e.to_string()))?;
    let mut req = client
        .get(format!("{url}/series?{filters}&includefield=00080020&includefield=00080030&includefield=00100020"))
        .header("accept", "application/dicom+json");
    if let Some(user) = ds["client_id"].as_str().filter(|u| !u.is_empty()) {
        req = req.basic_auth(user, Some(secret));
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
    let tag = |v: &Value, t: &str| -> String {
        v[t]["Value"][0]
            .as_str()
            .map(str::to_string)
            .or_else(|| v[t]["Value"][0].as_object().map(|_| "UNK".to_string()))
            .unwrap_or_else(|| "UNK".into())
    };
    let free: Vec<&Value> = series
        .iter()
        .filter(|s| !labeled.contains(&tag(s, "0020000E")))
        .collect();
    if free.is_empty() {
        return Err(not_found("No Unlabeled Images Found"));
    }
    let pick = free[rand::random::<u64>() as usize % free.len()];
    let (se, st) = (tag(pick, "0020000E"), tag(pick, "0020000D"));
    Ok((
        StatusCode::CREATED,
        Json(json!({"image": se, "meta": {
            "SeriesInstanceUID": se, "StudyInstanceUID": st,
            "StudyDate": tag(pick, "00080020"), "StudyTime": tag(pick, "00080030"),
            "Modality": tag(pick, "00080060"), "PatientID": tag(pick, "00100020"),
            "RetrieveURL": format!("{url}/studies/{st}/series/{se}"),
        }})),
    )
        .into_response())
}

impl Emu {
    /// Adds notified images to every running CL job that trains on `dataset`, and starts a
    /// round each time `round_size` distinct images have been notified.
    fn count_images(&mut self, dataset: &str, images: Vec<String>, now: Instant) {
        let cls: Vec<String> = self
            .cl
            .keys()
            .filter(|cl| {
                let job = &self.jobs[*cl];
                job.status == "Running"
                    && self
                        .experiments
                        .get(&job.experiment)
                        .and_then(|e| e.get("train_datasets"))
                        .and_then(Value::as_array)
                        .is_some_and(|ds| ds.iter().any(|d| d.as_str() == Some(dataset)))
            })
            .cloned()
            .collect();
        for cl_id in cls {
            for img in &images {
                let start = {
                    let cl = self.cl.get_mut(&cl_id).expect("cl state");
                    cl.pending_images.insert(img.clone());
                    if cl.pending_images.len() >= cl.round_size && cl.rounds_started < cl.max_rounds
                    {
                        cl.pending_images.clear();
                        cl.rounds_started += 1;
                        Some(cl.rounds_started)
                    } else {
                        None
                    }
                };
                if let Some(round) = start {
                    self.start_round(&cl_id, round, now);
                }
            }
        }
    }

    fn start_round(&mut self, cl_id: &str, round: u32, now: Instant) {
        let exp = self.jobs[cl_id].experiment.clone();
        let id = new_id();
        let busy = self.jobs.values().any(|j| {
            j.parent.as_deref() == Some(cl_id) && (j.status == "Running" || j.status == "Pending")
        });
        let job = Job {
            id: id.clone(),
            experiment: exp,
            action: "train".into(),
            status: if busy { "Pending" } else { "Running" }.into(),
            created: SystemTime::now(),
            specs: self.jobs[cl_id]
                .specs
                .get("train_spec")
                .cloned()
                .unwrap_or(json!({})),
            result: json!({}),
            logs: vec![format!(
                "round {round}: started by continual-learning job {cl_id}"
            )],
            parent: Some(cl_id.to_string()),
            round,
            started: if busy { None } else { Some(now) },
        };
        self.job_order.push(id.clone());
        self.jobs.insert(id, job);
        if let Some(cl) = self.jobs.get_mut(cl_id) {
            cl.logs.push(format!("round {round} started"));
        }
    }

    /// Advances train rounds whose time has come, and CL jobs whose rounds are done.
    fn tick(&mut self, now: Instant, train_seconds: f64) {
        let dur = Duration::from_secs_f64(train_seconds.max(0.0));
        let ids = self.job_order.clone();
        for id in &ids {
            let (done, parent, round) = {
                let j = &self.jobs[id];
                (
                    j.action == "train"
                        && j.status == "Running"
                        && j.started.is_some_and(|s| now.duration_since(s) >= dur),
                    j.parent.clone(),
                    j.round,
                )
            };
            if !done {
                continue;
            }
            let metric = (0.55 + 0.1 * round as f64).min(0.99);
            let metric = (metric * 1000.0).round() / 1000.0;
            if let Some(j) = self.jobs.get_mut(id) {
                j.status = "Done".into();
                j.result = json!({"key_metric": metric, "epochs_done": j.specs.get("epochs").cloned().unwrap_or(json!(1))});
                j.logs
                    .push(format!("round {round}: done, key metric {metric}"));
            }
            let Some(cl_id) = parent else { continue };
            let finished = {
                let Some(cl) = self.cl.get_mut(&cl_id) else {
                    continue;
                };
                cl.rounds_done += 1;
                cl.last_metric = Some(metric);
                cl.rounds_done >= cl.max_rounds || metric >= cl.key_metric
            };
            let (rounds_done, last) = {
                let cl = &self.cl[&cl_id];
                (cl.rounds_done, cl.last_metric)
            };
            if let Some(clj) = self.jobs.get_mut(&cl_id) {
                clj.result = json!({"rounds": rounds_done, "key_metric": last});
                clj.logs
                    .push(format!("round {round} done: key metric {metric}"));
                if finished && clj.status == "Running" {
                    clj.status = "Done".into();
                    clj.logs.push("stop criteria reached: done".into());
                }
            }
            // start the next queued round of this CL job
            if let Some(next) = self
                .job_order
                .iter()
                .find(|q| {
                    let j = &self.jobs[*q];
                    j.parent.as_deref() == Some(cl_id.as_str()) && j.status == "Pending"
                })
                .cloned()
            {
                if let Some(j) = self.jobs.get_mut(&next) {
                    j.status = "Running".into();
                    j.started = Some(now);
                }
            }
        }
    }
}

async fn create_workspace(
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

async fn delete_workspace(
    State(st): State<AppState>,
    Path((_o, id)): Path<(String, String)>,
) -> Reply {
    let mut emu = st.emu.lock().expect("emulator state");
    emu.workspaces
        .remove(&id)
        .map(|_| Json(json!({})).into_response())
        .ok_or_else(|| not_found(format!("Workspace {id} not found")))
}

async fn list_bases(Path(_org): Path<String>) -> Reply {
    Ok(Json(base_experiments()).into_response())
}

async fn create_experiment(
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

async fn get_experiment(
    State(st): State<AppState>,
    Path((_o, id)): Path<(String, String)>,
) -> Reply {
    let emu = st.emu.lock().expect("emulator state");
    emu.experiments
        .get(&id)
        .map(|e| Json(e.clone()).into_response())
        .ok_or_else(|| not_found(format!("Experiment {id} not found")))
}

async fn patch_experiment(
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

async fn delete_experiment(
    State(st): State<AppState>,
    Path((_o, id)): Path<(String, String)>,
) -> Reply {
    let mut emu = st.emu.lock().expect("emulator state");
    emu.experiments
        .remove(&id)
        .map(|_| Json(json!({})).into_response())
        .ok_or_else(|| not_found(format!("Experiment {id} not found")))
}

async fn create_job(
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
                    key_metric: stop
                        .get("key_metric")
                        .and_then(Value::as_f64)
                        .unwrap_or(1.0),
                    pending_images: BTreeSet::new(),
                    rounds_started: 0,
                    rounds_done: 0,
                    last_metric: None,
                },
            );
            let job = Job {
                id: id.clone(),
                experiment: exp,
                action: "annotation".into(),
                status: "Running".into(),
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
    let (nx, ny, nz) = (16usize, 16usize, 4usize);
    let mut vol = vec![0u8; nx * ny * nz];
    for (k, c) in classes.iter().enumerate() {
        let x0 = (k * 5) % 12;
        for z in 0..nz {
            for y in 2..6 {
                for x in x0..(x0 + 4).min(nx) {
                    vol[z * nx * ny + y * nx + x] = *c;
                }
            }
        }
    }
    for (p, l) in points.iter().zip(&point_labels) {
        let a = p.as_array().cloned().unwrap_or_default();
        let idx = |i: usize, n: usize| (a[i].as_f64().unwrap_or(0.0).max(0.0) as usize).min(n - 1);
        let (x, y, z) = (idx(0, nx), idx(1, ny), idx(2, nz));
        if l.as_i64().unwrap_or(0) > 0 {
            vol[z * nx * ny + y * nx + x] = classes.first().copied().unwrap_or(1);
        }
    }
    let mut nrrd = format!(
        "NRRD0004\n# label volume from the segbridge MONAI API emulator for image {image}\n\
         type: uint8\ndimension: 3\nspace: left-posterior-superior\nsizes: {nx} {ny} {nz}\n\
         space directions: (1,0,0) (0,1,0) (0,0,2.5)\nspace origin: (0,0,0)\n\
         encoding: raw\nendian: little\n\n"
    )
    .into_bytes();
    nrrd.extend_from_slice(&vol);
    let boundary = format!("emu{:016x}", rand::random::<u64>());
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\
             Content-Type: application/json\r\n\r\n{}\r\n",
            json!({"image": image, "label_prompt": classes, "points": points.len()})
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"label.nrrd\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&nrrd);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(Response::builder()
        .status(StatusCode::CREATED)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

fn job_json(j: &Job, cl: Option<&ClState>) -> Value {
    let mut v = json!({
        "id": j.id, "experiment_id": j.experiment, "action": j.action, "status": j.status,
        "created_on": created_str(j.created), "specs": j.specs, "result": j.result,
    });
    if let Some(p) = &j.parent {
        v["parent_id"] = json!(p);
        v["round"] = json!(j.round);
    }
    if let Some(cl) = cl {
        v["result"]["images_pending"] = json!(cl.pending_images.len());
        v["result"]["round_size"] = json!(cl.round_size);
        v["result"]["rounds_started"] = json!(cl.rounds_started);
        debug_assert_eq!(cl.job, j.id);
    }
    v
}

async fn list_jobs(State(st): State<AppState>, Path((_o, exp)): Path<(String, String)>) -> Reply {
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

async fn get_job(
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

async fn job_logs(
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
async fn job_action(
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
    let terminal = ["Done", "Error", "Canceled"].contains(&status.as_str());
    let new_status = match action {
        "cancel" if !terminal => "Canceled",
        "pause" if status == "Running" => "Paused",
        "resume" if status == "Paused" => "Running",
        "cancel" | "pause" | "resume" => {
            return Err(not_found(format!("Job {job} is {status}: cannot {action}")))
        }
        other => return Err(not_found(format!("Unsupported job action: {other}"))),
    };
    let children: Vec<String> = if action == "cancel" {
        emu.jobs
            .values()
            .filter(|j| {
                j.parent.as_deref() == Some(job)
                    && !["Done", "Error", "Canceled"].contains(&j.status.as_str())
            })
            .map(|j| j.id.clone())
            .collect()
    } else {
        vec![]
    };
    for c in children {
        if let Some(j) = emu.jobs.get_mut(&c) {
            j.status = "Canceled".into();
        }
    }
    if let Some(j) = emu.jobs.get_mut(job) {
        j.status = new_status.into();
        j.logs.push(format!("{action} requested: now {new_status}"));
    }
    Ok(Json(json!({})).into_response())
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

async fn add_fault(State(st): State<AppState>, body: Bytes) -> Reply {
    let f: Fault = serde_json::from_slice(&body)
        .map_err(|e| err(StatusCode::BAD_REQUEST, 3, format!("Invalid fault: {e}")))?;
    if f.count == 0 {
        return Ok(Json(json!({"queued": 0})).into_response());
    }
    let mut emu = st.emu.lock().expect("emulator state");
    emu.faults.push(f);
    Ok(Json(json!({"queued": emu.faults.len()})).into_response())
}

async fn clear_faults(State(st): State<AppState>) -> Response {
    st.emu.lock().expect("emulator state").faults.clear();
    Json(json!({})).into_response()
}

async fn stats(State(st): State<AppState>) -> Response {
    let emu = st.emu.lock().expect("emulator state");
    Json(
        json!({"calls": emu.calls, "notifications": emu.notifications.len(),
        "faults_queued": emu.faults.len()}),
    )
    .into_response()
}
