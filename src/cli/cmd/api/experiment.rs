//! `api experiment …`, `api cl …`, and the CL summary `status --experiment` shows.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::{call, id_of, version_key, Out};
use crate::app::exit::Failure;
use crate::app::settings::ConfigError;
use crate::monai::Client;

#[derive(Subcommand, Debug)]
pub enum ExperimentCmd {
    /// Base experiments, newest version first
    Bases {
        /// Only this network architecture (e.g. monai_vista3d)
        #[arg(long)]
        arch: Option<String>,
    },
    Create {
        #[arg(long)]
        name: String,
        /// Base experiment ID
        #[arg(long)]
        base: String,
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        workspace: String,
        /// JSON object of label numbers to names, e.g. {"1": "liver"}
        #[arg(long)]
        labels: PathBuf,
        #[arg(long, default_value = "monai_vista3d")]
        arch: String,
        #[arg(long)]
        realtime_infer: bool,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Turn realtime inference off (irreversible): asks to confirm unless --yes
    StopRealtime {
        id: String,
        #[arg(long)]
        yes: bool,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClCmd {
    /// Start the continual-learning (annotation) job
    Start {
        #[arg(long)]
        experiment: String,
        #[arg(long)]
        round_size: u64,
        #[arg(long)]
        max_rounds: u64,
        #[arg(long, default_value_t = 0.9)]
        key_metric: f64,
        #[arg(long, default_value_t = 1)]
        epochs: u64,
        #[arg(long, default_value_t = 1)]
        val_interval: u64,
        /// MLflow tracking URI
        #[arg(long, requires = "mlflow_experiment")]
        mlflow: Option<String>,
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
            let v = call(c, Method::GET, "/experiments:base", None).await?;
            let mut list: Vec<Value> = v["experiments"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| {
                    arch.as_ref()
                        .is_none_or(|a| e["network_arch"].as_str() == Some(a.as_str()))
                })
                .collect();
            list.sort_by_key(|e| {
                std::cmp::Reverse(version_key(e["version"].as_str().unwrap_or("")))
            });
            out.show(&json!(list), || {
                let mut t = format!("{:<38} {:<12} {:<10} {}\n", "ID", "VERSION", "ARCH", "NAME");
                for e in &list {
                    t.push_str(&format!(
                        "{:<38} {:<12} {:<10} {}\n",
                        e["id"].as_str().unwrap_or(""),
                        e["version"].as_str().unwrap_or(""),
                        e["network_arch"].as_str().unwrap_or(""),
                        e["name"].as_str().unwrap_or("")
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
            let ok = labels_v.as_object().is_some_and(|m| {
                !m.is_empty()
                    && m.iter()
                        .all(|(k, v)| k.parse::<u32>().is_ok() && v.is_string())
            });
            if !ok {
                return Err(ConfigError(format!(
                    "--labels {}: expected a JSON object of label numbers to names, e.g. {{\"1\": \"liver\"}}",
                    labels.display()
                ))
                .into());
            }
            let v = call(c, Method::POST, "/experiments", Some(json!({
                "name": name, "description": description, "network_arch": arch,
                "base_experiment": [base], "inference_dataset": dataset, "eval_dataset": dataset,
                "train_datasets": [dataset], "realtime_infer": realtime_infer, "workspace": workspace,
                "model_params": {"labels": labels_v}}))).await?;
            out.show(&v, || format!("experiment {}", id_of(&v)))
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
            let v = call(
                c,
                Method::PATCH,
                &format!("/experiments/{id}"),
                Some(json!({"realtime_infer": false})),
            )
            .await?;
            out.show(&v, || {
                format!("realtime inference is off for experiment {id}")
            })
        }
        ExperimentCmd::Delete { id } => {
            call(c, Method::DELETE, &format!("/experiments/{id}"), None).await?;
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
            let mut train = json!({"epochs": epochs, "val_interval": val_interval});
            if let (Some(uri), Some(name)) = (mlflow, mlflow_experiment) {
                train["tracking"] = json!("mlflow");
                train["tracking_uri"] = json!(uri);
                train["experiment_name"] = json!(name);
            }
            let v = call(
                c,
                Method::POST,
                &format!("/experiments/{experiment}/jobs"),
                Some(json!({
                "action": "annotation", "specs": {"round_size": round_size,
                "stop_criteria": {"max_rounds": max_rounds, "key_metric": key_metric},
                "train_spec": train}})),
            )
            .await?;
            let job = v.as_str().map(str::to_string).unwrap_or_else(|| id_of(&v));
            out.show(&json!({"job": job}), || {
                format!("continual-learning job {job}")
            })
        }
    }
}

/// What `status --experiment` adds: the CL job and how far the next round is.
pub async fn cl_summary(
    c: &mut Client,
    experiment: &str,
    sent_since: impl Fn(Option<&str>) -> i64,
) -> Result<Value, Failure> {
    let jobs = super::experiment_jobs(c, experiment).await?;
    let Some(cl) = jobs.iter().rev().find(|j| j["action"] == "annotation") else {
        return Ok(json!({"experiment": experiment, "cl_job": null}));
    };
    let rounds: Vec<&Value> = jobs.iter().filter(|j| j["action"] == "train").collect();
    let done: Vec<&&Value> = rounds
        .iter()
        .filter(|j| super::job::is(j["status"].as_str().unwrap_or(""), "Done"))
        .collect();
    let last_metric = done.last().and_then(|j| j["result"]["key_metric"].as_f64());
    let last_round_started = rounds.last().and_then(|j| j["created_on"].as_str());
    let round_size = cl["specs"]["round_size"].as_i64().unwrap_or(0);
    let since = sent_since(last_round_started);
    Ok(json!({
        "experiment": experiment,
        "cl_job": cl["id"], "status": cl["status"],
        "rounds_done": done.len(), "rounds_started": rounds.len(),
        "last_key_metric": last_metric,
        "round_size": round_size,
        "images_since_last_round": since,
        "images_to_next_round": (round_size - since).max(0),
    }))
}
