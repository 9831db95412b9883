//! Deleted series within two polls. Orthanc's `/changes` never reports a deletion, and a
//! deleted series' own entries vanish from it. So each poll also reads `GET /statistics` and
//! compares its CountSeries with the last count plus the series created since (the feed's
//! NewSeries entries). A lower count means a series was deleted: the source runs its full
//! listing at once, which reads only new or changed series and, being complete, removes the
//! labels that are gone. An idle poll stays two small requests: `/changes` and `/statistics`.
//!
//! # Why a deletion is caught within two polls, and what a false alarm costs
//!
//! Orthanc creates a series and logs its NewSeries entry in one transaction, and deletes a
//! series together with its entries; Seq grows in commit order. A poll reads the feed up to `L`
//! (at time `c`), then counts `C` (at `s`). The base is the last count `C0` (at `s0`) and the
//! position `P` read just before it (at `c0 < s0`). Let `n` be the NewSeries entries after `P`:
//! the series created in (c0, c] that are still there. Then
//!
//! ```text
//! C0 + n − C = d + x + g0 − g
//! ```
//!
//! - `d`: series present at `s0` and deleted since: what we look for;
//! - `x`: series created in (s0, c], so in `n`, and deleted in (c, s]: deletions too;
//! - `g0`: series created in (c0, s0], between the two reads of the base's poll: counted in
//!   `C0` and again in `n`. A store in those milliseconds is a false alarm;
//! - `g`: series created in (c, s], between this poll's two reads: counted in `C`, not yet in
//!   `n`. Only these can hide a deletion.
//!
//! A count below `C0 + n` runs the listing. The races:
//! - a series created and deleted between two polls is in neither count and its entry is gone:
//!   it was never seen, there is nothing to remove, and the check says nothing;
//! - a deletion and a store in the same poll: the store is in `n`, so the count is still short;
//! - a series stored between a poll's two reads (`g`): it is new in the feed at the next poll,
//!   where it counts twice (`g0`), so a deletion it hid shows there.
//!
//! So that `g` hides nothing on a busy poll (one whose feed showed new series since `P`, so
//! where stores are going on), it reads the feed once more after the count (up to `L'`, at
//! `c' > s`) and adds those NewSeries to `n`: every series in `C` and not in `C0` then has its
//! entry in `n`, and `C0 + n − C ≥ d − y`, where `y` are series created in (c, s] and deleted
//! again in (s, c']. An idle poll skips that read to stay at two requests; a series stored in its
//! gap makes the next poll busy, and that poll catches what it hid.
//!
//! Hence a deletion is caught by the first poll that counts after it, or by the next one: within
//! two poll intervals. Hiding it longer would take a series stored in the milliseconds between
//! an idle poll's two reads, then another stored and deleted again within the milliseconds around
//! the next poll's count; that second deletion is then seen by the poll after, and the listing
//! finds both (a third poll, or the `--reconcile` timer if it went on). A false alarm (a store
//! between a poll's reads, or around a busy poll's count) costs one listing, which reads nothing
//! that is known unchanged, and the check starts again from the count taken before it.
//!
//! When the feed cannot be read to its end in one poll (more than 100,000 entries), the count
//! cannot be compared: the listing runs. When `/statistics` fails, the check says so once and
//! stops until the next listing (the `--reconcile` timer), which asks again; that listing
//! covers the time it did not watch.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::answers::ChangesPoll;
use super::answers::Statistics;
use super::Orthanc;
use crate::source::endpoint::Endpoint;
use crate::source::http::PacsError;

/// The last count of series and the feed position read just before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Base {
    series: u64,
    at: i64,
}

impl Base {
    /// NewSeries entries of `poll` after this base's position.
    fn created_in(&self, poll: &ChangesPoll) -> u64 {
        poll.created.iter().filter(|&&seq| seq > self.at).count() as u64
    }
}

/// What one poll's count says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// As many series as expected.
    Quiet,
    /// Fewer series than the last count plus those created since: something was deleted (or,
    /// rarely, a series was stored between two reads).
    Deleted { expected: u64, counted: u64 },
    /// The feed was not read to its end, so the count cannot be compared.
    Unsure,
    /// No count: `/statistics` failed, and deletions wait for the next listing.
    Off,
}

impl Verdict {
    /// Whether the full listing runs now.
    pub fn needs_listing(&self) -> bool {
        matches!(self, Verdict::Deleted { .. } | Verdict::Unsure)
    }
}

/// The deletion check's state across polls.
#[derive(Debug, Default)]
pub struct Deletions {
    base: Option<Base>,
    /// `/statistics` failed and has not answered since (said once).
    failing: bool,
}

