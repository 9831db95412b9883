//! The label quality gate: decodes a SEG's pixel data, counts voxels per segment, checks the
//! geometry against the source series and the segment names against the experiment's labels.
//! A label that fails is `invalid` and never notified: a round started by an empty SEG, or one
//! drawn on the wrong image, wastes GPU hours and can make the model worse.
//!
//! Pixel data is decoded by [`super::pixels`] (native, RLE, JPEG 2000). Every verdict is a
//! function of the set of files alone: the source geometry comes from the image instances only
//! (an SR or a presentation state in the same series is not an image), and nothing depends on
//! the order in which files, instances or threads came.

use std::collections::{BTreeMap, BTreeSet};

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

use super::pixels::{count_instance, items, uint, Counted, FrameInfo};
use super::reader::text;

pub use super::pixels::{binary_frame_voxels, unpack_binary_frame};

pub use crate::model::quality::{
    ExpectedLabels, InstanceGeometry, Quality, SegmentInfo, SeriesGeometry, Validator,
};

/// A frame (or, in a label map, a pixel value) that names a segment SegmentSequence does not
/// define makes the label invalid: OHIF's bitmap writer drops an unpainted segment and
/// renumbers the rest while the frames keep the old numbers, so such a label trains the wrong
/// class. A label map's PixelPaddingValue is padding, not a segment, unless it is defined.
fn undefined_segments(
    q: &mut Quality,
    which: &str,
    c: &mut Counted,
    defined: &BTreeSet<u32>,
    padding: Option<u32>,
) {
    let list = if defined.is_empty() {
        "none".to_string()
    } else {
        defined
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if c.labelmap {
        if let Some(p) = padding.filter(|p| *p != 0 && !defined.contains(p)) {
            c.counts.remove(&p);
        }
        for (v, n) in c.counts.iter().filter(|(v, _)| **v != 0) {
            if !defined.contains(v) {
                q.problems.push(format!(
                    "{which}pixel value {v} ({n} voxels) references segment {v}, which \
                     SegmentSequence does not define (defined: {list})"
                ));
            }
        }
        return;
    }
    let mut by_segment: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (f, fr) in c.frames.iter().enumerate() {
        if let Some(s) = fr.segment.filter(|s| !defined.contains(s)) {
            by_segment.entry(s).or_default().push(f + 1);
        }
    }
    for (s, frames) in by_segment {
        let shown: Vec<String> = frames.iter().take(5).map(usize::to_string).collect();
        let more = if frames.len() > 5 {
            format!(" and {} more", frames.len() - 5)
        } else {
            String::new()
        };
        let (noun, verb) = if frames.len() == 1 {
            ("frame", "references")
        } else {
            ("frames", "reference")
        };
        q.problems.push(format!(
            "{which}{noun} {}{more} {verb} segment {s}, which SegmentSequence does not define \
             (defined: {list})",
            shown.join(", ")
        ));
    }
}

/// A SEG series' instances as the gate reads them, decoded once: everything the verdict needs
/// but the source series' geometry and the experiment's labels. Small (counts and frame
/// places, no pixels): a source keeps it instead of the files.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// The instances' SOP Instance UIDs, in the order judged.
    pub sops: Vec<String>,
    instances: Vec<DecodedInstance>,
    /// Segment number → (label, property), as the SegmentSequences define them.
    names: BTreeMap<u32, (String, String)>,
}

#[derive(Debug, Clone)]
struct DecodedInstance {
    /// "instance N: " when the series has several, else empty.
    which: String,
    /// What the pixels hold, and the undefined segments they name; or why they are unreadable.
    read: Result<(Counted, Vec<String>), String>,
}

impl Decoded {
    /// Decodes the instances of one SEG series (in the order given).
    pub fn of(instances: &[DefaultDicomObject]) -> Decoded {
        let mut d = Decoded::default();
        for (i, obj) in instances.iter().enumerate() {
            d.sops.push(text(obj, tags::SOP_INSTANCE_UID));
            let mut defined = BTreeSet::new();
            for s in items(obj, tags::SEGMENT_SEQUENCE) {
                if let Some(n) = uint(s, tags::SEGMENT_NUMBER) {
                    let prop = items(s, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE)
                        .first()
                        .map(|c| text(c, tags::CODE_MEANING))
                        .unwrap_or_default();
                    d.names.insert(n, (text(s, tags::SEGMENT_LABEL), prop));
                    defined.insert(n);
                }
            }
            let which = if instances.len() > 1 {
                format!("instance {}: ", i + 1)
            } else {
                String::new()
            };
            let read = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                count_instance(obj)
            })) {
                Ok(Ok(mut c)) => {
                    let mut q = Quality::default();
                    let padding = uint(obj, tags::PIXEL_PADDING_VALUE);
                    undefined_segments(&mut q, &which, &mut c, &defined, padding);
                    Ok((c, q.problems))
                }
                Ok(Err(e)) => Err(format!("{which}unreadable pixel data: {e}")),
                Err(_) => Err(format!(
                    "{which}unreadable pixel data: the decoder panicked"
                )),
            };
            d.instances.push(DecodedInstance { which, read });
        }
        d
    }
}

