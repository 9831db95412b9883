//! The segments of a label against the experiment's labels: names and numbers.

use std::collections::BTreeMap;

use crate::model::quality::{ExpectedLabels, Quality};

/// The segments against the experiment's labels (`model_params.labels`, number → name).
/// Training gives each voxel its segment's number, and the service's default label mapping is
/// the identity over the labels' keys, so a segment trains as the label whose key is its number:
/// - a segment named like label M but numbered N ≠ M would train as the wrong class: invalid,
///   the reason names both;
/// - a segment whose number is no label's key trains nothing: a warning; when no segment's
///   number is a key, the label is invalid;
/// - a name that matches no label at all: a warning (invalid with `--strict-labels`).
pub(super) fn check_labels(q: &mut Quality, expected: &ExpectedLabels, strict: bool) {
    let keys: BTreeMap<u32, &String> = expected
        .iter()
        .filter_map(|(k, v)| k.trim().parse::<u32>().ok().map(|n| (n, v)))
        .collect();
    let listed = || {
        expected
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut wrong = Vec::new();
    let mut nothing = Vec::new();
    let mut unknown = Vec::new();
    for s in &q.segments {
        let named = expected.iter().find(|(_, v)| {
            norm(v) == norm(&s.label) || (!s.property.is_empty() && norm(v) == norm(&s.property))
        });
        match named {
            Some((k, name))
                if !keys.is_empty() && k.trim().parse::<u32>().ok() != Some(s.number) =>
            {
                let trains = match keys.get(&s.number) {
                    Some(other) => format!("would train as label {} '{other}'", s.number),
                    None => format!("would train as nothing (no label {})", s.number),
                };
                wrong.push(format!(
                    "segment {} '{}' {trains}; {name} is label {k}",
                    s.number, s.label
                ));
                continue;
            }
            Some(_) => {}
            None => unknown.push(format!(
                "segment {} '{}' ({}) matches no experiment label (known: {})",
                s.number,
                s.label,
                if s.property.is_empty() {
                    "no property"
                } else {
                    &s.property
                },
                expected.values().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
        if !keys.is_empty() && !keys.contains_key(&s.number) {
            nothing.push(format!(
                "segment {} '{}' trains nothing: {} is not a label number of the experiment \
                 ({})",
                s.number,
                s.label,
                s.number,
                listed()
            ));
        }
    }
    q.problems.extend(wrong);
    let none_trains = !keys.is_empty()
        && !q.segments.is_empty()
        && q.segments.iter().all(|s| !keys.contains_key(&s.number));
    if none_trains {
        q.problems.push(format!(
            "no segment number is a label number of the experiment (segments {}; labels {}): \
             nothing would train",
            q.segments
                .iter()
                .map(|s| s.number.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            listed()
        ));
    } else {
        q.warnings.extend(nothing);
    }
    if strict {
        q.problems.extend(unknown);
    } else {
        q.warnings.extend(unknown);
    }
}

/// A name compared ignoring case and spaces.
fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SegmentInfo;

    fn judged(segments: &[(u32, &str)], labels: &[(&str, &str)], strict: bool) -> Quality {
        let mut q = Quality {
            segments: segments
                .iter()
                .map(|(n, l)| SegmentInfo {
                    number: *n,
                    label: l.to_string(),
                    property: String::new(),
                    voxels: 10,
                })
                .collect(),
            ..Default::default()
        };
        let expected: ExpectedLabels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        check_labels(&mut q, &expected, strict);
        q
    }

    #[test]
    fn segments_train_as_the_label_their_number_names() {
        let labels = [("1", "liver"), ("2", "kidney"), ("3", "spleen")];
        // numbered as the experiment: nothing to say
        let q = judged(&[(1, "Liver"), (3, "spleen")], &labels, false);
        assert!(q.problems.is_empty() && q.warnings.is_empty(), "{q:?}");
        // drawn in another order (OHIF numbers segments as drawn): the wrong class
        let q = judged(&[(1, "liver"), (2, "spleen")], &labels, false);
        assert_eq!(
            q.problems,
            vec!["segment 2 'spleen' would train as label 2 'kidney'; spleen is label 3"]
        );
        // a number that is no label trains nothing: a warning while another segment trains
        let q = judged(&[(1, "liver"), (7, "tumour")], &labels, false);
        assert!(q.problems.is_empty(), "{q:?}");
        assert!(q
            .warnings
            .iter()
            .any(|w| w.contains("segment 7 'tumour' trains nothing")));
        assert!(q
            .warnings
            .iter()
            .any(|w| w.contains("matches no experiment label")));
        // no segment number is a label: nothing would train
        let q = judged(&[(5, "a"), (6, "b")], &labels, false);
        assert!(
            q.problems.iter().any(|p| p.contains("nothing would train")),
            "{q:?}"
        );
        // an unknown name with --strict-labels
        let q = judged(&[(1, "liver"), (2, "cyst")], &labels, true);
        assert!(q.problems.iter().any(|p| p.contains("'cyst'")), "{q:?}");
        // labels without numbers: only names are checked
        let q = judged(&[(4, "liver")], &[("liver", "liver")], false);
        assert!(q.problems.is_empty() && q.warnings.is_empty(), "{q:?}");
    }

    #[test]
    fn names_compare_case_and_space_insensitively() {
        assert_eq!(norm(" Left Kidney "), norm("leftkidney"));
    }
}
