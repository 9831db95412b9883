//! Hostile and broken input: every case ends in a clear error (or a clear outcome), never a
//! panic, a hang or unbounded memory. The committed corpus is tests/corpus/; more cases are
//! made here (every truncation of a real SEG, bad UIDs, a FIFO, hostile DICOMweb answers).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use serde_json::Value;

fn scan_json(folder: &Path) -> (Vec<Value>, std::process::Output) {
    let o = segbridge(folder)
        .args(["scan", "--json", "--folder"])
        .arg(folder)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let lines = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, o)
}

fn reason_of<'a>(lines: &'a [Value], file: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l["path"].as_str().is_some_and(|p| p.ends_with(file)))
        .and_then(|l| l["reason"].as_str())
        .unwrap_or_else(|| panic!("{file} not reported as unreadable: {lines:?}"))
}

#[test]
fn the_committed_corpus_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(repo_root().join("tests/corpus")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let t = Instant::now();
    let (lines, _) = scan_json(dir.path());
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(
        reason_of(&lines, "biglen.dcm").contains("declares 4294967280 bytes but only 4 are left")
    );
    assert!(reason_of(&lines, "deep.dcm").contains("nested more than 64 deep"));
    assert!(reason_of(&lines, "neverend.dcm").contains("never ends"));
    // non-UTF-8 text is read (lossily), not a reason to fail
    let l = lines
        .iter()
        .find(|l| {
            l["source"]
                .as_str()
                .is_some_and(|p| p.ends_with("nonutf8.dcm"))
        })
        .unwrap();
    assert_eq!(l["status"], "unmatched");
}

#[test]
fn every_truncation_of_a_real_seg_is_handled() {
    let dir = tempfile::tempdir().unwrap();
    let seg = std::fs::read(repo_root().join("fixtures/generated/abdomen-ct/seg-1")).unwrap();
    let step = 1.max(seg.len() / 1500);
    let mut n: usize = 0;
    for cut in (0..seg.len()).step_by(step) {
        std::fs::write(dir.path().join(format!("cut-{cut:06}")), &seg[..cut]).unwrap();
        n += 1;
    }
    let t = Instant::now();
    let (lines, _) = scan_json(dir.path());
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
    // every file is accounted for: unreadable with a reason, or a readable copy of the SEG
    // (cut inside its pixel data) grouped into its one series as a named duplicate
    let unreadable = lines.iter().filter(|l| l["status"] == "unreadable").count();
    let series: Vec<&Value> = lines.iter().filter(|l| l.get("label").is_some()).collect();
    assert_eq!(series.len(), 1, "{series:?}");
    let dups = series[0]["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter(|w| w.to_string().contains("duplicate SOPInstanceUID"))
                .count()
        })
        .unwrap_or(0);
    assert!(unreadable > n / 2, "{unreadable} of {n}");
    assert_eq!(unreadable + 1 + dups, n);
    for l in lines.iter().filter(|l| l["status"] == "unreadable") {
        let r = l["reason"].as_str().unwrap();
        assert!(!r.is_empty() && r.len() < 400, "{r}");
    }
}

fn write_with_uids(path: &Path, series: &str) {
    let obj = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(segbridge::dicom::SEG_SOP_CLASS),
        ),
        DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.4"),
        ),
        DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3"),
        ),
        DataElement::new(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(series),
        ),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("SEG")),
    ]);
    obj.with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1"))
        .unwrap()
        .write_to_file(path)
        .unwrap();
}

#[test]
fn empty_and_overlong_uids_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    write_with_uids(&dir.path().join("empty-uid.dcm"), "");
    write_with_uids(&dir.path().join("long-uid.dcm"), &"1.".repeat(100));
    write_with_uids(&dir.path().join("letters-uid.dcm"), "1.2.abc");
    let (lines, _) = scan_json(dir.path());
    assert!(
        reason_of(&lines, "empty-uid.dcm").contains("missing required attribute SeriesInstanceUID")
    );
    assert!(reason_of(&lines, "long-uid.dcm")
        .contains("SeriesInstanceUID (0020,000E) is not a valid DICOM UID (200 characters"));
    assert!(reason_of(&lines, "letters-uid.dcm").contains("not a valid DICOM UID (character 'a')"));
}

#[test]
fn a_fifo_and_unreadable_entries_do_not_hang_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.dcm");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink("/nonexistent/target", dir.path().join("dangling")).unwrap();
    std::fs::copy(
        repo_root().join("fixtures/generated/liver-ct/seg.dcm"),
        dir.path().join("ok.dcm"),
    )
    .unwrap();
    let t = Instant::now();
    let (lines, _) = scan_json(dir.path());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "a FIFO hung the scan"
    );
    assert!(lines
        .iter()
        .any(|l| l["source"].as_str().is_some_and(|p| p.ends_with("ok.dcm"))));
    assert!(reason_of(&lines, "dangling").contains("vanished or dangling"));
}

/// A DICOMweb server that answers the listing normally and the metadata with `body`.
fn hostile_dicomweb(body: &'static str, huge: bool) -> (String, tokio::runtime::Runtime) {
    use axum::routing::get;
    let listing = r#"[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]}, "00201209": {"vr": "IS", "Value": [1]}}]"#;
    let app = axum::Router::new()
        .route(
            "/dicom-web/series",
            get(move || async move { ([("content-type", "application/dicom+json")], listing) }),
        )
        .route(
            "/dicom-web/studies/{st}/series/{se}/metadata",
            get(move || async move {
                if huge {
                    // 500 MB of JSON, made as it is sent
                    let chunk = axum::body::Bytes::from(vec![b' '; 1 << 20]);
                    let stream = futures_util::stream::iter(
                        (0..500).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
                    );
                    axum::response::Response::new(axum::body::Body::from_stream(stream))
                } else {
                    axum::response::Response::new(axum::body::Body::from(body))
                }
            }),
        );
    let (root, rt) = serve(app);
    (format!("{root}/dicom-web"), rt)
}

#[test]
fn hostile_dicom_json_answers_are_clear_errors() {
    let cases: [(&str, &'static str, bool); 5] = [
        ("not an array", r#"{"00080016": {"vr": "UI"}}"#, false),
        (
            "wrong VR",
            r#"[{"00080016": {"vr": "ZZ", "Value": ["1.2"]}, "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]}}]"#,
            false,
        ),
        (
            "nulls",
            r#"[{"00080016": {"vr": "UI", "Value": [null]}, "0020000E": {"vr": "UI", "Value": [null]}}]"#,
            false,
        ),
        ("not JSON", "<html>oops</html>", false),
        ("500 MB", "", true),
    ];
    for (what, body, huge) in cases {
        let (url, _rt) = hostile_dicomweb(body, huge);
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let o = segbridge(dir.path())
            .args(["scan", "--json", "--dicomweb", &url])
            .output()
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{what}: took {:?}",
            t.elapsed()
        );
        // the listing worked; the series that cannot be read is reported, never a crash
        assert!(
            o.status.code() == Some(0) || o.status.code() == Some(5),
            "{what}: {}",
            text(&o)
        );
        let all = text(&o);
        assert!(!all.contains("panicked"), "{what}: {all}");
        assert!(
            all.contains("1.2.3.4"),
            "{what}: the series is not named: {all}"
        );
        if huge {
            assert!(all.contains("larger than"), "{what}: {all}");
        }
    }
}
