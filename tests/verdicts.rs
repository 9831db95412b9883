//! Verdicts are kept only while what they rest on is unchanged: a label judged on a file that
//! could not be read whole (still being written, a name the old reader could not open) is
//! judged again once the file is complete, and a changed file is judged again.

use std::path::Path;

use crate::common::*;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
use serde_json::Value;

fn status_json(dir: &Path) -> Value {
    let o = segbridge(dir).args(["status", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The bytes of a Part-10 file cut right before its Pixel Data element: a writer still busy.
fn cut_before_pixel_data(full: &[u8]) -> Vec<u8> {
    let tag = [0xE0, 0x7F, 0x10, 0x00];
    let at = full
        .windows(4)
        .rposition(|w| w == tag)
        .expect("no Pixel Data in the file");
    full[..at].to_vec()
}

#[test]
fn a_seg_still_being_written_is_judged_again_when_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emu::start();
    let ds = emu.create_dataset();
    let folder = tmp.path().join("f");
    let ct = CtSeries::new("growing", 2);
    write_ct(&folder.join("ct"), &ct, "IM").unwrap();
    let seg = SegSpec::new("growing-seg", &ct);
    let files = write_seg(&folder, &seg, "seg").unwrap();
    assert_eq!(files.len(), 1);
    let full = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], cut_before_pixel_data(&full)).unwrap();
    let o = sync(&emu, tmp.path(), &folder, &ds, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        emu.notifications().is_empty(),
        "a half-written SEG was notified"
    );
    let st = status_json(tmp.path()).to_string();
    assert!(st.contains("invalid"), "{st}");
    // the writer finishes: same file, same UIDs, now whole
    std::fs::write(&files[0], &full).unwrap();
    let o = sync(&emu, tmp.path(), &folder, &ds, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        entries(&emu.notifications()),
        vec![e("added", &ct.series, &seg.series_uid())],
        "{}",
        text(&o)
    );
}

#[test]
fn a_changed_file_is_judged_again_an_unchanged_one_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emu::start();
    let ds = emu.create_dataset();
    let folder = tmp.path().join("f");
    let ct = CtSeries::new("rewritten", 2);
    write_ct(&folder.join("ct"), &ct, "IM").unwrap();
    let mut seg = SegSpec::new("rewritten-seg", &ct);
    seg.faults.empty = true;
    let files = write_seg(&folder, &seg, "seg").unwrap();
    let o = sync(&emu, tmp.path(), &folder, &ds, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let st = status_json(tmp.path()).to_string();
    assert!(st.contains("empty segmentation"), "{st}");
    // the same bytes written again (a new modification time): judged again, same verdict
    let bytes = std::fs::read(&files[0]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&files[0], &bytes).unwrap();
    let o = sync(&emu, tmp.path(), &folder, &ds, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(emu.notifications().is_empty());
    // the label redrawn under the same UIDs: judged again, now ready and notified
    seg.faults.empty = false;
    write_seg(&folder, &seg, "seg").unwrap();
    let o = sync(&emu, tmp.path(), &folder, &ds, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        entries(&emu.notifications()),
        vec![e("added", &ct.series, &seg.series_uid())]
    );
}

#[cfg(unix)]
#[test]
fn a_seg_whose_file_name_is_not_utf8_is_read() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("f");
    let ct = CtSeries::new("latin1", 2);
    write_ct(&folder.join("ct"), &ct, "IM").unwrap();
    let seg = SegSpec::new("latin1-seg", &ct);
    let files = write_seg(&folder, &seg, "seg").unwrap();
    // "Lébér.dcm" in Latin-1: not UTF-8
    let odd = folder.join(std::ffi::OsStr::from_bytes(b"L\xe9b\xe9r.dcm"));
    std::fs::rename(&files[0], &odd).unwrap();
    let o = segbridge(tmp.path())
        .args(["scan", "--json", "--folder"])
        .arg(&folder)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let line: Value = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["label"] == seg.series_uid().as_str())
        .unwrap_or_else(|| panic!("no label in {out}"));
    assert_eq!(line["status"], "ready", "{line}");
    assert!(line["segments"].as_array().is_some_and(|s| !s.is_empty()));
    // shown without loss: the bytes that are not UTF-8 as \xNN
    assert!(
        line["source"]
            .as_str()
            .unwrap()
            .ends_with("L\\xe9b\\xe9r.dcm"),
        "{line}"
    );
}

/// A PACS answer cut short: the SEG could not be retrieved whole, so its "invalid" verdict is
/// kept without a key, and the next run reads and judges it again although Orthanc still
/// lists the same instance count.
#[test]
fn a_seg_the_pacs_failed_to_send_is_judged_again_on_the_next_run() {
    let orthanc = crate::common::orthanc::Orthanc::start(serde_json::json!({}));
    let proxy = FaultyPacs::start(&orthanc.url);
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emu::start();
    let ds = emu.create_dataset();
    let ct = CtSeries::new("cut-answer", 2);
    let mut files = write_ct(&tmp.path().join("gen"), &ct, "IM").unwrap();
    let seg = SegSpec::new("cut-answer-seg", &ct);
    files.extend(write_seg(&tmp.path().join("gen"), &seg, "seg").unwrap());
    orthanc.stow(&files);
    let run = || {
        segbridge(tmp.path())
            .env("MONAI_API_KEY", &emu.key)
            .args(["sync", "--orthanc", &proxy.url, "--dataset", &ds])
            .args(["--api", &emu.url, "--retry-for", "5"])
            .output()
            .unwrap()
    };
    // the SEG's header and pixels come from its file in Orthanc (one request, no WADO-RS
    // retrieve): that file comes cut short, in its pixel data
    proxy.fail("/file", "cut-tail", 1);
    let o = run();
    assert!(o.status.success(), "{}", text(&o));
    assert!(emu.notifications().is_empty(), "{}", text(&o));
    let st = status_json(tmp.path()).to_string();
    assert!(st.contains("invalid"), "{st}");
    proxy.heal();
    let o = run();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        entries(&emu.notifications()),
        vec![e("added", &ct.series, &seg.series_uid())],
        "{}",
        text(&o)
    );
}
