//! Reading DICOM headers and the matching rule.
//!
//! - [`reader`]: recognises Part-10 files by content and reads headers only (never pixel data).
//! - [`matcher`]: pairs each SEG series with its source image series, the one place where the
//!   matching order and the newest-label rule live.

pub mod guard;
pub mod j2k;
pub mod matcher;
pub mod open;
pub mod pixels;
pub mod quality;
pub mod reader;
pub mod rle;

pub use matcher::{
    apply_newest, match_all, match_each, ImageIndex, MatchOutcome, MatchRule, MatchedLabel,
};
pub use reader::{read_instance, InstanceHeader, ReadError, SegInstance, SegSeries, SortKey};

/// SOP Class UID of the Segmentation Storage IOD.
pub const SEG_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.4";
/// SOP Class UID of the Label Map Segmentation Storage IOD.
pub const LABELMAP_SEG_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.7";

/// Whether a SOP Class UID names a segmentation (binary/fractional or label map).
pub fn is_seg_sop_class(uid: &str) -> bool {
    uid == SEG_SOP_CLASS || uid == LABELMAP_SEG_SOP_CLASS
}
