//! The image series' geometry through Orthanc's REST API, for the quality gate. Orthanc 1.10
//! indexes each instance's position and orientation but not its Rows and Columns, so some
//! file must be read. QIDO-RS with those include fields makes Orthanc read and convert every
//! file: about 0.6 ms a file, whatever its size (a 300-slice CT, 0.2 s). An archive costs
//! Orthanc about 0.1 ms for a 1.4 KB file, but it compresses: 0.65 ms for 17 KB, 3 ms for
//! 66 KB, 17 ms for a 512x512 slice (measured on Orthanc 1.10.1, 50 files, noise-like pixels).
//! A file's raw bytes (`/instances/{id}/file`) cost it under 1 ms, 512x512 or not.
//!
//! So: the series are found by the Orthanc IDs their SEGs' patient and study give, and their
//! instances listed with file sizes, positions and orientations (one `/tools/bulk-content` per
//! 500 series). A series whose every instance has a position and an orientation is *sampled*:
//! one instance's file is read (one the SEGs name, when they name one), and the series' geometry
//! is the index's planes with that file's size ([`SeriesGeometry::sampled`]; the gate reads the
//! whole series when that cannot decide a verdict). Another series made of small files (at most
//! 8 KiB) is read whole. Sample files are read from archives when small; of a larger one only
//! its tags (`/instances/{id}/tags?short`: Orthanc reads the file up to its pixel data and
//! sends a few KB; 0.38 s of its CPU for 1,000 512x512 slices against 0.45 s for the files),
//! else its raw file, a few at once. Series neither answers are left to the caller (QIDO-RS).

use std::collections::{HashMap, HashSet};

use futures_util::stream::{self, StreamExt};

use super::answers::{FoundFile, ShortTags};
use super::rest::{bulk_content, series_id};
use crate::dicom::reader::{read_instance_from_bytes, InstanceHeader};
use crate::model::{ImageIndex, ImageInstance, InstanceGeometry, SeriesGeometry};
use crate::source::endpoint::{is_orthanc_id, is_uid, Endpoint};
use crate::source::http::PacsClient;

/// Files at most this large are read from archives, others raw.
const SMALL_FILE: i64 = 8 * 1024;

/// Raw files read at once.
const RAW_AT_ONCE: usize = 4;

/// One instance as Orthanc lists it.
struct Entry {
    id: String,
    sop: String,
    size: i64,
    /// The indexed ImagePositionPatient and ImageOrientationPatient.
    plane: Option<([f64; 3], [f64; 6])>,
}

/// How a series' geometry is read.
enum Plan {
    /// Only this instance's file (an index into the series' entries).
    Sample(usize),
    /// Every file (all small).
    Whole,
}

/// One image series the gate needs: (study UID, series UID, the SEG's PatientID).
pub type ImageRef = (String, String, String);

