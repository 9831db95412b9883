//! The pipeline, one way: source → match → ledger (outbox) → notifier.
//!
//! - [`scan`] lists a source and matches every SEG (writes nothing);
//! - [`record`] writes a scan into the ledger and returns the planned changes;
//! - [`deliver`] drains the outbox in batches, confirming each only after a 2xx.

use std::collections::HashSet;

use serde::Serialize;
use tracing::{info, warn};

use crate::dicom::{MatchOutcome, MatchedLabel};
use crate::ledger::{Change, Ledger, LedgerError, OutboxEntry};
use crate::monai::{ApiError, Client, NotifyBody};

pub use crate::model::scan::Scan;
pub use crate::source::folder::{scan_folder, scan_folder_cached};

/// Logs the labels that will not be notified and why, once per label and reason: a daemon
/// that rescans every minute does not repeat itself. (`scan` prints the same in its table.)
#[derive(Default)]
pub struct Reporter {
    said: std::collections::HashMap<String, String>,
}

impl Reporter {
    pub fn report(&mut self, scan: &Scan) {
        for l in &scan.labels {
            let note = format!("{}|{}", l.outcome.status(), l.outcome.reason());
            if self.said.get(l.seg.uid()) == Some(&note) {
                continue;
            }
            match &l.outcome {
                MatchOutcome::Unusable { .. } => warn!(
                    label = l.seg.uid(),
                    image = l.outcome.image().unwrap_or(""),
                    "unusable label, not notified: {}",
                    l.outcome.reason()
                ),
                MatchOutcome::Unmatched { .. } => warn!(
                    label = l.seg.uid(),
                    "unmatched label, kept for a later run: {}",
                    l.outcome.reason()
                ),
                MatchOutcome::Invalid { .. } => warn!(
                    label = l.seg.uid(),
                    image = l.outcome.image().unwrap_or(""),
                    "invalid label, not notified: {}",
                    l.outcome.reason()
                ),
                _ => {}
            }
            for w in l
                .seg
                .warnings
                .iter()
                .chain(l.quality.iter().flat_map(|q| q.warnings.iter()))
            {
                warn!(label = l.seg.uid(), "{w}");
            }
            self.said.insert(l.seg.uid().to_string(), note);
        }
        for p in &scan.listing.problems {
            let note = format!("problem|{}", p.reason);
            if self.said.get(&p.path) != Some(&note) {
                warn!(path = %p.path, "skipped: {}", p.reason);
                self.said.insert(p.path.clone(), note);
            }
        }
    }
}

/// Records a scan in the ledger (one transaction) and returns the changes it queued.
pub fn record(ledger: &mut Ledger, scan: &Scan, dataset: &str) -> Result<Vec<Change>, LedgerError> {
    if !scan.listing.incomplete_reasons.is_empty() {
        warn!(
            source = %scan.listing.source,
            "listing incomplete, nothing will be marked removed this run: {}",
            scan.listing.incomplete_reasons.join("; ")
        );
    }
    ledger.apply(&scan.listing, &scan.labels, dataset)
}

/// One line of `scan --json`.
#[derive(Debug, Serialize)]
pub struct LabelLine<'a> {
    pub label: &'a str,
    pub image: Option<&'a str>,
    pub study: &'a str,
    pub status: crate::model::LabelStatus,
    #[serde(rename = "match")]
    pub rule: &'a str,
    pub reason: String,
    pub source: &'a str,
    pub sop_class: &'a str,
    pub instances: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What each segment holds (when the quality gate ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<&'a [crate::dicom::quality::SegmentInfo]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<usize>,
}