impl Validator {
    /// Validates the instances of one SEG series against its source series, whose geometry
    /// was read whole. (Given a sampled one, a verdict it cannot decide is taken without the
    /// geometry checks, and says so.)
    pub fn validate(
        &self,
        instances: &[DefaultDicomObject],
        source: Option<&SeriesGeometry>,
    ) -> Quality {
        let d = Decoded::of(instances);
        self.judge(&d, source).unwrap_or_else(|| {
            let mut q = self.judge(&d, None).unwrap_or_default();
            q.warnings
                .push("geometry not checked: only one source instance's size is known".into());
            q
        })
    }

    /// The verdict on a decoded SEG series against its source series, or `None` when the
    /// source geometry is sampled ([`SeriesGeometry::sampled`]) and the verdict could depend
    /// on the sizes of the instances not read: the caller then reads the whole series and asks
    /// again.
    ///
    /// With a sample, the size check is decided when the sampled instance is an image of the
    /// SEG's size and either the SEG's frames name it or they name no instance of the series:
    /// "some referenced image (or, naming none, some image) has the SEG's size" then holds
    /// whatever the other sizes are. Positions and orientations are the PACS's for every
    /// instance, so the other checks are the same as with the whole series. (Every instance
    /// of a sampled series has a position and an orientation, so each is taken as an image:
    /// an SR or a presentation state has neither.)
    pub fn judge(&self, d: &Decoded, source: Option<&SeriesGeometry>) -> Option<Quality> {
        let mut q = Quality::default();
        let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
        for inst in &d.instances {
            match &inst.read {
                Ok((c, undefined)) => {
                    q.frames += c.frames.len();
                    q.warnings.extend(c.notes.iter().cloned());
                    q.problems.extend(undefined.iter().cloned());
                    for (k, v) in &c.counts {
                        *counts.entry(*k).or_default() += v;
                    }
                    if let Some(src) = source {
                        let which = &inst.which;
                        if !self.check_geometry(&mut q, which, &c.frames, c.rows, c.cols, src) {
                            return None;
                        }
                    }
                }
                Err(e) => q.problems.push(e.clone()),
            }
        }
        let mut names = d.names.clone();
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
            super::labels::check_labels(&mut q, expected, self.strict_labels);
        }
        Some(q)
    }

    /// Checks one SEG instance's frames against the source series; false when the source is
    /// sampled and this check could depend on what was not read (nothing is then recorded).
    fn check_geometry(
        &self,
        q: &mut Quality,
        which: &str,
        frames: &[FrameInfo],
        rows: u32,
        cols: u32,
        src: &SeriesGeometry,
    ) -> bool {
        if let Some(sample) = &src.sampled {
            // decided only when the sizes not read cannot matter (see `Validator::judge`)
            let fits = src
                .instances
                .get(sample)
                .is_some_and(|g| g.is_image() && (g.rows, g.cols) == (rows, cols));
            let sources = || frames.iter().flat_map(|f| f.sources.iter());
            let names_sample = sources().any(|s| s == sample);
            let names_any = sources().any(|s| src.instances.contains_key(s));
            if !fits || (names_any && !names_sample) {
                return false;
            }
        }
        // the image instances only, in UID order: never an SR's 0x0, never the first of a map
        let images: Vec<(&String, &InstanceGeometry)> =
            src.instances.iter().filter(|(_, g)| g.is_image()).collect();
        if images.is_empty() {
            q.warnings.push(format!(
                "{which}geometry not checked: series {} holds no image instance",
                src.series
            ));
            return true;
        }
        // the sizes of the source instances the frames name, else of every image
        let named: BTreeSet<&str> = frames
            .iter()
            .flat_map(|f| f.sources.iter().map(String::as_str))
            .collect();
        let referenced: BTreeSet<(u32, u32)> = images
            .iter()
            .filter(|(uid, _)| named.contains(uid.as_str()))
            .map(|(_, g)| (g.rows, g.cols))
            .collect();
        let (sizes, whose) = if referenced.is_empty() {
            (images.iter().map(|(_, g)| (g.rows, g.cols)).collect(), "")
        } else {
            (referenced, "the instances its frames reference, ")
        };
        if !sizes.contains(&(rows, cols)) {
            let list = sizes
                .iter()
                .map(|(r, c)| format!("{r}x{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            let differ = if sizes.len() == 1 {
                format!("differ from the source images' {list}")
            } else {
                format!("match none of the source images' sizes ({list})")
            };
            q.problems.push(format!(
                "{which}Rows/Columns {rows}x{cols} {differ} ({whose}series {})",
                src.series
            ));
        }
        for (f, fr) in frames.iter().enumerate() {
            if let Some(bad) = fr.sources.iter().find(|s| !src.instances.contains_key(*s)) {
                q.problems.push(format!(
                    "{which}frame {} references SOP Instance {bad}, which is not in the source series {}",
                    f + 1,
                    src.series
                ));
                return true; // one is enough to make the point
            }
        }
        // positions along the slice normal must lie within the source's extent; the normal is
        // that of the first image (in UID order) that has an orientation
        let normal = images.iter().find_map(|(_, g)| g.orientation).map(|o| {
            let (r, c) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
            [
                r[1] * c[2] - r[2] * c[1],
                r[2] * c[0] - r[0] * c[2],
                r[0] * c[1] - r[1] * c[0],
            ]
        });
        let n = normal.unwrap_or([0.0, 0.0, 1.0]);
        let dot = |p: [f64; 3]| p[0] * n[0] + p[1] * n[1] + p[2] * n[2];
        let mut zs: Vec<f64> = images
            .iter()
            .filter_map(|(_, g)| g.position)
            .map(dot)
            .collect();
        if zs.is_empty() {
            return true;
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
                    return true;
                }
            }
        }
        true
    }
}

