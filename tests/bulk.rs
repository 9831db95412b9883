//! Many SEGs at once on a REAL Orthanc: the image index and the image series' geometry come
//! from listed QIDO-RS queries (a list of SeriesInstanceUIDs), each SEG is fetched once for
//! header and pixels, and the verdicts equal those of one query per series. A server that does
//! not honour UID lists (it ignores them, or matches them literally) gets one query per series
//! and the same answer.

use std::path::Path;
use std::process::Output;

use crate::common::orthanc::Orthanc;
use crate::common::*;
use segbridge::fixtures::{write_ct, write_seg, CtSeries, SegSpec};
use serde_json::{json, Value};

/// More SEGs than `BULK` (16), so the listed paths are taken.
const N: usize = 24;

/// How a stand-in DICOMweb server in front of Orthanc treats a QIDO query with a UID list.
#[derive(Clone, Copy)]
enum Lists {
    /// Drops the SeriesInstanceUID parameter: every series (or instance) comes back.
    Ignored,
    /// Matches the list as one literal UID: nothing comes back.
    Literal,
}

/// A DICOMweb server that passes everything to Orthanc's but treats UID lists its own way, and
/// records the query strings it was asked.
fn list_breaking_proxy(
    upstream: String,
    how: Lists,
) -> (String, Recorded, tokio::runtime::Runtime) {
    use axum::extract::Request;
    use axum::response::IntoResponse;
    let client = reqwest::Client::new();
    let seen: Recorded = Default::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (client, upstream, log) = (client.clone(), upstream.clone(), log.clone());
        async move {
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            log.lock().unwrap().push(query.clone());
            let listed = query.split('&').any(|kv| {
                kv.starts_with("SeriesInstanceUID=") && (kv.contains("%2C") || kv.contains(','))
            });
            if listed && matches!(how, Lists::Literal) {
                return (axum::http::StatusCode::OK, "[]").into_response();
            }
            let query: Vec<&str> = query
                .split('&')
                .filter(|kv| !(listed && kv.starts_with("SeriesInstanceUID=")))
                .collect();
            let url = format!("{upstream}{path}?{}", query.join("&"));
            let mut r = client.get(&url);
            if let Some(a) = req.headers().get("accept") {
                r = r.header("accept", a);
            }
            let resp = r.send().await.unwrap();
            let status = axum::http::StatusCode::from_u16(resp.status().as_u16()).unwrap();
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_string();
            let body = resp.bytes().await.unwrap();
            (status, [("content-type", ct)], body).into_response()
        }
    });
    let (root, rt) = serve(app);
    (format!("{root}/dicom-web"), seen, rt)
}

fn store_studies(orthanc: &Orthanc, dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut segs = Vec::new();
    for i in 0..N {
        let ct = CtSeries::new(&format!("bulk{i}"), 2);
        files.extend(write_ct(&dir.join(format!("b{i}")), &ct, "IM").unwrap());
        let s = SegSpec::new(&format!("bulk{i}-seg"), &ct);
        files.extend(write_seg(&dir.join(format!("b{i}")), &s, "seg").unwrap());
        segs.push(s.series_uid());
    }
    // one image series is MR: outside the filter, its label is unusable on every path
    let mut mr = CtSeries::new("bulk-mr", 2);
    mr.modality = "MR".into();
    files.extend(write_ct(&dir.join("mr"), &mr, "IM").unwrap());
    let s = SegSpec::new("bulk-mr-seg", &mr);
    files.extend(write_seg(&dir.join("mr"), &s, "seg").unwrap());
    segs.push(s.series_uid());
    // the gate's geometry, read in bulk on every path: a SEG of another size, one whose frame
    // names an instance its series does not hold, and one whose frames lie beyond the series
    // (the extent from the positions Orthanc indexed, when sampled) are invalid everywhere
    for (name, size, unknown, z) in [
        ("bulk-size", Some((8, 8)), false, 0.0),
        ("bulk-src", None, true, 0.0),
        ("bulk-z", None, false, 50.0),
    ] {
        let ct = CtSeries::new(name, 2);
        files.extend(write_ct(&dir.join(name), &ct, "IM").unwrap());
        let mut s = SegSpec::new(&format!("{name}-seg"), &ct);
        s.faults.size = size;
        s.faults.unknown_source = unknown;
        s.faults.z_shift = z;
        files.extend(write_seg(&dir.join(name), &s, "seg").unwrap());
        segs.push(s.series_uid());
    }
    // one image series is gone: its label must stay unmatched on every path
    let orphan = CtSeries::new("bulk-orphan", 2);
    let s = SegSpec::new("bulk-orphan-seg", &orphan);
    files.extend(write_seg(&dir.join("orphan"), &s, "seg").unwrap());
    segs.push(s.series_uid());
    // the gate's geometry sampled (one file per image series through Orthanc): a series of
    // 16x16 and 8x8 slices labelled at each size (one label's sample cannot decide it: the
    // whole series is read), and a series of files over 8 KiB (its sample's tags read, not
    // its file), all valid on every path
    let big = CtSeries::new("bulk-mixed", 2);
    let mut small = big.clone();
    small.rows = 8;
    small.cols = 8;
    small.sops = CtSeries::new("bulk-mixed-8", 2).sops;
    let mut large = CtSeries::new("bulk-large", 2);
    large.rows = 128;
    large.cols = 128;
    for (name, ct) in [
        ("bulk-mixed", &big),
        ("bulk-mixed-8", &small),
        ("bulk-large", &large),
    ] {
        files.extend(write_ct(&dir.join(name), ct, "IM").unwrap());
        let s = SegSpec::new(&format!("{name}-seg"), ct);
        files.extend(write_seg(&dir.join(name), &s, "seg").unwrap());
        segs.push(s.series_uid());
    }
    orthanc.stow(&files);
    segs
}

