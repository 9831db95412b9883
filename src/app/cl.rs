//! The continual-learning job of an experiment, as `segbridge status --experiment` and the
//! status page show it: the CL job and its rounds from the API, the images notified since the
//! last round from the ledger. One implementation for both: [`ask`] (the API's part, async),
//! then [`ClAnswer::summarize`] (the ledger's count, synchronous).

use serde::Serialize;

use crate::ledger::{Ledger, LedgerError};
use crate::monai::{ApiError, Client, Job, JobAction, JobStatus};

/// What `status --experiment` adds: the experiment's CL job and how far its next round is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClSummary {
    pub experiment: String,
    /// The CL job's id (`null` when the experiment has none).
    pub cl_job: Option<String>,
    /// Present when the experiment has a CL job.
    #[serde(flatten)]
    pub progress: Option<ClProgress>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClProgress {
    pub status: JobStatus,
    pub rounds_done: usize,
    pub rounds_started: usize,
    /// The CL job's `stop_criteria.max_rounds`, when its answer carries it.
    pub max_rounds: Option<u64>,
    pub last_key_metric: Option<f64>,
    pub round_size: i64,
    pub images_since_last_round: i64,
    pub images_to_next_round: i64,
}

/// The API's part of a [`ClSummary`]: everything but the images notified since the last round.
#[derive(Debug, Clone, PartialEq)]
pub struct ClAnswer {
    pub experiment: String,
    job: Option<ClJob>,
}

#[derive(Debug, Clone, PartialEq)]
struct ClJob {
    id: Option<String>,
    status: JobStatus,
    rounds_done: usize,
    rounds_started: usize,
    max_rounds: Option<u64>,
    last_key_metric: Option<f64>,
    round_size: i64,
    /// When the last round was created, as the API wrote it (RFC 3339).
    last_round_started: Option<String>,
    /// When the CL job itself was created (RFC 3339).
    started: Option<String>,
}

/// Asks the API for `experiment`'s jobs: its (newest) CL job and the training rounds.
pub async fn ask(c: &mut Client, experiment: &str) -> Result<ClAnswer, ApiError> {
    Ok(read(experiment, &c.jobs(experiment).await?))
}

/// What an experiment's job list (oldest first) says of its CL job.
pub fn read(experiment: &str, jobs: &[Job]) -> ClAnswer {
    let Some(cl) = jobs.iter().rev().find(|j| j.is(&JobAction::Annotation)) else {
        return ClAnswer {
            experiment: experiment.to_string(),
            job: None,
        };
    };
    let rounds: Vec<_> = jobs.iter().filter(|j| j.is(&JobAction::Train)).collect();
    let done: Vec<_> = rounds
        .iter()
        .filter(|j| j.status == JobStatus::Done)
        .collect();
    ClAnswer {
        experiment: experiment.to_string(),
        job: Some(ClJob {
            id: cl.id.clone(),
            status: cl.status.clone(),
            rounds_done: done.len(),
            rounds_started: rounds.len(),
            max_rounds: cl.specs.as_ref().and_then(|s| s.max_rounds()),
            last_key_metric: done.last().and_then(|j| j.key_metric()),
            round_size: cl.specs.as_ref().and_then(|s| s.round_size).unwrap_or(0) as i64,
            last_round_started: rounds.last().and_then(|j| j.created_on.clone()),
            started: cl.created_on.clone(),
        }),
    }
}

impl ClAnswer {
    /// Unix seconds of the last round's start (None: no round yet, or a time not understood:
    /// then every image notified counts).
    pub fn last_round_started(&self) -> Option<i64> {
        unix_seconds(self.job.as_ref()?.last_round_started.as_deref()?)
    }

    /// The summary, with `images_since_last_round` images notified since the last round began.
    pub fn with_images_since(&self, images_since_last_round: i64) -> ClSummary {
        ClSummary {
            experiment: self.experiment.clone(),
            cl_job: self.job.as_ref().and_then(|j| j.id.clone()),
            progress: self.job.as_ref().map(|j| ClProgress {
                status: j.status.clone(),
                rounds_done: j.rounds_done,
                rounds_started: j.rounds_started,
                max_rounds: j.max_rounds,
                last_key_metric: j.last_key_metric,
                round_size: j.round_size,
                images_since_last_round,
                images_to_next_round: (j.round_size - images_since_last_round).max(0),
            }),
        }
    }

