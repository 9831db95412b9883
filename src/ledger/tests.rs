//! The ledger's unit tests: the transition table played through SQLite, the outbox's merge
//! rule, removals, locking, migrations and the counters.

use std::time::Duration;

use rusqlite::Connection;

use super::test_stores::{on_both_stores, Stores};
use super::*;
use crate::dicom::reader::{SegInstance, SegSeries, SortKey};
use crate::dicom::MatchedLabel;
use crate::model::known::is_unchanged;
use crate::model::outbox::Section;
use crate::model::scan::{Listing, Problem};
use crate::model::status::LabelStatus;
use crate::model::ImageIndex;
use crate::rules::pair::pair_ungated as match_all;

/// (label uid, image uid, content date, instance uids)
pub(super) type L = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

pub(super) fn listing(labels: &[L], images: &[&str]) -> (Listing, Vec<MatchedLabel>) {
    let mut index = ImageIndex::default();
    for i in images {
        index.insert(&format!("{i}.sop"), i, "st", "CT");
    }
    let segs = labels
        .iter()
        .map(|(uid, img, date, inst)| SegSeries {
            first: SegInstance {
                patient_id: String::new(),
                sop_class: crate::dicom::SEG_SOP_CLASS.into(),
                sop_instance: inst[0].into(),
                series: (*uid).into(),
                study: "st".into(),
                instance_number: Some(1),
                referenced_series: vec![(*img).into()],
                source_instances: vec![],
                sort_key: SortKey {
                    content: (*date).into(),
                    uid: (*uid).into(),
                    ..Default::default()
                },
                segment_count: 1,
            },
            instances: inst.iter().map(|s| s.to_string()).collect(),
            locations: vec![format!("/f/{uid}")],
            files: vec![],
            warnings: vec![],
            remote_id: None,
            remote_stamp: None,
        })
        .collect();
    let matched = match_all(segs, &index);
    (
        Listing {
            source: "folder:/f".into(),
            ..Default::default()
        },
        matched,
    )
}

fn run(l: &mut Ledger, labels: &[L], images: &[&str]) -> Vec<(Section, String, String)> {
    let (listing, matched) = listing(labels, images);
    l.apply(&listing, &matched, "ds")
        .unwrap()
        .into_iter()
        .map(|c| (c.section, c.image, c.label))
        .collect()
}

fn c(s: Section, i: &str, l: &str) -> (Section, String, String) {
    (s, i.into(), l.into())
}

on_both_stores!(
    first_label_is_added_then_nothing,
    newer_label_is_updated_and_changed_instances_too,
    removed_newest_label_falls_back_to_the_older_one_and_says_so,
    an_older_label_that_arrived_later_is_told_when_the_newer_goes,
    replaced_label_is_updated,
    the_outbox_keeps_one_setting_entry_per_image,
    a_removal_after_an_unconfirmed_update_waits_behind_it,
    incomplete_listing_or_unreadable_location_never_removes,
    unmatched_label_becomes_added_when_its_image_arrives,
    outbox_entries_leave_only_on_confirm_and_are_journaled,
    datasets_are_told_separately,
    summary_counters_follow_every_kind_of_change,
    known_labels_are_looked_up_for_the_listed_uids_only,
    a_notify_by_hand_is_journalled_and_changes_nothing_segbridge_decides_from,
    recent_labels_come_newest_first_filtered_and_bounded,
);

#[test]
fn a_dry_run_snapshot_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let at = StateAt::File(dir.path().join("s.db"));
    let mut snap = Ledger::snapshot(&at).unwrap();
    run(&mut snap, &[("L1", "A", "1", &["L1.1"])], &["A"]);
    assert_eq!(snap.outbox_depth(None).unwrap(), 1);
    drop(snap);
    assert!(!dir.path().join("s.db").exists(), "no file made");
}

fn first_label_is_added_then_nothing(b: &Stores) {
    let mut l = b.fresh();
    let ls: &[L] = &[("L1", "A", "1", &["L1.1"])];
    assert_eq!(run(&mut l, ls, &["A"]), vec![c(Section::Added, "A", "L1")]);
    assert_eq!(run(&mut l, ls, &["A"]), vec![]);
    assert_eq!(l.pending("ds", 10).unwrap().len(), 1);
}

