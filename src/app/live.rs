//! Running the pipeline: once over every source (`sync`), or continuously (`watch`, `serve`).
//!
//! Sources send scans into one channel; one loop owns the ledger and the API client, records
//! each scan (one transaction), and drains the outbox. Sources never touch the ledger's writer
//! and the notifier never touches a source.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::app::pipeline::{self, DeliveryError, Reporter, Scan};
use std::net::SocketAddr;

use crate::app::serve::{self, token};
use crate::app::settings::{ConfigError, Settings};
use crate::app::Failure;
use crate::ledger::{Ledger, LedgerError};
use crate::monai::Client;
use crate::source::{self, LiveCtx, Source};

pub use crate::util::Metrics;

impl Metrics {
    fn count_scan(&self, scan: &Scan) {
        use crate::dicom::MatchRule;
        let add = |c: &AtomicU64, n: usize| {
            c.fetch_add(n as u64, Ordering::Relaxed);
        };
        add(&self.seg_series_seen, scan.labels.len());
        add(&self.unreadable, scan.listing.problems.len());
        for l in &scan.labels {
            match l.rule {
                MatchRule::ReferencedSeries => add(&self.matched_referenced_series, 1),
                MatchRule::SourceInstances => add(&self.matched_source_instances, 1),
                MatchRule::None => {}
            }
            match l.outcome.status() {
                crate::model::LabelStatus::Ready => add(&self.ready, 1),
                crate::model::LabelStatus::Unusable => add(&self.unusable, 1),
                crate::model::LabelStatus::Unmatched => add(&self.unmatched, 1),
                crate::model::LabelStatus::Invalid => add(&self.invalid, 1),
                _ => {}
            }
        }
    }
}

/// How a live run behaves.
#[derive(Clone)]
pub struct LiveOptions {
    pub dataset: String,
    pub batch: usize,
    pub chunk: usize,
    pub reconcile: Duration,
    pub poll: Duration,
}

/// How long new work waits for more before it is delivered (not the hook's debounced stored
/// series: they already waited for more, see `serve::debounce`).
const DELIVERY_LINGER: Duration = Duration::from_millis(200);

/// What a live run shares with the outside: its metrics, and extra inputs (the hook endpoint's
/// scans and deletion events).
#[derive(Default)]
pub struct LiveIo {
    pub metrics: Arc<Metrics>,
    pub scans: Option<mpsc::Receiver<Scan>>,
    /// Scans that already waited for more work (the hook's debounced stored series): what they
    /// bring is delivered at once, unless a delivery is already scheduled.
    pub settled: Option<mpsc::Receiver<Scan>>,
    pub removals: Option<mpsc::Receiver<Vec<String>>>,
}

