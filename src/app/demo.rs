//! `segbridge demo`: the whole job offline. Starts the emulator on a free loopback port, sets up
//! a dataset, an experiment and a continual-learning job (round size 2, two rounds), syncs the
//! fixtures folder into a temporary ledger, and shows what was found, skipped, notified, and the
//! training rounds the notify started.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use crate::app::pipeline;
use crate::app::report::print_scan;
use crate::app::Failure;
use crate::dicom::MatchOutcome;
use crate::emulator::{self, EmulatorConfig};
use crate::ledger::Ledger;
use crate::monai::{
    newest_first, AnnotationSpecs, ApiConfig, AwsDetails, Client, Cloud, DatasetSpec,
    ExperimentSpec, Extra, JobAction, JobStatus, Labels, Secret, StopCriteria, TrainSpec,
    WorkspaceSpec, VISTA3D_ARCH,
};

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

    let dataset = DatasetSpec {
        description: "labels synced by segbridge demo".into(),
        ..DatasetSpec::dicomweb("segbridge-demo", "http://127.0.0.1:8042/dicom-web")
    }
    .with_credentials("orthanc", Secret::new("not-used-by-the-demo"));
    let dataset_id = client.create_dataset(&dataset).await?.id;
    println!("dataset     {dataset_id}");
    let mut bases = client.base_experiments().await?;
    bases.retain(|e| e.network_arch == VISTA3D_ARCH);
    newest_first(&mut bases);
    let base = bases
        .into_iter()
        .next()
        .context("no VISTA-3D base experiment")?;
    println!("base        {} {} ({})", base.name, base.version, base.id);
    let ws = WorkspaceSpec {
        name: "segbridge-demo".into(),
        cloud: Cloud::Aws(AwsDetails {
            cloud_bucket_name: "segbridge-demo".into(),
            access_key: Secret::new("demo"),
            secret_key: Secret::new("demo"),
            cloud_region: None,
        }),
    };
    let ws_id = client.create_workspace(&ws).await?.id;
    let labels: Labels = DEMO_LABELS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let exp = ExperimentSpec {
        description: "continual learning from synced labels".into(),
        realtime_infer: true,
        ..ExperimentSpec::new(
            "segbridge-demo",
            &base.id,
            &dataset_id,
            &ws_id,
            labels.clone(),
        )
    };
    let exp_id = client
        .create_experiment(&exp)
        .await?
        .id
        .context("no experiment id")?;
    println!("experiment  {exp_id}");
    let max_rounds = 2;
    let cl_specs = AnnotationSpecs {
        round_size: 2,
        stop_criteria: StopCriteria {
            max_rounds,
            key_metric: Some(0.99),
        },
        train_spec: TrainSpec {
            epochs: 1,
            val_interval: 1,
            ..Default::default()
        },
    };
    let cl_id = client.start_cl(&exp_id, cl_specs).await?;
    println!("CL job      {cl_id} (round_size 2, max_rounds 2)");

    step(&format!(
        "scan {} (with the quality gate, against the experiment's labels)",
        folder.display()
    ));
    let gate = crate::dicom::quality::Validator {
        labels: Some(labels),
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
    let mut ledger = Ledger::open(
        &crate::ledger::StateAt::File(state.clone()),
        Duration::from_secs(5),
    )?;
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
    let deadline = Instant::now() + Duration::from_secs_f64(train_seconds * 3.0 + 10.0);
    let jobs = loop {
        let list = client.jobs(&exp_id).await?;
        let busy = list.iter().any(|j| {
            j.is(&JobAction::Train)
                && j.status != JobStatus::Done
                && j.status != JobStatus::Canceled
        });
        if !busy || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for j in &jobs {
        let id = j.id.as_deref().unwrap_or_default();
        let result = j.result.as_ref().map(|r| &r.extra);
        if j.is(&JobAction::Train) {
            println!(
                "round {}  {id}  {:<8} key metric {}",
                shown(Some(&j.extra), "round"),
                j.status.as_str(),
                j.key_metric().map_or(Value::Null, Value::from)
            );
        } else {
            let rounds = shown(result, "rounds");
            // once max_rounds is reached there is no next round to wait for
            let next = if rounds.as_u64().is_some_and(|r| r >= max_rounds) {
                "max_rounds reached: no further round".to_string()
            } else if j.status.is_terminal() {
                "the job has ended: no further round".to_string()
            } else {
                format!(
                    "images waiting for the next round: {}",
                    shown(result, "images_pending")
                )
            };
            println!(
                "CL job   {id}  {:<8} rounds {rounds} of {max_rounds} ({next})",
                j.status.as_str(),
            );
        }
    }
    let rounds = jobs.iter().filter(|j| j.is(&JobAction::Train)).count();
    if delivery.entries_sent >= 2 && rounds == 0 {
        return Err(anyhow::anyhow!("the notify did not start a training round").into());
    }
    println!("\ndemo done: state was in {} (removed now)", tmp.display());
    emu.handle.abort();
    Ok(())
}

/// The experiment's classes (and the quality gate's).
const DEMO_LABELS: [(&str, &str); 3] = [("1", "liver"), ("2", "kidney"), ("3", "spleen")];

/// A field the emulator adds to a job (its round, a CL job's counts), as JSON shows it.
fn shown(fields: Option<&Extra>, key: &str) -> Value {
    fields
        .and_then(|f| f.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}
