//! What the status page reads, on both stores: the overview without a row per label and with
//! the unreadable files bounded, and the recent labels read through an index in their order.

use super::db::Dialect;
use super::reports::recent_query;
use super::test_stores::{on_both_stores, Stores};
use super::tests::{listing, L};
use super::*;
use crate::model::scan::Problem;
use crate::model::status::LabelStatus;

on_both_stores!(
    the_overview_counts_and_bounds_the_problems,
    recent_labels_walk_an_index_in_their_order,
    a_large_delivery_is_confirmed_in_batches_of_statements,
);

fn the_overview_counts_and_bounds_the_problems(b: &Stores) {
    let mut l = b.fresh();
    let labels: &[L] = &[
        ("L1", "A", "1", &["L1.1"]),
        ("L2", "B", "1", &["L2.1"]),
        ("L3", "C", "1", &["L3.1"]),
    ];
    let (mut ls, matched) = listing(labels, &["A"]);
    ls.problems = ["/f/c", "/f/a", "/f/b"]
        .iter()
        .map(|p| Problem {
            path: p.to_string(),
            reason: format!("unreadable {p}"),
        })
        .collect();
    l.apply(&ls, &matched, "ds").unwrap();
    let o = l.overview(Some(2)).unwrap();
    let paths: Vec<&str> = o.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["/f/a", "/f/b"], "the first by path, at most 2");
    assert_eq!(o.problems_total, 3);
    assert_eq!(
        o.labels_by_status,
        vec![(LabelStatus::Ready, 1), (LabelStatus::Unmatched, 2)]
    );
    assert_eq!((o.labels_gone, o.outbox_depth), (0, 1));
    // `status` is the overview with everything: every problem, every label to look at
    let st = l.status().unwrap();
    assert_eq!(st.problems.len(), 3);
    assert_eq!(st.attention.len(), 2);
    assert_eq!(st.labels_by_status, o.labels_by_status);
    assert_eq!(
        (st.outbox_depth, st.images_notified, st.entries_sent),
        (o.outbox_depth, o.images_notified, o.entries_sent)
    );
    assert_eq!(l.overview(None).unwrap().problems.len(), 3);
    assert_eq!(l.overview(Some(0)).unwrap().problems.len(), 0);
}

/// The plan of `q`, one line per step, as the store explains it. On PostgreSQL sequential scans
/// and sorts are priced out, so that a missing index shows as a `Sort`, whatever the table's
/// size.
fn plan(l: &Ledger, q: &str, a: &[db::Val]) -> String {
    let (explain, col) = match l.dialect() {
        Dialect::Sqlite => ("EXPLAIN QUERY PLAN", 3),
        Dialect::Postgres => {
            l.db.batch("SET enable_seqscan = off; SET enable_sort = off")
                .unwrap();
            ("EXPLAIN", 0)
        }
    };
    let rows = l.db.rows(&format!("{explain} {q}"), a).unwrap();
    rows.iter()
        .map(|r| r.text(col).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

fn recent_labels_walk_an_index_in_their_order(b: &Stores) {
    let mut l = b.fresh();
    let (ls, matched) = listing(&[("L1", "A", "1", &["L1.1"])], &["A"]);
    l.apply(&ls, &matched, "ds").unwrap();
    for (status, index) in [
        (None, "labels_recent"),
        (Some(LabelStatus::Gone), "labels_recent"),
        (Some(LabelStatus::Invalid), "labels_status_recent"),
        (Some(LabelStatus::Ready), "labels_status_recent"),
    ] {
        let (q, a) = recent_query(status, 200);
        let p = plan(&l, &q, &a);
        assert!(p.contains(index), "{status:?}: not through {index}:\n{p}");
        assert!(
            !p.contains("TEMP B-TREE") && !p.contains("Sort"),
            "{status:?}: sorted, not read in order:\n{p}"
        );
    }
    // the plan checked is the query run
    let got = l.recent_labels(Some(LabelStatus::Ready), 200).unwrap();
    assert_eq!(got.len(), 1);
}

/// More entries than one confirm statement takes (500): all journalled, none left.
fn a_large_delivery_is_confirmed_in_batches_of_statements(b: &Stores) {
    let mut l = b.fresh();
    // `L` holds 'static strings: these few test strings live as long as the test binary
    let text = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let leaked: Vec<L> = (0..1200)
        .map(|i| {
            let inst: &'static [&'static str] =
                Box::leak(vec![text(format!("L{i}.1"))].into_boxed_slice());
            (text(format!("L{i}")), text(format!("I{i}")), "1", inst)
        })
        .collect();
    let images: Vec<&str> = leaked.iter().map(|x| x.1).collect();
    let (ls, matched) = listing(&leaked, &images);
    assert_eq!(l.apply(&ls, &matched, "ds").unwrap().len(), 1200);
    let ids: Vec<i64> = l
        .pending("ds", 2000)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), 1200);
    l.confirm(&ids).unwrap();
    assert_eq!(l.outbox_depth(None).unwrap(), 0);
    let st = l.status().unwrap();
    assert_eq!(st.entries_sent, 1200);
    assert_eq!(l.images_notified_since(Some("ds"), None).unwrap(), 1200);
}
