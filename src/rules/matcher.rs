//! The matching rule: which image series a SEG series labels, and which label of an image is
//! current. This is the only place these rules live; every source reaches them through
//! `pair` (in this layer, beside this file).
//!
//! Order (the first that applies wins, and the rule is recorded):
//! 1. `referenced-series`: ReferencedSeriesSequence item 0 > SeriesInstanceUID names a present
//!    image series. This is the rule the training server itself uses.
//! 2. `source-instances`: no usable ReferencedSeriesSequence, but the frames' source SOP instances
//!    resolve to exactly one present series. The training server will never pair such a label, so
//!    it is `unusable` (reported, never notified).
//! 3. otherwise `unmatched`: kept and retried on every later run (the image may arrive later).
//!
//! Per image only the newest ready label is current; older ones are `superseded`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{ImageIndex, MatchOutcome, MatchRule, MatchedLabel, SegSeries};

/// Applies the matching order to one SEG series (without the newest-label rule).
pub fn match_one(seg: &SegSeries, index: &ImageIndex) -> (MatchRule, MatchOutcome) {
    let first = &seg.first;
    let by_sources = resolve_sources(seg, index);
    if let Some(referenced) = first.referenced_series.first() {
        if index.has_series(referenced) {
            if let Some(why) = index.excluded_because(referenced) {
                return (
                    MatchRule::ReferencedSeries,
                    MatchOutcome::Unusable {
                        image: Some(referenced.clone()),
                        reason: format!(
                            "image series {referenced} is outside the dataset's image filter ({why}): \
                             the training server will not train on it"
                        ),
                    },
                );
            }
            return (
                MatchRule::ReferencedSeries,
                MatchOutcome::Ready {
                    image: referenced.clone(),
                },
            );
        }
        return match by_sources {
            Ok(other) => (
                MatchRule::SourceInstances,
                MatchOutcome::Unusable {
                    image: Some(other.clone()),
                    reason: format!(
                        "ReferencedSeriesSequence names series {referenced}, which is not present, \
                         but its frames come from series {other}; the training server pairs by \
                         ReferencedSeriesSequence and will never train on this label"
                    ),
                },
            ),
            Err(_) => (
                MatchRule::None,
                MatchOutcome::Unmatched {
                    reason: format!("referenced image series {referenced} is not present (yet)"),
                },
            ),
        };
    }
    match by_sources {
        Ok(image) => (
            MatchRule::SourceInstances,
            MatchOutcome::Unusable {
                image: Some(image.clone()),
                reason: format!(
                    "no ReferencedSeriesSequence (0008,1115): its frames come from image series \
                     {image}, but the training server pairs labels only by that sequence and will \
                     never train on it; re-export the SEG with the series reference"
                ),
            },
        ),
        Err(reason) => (MatchRule::None, MatchOutcome::Unmatched { reason }),
    }
}

