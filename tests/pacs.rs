//! Sources on a REAL Orthanc 1.10 with the DICOMweb plugin, checked through the emulator's
//! record of notify bodies: DICOMweb polling, the Orthanc REST/changes source, auth, paging,
//! the image filter, and the `watch` daemon (live changes, restarts, SIGTERM mid-backfill).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::orthanc::Orthanc;
use crate::common::*;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, Refs, SegSpec};
use serde_json::json;

/// A real Orthanc, the emulator and a state dir (tests/deletions.rs uses it too).
pub(crate) struct Lab {
    pub(crate) orthanc: Orthanc,
    pub(crate) emu: Emu,
    pub(crate) dataset: String,
    pub(crate) dir: tempfile::TempDir,
}

impl Lab {
    pub(crate) fn new() -> Lab {
        Lab::with(json!({}))
    }
    pub(crate) fn with(orthanc_cfg: serde_json::Value) -> Lab {
        let orthanc = Orthanc::start(orthanc_cfg);
        let emu = Emu::start();
        let dataset = emu.create_dataset();
        Lab {
            orthanc,
            emu,
            dataset,
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub(crate) fn gen(&self) -> PathBuf {
        self.dir.path().join("gen")
    }
    /// Writes a CT series and returns it, its files stored in Orthanc when `store`.
    pub(crate) fn ct(&self, name: &str, store: bool) -> CtSeries {
        let ct = CtSeries::new(name, 2);
        let files = write_ct(&self.gen().join(name), &ct, "IM").unwrap();
        if store {
            self.orthanc.stow(&files);
        }
        ct
    }
    pub(crate) fn seg(&self, name: &str, ct: &CtSeries, date: &str) -> (SegSpec, Vec<PathBuf>) {
        let mut s = SegSpec::new(name, ct);
        s.content = (date.into(), "120000".into());
        let files = write_seg(&self.gen().join("segs"), &s, name).unwrap();
        (s, files)
    }
    pub(crate) fn stored_seg(&self, name: &str, ct: &CtSeries, date: &str) -> SegSpec {
        let (s, files) = self.seg(name, ct, date);
        self.orthanc.stow(&files);
        s
    }
    pub(crate) fn delete_seg(&self, s: &SegSpec) {
        let id = segbridge::source::orthanc::series_id(
            &s.image.patient,
            &s.image.study,
            &s.series_uid(),
        );
        self.orthanc.delete(&format!("/series/{id}"));
    }
    pub(crate) fn cmd(&self, sub: &str, source: &[&str]) -> Command {
        let mut c = segbridge(self.dir.path());
        c.env("MONAI_API_KEY", &self.emu.key)
            .arg(sub)
            .args(source)
            .args([
                "--dataset",
                &self.dataset,
                "--api",
                &self.emu.url,
                "--retry-for",
                "5",
            ]);
        c
    }
    pub(crate) fn sync(&self, source: &[&str]) -> Output {
        self.cmd("sync", source).arg("-v").output().unwrap()
    }
    pub(crate) fn sync_ok(&self, source: &[&str]) -> Output {
        let o = self.sync(source);
        assert!(o.status.success(), "{}", text(&o));
        o
    }
    pub(crate) fn dicomweb(&self) -> Vec<String> {
        vec!["--dicomweb".into(), self.orthanc.dicomweb()]
    }
    pub(crate) fn rest(&self) -> Vec<String> {
        vec!["--orthanc".into(), self.orthanc.url.clone()]
    }
    pub(crate) fn got(&self) -> Vec<(String, String, String)> {
        entries(&self.emu.notifications())
    }
    pub(crate) fn watch(&self, source: &[&str], extra: &[&str]) -> Child {
        self.watch_every(source, "0.2", "2", extra)
    }
    /// `watch` polling every `poll` seconds, listing everything every `reconcile`.
    pub(crate) fn watch_every(
        &self,
        source: &[&str],
        poll: &str,
        reconcile: &str,
        extra: &[&str],
    ) -> Child {
        let log = std::fs::File::create(self.dir.path().join("watch.log")).unwrap();
        self.cmd("watch", source)
            .args(["--poll", poll, "--reconcile", reconcile])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }
    pub(crate) fn watch_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("watch.log")).unwrap_or_default()
    }
    pub(crate) fn wait_entries(&self, n: usize, what: &str) {
        let start = std::time::Instant::now();
        while self.got().len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}: have {:?}\nwatch log:\n{}",
                self.got(),
                self.watch_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub(crate) fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

pub(crate) fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "watch did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The same story through either source: first sync, nothing new, a newer SEG, a deleted SEG.
fn story(lab: &Lab, source: &[&str]) {
    let a = lab.ct("a", true);
    let v1 = lab.stored_seg("v1", &a, "20240101");
    lab.sync_ok(source);
    assert_eq!(lab.got(), vec![e("added", &a.series, &v1.series_uid())]);
    // nothing new: nothing sent, and no SEG header read again
    let o = lab.sync_ok(source);
    assert_eq!(lab.got().len(), 1);
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("reading SEG headers"),
        "{}",
        text(&o)
    );
    let v2 = lab.stored_seg("v2", &a, "20240301");
    lab.sync_ok(source);
    assert_eq!(lab.got()[1..], [e("updated", &a.series, &v2.series_uid())]);
    // the newest label goes: the older one is current again, and the server is told so
    lab.delete_seg(&v2);
    lab.sync_ok(source);
    assert_eq!(lab.got()[2..], [e("updated", &a.series, &v1.series_uid())]);
    lab.delete_seg(&v1);
    lab.sync_ok(source);
    assert_eq!(lab.got()[3..], [e("removed", &a.series, &v1.series_uid())]);
    lab.sync_ok(source);
    assert_eq!(lab.got().len(), 4);
}

