//! `segbridge demo`: the whole job offline. Starts the emulator on a free loopback port, sets up
//! a dataset, an experiment and a continual-learning job (round size 2, two rounds), syncs the
//! fixtures folder into a temporary ledger, and shows what was found, skipped, notified, and the
//! training rounds the notify started.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};

use crate::app::pipeline;
use crate::app::report::print_scan;
use crate::app::Failure;
use crate::dicom::MatchOutcome;
use crate::emulator::{self, EmulatorConfig};
use crate::ledger::Ledger;
use crate::monai::{ApiConfig, Client, Secret};

pub fn run(folder: &Option<PathBuf>, train_seconds: f64) -> Result<(), Failure> {
    let tmp = tempfile::Builder::new()
        .prefix("segbridge-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let folder = match folder {
        Some(f) => f.clone(),
        None if Path::new("fixtures").is_dir() => PathBuf::from("fixtures"),
        None => {
            let dir = tmp.path().join("fixtures");
            crate::fixtures::write_demo_set(&dir).context("generating fixtures")?;
            println!(
                "(no ./fixtures here: generated a fixture set in {})",
                dir.display()
            );
            dir
        }
    };
    let rt = crate::app::runtime()?;
    rt.block_on(demo(&folder, tmp.path(), train_seconds))
}

fn step(title: &str) {
    println!("\n== {title}");
}

