//! The one-shot sync: list every source once and record what they send.

use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::app::pipeline::{self, Delivery, DeliveryError, Reporter, Scan};
use crate::ledger::{KnownLookup, Ledger, LedgerError};
use crate::source::{Source, SourceError};

/// What a `sync` did.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub scans: usize,
    pub changes: usize,
    pub source_errors: Vec<SourceError>,
    pub delivery: Option<Result<Delivery, DeliveryError>>,
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
    let known = KnownLookup::State(ledger.path().into());
    let (tx, mut rx) = mpsc::channel::<Scan>(4);
    let producers = async {
        let runs = sources.iter().map(|s| {
            let tx = tx.clone();
            let known = &known;
            async move { s.list_once(known, chunk, &tx).await }
        });
        let results = futures_util::future::join_all(runs).await;
        drop(tx);
        results
    };
    let consumer = async {
        let mut report = SyncReport::default();
        while let Some(scan) = rx.recv().await {
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
        }
        Ok::<_, LedgerError>(report)
    };
    let (results, report) = tokio::join!(producers, consumer);
    let mut report = report?;
    for r in results {
        if let Err(e) = r {
            warn!("{e}; nothing is marked removed for it this run");
            report.source_errors.push(e);
        }
    }
    Ok(report)
}
