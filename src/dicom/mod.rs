//! Reading DICOM (layer 2): Part-10 files opened once under a bounded pre-scan ([`open`],
//! [`guard`]), headers ([`reader`]), pixel data ([`pixels`], [`rle`], [`j2k`]) and the quality
//! gate ([`quality`]). The matching rule lives in [`crate::rules`].

pub mod guard;
pub mod j2k;
pub mod json;
mod labels;
pub mod open;
pub mod pixels;
pub mod quality;
pub mod reader;
pub mod rle;

pub use crate::model::{
    ImageIndex, InstanceHeader, MatchOutcome, MatchRule, MatchedLabel, SegInstance, SegSeries,
    SortKey,
};
pub use reader::{read_instance, ReadError};

/// SOP Class UID of the Segmentation Storage IOD.
pub const SEG_SOP_CLASS: &str = dicom_dictionary_std::uids::SEGMENTATION_STORAGE;
/// SOP Class UID of the Label Map Segmentation Storage IOD.
pub const LABELMAP_SEG_SOP_CLASS: &str = dicom_dictionary_std::uids::LABEL_MAP_SEGMENTATION_STORAGE;

/// Whether a SOP Class UID names a segmentation (binary/fractional or label map).
pub fn is_seg_sop_class(uid: &str) -> bool {
    uid == SEG_SOP_CLASS || uid == LABELMAP_SEG_SOP_CLASS
}