/// Reuses the ledger's verdict on an unchanged label: an invalid one stays invalid with its
/// reason, a valid one is not decoded again. Only a verdict resting on the same `key` is
/// reused (the same files, sizes and times; the same PACS instance set), and a verdict the
/// ledger kept without a key (the content could not be read completely) never is. Returns
/// whether that settled it.
pub fn reuse_known(
    l: &mut super::MatchedLabel,
    known: &crate::model::Known,
    key: Option<&str>,
) -> bool {
    let Some(k) = known.get(l.seg.uid()) else {
        return false;
    };
    // the same instances, judged under the same settings
    if !k.unchanged(Some(l.seg.instances.len() as i64)) || k.stamp != l.seg.remote_stamp {
        return false;
    }
    let (Some(key), Some(kept)) = (key, k.verdict_key.as_deref()) else {
        return false;
    };
    if key != kept {
        return false;
    }
    let settled = match k.status {
        crate::model::status::LabelStatus::Invalid => {
            if let Some(image) = l.outcome.image().map(str::to_string) {
                l.outcome = super::MatchOutcome::Invalid {
                    image,
                    reason: k.reason.clone(),
                };
            }
            true
        }
        crate::model::status::LabelStatus::Ready
        | crate::model::status::LabelStatus::Superseded => true,
        _ => false,
    };
    if settled {
        l.verdict_key = Some(key.to_string());
    }
    settled
}

/// The verdict key of local files: each one's name (its bytes), size and modification time.
/// None when one cannot be looked at: such a verdict is never reused.
pub fn files_key(files: &[std::path::PathBuf]) -> Option<String> {
    if files.is_empty() {
        return None;
    }
    let mut h = sha1_smol::Sha1::new();
    for f in files {
        let m = std::fs::metadata(f).ok()?;
        let t = m
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        h.update(f.as_os_str().as_encoded_bytes());
        h.update(format!("\0{}\0{}.{:09}\n", m.len(), t.as_secs(), t.subsec_nanos()).as_bytes());
    }
    Some(format!("files:{}", h.digest()))
}

/// The verdict key of PACS instances: the instance set that was retrieved and judged.
pub fn instances_key(seg: &super::SegSeries) -> String {
    format!("instances:{}", seg.fingerprint())
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
mod tests;
