//! Experiment jobs: the `annotation` (continual-learning) and `inference` requests, a job as the
//! server answers it (status, action, specs, result), and the job controls.

use serde::{Deserialize, Serialize};

use super::{open_enum, Extra};

open_enum! {
    /// A job's status. The contract lists nine; any other spelling is kept in `Other`.
    JobStatus, Other {
        Pending = "Pending",
        Running = "Running",
        Done = "Done",
        Error = "Error",
        Canceled = "Canceled",
        Canceling = "Canceling",
        Pausing = "Pausing",
        Paused = "Paused",
        Resuming = "Resuming",
    }
}

impl JobStatus {
    /// Done, Error or Canceled: the job will not change any more.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Error | JobStatus::Canceled
        )
    }
}

open_enum! {
    /// What a job does: the continual-learning job (`annotation`), a training round it started
    /// (`train`), realtime `inference`; any other action is kept in `Other`.
    JobAction, Other {
        Annotation = "annotation",
        Train = "train",
        Inference = "inference",
    }
}

/// `POST .../jobs/{job}:cancel|:pause|:resume`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobControl {
    Cancel,
    Pause,
    Resume,
}

impl JobControl {
    /// The path suffix after `:`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobControl::Cancel => "cancel",
            JobControl::Pause => "pause",
            JobControl::Resume => "resume",
        }
    }
}

/// `POST /orgs/{org}/experiments/{id}/jobs`: `{"action": ..., "specs": {...}}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", content = "specs", rename_all = "lowercase")]
pub enum ExperimentJob {
    /// Start continual learning.
    Annotation(AnnotationSpecs),
    /// Realtime inference (answered synchronously with a multipart body).
    Inference(InferenceSpecs),
}

/// `{"round_size", "stop_criteria", "train_spec"}`
#[derive(Debug, Clone, Serialize)]
pub struct AnnotationSpecs {
    pub round_size: u64,
    pub stop_criteria: StopCriteria,
    pub train_spec: TrainSpec,
}

/// The CL job ends after `max_rounds` rounds or once the key metric reaches `key_metric` (the
/// server takes only these two keys).
#[derive(Debug, Clone, Serialize)]
pub struct StopCriteria {
    pub max_rounds: u64,
    /// Optional, as in the guide: without it only `max_rounds` stops the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_metric: Option<f64>,
}

/// `{"epochs", "val_interval"}`, optionally with MLflow tracking.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrainSpec {
    pub epochs: u64,
    pub val_interval: u64,
    /// `"mlflow"`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_execute_config: Option<bool>,
}

impl TrainSpec {
    /// Tracks the rounds in MLflow at `uri` under `experiment_name`.
    pub fn with_mlflow(mut self, uri: &str, experiment_name: &str) -> TrainSpec {
        self.tracking = Some("mlflow".into());
        self.tracking_uri = Some(uri.to_string());
        self.experiment_name = Some(experiment_name.to_string());
        self
    }
}

/// `{"image": IMAGE_ID, "bundle_params": {...}}`
#[derive(Debug, Clone, Serialize)]
pub struct InferenceSpecs {
    pub image: String,
    pub bundle_params: BundleParams,
}

/// Class prompts (`label_prompt`, 1..132) and/or point prompts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BundleParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_prompt: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<[f64; 3]>>,
    /// One per point: 1 inside, 0 outside.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub point_labels: Option<Vec<i64>>,
}

/// The `annotation` answer: the job id as a JSON string (or, tolerated, an object with an id).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum JobCreated {
    Id(String),
    Object { id: String },
}

impl JobCreated {
    pub fn id(self) -> String {
        match self {
            JobCreated::Id(id) | JobCreated::Object { id } => id,
        }
    }
}

/// `GET .../jobs` → `{"jobs": [...]}`, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobList {
    #[serde(default)]
    pub jobs: Vec<Job>,
}

/// A job as the server answers it. The contract promises `status`; list entries also carry `id`
/// and usually `action`, `created_on`, `specs`, `result`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<JobAction>,
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specs: Option<JobSpecs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Job {
    pub fn is(&self, action: &JobAction) -> bool {
        self.action.as_ref() == Some(action)
    }

    /// `result.key_metric`, once the job has one.
    pub fn key_metric(&self) -> Option<f64> {
        self.result.as_ref()?.key_metric
    }

    /// Why a job failed, when the answer says: `result.detailed_status.message`. The contract
    /// fixes only the status (`Error`) of a failed job; the reason may be in its logs alone.
    pub fn error_message(&self) -> Option<&str> {
        self.result.as_ref()?.extra.get("detailed_status")?["message"]
            .as_str()
            .map(str::trim)
            .filter(|m| !m.is_empty())
    }
}

/// A job's specs as the server echoes them (a CL job's `round_size`; the rest kept).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobSpecs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_size: Option<u64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl JobSpecs {
    /// A CL job's `stop_criteria.max_rounds`, when the answer carries it.
    pub fn max_rounds(&self) -> Option<u64> {
        self.extra.get("stop_criteria")?.get("max_rounds")?.as_u64()
    }
}

