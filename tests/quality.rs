//! The label quality gate: voxel counts proven against an independent reader (pydicom) on SEGs
//! written by another tool (highdicom: odd-sized BINARY, FRACTIONAL, LABELMAP, JPEG 2000, RLE),
//! against the dcmqi samples' reference counts, every refusal with its reason, and the same
//! checks through a real Orthanc.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::orthanc::Orthanc;
use crate::common::*;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegFaults, SegSpec};
use serde_json::{json, Value};

/// The Python with pydicom + highdicom that scripts/test.sh installs.
fn python() -> PathBuf {
    let p = std::env::var("SEGBRIDGE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&p)
        .args(["-c", "import highdicom, pydicom, numpy, pylibjpeg"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{p} cannot import highdicom/pydicom/pylibjpeg: run scripts/test.sh (it installs them in a venv)");
    PathBuf::from(p)
}

/// highdicom SEGs and pydicom's counts for them.
fn third_party(dir: &Path) -> Value {
    let o = Command::new(python())
        .arg(repo_root().join("tests/python/make_segs.py"))
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "make_segs.py: {}", text(&o));
    serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap()
}

fn counts(line: &Value) -> BTreeMap<String, u64> {
    assert!(line["segments"].is_array(), "no segments in {line}");
    voxels(&line["segments"])
}

fn by_label<'a>(lines: &'a [Value], uid: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["label"] == uid)
        .unwrap_or_else(|| panic!("{uid} not in scan"))
}

#[test]
fn highdicom_segs_match_an_independent_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = third_party(tmp.path());
    let lines = scan_json(tmp.path(), tmp.path(), &[]);
    for (case, want) in expected.as_object().unwrap() {
        let got = by_label(&lines, want["series"].as_str().unwrap());
        assert_ne!(got["status"], "invalid", "{case}: {got}");
        let want_counts = voxels(&want["segments"]);
        assert_eq!(
            counts(got),
            want_counts,
            "{case} ({})",
            want["transfer_syntax"]
        );
        assert_eq!(got["frames"], want["frames"], "{case}");
    }
    assert!(
        expected.get("binary-odd-13x13").is_some() && expected.get("binary-jpeg2000").is_some()
    );
}

/// OHIF's three layouts (bitmap RLE, bitmap padded, label map RLE 8/16 bit) and its renumbered
/// segments, rebuilt byte for byte by tests/python/make_ohif.py, each fragment checked there by
/// an independent numpy PackBits decoder (and pydicom for 8/16 bits).
#[test]
fn ohif_segs_decode_and_renumbered_segments_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(python())
        .arg(repo_root().join("tests/python/make_ohif.py"))
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "make_ohif.py: {}", text(&o));
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("expected.json")).unwrap())
            .unwrap();
    let lines = scan_json(tmp.path(), tmp.path(), &[]);
    for (case, want) in expected.as_object().unwrap() {
        let got = by_label(&lines, want["series"].as_str().unwrap());
        // several labels of one image: one is ready, the others superseded, none invalid
        let status = match got["status"].as_str().unwrap() {
            "superseded" => "ready",
            s => s,
        };
        assert_eq!(status, want["status"], "{case}: {got}");
        if let Some(reason) = want["reason"].as_str() {
            assert!(
                got["reason"].as_str().unwrap().contains(reason),
                "{case}: wanted '{reason}' in {got}"
            );
            continue;
        }
        let want_counts = voxels(&want["segments"]);
        assert_eq!(counts(got), want_counts, "{case}: {got}");
        assert_eq!(got["frames"], want["frames"], "{case}");
    }
    assert_eq!(expected.as_object().unwrap().len(), 7);
}

#[test]
fn dcmqi_samples_have_their_reference_counts() {
    let lines = scan_json(&repo_root(), Path::new("fixtures/dcmqi"), &[]);
    let find = |suffix: &str| {
        lines
            .iter()
            .find(|l| l["source"].as_str().is_some_and(|s| s.ends_with(suffix)))
            .unwrap()
            .clone()
    };
    let want: [(&str, &[(u32, u64)]); 5] = [
        ("23x38x3/seg/label.seg", &[(1, 322)]),
        ("24x38x3/seg/label.seg", &[(1, 315)]),
        ("24x38x3/sparse-labelmap-noppv.dcm", &[(1, 630)]),
        ("ct-3slice/liver.dcm", &[(1, 107098)]),
        (
            "ct-3slice/partial_overlaps.dcm",
            &[(1, 9602), (2, 11888), (3, 10743), (4, 6693), (5, 4713)],
        ),
    ];
    for (file, segs) in want {
        let l = find(file);
        let expect: BTreeMap<String, u64> = segs.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        assert_eq!(counts(&l), expect, "{file}");
    }
    // the orphan's image is absent: it is unmatched, so it is not decoded at all
    assert!(find("orphan/seg.dcm").get("segments").is_none());
}

