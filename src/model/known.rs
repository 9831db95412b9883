//! What the ledger knows of a listed label, as a source needs it to skip work: unchanged
//! series are neither read nor validated again. Sources ask through [`KnownLabels`], so they
//! never import the ledger.

use std::collections::HashMap;

use super::status::LabelStatus;

/// A label the ledger knows, as a source needs it to skip work: unchanged series are neither
/// read nor validated again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownLabel {
    pub instances: i64,
    pub status: LabelStatus,
    pub reason: String,
    /// What the listing said of the instance set and settings when the label was last read.
    pub stamp: Option<String>,
    /// What its quality verdict was based on (see `MatchedLabel::verdict_key`); None when the
    /// content was not read completely or not checked.
    pub verdict_key: Option<String>,
}

impl KnownLabel {
    /// Whether a series with `instances` instances is this label unchanged. An invalid label
    /// whose verdict rests on nothing read completely (a file or an answer that could not be
    /// read) is never unchanged: it is read and judged again.
    pub fn unchanged(&self, instances: Option<i64>) -> bool {
        instances == Some(self.instances)
            && !(self.status == LabelStatus::Invalid && self.verdict_key.is_none())
    }

    /// Whether a listed series is this label unchanged: the same count and, when the listing
    /// names its instances, the same instance set (a label recorded before the stamp existed
    /// is read once more, which records it).
    pub fn listed_unchanged(&self, instances: Option<i64>, stamp: Option<&str>) -> bool {
        self.unchanged(instances)
            && match stamp {
                None => true,
                Some(s) => self.stamp.as_deref() == Some(s),
            }
    }
}

/// Labels a source may skip, by label UID.
pub type Known = HashMap<String, KnownLabel>;

/// Whether series `uid` with `instances` instances is a label the ledger knows unchanged (so
/// it is neither read nor checked again).
pub fn is_unchanged(known: &Known, uid: &str, instances: Option<i64>, stamp: Option<&str>) -> bool {
    known
        .get(uid)
        .is_some_and(|k| k.listed_unchanged(instances, stamp))
}

/// Where a source asks what is known of the series it listed: once per listing, with that
/// listing's UIDs. Whatever cannot be answered is not known (the series is read again, never
/// skipped wrongly).
pub trait KnownLabels: Send + Sync {
    /// The known labels among `uids`.
    fn among(&self, uids: &[&str]) -> Known;

    /// Present labels of `source` that are unmatched, with the image series each references:
    /// a live source rechecks them when images arrive (its own only: another source's labels
    /// are not on its server). Nothing when it cannot be answered.
    fn unmatched(&self, _source: &str) -> Vec<(String, String)> {
        Vec::new()
    }
}
