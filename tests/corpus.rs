//! The third-party SEG corpus (issue 12): SEGs written by the tools users run, never by
//! segbridge, checked against an independent reader.
//!
//! The corpus is made afresh in a temporary folder on every run:
//! - `tests/python/make_corpus.py` (pydicom, highdicom 0.28): CT series, and highdicom's BINARY,
//!   FRACTIONAL and LABELMAP SEGs, a SEG series split over two files, two image series in one
//!   study, an SR document and a presentation state inside a CT series;
//! - `tests/node/make_ohif_segs.mjs` (OHIF 3.13's store path: @cornerstonejs/adapters 5.6.8 and
//!   dcmjs 0.52.0, pinned by `tests/node/package-lock.json`): label map + RLE (OHIF's default),
//!   bitmap + RLE, bitmap + Explicit VR Little Endian, an update of the same image, a bitmap SEG
//!   whose unpainted segment the writer dropped and renumbered, and one whose frames the writer
//!   shifted (it holds one voxel less than was painted: segbridge must count what it holds);
//! - the dcmqi samples of `fixtures/dcmqi`, copied with their licence.
//!
//! `tests/python/read_corpus.py` then writes `expected.json`: per SEG series, the image it pairs
//! with, its status (with the reason kind where it is invalid), its frames and the voxels of each
//! segment, by pydicom, or numpy on the raw bytes where pydicom cannot decode. segbridge's
//! `scan --json` must agree on every SEG. The test fails, never skips, without node, the npm
//! packages or the Python venv: `scripts/test.sh` installs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::Value;

const HOW: &str = "run scripts/test.sh: it installs the Python venv (SEGBRIDGE_TEST_PYTHON) and \
                   the corpus's npm packages (SEGBRIDGE_TEST_NODE_DIR)";

