//! What one look at a source gives: the SEG series it saw, what it knows of image series, what
//! it could not read, whether it is complete; and those series matched ([`Scan`]).

use serde::Serialize;

use super::{ImageIndex, MatchedLabel, SegSeries};

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
    /// Labels the source saw and knows unchanged since the ledger last recorded them (their
    /// headers were not read again). They count as seen for removals.
    pub unchanged: Vec<String>,
    /// The source's cursor after this listing, stored in the same transaction.
    pub cursor: Option<String>,
    /// A partial listing (a chunk of a backfill, or changes from a feed): it never removes.
    pub partial: bool,
    /// Something may change within seconds (a file still being written, an upload that
    /// failed): a live source looks again soon instead of at the next reconcile.
    pub retry_soon: bool,
}

impl Listing {
    /// Only a complete listing may turn "not seen" into "gone".
    pub fn complete(&self) -> bool {
        self.incomplete_reasons.is_empty() && !self.partial
    }

    /// A partial listing of `source`.
    pub fn partial(source: &str) -> Listing {
        Listing {
            source: source.to_string(),
            partial: true,
            ..Default::default()
        }
    }
}

/// A source listed and matched.
pub struct Scan {
    pub listing: Listing,
    pub labels: Vec<MatchedLabel>,
}
