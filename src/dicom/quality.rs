//! The label quality gate: decodes a SEG's pixel data, counts voxels per segment, checks the
//! geometry against the source series and the segment names against the experiment's labels.
//! A label that fails is `invalid` and never notified: a round started by an empty SEG, or one
//! drawn on the wrong image, wastes GPU hours and can make the model worse.
//!
//! BINARY frames are unpacked here, not by dicom-pixeldata: frames are bit-packed back to back
//! (LSB first), so a frame starts mid-byte when rows*cols is not a multiple of 8, which
//! dicom-pixeldata 0.10 decodes wrongly. Encapsulated frames (JPEG 2000, RLE) are decoded one
//! at a time by dicom-pixeldata.

use std::collections::{BTreeMap, HashMap, HashSet};

use dicom_dictionary_std::tags;
use dicom_object::mem::InMemDicomObject;
use dicom_object::DefaultDicomObject;
use serde::Serialize;

use super::reader::text;

/// What a SEG holds, per segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentInfo {
    pub number: u32,
    pub label: String,
    /// The segmented property type's code meaning.
    pub property: String,
    pub voxels: u64,
}

/// The result of validating one SEG series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Quality {
    pub frames: usize,
    pub segments: Vec<SegmentInfo>,
    /// Worth saying, not blocking.
    pub warnings: Vec<String>,
    /// Blocking: the label is invalid.
    pub problems: Vec<String>,
}

/// One frame's place, from the per-frame functional groups.
#[derive(Debug, Clone, Default)]
struct FrameInfo {
    segment: Option<u32>,
    sources: Vec<String>,
    position: Option<[f64; 3]>,
}