/// The geometry of the series in `wanted` that are found by their SEGs' patient and study, and
/// the image index the files read give (study and modality, as a folder's files give them).
/// A series whose instances all have an indexed plane is sampled: one file read, one of those
/// `named` (the SEGs' source instances) when the series has one. Another series of small files
/// is read whole, within `budget` bytes of archives, `parts` requests at once. Every series
/// answered names every instance Orthanc lists; the others are left out of both.
pub async fn series_geometries(
    rest: &PacsClient,
    wanted: &[ImageRef],
    named: &HashSet<String>,
    budget: usize,
    parts: usize,
) -> (HashMap<String, SeriesGeometry>, ImageIndex) {
    let mut out = HashMap::new();
    let mut index = ImageIndex::default();
    // Orthanc ID → series UID
    let asked: HashMap<String, String> = wanted
        .iter()
        .filter(|(st, se, _)| is_uid(st) && is_uid(se))
        .map(|(st, se, pat)| (series_id(pat, st, se), se.clone()))
        .collect();
    if asked.is_empty() {
        return (out, index);
    }
    let ids: Vec<&str> = asked.keys().map(String::as_str).collect();
    let found: Vec<FoundFile> = match bulk_content(rest, &ids, Some("Instance")).await {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("{e}; the image series' geometry from QIDO-RS");
            return (out, index);
        }
    };
    // series UID → its instances; None once one is malformed
    let mut listed: HashMap<&str, Option<Vec<Entry>>> = HashMap::new();
    for f in found {
        let Some(series) = f.parent_series.as_deref().and_then(|p| asked.get(p)) else {
            continue;
        };
        let e = listed
            .entry(series.as_str())
            .or_insert_with(|| Some(Vec::new()));
        let (Some(list), Some(sop), Some(size)) = (
            e.as_mut(),
            f.tags.sop.clone().filter(|u| is_uid(u)),
            f.size.int(),
        ) else {
            *e = None;
            continue;
        };
        if !is_orthanc_id(&f.id) || size < 0 {
            *e = None;
            continue;
        }
        list.push(Entry {
            plane: f.tags.plane(),
            id: f.id,
            sop,
            size,
        });
    }
    // what to read of each series
    let mut left = budget as i64;
    let mut plans: Vec<(&str, Vec<Entry>, Plan)> = Vec::new();
    let (mut archived, mut raw): (Vec<String>, Vec<(String, i64)>) = (Vec::new(), Vec::new());
    for (series, l) in listed {
        let Some(mut l) = l.filter(|l| !l.is_empty()) else {
            continue;
        };
        l.sort_by(|a, b| a.sop.cmp(&b.sop));
        if l.iter().all(|e| e.plane.is_some()) {
            let pick = l.iter().position(|e| named.contains(&e.sop)).unwrap_or(0);
            let e = &l[pick];
            if e.size <= SMALL_FILE && e.size <= left {
                left -= e.size;
                archived.push(e.id.clone());
            } else {
                raw.push((e.id.clone(), e.size));
            }
            plans.push((series, l, Plan::Sample(pick)));
        } else {
            let bytes: i64 = l.iter().map(|e| e.size).sum();
            if l.iter().any(|e| e.size > SMALL_FILE) || bytes > left {
                continue;
            }
            left -= bytes;
            archived.extend(l.iter().map(|e| e.id.clone()));
            plans.push((series, l, Plan::Whole));
        }
    }
    if plans.is_empty() {
        return (out, index);
    }
    // the files: small ones from archives, the others raw; each parsed to its header
    let per = archived.len().div_ceil(parts.max(1)).max(1);
    let from_archives = stream::iter(archived.chunks(per).map(<[String]>::to_vec))
        .map(|some| async move {
            match super::archive::files(rest, &some, budget).await {
                Ok(got) => got.iter().filter_map(|b| image_of(b)).collect(),
                Err(e) => {
                    // those series stay unanswered: the caller asks QIDO-RS
                    tracing::debug!("{e}; those image series' geometry from QIDO-RS");
                    Vec::new()
                }
            }
        })
        .buffer_unordered(parts.max(1))
        .collect::<Vec<Vec<ImageInstance>>>();
    let from_files = stream::iter(raw)
        .map(|(id, size)| async move {
            // its tags (Orthanc reads the file up to its pixel data and sends a few KB), else
            // the file itself
            let tags = Endpoint::at(&["instances", &id, "tags"]).flag("short");
            match rest.get_json::<ShortTags>(&tags, "application/json").await {
                Ok(t) => {
                    if let Some(i) = t.image() {
                        return Some(i);
                    }
                    tracing::debug!("{}: no image's tags; reading its file", rest.url(&tags));
                }
                Err(e) => tracing::debug!("{e}; reading that image file"),
            }
            let at = Endpoint::at(&["instances", &id, "file"]);
            let limit = usize::try_from(size)
                .unwrap_or(usize::MAX)
                .saturating_add(4096);
            match rest.get_at_most(&at, "application/dicom", limit).await {
                Ok(b) => image_of(&b),
                Err(e) => {
                    tracing::debug!("{e}; that image series' geometry from QIDO-RS");
                    None
                }
            }
        })
        .buffer_unordered(RAW_AT_ONCE)
        .collect::<Vec<Option<ImageInstance>>>();
    let (a, f) = tokio::join!(from_archives, from_files);
    let read: HashMap<String, ImageInstance> = a
        .into_iter()
        .flatten()
        .chain(f.into_iter().flatten())
        .map(|i| (i.sop_instance.clone(), i))
        .collect();
    for (series, l, plan) in plans {
        // only files Orthanc listed for this series, whose own header names it
        let file = |e: &Entry| read.get(&e.sop).filter(|i| i.series == series);
        let answered = match plan {
            Plan::Whole => whole(series, &l, file),
            Plan::Sample(pick) => sampled(series, &l, pick, file),
        };
        let Some((g, study, modality)) = answered else {
            continue;
        };
        for (sop, ig) in &g.instances {
            // a non-image instance (an SR in the series) never decides the series' modality
            let m = if ig.is_image() { modality.as_str() } else { "" };
            index.insert(sop, series, &study, m);
        }
        out.insert(series.to_string(), g);
    }
    (out, index)
}

/// An image file's header; nothing for a SEG or an unreadable file.
fn image_of(bytes: &[u8]) -> Option<ImageInstance> {
    match read_instance_from_bytes(bytes) {
        Ok(InstanceHeader::Image(i)) => Some(i),
        _ => None,
    }
}

/// A series' geometry (with its study and modality) from every one of its files.
fn whole<'a>(
    series: &str,
    l: &[Entry],
    file: impl Fn(&Entry) -> Option<&'a ImageInstance>,
) -> Option<(SeriesGeometry, String, String)> {
    let mut g = SeriesGeometry {
        series: series.to_string(),
        ..Default::default()
    };
    let (mut study, mut modality) = (String::new(), String::new());
    for e in l {
        let i = file(e)?;
        if i.geometry.is_image() && modality.is_empty() {
            modality = i.modality.clone();
        }
        study = i.study.clone();
        g.instances.insert(e.sop.clone(), i.geometry);
    }
    Some((g, study, modality))
}

/// A series' geometry from one image file: its size for every instance, the indexed planes.
/// Nothing when that file is not an image, or its own plane is not the one Orthanc indexed.
fn sampled<'a>(
    series: &str,
    l: &[Entry],
    pick: usize,
    file: impl Fn(&Entry) -> Option<&'a ImageInstance>,
) -> Option<(SeriesGeometry, String, String)> {
    let s = file(&l[pick])?;
    let same = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6);
    match (s.geometry.position, s.geometry.orientation, l[pick].plane) {
        (Some(p), Some(o), Some((ip, io)))
            if s.geometry.is_image() && same(&p, &ip) && same(&o, &io) => {}
        _ => return None,
    }
    let mut g = SeriesGeometry {
        series: series.to_string(),
        sampled: (l.len() > 1).then(|| l[pick].sop.clone()),
        ..Default::default()
    };
    for (k, e) in l.iter().enumerate() {
        let ig = match (k == pick, e.plane) {
            (true, _) => s.geometry,
            (false, Some((p, o))) => InstanceGeometry {
                rows: s.geometry.rows,
                cols: s.geometry.cols,
                position: Some(p),
                orientation: Some(o),
            },
            (false, None) => return None,
        };
        g.instances.insert(e.sop.clone(), ig);
    }
    Some((g, s.study.clone(), s.modality.clone()))
}
