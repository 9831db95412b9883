//! The image series' geometry through Orthanc's REST API, for the quality gate. Orthanc 1.10
//! indexes each instance's position and orientation but not its Rows and Columns, so some
//! file must be read. QIDO-RS with those include fields makes Orthanc read and convert every
//! file: about 0.6 ms a file, whatever its size (a 300-slice CT, 0.2 s). A file's raw bytes
//! (`/instances/{id}/file`) cost it under 1 ms, 512x512 or not. An archive of small files
//! (`/tools/create-archive`) costs it less CPU with its SQLite index (0.1 ms for a 1.4 KB file),
//! but 4-5 ms a file with its PostgreSQL index against 0.5-1 ms raw, and it compresses what
//! it packs (17 ms for a 512x512 slice): files are read raw, `at_once` at a time.
//!
//! So: the series are found by the Orthanc IDs their SEGs' patient and study give, and their
//! instances listed with file sizes, positions and orientations (one `/tools/bulk-content` per
//! 500 series). A series whose every instance has a position and an orientation is *sampled*:
//! one instance's file is read (one the SEGs name, when they name one), and the series' geometry
//! is the index's planes with that file's size ([`SeriesGeometry::sampled`]; the gate reads the
//! whole series when that cannot decide a verdict). Another series made of small files (at most
//! 8 KiB) is read whole. Of a sample larger than that only its tags are asked
//! (`/instances/{id}/tags?short`: Orthanc reads the file up to its pixel data and sends a few
//! KB; 0.38 s of its CPU for 1,000 512x512 slices against 0.45 s for the files), else its file.
//! Series neither answers are left to the caller (QIDO-RS).

use std::collections::{HashMap, HashSet};

use futures_util::stream::{self, StreamExt};

use super::answers::{FoundFile, ShortTags};
use super::rest::{bulk_content, series_id};
use crate::dicom::reader::{read_instance_from_bytes, InstanceHeader};
use crate::model::{ImageIndex, ImageInstance, InstanceGeometry, SeriesGeometry};
use crate::source::endpoint::{is_orthanc_id, is_uid, Endpoint};
use crate::source::http::PacsClient;

/// Files at most this large are read whole; of a larger sample only its tags.
const SMALL_FILE: i64 = 8 * 1024;

/// The largest image file read when its tags do not answer.
const MAX_FILE: usize = 16 << 20;

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
/// is read whole, within `budget` bytes in all; `at_once` files are asked at once. Every
/// series answered names every instance Orthanc lists; the others are left out of both.
pub async fn series_geometries(
    rest: &PacsClient,
    wanted: &[ImageRef],
    named: &HashSet<String>,
    budget: usize,
    at_once: usize,
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
    // what to read of each series: a sample's file (its tags when large), or every file
    let mut left = budget as i64;
    let mut plans: Vec<(&str, Vec<Entry>, Plan)> = Vec::new();
    let mut files: Vec<(String, i64)> = Vec::new();
    for (series, l) in listed {
        let Some(mut l) = l.filter(|l| !l.is_empty()) else {
            continue;
        };
        l.sort_by(|a, b| a.sop.cmp(&b.sop));
        if l.iter().all(|e| e.plane.is_some()) {
            let pick = l.iter().position(|e| named.contains(&e.sop)).unwrap_or(0);
            files.push((l[pick].id.clone(), l[pick].size));
            plans.push((series, l, Plan::Sample(pick)));
        } else {
            let bytes: i64 = l.iter().map(|e| e.size).sum();
            if l.iter().any(|e| e.size > SMALL_FILE) || bytes > left {
                continue;
            }
            left -= bytes;
            files.extend(l.iter().map(|e| (e.id.clone(), e.size)));
            plans.push((series, l, Plan::Whole));
        }
    }
    if plans.is_empty() {
        return (out, index);
    }
    // each parsed to its header as it comes
    let read: HashMap<String, ImageInstance> = stream::iter(files)
        .map(|(id, size)| image_file(rest, id, size))
        .buffer_unordered(at_once.max(1))
        .collect::<Vec<Option<ImageInstance>>>()
        .await
        .into_iter()
        .flatten()
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

/// The header of image file `id` (`size` bytes as Orthanc listed it): of a large one its tags
/// (Orthanc reads the file up to its pixel data and sends a few KB), else, or when the tags do
/// not answer, the file itself. Nothing when neither gives an image's header (the caller then
/// asks QIDO-RS).
async fn image_file(rest: &PacsClient, id: String, size: i64) -> Option<ImageInstance> {
    if size > SMALL_FILE {
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
    }
    // (a file larger than MAX_FILE is left to QIDO-RS)
    let at = Endpoint::at(&["instances", &id, "file"]);
    let limit = usize::try_from(size)
        .unwrap_or(usize::MAX)
        .saturating_add(4096)
        .min(MAX_FILE);
    match rest.get_at_most(&at, "application/dicom", limit).await {
        Ok(b) => image_of(&b),
        Err(e) => {
            tracing::debug!("{e}; that image series' geometry from QIDO-RS");
            None
        }
    }
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