fn newer_label_is_updated_and_changed_instances_too(b: &Stores) {
    let mut l = b.fresh();
    run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]);
    assert_eq!(
        run(
            &mut l,
            &[("L1", "A", "1", &["L1.1"]), ("L2", "A", "2", &["L2.1"])],
            &["A"]
        ),
        vec![c(Section::Updated, "A", "L2")]
    );
    assert_eq!(
        run(
            &mut l,
            &[
                ("L1", "A", "1", &["L1.1"]),
                ("L2", "A", "2", &["L2.1", "L2.2"])
            ],
            &["A"]
        ),
        vec![c(Section::Updated, "A", "L2")]
    );
    // an older label appearing later changes nothing
    assert_eq!(
        run(
            &mut l,
            &[
                ("L0", "A", "0", &["L0.1"]),
                ("L1", "A", "1", &["L1.1"]),
                ("L2", "A", "2", &["L2.1", "L2.2"])
            ],
            &["A"]
        ),
        vec![]
    );
}

fn removed_newest_label_falls_back_to_the_older_one_and_says_so(b: &Stores) {
    let mut l = b.fresh();
    run(
        &mut l,
        &[("L1", "A", "1", &["L1.1"]), ("L2", "A", "2", &["L2.1"])],
        &["A"],
    );
    // L2 goes, L1 remains: the server must be told L1, not only that L2 is gone
    assert_eq!(
        run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]),
        vec![c(Section::Updated, "A", "L1")]
    );
    // L1 is now what the dataset has: removing it is a removal
    assert_eq!(
        run(&mut l, &[], &["A"]),
        vec![c(Section::Removed, "A", "L1")]
    );
    // and a new label after that is added again
    assert_eq!(
        run(&mut l, &[("L3", "A", "3", &["L3.1"])], &["A"]),
        vec![c(Section::Added, "A", "L3")]
    );
}

fn an_older_label_that_arrived_later_is_told_when_the_newer_goes(b: &Stores) {
    let mut l = b.fresh();
    run(&mut l, &[("L2", "A", "2", &["L2.1"])], &["A"]);
    // L1 arrives later but is dated older: nothing changes for the server
    assert_eq!(
        run(
            &mut l,
            &[("L1", "A", "1", &["L1.1"]), ("L2", "A", "2", &["L2.1"])],
            &["A"]
        ),
        vec![]
    );
    assert_eq!(
        run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]),
        vec![c(Section::Updated, "A", "L1")]
    );
}

fn replaced_label_is_updated(b: &Stores) {
    let mut l = b.fresh();
    run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]);
    assert_eq!(
        run(&mut l, &[("L2", "A", "2", &["L2.1"])], &["A"]),
        vec![c(Section::Updated, "A", "L2")]
    );
}

fn outbox(l: &Ledger) -> Vec<(Section, String, String)> {
    l.pending("ds", 100)
        .unwrap()
        .into_iter()
        .map(|e| (e.section, e.image, e.label))
        .collect()
}

fn the_outbox_keeps_one_setting_entry_per_image(b: &Stores) {
    let mut l = b.fresh();
    run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]);
    run(&mut l, &[("L2", "A", "2", &["L2.1"])], &["A"]);
    // never confirmed: the server may know nothing of A, so it is still an addition
    assert_eq!(outbox(&l), vec![c(Section::Added, "A", "L2")]);
    // the label goes before anything was confirmed: one removal of what was queued
    run(&mut l, &[], &["A"]);
    assert_eq!(outbox(&l), vec![c(Section::Removed, "A", "L2")]);
    // and comes back as a new label: the removal is replaced by a setting entry
    run(&mut l, &[("L3", "A", "3", &["L3.1"])], &["A"]);
    assert_eq!(outbox(&l), vec![c(Section::Updated, "A", "L3")]);
}

fn a_removal_after_an_unconfirmed_update_waits_behind_it(b: &Stores) {
    let mut l = b.fresh();
    run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]);
    let ids: Vec<i64> = l.pending("ds", 10).unwrap().iter().map(|e| e.id).collect();
    l.confirm(&ids).unwrap();
    run(&mut l, &[("L2", "A", "2", &["L2.1"])], &["A"]);
    run(&mut l, &[], &["A"]);
    // the server has L1 until the update arrives: both go, in order, in two bodies
    assert_eq!(
        outbox(&l),
        vec![
            c(Section::Updated, "A", "L2"),
            c(Section::Removed, "A", "L2")
        ]
    );
    let pending = l.pending("ds", 10).unwrap();
    let bodies = crate::app::pipeline::runs(&pending, 10);
    assert_eq!(bodies.len(), 2);
}

