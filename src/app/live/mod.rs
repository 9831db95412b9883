//! Running the pipeline: once over every source (`sync`), or continuously (`watch`, `serve`).
//!
//! Sources send scans into one channel; one loop owns the ledger and the API client, records
//! each scan (one transaction), and drains the outbox. Sources never touch the ledger's writer
//! and the notifier never touches a source.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::info;

use std::net::SocketAddr;

use crate::app::cluster::{Cluster, LeaseEvent};
use crate::app::pipeline::{self, DeliveryError, Reporter, Scan};

use crate::app::serve::{self, token};
use crate::app::settings::{ConfigError, Settings};
use crate::app::Failure;
use crate::ledger::{Ledger, LedgerError, StateAt, OUTBOX_LEASE};
use crate::monai::Client;
use crate::source::{self, LiveCtx, Source};

mod running;
mod store;
use running::Running;
use store::Store;

pub use crate::util::Metrics;

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

/// What a live run shares with the outside: its metrics, extra inputs (the hook endpoint's
/// scans and deletion events), and, when it shares the ledger, its leases.
#[derive(Default)]
pub struct LiveIo {
    pub metrics: Arc<Metrics>,
    pub scans: Option<mpsc::Receiver<Scan>>,
    /// Scans that already waited for more work (the hook's debounced stored series): what they
    /// bring is delivered at once, unless a delivery is already scheduled.
    pub settled: Option<mpsc::Receiver<Scan>>,
    pub removals: Option<mpsc::Receiver<Vec<String>>>,
    /// Several processes share the ledger: sources run while their lease is held, the outbox
    /// is delivered while its lease is held.
    pub cluster: Option<Cluster>,
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
        cluster,
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
    let mut running = Running::new(sources, ctx, tx);
    let (mut cluster, mut lease_events) = match cluster {
        Some(mut c) => {
            ledger.fence_with(c.fences.clone());
            let events = std::mem::replace(&mut c.events, mpsc::unbounded_channel().1);
            (Some(c), Some(events))
        }
        None => {
            running.start_all();
            (None, None)
        }
    };
    let fences = cluster.as_ref().map(|c| c.fences.clone());
    let may_deliver = || {
        fences
            .as_ref()
            .is_none_or(|f| f.get(OUTBOX_LEASE).is_some())
    };
    let mut extra = extra;
    let mut settled = settled;
    let mut removals = removals;
    let mut reporter = Reporter::default();
    let mut api = source::Health::new("MONAI API");
    let mut store = Store::default();
    let mut next_delivery = Instant::now();
    // armed: a delivery is scheduled for the work waiting now
    let mut armed = false;
    let mut depth = store
        .ok(ledger.outbox_depth(Some(&opts.dataset)))?
        .unwrap_or(0);
    metrics.outbox_depth.store(depth as u64, Ordering::Relaxed);
    // the last success survives a restart: /healthz and /metrics read it from the ledger
    if let Some(t) = store.ok(ledger.last_notify())?.flatten() {
        metrics
            .last_success
            .store(t.max(0) as u64, Ordering::Relaxed);
    }
    client.set_cancel(shutdown.clone());
    loop {
        let deliver_at = tokio::time::Instant::from_std(next_delivery);
        let retry_at = tokio::time::Instant::from_std(store.retry_at);
        let mut linger = DELIVERY_LINGER;
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(ev) = recv_unbounded(&mut lease_events) => match ev {
                LeaseEvent::Gained(name) if name == OUTBOX_LEASE => {
                    next_delivery = Instant::now();
                    armed = true;
                }
                LeaseEvent::Gained(name) => {
                    if let Some(src) = name.strip_prefix("source:") {
                        running.start(src);
                    }
                }
                LeaseEvent::Lost(name) => {
                    if let Some(src) = name.strip_prefix("source:") {
                        running.stop(src);
                    }
                }
            },
            Some(scan) = rx.recv() => {
                store.record(&mut ledger, scan, DELIVERY_LINGER, &opts.dataset, &mut reporter, &metrics)?;
            }
            Some(scan) = recv_opt(&mut extra) => {
                store.record(&mut ledger, scan, DELIVERY_LINGER, &opts.dataset, &mut reporter, &metrics)?;
            }
            Some(scan) = recv_opt(&mut settled) => {
                store.record(&mut ledger, scan, Duration::ZERO, &opts.dataset, &mut reporter, &metrics)?;
                linger = Duration::ZERO;
            }
            Some(ids) = recv_opt(&mut removals) => {
                store.remove(&mut ledger, ids, &opts.dataset)?;
            }
            // a shared ledger changes under this process: every poll, the outbox's holder looks
            // for work others queued, and every process reads the depth and the last notify
            // that /healthz and /metrics show
            _ = tokio::time::sleep(opts.poll), if cluster.is_some() => {
                if let Some(t) = store.ok(ledger.last_notify())?.flatten() {
                    metrics.last_success.store(t.max(0) as u64, Ordering::Relaxed);
                }
            }
            _ = tokio::time::sleep_until(retry_at), if store.waiting() => {
                if let Some(l) = store.retry(&mut ledger, &opts.dataset, &mut reporter, &metrics)? {
                    linger = l;
                }
            }
            _ = tokio::time::sleep_until(deliver_at), if depth > 0 && may_deliver() => {
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
                    Err(DeliveryError::Ledger(e)) => {
                        store.ok::<()>(Err(e))?;
                        next_delivery = Instant::now() + store.backoff();
                        armed = true;
                    }
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
        if let Some(d) = store.ok(ledger.outbox_depth(Some(&opts.dataset)))? {
            depth = d;
        }
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
    running.stop_all(Duration::from_secs(3)).await;
    drop(running);
    while let Ok(scan) = rx.try_recv() {
        store.record(
            &mut ledger,
            scan,
            Duration::ZERO,
            &opts.dataset,
            &mut reporter,
            &metrics,
        )?;
    }
    if let Some(c) = cluster.take() {
        // every lease handed over at once: the others take over without waiting for expiry
        tokio::task::spawn_blocking(move || c.stop())
            .await
            .map_err(|e| LedgerError::Unreachable {
                path: ledger.path().to_string(),
                why: e.to_string(),
            })?;
    }
    Ok(())
}

async fn recv_unbounded<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
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
    // a ledger in PostgreSQL may be shared: this process works what its leases give it
    let metrics = Arc::new(Metrics::default());
    let cluster = match &s.state {
        StateAt::Postgres(_) => Some(Cluster::start(
            &s.state,
            sources.iter().map(Source::name).collect(),
            s.lease,
            metrics.clone(),
        )?),
        StateAt::File(_) => None,
    };
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
        let mut io = LiveIo {
            metrics,
            cluster,
            ..Default::default()
        };
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
            // a shared ledger: calls go through it to the holder of the hooks' source
            let hook_source = sources
                .iter()
                .find(|x| matches!(x, Source::Orthanc(_)))
                .or_else(|| sources.iter().find(|x| matches!(x, Source::DicomWeb(_))))
                .map(Source::name);
            let ev_rx = match &io.cluster {
                Some(c) => {
                    let (to_worker, from_relay) = mpsc::channel(1024);
                    serve::Relay {
                        at: state.clone(),
                        holder: c.holder.clone(),
                        fences: c.fences.clone(),
                        source: hook_source,
                    }
                    .start(ev_rx, to_worker)?;
                    from_relay
                }
                None => ev_rx,
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
                serve::ClWatch::from_settings(s)?,
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
