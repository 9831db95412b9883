//! The guide's whole annotation workflow through `segbridge api …` against the emulator, with a
//! REAL Orthanc as the dataset's DICOMweb server: login → dataset → base experiments →
//! workspace → experiment → CL job → next image → inference (class and point prompts) → SEGs
//! stored + sync → a round starts → job status/logs/wait → cancel → realtime off → cleanup.

use std::path::Path;
use std::process::Output;

use crate::common::orthanc::Orthanc;
use crate::common::*;
use segbridge::emulator::EmulatorConfig;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
use serde_json::Value;

/// `segbridge` against the emulator, run in `dir` (also used by `api.rs`).
pub(crate) struct W<'a> {
    pub emu: &'a Emu,
    pub dir: &'a Path,
}

impl W<'_> {
    pub fn run(&self, args: &[&str]) -> Output {
        segbridge(self.dir)
            .env("MONAI_API_KEY", &self.emu.key)
            .env("AWS_ACCESS_KEY_ID", "AKIA-TEST-ID")
            .env("AWS_SECRET_ACCESS_KEY", "aws-secret-never-printed")
            .arg(args[0])
            .args(["--api", &self.emu.url, "--retry-for", "3"])
            .args(&args[1..])
            .output()
            .unwrap()
    }
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    }
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["api", "--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }
    pub fn fails(&self, args: &[&str], code: i32, needle: &str) {
        let o = self.run(args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn the_guide_workflow_end_to_end() {
    let orthanc = Orthanc::start(serde_json::json!({}));
    let emu = Emu::with(EmulatorConfig {
        train_seconds: 0.5,
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let w = W {
        emu: &emu,
        dir: tmp.path(),
    };
    // the images on the PACS
    let cts: Vec<CtSeries> = (0..3)
        .map(|i| CtSeries::new(&format!("wf{i}"), 2))
        .collect();
    for ct in &cts {
        orthanc.stow(&write_ct(&tmp.path().join(&ct.name), ct, "IM").unwrap());
    }

    // login: a bad key is a clear error, a good one prints the user id and never the token
    let o = segbridge(tmp.path())
        .env("MONAI_API_KEY", "bad-key-77")
        .args(["api", "login", "--api", &emu.url])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("Invalid NGC_API_KEY") && !text(&o).contains("bad-key-77"));
    let login = w.ok(&["api", "login"]);
    assert!(
        login.contains("emulator-user") && !login.contains("emu-"),
        "{login}"
    );

    let ds = w.json(&[
        "dataset",
        "create",
        "--name",
        "wf",
        "--dicomweb",
        &orthanc.dicomweb(),
    ]);
    let ds = ds["id"].as_str().unwrap().to_string();
    let bases = w.json(&["experiment", "bases", "--arch", "monai_vista3d"]);
    let bases = bases.as_array().unwrap();
    assert_eq!(bases[0]["version"], "0.5.8", "newest first: {bases:?}");
    assert!(bases.iter().all(|b| b["network_arch"] == "monai_vista3d"));
    let base = bases[0]["id"].as_str().unwrap().to_string();
    let ws_args = [
        "workspace",
        "create",
        "--name",
        "wf",
        "--cloud",
        "aws",
        "--bucket",
        "wf-bucket",
    ];
    let ws_out = w.ok(&[&["api"][..], &ws_args].concat());
    assert!(!ws_out.contains("aws-secret-never-printed"), "{ws_out}");
    let ws = ws_out
        .trim()
        .strip_prefix("workspace ")
        .unwrap()
        .to_string();
    // like every create, the JSON is the object created (its credentials never shown)
    let ws_json = w.json(&ws_args);
    assert_eq!(ws_json["name"], "wf", "{ws_json}");
    assert_eq!(
        ws_json["cloud_specific_details"]["cloud_bucket_name"],
        "wf-bucket"
    );
    assert!(ws_json["id"].is_string(), "{ws_json}");
    let shown = ws_json.to_string();
    assert!(
        !shown.contains("aws-secret-never-printed") && !shown.contains("AKIA-TEST-ID"),
        "{shown}"
    );
    std::fs::write(
        tmp.path().join("labels.json"),
        r#"{"1": "liver", "2": "kidney"}"#,
    )
    .unwrap();
    let exp = w.json(&[
        "experiment",
        "create",
        "--name",
        "wf",
        "--base",
        &base,
        "--dataset",
        &ds,
        "--workspace",
        &ws,
        "--labels",
        "labels.json",
        "--realtime-infer",
    ]);
    let exp = exp["id"].as_str().unwrap().to_string();
    let cl = w.json(&[
        "cl",
        "start",
        "--experiment",
        &exp,
        "--round-size",
        "2",
        "--max-rounds",
        "2",
        "--epochs",
        "2",
        "--mlflow",
        "http://127.0.0.1:5000",
        "--mlflow-experiment",
        "wf",
    ]);
    // the job created, read back (the server answers its id alone)
    assert_eq!(cl["action"], "annotation", "{cl}");
    assert!(cl["status"].is_string(), "{cl}");
    let cl = cl["id"].as_str().unwrap().to_string();

    // the server recommends an image of the dataset, named by SEGBRIDGE_DATASET as for sync
    let o = segbridge(tmp.path())
        .env("MONAI_API_KEY", &emu.key)
        .env("SEGBRIDGE_DATASET", &ds)
        .args(["api", "--json", "next-image", "--api", &emu.url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let next: Value = serde_json::from_slice(&o.stdout).unwrap();
    let img = next["image"].as_str().unwrap().to_string();
    assert!(cts.iter().any(|c| c.series == img), "{next}");
    assert!(next["meta"]["RetrieveURL"].as_str().unwrap().contains(&img));
    assert_eq!(next["meta"]["Modality"], "CT");

    // inference, class prompts and point prompts
    w.ok(&[
        "api",
        "infer",
        "--experiment",
        &exp,
        "--image",
        &img,
        "--classes",
        "1,2",
        "--out",
        "classes.nrrd",
    ]);
    let nrrd = std::fs::read(tmp.path().join("classes.nrrd")).unwrap();
    assert!(nrrd.starts_with(b"NRRD0004") && nrrd.len() > 1024);
    w.ok(&[
        "api",
        "infer",
        "--experiment",
        &exp,
        "--image",
        &img,
        "--point",
        "3,4,1:1",
        "--point",
        "9,9,2:0",
        "--classes",
        "1",
        "--out",
        "points.nrrd",
    ]);
    assert!(std::fs::read(tmp.path().join("points.nrrd"))
        .unwrap()
        .starts_with(b"NRRD"));
    w.fails(
        &[
            "api",
            "infer",
            "--experiment",
            &exp,
            "--image",
            &img,
            "--point",
            "1,2:1",
            "--out",
            "x.nrrd",
        ],
        2,
        "three coordinates",
    );

    // two SEGs stored, synced: the first round starts
    for ct in &cts[..2] {
        let s = SegSpec::new(&format!("{}-seg", ct.name), ct);
        orthanc.stow(&write_seg(&tmp.path().join(&ct.name), &s, "seg").unwrap());
    }
    w.ok(&["sync", "--orthanc", &orthanc.url, "--dataset", &ds]);
    let jobs = w.json(&["jobs", "list", "--experiment", &exp]);
    let train = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["action"] == "train")
        .expect("a round started")
        .clone();
    let train = train["id"].as_str().unwrap().to_string();
    let table = w.ok(&["api", "jobs", "list", "--experiment", &exp]);
    assert!(
        table.contains("annotation") && table.contains("train"),
        "{table}"
    );
    w.ok(&[
        "api",
        "job",
        "wait",
        "--experiment",
        &exp,
        &train,
        "--until",
        "Done",
        "--timeout",
        "30s",
        "--interval",
        "0.1",
    ]);
    let st = w.json(&["job", "status", "--experiment", &exp, &train]);
    assert_eq!(st["status"], "Done");
    // like the guide's wait_for_job: a job past the status waited for fails, clearly
    w.fails(
        &[
            "api",
            "job",
            "wait",
            "--experiment",
            &exp,
            &train,
            "--until",
            "Running",
            "--interval",
            "0.1",
        ],
        6,
        "is already Done: it has passed Running",
    );
    w.fails(
        &[
            "api",
            "job",
            "wait",
            "--experiment",
            &exp,
            &train,
            "--until",
            "Canceled",
        ],
        2,
        "Canceled",
    );
    assert!(w
        .ok(&["api", "job", "logs", "--experiment", &exp, &cl])
        .contains("round 1"));
    // the bridge's status shows the CL job and how far the next round is
    let status = w.ok(&["status", "--experiment", &exp, "--dataset", &ds]);
    assert!(status.contains("1 rounds done"), "{status}");
    assert!(
        status.contains("more start the next (round size 2)"),
        "{status}"
    );

    // only the unlabeled image is recommended now
    for _ in 0..5 {
        assert_eq!(
            w.json(&["next-image", "--dataset", &ds])["image"],
            cts[2].series.as_str()
        );
    }

    // once every image has a label, none is left to recommend
    let last = SegSpec::new(&format!("{}-seg", cts[2].name), &cts[2]);
    orthanc.stow(&write_seg(&tmp.path().join(&cts[2].name), &last, "seg").unwrap());
    w.ok(&["sync", "--orthanc", &orthanc.url, "--dataset", &ds]);
    w.fails(
        &["api", "next-image", "--dataset", &ds],
        3,
        "No Unlabeled Images Found",
    );

    // pause/resume/cancel; waiting on a canceled job fails clearly
    w.ok(&["api", "job", "pause", "--experiment", &exp, &cl]);
    w.ok(&["api", "job", "resume", "--experiment", &exp, &cl]);
    w.ok(&["api", "job", "cancel", "--experiment", &exp, &cl]);
    w.fails(
        &[
            "api",
            "job",
            "wait",
            "--experiment",
            &exp,
            &cl,
            "--timeout",
            "5s",
            "--interval",
            "0.1",
        ],
        6,
        "ended Canceled",
    );
    w.fails(
        &["api", "job", "cancel", "--experiment", &exp, &cl],
        3,
        "cannot cancel",
    );

    // realtime inference off: refused without confirmation, irreversible after
    w.fails(&["api", "experiment", "stop-realtime", &exp], 2, "--yes");
    w.ok(&["api", "experiment", "stop-realtime", &exp, "--yes"]);
    w.fails(
        &[
            "api",
            "infer",
            "--experiment",
            &exp,
            "--image",
            &img,
            "--classes",
            "1",
            "--out",
            "y.nrrd",
        ],
        3,
        "not enabled",
    );

    // cleanup, then everything is gone
    let c = w.json(&[
        "cleanup",
        "--experiment",
        &exp,
        "--dataset",
        &ds,
        "--workspace",
        &ws,
    ]);
    assert_eq!(c["deleted"].as_array().unwrap().len(), 3, "{c}");
    w.fails(
        &["api", "cleanup", "--experiment", &exp, "--dataset", &ds],
        3,
        "not found",
    );
}