    /// The summary, counting in `ledger` the images notified to `dataset` (None: to any) since
    /// the last round began.
    pub fn summarize(
        &self,
        ledger: &Ledger,
        dataset: Option<&str>,
    ) -> Result<ClSummary, LedgerError> {
        let Some(job) = &self.job else {
            return Ok(self.with_images_since(0));
        };
        // The server's own count, replayed: from the CL job's start, each image of an added or
        // updated entry joins the round being filled; `round_size` distinct ones start a round
        // and the next one begins empty. (A time cut at the last round's start cannot work:
        // the notify that starts a round is confirmed after the round was created.)
        if let (Some(start), true) = (
            job.started.as_deref().and_then(unix_seconds),
            job.round_size > 0,
        ) {
            let images = ledger.images_notified_in_order(dataset, start)?;
            return Ok(self.with_images_since(waiting(
                &images,
                job.round_size as usize,
                job.max_rounds,
            )));
        }
        let since = ledger.images_notified_since(dataset, self.last_round_started())?;
        Ok(self.with_images_since(since))
    }
}

fn unix_seconds(rfc3339: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(d.as_secs() as i64)
}

/// The distinct images in the round being filled, when `images` were notified in this order
/// since the CL job started: every `round_size` distinct images start a round (up to
/// `max_rounds`) and the count starts again.
fn waiting(images: &[String], round_size: usize, max_rounds: Option<u64>) -> i64 {
    let mut pending = std::collections::BTreeSet::new();
    let mut rounds = 0u64;
    for img in images {
        pending.insert(img.as_str());
        if pending.len() >= round_size && max_rounds.is_none_or(|m| rounds < m) {
            pending.clear();
            rounds += 1;
        }
    }
    pending.len() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_images_waiting_are_the_servers_count_replayed() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // round size 2: a,b start round 1; a again and c start round 2; d waits
        assert_eq!(waiting(&v(&["a", "b", "a", "c", "d"]), 2, None), 1);
        // the same image twice fills nothing
        assert_eq!(waiting(&v(&["a", "a", "a"]), 2, None), 1);
        // no rounds left: everything waits
        assert_eq!(waiting(&v(&["a", "b", "c"]), 2, Some(1)), 1);
        assert_eq!(waiting(&v(&["a", "b", "c", "d"]), 2, Some(1)), 2);
        assert_eq!(waiting(&[], 3, None), 0);
    }

    fn answer(jobs: serde_json::Value) -> ClAnswer {
        read("E", &serde_json::from_value::<Vec<Job>>(jobs).unwrap())
    }

    #[test]
    fn the_newest_cl_job_its_rounds_and_the_images_to_the_next() {
        let a = answer(json!([
            {"id": "OLD", "action": "annotation", "status": "Canceled"},
            {"id": "CL", "action": "annotation", "status": "Running",
             "specs": {"round_size": 3, "stop_criteria": {"max_rounds": 4}}},
            {"id": "T1", "action": "train", "status": "Done", "result": {"key_metric": 0.5},
             "created_on": "2026-01-01T00:00:00Z"},
            {"id": "T2", "action": "train", "status": "Done", "result": {"key_metric": 0.75},
             "created_on": "2026-01-01T00:10:00Z"},
            {"id": "T3", "action": "train", "status": "Running",
             "created_on": "2026-01-01T00:20:00Z"},
            {"id": "I", "action": "inference", "status": "Done"}
        ]));
        assert_eq!(a.last_round_started(), Some(1_767_226_800));
        let s = a.with_images_since(1);
        assert_eq!(s.cl_job.as_deref(), Some("CL"));
        assert_eq!(
            s.progress,
            Some(ClProgress {
                status: JobStatus::Running,
                rounds_done: 2,
                rounds_started: 3,
                max_rounds: Some(4),
                last_key_metric: Some(0.75),
                round_size: 3,
                images_since_last_round: 1,
                images_to_next_round: 2,
            })
        );
        // more images than a round: none to wait for, never a negative count
        let p = a.with_images_since(7).progress.unwrap();
        assert_eq!(p.images_to_next_round, 0);
    }

    #[test]
    fn without_a_cl_job_or_a_round_or_specs() {
        let none = answer(json!([{"id": "T", "action": "train", "status": "Done"}]));
        assert_eq!(
            none.with_images_since(5),
            ClSummary {
                experiment: "E".into(),
                cl_job: None,
                progress: None
            }
        );
        assert_eq!(none.last_round_started(), None);
        let bare = answer(json!([{"id": "CL", "action": "annotation", "status": "Pending"}]));
        assert_eq!(
            bare.last_round_started(),
            None,
            "no round yet: every image counts"
        );
        let p = bare.with_images_since(0).progress.unwrap();
        assert_eq!((p.rounds_done, p.max_rounds, p.round_size), (0, None, 0));
        let json = serde_json::to_value(bare.with_images_since(0)).unwrap();
        assert_eq!(json["cl_job"], "CL");
        assert_eq!(json["rounds_done"], 0, "progress is flattened: {json}");
    }
}
