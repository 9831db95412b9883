//! The hook endpoint's background worker: hook calls are answered at once, their work is done
//! here. A stored SEG instance waits until its series is quiet ([`super::debounce`]), then the
//! series is read the way a stable one is (`Orthanc::read_series`) and its scan delivered without
//! the pipeline's batching wait (the debounce already waited for more). A stable series is read
//! at once (a series already read with the same instances changes nothing); a deletion goes to
//! the ledger by Orthanc ID once Orthanc confirms it.

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::debounce::Debounce;
use super::HookEvent;
use crate::app::pipeline::Scan;
use crate::ledger::KnownLookup;
use crate::source::dicomweb::DicomWeb;
use crate::source::orthanc::Orthanc;

/// Where the worker's results go.
pub struct WorkerOutputs {
    /// Scans of stable series and generic webhooks: delivered after the pipeline's short wait
    /// for more work.
    pub scans: mpsc::Sender<Scan>,
    /// Scans of debounced stored series: delivered at once.
    pub settled: mpsc::Sender<Scan>,
    /// Orthanc IDs of series confirmed deleted.
    pub removals: mpsc::Sender<Vec<String>>,
}

/// Events taken in one go: a burst of hook calls is handled as one batch.
const BATCH: usize = 200;

/// Processes hook events until the endpoint is gone.
pub async fn worker(
    mut events: mpsc::Receiver<HookEvent>,
    orthanc: Option<Orthanc>,
    dicomweb: Option<DicomWeb>,
    state: crate::ledger::StateAt,
    out: WorkerOutputs,
) {
    let known = KnownLookup::State(state);
    let mut stored = Debounce::default();
    loop {
        let wake = stored.next_due().map(Instant::from_std);
        let batch = tokio::select! {
            ev = events.recv() => match ev {
                Some(first) => {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match events.try_recv() {
                            Ok(ev) => batch.push(ev),
                            Err(_) => break,
                        }
                    }
                    batch
                }
                None => return,
            },
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                Vec::new()
            }
        };
        if !batch.is_empty() {
            debug!(events = batch.len(), "hook events");
        }
        let mut stable = Vec::new();
        let mut gone = Vec::new();
        for ev in batch {
            match ev {
                HookEvent::OrthancStable { id } => stable.push(id),
                HookEvent::OrthancDeleted { id } => gone.push(id),
                HookEvent::OrthancStored {
                    instance,
                    series,
                    uid,
                } => {
                    let uid = uid.as_deref().unwrap_or("?");
                    match stored_series(orthanc.as_ref(), &instance, series).await {
                        Ok(Some(series)) => stored.note(&series, std::time::Instant::now()),
                        Ok(None) => debug!(instance, "stored instance already gone"),
                        Err(e) => warn!(
                            "stored-instance hook for instance {instance} (series {uid}): {e}; \
                             OnStableSeries or the next reconcile will catch it"
                        ),
                    }
                }
                HookEvent::SeriesStored { uid, study } => {
                    let dw = orthanc.as_ref().map(|o| &o.dicomweb).or(dicomweb.as_ref());
                    let r = match dw {
                        Some(dw) => dw
                            .read_series_by_uid(&uid, study.as_deref(), &known, &out.scans)
                            .await
                            .map_err(|e| e.to_string()),
                        None => Err("segbridge serve has no --dicomweb or --orthanc".into()),
                    };
                    if let Err(e) = r {
                        warn!("webhook for series {uid}: {e}; the next reconcile will catch it");
                    }
                }
            }
        }
        if !stable.is_empty() {
            read(
                orthanc.as_ref(),
                &stable,
                &known,
                &out.scans,
                "stable-series",
            )
            .await;
        }
        let due = stored.take_due(std::time::Instant::now());
        if !due.is_empty() {
            read(
                orthanc.as_ref(),
                &due,
                &known,
                &out.settled,
                "stored-instance",
            )
            .await;
        }
        let gone = confirmed_gone(orthanc.as_ref(), gone).await;
        if !gone.is_empty() && out.removals.send(gone).await.is_err() {
            return;
        }
    }
}

/// The Orthanc ID of a stored instance's series: the one the hook sent, else Orthanc's answer
/// for the instance (`None`: the instance is gone).
async fn stored_series(
    orthanc: Option<&Orthanc>,
    instance: &str,
    series: Option<String>,
) -> Result<Option<String>, String> {
    let Some(o) = orthanc else {
        return Err("segbridge serve was not given --orthanc".into());
    };
    match series {
        Some(s) => Ok(Some(s)),
        None => o.instance_series(instance).await.map_err(|e| e.to_string()),
    }
}

/// Reads the series `ids` (Orthanc IDs) as one partial listing into `to`.
async fn read(
    orthanc: Option<&Orthanc>,
    ids: &[String],
    known: &KnownLookup,
    to: &mpsc::Sender<Scan>,
    hook: &str,
) {
    let r = match orthanc {
        Some(o) => o
            .read_series(ids, known, to)
            .await
            .map_err(|e| e.to_string()),
        None => Err("segbridge serve was not given --orthanc".to_string()),
    };
    if let Err(e) = r {
        warn!(
            "{hook} hook ({} series): {e}; the next reconcile will catch it",
            ids.len()
        );
    }
}

/// The series of deletion hooks that Orthanc confirms gone (its `/series/{id}` answers 404). A
/// series that still exists, or that cannot be checked now, is left alone: a forged or stale
/// hook removes nothing, and the reconcile removes what is really gone.
async fn confirmed_gone(orthanc: Option<&Orthanc>, ids: Vec<String>) -> Vec<String> {
    let Some(o) = orthanc else {
        if !ids.is_empty() {
            warn!(
                "{} deletion hook(s) ignored: serve has no --orthanc to check them against",
                ids.len()
            );
        }
        return Vec::new();
    };
    let mut gone = Vec::new();
    for id in ids {
        match o.series(&id).await {
            Ok(None) => gone.push(id),
            Ok(Some(_)) => {
                warn!("deletion hook for series {id}, which Orthanc still has: ignored")
            }
            Err(e) => warn!(
                "deletion hook for series {id} not checked ({e}): ignored; the next reconcile \
                 will remove it if it is gone"
            ),
        }
    }
    gone
}