#[test]
fn dicomweb_source_first_nothing_updated_removed() {
    let lab = Lab::new();
    story(&lab, &args(&lab.dicomweb()));
}

#[test]
fn orthanc_source_first_nothing_updated_removed() {
    let lab = Lab::new();
    story(&lab, &args(&lab.rest()));
}

#[test]
fn late_image_turns_an_unmatched_label_into_a_notified_one() {
    let lab = Lab::new();
    let late = lab.ct("late", false);
    let s = lab.stored_seg("s", &late, "20240101");
    let o = lab
        .cmd("sync", &args(&lab.rest()))
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["unmatched"], 1, "{v}");
    assert!(lab.got().is_empty());
    lab.ct("late", true);
    lab.sync_ok(&args(&lab.rest()));
    assert_eq!(lab.got(), vec![e("added", &late.series, &s.series_uid())]);
}

#[test]
fn paging_lists_more_series_than_one_page() {
    let lab = Lab::new();
    let mut want = Vec::new();
    for i in 0..7 {
        let ct = lab.ct(&format!("ct{i}"), true);
        let s = lab.stored_seg(&format!("s{i}"), &ct, "20240101");
        want.push(e("added", &ct.series, &s.series_uid()));
    }
    let dw = lab.dicomweb();
    let mut src = args(&dw);
    src.extend(["--page-size", "3"]);
    // --chunk 2: 7 new SEG series are recorded in 4 transactions, then the complete listing
    let o = lab
        .cmd("sync", &src)
        .args(["--chunk", "2", "-vv"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let recorded = text(&o).matches("recorded one scan").count();
    assert_eq!(recorded, 5, "--chunk 2 not honoured:\n{}", text(&o));
    let mut got = lab.got();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // and a later complete listing over pages removes nothing
    lab.sync_ok(&src);
    assert_eq!(lab.got().len(), 7);
}

#[test]
fn image_filter_makes_labels_of_other_images_unusable() {
    let lab = Lab::new();
    let a = lab.ct("a", true);
    lab.stored_seg("s", &a, "20240101");
    let rest = lab.rest();
    let mut src = args(&rest);
    src.extend(["--image-filter", "Modality=MR"]);
    let o = lab.cmd("sync", &src).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("unusable") && out.contains("image filter"),
        "{out}"
    );
    assert!(lab.got().is_empty());
}

#[test]
fn basic_auth_and_a_wrong_password() {
    let lab = Lab::with(
        json!({"AuthenticationEnabled": true, "RegisteredUsers": {"bridge": "s3cret-pw"}}),
    );
    let a = lab.ct("a", true);
    let s = lab.stored_seg("s", &a, "20240101");
    let rest = lab.rest();
    let mut src = args(&rest);
    src.extend(["--dicomweb-user", "bridge"]);
    let o = lab
        .cmd("sync", &src)
        .env("DICOMWEB_PASSWORD", "wrong-pw-123")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("401"), "{all}");
    assert!(!all.contains("wrong-pw-123"), "password leaked: {all}");
    assert!(lab.got().is_empty());
    // the error names the fix, and no count line pretends the source was listed
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refused user \"bridge\"") && err.contains("DICOMWEB_PASSWORD"),
        "{err}"
    );
    assert!(o.stdout.is_empty(), "{}", text(&o));
    for source in [lab.rest(), lab.dicomweb()] {
        let o = segbridge(lab.dir.path())
            .arg("scan")
            .args(&source)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(5), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        for fix in ["--dicomweb-user", "DICOMWEB_PASSWORD", "DICOMWEB_TOKEN"] {
            assert!(err.contains(fix), "{source:?}: {err}");
        }
        assert!(o.stdout.is_empty(), "{source:?}: {}", text(&o));
    }
    let o = lab
        .cmd("sync", &src)
        .env("DICOMWEB_PASSWORD", "s3cret-pw")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(lab.got(), vec![e("added", &a.series, &s.series_uid())]);
    // a failing listing after that removes nothing
    let o = lab
        .cmd("sync", &src)
        .env("DICOMWEB_PASSWORD", "nope")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(lab.got().len(), 1);
}