/// A job's result (`key_metric` once a round is done; the rest kept).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_metric: Option<f64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_parse_case_insensitively_and_unknown_ones_are_kept() {
        let all = [
            (JobStatus::Pending, "Pending"),
            (JobStatus::Running, "Running"),
            (JobStatus::Done, "Done"),
            (JobStatus::Error, "Error"),
            (JobStatus::Canceled, "Canceled"),
            (JobStatus::Canceling, "Canceling"),
            (JobStatus::Pausing, "Pausing"),
            (JobStatus::Paused, "Paused"),
            (JobStatus::Resuming, "Resuming"),
        ];
        for (s, wire) in &all {
            assert_eq!(serde_json::to_value(s).unwrap(), json!(wire));
            assert_eq!(&s.to_string(), wire);
            let back: JobStatus = serde_json::from_value(json!(wire.to_uppercase())).unwrap();
            assert_eq!(&back, s);
            assert!(!matches!(JobStatus::parse(wire), JobStatus::Other(_)));
        }
        let new: JobStatus = serde_json::from_value(json!("Queued")).unwrap();
        assert_eq!(new, JobStatus::Other("Queued".into()));
        assert_eq!(new, JobStatus::parse("queued"));
        assert_ne!(new, JobStatus::Pending);
        assert_eq!(serde_json::to_value(&new).unwrap(), json!("Queued"));
        assert!(JobStatus::Canceled.is_terminal() && !JobStatus::Paused.is_terminal());
        assert!(!new.is_terminal());
    }

    #[test]
    fn jobs_read_with_extra_and_missing_fields_and_write_back_as_they_came() {
        let list: JobList = serde_json::from_value(json!({"jobs": [
            {"id": "A", "action": "annotation", "status": "Running", "specs": {"round_size": 2,
              "stop_criteria": {"max_rounds": 2}}, "result": {"rounds": 0},
              "created_on": "2026-01-01T00:00:00Z", "experiment_id": "E"},
            {"id": "T", "action": "train", "status": "Done", "result": {"key_metric": 0.65},
              "round": 1},
            {"id": "X", "action": "batch_infer", "status": "Sleeping"},
            {"status": "Pending"}
        ], "total": 4}))
        .unwrap();
        let j = &list.jobs;
        assert_eq!(j.len(), 4);
        assert!(j[0].is(&JobAction::Annotation));
        assert_eq!(j[0].specs.as_ref().unwrap().round_size, Some(2));
        assert_eq!(j[0].key_metric(), None);
        assert_eq!(j[1].key_metric(), Some(0.65));
        assert_eq!(j[1].status, JobStatus::Done);
        assert_eq!(j[1].extra["round"], 1);
        assert_eq!(j[2].action, Some(JobAction::Other("batch_infer".into())));
        assert_eq!(j[2].status.as_str(), "Sleeping");
        assert!(j[3].id.is_none() && j[3].action.is_none() && j[3].result.is_none());
        assert_eq!(
            serde_json::to_value(&j[0]).unwrap(),
            json!({"id": "A", "action": "annotation", "status": "Running",
              "specs": {"round_size": 2, "stop_criteria": {"max_rounds": 2}},
              "result": {"rounds": 0}, "created_on": "2026-01-01T00:00:00Z",
              "experiment_id": "E"})
        );
        assert_eq!(j[0].error_message(), None);
        let failed: Job = serde_json::from_value(json!({"status": "Error",
            "result": {"detailed_status": {"status": "FAILURE", "message": "out of memory"}}}))
        .unwrap();
        assert_eq!(failed.error_message(), Some("out of memory"));
        let odd: Job = serde_json::from_value(json!({"status": "Error",
            "result": {"detailed_status": "FAILURE"}}))
        .unwrap();
        assert_eq!(odd.error_message(), None);
        let empty: JobList = serde_json::from_value(json!({})).unwrap();
        assert!(empty.jobs.is_empty());
    }

    #[test]
    fn the_job_requests_are_the_contracts() {
        let cl = ExperimentJob::Annotation(AnnotationSpecs {
            round_size: 2,
            stop_criteria: StopCriteria {
                max_rounds: 3,
                key_metric: Some(0.9),
            },
            train_spec: TrainSpec {
                epochs: 1,
                val_interval: 1,
                ..Default::default()
            }
            .with_mlflow("http://mlflow", "wf"),
        });
        assert_eq!(
            serde_json::to_value(&cl).unwrap(),
            json!({"action": "annotation", "specs": {"round_size": 2,
                "stop_criteria": {"max_rounds": 3, "key_metric": 0.9},
                "train_spec": {"epochs": 1, "val_interval": 1, "tracking": "mlflow",
                    "tracking_uri": "http://mlflow", "experiment_name": "wf"}}})
        );
        let infer = ExperimentJob::Inference(InferenceSpecs {
            image: "I".into(),
            bundle_params: BundleParams {
                label_prompt: Some(vec![1, 2]),
                ..Default::default()
            },
        });
        assert_eq!(
            serde_json::to_value(&infer).unwrap(),
            json!({"action": "inference", "specs": {"image": "I",
                "bundle_params": {"label_prompt": [1, 2]}}})
        );
        let id: JobCreated = serde_json::from_value(json!("J1")).unwrap();
        assert_eq!(id.id(), "J1");
        let obj: JobCreated = serde_json::from_value(json!({"id": "J2", "x": 1})).unwrap();
        assert_eq!(obj.id(), "J2");
    }
}