/// One case per directory, each with its own image series.
fn faulty(root: &Path, name: &str, f: impl FnOnce(&mut SegSpec)) -> SegSpec {
    let ct = CtSeries::new(&format!("q-{name}"), 3);
    write_ct(&root.join(name).join("ct"), &ct, "IM").unwrap();
    let mut s = SegSpec::new(&format!("q-{name}-seg"), &ct);
    s.segments = vec!["liver".into(), "kidney".into()];
    f(&mut s);
    write_seg(&root.join(name), &s, "seg.dcm").unwrap();
    s
}

#[test]
fn every_refusal_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cases");
    let good = faulty(&root, "good", |_| {});
    let empty = faulty(&root, "empty", |s| {
        s.faults = SegFaults {
            empty: true,
            ..Default::default()
        }
    });
    let one_empty = faulty(&root, "one-empty", |s| s.faults.empty_segment = Some(1));
    let rows = faulty(&root, "rows", |s| s.faults.size = Some((8, 8)));
    let sop = faulty(&root, "sop", |s| s.faults.unknown_source = true);
    let far = faulty(&root, "far", |s| s.faults.z_shift = 100.0);
    let short = faulty(&root, "short", |s| s.faults.short_pixels = true);
    let named = faulty(&root, "named", |s| {
        s.segments = vec!["liver".into(), "tumour xyz".into()]
    });
    // drawn in the other order: segment 1 is the kidney, which the experiment numbers 2
    let swapped = faulty(&root, "swapped", |s| {
        s.segments = vec!["kidney".into(), "liver".into()]
    });
    std::fs::write(
        tmp.path().join("labels.json"),
        r#"{"1": "Liver", "2": "Kidney"}"#,
    )
    .unwrap();
    let lines = scan_json(tmp.path(), &root, &["--labels", "labels.json"]);
    let st = |s: &SegSpec| by_label(&lines, &s.series_uid()).clone();
    assert_eq!(st(&good)["status"], "ready", "{}", st(&good));
    assert_eq!(counts(&st(&good)).len(), 2);
    let expect_invalid = [
        (&empty, "empty segmentation"),
        (
            &rows,
            "Rows/Columns 8x8 differ from the source images' 16x16",
        ),
        (&sop, "frame 1 references SOP Instance"),
        (&far, "lies outside the source series extent"),
        (&short, "truncated pixel data"),
        (
            &swapped,
            "segment 1 'kidney' would train as label 1 'Liver'; Kidney is label 2",
        ),
    ];
    for (s, why) in expect_invalid {
        let l = st(s);
        assert_eq!(l["status"], "invalid", "{}: {l}", s.name);
        assert!(
            l["reason"].as_str().unwrap().contains(why),
            "{}: {l}",
            s.name
        );
    }
    let l = st(&one_empty);
    assert_eq!(l["status"], "ready", "{l}");
    assert!(
        l["warnings"]
            .to_string()
            .contains("segment 2 'kidney' is empty"),
        "{l}"
    );
    let l = st(&named);
    assert_eq!(l["status"], "ready", "{l}");
    assert!(
        l["warnings"].to_string().contains("'tumour xyz'")
            && l["warnings"].to_string().contains("known: Liver, Kidney"),
        "{l}"
    );
    // strict: an unknown segment name refuses the label
    let strict = scan_json(
        tmp.path(),
        &root,
        &["--labels", "labels.json", "--strict-labels"],
    );
    let l = by_label(&strict, &named.series_uid());
    assert_eq!(l["status"], "invalid", "{l}");
    // --no-validate: nothing is decoded, the empty one is ready
    let off = scan_json(tmp.path(), &root, &["--no-validate"]);
    assert_eq!(by_label(&off, &empty.series_uid())["status"], "ready");
    assert!(by_label(&off, &empty.series_uid())
        .get("segments")
        .is_none());
}

