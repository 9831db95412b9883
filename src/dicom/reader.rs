//! Header-only reading of DICOM Part-10 files.
//!
//! A file is DICOM when it has the 128-byte preamble followed by `DICM`; the name does not matter.
//! Reading stops before Pixel Data, so a 500 MB CT costs the same as a 2 kB one.

use std::fs::File;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::mem::InMemDicomObject;

use super::is_seg_sop_class;

pub use super::open::ReadError;

pub use crate::model::series::{ImageInstance, InstanceHeader, SegInstance, SegSeries, SortKey};

/// Checks for the preamble and the `DICM` magic without reading further.
pub fn is_part10(path: &Path) -> Result<bool, ReadError> {
    let mut f = File::open(path)?;
    let mut buf = [0u8; 132];
    let n = super::open::read_up_to(&mut f, &mut buf)?;
    if n == 0 {
        return Err(ReadError::Empty);
    }
    Ok(n == 132 && &buf[128..132] == b"DICM")
}

/// Reads the header of one Part-10 file (everything before Pixel Data). A panic inside the
/// parser (a bug on hostile input) is caught and reported as a parse error for that file.
pub fn read_instance(path: &Path) -> Result<InstanceHeader, ReadError> {
    std::panic::catch_unwind(|| read_instance_inner(path)).unwrap_or_else(|_| {
        Err(ReadError::Parse(
            "the DICOM parser panicked on this file".into(),
        ))
    })
}

fn read_instance_inner(path: &Path) -> Result<InstanceHeader, ReadError> {
    // read once, checked, and parsed from the bytes checked (see `open`)
    let obj = super::open::open_file(path, super::open::Extent::Header)?;
    header_from_file_object(&obj)
}

/// The header of a parsed Part-10 object: the SOP class from the data set, or from the meta
/// group when the data set lacks it.
fn header_from_file_object(
    obj: &dicom_object::DefaultDicomObject,
) -> Result<InstanceHeader, ReadError> {
    let from_ds = text(obj, tags::SOP_CLASS_UID);
    let sop_class = if from_ds.is_empty() {
        obj.meta().media_storage_sop_class_uid().to_string()
    } else {
        from_ds
    };
    header_from_object(obj, sop_class)
}

/// Reads the header of a Part-10 object held in memory (a fuzz target and WADO-RS parts).
pub fn read_instance_from_bytes(bytes: &[u8]) -> Result<InstanceHeader, ReadError> {
    let obj = super::open::open_bytes(bytes, super::open::Extent::Header)?;
    header_from_file_object(&obj)
}

/// Builds the typed header from a parsed data set. Shared by every reader of DICOM objects.
pub fn header_from_object(
    obj: &InMemDicomObject,
    sop_class: String,
) -> Result<InstanceHeader, ReadError> {
    let sop_instance = required(obj, tags::SOP_INSTANCE_UID, "SOPInstanceUID (0008,0018)")?;
    let series = required(
        obj,
        tags::SERIES_INSTANCE_UID,
        "SeriesInstanceUID (0020,000E)",
    )?;
    let study = required(
        obj,
        tags::STUDY_INSTANCE_UID,
        "StudyInstanceUID (0020,000D)",
    )?;
    if !is_seg_sop_class(&sop_class) {
        return Ok(InstanceHeader::Image(ImageInstance {
            sop_instance,
            series,
            study,
            modality: text(obj, tags::MODALITY),
            geometry: geometry_of(obj),
        }));
    }
    let mut referenced_series = Vec::new();
    let mut source_instances = Vec::new();
    for item in items(obj, tags::REFERENCED_SERIES_SEQUENCE) {
        let uid = text(item, tags::SERIES_INSTANCE_UID);
        if !uid.is_empty() {
            checked_uid(&uid, REFERENCED_SERIES)?;
            referenced_series.push(uid);
        }
        for inst in items(item, tags::REFERENCED_INSTANCE_SEQUENCE) {
            push_uid(
                &mut source_instances,
                text(inst, tags::REFERENCED_SOP_INSTANCE_UID),
            )?;
        }
    }
    for frame in items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE) {
        for deriv in items(frame, tags::DERIVATION_IMAGE_SEQUENCE) {
            for src in items(deriv, tags::SOURCE_IMAGE_SEQUENCE) {
                push_uid(
                    &mut source_instances,
                    text(src, tags::REFERENCED_SOP_INSTANCE_UID),
                )?;
            }
        }
    }
    // Some writers put the derivation in the shared groups.
    for shared in items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE) {
        for deriv in items(shared, tags::DERIVATION_IMAGE_SEQUENCE) {
            for src in items(deriv, tags::SOURCE_IMAGE_SEQUENCE) {
                push_uid(
                    &mut source_instances,
                    text(src, tags::REFERENCED_SOP_INSTANCE_UID),
                )?;
            }
        }
    }
    source_instances.sort();
    source_instances.dedup();
    let sort_key = SortKey {
        content: date_time(obj, tags::CONTENT_DATE, tags::CONTENT_TIME),
        series: date_time(obj, tags::SERIES_DATE, tags::SERIES_TIME),
        created: date_time(
            obj,
            tags::INSTANCE_CREATION_DATE,
            tags::INSTANCE_CREATION_TIME,
        ),
        uid: series.clone(),
    };
    Ok(InstanceHeader::Seg(SegInstance {
        sop_class,
        sop_instance,
        series,
        study,
        patient_id: text(obj, tags::PATIENT_ID),
        instance_number: obj
            .get(tags::INSTANCE_NUMBER)
            .and_then(|e| e.to_int::<i64>().ok()),
        referenced_series,
        source_instances,
        sort_key,
        segment_count: items(obj, tags::SEGMENT_SEQUENCE).len(),
    }))
}

