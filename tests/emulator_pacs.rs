//! The emulator reads a dataset's DICOMweb server as the real service does, against a REAL
//! Orthanc that requires HTTP Basic authentication: the probe on create uses the dataset's
//! credentials, and `nextimage` decides "unlabeled" from the SEG series on the PACS (the first
//! instance's ReferencedSeriesSequence), never from the notify records.

use std::collections::BTreeSet;

use crate::common::orthanc::Orthanc;
use crate::common::*;
use segbridge::emulator::EmulatorConfig;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
use serde_json::{json, Value};

const ORG: &str = "/api/v1/orgs/iasixjqzw1hj";
const USER: &str = "segbridge";
const PASSWORD: &str = "pacs-pw-never-echoed-81";

fn orthanc_with_auth() -> Orthanc {
    Orthanc::start(json!({"AuthenticationEnabled": true, "RegisteredUsers": {USER: PASSWORD}}))
}

fn dataset(client_url: &str, user: Option<&str>, password: Option<&str>, filters: &str) -> Value {
    let mut b = json!({"name": "d", "type": "semantic_segmentation", "format": "monai",
        "client_url": client_url, "filters": filters});
    if let Some(u) = user {
        b["client_id"] = json!(u);
    }
    if let Some(p) = password {
        b["client_secret"] = json!(p);
    }
    b
}

fn create(emu: &Emu, t: &str, body: Value) -> (u16, Value) {
    emu.call("POST", &format!("{ORG}/datasets"), Some(t), Some(body))
}

fn next_image(emu: &Emu, t: &str, ds: &str) -> (u16, Value) {
    emu.call(
        "POST",
        &format!("{ORG}/datasets/{ds}/jobs"),
        Some(t),
        Some(json!({"action": "nextimage"})),
    )
}

