//! `api experiment …` and `api cl …` (the CL summary `status --experiment` shows is `app::cl`).

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{json, Value};

use super::Out;
use crate::app::exit::Failure;
use crate::app::settings::ConfigError;
use crate::monai::{
    newest_first, AnnotationSpecs, Client, ExperimentPatch, ExperimentSpec, Labels, Resource,
    StopCriteria, TrainSpec, VISTA3D_ARCH,
};

#[derive(Subcommand, Debug)]
pub enum ExperimentCmd {
    /// Base experiments, newest version first
    Bases {
        /// Only this network architecture (e.g. monai_vista3d)
        #[arg(long)]
        arch: Option<String>,
    },
    /// Create an experiment: a base model fine-tuned on a dataset, its results in a workspace
    Create {
        /// Experiment name
        #[arg(long)]
        name: String,
        /// Base experiment ID (`api experiment bases`)
        #[arg(long)]
        base: String,
        /// Dataset ID: trained on, evaluated on and inferred on
        #[arg(long)]
        dataset: String,
        /// Workspace ID (where results go)
        #[arg(long)]
        workspace: String,
        /// JSON object of label numbers to names, e.g. {"1": "liver"}
        #[arg(long)]
        labels: PathBuf,
        /// Network architecture of the base experiment
        #[arg(long, default_value = VISTA3D_ARCH)]
        arch: String,
        /// Serve realtime inference (`api infer`); turning it off later cannot be undone
        #[arg(long)]
        realtime_infer: bool,
        /// Free text
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Turn realtime inference off (irreversible): asks to confirm unless --yes
    StopRealtime {
        /// Experiment ID
        id: String,
        /// Do not ask: turn it off
        #[arg(long)]
        yes: bool,
    },
    /// Delete an experiment
    Delete {
        /// Experiment ID
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClCmd {
    /// Start the continual-learning (annotation) job
    Start {
        /// Experiment ID
        #[arg(long)]
        experiment: String,
        /// A training round starts after this many newly notified images
        #[arg(long)]
        round_size: u64,
        /// The job ends after this many rounds
        #[arg(long)]
        max_rounds: u64,
        /// ... or once the key metric reaches this (optional: else only --max-rounds stops)
        #[arg(long)]
        key_metric: Option<f64>,
        /// Epochs per round
        #[arg(long, default_value_t = 1)]
        epochs: u64,
        /// Validate every this many epochs
        #[arg(long, default_value_t = 1)]
        val_interval: u64,
        /// MLflow tracking URI
        #[arg(long, requires = "mlflow_experiment")]
        mlflow: Option<String>,
        /// MLflow experiment name
        #[arg(long, requires = "mlflow")]
        mlflow_experiment: Option<String>,
    },
}

pub(super) async fn experiment(
    c: &mut Client,
    out: &Out,
    cmd: ExperimentCmd,
) -> Result<(), Failure> {
    match cmd {
        ExperimentCmd::Bases { arch } => {
            let mut list = c.base_experiments().await?;
            list.retain(|e| arch.as_ref().is_none_or(|a| &e.network_arch == a));
            newest_first(&mut list);
            out.show(&list, || {
                let mut t = format!("{:<38} {:<12} {:<10} {}\n", "ID", "VERSION", "ARCH", "NAME");
                for e in &list {
                    t.push_str(&format!(
                        "{:<38} {:<12} {:<10} {}\n",
                        e.id, e.version, e.network_arch, e.name
                    ));
                }
                t.trim_end().to_string()
            })
        }
        ExperimentCmd::Create {
            name,
            base,
            dataset,
            workspace,
            labels,
            arch,
            realtime_infer,
            description,
        } => {
            let text = std::fs::read_to_string(&labels)
                .map_err(|e| ConfigError(format!("--labels {}: {e}", labels.display())))?;
            let labels_v: Value = serde_json::from_str(&text)
                .map_err(|e| ConfigError(format!("--labels {}: {e}", labels.display())))?;
            let numbered = serde_json::from_value::<Labels>(labels_v)
                .ok()
                .filter(|m| !m.is_empty() && m.keys().all(|k| k.parse::<u32>().is_ok()));
            let Some(labels_map) = numbered else {
                return Err(ConfigError(format!(
                    "--labels {}: expected a JSON object of label numbers to names, e.g. {{\"1\": \"liver\"}}",
                    labels.display()
                ))
                .into());
            };
            let spec = ExperimentSpec {
                description,
                network_arch: arch,
                realtime_infer,
                ..ExperimentSpec::new(&name, &base, &dataset, &workspace, labels_map)
            };
            let e = c.create_experiment(&spec).await?;
            out.show(&e, || {
                format!("experiment {}", e.id.as_deref().unwrap_or_default())
            })
        }
        ExperimentCmd::StopRealtime { id, yes } => {
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(ConfigError(
                        "turning realtime inference off cannot be undone: pass --yes to confirm"
                            .into(),
                    )
                    .into());
                }
                eprint!("Turn realtime inference off for experiment {id}? This cannot be undone. [y/N] ");
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(anyhow::Error::from)?;
                if !matches!(line.trim(), "y" | "Y" | "yes") {
                    return Err(ConfigError("not confirmed; nothing changed".into()).into());
                }
            }
            let patch = ExperimentPatch {
                realtime_infer: Some(false),
            };
            let e = c.patch_experiment(&id, &patch).await?;
            out.show(&e, || {
                format!("realtime inference is off for experiment {id}")
            })
        }
        ExperimentCmd::Delete { id } => {
            c.delete(Resource::Experiment, &id).await?;
            out.show(&json!({"deleted": id}), || {
                format!("experiment {id} deleted")
            })
        }
    }
}

pub(super) async fn cl(c: &mut Client, out: &Out, cmd: ClCmd) -> Result<(), Failure> {
    match cmd {
        ClCmd::Start {
            experiment,
            round_size,
            max_rounds,
            key_metric,
            epochs,
            val_interval,
            mlflow,
            mlflow_experiment,
        } => {
            let mut train_spec = TrainSpec {
                epochs,
                val_interval,
                ..Default::default()
            };
            if let (Some(uri), Some(name)) = (mlflow, mlflow_experiment) {
                train_spec = train_spec.with_mlflow(&uri, &name);
            }
            let specs = AnnotationSpecs {
                round_size,
                stop_criteria: StopCriteria {
                    max_rounds,
                    key_metric,
                },
                train_spec,
            };
            let id = c.start_cl(&experiment, specs).await?;
            // the server answers only the id: the job is read back, to show what any create
            // shows, the object created
            let (job, status) = match c.job(&experiment, &id).await {
                Ok(j) => (
                    serde_json::to_value(&j).map_err(anyhow::Error::from)?,
                    format!(" ({})", j.status),
                ),
                Err(e) => {
                    tracing::warn!("continual-learning job {id} started; reading it back: {e}");
                    (json!({"id": id}), String::new())
                }
            };
            out.show(&job, || format!("continual-learning job {id}{status}"))
        }
    }
}