const REFERENCED_SERIES: &str = "ReferencedSeriesSequence > SeriesInstanceUID (0008,1115)";
const SOURCE_INSTANCE: &str = "a source image's ReferencedSOPInstanceUID (0008,1155)";

/// Keeps a non-empty reference UID; one that is not a UID makes the whole header unusable (it
/// would otherwise go into PACS queries, where `*`, `,` or `&` change what is asked).
fn push_uid(v: &mut Vec<String>, s: String) -> Result<(), ReadError> {
    if !s.is_empty() {
        checked_uid(&s, SOURCE_INSTANCE)?;
        v.push(s);
    }
    Ok(())
}

fn checked_uid(v: &str, name: &'static str) -> Result<(), ReadError> {
    match uid_problem(v) {
        Some(why) => Err(ReadError::BadUid(name, why)),
        None => Ok(()),
    }
}

/// A text value with DICOM padding (trailing spaces and NULs) removed; empty when absent.
pub fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| {
            s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string()
        })
        .unwrap_or_default()
}

fn required(
    obj: &InMemDicomObject,
    tag: dicom_core::Tag,
    name: &'static str,
) -> Result<String, ReadError> {
    let v = text(obj, tag);
    if v.is_empty() {
        return Err(ReadError::Missing(name));
    }
    checked_uid(&v, name)?;
    Ok(v)
}

pub use crate::model::uid::{is_uid, uid_problem};

/// Date and time joined so that plain string order is time order ("20180410" + "183328.5").
fn date_time(obj: &InMemDicomObject, date: dicom_core::Tag, time: dicom_core::Tag) -> String {
    let d = text(obj, date);
    if d.is_empty() {
        return String::new();
    }
    let t = text(obj, time).replace(':', "");
    format!("{d}{t}")
}

pub use crate::util::error_chain;

/// Groups SEG instances found at remote locations (URLs) into series; see [`group_files`].
pub fn group_series(found: Vec<(SegInstance, String)>) -> Vec<SegSeries> {
    group(found.into_iter().map(|(i, l)| (i, l, None)).collect())
}

/// Groups SEG instances read from local files into series. Instances that share a SOP
/// Instance UID are duplicates: the one at the lowest path (byte order of the name the file
/// system gives, UTF-8 or not) is kept, deterministically, and the others are named in a
/// warning on the series.
pub fn group_files(found: Vec<(SegInstance, PathBuf)>) -> Vec<SegSeries> {
    group(
        found
            .into_iter()
            .map(|(i, p)| (i, display_path(&p), Some(p)))
            .collect(),
    )
}

/// One SEG instance and where it is: shown location, and the local file when there is one.
type Found = (SegInstance, String, Option<PathBuf>);