#[test]
fn an_invalid_newer_label_leaves_the_notified_one_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emu::start();
    let ds = emu.create_dataset();
    let folder = tmp.path().join("f");
    let ct = CtSeries::new("keep", 2);
    write_ct(&folder.join("ct"), &ct, "IM").unwrap();
    let v1 = SegSpec::new("keep-v1", &ct);
    write_seg(&folder, &v1, "v1").unwrap();
    let o = sync(&emu, tmp.path(), &folder, &ds, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let mut v2 = SegSpec::new("keep-v2", &ct);
    v2.content = ("20250101".into(), "000000".into());
    v2.faults.empty = true;
    write_seg(&folder, &v2, "v2").unwrap();
    let o = sync(&emu, tmp.path(), &folder, &ds, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        entries(&emu.notifications()),
        vec![e("added", &ct.series, &v1.series_uid())]
    );
    let st = segbridge(tmp.path()).args(["status"]).output().unwrap();
    let out = String::from_utf8_lossy(&st.stdout);
    assert!(
        out.contains("invalid") && out.contains("empty segmentation"),
        "{out}"
    );
    // the verdict is kept: a later run neither decodes it again nor notifies it
    let o = sync(&emu, tmp.path(), &folder, &ds, &[]);
    assert!(o.status.success());
    assert_eq!(emu.notifications().len(), 1);
}

#[test]
fn experiment_labels_come_from_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emu::start();
    let t = emu.token();
    let ds = emu.create_dataset();
    let (_, exp) = emu.call("POST", "/api/v1/orgs/iasixjqzw1hj/experiments", Some(&t),
        Some(json!({"name": "e", "train_datasets": [ds], "model_params": {"labels": {"1": "spleen"}}})));
    let exp = exp["id"].as_str().unwrap().to_string();
    let root = tmp.path().join("f");
    let s = faulty(&root, "api-labels", |_| {});
    let o = segbridge(tmp.path())
        .env("MONAI_API_KEY", &emu.key)
        .args([
            "scan",
            "--api",
            &emu.url,
            "--json",
            "--strict-labels",
            "--experiment",
            &exp,
            "--folder",
        ])
        .arg(&root)
        .output()
        .unwrap();
    let lines = json_lines(&o);
    let l = by_label(&lines, &s.series_uid());
    assert_eq!(l["status"], "invalid", "{l}");
    assert!(
        l["reason"].as_str().unwrap().contains("known: spleen"),
        "{l}"
    );
}

#[test]
fn the_same_checks_through_a_real_orthanc() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = third_party(&tmp.path().join("hd"));
    let orthanc = Orthanc::start(json!({}));
    let files: Vec<PathBuf> = walkdir::WalkDir::new(tmp.path().join("hd"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "dcm"))
        .map(|e| e.into_path())
        .collect();
    // an SR sharing each highdicom image series' UID (it sorts first): the geometry the gate
    // takes from WADO-RS metadata comes from the images only
    let mut srs = Vec::new();
    for (k, series) in ["odd13", "sq16", "sq32"].iter().enumerate() {
        let like = tmp.path().join("hd/images").join(series).join("001.dcm");
        let sr = tmp.path().join(format!("sr-{series}.dcm"));
        let sop = format!("1.1.{k}");
        std::fs::write(
            &sr,
            non_image(&like, "1.2.840.10008.5.1.4.1.1.88.22", "SR", &sop),
        )
        .unwrap();
        srs.push(sr);
    }
    orthanc.stow(&files);
    orthanc.stow(&srs);
    let root = tmp.path().join("gen");
    let empty = faulty(&root, "empty", |s| s.faults.empty = true);
    let gen_files: Vec<PathBuf> = walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    orthanc.stow(&gen_files);
    let o = segbridge(tmp.path())
        .args(["scan", "--json", "--dicomweb", &orthanc.dicomweb()])
        .output()
        .unwrap();
    let lines = json_lines(&o);
    for (case, want) in expected.as_object().unwrap() {
        let got = by_label(&lines, want["series"].as_str().unwrap());
        let want_counts = voxels(&want["segments"]);
        assert_eq!(counts(got), want_counts, "{case} through Orthanc: {got}");
        assert_ne!(got["status"], "invalid", "{case} through Orthanc: {got}");
    }
    let l = by_label(&lines, &empty.series_uid());
    assert_eq!(l["status"], "invalid", "{l}");
    // and sync notifies the valid ones only
    let emu = Emu::start();
    let ds = emu.create_dataset();
    let o = segbridge(tmp.path())
        .env("MONAI_API_KEY", &emu.key)
        .args([
            "sync",
            "--orthanc",
            &orthanc.url,
            "--dataset",
            &ds,
            "--api",
            &emu.url,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let labels: Vec<String> = entries(&emu.notifications())
        .into_iter()
        .map(|(_, _, l)| l)
        .collect();
    assert!(!labels.contains(&empty.series_uid()));
    assert!(labels.contains(
        &expected["binary-jpeg2000"]["series"]
            .as_str()
            .unwrap()
            .to_string()
    ));
}
