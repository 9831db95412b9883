//! The live loop's writes to the ledger, and what it does when one fails.
//!
//! - The ledger cannot be reached (PostgreSQL restarting, the network): the work is kept, in
//!   order, and written when it is back; said once per outage, with the backoff between tries.
//!   Nothing is lost and nothing is written out of order.
//! - A lease this process needs is not held (another process took over, or it was handed
//!   over): the work is dropped, said once per lease; the holder lists that source itself.
//! - Anything else (a corrupt file, a full disk): the run stops, as before.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use crate::app::pipeline::{self, Reporter, Scan};
use crate::ledger::{Ledger, LedgerError};
use crate::util::{Backoff, Metrics};

/// How long to wait between tries while the ledger cannot be reached.
const RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

/// Work kept until the ledger can be reached again.
enum Held {
    /// A scan, and how long the delivery after it should linger.
    Scan(Box<Scan>, Duration),
    /// Deletion events (the source's own series IDs).
    Removal(Vec<String>),
}

pub(super) struct Store {
    held: VecDeque<Held>,
    pub retry_at: Instant,
    /// Since when, and why, the ledger cannot be reached (said once).
    down: Option<(Instant, String)>,
    attempt: u32,
    /// Leases already said not held.
    refused: BTreeSet<String>,
}

impl Default for Store {
    fn default() -> Store {
        Store {
            held: VecDeque::new(),
            retry_at: Instant::now(),
            down: None,
            attempt: 0,
            refused: BTreeSet::new(),
        }
    }
}

