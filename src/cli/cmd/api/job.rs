//! `api jobs …` and `api job …`: list, status, logs, cancel/pause/resume, wait.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::json;

use super::Out;
use crate::app::exit::{self, Failure};
use crate::app::settings::ConfigError;
use crate::monai::{Client, Job, JobControl, JobStatus};

#[derive(Subcommand, Debug)]
pub enum JobsCmd {
    /// Table of jobs: id, action, status, key metric
    List {
        /// Experiment ID
        #[arg(long)]
        experiment: String,
    },
}

#[derive(Args, Debug)]
pub struct JobRef {
    /// Experiment ID
    #[arg(long)]
    pub experiment: String,
    /// Job ID
    pub job: String,
}

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// The job's status (and key metric)
    Status(JobRef),
    /// The job's logs
    Logs(JobRef),
    /// Cancel the job
    Cancel(JobRef),
    /// Pause the job
    Pause(JobRef),
    /// Resume a paused job
    Resume(JobRef),
    /// Wait until the job reaches a status (like the guide's wait_for_job); fails when it ends
    /// otherwise or has passed that status
    Wait {
        #[command(flatten)]
        job: JobRef,
        /// The status to wait for
        #[arg(long, value_enum, ignore_case = true, default_value = "Done")]
        until: WaitFor,
        /// e.g. 30m, 90s
        #[arg(long, default_value = "30m")]
        timeout: String,
        /// Seconds between polls
        #[arg(long, default_value_t = 5.0)]
        interval: f64,
    },
}

/// What `job wait --until` waits for: a job goes Pending → Running → Done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum WaitFor {
    #[value(name = "Pending")]
    Pending,
    #[value(name = "Running")]
    Running,
    #[value(name = "Done")]
    Done,
}

impl WaitFor {
    pub fn status(self) -> JobStatus {
        match self {
            WaitFor::Pending => JobStatus::Pending,
            WaitFor::Running => JobStatus::Running,
            WaitFor::Done => JobStatus::Done,
        }
    }
}

/// Where a wait stands after one poll.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    Reached,
    /// Not yet: poll again.
    Waiting,
    /// It never will: the job ended otherwise, or is past the status (why).
    Missed(String),
}

/// What `status` means for a wait for `until`. A job passes Pending, then Running (pausing,
/// paused, resuming and canceling are Running's, as the job has started), then ends Done,
/// Error or Canceled; a job already past `until`, or ended otherwise, will never reach it.
pub fn waited(status: &JobStatus, until: WaitFor) -> Waited {
    if *status == until.status() {
        return Waited::Reached;
    }
    let phase = match status {
        JobStatus::Pending => Some(WaitFor::Pending),
        JobStatus::Running
        | JobStatus::Pausing
        | JobStatus::Paused
        | JobStatus::Resuming
        | JobStatus::Canceling => Some(WaitFor::Running),
        JobStatus::Done => Some(WaitFor::Done),
        _ => None,
    };
    if status.is_terminal() && *status != JobStatus::Done {
        return Waited::Missed(format!("ended {status}, not {}", until.status()));
    }
    match phase {
        Some(p) if p > until => Waited::Missed(format!(
            "is already {status}: it has passed {}",
            until.status()
        )),
        _ => Waited::Waiting,
    }
}

pub(super) async fn jobs(c: &mut Client, out: &Out, cmd: JobsCmd) -> Result<(), Failure> {
    match cmd {
        JobsCmd::List { experiment } => {
            let jobs = c.jobs(&experiment).await?;
            out.show(&jobs, || {
                let mut t = format!(
                    "{:<38} {:<12} {:<10} {}\n",
                    "ID", "ACTION", "STATUS", "KEY METRIC"
                );
                for j in &jobs {
                    t.push_str(&format!(
                        "{:<38} {:<12} {:<10} {}\n",
                        j.id.as_deref().unwrap_or_default(),
                        action(j, ""),
                        j.status.as_str(),
                        j.key_metric()
                            .map(|m| format!("{m:.3}"))
                            .unwrap_or_else(|| "-".into())
                    ));
                }
                t.trim_end().to_string()
            })
        }
    }
}

/// The job's action as the server spells it, `missing` when it named none.
fn action<'a>(j: &'a Job, missing: &'a str) -> &'a str {
    j.action.as_ref().map_or(missing, |a| a.as_str())
}

