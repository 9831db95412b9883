//! A label's status. The names are stored in SQLite and shown in JSON and in reports: they are
//! part of the state file's format and never change.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What became of a label series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelStatus {
    /// Paired by the referenced series, and the newest label of its image: it is notified.
    Ready,
    /// Paired, but a newer label of the same image is current.
    Superseded,
    /// No image series found (yet): matched again on every run.
    Unmatched,
    /// Paired only by its source instances: the training server cannot pair it.
    Unusable,
    /// Rejected by the quality gate.
    Invalid,
    /// No longer present at its source (shown in label listings only; never stored).
    Gone,
}

impl LabelStatus {
    /// Every status, in the order of their names.
    pub const ALL: [LabelStatus; 6] = [
        LabelStatus::Gone,
        LabelStatus::Invalid,
        LabelStatus::Ready,
        LabelStatus::Superseded,
        LabelStatus::Unmatched,
        LabelStatus::Unusable,
    ];

    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelStatus::Ready => "ready",
            LabelStatus::Superseded => "superseded",
            LabelStatus::Unmatched => "unmatched",
            LabelStatus::Unusable => "unusable",
            LabelStatus::Invalid => "invalid",
            LabelStatus::Gone => "gone",
        }
    }

    /// The status named `s`, if it is one.
    pub fn parse(s: &str) -> Option<LabelStatus> {
        LabelStatus::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether a label with this status can be an image's notified label (the newest of the
    /// ready and superseded ones is).
    pub fn pairable(self) -> bool {
        matches!(self, LabelStatus::Ready | LabelStatus::Superseded)
    }
}

impl fmt::Display for LabelStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A name that is not a label status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown label status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for LabelStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<LabelStatus, UnknownStatus> {
        LabelStatus::parse(s).ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_stored_ones_and_round_trip() {
        let names: Vec<&str> = LabelStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "gone",
                "invalid",
                "ready",
                "superseded",
                "unmatched",
                "unusable"
            ]
        );
        for s in LabelStatus::ALL {
            assert_eq!(s.as_str().parse::<LabelStatus>(), Ok(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
            assert_eq!(s.to_string(), s.as_str());
        }
        assert!("Ready".parse::<LabelStatus>().is_err());
    }
}