/// `scan --json` of a source: label → (status, image, segments checked).
fn scan(dir: &Path, source: &[&str]) -> (Vec<(String, String, String, String)>, Output) {
    let o = segbridge(dir)
        .args(["scan", "--json", "--image-filter", "Modality=CT"])
        .args(source)
        .output()
        .unwrap();
    assert!(o.status.success(), "{source:?}: {}", text(&o));
    let mut out: Vec<(String, String, String, String)> = json_lines(&o)
        .iter()
        .filter(|l| l.get("label").is_some())
        .map(|l: &Value| {
            (
                l["label"].as_str().unwrap_or("").to_string(),
                l["status"].as_str().unwrap_or("").to_string(),
                l["image"].as_str().unwrap_or("").to_string(),
                format!("{} {} {}", l["segments"], l["warnings"], l["reason"]),
            )
        })
        .collect();
    out.sort();
    (out, o)
}

/// `scan` through Orthanc's REST API (by the counting proxy), whose verdicts must be
/// `direct`'s: the requests it made, and how many were raw files. No file comes from an
/// archive (`/tools/create-archive` costs Orthanc 4-5 ms a file with its PostgreSQL index).
fn orthanc_scan(
    dir: &Path,
    proxy: &SlowProxy,
    direct: &[(String, String, String, String)],
) -> (Vec<String>, usize) {
    let start = proxy.count();
    let (rest, _) = scan(dir, &["--orthanc", &proxy.url]);
    assert_eq!(rest, direct);
    let lines = proxy.requests.lock().unwrap()[start..].to_vec();
    assert!(
        lines.iter().all(|l| !l.contains("/tools/create-archive")),
        "{lines:#?}"
    );
    let files = lines.iter().filter(|l| l.ends_with("/file")).count();
    (lines, files)
}

