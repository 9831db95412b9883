//! The one-shot listing: every source listed once, concurrently. `sync` records what they send
//! ([`collect_once`]); `scan` only merges it ([`scan_once`]), writing nothing.

use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::app::pipeline::{self, Delivery, DeliveryError, Reporter, Scan};
use crate::ledger::{KnownLookup, Ledger, LedgerError};
use crate::source::{Listing, Source, SourceError};

/// What a `sync` did.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub scans: usize,
    pub changes: usize,
    pub source_errors: Vec<SourceError>,
    pub delivery: Option<Result<Delivery, DeliveryError>>,
}

/// Lists every source once, concurrently, and hands each scan they send to `take`, in one
/// future (so `take` may hold the ledger). Returns the sources that failed; a failing `take`
/// stops the listing.
pub async fn list_once<E>(
    sources: &[Source],
    known: &KnownLookup,
    chunk: usize,
    mut take: impl FnMut(Scan) -> Result<(), E>,
) -> Result<Vec<SourceError>, E> {
    let (tx, mut rx) = mpsc::channel::<Scan>(4);
    let producers = async {
        let runs = sources.iter().map(|s| {
            let tx = tx.clone();
            async move { s.list_once(known, chunk, &tx).await }
        });
        let results = futures_util::future::join_all(runs).await;
        drop(tx);
        results
    };
    // the receiver goes with the consumer: if `take` fails, the sources' sends fail too
    // instead of waiting on a full channel
    let consumer = async move {
        while let Some(scan) = rx.recv().await {
            take(scan)?;
        }
        Ok(())
    };
    let (results, taken) = tokio::join!(producers, consumer);
    taken?;
    Ok(results.into_iter().filter_map(Result::err).collect())
}

/// Lists every source once and records what they send. Sources run concurrently; the ledger is
/// written by this one future.
pub async fn collect_once(
    ledger: &mut Ledger,
    sources: &[Source],
    dataset: &str,
    chunk: usize,
    reporter: &mut Reporter,
) -> Result<SyncReport, LedgerError> {
    // each source asks the ledger about what it listed, not about everything it holds
    let known = KnownLookup::State(ledger.at().clone());
    let mut report = SyncReport::default();
    let errors = list_once(sources, &known, chunk, |scan| {
        reporter.report(&scan);
        report.scans += 1;
        let changes = pipeline::record(ledger, &scan, dataset)?.len();
        debug!(
            source = %scan.listing.source,
            labels = scan.labels.len(),
            changes,
            "recorded one scan in one transaction"
        );
        report.changes += changes;
        Ok::<_, LedgerError>(())
    })
    .await?;
    for e in errors {
        warn!("{e}; nothing is marked removed for it this run");
        report.source_errors.push(e);
    }
    Ok(report)
}

/// Lists every source once (nothing known, nothing written) and merges what they sent into one
/// scan, labels sorted by SEG series, named after the sources listed completely (empty when
/// none was). Returns the sources that failed beside it.
pub async fn scan_once(sources: &[Source], chunk: usize) -> (Scan, Vec<SourceError>) {
    let mut merged = Scan {
        listing: Listing::default(),
        labels: vec![],
    };
    let mut paths = std::collections::HashSet::new();
    let errors = list_once(sources, &KnownLookup::Nothing, chunk, |scan| {
        merged.listing.files_seen += if scan.listing.partial {
            0
        } else {
            scan.listing.files_seen
        };
        for p in scan.listing.problems {
            if paths.insert(p.path.clone()) {
                merged.listing.problems.push(p);
            }
        }
        merged.listing.index.merge(scan.listing.index);
        merged.labels.extend(scan.labels);
        Ok::<_, std::convert::Infallible>(())
    })
    .await;
    let errors = match errors {
        Ok(e) => e,
        Err(never) => match never {},
    };
    merged.listing.source = sources
        .iter()
        .map(Source::name)
        .filter(|n| !errors.iter().any(|e| &e.source_name == n))
        .collect::<Vec<_>>()
        .join(", ");
    merged.labels.sort_by(|a, b| a.seg.uid().cmp(b.seg.uid()));
    (merged, errors)
}

/// What one `sync` run did, for the command line to show.
pub struct SyncRun {
    pub dataset: String,
    pub sources: Vec<String>,
    pub report: SyncReport,
    /// Outbox entries for the dataset before delivery.
    pub waiting: i64,
    /// Outbox entries left after delivery.
    pub remaining: i64,
    /// What the ledger holds after the run.
    pub summary: crate::ledger::Summary,
    pub delivery: Result<Delivery, DeliveryError>,
}

impl SyncRun {
    /// Whether any source could be listed: when none could, there is nothing to count.
    pub fn listed_any(&self) -> bool {
        self.report.source_errors.len() < self.sources.len()
    }
}

/// `sync`: lists every source once, records what changed, and delivers the outbox to the API.
pub fn run(s: &crate::app::settings::Settings) -> Result<SyncRun, crate::app::Failure> {
    go::<pipeline::Printer<std::io::Sink>>(s, None)
}

/// `sync --dry-run`: the same run into a throw-away copy of the state, delivered into
/// `notifier` (a printer): nothing is written, nothing is sent.
pub fn dry_run<N: pipeline::Notifier>(
    s: &crate::app::settings::Settings,
    notifier: &mut N,
) -> Result<SyncRun, crate::app::Failure> {
    go(s, Some(notifier))
}

fn go<N: pipeline::Notifier>(
    s: &crate::app::settings::Settings,
    notifier: Option<&mut N>,
) -> Result<SyncRun, crate::app::Failure> {
    let rt = crate::app::runtime()?;
    let dry = notifier.is_some();
    // the dataset fills in what the flags left open (a dry run reads it only when it must)
    let s = &rt.block_on(s.from_dataset(dry))?;
    let validator = rt.block_on(s.validator())?;
    let sources = s.sources_with(validator)?;
    let dataset = s.require_dataset()?.to_string();
    if !dry {
        s.require_key()?;
    }
    let mut reporter = Reporter::default();
    let mut ledger = if dry {
        Ledger::snapshot(&s.state)?
    } else {
        Ledger::open(&s.state, s.lock_wait)?
    };
    // a shared ledger: the run holds its sources' and the outbox's leases, or waits for them
    let _claim = match (&s.state, dry) {
        (crate::ledger::StateAt::Postgres(_), false) => {
            let names: Vec<String> = sources.iter().map(Source::name).collect();
            let claim = crate::app::cluster::Claim::all(&s.state, &names, s.lease, s.lock_wait)?;
            ledger.fence_with(claim.fences.clone());
            Some(claim)
        }
        _ => None,
    };
    let report = rt.block_on(collect_once(
        &mut ledger,
        &sources,
        &dataset,
        s.pacs.chunk,
        &mut reporter,
    ))?;
    let waiting = ledger.outbox_depth(Some(&dataset))?;
    let delivery = rt.block_on(async {
        match notifier {
            Some(n) => pipeline::deliver(&mut ledger, n, &dataset, s.batch).await,
            None => {
                let mut client =
                    crate::monai::Client::new(s.api_config()).map_err(DeliveryError::Api)?;
                pipeline::deliver(&mut ledger, &mut client, &dataset, s.batch).await
            }
        }
    });
    Ok(SyncRun {
        remaining: ledger.outbox_depth(Some(&dataset))?,
        summary: ledger.summary()?,
        sources: sources.iter().map(Source::name).collect(),
        dataset,
        report,
        waiting,
        delivery,
    })
}
