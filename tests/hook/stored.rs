//! The OnStoredInstance path: with Orthanc's default StableAge (60 s), a stored SEG still reaches
//! the API within a second or so (asserted < 5 s to stay robust on a loaded machine; the latency
//! bench measures the real figure). The instances of a series stored together make one entry, a
//! later one an update; OnStableSeries stays a safety net that changes nothing already read.

use std::time::{Duration, Instant};

use super::{Hooked, TOKEN};
use crate::common::*;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};

/// Orthanc's default: OnStableSeries fires a minute after the last instance.
const DEFAULT_STABLE_AGE: u32 = 60;
/// Far below StableAge, far above the path's own cost (about 0.3 s).
const QUICK: Duration = Duration::from_secs(5);

const RECEIVED: &str = "segbridge_hooks_received_total";

#[test]
fn a_stored_seg_reaches_the_api_long_before_stable_age() {
    let h = Hooked::with_stable_age(DEFAULT_STABLE_AGE);
    let serve = h.serve();
    let ct = CtSeries::new("fast", 1);
    h.orthanc
        .stow(&write_ct(&h.dir.path().join("fast"), &ct, "IM").unwrap());
    // an image instance posts nothing (the script filters on Modality)
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        h.metric(RECEIVED),
        Some(0),
        "a CT instance reached segbridge"
    );
    let s = SegSpec::new("fast-seg", &ct);
    h.orthanc
        .stow(&write_seg(&h.dir.path().join("fast"), &s, "seg").unwrap());
    let took = h.wait_entries(1, QUICK, "the stored SEG, StableAge 60");
    assert!(took < QUICK, "{took:?}");
    assert_eq!(
        entries(&h.emu.notifications()),
        vec![e("added", &ct.series, &s.series_uid())]
    );
    // only OnStoredInstance has fired: OnStableSeries is a minute away
    assert_eq!(h.metric(RECEIVED), Some(1));
    super::stop(serve);
}

#[test]
fn instances_stored_together_are_one_entry_and_a_later_one_an_update() {
    let h = Hooked::with_stable_age(DEFAULT_STABLE_AGE);
    let serve = h.serve();
    let ct = CtSeries::new("split", 1);
    h.orthanc
        .stow(&write_ct(&h.dir.path().join("split"), &ct, "IM").unwrap());
    let mut s = SegSpec::new("split-seg", &ct);
    s.segments = vec!["liver".into(), "spleen".into(), "kidney".into()];
    s.instances = 3;
    let files = write_seg(&h.dir.path().join("split"), &s, "seg").unwrap();
    assert_eq!(files.len(), 3);
    // two instances back to back, one STOW each: two hook calls, one read
    h.orthanc.stow(&files[..1]);
    h.orthanc.stow(&files[1..2]);
    h.wait_entries(1, QUICK, "the two-instance SEG");
    std::thread::sleep(Duration::from_secs(1)); // room for a second entry, if any
    let added = vec![e("added", &ct.series, &s.series_uid())];
    assert_eq!(entries(&h.emu.notifications()), added);
    assert_eq!(h.metric(RECEIVED), Some(2));
    // a third instance later: the instance set changed, one update
    h.orthanc.stow(&files[2..]);
    h.wait_entries(2, QUICK, "the third instance");
    std::thread::sleep(Duration::from_secs(1));
    let mut want = added;
    want.push(e("updated", &ct.series, &s.series_uid()));
    assert_eq!(entries(&h.emu.notifications()), want);
    super::stop(serve);
}

#[test]
fn a_stable_series_already_read_is_not_notified_again() {
    // StableAge 1: OnStableSeries fires too, a second or two after the instance
    let h = Hooked::with_stable_age(1);
    let serve = h.serve();
    let (ct, s) = h.store("twice");
    h.wait_entries(1, QUICK, "the stored SEG");
    let start = Instant::now();
    while h.metric(RECEIVED) < Some(2) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "OnStableSeries never came: {}",
            h.orthanc.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500)); // the stable read, and a delivery if any
    assert_eq!(
        entries(&h.emu.notifications()),
        vec![e("added", &ct.series, &s.series_uid())]
    );
    assert_eq!(h.metric("segbridge_outbox_depth"), Some(0));
    super::stop(serve);
}