pub(super) async fn job(c: &mut Client, out: &Out, cmd: JobCmd) -> Result<(), Failure> {
    match cmd {
        JobCmd::Status(j) => {
            let v = c.job(&j.experiment, &j.job).await?;
            out.show(&v, || {
                format!(
                    "job {} ({}): {}{}",
                    j.job,
                    action(&v, "?"),
                    v.status,
                    v.key_metric()
                        .map(|m| format!(", key metric {m:.3}"))
                        .unwrap_or_default()
                )
            })
        }
        JobCmd::Logs(j) => {
            let text = c.job_logs(&j.experiment, &j.job).await?;
            out.show(&json!({"logs": text}), || text.trim_end().to_string())
        }
        JobCmd::Cancel(j) => control(c, out, &j, JobControl::Cancel).await,
        JobCmd::Pause(j) => control(c, out, &j, JobControl::Pause).await,
        JobCmd::Resume(j) => control(c, out, &j, JobControl::Resume).await,
        JobCmd::Wait {
            job,
            until,
            timeout,
            interval,
        } => {
            let timeout = humantime::parse_duration(&timeout)
                .map_err(|e| ConfigError(format!("--timeout {timeout}: {e}")))?;
            wait(
                c,
                out,
                &job,
                until,
                timeout,
                Duration::from_secs_f64(interval.max(0.05)),
            )
            .await
        }
    }
}

async fn control(c: &mut Client, out: &Out, j: &JobRef, ctl: JobControl) -> Result<(), Failure> {
    c.control_job(&j.experiment, &j.job, ctl).await?;
    let action = ctl.as_str();
    out.show(&json!({"job": j.job, "action": action}), || {
        format!("job {}: {action} requested", j.job)
    })
}

/// Waits for a job to reach `until`; a job that ends otherwise, or a timeout, is a failure.
async fn wait(
    c: &mut Client,
    out: &Out,
    j: &JobRef,
    until: WaitFor,
    timeout: Duration,
    every: Duration,
) -> Result<(), Failure> {
    let spinner = (!out.json && std::io::stderr().is_terminal()).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
    let start = Instant::now();
    loop {
        let job = c.job(&j.experiment, &j.job).await?;
        let status = job.status.clone();
        if let Some(s) = &spinner {
            s.set_message(format!(
                "job {} is {status} ({:.0?})",
                j.job,
                start.elapsed()
            ));
        }
        let w = waited(&status, until);
        if w != Waited::Waiting {
            let reached = w == Waited::Reached;
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            // why a failed job failed, when its answer says (as the server wrote it, controls
            // escaped)
            let error = job
                .error_message()
                .map(|m| crate::util::logsafe::escape_controls(m, false));
            let mut body = json!({"job": j.job, "status": status, "waited_s": start.elapsed().as_secs_f64(), "reached": reached});
            if let Some(e) = &error {
                body["error"] = json!(e);
            }
            out.show(&body, || {
                format!("job {} is {status} after {:.1?}", j.job, start.elapsed())
            })?;
            return match w {
                Waited::Missed(why) => Err(Failure {
                    code: exit::WAIT,
                    error: match (&error, &status) {
                        (Some(e), _) => anyhow::anyhow!("job {} {why}: {e}", j.job),
                        (None, JobStatus::Error) => anyhow::anyhow!(
                            "job {} {why} (the server gave no reason: see `segbridge api job logs`)",
                            j.job
                        ),
                        _ => anyhow::anyhow!("job {} {why}", j.job),
                    },
                }),
                _ => Ok(()),
            };
        }
        if start.elapsed() >= timeout {
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            return Err(Failure {
                code: exit::WAIT,
                error: anyhow::anyhow!(
                    "job {} is still {status} after {timeout:?} (waiting for {})",
                    j.job,
                    until.status()
                ),
            });
        }
        tokio::time::sleep(every.min(timeout.saturating_sub(start.elapsed()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_fails_once_the_job_has_passed_the_status_or_ended_otherwise() {
        use JobStatus as S;
        use WaitFor as W;
        assert_eq!(waited(&S::Running, W::Running), Waited::Reached);
        assert_eq!(waited(&S::Pending, W::Running), Waited::Waiting);
        assert_eq!(waited(&S::Paused, W::Done), Waited::Waiting);
        assert_eq!(waited(&S::Other("Queued".into()), W::Done), Waited::Waiting);
        let missed = |s: S, w: W| match waited(&s, w) {
            Waited::Missed(why) => why,
            other => panic!("{s} for {w:?}: {other:?}"),
        };
        assert_eq!(
            missed(S::Done, W::Running),
            "is already Done: it has passed Running"
        );
        assert_eq!(
            missed(S::Running, W::Pending),
            "is already Running: it has passed Pending"
        );
        assert_eq!(missed(S::Canceled, W::Done), "ended Canceled, not Done");
        assert_eq!(missed(S::Error, W::Running), "ended Error, not Running");
    }
}