/// Runs the sources until `shutdown` turns true, recording and delivering as things come.
/// On shutdown: no new work is taken, the call in flight finishes, what sources already sent is
/// recorded, and it returns.
pub async fn run_live(
    mut ledger: Ledger,
    mut client: Client,
    sources: Vec<Source>,
    opts: LiveOptions,
    mut shutdown: watch::Receiver<bool>,
    io: LiveIo,
) -> Result<(), LedgerError> {
    let LiveIo {
        metrics,
        scans: extra,
        settled,
        removals,
    } = io;
    let (tx, mut rx) = mpsc::channel::<Scan>(8);
    let ctx = LiveCtx {
        metrics: metrics.clone(),
        known: std::sync::Arc::new(crate::ledger::KnownLookup::State(ledger.at().clone())),
        chunk: opts.chunk,
        reconcile: opts.reconcile,
        poll: opts.poll,
        shutdown: shutdown.clone(),
    };
    let mut tasks = Vec::new();
    for s in sources {
        info!("watching {}", s.name());
        tasks.push(tokio::spawn(s.run_live(ctx.clone(), tx.clone())));
    }
    drop(tx);
    let mut extra = extra;
    let mut settled = settled;
    let mut removals = removals;
    let mut reporter = Reporter::default();
    let mut api = source::Health::new("MONAI API");
    let mut next_delivery = Instant::now();
    // armed: a delivery is scheduled for the work waiting now
    let mut armed = false;
    let mut depth = ledger.outbox_depth(Some(&opts.dataset))?;
    metrics.outbox_depth.store(depth as u64, Ordering::Relaxed);
    // the last success survives a restart: /healthz and /metrics read it from the ledger
    if let Some(t) = ledger.last_notify()? {
        metrics
            .last_success
            .store(t.max(0) as u64, Ordering::Relaxed);
    }
    client.set_cancel(shutdown.clone());
    loop {
        let deliver_at = tokio::time::Instant::from_std(next_delivery);
        let mut linger = DELIVERY_LINGER;
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(scan) = rx.recv() => {
                record_scan(&mut ledger, &scan, &opts.dataset, &mut reporter, &metrics)?;
            }
            Some(scan) = recv_opt(&mut extra) => {
                record_scan(&mut ledger, &scan, &opts.dataset, &mut reporter, &metrics)?;
            }
            Some(scan) = recv_opt(&mut settled) => {
                record_scan(&mut ledger, &scan, &opts.dataset, &mut reporter, &metrics)?;
                linger = Duration::ZERO;
            }
            Some(ids) = recv_opt(&mut removals) => {
                // deletion events carry the source's own series IDs (Orthanc's)
                let mut gone = Vec::new();
                for id in &ids {
                    match ledger.label_by_remote_id(id)? {
                        Some(label) => gone.push(label),
                        None => tracing::debug!(id, "deleted series is not a known label"),
                    }
                }
                let changes = ledger.remove_labels(&gone, &opts.dataset)?;
                if !changes.is_empty() {
                    info!("{} change(s) queued from deletion events", changes.len());
                }
            }
            _ = tokio::time::sleep_until(deliver_at), if depth > 0 => {
                match pipeline::deliver(&mut ledger, &mut client, &opts.dataset, opts.batch).await {
                    Ok(d) => {
                        armed = false;
                        api.ok();
                        metrics.api_down.store(0, Ordering::Relaxed);
                        metrics.notify_ok.fetch_add(d.calls as u64, Ordering::Relaxed);
                        metrics.entries_sent.fetch_add(d.entries_sent as u64, Ordering::Relaxed);
                        if d.calls > 0 {
                            metrics.last_success.store(crate::ledger::now() as u64, Ordering::Relaxed);
                        }
                    }
                    Err(DeliveryError::Ledger(e)) => return Err(e),
                    Err(e @ (DeliveryError::Api(_) | DeliveryError::Output(_))) => {
                        metrics.notify_failed.fetch_add(1, Ordering::Relaxed);
                        metrics.api_down.store(1, Ordering::Relaxed);
                        let wait = api.fail(&e.to_string());
                        next_delivery = Instant::now() + wait;
                        armed = true;
                    }
                }
            }
        }
        depth = ledger.outbox_depth(Some(&opts.dataset))?;
        metrics.outbox_depth.store(depth as u64, Ordering::Relaxed);
        if depth == 0 {
            armed = false;
        } else if !armed {
            // wait a moment for more: twenty SEGs stored at once make one notify, not twenty
            next_delivery = Instant::now() + linger;
            armed = true;
        }
    }
    // Shutdown: sources stop at their next step; what they already sent is recorded.
    info!("stopping: recording what the sources already sent");
    let deadline = Instant::now() + Duration::from_secs(3);
    for t in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, t).await.is_err() {
            warn!("a source did not stop in time; its unfinished work will be redone on the next start");
        }
    }
    while let Ok(scan) = rx.try_recv() {
        record_scan(&mut ledger, &scan, &opts.dataset, &mut reporter, &metrics)?;
    }
    Ok(())
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

fn record_scan(
    ledger: &mut Ledger,
    scan: &Scan,
    dataset: &str,
    reporter: &mut Reporter,
    metrics: &Metrics,
) -> Result<(), LedgerError> {
    reporter.report(scan);
    metrics.count_scan(scan);
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
    Ok(())
}