/// What the source image series looks like, for the geometry checks.
#[derive(Debug, Clone, Default)]
pub struct SeriesGeometry {
    pub series: String,
    /// SOP Instance UID → (rows, columns, ImagePositionPatient, ImageOrientationPatient)
    pub instances: HashMap<String, InstanceGeometry>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InstanceGeometry {
    pub rows: u32,
    pub cols: u32,
    pub position: Option<[f64; 3]>,
    pub orientation: Option<[f64; 6]>,
}

/// The experiment's labels (`model_params.labels`): number → name.
pub type ExpectedLabels = BTreeMap<String, String>;

/// How labels are checked.
#[derive(Debug, Clone, Default)]
pub struct Validator {
    pub labels: Option<ExpectedLabels>,
    /// An unknown segment name makes the label invalid, not only a warning.
    pub strict_labels: bool,
}

fn uint(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    obj.get(tag).and_then(|e| e.to_int::<u32>().ok())
}

fn floats<const N: usize>(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<[f64; N]> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    v.try_into().ok()
}

fn items(obj: &InMemDicomObject, tag: dicom_core::Tag) -> &[InMemDicomObject] {
    obj.get(tag).and_then(|e| e.items()).unwrap_or(&[])
}

impl InstanceGeometry {
    /// The geometry of an image instance's header.
    pub fn of(obj: &InMemDicomObject) -> InstanceGeometry {
        InstanceGeometry {
            rows: uint(obj, tags::ROWS).unwrap_or(0),
            cols: uint(obj, tags::COLUMNS).unwrap_or(0),
            position: floats::<3>(obj, tags::IMAGE_POSITION_PATIENT),
            orientation: floats::<6>(obj, tags::IMAGE_ORIENTATION_PATIENT),
        }
    }
}

/// Counts set bits in `[start, end)` of an LSB-first bit stream.
fn count_bits(data: &[u8], start: usize, end: usize) -> u64 {
    let mut n = 0u64;
    let mut i = start;
    while i < end && !i.is_multiple_of(8) {
        n += u64::from((data[i / 8] >> (i % 8)) & 1);
        i += 1;
    }
    while i + 8 <= end {
        n += u64::from(data[i / 8].count_ones());
        i += 8;
    }
    while i < end {
        n += u64::from((data[i / 8] >> (i % 8)) & 1);
        i += 1;
    }
    n
}

/// Unpacks frame `frame` of natively encoded BINARY pixel data (frames back to back, LSB
/// first) to one byte (0 or 1) per pixel. Errors when the data is too short.
pub fn unpack_binary_frame(
    data: &[u8],
    rows: usize,
    cols: usize,
    frame: usize,
) -> Result<Vec<u8>, String> {
    let (start, end) = frame_bits(data, rows, cols, frame)?;
    Ok((start..end).map(|i| (data[i / 8] >> (i % 8)) & 1).collect())
}

/// The bit range of frame `frame` in back-to-back BINARY frames, checked against the data.
fn frame_bits(
    data: &[u8],
    rows: usize,
    cols: usize,
    frame: usize,
) -> Result<(usize, usize), String> {
    let n = rows.checked_mul(cols).ok_or("frame size overflows")?;
    let start = frame.checked_mul(n).ok_or("frame offset overflows")?;
    let end = start.checked_add(n).ok_or("frame end overflows")?;
    if end.div_ceil(8) > data.len() {
        return Err(format!(
            "truncated pixel data: frame {} needs {} bytes, there are {}",
            frame + 1,
            end.div_ceil(8),
            data.len()
        ));
    }
    Ok((start, end))
}

/// Voxels set in frame `frame` of natively encoded BINARY pixel data, counted from the packed
/// bits (the fast path). Equals the sum of [`unpack_binary_frame`].
pub fn binary_frame_voxels(
    data: &[u8],
    rows: usize,
    cols: usize,
    frame: usize,
) -> Result<u64, String> {
    let (start, end) = frame_bits(data, rows, cols, frame)?;
    Ok(count_bits(data, start, end))
}

/// Voxels per segment number, each frame's place, and Rows, Columns.
type InstanceCounts = (BTreeMap<u32, u64>, Vec<FrameInfo>, u32, u32);

/// Decodes one SEG instance and counts voxels per segment number. Never panics on bad input:
/// every problem is an error string naming what is wrong.
fn count_instance(obj: &DefaultDicomObject) -> Result<InstanceCounts, String> {
    let rows = uint(obj, tags::ROWS).ok_or("no Rows")?;
    let cols = uint(obj, tags::COLUMNS).ok_or("no Columns")?;
    let frames_declared = obj
        .get(tags::NUMBER_OF_FRAMES)
        .and_then(|e| e.to_int::<i64>().ok())
        .unwrap_or(1);
    if !(1..=100_000).contains(&frames_declared)
        || rows == 0
        || cols == 0
        || rows > 65535
        || cols > 65535
    {
        return Err(format!(
            "implausible size: {rows}x{cols}, {frames_declared} frames"
        ));
    }
    let frames = frames_declared as usize;
    let bits = uint(obj, tags::BITS_ALLOCATED).ok_or("no BitsAllocated")?;
    let seg_type = text(obj, tags::SEGMENTATION_TYPE);
    let labelmap = obj.meta().media_storage_sop_class_uid() == super::LABELMAP_SEG_SOP_CLASS
        || seg_type.eq_ignore_ascii_case("LABELMAP");
    let per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let shared = items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first();
    let mut info = Vec::with_capacity(frames);
    for f in 0..frames {
        let fg = per_frame.get(f);
        let seg_of = |g: &InMemDicomObject| {
            items(g, tags::SEGMENT_IDENTIFICATION_SEQUENCE)
                .first()
                .and_then(|s| uint(s, tags::REFERENCED_SEGMENT_NUMBER))
        };
        let segment = fg.and_then(seg_of).or_else(|| shared.and_then(seg_of));
        let mut sources = Vec::new();
        for g in fg.into_iter().chain(shared) {
            for d in items(g, tags::DERIVATION_IMAGE_SEQUENCE) {
                for s in items(d, tags::SOURCE_IMAGE_SEQUENCE) {
                    let uid = text(s, tags::REFERENCED_SOP_INSTANCE_UID);
                    if !uid.is_empty() {
                        sources.push(uid);
                    }
                }
            }
        }
        let position = fg
            .and_then(|g| items(g, tags::PLANE_POSITION_SEQUENCE).first())
            .and_then(|p| floats::<3>(p, tags::IMAGE_POSITION_PATIENT));
        info.push(FrameInfo {
            segment,
            sources,
            position,
        });
    }
    let pixel = obj.get(tags::PIXEL_DATA).ok_or("no Pixel Data")?;
    let n = rows as usize * cols as usize;
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    let encapsulated = pixel.fragments().is_some();
    // dicom-pixeldata's codecs refuse BitsAllocated 1; a compressed BINARY frame holds one
    // sample per pixel in its codestream, so decode it as 8-bit
    let as_8bit;
    let decode_obj: &DefaultDicomObject = if encapsulated && bits == 1 {
        let mut o = obj.clone();
        for (tag, v) in [
            (tags::BITS_ALLOCATED, 8u16),
            (tags::BITS_STORED, 8),
            (tags::HIGH_BIT, 7),
        ] {
            o.put(dicom_core::DataElement::new(
                tag,
                dicom_core::VR::US,
                dicom_core::PrimitiveValue::from(v),
            ));
        }
        as_8bit = o;
        &as_8bit
    } else {
        obj
    };
    if !encapsulated && bits == 1 && !labelmap {
        // the common case, counted straight from the packed bits
        let raw = pixel.to_bytes().map_err(|e| format!("Pixel Data: {e}"))?;
        let need = (frames * n).div_ceil(8);
        if raw.len() < need {
            return Err(format!(
                "truncated pixel data: {} bytes, {frames} frames of {rows}x{cols} need {need}",
                raw.len()
            ));
        }
        for (f, fi) in info.iter().enumerate() {
            let seg = fi.segment.ok_or_else(|| {
                format!(
                    "frame {} names no segment (SegmentIdentificationSequence)",
                    f + 1
                )
            })?;
            *counts.entry(seg).or_default() += count_bits(&raw, f * n, (f + 1) * n);
        }
        return Ok((counts, info, rows, cols));
    }
    for (f, fi) in info.iter().enumerate() {
        // one frame's pixels, one value per pixel
        let frame: Vec<u32> = if encapsulated {
            use dicom_pixeldata::PixelDecoder;
            let d = decode_obj.decode_pixel_data_frame(f as u32).map_err(|e| {
                format!(
                    "frame {}: cannot decode ({}): {}",
                    f + 1,
                    obj.meta().transfer_syntax(),
                    super::reader::error_chain(&e)
                )
            })?;
            let data = d.data();
            if bits == 1 && data.len() == n.div_ceil(8) {
                unpack_binary_frame(data, rows as usize, cols as usize, 0)?
                    .into_iter()
                    .map(u32::from)
                    .collect()
            } else if bits == 16 && data.len() >= n * 2 {
                data.chunks_exact(2)
                    .take(n)
                    .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                    .collect()
            } else if data.len() >= n {
                data[..n].iter().map(|&b| u32::from(b)).collect()
            } else {
                return Err(format!(
                    "frame {}: decoded {} bytes for {n} pixels",
                    f + 1,
                    data.len()
                ));
            }
        } else {
            let raw = pixel.to_bytes().map_err(|e| format!("Pixel Data: {e}"))?;
            match bits {
                1 => unpack_binary_frame(&raw, rows as usize, cols as usize, f)?
                    .into_iter()
                    .map(u32::from)
                    .collect(),
                8 => raw
                    .get(f * n..(f + 1) * n)
                    .ok_or_else(|| {
                        format!(
                            "truncated pixel data: frame {} is missing ({} bytes)",
                            f + 1,
                            raw.len()
                        )
                    })?
                    .iter()
                    .map(|&b| u32::from(b))
                    .collect(),
                16 => raw
                    .get(f * n * 2..(f + 1) * n * 2)
                    .ok_or_else(|| {
                        format!(
                            "truncated pixel data: frame {} is missing ({} bytes)",
                            f + 1,
                            raw.len()
                        )
                    })?
                    .chunks_exact(2)
                    .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
                b => return Err(format!("unsupported BitsAllocated {b}")),
            }
        };
        if labelmap {
            for v in frame.into_iter().filter(|v| *v != 0) {
                *counts.entry(v).or_default() += 1;
            }
        } else {
            let seg = fi.segment.ok_or_else(|| {
                format!(
                    "frame {} names no segment (SegmentIdentificationSequence)",
                    f + 1
                )
            })?;
            let set = frame.iter().filter(|v| **v > 0).count() as u64;
            *counts.entry(seg).or_default() += set;
        }
    }
    Ok((counts, info, rows, cols))
}

fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

impl Validator {
    /// Validates the instances of one SEG series against its source series.
    pub fn validate(
        &self,
        instances: &[DefaultDicomObject],
        source: Option<&SeriesGeometry>,
    ) -> Quality {
        let mut q = Quality::default();
        let mut names: BTreeMap<u32, (String, String)> = BTreeMap::new();
        let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
        for (i, obj) in instances.iter().enumerate() {
            for s in items(obj, tags::SEGMENT_SEQUENCE) {
                if let Some(n) = uint(s, tags::SEGMENT_NUMBER) {
                    let prop = items(s, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE)
                        .first()
                        .map(|c| text(c, tags::CODE_MEANING))
                        .unwrap_or_default();
                    names.insert(n, (text(s, tags::SEGMENT_LABEL), prop));
                }
            }
            let which = if instances.len() > 1 {
                format!("instance {}: ", i + 1)
            } else {
                String::new()
            };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| count_instance(obj))) {
                Ok(Ok((c, frames, rows, cols))) => {
                    q.frames += frames.len();
                    for (k, v) in c {
                        *counts.entry(k).or_default() += v;
                    }
                    if let Some(src) = source {
                        self.check_geometry(&mut q, &which, &frames, rows, cols, src);
                    }
                }
                Ok(Err(e)) => q
                    .problems
                    .push(format!("{which}unreadable pixel data: {e}")),
                Err(_) => q.problems.push(format!(
                    "{which}unreadable pixel data: the decoder panicked"
                )),
            }
        }
        // segment 0 of a label map is its background: not a label, not counted
        names.remove(&0);
        counts.remove(&0);
        let mut numbers: Vec<u32> = names.keys().copied().collect();
        numbers.extend(counts.keys().copied().filter(|k| !names.contains_key(k)));
        numbers.sort();
        numbers.dedup();
        for n in numbers {
            let (label, property) = names.get(&n).cloned().unwrap_or_default();
            let voxels = counts.get(&n).copied().unwrap_or(0);
            q.segments.push(SegmentInfo {
                number: n,
                label,
                property,
                voxels,
            });
        }
        if q.problems.is_empty() {
            let total: u64 = q.segments.iter().map(|s| s.voxels).sum();
            if total == 0 {
                q.problems
                    .push("empty segmentation: no voxel in any segment".into());
            } else {
                for s in q.segments.iter().filter(|s| s.voxels == 0) {
                    q.warnings
                        .push(format!("segment {} '{}' is empty", s.number, s.label));
                }
            }
        }
        if let Some(expected) = &self.labels {
            let known: HashSet<String> = expected.values().map(|v| norm(v)).collect();
            for s in &q.segments {
                if !known.contains(&norm(&s.label)) && !known.contains(&norm(&s.property)) {
                    let msg = format!(
                        "segment {} '{}' ({}) matches no experiment label (known: {})",
                        s.number,
                        s.label,
                        if s.property.is_empty() {
                            "no property"
                        } else {
                            &s.property
                        },
                        expected.values().cloned().collect::<Vec<_>>().join(", ")
                    );
                    if self.strict_labels {
                        q.problems.push(msg);
                    } else {
                        q.warnings.push(msg);
                    }
                }
            }
        }
        q
    }

    fn check_geometry(
        &self,
        q: &mut Quality,
        which: &str,
        frames: &[FrameInfo],
        rows: u32,
        cols: u32,
        src: &SeriesGeometry,
    ) {
        let Some(first) = src.instances.values().next() else {
            return;
        };
        if (first.rows, first.cols) != (rows, cols) {
            q.problems.push(format!(
                "{which}Rows/Columns {rows}x{cols} differ from the source images' {}x{} (series {})",
                first.rows, first.cols, src.series
            ));
        }
        for (f, fr) in frames.iter().enumerate() {
            if let Some(bad) = fr.sources.iter().find(|s| !src.instances.contains_key(*s)) {
                q.problems.push(format!(
                    "{which}frame {} references SOP Instance {bad}, which is not in the source series {}",
                    f + 1,
                    src.series
                ));
                return; // one is enough to make the point
            }
        }
        // positions along the slice normal must lie within the source's extent
        let normal = first.orientation.map(|o| {
            let (r, c) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
            [
                r[1] * c[2] - r[2] * c[1],
                r[2] * c[0] - r[0] * c[2],
                r[0] * c[1] - r[1] * c[0],
            ]
        });
        let n = normal.unwrap_or([0.0, 0.0, 1.0]);
        let dot = |p: [f64; 3]| p[0] * n[0] + p[1] * n[1] + p[2] * n[2];
        let mut zs: Vec<f64> = src
            .instances
            .values()
            .filter_map(|g| g.position)
            .map(dot)
            .collect();
        if zs.is_empty() {
            return;
        }
        zs.sort_by(|a, b| a.total_cmp(b));
        let spacing = zs
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|d| *d > 1e-6)
            .fold(f64::INFINITY, f64::min);
        let tol = if spacing.is_finite() {
            spacing / 2.0
        } else {
            1.0
        }
        .max(0.01);
        let (lo, hi) = (zs[0] - tol, zs[zs.len() - 1] + tol);
        for (f, fr) in frames.iter().enumerate() {
            if let Some(p) = fr.position {
                let z = dot(p);
                if z < lo || z > hi {
                    q.problems.push(format!(
                        "{which}frame {} ImagePositionPatient ({:.2}, {:.2}, {:.2}) lies outside the source series extent ({:.2} .. {:.2} along the slice normal)",
                        f + 1, p[0], p[1], p[2], zs[0], zs[zs.len() - 1]
                    ));
                    return;
                }
            }
        }
    }
}

