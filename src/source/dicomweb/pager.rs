//! How a QIDO-RS listing pages: the size of each page asked for, and when the listing has ended.
//!
//! Pages grow. Many servers answer `offset` by walking past the skipped results (a SQL `OFFSET`,
//! or Orthanc, which builds every skipped result with its PostgreSQL index: 1.2 ms each at
//! 10,000 series), so a listing of N series in fixed pages of P costs them N²/2P skipped results:
//! 95,000 for 10,000 SEGs in pages of 500. Doubling each full page, up to [`GROWTH`] times the
//! first, makes it 13,000.
//!
//! A server may cap its pages below what is asked. A page shorter than asked is then either the
//! last one or the server's cap. It is the last when it is shorter than a page the server has
//! already answered in full (the cap is at least that). Otherwise the listing goes on at that
//! size, without growing: a full page confirms the cap, a shorter or empty one ends it.

/// How many times the first page a page may grow to (500 → 8,000 series by default: about
/// 10 MB of Orthanc's answer, 1.2 KB a series, under the 32 MiB cap of a QIDO answer), and
/// never past [`LARGEST`] unless the first page is larger.
pub const GROWTH: usize = 16;

/// The largest page growth reaches: a larger `--page-size` is taken as given, not grown.
pub const LARGEST: usize = 8_000;

#[derive(Debug, Clone)]
pub struct Pager {
    /// The size of the next page to ask for.
    pub limit: usize,
    largest: usize,
    /// The largest page the server has answered in full (0: none yet).
    full: usize,
    growing: bool,
}

impl Pager {
    pub fn new(first: usize) -> Pager {
        let first = first.max(1);
        Pager {
            limit: first,
            largest: first.saturating_mul(GROWTH).min(LARGEST.max(first)),
            full: 0,
            growing: true,
        }
    }

    /// The answer to a page of `self.limit` was over the size cap of an answer: whether to ask
    /// the same offset again, at half the size and no longer growing (a server whose series
    /// take more room than Orthanc's). A page of one series that is too large is an error.
    pub fn too_large(&mut self) -> bool {
        if self.limit <= 1 {
            return false;
        }
        self.limit /= 2;
        self.largest = self.limit;
        self.growing = false;
        true
    }

