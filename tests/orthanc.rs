//! Against a REAL Orthanc with the DICOMweb plugin: the fixtures are valid DICOM for a PACS,
//! and what Orthanc's DICOMweb says about each SEG's references is what segbridge's header
//! reader and matcher read from the same files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::common::orthanc::Orthanc;
use serde_json::{json, Value};

fn dicom_files(root: &std::path::Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| segbridge::dicom::reader::is_part10(p).unwrap_or(false))
        .filter(|p| segbridge::dicom::read_instance(p).is_ok())
        .collect()
}

fn tag_str(obj: &Value, tag: &str) -> Option<String> {
    obj[tag]["Value"][0].as_str().map(str::to_string)
}

#[test]
fn orthanc_accepts_the_fixtures_and_agrees_on_every_reference() {
    let o = Orthanc::start(json!({}));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let files = dicom_files(&root);
    assert!(files.len() > 30);
    let stow = o.stow(&files);
    assert!(
        stow.get("00081199").is_some(),
        "STOW stored nothing: {stow}"
    );
    // our reading of the folder
    let scan = segbridge::source::folder::scan_folder(&root).unwrap();
    let ours: BTreeMap<String, (String, Option<String>)> = scan
        .labels
        .iter()
        .map(|l| {
            (
                l.seg.uid().to_string(),
                (
                    l.seg.first.study.clone(),
                    l.seg.first.referenced_series.first().cloned(),
                ),
            )
        })
        .collect();
    // Orthanc's: QIDO lists the SEG series, WADO-RS metadata carries the sequences
    let listed = o.get_json("/dicom-web/series?Modality=SEG&limit=1000");
    let listed = listed.as_array().unwrap();
    assert_eq!(
        listed.len(),
        ours.len(),
        "QIDO SEG series vs segbridge's scan"
    );
    for s in listed {
        let series = tag_str(s, "0020000E").unwrap();
        let study = tag_str(s, "0020000D").unwrap();
        let (our_study, our_ref) = ours
            .get(&series)
            .unwrap_or_else(|| panic!("{series} not in scan"));
        assert_eq!(&study, our_study);
        let meta = o.get_json(&format!(
            "/dicom-web/studies/{study}/series/{series}/metadata"
        ));
        let first = &meta.as_array().unwrap()[0];
        let theirs = first["00081115"]["Value"][0]["0020000E"]["Value"][0]
            .as_str()
            .map(str::to_string);
        assert_eq!(&theirs, our_ref, "ReferencedSeriesSequence of {series}");
    }
    // every ready label's image series exists on the server, as the training server will need
    for l in scan
        .labels
        .iter()
        .filter(|l| l.outcome.status() == segbridge::model::LabelStatus::Ready)
    {
        let image = l.outcome.image().unwrap();
        let found = o.get_json(&format!("/dicom-web/series?SeriesInstanceUID={image}"));
        assert_eq!(
            found.as_array().unwrap().len(),
            1,
            "image {image} of ready label {}",
            l.seg.uid()
        );
    }
}
