//! The notify body exactly as the contract has it: `{"action": "notify", "specs": {"added":
//! [{"image", "label"}], "updated": [], "removed": []}}`.

use serde::{Deserialize, Serialize};

use crate::model::{Change, OutboxEntry, Section};

/// One `{"image", "label"}` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub image: String,
    pub label: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Specs {
    pub added: Vec<Entry>,
    pub updated: Vec<Entry>,
    pub removed: Vec<Entry>,
}

/// `{"action": "notify", "specs": {...}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyBody {
    pub action: String,
    pub specs: Specs,
}

impl NotifyBody {
    pub fn from_entries(entries: &[OutboxEntry]) -> NotifyBody {
        let mut specs = Specs::default();
        for e in entries {
            let entry = Entry {
                image: e.image.clone(),
                label: e.label.clone(),
            };
            match e.section {
                Section::Added => specs.added.push(entry),
                Section::Updated => specs.updated.push(entry),
                Section::Removed => specs.removed.push(entry),
            }
        }
        NotifyBody {
            action: "notify".into(),
            specs,
        }
    }

    /// A body of one entry (a notify by hand, `api notify`).
    pub fn one(change: &Change) -> NotifyBody {
        NotifyBody::from_entries(&[OutboxEntry {
            id: 0,
            dataset: String::new(),
            section: change.section,
            image: change.image.clone(),
            label: change.label.clone(),
            attempts: 0,
            last_error: None,
        }])
    }

    pub fn len(&self) -> usize {
        self.specs.added.len() + self.specs.updated.len() + self.specs.removed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_all_three_sections_in_order() {
        let e = |id, s, i: &str, l: &str| OutboxEntry {
            id,
            dataset: "d".into(),
            section: s,
            image: i.into(),
            label: l.into(),
            attempts: 0,
            last_error: None,
        };
        let b = NotifyBody::from_entries(&[
            e(1, Section::Added, "I1", "L1"),
            e(2, Section::Removed, "I2", "L2"),
        ]);
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            serde_json::json!({"action": "notify", "specs": {
                "added": [{"image": "I1", "label": "L1"}], "updated": [],
                "removed": [{"image": "I2", "label": "L2"}]}})
        );
    }
}