/// Turns SIGTERM and SIGINT into the shutdown signal.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).ok();
            let term_fut = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term_fut => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        info!("signal received: finishing the call in flight, then stopping");
        let _ = tx.send(true);
    });
    rx
}

/// `watch`, and with `listen` `serve`: the sources, the ledger and the notifier run until a
/// signal; with `listen`, the hook endpoint (and its worker) feed the same loop.
pub fn run(s: &Settings, listen: Option<SocketAddr>) -> Result<(), Failure> {
    let rt = crate::app::runtime()?;
    s.require_key()?;
    // the dataset fills in what the flags left open, once, before the sources start
    let s = &rt.block_on(s.from_dataset(false))?;
    let validator = rt.block_on(s.validator())?;
    let sources = s.sources_with(validator)?;
    let dataset = s.require_dataset()?.to_string();
    let explicit_token = token::from_env();
    let ledger = Ledger::open(&s.state, s.lock_wait)?;
    // a token always: the operator's, else one generated beside the state file (orthanc-lua
    // writes the same one into the script)
    let token = match listen {
        Some(_) => Some(token::hook_token(&s.state).map_err(ConfigError)?.secret),
        None => None,
    };
    let mut api = s.api_config();
    // in a daemon one delivery attempt is short; the daemon's own backoff takes over after it
    api.retry_for = api.retry_for.min(Duration::from_secs(30));
    let client = Client::new(api)?;
    let opts = LiveOptions {
        dataset,
        batch: s.batch,
        chunk: s.pacs.chunk,
        reconcile: s.pacs.reconcile,
        poll: s.pacs.poll,
    };
    let state = s.state.clone();
    rt.block_on(async move {
        let shutdown = shutdown_on_signals();
        let mut io = LiveIo::default();
        if let Some(listen) = listen {
            let listener = serve::bind(listen, &explicit_token)
                .await
                .map_err(ConfigError)?;
            if let (None, Some(file)) = (&explicit_token, state.file()) {
                info!(
                    "hook token: {} (generated; `segbridge orthanc-lua` puts it in the script)",
                    token::token_path(file).display()
                );
            }
            let (ev_tx, ev_rx) = mpsc::channel(1024);
            let (scan_tx, scan_rx) = mpsc::channel(64);
            let (settled_tx, settled_rx) = mpsc::channel(64);
            let (rm_tx, rm_rx) = mpsc::channel(64);
            io.scans = Some(scan_rx);
            io.settled = Some(settled_rx);
            io.removals = Some(rm_rx);
            let orthanc = sources.iter().find_map(|x| match x {
                Source::Orthanc(o) => Some(o.clone()),
                _ => None,
            });
            let dicomweb = sources.iter().find_map(|x| match x {
                Source::DicomWeb(d) => Some(d.clone()),
                _ => None,
            });
            let outputs = serve::WorkerOutputs {
                scans: scan_tx,
                settled: settled_tx,
                removals: rm_tx,
            };
            tokio::spawn(serve::worker(
                ev_rx,
                orthanc,
                dicomweb,
                state.clone(),
                outputs,
            ));
            let page = serve::PageConfig {
                state: state.clone(),
                dataset: opts.dataset.clone(),
                token: explicit_token.clone(),
            };
            let app = serve::router(
                token.clone(),
                ev_tx,
                io.metrics.clone(),
                sources.iter().map(Source::name).collect(),
                page,
            );
            let mut stop = shutdown.clone();
            let addr = listener.local_addr().map_err(anyhow::Error::from)?;
            info!(
                "hook endpoint on http://{addr} (POST /hooks/orthanc/stored-instance, \
                 /hooks/orthanc/stable-series, /hooks/orthanc/deleted-series, /hooks/series; \
                 GET /healthz, /metrics; the status page: GET /)"
            );
            tokio::spawn(async move {
                let graceful = async move {
                    let _ = stop.wait_for(|v| *v).await;
                };
                serve::http::serve(listener, app, graceful).await;
            });
        }
        run_live(ledger, client, sources, opts, shutdown, io)
            .await
            .map_err(Failure::from)
    })?;
    info!("stopped");
    Ok(())
}
