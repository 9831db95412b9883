//! The project's own DICOM generator: small CT series and SEGs for every matching case, written
//! as real Part-10 files with dicom-object. Output is byte-for-byte reproducible: UIDs are derived
//! from names (`2.25.` + a hash), dates are fixed, and the meta group names this generator.

use std::io;
use std::path::{Path, PathBuf};

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;

pub use dicom_dictionary_std::uids::CT_IMAGE_STORAGE;
use dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN as EXPLICIT_VR_LE;
const IMPLEMENTATION_UID: &str = "2.25.266540838519402402245829138385541735217";

/// A UID derived from a name: `2.25.` followed by the first 128 bits of SHA-1(name).
pub fn uid(name: &str) -> String {
    let d = sha1_smol::Sha1::from(format!("segbridge-fixture:{name}"))
        .digest()
        .bytes();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    format!("2.25.{}", u128::from_be_bytes(b))
}

/// A generated CT series.
#[derive(Debug, Clone)]
pub struct CtSeries {
    pub name: String,
    pub patient: String,
    pub study: String,
    pub series: String,
    pub frame_of_reference: String,
    pub sops: Vec<String>,
    pub rows: u16,
    pub cols: u16,
    pub modality: String,
    /// The study's StudyDescription, written (by the series and its SEGs) when not empty.
    pub study_description: String,
}

impl CtSeries {
    pub fn new(name: &str, slices: usize) -> CtSeries {
        CtSeries {
            name: name.to_string(),
            patient: format!("SEGBRIDGE-{name}"),
            study: uid(&format!("{name}/study")),
            series: uid(&format!("{name}/series")),
            frame_of_reference: uid(&format!("{name}/for")),
            sops: (1..=slices)
                .map(|i| uid(&format!("{name}/sop/{i}")))
                .collect(),
            rows: 16,
            cols: 16,
            modality: "CT".into(),
            study_description: String::new(),
        }
    }

    fn z(i: usize) -> f64 {
        i as f64 * 2.5
    }
}

/// How a SEG refers to its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refs {
    /// ReferencedSeriesSequence and per-frame source references (what good writers do).
    Full,
    /// Per-frame source references only (no ReferencedSeriesSequence).
    SourceOnly,
    /// Nothing at all.
    None,
}

/// A SEG to generate.
#[derive(Debug, Clone)]
pub struct SegSpec {
    pub name: String,
    /// The image series it labels (its UIDs are used even when it is not written).
    pub image: CtSeries,
    pub refs: Refs,
    /// ContentDate+ContentTime, e.g. ("20240102", "101500").
    pub content: (String, String),
    pub segments: Vec<String>,
    /// Split the SEG series in this many instances (one segment or more each).
    pub instances: usize,
    /// Faults for the quality gate's tests.
    pub faults: SegFaults,
    /// Bumped to write the same series again with new SOP Instance UIDs (a re-export).
    pub generation: u32,
}

/// Ways a generated SEG can be wrong, for the quality gate's tests.
#[derive(Debug, Clone, Default)]
pub struct SegFaults {
    /// No voxel set in any segment.
    pub empty: bool,
    /// This segment (0-based) has no voxel.
    pub empty_segment: Option<usize>,
    /// Rows and Columns other than the image's.
    pub size: Option<(u16, u16)>,
    /// The first frame references a SOP Instance that is not in the image series.
    pub unknown_source: bool,
    /// Frame positions shifted along z (mm).
    pub z_shift: f64,
    /// Pixel Data cut to half its length.
    pub short_pixels: bool,
}

impl SegSpec {
    pub fn new(name: &str, image: &CtSeries) -> SegSpec {
        SegSpec {
            name: name.to_string(),
            image: image.clone(),
            refs: Refs::Full,
            content: ("20240102".into(), "101500".into()),
            segments: vec!["liver".into()],
            instances: 1,
            faults: SegFaults::default(),
            generation: 0,
        }
    }