impl Deletions {
    /// Before a full listing: `count` was read after the feed position `at`. The listing finds
    /// every deletion before it; the check takes over from this count.
    pub fn rebase(
        &mut self,
        at: i64,
        count: Result<u64, PacsError>,
        source: &str,
        reconcile: Duration,
    ) {
        match count {
            Ok(series) => {
                if std::mem::take(&mut self.failing) {
                    info!(
                        source,
                        "Orthanc counts its series again: deleted series are found within two polls"
                    );
                }
                self.base = Some(Base { series, at });
            }
            Err(e) => self.stop(&e, source, reconcile),
        }
    }

    /// `/statistics` failed: no check until the next listing asks again.
    fn stop(&mut self, e: &PacsError, source: &str, reconcile: Duration) {
        self.base = None;
        if std::mem::replace(&mut self.failing, true) {
            debug!(source, "Orthanc still cannot count its series: {e}");
        } else {
            warn!(
                source,
                "cannot count Orthanc's series ({e}): deleted series are found by the full \
                 listing every {reconcile:?} until it answers (said once)"
            );
        }
    }

    /// Whether this poll counts (not while `/statistics` fails).
    fn watching(&self) -> bool {
        self.base.is_some()
    }

    /// Whether the feed read `first` showed new series since the base, or stopped before the
    /// feed's end: the poll then reads the feed once more after the count.
    fn busy(&self, first: &ChangesPoll) -> bool {
        self.base
            .is_some_and(|b| b.created_in(first) > 0 || !first.caught_up)
    }

    /// The check of one poll: `first` is the feed read before the count `counted`, `closing`
    /// the read after it (busy polls only; a failed one is not caught up). The count becomes
    /// the base, with the position of `first`, read before it.
    fn judge(
        &mut self,
        first: &ChangesPoll,
        counted: u64,
        closing: Option<&ChangesPoll>,
    ) -> Verdict {
        let Some(base) = self.base else {
            return Verdict::Off;
        };
        self.base = Some(Base {
            series: counted,
            at: first.last,
        });
        let mut created = base.created_in(first);
        let mut caught_up = first.caught_up;
        if let Some(c) = closing {
            created += base.created_in(c);
            caught_up = c.caught_up;
        }
        let expected = base.series + created;
        match (caught_up, counted < expected) {
            (false, _) => Verdict::Unsure,
            (true, true) => Verdict::Deleted { expected, counted },
            (true, false) => Verdict::Quiet,
        }
    }
}