/// Resolves the per-frame source instances to exactly one present series.
fn resolve_sources(seg: &SegSeries, index: &ImageIndex) -> Result<String, String> {
    let sources = seg.source_instances();
    if sources.is_empty() {
        return Err(
            "no ReferencedSeriesSequence and no source image references in the SEG".to_string(),
        );
    }
    let found: BTreeSet<&str> = sources.iter().filter_map(|s| index.series_of(s)).collect();
    match found.len() {
        0 => Err(format!(
            "none of its {} source image instances is present (yet)",
            sources.len()
        )),
        1 => Ok(found.into_iter().next().unwrap_or_default().to_string()),
        n => Err(format!(
            "its source image instances belong to {n} different series ({}); cannot choose",
            found.into_iter().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The matching rule alone, label by label. Sources do not call it: they pair through
/// `pair` (beside this file), which runs the quality gate between this and [`apply_newest`].
pub fn match_each(segs: Vec<SegSeries>, index: &ImageIndex) -> Vec<MatchedLabel> {
    segs.into_iter()
        .map(|seg| {
            let (rule, outcome) = match_one(&seg, index);
            MatchedLabel {
                seg,
                rule,
                outcome,
                quality: None,
                verdict_key: None,
            }
        })
        .collect()
}

/// The newest-label rule: per image, only the newest candidate is ready, the others are
/// superseded.
pub fn apply_newest(mut labels: Vec<MatchedLabel>) -> Vec<MatchedLabel> {
    for l in labels.iter_mut() {
        if let MatchOutcome::Superseded { image, .. } = &l.outcome {
            l.outcome = MatchOutcome::Ready {
                image: image.clone(),
            };
        }
    }
    // newest ready label per image
    let mut newest: BTreeMap<String, usize> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        if let MatchOutcome::Ready { image } = &l.outcome {
            match newest.get(image) {
                Some(&j) if labels[j].seg.first.sort_key >= l.seg.first.sort_key => {}
                _ => {
                    newest.insert(image.clone(), i);
                }
            }
        }
    }
    let winners: HashMap<String, String> = newest
        .iter()
        .map(|(img, &i)| (img.clone(), labels[i].seg.uid().to_string()))
        .collect();
    for l in labels.iter_mut() {
        if let MatchOutcome::Ready { image } = &l.outcome {
            let by = &winners[image];
            if by != l.seg.uid() {
                l.outcome = MatchOutcome::Superseded {
                    image: image.clone(),
                    by: by.clone(),
                };
            }
        }
    }
    labels.sort_by(|a, b| a.seg.uid().cmp(b.seg.uid()));
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Matching and the newest-label rule, no gate.
    fn match_all(segs: Vec<SegSeries>, index: &ImageIndex) -> Vec<MatchedLabel> {
        apply_newest(match_each(segs, index))
    }
    use crate::dicom::reader::{SegInstance, SortKey};

    fn seg(uid: &str, refs: &[&str], sources: &[&str], content: &str) -> SegSeries {
        SegSeries {
            first: SegInstance {
                patient_id: String::new(),
                sop_class: crate::dicom::SEG_SOP_CLASS.into(),
                sop_instance: format!("{uid}.1"),
                series: uid.into(),
                study: "st".into(),
                instance_number: Some(1),
                referenced_series: refs.iter().map(|s| s.to_string()).collect(),
                source_instances: sources.iter().map(|s| s.to_string()).collect(),
                sort_key: SortKey {
                    content: content.into(),
                    uid: uid.into(),
                    ..Default::default()
                },
                segment_count: 1,
            },
            instances: vec![format!("{uid}.1")],
            locations: vec![format!("/x/{uid}")],
            files: vec![],
            warnings: vec![],
            remote_id: None,
            remote_stamp: None,
        }
    }

    fn index() -> ImageIndex {
        let mut ix = ImageIndex::default();
        ix.insert("a.1", "A", "st", "CT");
        ix.insert("a.2", "A", "st", "CT");
        ix.insert("b.1", "B", "st", "CT");
        ix
    }

    #[test]
    fn referenced_series_wins_and_is_ready() {
        let out = match_all(vec![seg("s1", &["A"], &["b.1"], "1")], &index());
        assert_eq!(out[0].rule, MatchRule::ReferencedSeries);
        assert_eq!(out[0].outcome, MatchOutcome::Ready { image: "A".into() });
    }

    #[test]
    fn source_instances_only_is_unusable_naming_the_image() {
        let out = match_all(vec![seg("s1", &[], &["a.1", "a.2"], "1")], &index());
        assert_eq!(out[0].rule, MatchRule::SourceInstances);
        match &out[0].outcome {
            MatchOutcome::Unusable { image, reason } => {
                assert_eq!(image.as_deref(), Some("A"));
                assert!(reason.contains("ReferencedSeriesSequence"), "{reason}");
            }
            o => panic!("unexpected {o:?}"),
        }
    }

    #[test]
    fn sources_in_two_series_are_unmatched() {
        let out = match_all(vec![seg("s1", &[], &["a.1", "b.1"], "1")], &index());
        assert_eq!(out[0].rule, MatchRule::None);
        assert_eq!(
            out[0].outcome.status(),
            crate::model::LabelStatus::Unmatched
        );
        assert!(out[0].outcome.reason().contains("2 different series"));
    }

    #[test]
    fn absent_reference_is_unmatched_and_no_reference_says_so() {
        let out = match_all(
            vec![seg("s1", &["Z"], &[], "1"), seg("s2", &[], &[], "1")],
            &index(),
        );
        assert_eq!(
            out[0].outcome.status(),
            crate::model::LabelStatus::Unmatched
        );
        assert!(out[0].outcome.reason().contains("Z is not present"));
        assert!(out[1]
            .outcome
            .reason()
            .contains("no ReferencedSeriesSequence"));
    }

    #[test]
    fn absent_reference_with_sources_elsewhere_is_unusable() {
        let out = match_all(vec![seg("s1", &["Z"], &["b.1"], "1")], &index());
        assert_eq!(out[0].outcome.status(), crate::model::LabelStatus::Unusable);
        assert_eq!(out[0].outcome.image(), Some("B"));
    }

    #[test]
    fn newest_label_rule_orders_by_content_then_uid() {
        let out = match_all(
            vec![
                seg("old", &["A"], &[], "20200101120000"),
                seg("new", &["A"], &[], "20210101120000"),
                seg("tie-a", &["B"], &[], "1"),
                seg("tie-b", &["B"], &[], "1"),
            ],
            &index(),
        );
        let by: HashMap<&str, &MatchOutcome> =
            out.iter().map(|l| (l.seg.uid(), &l.outcome)).collect();
        assert_eq!(by["new"].status(), crate::model::LabelStatus::Ready);
        assert_eq!(
            *by["old"],
            MatchOutcome::Superseded {
                image: "A".into(),
                by: "new".into()
            }
        );
        // equal dates: the UID decides, deterministically
        assert_eq!(by["tie-b"].status(), crate::model::LabelStatus::Ready);
        assert_eq!(by["tie-a"].status(), crate::model::LabelStatus::Superseded);
    }

    #[test]
    fn a_series_modality_comes_from_its_images_in_any_order() {
        let calls = [("sr.1", ""), ("ct.1", "CT"), ("ct.2", "CT")];
        for order in [[0, 1, 2], [1, 0, 2], [2, 1, 0]] {
            let mut ix = ImageIndex::default();
            for i in order {
                let (sop, modality) = calls[i];
                ix.insert(sop, "A", "st", modality);
            }
            assert_eq!(ix.modality_of("A"), Some("CT"), "{order:?}");
            assert_eq!(ix.series_of("sr.1"), Some("A"));
        }
    }

    #[test]
    fn filter_exclusion_makes_unusable() {
        let mut ix = index();
        ix.exclude("A", "Modality=MR");
        let out = match_all(vec![seg("s1", &["A"], &[], "1")], &ix);
        assert_eq!(out[0].outcome.status(), crate::model::LabelStatus::Unusable);
        assert!(out[0].outcome.reason().contains("image filter"));
    }
}