fn incomplete_listing_or_unreadable_location_never_removes(b: &Stores) {
    let mut l = b.fresh();
    run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]);
    let (mut listing, matched) = listing(&[], &["A"]);
    listing.incomplete_reasons.push("cannot list /f/sub".into());
    assert!(l.apply(&listing, &matched, "ds").unwrap().is_empty());
    listing.incomplete_reasons.clear();
    listing.problems.push(Problem {
        path: "/f/L1".into(),
        reason: "truncated".into(),
    });
    assert!(l.apply(&listing, &matched, "ds").unwrap().is_empty());
    listing.problems.clear();
    assert_eq!(l.apply(&listing, &matched, "ds").unwrap().len(), 1);
}

fn unmatched_label_becomes_added_when_its_image_arrives(b: &Stores) {
    let mut l = b.fresh();
    assert!(run(&mut l, &[("L1", "A", "1", &["L1.1"])], &[]).is_empty());
    assert_eq!(
        run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]),
        vec![c(Section::Added, "A", "L1")]
    );
}

fn outbox_entries_leave_only_on_confirm_and_are_journaled(b: &Stores) {
    let mut l = b.fresh();
    run(
        &mut l,
        &[("L1", "A", "1", &["L1.1"]), ("L9", "B", "1", &["L9.1"])],
        &["A", "B"],
    );
    let p = l.pending("ds", 1).unwrap();
    assert_eq!(p.len(), 1);
    l.record_failure(&[p[0].id], "HTTP 500").unwrap();
    assert_eq!(l.pending("ds", 10).unwrap()[0].attempts, 1);
    l.confirm(&[p[0].id]).unwrap();
    assert_eq!(l.pending("ds", 10).unwrap().len(), 1);
    let st = l.status().unwrap();
    assert_eq!(st.entries_sent, 1);
    assert_eq!(st.outbox_depth, 1);
    assert_eq!(l.integrity_check().unwrap(), "ok");
}

fn datasets_are_told_separately(b: &Stores) {
    let mut l = b.fresh();
    let (listing, matched) = listing(&[("L1", "A", "1", &["L1.1"])], &["A"]);
    assert_eq!(l.apply(&listing, &matched, "ds").unwrap().len(), 1);
    assert_eq!(l.apply(&listing, &matched, "other").unwrap().len(), 1);
    assert_eq!(l.apply(&listing, &matched, "other").unwrap().len(), 0);
}

#[test]
fn second_writer_waits_then_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = StateAt::File(dir.path().join("s.db"));
    let _first = Ledger::open(&path, Duration::from_millis(10)).unwrap();
    let err = Ledger::open(&path, Duration::from_millis(300))
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, LedgerError::Locked { .. }), "{msg}");
    assert!(msg.contains("in use by another segbridge process"), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
}

#[test]
fn migrations_are_versioned_and_newer_files_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let at = StateAt::File(path.clone());
    {
        let l = Ledger::open(&at, Duration::ZERO).unwrap();
        assert_eq!(l.schema_version().unwrap(), MIGRATIONS.len() as i64);
    }
    let c = Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    assert!(matches!(
        Ledger::open(&at, Duration::ZERO),
        Err(LedgerError::TooNew { found: 99, .. })
    ));
}