#[test]
fn listed_queries_give_the_verdicts_of_one_query_per_series() {
    let orthanc = Orthanc::start(json!({}));
    let dir = tempfile::tempdir().unwrap();
    let segs = store_studies(&orthanc, &dir.path().join("gen"));
    let proxy = SlowProxy::counting(&orthanc.url);
    let dw = format!("{}/dicom-web", proxy.url);
    let (direct, _) = scan(dir.path(), &["--dicomweb", &dw]);
    assert_eq!(direct.len(), N + 8, "{direct:?}");
    let ready = direct.iter().filter(|l| l.1 == "ready").count();
    // (of the two labels of the mixed series, the newer supersedes the other: both judged)
    assert_eq!(ready, N + 2, "{direct:?}");
    let superseded: Vec<_> = direct.iter().filter(|l| l.1 == "superseded").collect();
    assert!(
        superseded.len() == 1 && superseded[0].3.contains("voxels"),
        "{direct:?}"
    );
    // the geometry was checked (from the listed instance query)
    assert!(
        direct.iter().all(|l| !l.3.contains("geometry not checked")),
        "{direct:?}"
    );
    let status = |uid: &str| direct.iter().find(|l| l.0 == uid).unwrap().1.clone();
    assert_eq!(status(&segs[N]), "unusable", "{direct:?}");
    assert_eq!(status(&segs[N + 1]), "invalid", "{direct:?}");
    assert_eq!(status(&segs[N + 2]), "invalid", "{direct:?}");
    assert_eq!(status(&segs[N + 3]), "invalid", "{direct:?}");
    let z = direct.iter().find(|l| l.0 == segs[N + 3]).unwrap();
    assert!(z.3.contains("outside the source series extent"), "{z:?}");
    assert_eq!(status(&segs[N + 4]), "unmatched", "{direct:?}");
    // each SEG fetched once (a retrieve), no metadata call, the geometry and the index listed
    let lines = proxy.requests.lock().unwrap().clone();
    let retrieves = lines
        .iter()
        .filter(|l| l.contains("/series/") && !l.contains("/metadata"))
        .filter(|l| l.starts_with("GET /dicom-web/studies/"))
        .count();
    let metadata = lines.iter().filter(|l| l.contains("/metadata")).count();
    let listed = lines
        .iter()
        .filter(|l| l.contains("SeriesInstanceUID=") && l.contains("%2C"))
        .count();
    assert_eq!(retrieves, N + 8, "{lines:#?}"); // every SEG fetched once
    assert_eq!(metadata, 0, "{lines:#?}");
    assert!(listed >= 2, "{lines:#?}");
    assert!(lines.len() < 2 * N, "{} requests: {lines:#?}", lines.len());
    // Orthanc's own paths give the same verdicts, from the files: each SEG's, and one small
    // sample per image series (for its Rows and Columns): one series fewer than labels (the
    // mixed series has two), the orphan's gone, and of the large series only its sample's
    // tags; the mixed series read whole for one label, with QIDO-RS
    let (lines, files) = orthanc_scan(dir.path(), &proxy, &direct);
    let tags = lines.iter().filter(|l| l.contains("/tags?short")).count();
    let small_samples = direct.len() - 3;
    assert_eq!(
        (files, tags),
        (direct.len() + small_samples, 1),
        "{lines:#?}"
    );
    let whole: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("/dicom-web/instances?SeriesInstanceUID="))
        .collect();
    let series = |name: &str| CtSeries::new(name, 2).series;
    assert!(
        whole.iter().any(|l| l.contains(&series("bulk-mixed")))
            && whole
                .iter()
                .all(|l| !l.contains(&series("bulk-large")) && !l.contains(&series("bulk0"))),
        "{lines:#?}"
    );
    // one SEG's file and its image series' files that Orthanc fails to send (every retry):
    // that SEG's header from WADO-RS, that series' geometry from QIDO-RS, the same verdicts
    let faulty = FaultyPacs::start(&proxy.url);
    let ids_of = |uid: &str| -> Vec<String> {
        let all = orthanc.get_json("/series?expand");
        let s = all.as_array().unwrap().iter();
        let s = s.filter(|s| s["MainDicomTags"]["SeriesInstanceUID"] == uid);
        let ids = s.flat_map(|s| s["Instances"].as_array().unwrap().clone());
        ids.map(|i| format!("{}/file", i.as_str().unwrap()))
            .collect()
    };
    let (seg0, image0) = (segs[0].clone(), series("bulk0"));
    let mut needles = ids_of(&seg0);
    needles.extend(ids_of(&image0));
    assert_eq!(needles.len(), 3, "{needles:?}");
    faulty.fail(&needles.join("|"), "500", 1000);
    let start = proxy.count();
    let (rest, _) = scan(dir.path(), &["--orthanc", &faulty.url]);
    assert_eq!(rest, direct);
    let lines = proxy.requests.lock().unwrap()[start..].to_vec();
    let dicomweb = |uid: &str| {
        lines
            .iter()
            .filter(|l| l.contains("/dicom-web/") && l.contains(uid))
            .count()
    };
    assert!(dicomweb(&seg0) >= 1 && dicomweb(&image0) >= 1, "{lines:#?}");
    faulty.heal();
    // an Orthanc without /tools/bulk-content (before 1.9.4): the image series found by UID and
    // their geometry from QIDO-RS, the same verdicts
    faulty.fail("/tools/bulk-content", "500", 1000);
    let (rest, _) = scan(dir.path(), &["--orthanc", &faulty.url]);
    assert_eq!(rest, direct);
    // a sample's tags cut short: its file is read instead, the same verdicts
    faulty.fail("/tags", "truncate", 1000);
    let (rest, _) = scan(dir.path(), &["--orthanc", &faulty.url]);
    assert_eq!(rest, direct);
    faulty.heal();
    // no file at all: WADO-RS, with the study each series is in looked up (a listing through
    // Orthanc's REST API names studies by Orthanc ID), the same verdicts
    faulty.fail("/file", "500", 1000);
    let (rest, _) = scan(dir.path(), &["--orthanc", &faulty.url]);
    assert_eq!(rest, direct);
    faulty.heal();
    // servers that do not honour UID lists: one query per series, the same verdicts
    for how in [Lists::Ignored, Lists::Literal] {
        let (url, seen, _rt) = list_breaking_proxy(orthanc.url.clone(), how);
        let (got, _) = scan(dir.path(), &["--dicomweb", &url]);
        assert_eq!(got, direct);
        // the lists were given up after one query each, and every image series asked alone
        let seen = seen.lock().unwrap().clone();
        let lists = seen
            .iter()
            .filter(|q| q.contains("SeriesInstanceUID=") && q.contains("%2C"));
        assert!(lists.count() <= 4, "{seen:#?}");
        let alone = seen
            .iter()
            .filter(|q| q.contains("SeriesInstanceUID=") && !q.contains("%2C"))
            .count();
        assert!(alone >= N, "{alone} series asked alone: {seen:#?}");
    }
}

