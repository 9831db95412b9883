//! `api jobs …` and `api job …`: list, status, logs, cancel/pause/resume, wait.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use super::{call, Out};
use crate::app::exit::{self, Failure};
use crate::app::settings::ConfigError;
use crate::monai::Client;

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
            let jobs = super::experiment_jobs(c, &experiment).await?;
            out.show(&json!(jobs), || {
                let mut t = format!(
                    "{:<38} {:<12} {:<10} {}\n",
                    "ID", "ACTION", "STATUS", "KEY METRIC"
                );
                for j in &jobs {
                    t.push_str(&format!(
                        "{:<38} {:<12} {:<10} {}\n",
                        j["id"].as_str().unwrap_or(""),
                        j["action"].as_str().unwrap_or(""),
                        j["status"].as_str().unwrap_or(""),
                        j["result"]["key_metric"]
                            .as_f64()
                            .map(|m| format!("{m:.3}"))
                            .unwrap_or_else(|| "-".into())
                    ));
                }
                t.trim_end().to_string()
            })
        }
    }
}

pub(super) async fn job(c: &mut Client, out: &Out, cmd: JobCmd) -> Result<(), Failure> {
    match cmd {
        JobCmd::Status(j) => {
            let v = call(
                c,
                Method::GET,
                &format!("/experiments/{}/jobs/{}", j.experiment, j.job),
                None,
            )
            .await?;
            out.show(&v, || {
                format!(
                    "job {} ({}): {}{}",
                    j.job,
                    v["action"].as_str().unwrap_or("?"),
                    v["status"].as_str().unwrap_or("?"),
                    v["result"]["key_metric"]
                        .as_f64()
                        .map(|m| format!(", key metric {m:.3}"))
                        .unwrap_or_default()
                )
            })
        }
        JobCmd::Logs(j) => {
            let path = c.org_path(&format!(
                "/experiments/{}/jobs/{}/logs",
                j.experiment, j.job
            ));
            let a = c.call(Method::GET, &path, None).await?;
            let text = String::from_utf8_lossy(&a.raw).to_string();
            out.show(&json!({"logs": text}), || text.trim_end().to_string())
        }
        JobCmd::Cancel(j) => job_action(c, out, &j, "cancel").await,
        JobCmd::Pause(j) => job_action(c, out, &j, "pause").await,
        JobCmd::Resume(j) => job_action(c, out, &j, "resume").await,
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
                &until,
                timeout,
                Duration::from_secs_f64(interval.max(0.05)),
            )
            .await
        }
    }
}

async fn job_action(c: &mut Client, out: &Out, j: &JobRef, action: &str) -> Result<(), Failure> {
    call(
        c,
        Method::POST,
        &format!("/experiments/{}/jobs/{}:{action}", j.experiment, j.job),
        None,
    )
    .await?;
    out.show(&json!({"job": j.job, "action": action}), || {
        format!("job {}: {action} requested", j.job)
    })
}

pub(super) fn is(status: &str, want: &str) -> bool {
    status.eq_ignore_ascii_case(want)
}

/// Waits for a job to reach `until`; a job that ends otherwise, or a timeout, is a failure.
async fn wait(
    c: &mut Client,
    out: &Out,
    j: &JobRef,
    until: &str,
    timeout: Duration,
    every: Duration,
) -> Result<(), Failure> {
    let spinner = (!out.json && std::io::stderr().is_terminal()).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
    let start = Instant::now();
    let path = format!("/experiments/{}/jobs/{}", j.experiment, j.job);
    loop {
        let v = call(c, Method::GET, &path, None).await?;
        let status = v["status"].as_str().unwrap_or("").to_string();
        if let Some(s) = &spinner {
            s.set_message(format!(
                "job {} is {status} ({:.0?})",
                j.job,
                start.elapsed()
            ));
        }
        let reached = is(&status, until) || (is(until, "Running") && is(&status, "Done"));
        let ended = ["Done", "Error", "Canceled"].iter().any(|e| is(&status, e));
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