impl<'a> LabelLine<'a> {
    pub fn of(l: &'a MatchedLabel) -> LabelLine<'a> {
        LabelLine {
            label: l.seg.uid(),
            image: l.outcome.image(),
            study: &l.seg.first.study,
            status: l.outcome.status(),
            rule: l.rule.as_str(),
            reason: l.outcome.reason(),
            source: l.seg.locations.first().map(String::as_str).unwrap_or(""),
            sop_class: &l.seg.first.sop_class,
            instances: l.seg.instances.len(),
            warnings: l
                .seg
                .warnings
                .iter()
                .chain(l.quality.iter().flat_map(|q| q.warnings.iter()))
                .cloned()
                .collect(),
            segments: l.quality.as_ref().map(|q| q.segments.as_slice()),
            frames: l.quality.as_ref().map(|q| q.frames),
        }
    }
}

/// What a delivery did.
#[derive(Debug, Default, Serialize)]
pub struct Delivery {
    pub calls: usize,
    pub entries_sent: usize,
    pub bodies: Vec<NotifyBody>,
}

/// Why a delivery stopped early; the entries not sent stay in the outbox.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("{0}")]
    Ledger(#[from] LedgerError),
    /// The dry run's output could not be written.
    #[error("writing the notify bodies: {0}")]
    Output(#[from] std::io::Error),
}

/// Where notify bodies go: the MONAI API ([`Client`]), or, for `sync --dry-run`, a
/// [`Printer`]. [`deliver`] drains the outbox into one the same way for both.
pub trait Notifier {
    fn send<'a>(
        &'a mut self,
        dataset: &'a str,
        body: &'a NotifyBody,
    ) -> impl std::future::Future<Output = Result<(), DeliveryError>> + Send + 'a;
}

impl Notifier for Client {
    async fn send(&mut self, dataset: &str, body: &NotifyBody) -> Result<(), DeliveryError> {
        Ok(self.notify(dataset, body).await?)
    }
}

/// A notifier that prints each body instead of sending it: one JSON object per line, or the
/// request as text (`POST url` and the pretty body).
pub struct Printer<W> {
    pub out: W,
    pub json: bool,
    /// The organisation's API root, `{api}/api/v1/orgs/{org}`, shown in the text form.
    pub org_url: String,
}

impl<W: std::io::Write + Send> Notifier for Printer<W> {
    async fn send(&mut self, dataset: &str, body: &NotifyBody) -> Result<(), DeliveryError> {
        if self.json {
            serde_json::to_writer(&mut self.out, body).map_err(std::io::Error::from)?;
            writeln!(self.out)?;
        } else {
            let pretty = serde_json::to_string_pretty(body).map_err(std::io::Error::from)?;
            writeln!(
                self.out,
                "POST {}/datasets/{dataset}/jobs\n{pretty}",
                self.org_url
            )?;
        }
        Ok(())
    }
}

/// Splits outbox entries (oldest first) into runs of at most `batch` entries, in order, with
/// never two entries of one image in one run: the sections of a body carry no order among
/// themselves, so an image's second entry waits for the next body.
pub fn runs(entries: &[OutboxEntry], batch: usize) -> Vec<&[OutboxEntry]> {
    let batch = batch.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut images: HashSet<&str> = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        if i - start == batch || images.contains(e.image.as_str()) {
            out.push(&entries[start..i]);
            start = i;
            images.clear();
        }
        images.insert(&e.image);
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

/// Drains the outbox of `dataset` into `client`: each batch is sent, and confirmed only after
/// it was accepted (a 2xx from the API).
pub async fn deliver<N: Notifier>(
    ledger: &mut Ledger,
    client: &mut N,
    dataset: &str,
    batch: usize,
) -> Result<Delivery, DeliveryError> {
    let mut report = Delivery::default();
    loop {
        let waiting = ledger.pending(dataset, batch.max(1))?;
        let Some(&pending) = runs(&waiting, batch).first() else {
            return Ok(report);
        };
        let ids: Vec<i64> = pending.iter().map(|e| e.id).collect();
        let body = NotifyBody::from_entries(pending);
        match client.send(dataset, &body).await {
            Ok(()) => {
                ledger.confirm(&ids)?;
                info!(
                    dataset,
                    added = ?entry_list(&body.specs.added),
                    updated = ?entry_list(&body.specs.updated),
                    removed = ?entry_list(&body.specs.removed),
                    "notified {} entries",
                    body.len()
                );
                report.calls += 1;
                report.entries_sent += body.len();
                report.bodies.push(body);
            }
            Err(e) => {
                ledger.record_failure(&ids, &e.to_string())?;
                return Err(e);
            }
        }
    }
}

/// `api notify`: one notify call by hand (the guide's "Notify Server" cell) through the same
/// client, login and retries as the bridge; once the API accepted it, it is journalled in the
/// ledger, marked by hand. Open the ledger before: an accepted call is then never left
/// unjournalled for want of the state file's lock.
pub async fn notify_by_hand(
    ledger: &mut Ledger,
    client: &mut Client,
    dataset: &str,
    change: &Change,
) -> Result<NotifyBody, DeliveryError> {
    let body = NotifyBody::one(change);
    client.notify(dataset, &body).await?;
    ledger.journal_by_hand(dataset, change)?;
    info!(
        dataset,
        "notified by hand: {} {}<-{}",
        change.section.as_str(),
        change.image,
        change.label
    );
    Ok(body)
}

fn entry_list(v: &[crate::monai::Entry]) -> Vec<String> {
    v.iter()
        .map(|e| format!("{}<-{}", e.image, e.label))
        .collect()
}