    /// The server answered `got` results to a page of `self.limit`: whether the listing goes on
    /// (and then `self.limit` is the next page's size).
    pub fn next(&mut self, got: usize) -> bool {
        if got == 0 {
            return false;
        }
        if got >= self.limit {
            self.full = self.full.max(got);
            if self.growing {
                self.limit = self.limit.saturating_mul(2).min(self.largest);
            }
            return true;
        }
        if got < self.full {
            return false; // shorter than a page it answered in full: the end
        }
        // the end, or the server's cap: go on at that size; the next page tells which
        if !self.growing && got < self.limit {
            return false; // already at the cap this size found
        }
        self.growing = false;
        self.limit = got;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server of `total` results that answers at most `cap` a page, and ignores `offset` when
    /// told, listed as `list_seg_series` lists it (a page with no new result ends the listing,
    /// incomplete): (results seen, distinct, requests, complete).
    fn list(
        total: usize,
        cap: usize,
        first: usize,
        ignore_offset: bool,
    ) -> (usize, usize, usize, bool) {
        let mut p = Pager::new(first);
        let mut offset = 0;
        let mut seen = std::collections::BTreeSet::new();
        let mut requests = 0;
        let mut results = 0;
        loop {
            requests += 1;
            assert!(requests < 100_000, "the listing does not end");
            let from = if ignore_offset { 0 } else { offset };
            let got = total.saturating_sub(from).min(cap).min(p.limit);
            let before = seen.len();
            seen.extend(from..from + got);
            results += got;
            if offset > 0 && got > 0 && seen.len() == before {
                return (results, seen.len(), requests, false);
            }
            offset += got;
            if !p.next(got) {
                return (results, seen.len(), requests, true);
            }
        }
    }

    #[test]
    fn every_result_is_listed_whatever_the_cap() {
        for first in [1, 2, 3, 7, 500] {
            for cap in [
                1,
                2,
                3,
                5,
                8,
                13,
                100,
                499,
                500,
                501,
                1000,
                5000,
                usize::MAX,
            ] {
                for total in (0..60).chain([499, 500, 501, 1000, 1001, 8191, 10_000, 12_345]) {
                    let (results, distinct, requests, complete) = list(total, cap, first, false);
                    assert!(complete, "first {first} cap {cap} total {total}");
                    assert_eq!(distinct, total, "first {first} cap {cap} total {total}");
                    assert_eq!(results, total, "nothing listed twice");
                    // every page but the last is full at no less than the first size or the
                    // cap; the end costs at most two more
                    let page = cap.min(first).max(1);
                    assert!(
                        requests <= total / page + 2,
                        "first {first} cap {cap} total {total}: {requests} requests"
                    );
                    if cap == usize::MAX {
                        // and without a cap, pages grow: a few more than the largest page's
                        let grown = (first * GROWTH).min(LARGEST.max(first));
                        assert!(
                            requests <= total / grown + GROWTH.ilog2() as usize + 2,
                            "first {first} total {total}: {requests} requests"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn pages_grow_to_sixteen_times_the_first() {
        let mut p = Pager::new(500);
        let mut sizes = Vec::new();
        for _ in 0..7 {
            sizes.push(p.limit);
            assert!(p.next(p.limit));
        }
        assert_eq!(sizes, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        // 10,000 series: 5 pages, 13,000 results skipped in all (fixed pages: 20 and 95,000)
        let (results, _, requests, complete) = list(10_000, usize::MAX, 500, false);
        assert_eq!((results, requests, complete), (10_000, 5, true));
        // never past 8,000 by growth; a larger first page is taken as given
        let mut p = Pager::new(2_000);
        for _ in 0..5 {
            assert!(p.next(p.limit));
        }
        assert_eq!(p.limit, 8_000);
        let mut p = Pager::new(20_000);
        assert!(p.next(20_000));
        assert_eq!(p.limit, 20_000);
    }

    #[test]
    fn a_short_page_after_a_full_one_of_its_size_ends_the_listing() {
        let mut p = Pager::new(4);
        assert!(p.next(4)); // full: next 8
        assert!(!p.next(3)); // shorter than a full page: the end, with no extra request
        let mut p = Pager::new(4);
        assert!(p.next(4));
        assert!(p.next(6)); // 6 of 8: the end or a cap of 6, asked again at 6
        assert_eq!(p.limit, 6);
        assert!(!p.next(5));
        // more than asked counts as full
        let mut p = Pager::new(4);
        assert!(p.next(9));
        assert_eq!(p.limit, 8);
    }

    #[test]
    fn an_answer_too_large_is_asked_again_smaller_down_to_one() {
        let mut p = Pager::new(500);
        assert!(p.next(500));
        assert!(p.next(1000)); // asking 2,000 now
        assert!(p.too_large());
        assert_eq!(p.limit, 1000);
        assert!(p.next(1000)); // full, but no longer growing
        assert_eq!(p.limit, 1000);
        let mut p = Pager::new(3);
        assert!(p.too_large() && p.limit == 1);
        assert!(!p.too_large()); // one series too large: an error
    }

    #[test]
    fn a_server_that_ignores_offset_is_found_within_a_few_pages() {
        for first in [1, 2, 3, 7, 500] {
            for cap in [1, 2, 5, 500, 1000, usize::MAX] {
                for total in [1, 2, 5, 30, 499, 500, 501, 10_000, 100_000] {
                    // such a server never answers less than before, so the listing never
                    // ends on a short page: it ends on a repeated one, incomplete (nothing is
                    // removed), as it did with fixed pages
                    let (_, _, requests, complete) = list(total, cap, first, true);
                    assert!(!complete, "first {first} cap {cap} total {total}");
                    assert!(
                        requests <= GROWTH.ilog2() as usize + 3,
                        "first {first} cap {cap} total {total}: {requests} requests"
                    );
                }
            }
        }
    }
}
