//! Layer 1: the domain, no I/O. What DICOM headers say (series, instances, the newest-label
//! key), what a source saw (listings, problems, scans), what matching decided (outcomes), the
//! quality gate's findings, a dataset's filters as the service reads them, the outbox's
//! sections and changes, the labels the ledger knows, label statuses, the UID grammar. Every
//! layer above speaks these types; they import only `util`.

pub mod filters;
pub mod index;
pub mod known;
pub mod outbox;
pub mod outcome;
pub mod quality;
pub mod scan;
pub mod series;
pub mod status;
pub mod uid;

pub use filters::DatasetFilters;
pub use index::ImageIndex;
pub use known::{Known, KnownLabel, KnownLabels};
pub use outbox::{Change, OutboxEntry, Section};
pub use outcome::{MatchOutcome, MatchRule, MatchedLabel};
pub use quality::{InstanceGeometry, Quality, SegmentInfo, SeriesGeometry, Validator};
pub use scan::{Listing, Problem, Scan};
pub use series::{ImageInstance, InstanceHeader, SegInstance, SegSeries, SortKey};
pub use status::LabelStatus;