async fn demo(folder: &Path, tmp: &Path, train_seconds: f64) -> Result<(), Failure> {
    let key = "demo";
    let emu = emulator::spawn(
        "127.0.0.1:0".parse().context("loopback address")?,
        EmulatorConfig {
            api_key: key.into(),
            train_seconds,
            ..Default::default()
        },
    )
    .await
    .context("cannot start the emulator")?;
    step(&format!("MONAI API emulator on {}", emu.url()));
    let mut api = ApiConfig::new(
        &emu.url(),
        crate::app::settings::DEFAULT_ORG,
        Some(Secret::new(key)),
    );
    api.retry_for = Duration::from_secs(10);
    let mut client = Client::new(api)?;
    client.login().await?;
    println!("logged in as {}", client.user_id.as_deref().unwrap_or("?"));

    let dataset = post(
        &mut client,
        "/datasets",
        json!({
            "name": "segbridge-demo", "description": "labels synced by segbridge demo",
            "type": "semantic_segmentation", "format": "monai",
            "client_url": "http://127.0.0.1:8042/dicom-web", "client_id": "orthanc",
            "client_secret": "not-used-by-the-demo", "filters": "Modality=CT"
        }),
    )
    .await?;
    let dataset_id = id_of(&dataset)?;
    println!("dataset     {dataset_id}");
    let bases = client
        .call(Method::GET, &client.org_path("/experiments:base"), None)
        .await?
        .body;
    let base = bases["experiments"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .filter(|e| e["network_arch"] == "monai_vista3d")
                .max_by_key(|e| e["version"].as_str().unwrap_or("").to_string())
        })
        .cloned()
        .context("no VISTA-3D base experiment")?;
    println!(
        "base        {} {} ({})",
        base["name"].as_str().unwrap_or(""),
        base["version"].as_str().unwrap_or(""),
        id_of(&base)?
    );
    let ws = post(
        &mut client,
        "/workspaces",
        json!({
            "name": "segbridge-demo", "cloud_type": "aws",
            "cloud_specific_details": {"cloud_bucket_name": "segbridge-demo",
                "access_key": "demo", "secret_key": "demo"}
        }),
    )
    .await?;
    let ws_id = id_of(&ws)?;
    let exp = post(
        &mut client,
        "/experiments",
        json!({
            "name": "segbridge-demo", "description": "continual learning from synced labels",
            "network_arch": "monai_vista3d", "base_experiment": [id_of(&base)?],
            "inference_dataset": dataset_id, "eval_dataset": dataset_id,
            "train_datasets": [dataset_id], "realtime_infer": true, "workspace": ws_id,
            "model_params": {"labels": {"1": "liver", "2": "kidney", "3": "spleen"}}
        }),
    )
    .await?;
    let exp_id = id_of(&exp)?;
    println!("experiment  {exp_id}");
    let cl = client
        .call(
            Method::POST,
            &client.org_path(&format!("/experiments/{exp_id}/jobs")),
            Some(&json!({"action": "annotation", "specs": {"round_size": 2,
                "stop_criteria": {"max_rounds": 2, "key_metric": 0.99},
                "train_spec": {"epochs": 1, "val_interval": 1}}})),
        )
        .await?
        .body;
    let cl_id = cl
        .as_str()
        .context("the CL job answer is not a job id")?
        .to_string();
    println!("CL job      {cl_id} (round_size 2, max_rounds 2)");

    step(&format!(
        "scan {} (with the quality gate, against the experiment's labels)",
        folder.display()
    ));
    let gate = crate::dicom::quality::Validator {
        labels: Some(
            [("1", "liver"), ("2", "kidney"), ("3", "spleen")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        strict_labels: false,
    };
    let scan = pipeline::scan_folder_cached(
        folder,
        &mut crate::source::folder::HeaderCache::default(),
        None,
        Some((&gate, &crate::ledger::KnownLookup::default())),
    )?;
    print_scan(&scan, false)?;

    step("sync: ledger → outbox → notify");
    let state = tmp.join("segbridge.db");
    let mut ledger = Ledger::open(&state, Duration::from_secs(5))?;
    let changes = pipeline::record(&mut ledger, &scan, &dataset_id)?;
    println!("{} changes queued in {}", changes.len(), state.display());
    let delivery = pipeline::deliver(&mut ledger, &mut client, &dataset_id, 100).await?;
    for b in &delivery.bodies {
        println!(
            "POST .../datasets/{dataset_id}/jobs {}",
            serde_json::to_string(b).unwrap_or_default()
        );
    }
    let skipped: Vec<_> = scan
        .labels
        .iter()
        .filter(|l| !matches!(l.outcome, MatchOutcome::Ready { .. }))
        .collect();
    println!(
        "notified {} labels in {} call(s); not notified: {} ({} superseded, {} unusable, {} unmatched, {} invalid); {} files skipped",
        delivery.entries_sent,
        delivery.calls,
        skipped.len(),
        skipped.iter().filter(|l| l.outcome.status() == crate::model::LabelStatus::Superseded).count(),
        skipped.iter().filter(|l| l.outcome.status() == crate::model::LabelStatus::Unusable).count(),
        skipped.iter().filter(|l| l.outcome.status() == crate::model::LabelStatus::Unmatched).count(),
        skipped.iter().filter(|l| l.outcome.status() == crate::model::LabelStatus::Invalid).count(),
        scan.listing.problems.len()
    );

    step("sync again: nothing new");
    let again = pipeline::record(&mut ledger, &scan, &dataset_id)?;
    let d2 = pipeline::deliver(&mut ledger, &mut client, &dataset_id, 100).await?;
    println!("{} changes, {} notify calls", again.len(), d2.calls);

    step("continual learning: rounds started by the notify");
    let jobs_path = client.org_path(&format!("/experiments/{exp_id}/jobs"));
    let deadline = Instant::now() + Duration::from_secs_f64(train_seconds * 3.0 + 10.0);
    let jobs = loop {
        let jobs = client.call(Method::GET, &jobs_path, None).await?.body;
        let list = jobs["jobs"].as_array().cloned().unwrap_or_default();
        let busy = list
            .iter()
            .any(|j| j["action"] == "train" && j["status"] != "Done" && j["status"] != "Canceled");
        if !busy || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for j in &jobs {
        match j["action"].as_str() {
            Some("train") => println!(
                "round {}  {}  {:<8} key metric {}",
                j["round"],
                j["id"].as_str().unwrap_or(""),
                j["status"].as_str().unwrap_or(""),
                j["result"]["key_metric"]
            ),
            _ => println!(
                "CL job   {}  {:<8} rounds {} (images waiting for the next round: {})",
                j["id"].as_str().unwrap_or(""),
                j["status"].as_str().unwrap_or(""),
                j["result"]["rounds"],
                j["result"]["images_pending"]
            ),
        }
    }
    let rounds = jobs.iter().filter(|j| j["action"] == "train").count();
    if delivery.entries_sent >= 2 && rounds == 0 {
        return Err(anyhow::anyhow!("the notify did not start a training round").into());
    }
    println!("\ndemo done: state was in {} (removed now)", tmp.display());
    emu.handle.abort();
    Ok(())
}

async fn post(client: &mut Client, rest: &str, body: Value) -> Result<Value, Failure> {
    let path = client.org_path(rest);
    Ok(client.call(Method::POST, &path, Some(&body)).await?.body)
}

fn id_of(v: &Value) -> anyhow::Result<String> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no id in {v}"))
}
