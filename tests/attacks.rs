//! The attacks of issue 13, each made for real (a real Orthanc where a PACS is involved) and
//! each checked by what reached the API emulator or the PACS: see RELIABILITY.md, "Attacks
//! tried".

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::orthanc::Orthanc;
use common::*;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
use serde_json::{json, Value};

struct Lab {
    orthanc: Orthanc,
    emu: Emu,
    dataset: String,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let orthanc = Orthanc::start(json!({}));
        let emu = Emu::start();
        let dataset = emu.create_dataset();
        Lab {
            orthanc,
            emu,
            dataset,
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn gen(&self) -> PathBuf {
        self.dir.path().join("gen")
    }
    fn ct(&self, name: &str) -> CtSeries {
        let ct = CtSeries::new(name, 2);
        let files = write_ct(&self.gen().join(name), &ct, "IM").unwrap();
        self.orthanc.stow(&files);
        ct
    }
    /// Stores a SEG of `image` (whose series UID may be anything at all).
    fn seg(&self, name: &str, image: &CtSeries) -> SegSpec {
        let s = SegSpec::new(name, image);
        let files = write_seg(&self.gen().join("segs"), &s, name).unwrap();
        self.orthanc.stow(&files);
        s
    }
    fn cmd(&self, sub: &str, source: &[&str]) -> Command {
        let mut c = segbridge(self.dir.path());
        c.env("MONAI_API_KEY", &self.emu.key)
            .arg(sub)
            .args(source)
            .args(["--dataset", &self.dataset, "--api", &self.emu.url])
            .args(["--retry-for", "5"]);
        c
    }
    fn got(&self) -> Vec<(String, String, String)> {
        entries(&self.emu.notifications())
    }
}

/// A SEG of a fake image whose series UID is `reference` (what a hostile or broken writer puts
/// in ReferencedSeriesSequence).
fn referencing(image: &CtSeries, reference: &str) -> CtSeries {
    let mut fake = image.clone();
    fake.series = reference.to_string();
    fake
}

fn scan_lines(lab: &Lab, source: &[&str]) -> (Vec<Value>, Output) {
    let o = segbridge(lab.dir.path())
        .arg("scan")
        .args(source)
        .arg("--json")
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (lines, o)
}

/// Issue 13, items 1 and 2: a SEG whose reference UID is a wildcard, a QIDO list or a query
/// injection is reported as such; every other label is notified, the bogus image never.
#[test]
fn bad_reference_uids_are_reported_and_the_rest_is_notified() {
    let lab = Lab::new();
    let a = lab.ct("a");
    let good = lab.seg("good", &a);
    let hostile = [
        "*".to_string(),
        "2.25.1750*".to_string(),
        format!("9.9.9,{}", a.series),
        format!("9.9.9&SeriesInstanceUID={}", a.series),
    ];
    let bad: Vec<SegSpec> = hostile
        .iter()
        .enumerate()
        .map(|(i, r)| lab.seg(&format!("bad{i}"), &referencing(&a, r)))
        .collect();
    let orthanc = ["--orthanc", lab.orthanc.url.as_str()];
    let dw = lab.orthanc.dicomweb();
    let dicomweb = ["--dicomweb", dw.as_str()];
    for source in [&orthanc[..], &dicomweb[..]] {
        let (lines, o) = scan_lines(&lab, source);
        assert!(o.status.success(), "{}", text(&o));
        for s in &bad {
            let uid = s.series_uid();
            let l = lines
                .iter()
                .find(|l| l["path"].as_str().is_some_and(|p| p.contains(&uid)))
                .unwrap_or_else(|| panic!("{uid} not reported: {}", text(&o)));
            assert_eq!(l["status"], "unreadable", "{l}");
            let reason = l["reason"].as_str().unwrap();
            assert!(
                reason.contains("ReferencedSeriesSequence")
                    && reason.contains("not a valid DICOM UID"),
                "{reason}"
            );
        }
        let ready: Vec<&Value> = lines.iter().filter(|l| l["status"] == "ready").collect();
        assert_eq!(ready.len(), 1, "{lines:?}");
        assert_eq!(ready[0]["label"], good.series_uid().as_str(), "{lines:?}");
    }
    for source in [&orthanc[..], &dicomweb[..]] {
        let o = lab.cmd("sync", source).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(lab.got(), vec![e("added", &a.series, &good.series_uid())]);
}
