//! What DICOM headers say, as the rest of segbridge needs it: one SEG instance, one image
//! instance, a SEG series assembled from its instances, and the newest-label ordering key.

use std::path::PathBuf;

use super::quality::InstanceGeometry;

/// The newest-label ordering key: ContentDate+ContentTime, then SeriesDate+SeriesTime, then
/// InstanceCreationDate+Time, then the series UID. A missing value sorts oldest.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct SortKey {
    pub content: String,
    pub series: String,
    pub created: String,
    pub uid: String,
}

impl SortKey {
    /// A single string that orders like the key (fields are fixed width or separated by a byte
    /// lower than any digit), so the ledger can store and compare it.
    pub fn encoded(&self) -> String {
        format!(
            "{}\u{1}{}\u{1}{}\u{1}{}",
            self.content, self.series, self.created, self.uid
        )
    }
}

/// What one SEG instance says about itself.
#[derive(Debug, Clone)]
pub struct SegInstance {
    pub sop_class: String,
    pub sop_instance: String,
    pub series: String,
    pub study: String,
    /// PatientID (0010,0020), as written: with the study and series UIDs it gives Orthanc's
    /// IDs of the series the SEG references (they are almost always in its patient and study).
    pub patient_id: String,
    pub instance_number: Option<i64>,
    /// ReferencedSeriesSequence (0008,1115) > SeriesInstanceUID, in item order.
    pub referenced_series: Vec<String>,
    /// Source SOP Instance UIDs: per-frame DerivationImageSequence > SourceImageSequence, plus
    /// the ReferencedInstanceSequence items of the ReferencedSeriesSequence.
    pub source_instances: Vec<String>,
    pub sort_key: SortKey,
    pub segment_count: usize,
}

/// An image (non-SEG) instance: what the index needs.
#[derive(Debug, Clone)]
pub struct ImageInstance {
    pub sop_instance: String,
    pub series: String,
    pub study: String,
    pub modality: String,
    pub geometry: InstanceGeometry,
}

/// One readable DICOM instance.
#[derive(Debug, Clone)]
pub enum InstanceHeader {
    Seg(SegInstance),
    Image(ImageInstance),
}

/// A SEG series assembled from its instances (a writer may split one SEG series in several files).
#[derive(Debug, Clone)]
pub struct SegSeries {
    /// The series' first instance (lowest InstanceNumber, then SOP Instance UID): the one the
    /// training server reads its reference from.
    pub first: SegInstance,
    /// All instances' SOP Instance UIDs, sorted.
    pub instances: Vec<String>,
    /// Where the instances were found (file paths or URLs), in the order of `instances`.
    pub locations: Vec<String>,
    /// The local files of the instances, in the order of `instances`, exactly as the file
    /// system names them (a name need not be UTF-8); empty for a remote source.
    pub files: Vec<PathBuf>,
    /// Things worth saying about the series that do not stop it (duplicates and so on).
    pub warnings: Vec<String>,
    /// The source's own ID for the series (Orthanc's series ID), when it has one.
    pub remote_id: Option<String>,
    /// What the ledger keeps to know this series unchanged on a later listing: the settings
    /// its verdict depended on (image filter, quality gate) and, when the listing names them
    /// (Orthanc), a digest of its instances, so a re-export with new instances but the same
    /// count, or a changed filter, is read and judged again.
    pub remote_stamp: Option<String>,
}

impl SegSeries {
    pub fn uid(&self) -> &str {
        &self.first.series
    }

    /// The content fingerprint: the sorted instance UIDs. A series whose instances change is an
    /// updated label even when its series UID stays the same.
    pub fn fingerprint(&self) -> String {
        let mut h = sha1_smol::Sha1::new();
        for uid in &self.instances {
            h.update(uid.as_bytes());
            h.update(b"\n");
        }
        h.digest().to_string()
    }

    /// All source SOP instance UIDs of all instances, deduplicated.
    pub fn source_instances(&self) -> Vec<String> {
        let mut all = self.first.source_instances.clone();
        all.sort();
        all.dedup();
        all
    }
}
