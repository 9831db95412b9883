//! Layer 1: the domain, no I/O. What a source saw (listings, problems, scans), the outbox's
//! sections and changes, the labels the ledger knows, label statuses. Every layer above
//! speaks these types; they import only `util`.

pub mod index;
pub mod outcome;
pub mod quality;
pub mod scan;
pub mod series;
pub mod uid;

pub use index::ImageIndex;
pub use outcome::{MatchOutcome, MatchRule, MatchedLabel};
pub use quality::{InstanceGeometry, Quality, SegmentInfo, SeriesGeometry, Validator};
pub use scan::{Listing, Problem, Scan};
pub use series::{ImageInstance, InstanceHeader, SegInstance, SegSeries, SortKey};
