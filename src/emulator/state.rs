//! The emulator's memory: datasets, workspaces, experiments, jobs, accepted notifications,
//! tokens and queued faults; the continual-learning rules (counting notified images, starting
//! train rounds, advancing them with the clock); and a job's JSON shape.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::{json, Value};

use super::reply::{created_str, new_id};
use super::EmulatorConfig;
use crate::monai::types::{DatasetSpec, JobAction, JobStatus};

/// A queued fault, as `POST /_emulator/faults` takes it (see `faults`).
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
    /// Not a fault of the HTTP calls: the next `count` jobs it names end in `Error` (see
    /// [`JobFault`]). It takes no other field but `count`.
    pub job_error: Option<JobFault>,
}

/// `{"job_error": {"action": "annotation"|"train", "message": "...", "job": ID}}`: the next time
/// the emulator advances jobs (any job call or notify), the oldest unfinished job of `action`
/// (or the job `job`, when given) ends in `Error`. Its answer stays a 200 with
/// `"status": "Error"` and carries the message in `result.detailed_status.message`; its logs end
/// with it. A failed train round leaves its continual-learning job running (the next queued
/// round starts); a failed continual-learning job leaves its train rounds alone, as cancelling
/// it does. A fault that finds no unfinished job waits for one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFault {
    /// `annotation` (the continual-learning job) or `train` (a round it started).
    pub action: JobAction,
    /// Why the job failed, as its answer and its logs will say.
    pub message: String,
    /// Only this job.
    #[serde(default)]
    pub job: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) id: String,
    pub(super) experiment: String,
    pub(super) action: JobAction,
    pub(super) status: JobStatus,
    pub(super) created: SystemTime,
    pub(super) specs: Value,
    pub(super) result: Value,
    pub(super) logs: Vec<String>,
    /// For train rounds: the CL job that started it, and its round number.
    pub(super) parent: Option<String>,
    pub(super) round: u32,
    pub(super) started: Option<Instant>,
}

#[derive(Debug, Clone)]
pub(super) struct ClState {
    pub(super) job: String,
    pub(super) round_size: usize,
    pub(super) max_rounds: u32,
    pub(super) key_metric: Option<f64>,
    pub(super) pending_images: BTreeSet<String>,
    pub(super) rounds_started: u32,
    pub(super) rounds_done: u32,
    pub(super) last_metric: Option<f64>,
}

#[derive(Default)]
pub(super) struct Emu {
    pub(super) tokens: HashMap<String, Instant>,
    pub(super) datasets: HashMap<String, StoredDataset>,
    pub(super) workspaces: HashMap<String, Value>,
    pub(super) experiments: HashMap<String, Value>,
    pub(super) jobs: HashMap<String, Job>,
    pub(super) job_order: Vec<String>,
    pub(super) cl: HashMap<String, ClState>,
    /// (dataset, body, unix milliseconds when received)
    pub(super) notifications: Vec<(String, Value, u128)>,
    pub(super) faults: Vec<Fault>,
    /// Queued job failures, with how many jobs each still fails.
    pub(super) job_faults: Vec<(JobFault, u32)>,
    pub(super) calls: u64,
}

/// A dataset as created: the body as sent (its DICOMweb credentials kept, never echoed).
#[derive(Debug, Clone)]
pub(super) struct StoredDataset {
    pub(super) spec: DatasetSpec,
    pub(super) created: SystemTime,
}

impl StoredDataset {
    /// What the server answers for it: the body without its secret, the id, `created_on`.
    pub(super) fn answer(&self, id: &str) -> Value {
        let public = DatasetSpec {
            client_secret: None,
            ..self.spec.clone()
        };
        let mut v = serde_json::to_value(public).unwrap_or_else(|_| json!({}));
        v["id"] = json!(id);
        v["created_on"] = json!(created_str(self.created));
        v
    }
}

#[derive(Clone)]
pub(super) struct AppState {
    pub(super) cfg: Arc<EmulatorConfig>,
    pub(super) emu: Arc<Mutex<Emu>>,
}