fn group(mut found: Vec<Found>) -> Vec<SegSeries> {
    fn place(f: &Found) -> &[u8] {
        match &f.2 {
            Some(p) => p.as_os_str().as_encoded_bytes(),
            None => f.1.as_bytes(),
        }
    }
    found.sort_by(|a, b| {
        (a.0.series.as_str(), a.0.sop_instance.as_str(), place(a)).cmp(&(
            b.0.series.as_str(),
            b.0.sop_instance.as_str(),
            place(b),
        ))
    });
    let mut out: Vec<SegSeries> = Vec::new();
    let mut cur: Vec<Found> = Vec::new();
    let flush = |cur: &mut Vec<Found>, out: &mut Vec<SegSeries>| {
        if cur.is_empty() {
            return;
        }
        let mut warnings = Vec::new();
        let mut kept: Vec<Found> = Vec::new();
        for (inst, loc, file) in cur.drain(..) {
            if let Some((_, kept_loc, _)) = kept
                .iter()
                .find(|(k, _, _)| k.sop_instance == inst.sop_instance)
            {
                warnings.push(format!(
                    "duplicate SOPInstanceUID {} in {} and {}: using {}",
                    inst.sop_instance, kept_loc, loc, kept_loc
                ));
                continue;
            }
            kept.push((inst, loc, file));
        }
        kept.sort_by(|a, b| {
            (a.0.instance_number.unwrap_or(i64::MAX), &a.0.sop_instance)
                .cmp(&(b.0.instance_number.unwrap_or(i64::MAX), &b.0.sop_instance))
        });
        let mut instances: Vec<(String, String, Option<PathBuf>)> = kept
            .iter()
            .map(|(i, l, f)| (i.sop_instance.clone(), l.clone(), f.clone()))
            .collect();
        instances.sort();
        let mut first = kept[0].0.clone();
        // References from every instance count for the source-instances rule.
        let mut all_sources: Vec<String> = kept
            .iter()
            .flat_map(|(i, _, _)| i.source_instances.iter().cloned())
            .collect();
        all_sources.sort();
        all_sources.dedup();
        first.source_instances = all_sources;
        let files: Vec<PathBuf> = instances.iter().filter_map(|(_, _, f)| f.clone()).collect();
        out.push(SegSeries {
            first,
            files: if files.len() == instances.len() {
                files
            } else {
                vec![]
            },
            instances: instances.iter().map(|(u, _, _)| u.clone()).collect(),
            locations: instances.into_iter().map(|(_, l, _)| l).collect(),
            warnings,
            remote_id: None,
            remote_stamp: None,
        });
    };
    for item in found {
        if cur
            .last()
            .is_some_and(|(c, _, _)| c.series != item.0.series)
        {
            flush(&mut cur, &mut out);
        }
        cur.push(item);
    }
    flush(&mut cur, &mut out);
    out
}

/// A path as shown to users and stored in the ledger. A name that is not UTF-8 keeps its
/// other bytes as `\xNN`, so two such names never show the same (the file itself is read
/// through its `PathBuf`, see [`SegSeries::files`]).
pub fn display_path(p: &Path) -> String {
    let bytes = p.as_os_str().as_encoded_bytes();
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.to_string();
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// An unsigned integer value, when present and readable.
pub fn uint(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    obj.get(tag).and_then(|e| e.to_int::<u32>().ok())
}

/// N decimal values (a position, an orientation), when present and readable.
pub fn floats<const N: usize>(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<[f64; N]> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    v.try_into().ok()
}

/// The items of a sequence; none when absent or not a sequence.
pub fn items(obj: &InMemDicomObject, tag: dicom_core::Tag) -> &[InMemDicomObject] {
    obj.get(tag).and_then(|e| e.items()).unwrap_or(&[])
}

/// The geometry of an instance's header (Rows, Columns, position, orientation); zero size for
/// an instance that is not an image.
pub fn geometry_of(obj: &InMemDicomObject) -> crate::model::InstanceGeometry {
    crate::model::InstanceGeometry {
        rows: uint(obj, tags::ROWS).unwrap_or(0),
        cols: uint(obj, tags::COLUMNS).unwrap_or(0),
        position: floats::<3>(obj, tags::IMAGE_POSITION_PATIENT),
        orientation: floats::<6>(obj, tags::IMAGE_ORIENTATION_PATIENT),
    }
}