/// The Python with pydicom + highdicom that scripts/test.sh installs.
fn python() -> PathBuf {
    let p = std::env::var("SEGBRIDGE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&p)
        .args(["-c", "import highdicom, pydicom, numpy"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{p} cannot import highdicom/pydicom/numpy: {HOW}");
    PathBuf::from(p)
}

/// The folder of tests/node's package, with its node_modules installed by `npm ci`.
fn node_dir() -> PathBuf {
    let dir = std::env::var("SEGBRIDGE_TEST_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("tests/node"));
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is not installed: {HOW}"
    );
    for pkg in ["@cornerstonejs/adapters", "dcmjs", "@babel/runtime"] {
        let manifest = dir.join("node_modules").join(pkg).join("package.json");
        assert!(
            manifest.is_file(),
            "{} is missing: {HOW}",
            manifest.display()
        );
    }
    dir
}

fn run(what: &str, cmd: &mut Command) {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}: {HOW}"));
    assert!(o.status.success(), "{what} failed: {}", text(&o));
}

fn copy_dir(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from).into_iter().map(Result::unwrap) {
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Writes the corpus into `corpus` and returns the independent reader's expected.json.
fn make_corpus(corpus: &Path) -> BTreeMap<String, Value> {
    let py = python();
    let node = node_dir();
    run(
        "make_corpus.py",
        Command::new(&py)
            .arg(repo_root().join("tests/python/make_corpus.py"))
            .arg(corpus),
    );
    run(
        "make_ohif_segs.mjs",
        Command::new("node")
            .arg(node.join("make_ohif_segs.mjs"))
            .arg(corpus),
    );
    copy_dir(&repo_root().join("fixtures/dcmqi"), &corpus.join("dcmqi"));
    run(
        "read_corpus.py",
        Command::new(&py)
            .arg(repo_root().join("tests/python/read_corpus.py"))
            .arg(corpus),
    );
    let text = std::fs::read_to_string(corpus.join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// What is wrong with segbridge's line for one SEG, against the reader's expectation.
fn compare(want: &Value, got: Option<&Value>) -> Vec<String> {
    let Some(got) = got else {
        return vec!["not in the scan".into()];
    };
    let mut bad = Vec::new();
    let status = want["status"].as_str().unwrap();
    if got["image"] != want["image"] {
        bad.push(format!(
            "image: expected {}, got {}",
            want["image"], got["image"]
        ));
    }
    if got["status"] != want["status"] {
        bad.push(format!(
            "status: expected {status}, got {} ({})",
            got["status"], got["reason"]
        ));
    } else if status == "invalid" {
        // the reason must be the reader's, not another refusal (a decoder failure, say)
        let reason = got["reason"].as_str().unwrap_or("").to_lowercase();
        let numbers: Vec<String> = want["reason_segments"]
            .as_array()
            .map(|a| a.iter().map(|n| n.to_string()).collect())
            .unwrap_or_default();
        let kind = want["reason_kind"].as_str().unwrap();
        let fits = match kind {
            "undeclared-segment" => {
                reason.contains("segment")
                    && numbers.iter().all(|n| reason.contains(n.as_str()))
                    && !reason.contains("unreadable")
            }
            "empty" => reason.contains("empty"),
            _ => !reason.contains("unreadable"),
        };
        if !fits {
            bad.push(format!(
                "reason: expected one of kind {kind} (segments {numbers:?}), got {reason:?}"
            ));
        }
    }
    let decoded = matches!(status, "ready" | "superseded");
    match got.get("segments") {
        Some(s) if voxels(s) != voxels(&want["segments"]) => bad.push(format!(
            "voxels per segment: expected {:?}, got {:?}",
            voxels(&want["segments"]),
            voxels(s)
        )),
        None if decoded => bad.push("no segments: the quality gate did not run".into()),
        _ => {}
    }
    if let Some(f) = got.get("frames") {
        if decoded && *f != want["frames"] {
            bad.push(format!("frames: expected {}, got {f}", want["frames"]));
        }
    }
    bad
}

#[test]
fn every_third_party_seg_matches_the_independent_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let expected = make_corpus(&corpus);
    let lines = scan_json(tmp.path(), &corpus, &[]);

    // the corpus holds what it is meant to: a generator that silently dropped a case fails here
    let cases: Vec<&str> = expected
        .values()
        .map(|e| e["case"].as_str().unwrap())
        .collect();
    for case in [
        "ohif-labelmap",
        "ohif-labelmap-update",
        "ohif-bitmap-rle",
        "ohif-bitmap-explicit",
        "ohif-bitmap-rle-shifted",
        "ohif-bitmap-unpainted",
        "highdicom/segs/hd-binary.dcm",
        "highdicom/segs/hd-fractional.dcm",
        "highdicom/segs/hd-labelmap.dcm",
        "highdicom/segs/hd-split-1of2.dcm (+1)",
        "highdicom/segs/hd-mixed-series.dcm",
        "dcmqi/23x38x3/seg/label.seg",
        "dcmqi/ct-3slice/partial_overlaps.dcm",
        "dcmqi/orphan/seg.dcm",
    ] {
        assert!(cases.contains(&case), "{case} missing from {cases:?}");
    }
    let statuses: Vec<&str> = expected
        .values()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    for s in ["ready", "superseded", "unmatched", "invalid"] {
        assert!(statuses.contains(&s), "no {s} SEG in the corpus");
    }

    let mut failures = Vec::new();
    for (uid, want) in &expected {
        let got = lines.iter().find(|l| l["label"] == uid.as_str());
        for problem in compare(want, got) {
            failures.push(format!(
                "{} [{}, {}, {}]: {problem}",
                want["case"].as_str().unwrap(),
                want["writer"].as_str().unwrap(),
                want["type"].as_str().unwrap(),
                want["transfer_syntax"].as_str().unwrap(),
            ));
        }
    }
    // every DICOM file of the corpus was read (a writer's quirk must not make a file unreadable)
    for l in lines.iter().filter(|l| l["status"] == "unreadable") {
        let path = l["path"].as_str().unwrap_or("");
        if !(path.ends_with(".json") || path.ends_with(".txt")) {
            failures.push(format!("{path}: unreadable: {}", l["reason"]));
        }
    }
    assert!(
        failures.is_empty(),
        "segbridge disagrees with the independent reader on {} of {} SEG series (corpus kept in \
         {}):\n{}",
        failures
            .iter()
            .map(|f| f.split(" [").next().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        expected.len(),
        tmp.keep().display(),
        failures.join("\n")
    );
}