#[test]
fn watch_follows_the_changes_feed_and_reconciles_deletions() {
    let lab = Lab::new();
    let a = lab.ct("a", true);
    let v1 = lab.stored_seg("v1", &a, "20240101");
    let mut w = lab.watch(&args(&lab.rest()), &[]);
    lab.wait_entries(1, "the backfill");
    assert_eq!(lab.got(), vec![e("added", &a.series, &v1.series_uid())]);
    // a new SEG arrives: StableSeries in /changes
    let b = lab.ct("b", true);
    let sb = lab.stored_seg("sb", &b, "20240101");
    lab.wait_entries(2, "the new SEG");
    assert_eq!(lab.got()[1], e("added", &b.series, &sb.series_uid()));
    // an image after its SEG
    let late = lab.ct("late", false);
    let sl = lab.stored_seg("sl", &late, "20240101");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lab.got().len(), 2, "an unmatched label was notified");
    lab.ct("late", true);
    lab.wait_entries(3, "the late image");
    assert_eq!(lab.got()[2], e("added", &late.series, &sl.series_uid()));
    // deletions never appear in /changes: the count of series finds them (tests/deletions.rs)
    lab.delete_seg(&sb);
    lab.wait_entries(4, "the removal");
    assert_eq!(lab.got()[3], e("removed", &b.series, &sb.series_uid()));
    let status = sigterm(&mut w);
    assert!(
        status.success(),
        "watch exit {status:?}\n{}",
        lab.watch_log()
    );
    assert_eq!(lab.got().len(), 4);
}

#[test]
fn watch_survives_orthanc_stopping_and_restarting() {
    let mut lab = Lab::new();
    let a = lab.ct("a", true);
    lab.stored_seg("v1", &a, "20240101");
    let mut w = lab.watch(&args(&lab.rest()), &[]);
    lab.wait_entries(1, "the backfill");
    lab.orthanc.stop();
    std::thread::sleep(Duration::from_secs(3));
    lab.orthanc.start_again();
    let b = lab.ct("b", true);
    let sb = lab.stored_seg("sb", &b, "20240101");
    lab.wait_entries(2, "the SEG stored after the restart");
    assert_eq!(lab.got()[1], e("added", &b.series, &sb.series_uid()));
    let log = lab.watch_log();
    assert!(log.contains("retrying with backoff"), "{log}");
    assert!(log.contains("reachable again"), "{log}");
    assert_eq!(
        log.matches("retrying with backoff").count(),
        1,
        "said more than once: {log}"
    );
    assert!(sigterm(&mut w).success());
}

