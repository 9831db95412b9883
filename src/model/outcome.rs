//! What matching decided for one SEG series: the rule that matched and the outcome (ready,
//! superseded, unusable, unmatched, invalid), with the quality gate's findings.

use serde::Serialize;

use super::quality::Quality;
use super::series::SegSeries;
use super::status::LabelStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchRule {
    ReferencedSeries,
    SourceInstances,
    None,
}

impl MatchRule {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchRule::ReferencedSeries => "referenced-series",
            MatchRule::SourceInstances => "source-instances",
            MatchRule::None => "none",
        }
    }
}

/// How one SEG series stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchOutcome {
    /// The current label of `image`: to be notified.
    Ready { image: String },
    /// Paired with `image`, but a newer ready label of the same image is current.
    Superseded { image: String, by: String },
    /// Belongs to `image` but the training server will never pair it.
    Unusable {
        image: Option<String>,
        reason: String,
    },
    /// No present image series: retried on every later run.
    Unmatched { reason: String },
    /// Paired, but the quality gate refused it (empty, wrong geometry, unreadable pixels...).
    Invalid { image: String, reason: String },
}

impl MatchOutcome {
    pub fn status(&self) -> LabelStatus {
        match self {
            MatchOutcome::Ready { .. } => LabelStatus::Ready,
            MatchOutcome::Superseded { .. } => LabelStatus::Superseded,
            MatchOutcome::Unusable { .. } => LabelStatus::Unusable,
            MatchOutcome::Unmatched { .. } => LabelStatus::Unmatched,
            MatchOutcome::Invalid { .. } => LabelStatus::Invalid,
        }
    }

    pub fn image(&self) -> Option<&str> {
        match self {
            MatchOutcome::Ready { image }
            | MatchOutcome::Superseded { image, .. }
            | MatchOutcome::Invalid { image, .. } => Some(image),
            MatchOutcome::Unusable { image, .. } => image.as_deref(),
            MatchOutcome::Unmatched { .. } => None,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            MatchOutcome::Ready { .. } => String::new(),
            MatchOutcome::Superseded { by, .. } => format!("superseded by newer label {by}"),
            MatchOutcome::Unusable { reason, .. }
            | MatchOutcome::Unmatched { reason }
            | MatchOutcome::Invalid { reason, .. } => reason.clone(),
        }
    }
}

/// A SEG series with its outcome.
#[derive(Debug, Clone)]
pub struct MatchedLabel {
    pub seg: SegSeries,
    pub rule: MatchRule,
    pub outcome: MatchOutcome,
    /// What the quality gate found, when it ran.
    pub quality: Option<Quality>,
    /// What the quality verdict rests on, when it rests on content read completely: the
    /// files' names, sizes and modification times (a folder), or the instance set (a PACS).
    /// The ledger keeps it; a later run reuses the verdict only for the same key.
    pub verdict_key: Option<String>,
}

impl MatchedLabel {
    /// Records the quality gate's verdict: problems make a candidate label invalid.
    pub fn set_quality(&mut self, q: Quality) {
        if !q.problems.is_empty() {
            if let MatchOutcome::Ready { image } | MatchOutcome::Superseded { image, .. } =
                &self.outcome
            {
                self.outcome = MatchOutcome::Invalid {
                    image: image.clone(),
                    reason: q.problems.join("; "),
                };
            }
        }
        self.quality = Some(q);
    }

    /// Whether the label is a candidate to notify (before the newest-label rule).
    pub fn is_candidate(&self) -> bool {
        matches!(
            self.outcome,
            MatchOutcome::Ready { .. } | MatchOutcome::Superseded { .. }
        )
    }
}