impl Emu {
    /// Adds notified images to every running CL job that trains on `dataset`, and starts a
    /// round each time `round_size` distinct images have been notified.
    pub(super) fn count_images(&mut self, dataset: &str, images: Vec<String>, now: Instant) {
        let cls: Vec<String> = self
            .cl
            .keys()
            .filter(|cl| {
                let job = &self.jobs[*cl];
                job.status == JobStatus::Running
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
            j.parent.as_deref() == Some(cl_id)
                && matches!(j.status, JobStatus::Running | JobStatus::Pending)
        });
        let job = Job {
            id: id.clone(),
            experiment: exp,
            action: JobAction::Train,
            status: if busy {
                JobStatus::Pending
            } else {
                JobStatus::Running
            },
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
    pub(super) fn tick(&mut self, now: Instant, train_seconds: f64) {
        self.apply_job_faults(now);
        let dur = Duration::from_secs_f64(train_seconds.max(0.0));
        let ids = self.job_order.clone();
        for id in &ids {
            let (done, parent, round) = {
                let j = &self.jobs[id];
                (
                    j.action == JobAction::Train
                        && j.status == JobStatus::Running
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
                j.status = JobStatus::Done;
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
                cl.rounds_done >= cl.max_rounds || cl.key_metric.is_some_and(|k| metric >= k)
            };
            let (rounds_done, last) = {
                let cl = &self.cl[&cl_id];
                (cl.rounds_done, cl.last_metric)
            };
            if let Some(clj) = self.jobs.get_mut(&cl_id) {
                // fields set one by one: a failed CL job keeps its `detailed_status`
                clj.result["rounds"] = json!(rounds_done);
                clj.result["key_metric"] = json!(last);
                clj.logs
                    .push(format!("round {round} done: key metric {metric}"));
                if finished && clj.status == JobStatus::Running {
                    clj.status = JobStatus::Done;
                    clj.logs.push("stop criteria reached: done".into());
                }
            }
            self.start_next_round(&cl_id, now);
        }
    }

    /// Starts the oldest queued (Pending) round of a CL job.
    fn start_next_round(&mut self, cl_id: &str, now: Instant) {
        let running = self
            .jobs
            .values()
            .any(|j| j.parent.as_deref() == Some(cl_id) && j.status == JobStatus::Running);
        if running {
            return;
        }
        let next = self
            .job_order
            .iter()
            .find(|q| {
                let j = &self.jobs[*q];
                j.parent.as_deref() == Some(cl_id) && j.status == JobStatus::Pending
            })
            .cloned();
        if let Some(j) = next.and_then(|n| self.jobs.get_mut(&n)) {
            j.status = JobStatus::Running;
            j.started = Some(now);
        }
    }

    /// Fails the jobs that queued `job_error` faults name (see [`JobFault`]).
    fn apply_job_faults(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.job_faults.len() {
            let f = &self.job_faults[i].0;
            let target = self
                .job_order
                .iter()
                .find(|id| {
                    let j = &self.jobs[*id];
                    j.action == f.action
                        && !j.status.is_terminal()
                        && f.job.as_ref().is_none_or(|x| x == *id)
                })
                .cloned();
            let Some(id) = target else {
                i += 1;
                continue;
            };
            let message = f.message.clone();
            self.fail(&id, &message, now);
            self.job_faults[i].1 -= 1;
            if self.job_faults[i].1 == 0 {
                self.job_faults.remove(i);
            }
        }
    }

    /// The job ends in `Error`, saying why in its result and its logs.
    fn fail(&mut self, id: &str, message: &str, now: Instant) {
        let Some(j) = self.jobs.get_mut(id) else {
            return;
        };
        j.status = JobStatus::Error;
        j.result["detailed_status"] = json!({"status": "FAILURE", "message": message});
        j.logs.push(format!("error: {message}"));
        let (parent, round) = (j.parent.clone(), j.round);
        if let Some(cl_id) = parent {
            if let Some(clj) = self.jobs.get_mut(&cl_id) {
                clj.logs.push(format!("round {round} failed: {message}"));
            }
            self.start_next_round(&cl_id, now);
        }
    }
}

pub(super) fn job_json(j: &Job, cl: Option<&ClState>) -> Value {
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
