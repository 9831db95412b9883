//! `segbridge api …`: every call of the annotation workflow from the command line, with the same
//! login, config, retries and error reporting as the bridge. Each command prints a readable
//! answer, or JSON with `--json`.

use std::io::Write;

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;

use crate::app::exit::{self, Failure};
use crate::app::settings::{ApiLayer, ConfigError, DatasetLayer, Layers, Settings};
use crate::cli::config::ConfigArg;
use crate::monai::{Client, Resource, Secret};

pub mod dataset;
pub mod experiment;
pub mod infer;
pub mod job;
pub mod notify;

pub use dataset::{DatasetCmd, WorkspaceCmd};
pub use experiment::{ClCmd, ExperimentCmd};
pub use infer::{nrrd_part, parse_point, InferArgs};
pub use job::{JobCmd, JobRef, JobsCmd};
pub use notify::NotifyArgs;

#[derive(Args, Debug)]
pub struct ApiArgs {
    /// JSON output for scripts
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub api: ApiLayer,
    #[command(subcommand)]
    pub command: ApiCommand,
}

impl ApiArgs {
    /// The settings' layers the command line gives: the API's, and what the subcommand reads.
    pub fn layers(&self) -> Layers {
        let mut l = Layers {
            api: self.api.clone(),
            ..Default::default()
        };
        match &self.command {
            ApiCommand::NextImage { dataset } => l.dataset = dataset.clone(),
            ApiCommand::Notify(n) => {
                l.dataset = n.dataset.clone();
                l.state = n.state.clone();
                l.writer = n.writer.clone();
            }
            _ => {}
        }
        l
    }
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
        #[command(flatten)]
        dataset: DatasetLayer,
    },
    /// Notify the dataset of one label by hand (the guide's "Notify Server"), journalled in
    /// the ledger
    Notify(NotifyArgs),
    /// Realtime inference: writes the label volume (.nrrd) to --out
    Infer(InferArgs),
    /// Delete the experiment, the dataset and the workspace
    Cleanup {
        /// Experiment ID to delete
        #[arg(long)]
        experiment: Option<String>,
        /// Dataset ID to delete (never taken from SEGBRIDGE_DATASET or the config file)
        #[arg(long)]
        dataset: Option<String>,
        /// Workspace ID to delete
        #[arg(long)]
        workspace: Option<String>,
    },
}

struct Out {
    json: bool,
}

/// Keys whose values are credentials: an answer that echoes one never shows it.
const SECRET_KEYS: [&str; 6] = [
    "client_secret",
    "secret_key",
    "access_key",
    "ngc_api_key",
    "token",
    "password",
];

/// `v` without the credentials an answer may echo (see [`SECRET_KEYS`]), at any depth.
fn without_secrets(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| !SECRET_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k, without_secrets(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_secrets).collect()),
        other => other,
    }
}

impl Out {
    /// One answer: JSON (one object per kind: a create or start prints the object created,
    /// a delete `{"deleted": ID}`), or text.
    fn show(&self, v: &impl Serialize, text: impl FnOnce() -> String) -> Result<(), Failure> {
        let mut o = std::io::stdout().lock();
        if self.json {
            let v = serde_json::to_value(v).map_err(anyhow::Error::from)?;
            writeln!(o, "{}", without_secrets(v)).map_err(anyhow::Error::from)?;
        } else {
            writeln!(o, "{}", text()).map_err(anyhow::Error::from)?;
        }
        Ok(())
    }
}

fn env_var(name: &str) -> Result<String, ConfigError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ConfigError(format!("set {name} in the environment")))
}

fn env_secret(name: &str) -> Result<Secret, ConfigError> {
    env_var(name).map(Secret::new)
}

pub fn run(s: &Settings, args: ApiArgs) -> Result<(), Failure> {
    s.require_key()?;
    let out = Out { json: args.json };
    let rt = crate::app::runtime()?;
    rt.block_on(async move {
        let mut c = Client::new(s.api_config())?;
        dispatch(&mut c, s, &out, args.command).await
    })
}

async fn dispatch(c: &mut Client, s: &Settings, out: &Out, cmd: ApiCommand) -> Result<(), Failure> {
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
        ApiCommand::NextImage { .. } => {
            let next = c.next_image(s.require_dataset()?).await?;
            out.show(&next, || {
                let m = next.meta.clone().unwrap_or_default();
                let unk = |f: Option<String>| f.unwrap_or_else(|| "UNK".into());
                format!(
                    "next image {}\n  study {}  patient {}  modality {}  date {}\n  {}",
                    next.image,
                    unk(m.study_instance_uid),
                    unk(m.patient_id),
                    unk(m.modality),
                    unk(m.study_date),
                    m.retrieve_url.unwrap_or_default()
                )
            })
        }
        ApiCommand::Infer(a) => infer::infer(c, out, a).await,
        ApiCommand::Notify(a) => notify::notify(c, s, out, a).await,
        ApiCommand::Cleanup {
            experiment,
            dataset,
            workspace,
        } => {
            // each step runs even when an earlier one fails; all failures are reported
            let mut done = Vec::new();
            let mut failed = Vec::new();
            for (what, id) in [
                (Resource::Experiment, experiment),
                (Resource::Dataset, dataset),
                (Resource::Workspace, workspace),
            ] {
                let Some(id) = id else { continue };
                let kind = what.collection();
                match c.delete(what, &id).await {
                    Ok(_) => done.push(format!("{kind}/{id}")),
                    Err(e) => failed.push(format!("{kind}/{id}: {e}")),
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
