//! `segbridge api …`: every call of the annotation workflow from the command line, with the same
//! login, config, retries and error reporting as the bridge. Each command prints a readable
//! answer, or JSON with `--json`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::app::exit::{self, Failure};
use crate::app::settings::{ConfigError, Settings};
use crate::notify::Client;

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

#[derive(Subcommand, Debug)]
pub enum DatasetCmd {
    /// Create a DICOMweb dataset (password from env DICOMWEB_PASSWORD)
    Create {
        #[arg(long)]
        name: String,
        /// The DICOMweb root the server reads images and labels from
        #[arg(long)]
        dicomweb: String,
        #[arg(long)]
        dicomweb_user: Option<String>,
        /// QIDO query string selecting the dataset's images
        #[arg(long, default_value = "Modality=CT")]
        filters: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Dataset format ("monai"; some server versions name it "medical")
        #[arg(long, default_value = "monai")]
        format: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkspaceCmd {
    /// Create a workspace. aws: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; azure:
    /// AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY (from the environment)
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["aws", "azure"])]
        cloud: String,
        #[arg(long)]
        bucket: String,
        #[arg(long)]
        region: Option<String>,
    },
    Delete {
        id: String,
    },
}

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

#[derive(Args, Debug)]
pub struct InferArgs {
    #[arg(long)]
    pub experiment: String,
    /// Image series UID
    #[arg(long)]
    pub image: String,
    /// Label numbers to segment, e.g. 1,2,3
    #[arg(long, value_delimiter = ',', conflicts_with = "all")]
    pub classes: Vec<u64>,
    /// All 132 classes
    #[arg(long)]
    pub all: bool,
    /// A point prompt x,y,z:label (label 1 = inside, 0 = outside); may be repeated
    #[arg(long = "point")]
    pub points: Vec<String>,
    #[arg(long)]
    pub out: PathBuf,
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

/// Parses `x,y,z:label`.
pub fn parse_point(s: &str) -> Result<([f64; 3], i64), String> {
    let (xyz, label) = s
        .split_once(':')
        .ok_or(format!("--point {s}: expected x,y,z:label"))?;
    let c: Vec<f64> = xyz
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--point {s}: coordinates must be numbers"))?;
    if c.len() != 3 {
        return Err(format!("--point {s}: expected three coordinates"));
    }
    let label = label
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("--point {s}: the label must be an integer"))?;
    Ok(([c[0], c[1], c[2]], label))
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

async fn dispatch(c: &mut Client, out: &Out, cmd: ApiCommand) -> Result<(), Failure> {
    match cmd {
        ApiCommand::Login => {
            c.login().await?;
            let uid = c.user_id.clone().unwrap_or_default();
            out.show(&json!({"user_id": uid, "org": c.config().org}), || {
                format!("logged in: user {uid}, org {}", c.config().org)
            })
        }
        ApiCommand::Dataset(DatasetCmd::Create {
            name,
            dicomweb,
            dicomweb_user,
            filters,
            description,
            format,
        }) => {
            let mut body = json!({"name": name, "description": description,
                "type": "semantic_segmentation", "format": format, "client_url": dicomweb,
                "filters": filters});
            if let Some(u) = dicomweb_user {
                body["client_id"] = json!(u);
                body["client_secret"] = json!(env_secret("DICOMWEB_PASSWORD")?);
            }
            let v = call(c, Method::POST, "/datasets", Some(body)).await?;
            out.show(&v, || format!("dataset {}", id_of(&v)))
        }
        ApiCommand::Dataset(DatasetCmd::Delete { id }) => {
            call(c, Method::DELETE, &format!("/datasets/{id}"), None).await?;
            out.show(&json!({"deleted": id}), || format!("dataset {id} deleted"))
        }
        ApiCommand::Workspace(WorkspaceCmd::Create {
            name,
            cloud,
            bucket,
            region,
        }) => {
            let mut details = json!({"cloud_bucket_name": bucket});
            if cloud == "aws" {
                details["access_key"] = json!(env_secret("AWS_ACCESS_KEY_ID")?);
                details["secret_key"] = json!(env_secret("AWS_SECRET_ACCESS_KEY")?);
            } else {
                details["account_name"] = json!(env_secret("AZURE_STORAGE_ACCOUNT")?);
                details["access_key"] = json!(env_secret("AZURE_STORAGE_KEY")?);
            }
            if let Some(r) = region {
                details["cloud_region"] = json!(r);
            }
            let v = call(
                c,
                Method::POST,
                "/workspaces",
                Some(json!({"name": name, "cloud_type": cloud,
                "cloud_specific_details": details})),
            )
            .await?;
            // only the id: the answer may echo what was sent
            let id = id_of(&v);
            out.show(&json!({"id": id}), || format!("workspace {id}"))
        }
        ApiCommand::Workspace(WorkspaceCmd::Delete { id }) => {
            call(c, Method::DELETE, &format!("/workspaces/{id}"), None).await?;
            out.show(&json!({"deleted": id}), || {
                format!("workspace {id} deleted")
            })
        }
        ApiCommand::Experiment(ExperimentCmd::Bases { arch }) => {
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
        ApiCommand::Experiment(ExperimentCmd::Create {
            name,
            base,
            dataset,
            workspace,
            labels,
            arch,
            realtime_infer,
            description,
        }) => {
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
        ApiCommand::Experiment(ExperimentCmd::StopRealtime { id, yes }) => {
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
        ApiCommand::Experiment(ExperimentCmd::Delete { id }) => {
            call(c, Method::DELETE, &format!("/experiments/{id}"), None).await?;
            out.show(&json!({"deleted": id}), || {
                format!("experiment {id} deleted")
            })
        }
        ApiCommand::Cl(ClCmd::Start {
            experiment,
            round_size,
            max_rounds,
            key_metric,
            epochs,
            val_interval,
            mlflow,
            mlflow_experiment,
        }) => {
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
        ApiCommand::Jobs(JobsCmd::List { experiment }) => {
            let v = call(
                c,
                Method::GET,
                &format!("/experiments/{experiment}/jobs"),
                None,
            )
            .await?;
            let jobs = v["jobs"].as_array().cloned().unwrap_or_default();
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
        ApiCommand::Job(JobCmd::Status(j)) => {
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
        ApiCommand::Job(JobCmd::Logs(j)) => {
            let path = c.org_path(&format!(
                "/experiments/{}/jobs/{}/logs",
                j.experiment, j.job
            ));
            let a = c.call(Method::GET, &path, None).await?;
            let text = String::from_utf8_lossy(&a.raw).to_string();
            out.show(&json!({"logs": text}), || text.trim_end().to_string())
        }
        ApiCommand::Job(JobCmd::Cancel(j)) => job_action(c, out, &j, "cancel").await,
        ApiCommand::Job(JobCmd::Pause(j)) => job_action(c, out, &j, "pause").await,
        ApiCommand::Job(JobCmd::Resume(j)) => job_action(c, out, &j, "resume").await,
        ApiCommand::Job(JobCmd::Wait {
            job,
            until,
            timeout,
            interval,
        }) => {
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
        ApiCommand::Infer(a) => infer(c, out, a).await,
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

fn is(status: &str, want: &str) -> bool {
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

async fn infer(c: &mut Client, out: &Out, a: InferArgs) -> Result<(), Failure> {
    let classes: Vec<u64> = if a.all {
        (1..=132).collect()
    } else {
        a.classes.clone()
    };
    if let Some(bad) = classes.iter().find(|c| !(1..=132).contains(*c)) {
        return Err(ConfigError(format!("--classes: {bad} is outside 1..132")).into());
    }
    let mut params = json!({});
    if !classes.is_empty() {
        params["label_prompt"] = json!(classes);
    }
    if !a.points.is_empty() {
        let mut pts = Vec::new();
        let mut labels = Vec::new();
        for p in &a.points {
            let (xyz, l) = parse_point(p).map_err(ConfigError)?;
            pts.push(json!(xyz));
            labels.push(l);
        }
        params["points"] = json!(pts);
        params["point_labels"] = json!(labels);
    }
    if classes.is_empty() && a.points.is_empty() {
        return Err(ConfigError("give --classes, --all or --point".into()).into());
    }
    let path = c.org_path(&format!("/experiments/{}/jobs", a.experiment));
    let ans = c
        .call(Method::POST, &path, Some(&json!({"action": "inference", "specs": {"image": a.image, "bundle_params": params}})))
        .await?;
    let ct = ans.content_type.clone().unwrap_or_default();
    let (name, bytes) = nrrd_part(&ct, ans.raw).await.map_err(|e| Failure {
        code: exit::DELIVERY,
        error: anyhow::anyhow!("inference answer: {e}"),
    })?;
    std::fs::write(&a.out, &bytes).with_context(|| format!("writing {}", a.out.display()))?;
    out.show(
        &json!({"out": a.out, "part": name, "bytes": bytes.len()}),
        || {
            format!(
                "wrote {} ({} bytes, part {name})",
                a.out.display(),
                bytes.len()
            )
        },
    )
}

/// Finds the `.nrrd` part of a multipart answer (named in its Content-Disposition).
pub async fn nrrd_part(content_type: &str, body: Vec<u8>) -> Result<(String, Vec<u8>), String> {
    let boundary = crate::source::http::boundary_of(content_type)
        .ok_or_else(|| format!("not a multipart answer ({content_type})"))?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes_of(body)) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut names = Vec::new();
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| format!("malformed multipart: {e}"))?
    {
        let name = field.file_name().map(str::to_string).unwrap_or_default();
        if name.to_ascii_lowercase().ends_with(".nrrd") {
            let data = field
                .bytes()
                .await
                .map_err(|e| format!("malformed multipart: {e}"))?;
            if !data.starts_with(b"NRRD") {
                return Err(format!("part {name} is not NRRD"));
            }
            return Ok((name, data.to_vec()));
        }
        names.push(field.name().unwrap_or("?").to_string());
    }
    Err(format!("no .nrrd part (parts: {})", names.join(", ")))
}

fn bytes_of(v: Vec<u8>) -> multer::bytes::Bytes {
    multer::bytes::Bytes::from(v)
}

/// What `status --experiment` adds: the CL job and how far the next round is.
pub async fn cl_summary(
    c: &mut Client,
    experiment: &str,
    sent_since: impl Fn(Option<&str>) -> i64,
) -> Result<Value, Failure> {
    let v = call(
        c,
        Method::GET,
        &format!("/experiments/{experiment}/jobs"),
        None,
    )
    .await?;
    let jobs = v["jobs"].as_array().cloned().unwrap_or_default();
    let Some(cl) = jobs.iter().rev().find(|j| j["action"] == "annotation") else {
        return Ok(json!({"experiment": experiment, "cl_job": null}));
    };
    let rounds: Vec<&Value> = jobs.iter().filter(|j| j["action"] == "train").collect();
    let done: Vec<&&Value> = rounds
        .iter()
        .filter(|j| is(j["status"].as_str().unwrap_or(""), "Done"))
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