/// Reuses the ledger's verdict on an unchanged label (same instances): an invalid one stays
/// invalid with its reason, a valid one is not decoded again. Returns whether that settled it.
pub fn reuse_known(l: &mut super::MatchedLabel, known: &crate::ledger::Known) -> bool {
    let Some(k) = known.get(l.seg.uid()) else {
        return false;
    };
    if !k.unchanged(Some(l.seg.instances.len() as i64)) {
        return false;
    }
    match k.status.as_str() {
        "invalid" => {
            if let Some(image) = l.outcome.image().map(str::to_string) {
                l.outcome = super::MatchOutcome::Invalid {
                    image,
                    reason: k.reason.clone(),
                };
            }
            true
        }
        "ready" | "superseded" => true,
        _ => false,
    }
}

/// Reads a whole Part-10 file (pixel data included) for validation, from a path.
pub fn read_full(path: &std::path::Path) -> Result<DefaultDicomObject, String> {
    super::open::open_file(path, super::open::Extent::Whole).map_err(|e| e.to_string())
}

/// Parses a whole Part-10 file (pixel data included) from bytes (a WADO-RS part).
pub fn parse_full(bytes: &[u8]) -> Result<DefaultDicomObject, String> {
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Err("not a DICOM Part-10 object".into());
    }
    let mut c = std::io::Cursor::new(bytes);
    c.set_position(132);
    super::guard::prescan(c, bytes.len() as u64)?;
    std::panic::catch_unwind(|| {
        dicom_object::OpenFileOptions::new()
            .read_preamble(dicom_object::file::ReadPreamble::Never)
            .from_reader(&bytes[128..])
            .map_err(|e| super::reader::error_chain(&e))
    })
    .unwrap_or_else(|_| Err("the DICOM parser panicked".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_frames_start_mid_byte() {
        // two 3x3 frames (9 bits each): frame 0 = all ones, frame 1 = only its last pixel
        let mut bits = vec![1u8; 9];
        bits.extend([0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let mut packed = vec![0u8; 3];
        for (i, b) in bits.iter().enumerate() {
            packed[i / 8] |= b << (i % 8);
        }
        assert_eq!(unpack_binary_frame(&packed, 3, 3, 0).unwrap(), vec![1; 9]);
        assert_eq!(
            unpack_binary_frame(&packed, 3, 3, 1).unwrap(),
            vec![0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(count_bits(&packed, 0, 9), 9);
        assert_eq!(count_bits(&packed, 9, 18), 1);
        assert!(unpack_binary_frame(&packed, 3, 3, 2)
            .unwrap_err()
            .contains("truncated"));
        assert!(unpack_binary_frame(&packed, usize::MAX, 2, 0).is_err());
    }

    #[test]
    fn count_bits_matches_unpacking_everywhere() {
        let data: Vec<u8> = (0..64u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for start in 0..40 {
            for end in start..(start + 200).min(512) {
                let naive: u64 = (start..end)
                    .map(|i| u64::from((data[i / 8] >> (i % 8)) & 1))
                    .sum();
                assert_eq!(count_bits(&data, start, end), naive, "{start}..{end}");
            }
        }
    }

    #[test]
    fn names_compare_case_and_space_insensitively() {
        assert_eq!(norm(" Left Kidney "), norm("leftkidney"));
    }
}
