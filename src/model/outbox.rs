//! What the API is told: the sections of a notify body, one change to tell, and a change
//! waiting in the outbox. Plain data; the ledger stores them, `notify` sends them.

use serde::Serialize;

/// One section of a notify body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Added,
    Updated,
    Removed,
}

impl Section {
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Added => "added",
            Section::Updated => "updated",
            Section::Removed => "removed",
        }
    }

    /// The section stored as `s` (the outbox's CHECK allows only the three names; anything
    /// else reads as a removal, as it always has).
    pub fn parse(s: &str) -> Section {
        match s {
            "added" => Section::Added,
            "updated" => Section::Updated,
            _ => Section::Removed,
        }
    }
}

/// A change to tell the API about: one (image, label) in one section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub section: Section,
    pub image: String,
    pub label: String,
}

impl Change {
    pub fn new(section: Section, image: &str, label: &str) -> Change {
        Change {
            section,
            image: image.to_string(),
            label: label.to_string(),
        }
    }
}

/// A change waiting in the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxEntry {
    pub id: i64,
    pub dataset: String,
    pub section: Section,
    pub image: String,
    pub label: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}
