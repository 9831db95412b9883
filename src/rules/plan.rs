//! The notify planner: from what the server was told about an image and what it should now
//! believe, the one entry to send (README, "How matching works"); and the section of an
//! outbox entry that replaces one not yet confirmed.

use crate::model::outbox::{Change, Section};

/// What the server believes an image's label is (the last notify entry about it), or what it
/// should believe: a label series and the fingerprint of its instance set.
pub type Belief = Option<(String, String)>;

/// The one transition rule: what to send so that the server, replaying the notify stream in
/// order (added/updated set the image's label, removed clears it), believes `should`.
///
/// | told      | now          | sent                              |
/// |-----------|--------------|-----------------------------------|
/// | none      | none         | nothing                           |
/// | none      | A            | `added {X, A}`                    |
/// | A         | none         | `removed {X, A}`                  |
/// | A         | A, same set  | nothing                           |
/// | A         | A, new set   | `updated {X, A}`                  |
/// | A         | B (any date) | `updated {X, B}`                  |
///
/// The last row covers both a newer label replacing A and an older label B that becomes current
/// again when A is deleted: the server is always told the label that is now current.
pub fn transition(image: &str, told: &Belief, should: &Belief) -> Option<Change> {
    match (told, should) {
        (None, None) => None,
        (None, Some((c, _))) => Some(Change::new(Section::Added, image, c)),
        (Some((t, _)), None) => Some(Change::new(Section::Removed, image, t)),
        (Some((t, tf)), Some((c, cf))) => {
            (t != c || tf != cf).then(|| Change::new(Section::Updated, image, c))
        }
    }
}

/// The section of one entry that replaces a pending `first` with a newer `then`: the server's
/// view before `first` decides between `added` and `updated`, and a removal stays a removal.
pub fn merged(first: Section, then: Section) -> Section {
    match (first, then) {
        (_, Section::Removed) => Section::Removed,
        (Section::Added, _) => Section::Added,
        (_, _) => Section::Updated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_table() {
        let b = |l: &str, f: &str| Some((l.to_string(), f.to_string()));
        let t = |told: &Belief, should: &Belief| {
            transition("X", told, should).map(|c| (c.section, c.label))
        };
        assert_eq!(t(&None, &None), None);
        assert_eq!(t(&None, &b("A", "1")), Some((Section::Added, "A".into())));
        assert_eq!(t(&b("A", "1"), &None), Some((Section::Removed, "A".into())));
        assert_eq!(t(&b("A", "1"), &b("A", "1")), None);
        assert_eq!(
            t(&b("A", "1"), &b("A", "2")),
            Some((Section::Updated, "A".into()))
        );
        assert_eq!(
            t(&b("A", "1"), &b("B", "1")),
            Some((Section::Updated, "B".into()))
        );
    }

    #[test]
    fn a_merged_entry_keeps_what_the_server_knew_before_it() {
        use Section::*;
        assert_eq!(merged(Added, Updated), Added);
        assert_eq!(merged(Added, Added), Added);
        assert_eq!(merged(Updated, Added), Updated);
        assert_eq!(merged(Removed, Added), Updated);
        assert_eq!(merged(Removed, Updated), Updated);
        for first in [Added, Updated, Removed] {
            assert_eq!(merged(first, Removed), Removed);
        }
    }
}