/// The images `nextimage` offers in `n` calls (each answer checked).
fn offered(emu: &Emu, t: &str, ds: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            let (s, b) = next_image(emu, t, ds);
            assert_eq!(s, 201, "{b}");
            b["image"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn the_probe_uses_the_datasets_credentials_and_never_echoes_the_secret() {
    let orthanc = orthanc_with_auth();
    let emu = Emu::with(EmulatorConfig {
        probe_dicomweb: true,
        ..Default::default()
    });
    let t = emu.token();
    let root = orthanc.dicomweb();
    for (user, password) in [(None, None), (Some(USER), Some("wrong-pw-5521"))] {
        let (s, b) = create(&emu, &t, dataset(&root, user, password, "Modality=CT"));
        assert_eq!(s, 400, "{user:?}: {b}");
        let desc = b["error_desc"].as_str().unwrap();
        assert!(
            desc.contains(&root) && desc.contains("HTTP 401"),
            "names the server and the status: {desc}"
        );
        assert!(!b.to_string().contains("wrong-pw-5521"), "{b}");
    }
    let (s, b) = create(
        &emu,
        &t,
        dataset(&root, Some(USER), Some(PASSWORD), "Modality=CT"),
    );
    assert_eq!(s, 201, "{b}");
    assert!(
        b["id"].is_string() && b.get("client_secret").is_none(),
        "{b}"
    );
    // nothing listening: refused, naming the server
    let gone = format!("http://127.0.0.1:{}/dicom-web", free_port());
    let (s, b) = create(&emu, &t, dataset(&gone, Some(USER), Some(PASSWORD), ""));
    assert_eq!(s, 400, "{b}");
    assert!(b["error_desc"].as_str().unwrap().contains(&gone), "{b}");
    assert!(!b.to_string().contains(PASSWORD), "{b}");
}

#[test]
fn nextimage_offers_only_images_without_a_seg_on_the_pacs() {
    let orthanc = orthanc_with_auth();
    let emu = Emu::start();
    let t = emu.token();
    let tmp = tempfile::tempdir().unwrap();
    let cts: Vec<CtSeries> = (0..3)
        .map(|i| CtSeries::new(&format!("nx{i}"), 2))
        .collect();
    for ct in &cts {
        orthanc.stow(&write_ct(&tmp.path().join(&ct.name), ct, "IM").unwrap());
    }
    let store_seg = |ct: &CtSeries| {
        let spec = SegSpec::new(&format!("{}-seg", ct.name), ct);
        orthanc.stow(&write_seg(&tmp.path().join(&spec.name), &spec, "seg").unwrap());
    };
    let root = orthanc.dicomweb();
    let (s, ds) = create(&emu, &t, dataset(&root, Some(USER), Some(PASSWORD), ""));
    assert_eq!(s, 201, "{ds}");
    let ds = ds["id"].as_str().unwrap().to_string();

    // a SEG on the PACS that was never notified labels its image; a notified label that is not
    // on the PACS labels nothing
    store_seg(&cts[0]);
    let (s, b) = emu.call(
        "POST",
        &format!("{ORG}/datasets/{ds}/jobs"),
        Some(&t),
        Some(json!({"action": "notify", "specs": {"added": [
            {"image": cts[1].series, "label": "1.2.826.0.1.3680043.99.1"}]}})),
    );
    assert_eq!(s, 201, "{b}");
    let both: BTreeSet<String> = [cts[1].series.clone(), cts[2].series.clone()].into();
    assert_eq!(offered(&emu, &t, &ds, 20), both);

    // label the second: only the third is left, with its meta as the PACS tells it
    store_seg(&cts[1]);
    assert_eq!(offered(&emu, &t, &ds, 20), [cts[2].series.clone()].into());
    let (_, b) = next_image(&emu, &t, &ds);
    let meta = &b["meta"];
    assert_eq!(meta["SeriesInstanceUID"], cts[2].series.as_str(), "{b}");
    assert_eq!(meta["StudyInstanceUID"], cts[2].study.as_str(), "{b}");
    assert_eq!(meta["Modality"], "CT", "{b}");
    assert_eq!(meta["PatientID"], cts[2].patient.as_str(), "{b}");
    assert_eq!(
        meta["RetrieveURL"],
        format!("{root}/studies/{}/series/{}", cts[2].study, cts[2].series).as_str()
    );

    // the dataset's search filters also select the SEGs: a filter on the image's series UID
    // hides every SEG, so its labeled image is offered again (as the real service does)
    let filters = format!("SeriesInstanceUID={}&limit=10", cts[0].series);
    let (_, only0) = create(
        &emu,
        &t,
        dataset(&root, Some(USER), Some(PASSWORD), &filters),
    );
    let only0 = only0["id"].as_str().unwrap().to_string();
    assert_eq!(offered(&emu, &t, &only0, 3), [cts[0].series.clone()].into());

    // every image labeled: none left
    store_seg(&cts[2]);
    let (s, b) = next_image(&emu, &t, &ds);
    assert_eq!(
        (s, &b["error_desc"]),
        (404, &json!("No Unlabeled Images Found")),
        "{b}"
    );

    // wrong credentials: the server's 404, naming the server and the status, not the secret
    let (_, bad) = create(
        &emu,
        &t,
        dataset(&root, Some(USER), Some("wrong-pw-6612"), ""),
    );
    let (s, b) = next_image(&emu, &t, bad["id"].as_str().unwrap());
    assert_eq!(s, 404, "{b}");
    let desc = b["error_desc"].as_str().unwrap();
    assert!(
        desc.starts_with("Unable to query DICOMweb server")
            && desc.contains(&root)
            && desc.contains("HTTP 401"),
        "{desc}"
    );
    assert!(!desc.contains("wrong-pw-6612"), "{desc}");
}

/// A stand-in DICOMweb server answering `/series` with `series` and everything else with `[]`.
fn stand_in(series: &'static str) -> (String, tokio::runtime::Runtime) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/dicom-web/series", get(move || async move { series }))
        .fallback(|| async { "[]" });
    serve(app)
}

#[test]
fn nextimage_checks_what_the_pacs_answers() {
    let emu = Emu::start();
    let t = emu.token();
    let ds_at = |url: &str| {
        let (s, b) = create(
            &emu,
            &t,
            dataset(&format!("{url}/dicom-web"), None, None, ""),
        );
        assert_eq!(s, 201, "{b}");
        b["id"].as_str().unwrap().to_string()
    };
    for (answer, why) in [
        ("<html>not json</html>", "is not JSON"),
        ("{\"0020000E\": {}}", "is not a JSON array"),
    ] {
        let (url, _rt) = stand_in(answer);
        let (s, b) = next_image(&emu, &t, &ds_at(&url));
        assert_eq!(s, 404, "{b}");
        let desc = b["error_desc"].as_str().unwrap();
        assert!(desc.contains(why) && desc.contains(&url), "{desc}");
    }
    // rows without valid UIDs are skipped, never used in a URL or an answer
    let (url, _rt) = stand_in(
        r#"[{"0020000E": {"vr": "UI", "Value": ["1.2/../3"]}, "0020000D": {"vr": "UI", "Value": ["1.2"]}},
            {"0020000D": {"vr": "UI", "Value": ["1.2"]}},
            {"0020000E": {"vr": "UI", "Value": ["1.2.3"]}, "0020000D": {"vr": "UI", "Value": ["1.2"]},
             "00080060": {"vr": "CS", "Value": ["CT"]}}]"#,
    );
    let ds = ds_at(&url);
    let (s, b) = next_image(&emu, &t, &ds);
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["image"], "1.2.3");
    assert_eq!(b["meta"]["StudyDate"], "UNK", "missing meta reads UNK: {b}");
    assert_eq!(offered(&emu, &t, &ds, 5), ["1.2.3".to_string()].into());
}