    pub fn series_uid(&self) -> String {
        uid(&format!("{}/seg-series", self.name))
    }

    pub fn sop_uid(&self, i: usize) -> String {
        match self.generation {
            0 => uid(&format!("{}/seg-sop/{i}", self.name)),
            g => uid(&format!("{}/seg-sop/{i}/g{g}", self.name)),
        }
    }
}

fn el<T: Into<PrimitiveValue>>(tag: Tag, vr: VR, v: T) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, v.into())
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn obj(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    obj(vec![
        el(tags::CODE_VALUE, VR::SH, value),
        el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        el(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

fn write(o: InMemDicomObject, path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = o
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(EXPLICIT_VR_LE)
                .implementation_class_uid(IMPLEMENTATION_UID)
                .implementation_version_name("SEGBRIDGE_GEN"),
        )
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
    file.write_to_file(path)
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
}

fn patient_study(ct: &CtSeries) -> Vec<DataElement<InMemDicomObject>> {
    let mut e = vec![
        el(tags::PATIENT_NAME, VR::PN, format!("Fixture^{}", ct.name)),
        el(tags::PATIENT_ID, VR::LO, ct.patient.as_str()),
        el(tags::STUDY_INSTANCE_UID, VR::UI, ct.study.as_str()),
        el(tags::STUDY_DATE, VR::DA, "20240101"),
        el(tags::STUDY_TIME, VR::TM, "090000"),
        el(tags::STUDY_ID, VR::SH, "1"),
        el(tags::ACCESSION_NUMBER, VR::SH, ""),
        el(tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""),
    ];
    if !ct.study_description.is_empty() {
        e.push(el(
            tags::STUDY_DESCRIPTION,
            VR::LO,
            ct.study_description.as_str(),
        ));
    }
    e
}

/// Writes a CT series, one file per slice, named `{prefix}{n:04}` (no extension, as PACS exports
/// often are). Returns the paths.
pub fn write_ct(dir: &Path, ct: &CtSeries, prefix: &str) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (i, sop) in ct.sops.iter().enumerate() {
        let mut e = vec![
            el(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE),
            el(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str()),
            el(tags::MODALITY, VR::CS, ct.modality.as_str()),
            el(tags::SERIES_INSTANCE_UID, VR::UI, ct.series.as_str()),
            el(tags::SERIES_NUMBER, VR::IS, "1"),
            el(tags::SERIES_DATE, VR::DA, "20240101"),
            el(tags::SERIES_TIME, VR::TM, "090000"),
            el(tags::INSTANCE_NUMBER, VR::IS, (i + 1).to_string()),
            el(
                tags::FRAME_OF_REFERENCE_UID,
                VR::UI,
                ct.frame_of_reference.as_str(),
            ),
            el(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                format!("0\\0\\{}", CtSeries::z(i)),
            ),
            el(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0"),
            el(tags::PIXEL_SPACING, VR::DS, "1\\1"),
            el(tags::SLICE_THICKNESS, VR::DS, "2.5"),
            el(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
            el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            el(tags::ROWS, VR::US, PrimitiveValue::from(ct.rows)),
            el(tags::COLUMNS, VR::US, PrimitiveValue::from(ct.cols)),
            el(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
            el(tags::BITS_STORED, VR::US, PrimitiveValue::from(16u16)),
            el(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15u16)),
            el(
                tags::PIXEL_REPRESENTATION,
                VR::US,
                PrimitiveValue::from(1u16),
            ),
            el(tags::RESCALE_INTERCEPT, VR::DS, "-1024"),
            el(tags::RESCALE_SLOPE, VR::DS, "1"),
        ];
        e.extend(patient_study(ct));
        // a soft gradient so the image is not blank
        let n = ct.rows as usize * ct.cols as usize;
        let pixels: Vec<u8> = (0..n)
            .flat_map(|p| (((p % ct.cols as usize) * 40 + i * 7) as i16).to_le_bytes())
            .collect();
        e.push(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(pixels),
        ));
        let path = dir.join(format!("{prefix}{:04}", i + 1));
        write(obj(e), &path)?;
        out.push(path);
    }
    Ok(out)
}

/// Writes a BINARY SEG (one frame per slice and segment, frames bit-packed back to back).
/// Returns the paths, one per instance, named `{file_stem}` or `{file_stem}-{n}` when split.
pub fn write_seg(dir: &Path, spec: &SegSpec, file_stem: &str) -> io::Result<Vec<PathBuf>> {
    let ct = &spec.image;
    let (rows, cols) = spec.faults.size.unwrap_or((ct.rows, ct.cols));
    let series = spec.series_uid();
    let n_inst = spec.instances.max(1);
    let mut out = Vec::new();
    let segments: Vec<(usize, &String)> = spec.segments.iter().enumerate().collect();
    for inst in 0..n_inst {
        // segments of this instance: round-robin
        let mine: Vec<(usize, &String)> = segments
            .iter()
            .filter(|(i, _)| i % n_inst == inst)
            .cloned()
            .collect();
        let mut e = vec![
            el(tags::SOP_CLASS_UID, VR::UI, crate::dicom::SEG_SOP_CLASS),
            el(tags::SOP_INSTANCE_UID, VR::UI, spec.sop_uid(inst + 1)),
            el(tags::MODALITY, VR::CS, "SEG"),
            el(tags::SERIES_INSTANCE_UID, VR::UI, series.as_str()),
            el(tags::SERIES_NUMBER, VR::IS, "300"),
            el(tags::SERIES_DESCRIPTION, VR::LO, spec.name.as_str()),
            el(tags::SERIES_DATE, VR::DA, spec.content.0.as_str()),
            el(tags::SERIES_TIME, VR::TM, spec.content.1.as_str()),
            el(tags::CONTENT_DATE, VR::DA, spec.content.0.as_str()),
            el(tags::CONTENT_TIME, VR::TM, spec.content.1.as_str()),
            el(tags::INSTANCE_NUMBER, VR::IS, (inst + 1).to_string()),
            el(tags::CONTENT_LABEL, VR::CS, "SEGMENTATION"),
            el(tags::CONTENT_CREATOR_NAME, VR::PN, "segbridge^fixture"),
            el(tags::MANUFACTURER, VR::LO, "segbridge"),
            el(
                tags::FRAME_OF_REFERENCE_UID,
                VR::UI,
                ct.frame_of_reference.as_str(),
            ),
            el(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
            el(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
            el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            el(tags::ROWS, VR::US, PrimitiveValue::from(rows)),
            el(tags::COLUMNS, VR::US, PrimitiveValue::from(cols)),
            el(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(1u16)),
            el(tags::BITS_STORED, VR::US, PrimitiveValue::from(1u16)),
            el(tags::HIGH_BIT, VR::US, PrimitiveValue::from(0u16)),
            el(
                tags::PIXEL_REPRESENTATION,
                VR::US,
                PrimitiveValue::from(0u16),
            ),
            el(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        ];
        e.extend(patient_study(ct));
        e.push(seq(
            tags::SEGMENT_SEQUENCE,
            mine.iter()
                .map(|(i, label)| {
                    obj(vec![
                        el(
                            tags::SEGMENT_NUMBER,
                            VR::US,
                            PrimitiveValue::from((*i + 1) as u16),
                        ),
                        el(tags::SEGMENT_LABEL, VR::LO, label.as_str()),
                        el(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "MANUAL"),
                        seq(
                            tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                            vec![code("123037004", "SCT", "Anatomical Structure")],
                        ),
                        seq(
                            tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
                            vec![code("10200004", "SCT", label)],
                        ),
                    ])
                })
                .collect(),
        ));
        if spec.refs == Refs::Full {
            e.push(seq(
                tags::REFERENCED_SERIES_SEQUENCE,
                vec![obj(vec![
                    el(tags::SERIES_INSTANCE_UID, VR::UI, ct.series.as_str()),
                    seq(
                        tags::REFERENCED_INSTANCE_SEQUENCE,
                        ct.sops
                            .iter()
                            .map(|s| {
                                obj(vec![
                                    el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE),
                                    el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, s.as_str()),
                                ])
                            })
                            .collect(),
                    ),
                ])],
            ));
        }
        e.push(seq(
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![obj(vec![
                seq(
                    tags::PLANE_ORIENTATION_SEQUENCE,
                    vec![obj(vec![el(
                        tags::IMAGE_ORIENTATION_PATIENT,
                        VR::DS,
                        "1\\0\\0\\0\\1\\0",
                    )])],
                ),
                seq(
                    tags::PIXEL_MEASURES_SEQUENCE,
                    vec![obj(vec![
                        el(tags::PIXEL_SPACING, VR::DS, "1\\1"),
                        el(tags::SLICE_THICKNESS, VR::DS, "2.5"),
                    ])],
                ),
            ])],
        ));
        // frames: for each segment of this instance, one frame per slice
        let mut frames = Vec::new();
        let mut bits: Vec<bool> = Vec::new();
        for (seg_i, _) in &mine {
            for (slice, sop) in ct.sops.iter().enumerate() {
                let mut groups = vec![
                    seq(
                        tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                        vec![obj(vec![el(
                            tags::REFERENCED_SEGMENT_NUMBER,
                            VR::US,
                            PrimitiveValue::from((*seg_i + 1) as u16),
                        )])],
                    ),
                    seq(
                        tags::PLANE_POSITION_SEQUENCE,
                        vec![obj(vec![el(
                            tags::IMAGE_POSITION_PATIENT,
                            VR::DS,
                            format!("0\\0\\{}", CtSeries::z(slice) + spec.faults.z_shift),
                        )])],
                    ),
                ];
                let source_sop = if spec.faults.unknown_source && frames.is_empty() {
                    uid(&format!("{}/no-such-image", spec.name))
                } else {
                    sop.clone()
                };
                if spec.refs != Refs::None {
                    groups.push(seq(
                        tags::DERIVATION_IMAGE_SEQUENCE,
                        vec![obj(vec![
                            seq(
                                tags::DERIVATION_CODE_SEQUENCE,
                                vec![code("113076", "DCM", "Segmentation")],
                            ),
                            seq(
                                tags::SOURCE_IMAGE_SEQUENCE,
                                vec![obj(vec![
                                    el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE),
                                    el(
                                        tags::REFERENCED_SOP_INSTANCE_UID,
                                        VR::UI,
                                        source_sop.as_str(),
                                    ),
                                    seq(
                                        tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                                        vec![code(
                                            "121322",
                                            "DCM",
                                            "Source image for image processing operation",
                                        )],
                                    ),
                                ])],
                            ),
                        ])],
                    ));
                }
                frames.push(obj(groups));
                // a square whose size depends on segment and slice
                let half = 2 + (*seg_i + slice) % 4;
                let (r0, c0) = (3 + *seg_i, 4);
                let blank = spec.faults.empty || spec.faults.empty_segment == Some(*seg_i);
                for r in 0..rows as usize {
                    for c in 0..cols as usize {
                        bits.push(
                            !blank && r >= r0 && r < r0 + 2 * half && c >= c0 && c < c0 + 2 * half,
                        );
                    }
                }
            }
        }
        e.push(el(tags::NUMBER_OF_FRAMES, VR::IS, frames.len().to_string()));
        e.push(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frames));
        let mut packed = vec![0u8; bits.len().div_ceil(8)];
        for (i, b) in bits.iter().enumerate() {
            if *b {
                packed[i / 8] |= 1 << (i % 8);
            }
        }
        if spec.faults.short_pixels {
            packed.truncate(packed.len() / 2);
        }
        if packed.len() % 2 == 1 {
            packed.push(0);
        }
        e.push(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::from(packed),
        ));
        let path = if n_inst == 1 {
            dir.join(file_stem)
        } else {
            dir.join(format!("{file_stem}-{}", inst + 1))
        };
        write(obj(e), &path)?;
        out.push(path);
    }
    Ok(out)
}

/// The demo set under `root`: one directory per case. Returns what it wrote.
pub fn write_demo_set(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    // 1. a SEG that references its CT series: ready (referenced-series)
    let a = CtSeries::new("liver-ct", 3);
    out.extend(write_ct(&root.join("liver-ct/ct"), &a, "IM")?);
    out.extend(write_seg(
        &root.join("liver-ct"),
        &SegSpec::new("liver-seg", &a),
        "seg.dcm",
    )?);
    // 1b. a newer SEG of the same image that is empty: invalid, the first stays current
    let mut draft = SegSpec::new("liver-seg-empty-draft", &a);
    draft.content = ("20240105".into(), "093000".into());
    draft.faults.empty = true;
    out.extend(write_seg(
        &root.join("liver-ct"),
        &draft,
        "seg-empty-draft.dcm",
    )?);
    // 2. two SEGs of one image: only the newer is current
    let b = CtSeries::new("kidney-ct", 3);
    out.extend(write_ct(&root.join("kidney-ct/ct"), &b, "IM")?);
    let mut old = SegSpec::new("kidney-seg-v1", &b);
    old.content = ("20230105".into(), "080000".into());
    old.segments = vec!["kidney".into()];
    out.extend(write_seg(&root.join("kidney-ct"), &old, "seg-v1.dcm")?);
    let mut new = SegSpec::new("kidney-seg-v2", &b);
    new.content = ("20240310".into(), "141500".into());
    new.segments = vec!["kidney".into()];
    out.extend(write_seg(&root.join("kidney-ct"), &new, "seg-v2.dcm")?);
    // 3. no ReferencedSeriesSequence: unusable (source-instances)
    let c = CtSeries::new("spleen-ct", 3);
    out.extend(write_ct(&root.join("spleen-ct/ct"), &c, "IM")?);
    let mut noref = SegSpec::new("spleen-seg-noref", &c);
    noref.refs = Refs::SourceOnly;
    noref.segments = vec!["spleen".into()];
    out.extend(write_seg(&root.join("spleen-ct"), &noref, "seg-noref.dcm")?);
    // 4. a SEG whose image series is not here (yet): unmatched
    let d = CtSeries::new("pancreas-ct", 3);
    let mut early = SegSpec::new("pancreas-seg", &d);
    early.segments = vec!["pancreas".into()];
    out.extend(write_seg(&root.join("pancreas-early"), &early, "seg.dcm")?);
    // 5. a SEG series split in two instances (two segments): ready
    let e = CtSeries::new("abdomen-ct", 3);
    out.extend(write_ct(&root.join("abdomen-ct/ct"), &e, "IM")?);
    let mut split = SegSpec::new("abdomen-seg", &e);
    split.segments = vec!["liver".into(), "spleen".into()];
    split.instances = 2;
    out.extend(write_seg(&root.join("abdomen-ct"), &split, "seg")?);
    // 6. files that are not usable DICOM
    let broken = root.join("broken");
    std::fs::create_dir_all(&broken)?;
    std::fs::write(broken.join("empty.dcm"), b"")?;
    std::fs::write(
        broken.join("notes.txt"),
        b"exported by the PACS on Monday\n",
    )?;
    let seg_bytes = std::fs::read(root.join("liver-ct/seg.dcm"))?;
    std::fs::write(
        broken.join("truncated.dcm"),
        &seg_bytes[..seg_bytes.len().min(700)],
    )?;
    let mut garbage = vec![0u8; 128];
    garbage.extend_from_slice(b"DICM");
    garbage.extend((0..200u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8));
    std::fs::write(broken.join("garbage.dcm"), &garbage)?;
    for f in ["empty.dcm", "notes.txt", "truncated.dcm", "garbage.dcm"] {
        out.push(broken.join(f));
    }
    Ok(out)
}
