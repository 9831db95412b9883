//! The dataset as the source of truth (issue 17, item 1): `sync --dataset ID` with no PACS flag
//! reads the dataset from the API and takes its client_url, client_id and filters; a SEG the
//! filters hide from the service is invalid, with why; a flag wins, and each difference from the
//! dataset is warned once. A REAL Orthanc and the built-in emulator.

use std::process::Output;
use std::time::Duration;

use crate::common::*;
use crate::pacs::Lab;
use segbridge::fixtures::{write_ct, CtSeries, SegSpec};
use segbridge::monai::DatasetSpec;

const KIDNEY_ONLY: &str = "Modality=CT&StudyDescription=Kidney*&limit=1000";

/// A CT series in a study described `description`, stored, with one stored SEG.
fn study(lab: &Lab, name: &str, description: &str) -> (CtSeries, SegSpec) {
    let mut ct = CtSeries::new(name, 2);
    ct.study_description = description.into();
    lab.orthanc
        .stow(&write_ct(&lab.gen().join(name), &ct, "IM").unwrap());
    let seg = lab.stored_seg(&format!("{name}-seg"), &ct, "20240101");
    (ct, seg)
}

/// A dataset in the emulator reading `client_url` with `filters`.
fn dataset(lab: &Lab, client_url: &str, filters: &str, user: Option<&str>) -> String {
    let mut spec = DatasetSpec::dicomweb("kidneys", client_url);
    spec.filters = Some(filters.into());
    spec.client_id = user.map(str::to_string);
    let t = lab.emu.token();
    let (s, b) = lab.emu.call(
        "POST",
        "/api/v1/orgs/iasixjqzw1hj/datasets",
        Some(&t),
        Some(serde_json::to_value(spec).unwrap()),
    );
    assert_eq!(s, 201, "{b}");
    b["id"].as_str().unwrap().to_string()
}