impl Orthanc {
    /// Orthanc's count of series (`GET /statistics`).
    pub async fn count_series(&self) -> Result<u64, PacsError> {
        let at = Endpoint::at(&["statistics"]);
        let v: Statistics = self.rest.get_json(&at, "application/json").await?;
        v.series
            .int()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| PacsError::Bad {
                url: self.rest.url(&at),
                reason: "no \"CountSeries\"".into(),
            })
    }

    /// The deletion check of a poll whose feed read was `first`: the count (one request), and
    /// on a busy poll one more read of the feed after it.
    pub(super) async fn check_deletions(
        &self,
        d: &mut Deletions,
        first: &ChangesPoll,
        reconcile: Duration,
    ) -> Verdict {
        if !d.watching() {
            return Verdict::Off;
        }
        let counted = match self.count_series().await {
            Ok(n) => n,
            Err(e) => {
                d.stop(&e, &self.source_name(), reconcile);
                return Verdict::Off;
            }
        };
        let closing = match d.busy(first) {
            false => None,
            true => Some(self.poll_changes(first.last).await.unwrap_or_else(|e| {
                debug!("the feed read after the count failed ({e}): listing instead");
                ChangesPoll::default()
            })),
        };
        d.judge(first, counted, closing.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Orthanc's index as the check sees it: live series with the Seq of their NewSeries entry
    /// (an entry vanishes with its series), and the feed's last Seq.
    #[derive(Default)]
    struct Index {
        series: Vec<(u32, i64)>,
        seq: i64,
        next_id: u32,
    }

    impl Index {
        fn store(&mut self) -> u32 {
            self.seq += 1;
            self.next_id += 1;
            self.series.push((self.next_id, self.seq));
            self.next_id
        }
        fn delete(&mut self, id: u32) {
            self.series.retain(|(s, _)| *s != id);
        }
        /// Other changes (NewInstance, StableSeries…) move the feed on without creating.
        fn other_change(&mut self) {
            self.seq += 1;
        }
        fn feed(&self, since: i64) -> ChangesPoll {
            ChangesPoll {
                created: self
                    .series
                    .iter()
                    .map(|(_, s)| *s)
                    .filter(|s| *s > since)
                    .collect(),
                last: self.seq.max(since),
                caught_up: true,
                ..Default::default()
            }
        }
        fn count(&self) -> u64 {
            self.series.len() as u64
        }
    }

    /// A watcher: the feed cursor and the check, as `Orthanc::live_step` drives them.
    struct Watcher {
        d: Deletions,
        cursor: i64,
        listings: usize,
    }

    impl Watcher {
        fn start(ix: &Index) -> Watcher {
            let mut w = Watcher {
                d: Deletions::default(),
                cursor: 0,
                listings: 0,
            };
            w.list(ix);
            w
        }
        fn list(&mut self, ix: &Index) {
            self.listings += 1;
            self.cursor = ix.seq;
            let count = Ok(ix.count());
            self.d.rebase(self.cursor, count, "test", Duration::ZERO);
        }
        /// One poll; `between` runs between the feed read and the count, `after` between the
        /// count and a busy poll's second feed read.
        fn poll(
            &mut self,
            ix: &mut Index,
            between: impl FnOnce(&mut Index),
            after: impl FnOnce(&mut Index),
        ) -> Verdict {
            let first = ix.feed(self.cursor);
            between(ix);
            let counted = ix.count();
            after(ix);
            let closing = self.d.busy(&first).then(|| ix.feed(first.last));
            let v = self.d.judge(&first, counted, closing.as_ref());
            self.cursor = first.last;
            if v.needs_listing() {
                self.list(ix);
            }
            v
        }
        fn idle(&mut self, ix: &mut Index) -> Verdict {
            self.poll(ix, |_| {}, |_| {})
        }
    }

    fn deleted(v: &Verdict) -> bool {
        matches!(v, Verdict::Deleted { .. })
    }

    #[test]
    fn idle_and_stores_are_quiet_and_a_deletion_is_seen_at_the_next_poll() {
        let mut ix = Index::default();
        let ids: Vec<u32> = (0..5).map(|_| ix.store()).collect();
        let mut w = Watcher::start(&ix);
        assert_eq!(w.idle(&mut ix), Verdict::Quiet);
        ix.store();
        ix.other_change();
        assert_eq!(w.idle(&mut ix), Verdict::Quiet);
        ix.delete(ids[2]);
        assert_eq!(
            w.idle(&mut ix),
            Verdict::Deleted {
                expected: 6,
                counted: 5
            }
        );
        // the listing took a new base: quiet again
        assert_eq!(w.idle(&mut ix), Verdict::Quiet);
        assert_eq!(w.listings, 2);
    }

    #[test]
    fn a_deletion_and_a_store_in_the_same_poll_is_a_deletion() {
        let mut ix = Index::default();
        let a = ix.store();
        let mut w = Watcher::start(&ix);
        ix.store();
        ix.delete(a);
        assert!(deleted(&w.idle(&mut ix)));
        // a store and a deletion between the two reads of a poll
        let b = ix.store();
        w.idle(&mut ix);
        let v = w.poll(
            &mut ix,
            |ix| {
                ix.store();
                ix.delete(b);
            },
            |_| {},
        );
        let next = w.idle(&mut ix);
        assert!(deleted(&v) || deleted(&next), "{v:?} then {next:?}");
    }

    #[test]
    fn a_series_created_and_deleted_between_polls_is_nothing() {
        let mut ix = Index::default();
        ix.store();
        let mut w = Watcher::start(&ix);
        let gone = ix.store();
        ix.other_change();
        ix.delete(gone);
        assert_eq!(w.idle(&mut ix), Verdict::Quiet);
        assert_eq!(w.idle(&mut ix), Verdict::Quiet);
    }

    #[test]
    fn a_store_between_the_reads_is_one_false_alarm_at_most() {
        let mut ix = Index::default();
        ix.store();
        let mut w = Watcher::start(&ix);
        assert_eq!(
            w.poll(
                &mut ix,
                |ix| {
                    ix.store();
                },
                |_| {}
            ),
            Verdict::Quiet
        );
        // counted twice at the next poll: one listing, then quiet
        assert!(deleted(&w.idle(&mut ix)));
        assert_eq!(w.idle(&mut ix), Verdict::Quiet);
        assert_eq!(w.listings, 2);
    }

    #[test]
    fn a_deletion_hidden_by_a_store_between_the_reads_shows_at_the_next_poll() {
        let mut ix = Index::default();
        let ids: Vec<u32> = (0..3).map(|_| ix.store()).collect();
        let mut w = Watcher::start(&ix);
        ix.delete(ids[0]);
        // idle poll: the store between its reads hides the deletion from it
        assert_eq!(
            w.poll(
                &mut ix,
                |ix| {
                    ix.store();
                },
                |_| {}
            ),
            Verdict::Quiet
        );
        // the next poll is busy (the store is new in the feed): a store between ITS reads hides
        // nothing, because it reads the feed again after the count
        let v = w.poll(
            &mut ix,
            |ix| {
                ix.store();
            },
            |_| {},
        );
        assert!(deleted(&v), "{v:?}");
    }

    #[test]
    fn a_busy_poll_sees_a_deletion_despite_stores_around_its_count() {
        let mut ix = Index::default();
        let ids: Vec<u32> = (0..3).map(|_| ix.store()).collect();
        let mut w = Watcher::start(&ix);
        ix.store(); // busy
        ix.delete(ids[1]);
        let v = w.poll(
            &mut ix,
            |ix| {
                ix.store();
            },
            |ix| {
                ix.store();
            },
        );
        assert!(deleted(&v), "{v:?}");
    }

    #[test]
    fn a_feed_not_read_to_its_end_lists_and_a_failed_count_stops_until_the_listing() {
        let mut ix = Index::default();
        ix.store();
        let mut w = Watcher::start(&ix);
        let mut first = ix.feed(w.cursor);
        first.caught_up = false;
        let closing = ChangesPoll::default(); // a failed second read
        assert!(w.d.busy(&first));
        assert_eq!(
            w.d.judge(&first, ix.count(), Some(&closing)),
            Verdict::Unsure
        );
        let err = PacsError::Http {
            url: "x".into(),
            status: 500,
            body: String::new(),
        };
        w.d.stop(&err, "test", Duration::ZERO);
        assert!(!w.d.watching() && w.d.failing);
        assert_eq!(w.d.judge(&ix.feed(0), 0, None), Verdict::Off);
        w.list(&ix);
        assert!(w.d.watching() && !w.d.failing);
    }

    /// The one way to hide a deletion from two polls, as the module says: a store between an
    /// idle poll's reads, then a store and a deletion around the next poll's count. The poll
    /// after sees that second deletion.
    #[test]
    fn the_hole_costs_one_poll_more() {
        let mut ix = Index::default();
        let ids: Vec<u32> = (0..3).map(|_| ix.store()).collect();
        let mut w = Watcher::start(&ix);
        ix.delete(ids[0]);
        let store = |ix: &mut Index| {
            ix.store();
        };
        assert_eq!(w.poll(&mut ix, store, |_| {}), Verdict::Quiet);
        let y = ix.next_id + 1; // the series stored, then deleted, around the count
        let v = w.poll(&mut ix, store, move |ix| ix.delete(y));
        assert_eq!(v, Verdict::Quiet);
        assert!(deleted(&w.idle(&mut ix)));
    }

    /// Every interleaving of one deletion with up to two stores among the reads of two polls:
    /// the deletion is seen by one of them unless a series is stored between the first poll's
    /// reads AND another is stored and deleted around the second's count (the one hole).
    #[test]
    fn every_deletion_is_seen_within_two_polls() {
        // where an event happens: before poll 1, between its reads, after its count, and the
        // same three for poll 2
        let slots = 6;
        for del in 0..3 {
            for mask in 0..(1u32 << slots) {
                let mut ix = Index::default();
                let ids: Vec<u32> = (0..4).map(|_| ix.store()).collect();
                let mut w = Watcher::start(&ix);
                let stores = |ix: &mut Index, slot: usize| {
                    if mask & (1 << slot) != 0 {
                        ix.store();
                    }
                };
                let mut seen = false;
                // the deletion happens in poll 1's window: before it, between its reads, or
                // after its count (then poll 2 is the first to count after it)
                if del == 0 {
                    ix.delete(ids[0]);
                }
                stores(&mut ix, 0);
                let v1 = w.poll(
                    &mut ix,
                    |ix| {
                        stores(ix, 1);
                        if del == 1 {
                            ix.delete(ids[0]);
                        }
                    },
                    |ix| {
                        stores(ix, 2);
                        if del == 2 {
                            ix.delete(ids[0]);
                        }
                    },
                );
                // a listing run by poll 1 comes after every event of poll 1: it finds the deletion
                seen |= v1.needs_listing();
                stores(&mut ix, 3);
                let v2 = w.poll(&mut ix, |ix| stores(ix, 4), |ix| stores(ix, 5));
                seen |= v2.needs_listing();
                let v3 = w.idle(&mut ix);
                let within = if del == 2 {
                    seen || v3.needs_listing()
                } else {
                    seen
                };
                assert!(within, "del {del}, stores {mask:06b}: {v1:?} {v2:?} {v3:?}");
            }
        }
    }
}