/// The label counts (kept by triggers on SQLite) against a count of every label, by hand.
fn counts_by_hand(l: &Ledger) -> (Vec<(LabelStatus, i64)>, i64) {
    let present =
        l.db.rows(
            "SELECT status, COUNT(*) FROM labels WHERE present = 1
             GROUP BY status ORDER BY status",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.status(0).unwrap(), r.int(1).unwrap()))
        .collect();
    let gone =
        l.db.one("SELECT COUNT(*) FROM labels WHERE present = 0", &[])
            .unwrap();
    (present, gone)
}

fn summary_counters_follow_every_kind_of_change(b: &Stores) {
    let mut l = b.fresh();
    let steps: &[(&[L], &[&str])] = &[
        // added, one unmatched (no image B yet)
        (
            &[("L1", "A", "1", &["L1.1"]), ("L2", "B", "1", &["L2.1"])],
            &["A"],
        ),
        // B arrives (unmatched → ready), a newer label supersedes L1
        (
            &[
                ("L1", "A", "1", &["L1.1"]),
                ("L2", "B", "1", &["L2.1"]),
                ("L3", "A", "2", &["L3.1"]),
            ],
            &["A", "B"],
        ),
        // L3 and L2 gone
        (&[("L1", "A", "1", &["L1.1"])], &["A", "B"]),
        // L2 back, with a new instance
        (
            &[
                ("L1", "A", "1", &["L1.1"]),
                ("L2", "B", "1", &["L2.1", "L2.2"]),
            ],
            &["A", "B"],
        ),
    ];
    for (labels, images) in steps {
        run(&mut l, labels, images);
        let s = l.summary().unwrap();
        assert_eq!(
            (s.labels_by_status.clone(), s.labels_gone),
            counts_by_hand(&l)
        );
    }
    l.remove_labels(&["L1".to_string()], "ds").unwrap();
    let s = l.summary().unwrap();
    assert_eq!(
        (s.labels_by_status.clone(), s.labels_gone),
        counts_by_hand(&l)
    );
    assert_eq!((s.count(LabelStatus::Ready), s.labels_gone), (1, 2));
}

#[test]
fn a_version_2_file_gets_its_counters_from_the_labels_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = StateAt::File(dir.path().join("s.db"));
    {
        let mut l = Ledger::open(&path, Duration::ZERO).unwrap();
        run(
            &mut l,
            &[("L1", "A", "1", &["L1.1"]), ("L2", "B", "1", &["L2.1"])],
            &["A"],
        );
        // back to what an older segbridge left: schema 2, no counters
        l.db.batch(
            "DROP TRIGGER labels_counted_insert; DROP TRIGGER labels_counted_delete;
                 DROP TRIGGER labels_counted_update; DROP TABLE label_counts;
                 DROP INDEX labels_recent; DROP INDEX labels_status_recent;
                 DROP INDEX outbox_image;
                 ALTER TABLE labels DROP COLUMN remote_stamp;
                 ALTER TABLE labels DROP COLUMN verdict_key;
                 ALTER TABLE sent DROP COLUMN by_hand;
                 PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let ro = Ledger::open_read_only(&path).unwrap();
    let by_hand = counts_by_hand(&ro);
    let s = ro.summary().unwrap();
    assert_eq!((s.labels_by_status, s.labels_gone), by_hand);
    drop(ro);
    let l = Ledger::open(&path, Duration::ZERO).unwrap();
    assert_eq!(l.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let s = l.summary().unwrap();
    assert_eq!((s.labels_by_status.clone(), s.labels_gone), by_hand);
    assert_eq!(
        (s.count(LabelStatus::Ready), s.count(LabelStatus::Unmatched)),
        (1, 1)
    );
}

fn known_labels_are_looked_up_for_the_listed_uids_only(b: &Stores) {
    let at = b.store();
    let lookup = KnownLookup::State(at.clone());
    assert!(lookup.among(["L0"]).is_empty(), "no ledger yet");
    let mut l = Ledger::open(&at, Duration::ZERO).unwrap();
    // 1,200 labels: more than one query's worth of UIDs
    let uids: Vec<String> = (0..1200).map(|i| format!("L{i}")).collect();
    let insts: Vec<Vec<String>> = uids.iter().map(|u| vec![format!("{u}.1")]).collect();
    let mut index = ImageIndex::default();
    index.insert("A.sop", "A", "st", "CT");
    let segs = uids
        .iter()
        .zip(&insts)
        .map(|(u, i)| SegSeries {
            first: SegInstance {
                patient_id: String::new(),
                sop_class: crate::dicom::SEG_SOP_CLASS.into(),
                sop_instance: i[0].clone(),
                series: u.clone(),
                study: "st".into(),
                instance_number: Some(1),
                // L0 and L1 reference an image that is not there: unmatched
                referenced_series: vec![if u == "L0" || u == "L1" { "Z" } else { "A" }.into()],
                source_instances: vec![],
                sort_key: SortKey {
                    content: "1".into(),
                    uid: u.clone(),
                    ..Default::default()
                },
                segment_count: 1,
            },
            instances: i.clone(),
            locations: vec![format!("/f/{u}")],
            files: vec![],
            warnings: vec![],
            remote_id: None,
            remote_stamp: None,
        })
        .collect();
    let listing = Listing {
        source: "folder:/f".into(),
        ..Default::default()
    };
    l.apply(&listing, &match_all(segs, &index), "ds").unwrap();
    l.remove_labels(&["L2".to_string()], "ds").unwrap();
    let asked: Vec<&str> = uids.iter().map(String::as_str).chain(["nope"]).collect();
    let known = lookup.among(asked.iter().copied());
    // all but the unmatched (L0, L1) and the gone (L2)
    assert_eq!(known.len(), 1197);
    assert!(!known.contains_key("L0") && !known.contains_key("L2"));
    assert_eq!(known["L1199"].instances, 1);
    assert!(is_unchanged(&known, "L3", Some(1), None));
    assert!(!is_unchanged(&known, "L3", Some(2), None));
    // a listing that names its instances: recorded without a stamp, so read once more
    assert!(!is_unchanged(
        &known,
        "L3",
        Some(1),
        Some("orthanc-instances:x")
    ));
    // only what was asked
    let few = lookup.among(["L5", "L6", "nope"]);
    assert_eq!(few.len(), 2);
    assert!(KnownLookup::Nothing.among(["L5"]).is_empty());
    assert!(lookup.among(std::iter::empty()).is_empty());
}

fn a_notify_by_hand_is_journalled_and_changes_nothing_segbridge_decides_from(b: &Stores) {
    let mut l = b.fresh();
    run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]);
    let first: Vec<i64> = l.pending("ds", 10).unwrap().iter().map(|e| e.id).collect();
    l.confirm(&first).unwrap();
    let last = l.last_notify().unwrap();
    assert!(last.is_some());
    assert_eq!(l.told_label("ds", "A").unwrap().as_deref(), Some("L1"));
    // the operator removes it by hand: journalled, marked, and nothing else moves
    l.journal_by_hand("ds", &Change::new(Section::Removed, "A", "L1"))
        .unwrap();
    assert_eq!(l.told_label("ds", "A").unwrap().as_deref(), Some("L1"));
    assert_eq!(l.outbox_depth(None).unwrap(), 0);
    assert_eq!(
        l.last_notify().unwrap(),
        last,
        "not a delivery of segbridge's"
    );
    let st = l.status().unwrap();
    assert_eq!((st.entries_sent, st.entries_sent_by_hand), (2, 1));
    // it counts toward the next round, as the server counts it
    assert_eq!(l.images_notified_since(Some("ds"), None).unwrap(), 1);
    l.journal_by_hand("ds", &Change::new(Section::Added, "B", "L9"))
        .unwrap();
    assert_eq!(l.images_notified_since(Some("ds"), None).unwrap(), 2);
    // segbridge's own next entry still finds a free id in the journal
    run(
        &mut l,
        &[("L1", "A", "1", &["L1.1"]), ("L2", "C", "1", &["L2.1"])],
        &["A", "C"],
    );
    let next: Vec<i64> = l.pending("ds", 10).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(next.len(), 1);
    l.confirm(&next).unwrap();
    let st = l.status().unwrap();
    assert_eq!((st.entries_sent, st.entries_sent_by_hand), (4, 2));
    assert_eq!(l.told_label("ds", "B").unwrap(), None);
}

fn recent_labels_come_newest_first_filtered_and_bounded(b: &Stores) {
    let mut l = b.fresh();
    let all: &[L] = &[
        ("L1", "A", "1", &["L1.1"]),
        ("L2", "B", "1", &["L2.1"]),
        ("L3", "C", "1", &["L3.1"]),
    ];
    run(&mut l, all, &["A", "C"]);
    // L3 gone; L2 stays unmatched (no image B)
    run(&mut l, &all[..2], &["A", "C"]);
    for (uid, t) in [("L1", 100i64), ("L2", 200), ("L3", 300)] {
        l.db.exec(
            "UPDATE labels SET first_seen = ?2 WHERE label_uid = ?1",
            &db::args![uid, t],
        )
        .unwrap();
    }
    let got = |status: Option<LabelStatus>, limit: usize| -> Vec<(String, LabelStatus, i64)> {
        l.recent_labels(status, limit)
            .unwrap()
            .into_iter()
            .map(|r| (r.row.label, r.row.status, r.first_seen))
            .collect()
    };
    let row = |uid: &str, s: LabelStatus, t: i64| (uid.to_string(), s, t);
    assert_eq!(
        got(None, 10),
        vec![
            row("L3", LabelStatus::Gone, 300),
            row("L2", LabelStatus::Unmatched, 200),
            row("L1", LabelStatus::Ready, 100),
        ]
    );
    assert_eq!(got(None, 2).len(), 2);
    assert_eq!(
        got(Some(LabelStatus::Unmatched), 10),
        vec![row("L2", LabelStatus::Unmatched, 200)]
    );
    assert_eq!(
        got(Some(LabelStatus::Gone), 10),
        vec![row("L3", LabelStatus::Gone, 300)]
    );
    assert_eq!(
        got(Some(LabelStatus::Ready), 10),
        vec![row("L1", LabelStatus::Ready, 100)]
    );
    assert_eq!(got(Some(LabelStatus::Invalid), 10), vec![]);
    assert_eq!(got(Some(LabelStatus::Ready), 0), vec![]);
}