impl Store {
    /// `Some` of a result that worked; `None` when the ledger cannot be reached or a lease is
    /// not held (each said once); the error itself for anything else.
    pub fn ok<T>(&mut self, r: Result<T, LedgerError>) -> Result<Option<T>, LedgerError> {
        match r {
            Ok(v) => {
                self.up();
                Ok(Some(v))
            }
            Err(LedgerError::Unreachable { path, why }) => {
                // the lease keeper says so, once per outage; this is the loop's side of it
                if self.down.is_none() {
                    debug!("state {path}: unreachable ({why}); keeping what comes in");
                    self.down = Some((Instant::now(), why));
                }
                Ok(None)
            }
            Err(e @ (LedgerError::Fenced { .. } | LedgerError::NotHeld { .. })) => {
                let lease = match &e {
                    LedgerError::Fenced { lease, .. } | LedgerError::NotHeld { lease } => {
                        lease.clone()
                    }
                    _ => unreachable!(),
                };
                // the lease keeper says so, once, when it finds the lease lost
                if self.refused.insert(lease) {
                    debug!("{e}: not recorded; the holder of the lease does that work");
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn up(&mut self) {
        self.attempt = 0;
        if let Some((since, _)) = self.down.take() {
            info!(
                "the ledger is reachable again after {:.0?}; writing what was kept",
                since.elapsed()
            );
        }
    }

    /// The wait before the next try, while the ledger cannot be reached.
    pub fn backoff(&mut self) -> Duration {
        self.attempt += 1;
        RETRY.wait(self.attempt)
    }

    pub fn waiting(&self) -> bool {
        !self.held.is_empty()
    }

    fn hold(&mut self, work: Held) {
        if self.held.is_empty() {
            let wait = self.backoff();
            self.retry_at = Instant::now() + wait;
        }
        self.held.push_back(work);
    }

    /// Records a scan (after what is kept, to keep the order).
    pub fn record(
        &mut self,
        ledger: &mut Ledger,
        scan: Scan,
        linger: Duration,
        dataset: &str,
        reporter: &mut Reporter,
        metrics: &Metrics,
    ) -> Result<(), LedgerError> {
        if self.waiting() {
            self.hold(Held::Scan(Box::new(scan), linger));
            return Ok(());
        }
        let r = record_scan(ledger, &scan, dataset);
        if self.unreachable(&r) {
            self.hold(Held::Scan(Box::new(scan), linger));
        } else if r.is_ok() {
            reporter.report(&scan);
            count_scan(metrics, &scan);
        }
        self.ok(r).map(|_| ())
    }

    /// Marks the labels of deleted series gone (after what is kept).
    pub fn remove(
        &mut self,
        ledger: &mut Ledger,
        ids: Vec<String>,
        dataset: &str,
    ) -> Result<(), LedgerError> {
        if self.waiting() {
            self.hold(Held::Removal(ids));
            return Ok(());
        }
        let r = remove(ledger, &ids, dataset);
        if self.unreachable(&r) {
            self.hold(Held::Removal(ids));
        }
        self.ok(r).map(|_| ())
    }

    fn unreachable<T>(&self, r: &Result<T, LedgerError>) -> bool {
        matches!(r, Err(LedgerError::Unreachable { .. }))
    }

    /// Writes what was kept, in order, until one fails again. The shortest linger among the
    /// scans written, if any.
    pub fn retry(
        &mut self,
        ledger: &mut Ledger,
        dataset: &str,
        reporter: &mut Reporter,
        metrics: &Metrics,
    ) -> Result<Option<Duration>, LedgerError> {
        let mut linger: Option<Duration> = None;
        while let Some(work) = self.held.pop_front() {
            let r = match &work {
                Held::Scan(scan, _) => record_scan(ledger, scan, dataset).map(|_| ()),
                Held::Removal(ids) => remove(ledger, ids, dataset),
            };
            if self.unreachable(&r) {
                self.held.push_front(work);
                let wait = self.backoff();
                self.retry_at = Instant::now() + wait;
                return Ok(linger);
            }
            if let Held::Scan(scan, l) = &work {
                if r.is_ok() {
                    reporter.report(scan);
                    count_scan(metrics, scan);
                }
                linger = Some(linger.map_or(*l, |m| m.min(*l)));
            }
            self.ok(r)?;
        }
        Ok(linger)
    }
}

fn record_scan(ledger: &mut Ledger, scan: &Scan, dataset: &str) -> Result<usize, LedgerError> {
    let changes = pipeline::record(ledger, scan, dataset)?;
    if !changes.is_empty() {
        info!(
            source = %scan.listing.source,
            "{} change(s) queued: {}",
            changes.len(),
            changes
                .iter()
                .map(|c| format!("{} {}<-{}", c.section.as_str(), c.image, c.label))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(changes.len())
}

/// Deletion events carry the source's own series IDs (Orthanc's).
fn remove(ledger: &mut Ledger, ids: &[String], dataset: &str) -> Result<(), LedgerError> {
    let mut gone = Vec::new();
    for id in ids {
        match ledger.label_by_remote_id(id)? {
            Some(label) => gone.push(label),
            None => debug!(id, "deleted series is not a known label"),
        }
    }
    let changes = ledger.remove_labels(&gone, dataset)?;
    if !changes.is_empty() {
        info!("{} change(s) queued from deletion events", changes.len());
    }
    Ok(())
}

fn count_scan(metrics: &Metrics, scan: &Scan) {
    use crate::dicom::MatchRule;
    let add = |c: &std::sync::atomic::AtomicU64, n: usize| {
        c.fetch_add(n as u64, Ordering::Relaxed);
    };
    add(&metrics.seg_series_seen, scan.labels.len());
    add(&metrics.unreadable, scan.listing.problems.len());
    for l in &scan.labels {
        match l.rule {
            MatchRule::ReferencedSeries => add(&metrics.matched_referenced_series, 1),
            MatchRule::SourceInstances => add(&metrics.matched_source_instances, 1),
            MatchRule::None => {}
        }
        match l.outcome.status() {
            crate::model::LabelStatus::Ready => add(&metrics.ready, 1),
            crate::model::LabelStatus::Unusable => add(&metrics.unusable, 1),
            crate::model::LabelStatus::Unmatched => add(&metrics.unmatched, 1),
            crate::model::LabelStatus::Invalid => add(&metrics.invalid, 1),
            _ => {}
        }
    }
}
