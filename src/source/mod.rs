//! Sources: where SEG series are discovered. Each source produces a [`Listing`]: the SEG series it
//! saw, what it knows about image series, the things it could not read, and whether the listing
//! is complete (only a complete listing may turn "not seen" into "gone").

pub mod folder;

use serde::Serialize;

use crate::dicom::{ImageIndex, SegSeries};

/// Something a source could not use, with where and why.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub path: String,
    pub reason: String,
}

/// One complete or partial look at a source.
#[derive(Debug, Default)]
pub struct Listing {
    /// A stable name for the source, such as `folder:/data/exports`.
    pub source: String,
    pub segs: Vec<SegSeries>,
    pub index: ImageIndex,
    /// Files or resources that could not be read; labels stored there are not removed.
    pub problems: Vec<Problem>,
    /// Listing errors that make the listing incomplete (a directory that could not be read…).
    pub incomplete_reasons: Vec<String>,
    pub files_seen: usize,
}

impl Listing {
    pub fn complete(&self) -> bool {
        self.incomplete_reasons.is_empty()
    }
}