/// `sync --dataset ID` against the emulator, with `extra` flags.
fn sync(lab: &Lab, id: &str, extra: &[&str]) -> Output {
    segbridge(lab.dir.path())
        .env("MONAI_API_KEY", &lab.emu.key)
        .env("DICOMWEB_PASSWORD", "hunter2-pw")
        .args([
            "sync",
            "--dataset",
            id,
            "--api",
            &lab.emu.url,
            "--retry-for",
            "5",
        ])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn sync_with_only_the_dataset_reads_its_pacs_and_filters_and_refuses_hidden_segs() {
    let lab = Lab::new();
    let (kidney, kidney_seg) = study(&lab, "kidney1", "Kidney CT");
    let (_, liver_seg) = study(&lab, "liver1", "Liver CT");
    let id = dataset(&lab, &lab.orthanc.dicomweb(), KIDNEY_ONLY, None);
    let o = sync(&lab, &id, &[]);
    assert!(o.status.success(), "{}", text(&o));
    // exactly the pair the service can train on
    assert_eq!(
        entries(&lab.emu.notifications()),
        vec![e("added", &kidney.series, &kidney_seg.series_uid())]
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("2 SEG series: 1 ready, 0 superseded, 0 unusable, 0 unmatched, 1 invalid"),
        "{}",
        text(&o)
    );
    let why = format!(
        "invalid {}: SEG series is outside the dataset's filters (StudyDescription=Kidney*): \
         the service never sees it",
        liver_seg.series_uid()
    );
    assert!(out.contains(&why), "{}", text(&o));
    assert!(!text(&o).contains("hunter2-pw"), "{}", text(&o));
    // a second run has nothing new to say
    let o = sync(&lab, &id, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(lab.emu.notifications().len(), 1);
}

#[test]
fn flags_win_over_the_dataset_and_each_difference_is_warned_once() {
    let lab = Lab::new();
    let (kidney, kidney_seg) = study(&lab, "kidney2", "Kidney CT");
    let (liver, liver_seg) = study(&lab, "liver2", "Liver CT");
    // the dataset names another server (nothing listens on port 9) and the kidney filter
    let id = dataset(
        &lab,
        "http://127.0.0.1:9/dicom-web",
        KIDNEY_ONLY,
        Some("reader"),
    );
    let pacs = lab.orthanc.dicomweb();
    let o = sync(
        &lab,
        &id,
        &[
            "--dicomweb",
            &pacs,
            "--image-filter",
            "Modality=CT",
            "--dicomweb-user",
            "me",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // the flags' server and filter: both labels
    let mut want = vec![
        e("added", &kidney.series, &kidney_seg.series_uid()),
        e("added", &liver.series, &liver_seg.series_uid()),
    ];
    want.sort();
    let mut got = entries(&lab.emu.notifications());
    got.sort();
    assert_eq!(got, want);
    let err = String::from_utf8_lossy(&o.stderr);
    let once = |a: &str, b: &str| {
        let n = err
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(a) && l.contains(b))
            .count();
        assert_eq!(n, 1, "{a} / {b} warned {n} times:\n{err}");
    };
    once(
        &format!("--dicomweb {pacs}"),
        "http://127.0.0.1:9/dicom-web",
    );
    once("--image-filter Modality=CT", KIDNEY_ONLY);
    once("--dicomweb-user me", "client_id reader");
    assert!(!err.contains("hunter2-pw"), "a secret in the log:\n{err}");
}

#[test]
fn an_unreachable_api_without_source_flags_fails_naming_the_dataset_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let o = segbridge(dir.path())
        .env("MONAI_API_KEY", "k")
        .args(["sync", "--dataset", "ds-42", "--api", "http://127.0.0.1:9"])
        .args(["--retry-for", "0.5"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot read dataset ds-42") && err.contains("--dicomweb URL"),
        "{err}"
    );
    // with a source given, the run goes on (here: nothing to list, nothing to send)
    let folder = dir.path().join("empty");
    std::fs::create_dir_all(&folder).unwrap();
    let o = segbridge(dir.path())
        .env("MONAI_API_KEY", "k")
        .args(["sync", "--dataset", "ds-42", "--api", "http://127.0.0.1:9"])
        .args(["--retry-for", "0.5", "--folder"])
        .arg(&folder)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("going on with the sources"),
        "{}",
        text(&o)
    );
}

#[test]
fn watch_with_only_the_dataset_reads_its_pacs_and_notifies_what_the_service_sees() {
    let lab = Lab::new();
    let (kidney, kidney_seg) = study(&lab, "kidney3", "Kidney CT");
    let id = dataset(&lab, &lab.orthanc.dicomweb(), KIDNEY_ONLY, None);
    let log = lab.dir.path().join("watch.log");
    let watch = segbridge(lab.dir.path())
        .env("MONAI_API_KEY", &lab.emu.key)
        .args(["watch", "--dataset", &id, "--api", &lab.emu.url])
        .args(["--poll", "0.2", "--reconcile", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let got = || entries(&lab.emu.notifications());
    wait_until("the kidney label", Duration::from_secs(30), || {
        !got().is_empty()
    });
    // a label of a study the filters leave out, stored while watching, is never notified;
    // one of a kidney study is
    let (_, _) = study(&lab, "liver3", "Liver CT");
    let (kidney4, kidney4_seg) = study(&lab, "kidney4", "Kidney CT");
    wait_until("the second kidney label", Duration::from_secs(30), || {
        got().len() >= 2
    });
    // the liver label judged (status reads the ledger beside the running watch)
    let why = "SEG series is outside the dataset's filters (StudyDescription=Kidney*)";
    let status = || {
        let o = segbridge(lab.dir.path())
            .args(["status", "--json"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    wait_until(
        "the liver label judged invalid",
        Duration::from_secs(30),
        || status().contains(why),
    );
    terminate(watch);
    let mut want = vec![
        e("added", &kidney.series, &kidney_seg.series_uid()),
        e("added", &kidney4.series, &kidney4_seg.series_uid()),
    ];
    want.sort();
    let mut have = got();
    have.sort();
    assert_eq!(have, want, "{}", std::fs::read_to_string(&log).unwrap());
}