#[test]
fn an_instance_without_its_series_id_is_resolved_through_orthanc() {
    // no script: the call comes from the test, without "series" (a script whose RestApiGet
    // failed sends it so)
    let h = Hooked::with(DEFAULT_STABLE_AGE, false);
    let serve = h.serve();
    let (ct, s) = h.store("resolve");
    let series = segbridge::source::orthanc::series_id(&ct.patient, &ct.study, &s.series_uid());
    let instance = h.orthanc.get_json(&format!("/series/{series}"))["Instances"][0]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(500));
    assert!(h.emu.notifications().is_empty(), "notified without a hook");
    let body = format!(r#"{{"id": "{instance}", "modality": "SEG"}}"#).into_bytes();
    assert_eq!(
        h.post("/hooks/orthanc/stored-instance", Some(TOKEN), body)
            .0,
        202
    );
    h.wait_entries(1, QUICK, "the SEG named by its instance alone");
    assert_eq!(
        entries(&h.emu.notifications()),
        vec![e("added", &ct.series, &s.series_uid())]
    );
    super::stop(serve);
}

#[test]
fn bad_stored_instance_calls_are_refused_with_the_reason_and_counted() {
    let h = Hooked::with_stable_age(DEFAULT_STABLE_AGE);
    let serve = h.serve();
    let path = "/hooks/orthanc/stored-instance";
    let id = segbridge::source::orthanc::series_id("P", "1.2", "1.2.3.4");
    let good = format!(r#"{{"id": "{id}", "modality": "SEG", "uid": "1.2.3"}}"#).into_bytes();
    assert_eq!(h.post(path, None, good.clone()).0, 401);
    assert_eq!(h.post(path, Some("wrong"), good.clone()).0, 401);
    for (body, why) in [
        (&b"{not json"[..], "malformed JSON"),
        (
            br#"{"uid": "1.2.3"}"#,
            "\"id\" (the Orthanc instance ID) is required",
        ),
        (
            br#"{"id": "../tools/reset"}"#,
            "\"id\" is not an Orthanc instance ID",
        ),
        (
            br#"{"id": "ID", "series": "x/../../changes"}"#,
            "\"series\" is not",
        ),
        (
            br#"{"id": "ID", "uid": "1.2.3?x=1"}"#,
            "\"uid\" is not a DICOM UID",
        ),
        (br#"{"id": "ID", "study": "1.2"}"#, "unknown field"),
    ] {
        let body = String::from_utf8_lossy(body).replace("\"ID\"", &format!("{id:?}"));
        let (code, answer) = h.post(path, Some(TOKEN), body.into_bytes());
        assert_eq!(code, 400, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{why}: {answer}");
    }
    assert_eq!(h.post(path, Some(TOKEN), vec![b' '; 64 * 1024]).0, 413);
    // a non-SEG is ignored; a well-formed call for an instance Orthanc does not have is
    // accepted and comes to nothing
    let ct = format!(r#"{{"id": "{id}", "modality": "CT"}}"#).into_bytes();
    let (code, answer) = h.post(path, Some(TOKEN), ct);
    assert_eq!((code, answer.contains("ignored")), (202, true), "{answer}");
    assert_eq!(h.post(path, Some(TOKEN), good).0, 202);
    let refused = |reason: &str| {
        h.metric(&format!(
            "segbridge_hooks_refused_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(refused("unauthorized"), Some(2));
    assert_eq!(refused("malformed"), Some(6));
    assert_eq!(refused("too-large"), Some(1));
    assert_eq!(refused("browser"), Some(0));
    // authorized calls with a body read: the six malformed, the CT, the good one
    assert_eq!(h.metric(RECEIVED), Some(8));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(h.get("/healthz").unwrap().0, 200);
    assert!(h.emu.notifications().is_empty());
    // and the path still works
    let (ct, s) = h.store("after-bad");
    h.wait_entries(1, QUICK, "a SEG after the bad calls");
    assert_eq!(
        entries(&h.emu.notifications()),
        vec![e("added", &ct.series, &s.series_uid())]
    );
    assert!(!h.log().contains(TOKEN), "the token was logged");
    super::stop(serve);
}
