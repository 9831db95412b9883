//! A local MONAI Cloud API server that follows `shared/monai-api.md`: login with token TTLs,
//! datasets, workspaces, base experiments, experiments, the annotation (continual-learning) job
//! with its counting rule and train rounds, job status/logs/cancel/pause/resume, notify with the
//! server's validation, and the server's error bodies.
//!
//! For tests it also serves `GET /_emulator/notifications` (every accepted notify body, in order)
//! and `POST /_emulator/faults`: the next N API calls fail, hang or drop the connection
//! (`{"status": 500, "count": 3}`, see [`Fault`]), or the next N jobs of an action end in `Error`
//! (`{"job_error": {"action": "annotation"|"train", "message": "..."}}`, see [`JobFault`]), so a
//! client's error branch (the guide's `wait_for_job` seeing `Error`) can be exercised.
//! Job state advances with the clock, evaluated on every request, so there are no timers to leak.
//!
//! The pieces, by concern:
//! - `state`: the server's memory (datasets, experiments, jobs, notifications) and the
//!   continual-learning rules (image counting, train rounds, ticking with the clock);
//! - `routes`: the axum router and its handlers, one file per resource;
//! - `auth`: login and the bearer-token check;
//! - `faults`: the `/_emulator/faults` injection and the middleware that applies it;
//! - `dicomweb`: the dataset's DICOMweb server as the server reads it (the probe on create, the
//!   image and SEG series `nextimage` chooses from), with the dataset's credentials;
//! - `nrrd`: the realtime-inference answer (an NRRD label volume in a multipart body);
//! - `reply`: the server's error bodies and the small helpers every handler shares.
//!
//! Where the server reads or writes the shapes the client does (the dataset body, login, the
//! `nextimage` answer, job statuses and actions), it uses `monai::types`, the client's own types,
//! and nothing else of `monai`. Its validation stays the server's (more lenient where the
//! server is, as for notify sections).

// Handlers answer with a ready `Response` on both sides, as axum handlers do.
#![allow(clippy::result_large_err)]

mod auth;
mod dicomweb;
mod faults;
mod nrrd;
mod reply;
mod routes;
mod state;

use std::net::SocketAddr;
use std::time::Duration;

pub use routes::router;
pub use state::{Fault, JobFault};

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
