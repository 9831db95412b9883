//! Sources: where SEG series are discovered. Each source produces a [`Listing`]: the SEG series it
//! saw, what it knows about image series, the things it could not read, and whether the listing
//! is complete (only a complete listing may turn "not seen" into "gone").

pub mod dicomweb;
pub mod filter;
pub mod folder;
pub mod orthanc;

pub use crate::dicom::json as dicom_json;
pub use crate::pacs::client as http;
pub use crate::pacs::endpoint;

pub use crate::model::scan::{Listing, Problem};

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::model::KnownLabels;
use crate::model::Scan;

/// A configured source.
#[derive(Clone)]
pub enum Source {
    Folder(folder::FolderSource),
    DicomWeb(dicomweb::DicomWeb),
    Orthanc(orthanc::Orthanc),
}

/// A digest of the settings a label's verdict depends on (the image filter, the quality gate's
/// labels and strictness): a label judged under other settings is judged again, never skipped
/// as unchanged.
pub fn settings_stamp(
    image_filter: Option<&str>,
    validator: Option<&crate::dicom::quality::Validator>,
) -> String {
    let v = validator.map(|v| (&v.labels, v.strict_labels));
    let text = format!("filter={image_filter:?};gate={v:?}");
    sha1_smol::Sha1::from(text).digest().to_string()[..16].to_string()
}

/// What live sources share.
#[derive(Clone)]
pub struct LiveCtx {
    /// What the ledger knows (read-only): what a source may skip, the unmatched labels.
    pub known: std::sync::Arc<dyn KnownLabels>,
    /// SEG series per scan sent to the ledger during a backfill.
    pub chunk: usize,
    /// Full listing every this long (and on start).
    pub reconcile: Duration,
    /// Poll interval of polling sources (QIDO, Orthanc changes).
    pub poll: Duration,
    pub shutdown: watch::Receiver<bool>,
    pub metrics: std::sync::Arc<crate::util::Metrics>,
}

/// A source could not be listed (completely).
#[derive(Debug, thiserror::Error)]
#[error("source {source_name}: {reason}")]
pub struct SourceError {
    pub source_name: String,
    pub reason: String,
}

impl Source {
    pub fn name(&self) -> String {
        match self {
            Source::Folder(f) => f.source_name(),
            Source::DicomWeb(d) => d.source_name(),
            Source::Orthanc(o) => o.source_name(),
        }
    }

    /// One complete listing, sent as scans (chunks, then the complete one).
    pub async fn list_once(
        &self,
        known: &dyn KnownLabels,
        chunk: usize,
        tx: &mpsc::Sender<Scan>,
    ) -> Result<(), SourceError> {
        let err = |reason: String| SourceError {
            source_name: self.name(),
            reason,
        };
        match self {
            Source::Folder(f) => {
                let scan = f.scan(known).await.map_err(|e| err(e.to_string()))?;
                let _ = tx.send(scan).await;
                Ok(())
            }
            Source::DicomWeb(d) => {
                let (listed, complete) =
                    d.list_seg_series().await.map_err(|e| err(e.to_string()))?;
                let uids: Vec<&str> = listed.iter().map(|r| r.series.as_str()).collect();
                let known = known.among(&uids);
                dicomweb::backfill(
                    d,
                    &d.source_name(),
                    listed,
                    &known,
                    dicomweb::Pass {
                        chunk,
                        complete,
                        cursor: None,
                    },
                    tx,
                )
                .await
                .map_err(|e| err(e.to_string()))
            }
            Source::Orthanc(o) => {
                // the feed position before the listing: what changes during it is read later
                let cursor = o.last_change().await.map_err(|e| err(e.to_string()))?;
                o.reconcile(known, chunk, Some(cursor.to_string()), tx)
                    .await
                    .map_err(|e| err(e.to_string()))
            }
        }
    }

    /// Runs until shutdown: listings on start and every `reconcile`, and in between what the
    /// source offers (file events, the changes feed, polling).
    pub async fn run_live(self, ctx: LiveCtx, tx: mpsc::Sender<Scan>) {
        match self {
            Source::Folder(f) => f.run_live(ctx, tx).await,
            Source::DicomWeb(_) | Source::Orthanc(_) => self.poll_live(ctx, tx).await,
        }
    }

    async fn poll_live(self, mut ctx: LiveCtx, tx: mpsc::Sender<Scan>) {
        let name = self.name();
        let mut health = Health::new(&name).counting(ctx.metrics.clone());
        let mut feed = orthanc::Feed::default();
        let known = ctx.known.clone();
        loop {
            if *ctx.shutdown.borrow() {
                return;
            }
            let step = async {
                match &self {
                    Source::Orthanc(o) => o
                        .live_step(&mut feed, &ctx, &tx)
                        .await
                        .map_err(|e| e.to_string()),
                    // a DICOMweb server has no feed: every poll is a (known-skipping) listing,
                    // complete only when every page came, so deletions are seen at the next poll
                    _ => self
                        .list_once(known.as_ref(), ctx.chunk, &tx)
                        .await
                        .map_err(|e| e.reason),
                }
            };
            let wait = match step.await {
                Ok(()) => {
                    health.ok();
                    ctx.poll
                }
                Err(e) => health.fail(&e),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = ctx.shutdown.changed() => return,
            }
        }
    }
}

/// Reachability of one thing (a source, the API): says so once when it goes down and once when
/// it comes back, and gives the capped exponential backoff to wait meanwhile.
pub struct Health {
    name: String,
    down_since: Option<Instant>,
    failures: u32,
    /// Counted in `sources_down` while down.
    gauge: Option<std::sync::Arc<crate::util::Metrics>>,
}

impl Health {
    pub fn new(name: &str) -> Health {
        Health {
            name: name.to_string(),
            down_since: None,
            failures: 0,
            gauge: None,
        }
    }

    /// Counts this source in the `sources_down` gauge while it is down, and keeps its health
    /// (up or down, since when, why) for the status page.
    pub fn counting(mut self, m: std::sync::Arc<crate::util::Metrics>) -> Health {
        self.gauge = Some(m);
        self
    }

    pub fn is_down(&self) -> bool {
        self.down_since.is_some()
    }

    pub fn ok(&mut self) {
        if let Some(g) = &self.gauge {
            g.source(&self.name, None);
        }
        if let Some(since) = self.down_since.take() {
            if let Some(g) = &self.gauge {
                g.sources_down
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            info!(
                "{} is reachable again after {:.0?}",
                self.name,
                since.elapsed()
            );
        }
        self.failures = 0;
    }

    /// Records a failure; returns how long to wait before trying again.
    pub fn fail(&mut self, reason: &str) -> Duration {
        self.failures += 1;
        if let Some(g) = &self.gauge {
            g.source(&self.name, Some(reason));
        }
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            if let Some(g) = &self.gauge {
                g.sources_down
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            warn!(
                "{}: {reason}; retrying with backoff (said once until it recovers)",
                self.name
            );
        } else {
            tracing::debug!("{} still failing: {reason}", self.name);
        }
        // 1 s, 2 s, 4 s… up to a minute, by the one retry policy
        crate::util::Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
            .wait(self.failures)
    }
}