#[test]
fn sigterm_mid_backfill_then_resume_notifies_each_label_once() {
    let lab = Lab::new();
    let mut files = Vec::new();
    let mut want = Vec::new();
    for i in 0..40 {
        let ct = CtSeries::new(&format!("bulk{i}"), 1);
        files.extend(write_ct(&lab.gen().join(format!("bulk{i}")), &ct, "IM").unwrap());
        let (s, f) = lab.seg(&format!("bs{i}"), &ct, "20240101");
        files.extend(f);
        want.push(e("added", &ct.series, &s.series_uid()));
    }
    lab.orthanc.stow(&files);
    // a slow PACS, so that the signal comes while headers are still being read
    let proxy = SlowProxy::start(&lab.orthanc.url, Duration::from_millis(60));
    let slow = ["--concurrency", "1", "--chunk", "4", "--batch", "4"];
    let mut w = lab.watch(&["--orthanc", &proxy.url], &slow);
    lab.wait_entries(4, "the first chunk");
    assert!(sigterm(&mut w).success(), "{}", lab.watch_log());
    let first_run = lab.got().len();
    assert!(
        first_run < 40,
        "the backfill finished before the signal; make it slower"
    );
    let mut w = lab.watch(&["--orthanc", &proxy.url], &slow);
    lab.wait_entries(40, "the resumed backfill");
    std::thread::sleep(Duration::from_millis(500));
    assert!(sigterm(&mut w).success());
    let mut got = lab.got();
    got.sort();
    got.dedup();
    want.sort();
    assert_eq!(got, want, "every label, exactly");
    assert!(
        lab.got().len() <= 44,
        "more than one batch repeated: {}",
        lab.got().len()
    );
    // the resumed run reads only what the first did not record (often nothing: the reading
    // runs ahead of the notifying)
    let log = lab.watch_log();
    assert!(
        !log.contains("new_or_changed=40 "),
        "the resumed run read everything again: {log}"
    );
}

#[test]
fn watch_folder_with_stow_uploads_then_notifies() {
    let lab = Lab::new();
    let a = lab.ct("a", true);
    let export = lab.dir.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    let stow = lab.orthanc.dicomweb();
    let export_s = export.display().to_string();
    let mut w = lab.watch(&["--folder", &export_s, "--stow", &stow], &[]);
    std::thread::sleep(Duration::from_millis(800));
    let mut s = SegSpec::new("exported", &a);
    s.content = ("20240101".into(), "120000".into());
    write_seg(&export, &s, "exported.seg").unwrap();
    lab.wait_entries(1, "the exported SEG");
    assert_eq!(lab.got(), vec![e("added", &a.series, &s.series_uid())]);
    // uploaded before it was notified
    let on_server = lab.orthanc.get_json(&format!(
        "/dicom-web/series?SeriesInstanceUID={}",
        s.series_uid()
    ));
    assert_eq!(on_server.as_array().unwrap().len(), 1);
    // deleting the file is a removal
    std::fs::remove_file(export.join("exported.seg")).unwrap();
    lab.wait_entries(2, "the removal");
    assert_eq!(lab.got()[1], e("removed", &a.series, &s.series_uid()));
    assert!(sigterm(&mut w).success());
}

