//! The quality gate's findings and settings: what a SEG holds per segment, its verdict, the
//! source series' geometry it is checked against, and the experiment's labels.

use std::collections::BTreeMap;

use serde::Serialize;

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

/// What the source image series looks like, for the geometry checks.
#[derive(Debug, Clone, Default)]
pub struct SeriesGeometry {
    pub series: String,
    /// SOP Instance UID → (rows, columns, ImagePositionPatient, ImageOrientationPatient), of
    /// every instance of the series (images or not), in UID order.
    pub instances: BTreeMap<String, InstanceGeometry>,
    /// Set when only this instance's file was read: every instance has the position and
    /// orientation the PACS indexed, and the size of this one. A verdict is taken from such a
    /// geometry only when the others' sizes cannot change it (the gate's `Validator::judge`
    /// says when); otherwise the whole series is read.
    pub sampled: Option<String>,
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

impl InstanceGeometry {
    /// Whether the instance is an image (it has Rows and Columns): an SR document, a
    /// presentation state or a key object selection in the same series is not.
    pub fn is_image(&self) -> bool {
        self.rows > 0 && self.cols > 0
    }
}
