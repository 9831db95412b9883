//! `segbridge api …`: every call of the annotation workflow from the command line, with the same
//! login, config, retries and error reporting as the bridge. Each command prints a readable
//! answer, or JSON with `--json`.

use std::io::Write;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::app::exit::{self, Failure};
use crate::app::settings::{ConfigError, Settings};
use crate::monai::Client;

pub mod dataset;
pub mod experiment;
pub mod infer;
pub mod job;

pub use dataset::{DatasetCmd, WorkspaceCmd};
pub use experiment::{cl_summary, ClCmd, ExperimentCmd};
pub use infer::{nrrd_part, parse_point, InferArgs};
pub use job::{JobCmd, JobRef, JobsCmd};

#[derive(Args, Debug)]
pub struct ApiArgs {
    /// JSON output for scripts
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: ApiCommand,
}

#[derive(Subcommand, Debug)]
pub enum ApiCommand {
    /// Check the key: prints the user id (never the token)
    Login,
    /// Datasets
    #[command(subcommand)]
    Dataset(DatasetCmd),
    /// Workspaces (the cloud bucket results go to)
    #[command(subcommand)]
    Workspace(WorkspaceCmd),
    /// Experiments
    #[command(subcommand)]
    Experiment(ExperimentCmd),
    /// Continual learning
    #[command(subcommand)]
    Cl(ClCmd),
    /// Jobs of an experiment
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// One job
    #[command(subcommand)]
    Job(JobCmd),
    /// The image the server recommends labelling next
    NextImage {
        #[arg(long)]
        dataset: String,
    },
    /// Realtime inference: writes the label volume (.nrrd) to --out
    Infer(InferArgs),
    /// Delete the experiment, the dataset and the workspace
    Cleanup {
        #[arg(long)]
        experiment: Option<String>,
        #[arg(long)]
        dataset: Option<String>,
        #[arg(long)]
        workspace: Option<String>,
    },
}

struct Out {
    json: bool,
}

impl Out {
    fn show(&self, v: &Value, text: impl FnOnce() -> String) -> Result<(), Failure> {
        let mut o = std::io::stdout().lock();
        if self.json {
            writeln!(o, "{v}").map_err(anyhow::Error::from)?;
        } else {
            writeln!(o, "{}", text()).map_err(anyhow::Error::from)?;
        }
        Ok(())
    }
}

fn env_secret(name: &str) -> Result<String, ConfigError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ConfigError(format!("set {name} in the environment")))
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or("").to_string()
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

pub fn run(s: &Settings, args: ApiArgs) -> Result<(), Failure> {
    s.require_key()?;
    let out = Out { json: args.json };
    let rt = crate::app::runtime()?;
    rt.block_on(async move {
        let mut c = Client::new(s.api_config())?;
        dispatch(&mut c, &out, args.command).await
    })
}

async fn call(
    c: &mut Client,
    m: Method,
    rest: &str,
    body: Option<Value>,
) -> Result<Value, Failure> {
    let path = c.org_path(rest);
    Ok(c.call(m, &path, body.as_ref()).await?.body)
}

/// The jobs of an experiment, oldest first (none when the answer holds no list).
async fn experiment_jobs(c: &mut Client, experiment: &str) -> Result<Vec<Value>, Failure> {
    let v = call(
        c,
        Method::GET,
        &format!("/experiments/{experiment}/jobs"),
        None,
    )
    .await?;
    Ok(v["jobs"].as_array().cloned().unwrap_or_default())
}

async fn dispatch(c: &mut Client, out: &Out, cmd: ApiCommand) -> Result<(), Failure> {
    match cmd {
        ApiCommand::Login => {
            c.login().await?;
            let uid = c.user_id.clone().unwrap_or_default();
            out.show(&json!({"user_id": uid, "org": c.config().org}), || {
                format!("logged in: user {uid}, org {}", c.config().org)
            })
        }
        ApiCommand::Dataset(cmd) => dataset::dataset(c, out, cmd).await,
        ApiCommand::Workspace(cmd) => dataset::workspace(c, out, cmd).await,
        ApiCommand::Experiment(cmd) => experiment::experiment(c, out, cmd).await,
        ApiCommand::Cl(cmd) => experiment::cl(c, out, cmd).await,
        ApiCommand::Jobs(cmd) => job::jobs(c, out, cmd).await,
        ApiCommand::Job(cmd) => job::job(c, out, cmd).await,
        ApiCommand::NextImage { dataset } => {
            let v = call(
                c,
                Method::POST,
                &format!("/datasets/{dataset}/jobs"),
                Some(json!({"action": "nextimage"})),
            )
            .await?;
            out.show(&v, || {
                let m = &v["meta"];
                format!(
                    "next image {}\n  study {}  patient {}  modality {}  date {}\n  {}",
                    v["image"].as_str().unwrap_or("?"),
                    m["StudyInstanceUID"].as_str().unwrap_or("UNK"),
                    m["PatientID"].as_str().unwrap_or("UNK"),
                    m["Modality"].as_str().unwrap_or("UNK"),
                    m["StudyDate"].as_str().unwrap_or("UNK"),
                    m["RetrieveURL"].as_str().unwrap_or("")
                )
            })
        }
        ApiCommand::Infer(a) => infer::infer(c, out, a).await,
        ApiCommand::Cleanup {
            experiment,
            dataset,
            workspace,
        } => {
            // each step runs even when an earlier one fails; all failures are reported
            let mut done = Vec::new();
            let mut failed = Vec::new();
            for (kind, id) in [
                ("experiments", experiment),
                ("datasets", dataset),
                ("workspaces", workspace),
            ] {
                let Some(id) = id else { continue };
                match call(c, Method::DELETE, &format!("/{kind}/{id}"), None).await {
                    Ok(_) => done.push(format!("{kind}/{id}")),
                    Err(e) => failed.push(format!("{kind}/{id}: {:#}", e.error)),
                }
            }
            out.show(&json!({"deleted": done, "failed": failed}), || {
                let mut t: Vec<String> = done.iter().map(|d| format!("deleted {d}")).collect();
                t.extend(failed.iter().map(|f| format!("FAILED {f}")));
                t.join("\n")
            })?;
            if failed.is_empty() {
                Ok(())
            } else {
                Err(Failure {
                    code: exit::DELIVERY,
                    error: anyhow::anyhow!("cleanup incomplete: {}", failed.join("; ")),
                })
            }
        }
    }
}