#[test]
fn stow_failure_is_never_notified_early() {
    let lab = Lab::new();
    let a = lab.ct("a", true);
    let export = lab.dir.path().join("export");
    let s = {
        let mut s = SegSpec::new("exported", &a);
        s.content = ("20240101".into(), "120000".into());
        write_seg(&export, &s, "exported.seg").unwrap();
        s
    };
    // the image is local too, so the folder can match it
    write_ct(&export.join("ct"), &a, "IM").unwrap();
    let export_s = export.display().to_string();
    let o = lab.sync(&[
        "--folder",
        &export_s,
        "--stow",
        "http://127.0.0.1:9/dicom-web",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(lab.got().is_empty(), "notified before the upload");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("STOW-RS"),
        "{}",
        text(&o)
    );
    lab.sync_ok(&["--folder", &export_s, "--stow", &lab.orthanc.dicomweb()]);
    assert_eq!(lab.got(), vec![e("added", &a.series, &s.series_uid())]);
}

#[allow(dead_code)]
fn _p(_: &Path) {}

/// The Orthanc source's bulk paths (image series found by lists of UIDs, their studies by the
/// SEGs' study UIDs, SEG headers read from the files) against the DICOMweb source's one query
/// per series: on the same server, every label comes out the same.
#[test]
fn orthanc_bulk_lookups_agree_with_one_query_per_series() {
    let lab = Lab::new();
    let mut files = Vec::new();
    let mut seg = |name: &str, ct: &CtSeries| {
        let (_, f) = lab.seg(name, ct, "20240101");
        files.extend(f);
    };
    // more than 16 image series to check, so the bulk paths are taken
    for i in 0..12 {
        seg(&format!("ct{i}-seg"), &lab.ct(&format!("ct{i}"), true));
    }
    for i in 0..4 {
        let mut mr = CtSeries::new(&format!("mr{i}"), 2);
        mr.modality = "MR".into();
        lab.orthanc
            .stow(&write_ct(&lab.gen().join(&mr.name), &mr, "IM").unwrap());
        seg(&format!("mr{i}-seg"), &mr);
    }
    for i in 0..3 {
        seg(&format!("gone{i}-seg"), &lab.ct(&format!("gone{i}"), false));
    }
    // a SEG stored in another study than its image's (its study does not find the image's)
    let x = lab.ct("x", true);
    let mut elsewhere = x.clone();
    elsewhere.study = "2.25.4242424242".into();
    seg("x-seg", &elsewhere);
    // a SEG series of two instances
    let two = lab.ct("two", true);
    let mut s = SegSpec::new("two-seg", &two);
    s.instances = 2;
    files.extend(write_seg(&lab.gen().join("segs"), &s, "two-seg").unwrap());
    lab.orthanc.stow(&files);

    let scan = |source: &[String]| {
        let o = segbridge(lab.dir.path())
            .arg("scan")
            .args(source)
            .args(["--json", "--no-validate", "--image-filter", "Modality=CT"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let mut lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines.sort_by_key(|l| l["label"].as_str().unwrap_or("").to_string());
        lines
    };
    let by_rest = scan(&lab.rest());
    let by_qido = scan(&lab.dicomweb());
    assert_eq!(by_rest.len(), 21, "{by_rest:#?}");
    assert_eq!(by_rest, by_qido);
    let count = |status: &str| by_rest.iter().filter(|l| l["status"] == status).count();
    assert_eq!(
        (count("ready"), count("unusable"), count("unmatched")),
        (14, 4, 3),
        "{by_rest:#?}"
    );
}

/// Every request segbridge makes is one Orthanc serves without complaint: the Accept header
/// was "application/dicom+json, application/json", and Orthanc's DICOMweb plugin logged
/// "Unsupported return MIME type" for every QIDO and metadata request.
#[test]
fn orthanc_logs_no_error_for_segbridge_requests() {
    let lab = Lab::new();
    let a = lab.ct("a", true);
    lab.stored_seg("s", &a, "20240101");
    // a SEG without ReferencedSeriesSequence: its frames' instances are looked up
    let noref = lab.ct("noref", true);
    let mut s = SegSpec::new("noref-seg", &noref);
    s.refs = Refs::SourceOnly;
    lab.orthanc
        .stow(&write_seg(&lab.gen().join("segs"), &s, "noref-seg").unwrap());
    for source in [lab.dicomweb(), lab.rest()] {
        let o = segbridge(lab.dir.path())
            .arg("scan")
            .args(&source)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("2 SEG series matched to 2 image series"),
            "{out}"
        );
    }
    lab.sync_ok(&args(&lab.dicomweb()));
    let log = lab.orthanc.log();
    assert!(!log.contains("Unsupported return MIME type"), "{log}");
    assert!(!log.lines().any(|l| l.starts_with('E')), "{log}");
}
