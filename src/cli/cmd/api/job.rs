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
        #[arg(long)]
        experiment: String,
    },
}

#[derive(Args, Debug)]
pub struct JobRef {
    #[arg(long)]
    pub experiment: String,
    pub job: String,
}

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    Status(JobRef),
    Logs(JobRef),
    Cancel(JobRef),
    Pause(JobRef),
    Resume(JobRef),
    /// Wait until the job reaches a status (like the guide's wait_for_job)
    Wait {
        #[command(flatten)]
        job: JobRef,
        #[arg(long, default_value = "Done")]
        until: String,
        /// e.g. 30m, 90s
        #[arg(long, default_value = "30m")]
        timeout: String,
        /// Seconds between polls
        #[arg(long, default_value_t = 5.0)]
        interval: f64,
    },
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
                &JobStatus::parse(&until),
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
    until: &JobStatus,
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
        let status = c.job(&j.experiment, &j.job).await?.status;
        if let Some(s) = &spinner {
            s.set_message(format!(
                "job {} is {status} ({:.0?})",
                j.job,
                start.elapsed()
            ));
        }
        // a job waited for to run may already be done
        let reached =
            status == *until || (*until == JobStatus::Running && status == JobStatus::Done);
        let ended = status.is_terminal();
        if reached || ended {
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            let body = json!({"job": j.job, "status": status, "waited_s": start.elapsed().as_secs_f64(), "reached": reached});
            out.show(&body, || {
                format!("job {} is {status} after {:.1?}", j.job, start.elapsed())
            })?;
            return if reached {
                Ok(())
            } else {
                Err(Failure {
                    code: exit::WAIT,
                    error: anyhow::anyhow!("job {} ended {status}, not {until}", j.job),
                })
            };
        }
        if start.elapsed() >= timeout {
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            return Err(Failure {
                code: exit::WAIT,
                error: anyhow::anyhow!(
                    "job {} is still {status} after {timeout:?} (waiting for {until})",
                    j.job
                ),
            });
        }
        tokio::time::sleep(every.min(timeout.saturating_sub(start.elapsed()))).await;
    }
}