/// Series of real size (slices of 512x512, SEGs of 64 KiB and more): each SEG file read raw,
/// one request each, and of each image series only a sample's tags (its files are over 8 KiB),
/// with the same verdicts as DICOMweb's.
#[test]
fn real_size_series_are_read_from_raw_files_and_tags_with_the_same_verdicts() {
    let orthanc = Orthanc::start(json!({}));
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..5 {
        let mut ct = CtSeries::new(&format!("raw{i}"), 2);
        ct.rows = 512; // two frames of 512x512 bits: a SEG file of 64 KiB and more
        ct.cols = 512;
        let g = dir.path().join(format!("g{i}"));
        files.extend(write_ct(&g, &ct, "IM").unwrap());
        let mut seg = SegSpec::new(&format!("raw{i}-seg"), &ct);
        // the sample's size and the indexed planes decide these two (taken from its tags)
        match i {
            3 => seg.faults.size = Some((510, 512)),
            4 => seg.faults.z_shift = 500.0,
            _ => {}
        }
        files.extend(write_seg(&g, &seg, "seg").unwrap());
    }
    let images: Vec<u64> = files
        .iter()
        .filter(|f| f.file_name().unwrap().to_string_lossy().starts_with("IM"))
        .map(|f| std::fs::metadata(f).unwrap().len())
        .collect();
    assert!(
        images.len() == 10 && images.iter().all(|&n| n > 8 << 10),
        "{images:?}"
    );
    orthanc.stow(&files);
    let proxy = SlowProxy::counting(&orthanc.url);
    let (direct, _) = scan(
        dir.path(),
        &["--dicomweb", &format!("{}/dicom-web", proxy.url)],
    );
    assert_eq!(direct.len(), 5, "{direct:?}");
    let verdicts: Vec<&str> = direct.iter().map(|l| l.1.as_str()).collect();
    assert_eq!(
        verdicts.iter().filter(|v| **v == "ready").count(),
        3,
        "{direct:?}"
    );
    assert!(
        direct
            .iter()
            .any(|l| l.3.contains("Rows/Columns 510x512 differ")),
        "{direct:?}"
    );
    assert!(
        direct
            .iter()
            .any(|l| l.3.contains("outside the source series extent")),
        "{direct:?}"
    );
    let (lines, files) = orthanc_scan(dir.path(), &proxy, &direct);
    // the five SEGs; of each image series a sample's tags, not its file
    assert_eq!(files, 5, "{lines:#?}");
    let tags = lines.iter().filter(|l| l.contains("/tags?short")).count();
    assert_eq!(tags, 5, "{lines:#?}");
    // the tags decided every series but the one whose SEG differs in size from its sample
    // (whose other slices might not: it is read whole, by design)
    let resized = CtSeries::new("raw3", 2).series;
    let elsewhere = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("/dicom-web/") && !l.contains(&resized))
            .count()
    };
    assert_eq!(elsewhere(&lines), 0, "{lines:#?}");
    // tags cut short: each sample's file is read instead (not the series through DICOMweb)
    let faulty = FaultyPacs::start(&proxy.url);
    faulty.fail("/tags", "truncate", 1000);
    let start = proxy.count();
    let (rest, _) = scan(dir.path(), &["--orthanc", &faulty.url]);
    assert_eq!(rest, direct);
    let lines = proxy.requests.lock().unwrap()[start..].to_vec();
    let files = lines.iter().filter(|l| l.ends_with("/file")).count();
    assert_eq!(files, 5 + 5, "{lines:#?}");
    assert_eq!(elsewhere(&lines), 0, "{lines:#?}");
}
