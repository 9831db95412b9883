//! Several segbridge processes sharing one PostgreSQL ledger: which of them works which source,
//! and which one delivers the outbox.
//!
//! A keeper thread, on a connection of its own, says every `ttl / 3` that this process is alive
//! (its heartbeat), renews the leases it holds, and takes or hands over leases so that the
//! sources are shared out evenly among the processes alive: with S sources and N processes each
//! holds at most ⌈S / N⌉. The outbox's lease goes to whichever process takes it first. What it
//! gains and loses it tells the live loop, which starts and stops the sources' tasks; the
//! ledger's writes are fenced by the same leases (see `ledger::leases`), so a process that
//! lost a lease cannot record or confirm anything under it even before it hears so.
//!
//! The keeper runs on its own thread and connection so that a slow delivery never delays a
//! renewal. When PostgreSQL cannot be reached it says so once, keeps trying, and once `ttl` has
//! passed since its last renewal counts its leases as lost (another process may hold them by
//! then); when PostgreSQL is back it takes its share again, at new epochs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::ledger::{source_lease, Fence, Fences, Ledger, LedgerError, StateAt, OUTBOX_LEASE};
use crate::util::metrics::{ClusterView, LeaseView};
use crate::util::Metrics;

/// What the keeper tells the live loop: a lease (by name) gained or lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    Gained(String),
    Lost(String),
}

/// The leases of one process sharing the ledger.
pub struct Cluster {
    /// Who this process is in the `leases` and `members` tables: host, pid and a random part.
    pub holder: String,
    pub fences: Arc<Fences>,
    pub events: mpsc::UnboundedReceiver<LeaseEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// This process's name among the others: `host:pid:random`.
fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}:{}:{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

struct Keeper {
    ledger: Ledger,
    holder: String,
    sources: Vec<String>,
    ttl: Duration,
    fences: Arc<Fences>,
    tell: mpsc::UnboundedSender<LeaseEvent>,
    metrics: Arc<Metrics>,
}

impl Cluster {
    /// Starts keeping leases for `sources` (by name) on the ledger at `at`.
    pub fn start(
        at: &StateAt,
        sources: Vec<String>,
        ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Cluster, LedgerError> {
        let ledger = Ledger::open(at, Duration::ZERO)?;
        let holder = holder_name();
        let fences = Arc::new(Fences::default());
        let (tell, events) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut keeper = Keeper {
            ledger,
            holder: holder.clone(),
            sources,
            ttl,
            fences: fences.clone(),
            tell,
            metrics,
        };
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("segbridge-leases".into())
            .spawn(move || keeper.run(&stopping))
            .map_err(|e| LedgerError::Unreachable {
                path: at.shown(),
                why: format!("cannot start the lease keeper: {e}"),
            })?;
        info!(
            "sharing {} with other segbridge processes as {holder}: leases of {ttl:?}",
            at.shown()
        );
        Ok(Cluster {
            holder,
            fences,
            events,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops renewing, hands every lease over at once and leaves (call after the sources
    /// stopped).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Keeper {
    fn run(&mut self, stop: &AtomicBool) {
        let tick = (self.ttl / 3).max(Duration::from_millis(100));
        let mut last_ok = Instant::now();
        let mut down: Option<Instant> = None;
        let mut next_cleanup = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            match self.step() {
                Ok(()) => {
                    last_ok = Instant::now();
                    if Instant::now() >= next_cleanup {
                        let _ = self.ledger.forget_gone_members();
                        next_cleanup = Instant::now() + Duration::from_secs(300);
                    }
                    if let Some(since) = down.take() {
                        info!(
                            "PostgreSQL is reachable again, after {:.0?}",
                            since.elapsed()
                        );
                    }
                }
                Err(e) => {
                    let mut view = self.metrics.cluster().unwrap_or_default();
                    view.reachable = false;
                    self.metrics.set_cluster(view);
                    if down.is_none() {
                        warn!("leases: {e}; trying again every {tick:?}");
                        down = Some(Instant::now());
                    }
                    if last_ok.elapsed() >= self.ttl && !self.fences.held().is_empty() {
                        warn!(
                            "leases: not renewed for {:?}, so they have expired: stopping the \
                             work under them until PostgreSQL is back",
                            self.ttl
                        );
                        for f in self.fences.held() {
                            self.lose(&f);
                        }
                    }
                }
            }
            let until = Instant::now() + tick;
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50).min(tick));
            }
        }
        for f in self.fences.held() {
            self.lose(&f);
            let _ = self.ledger.release(&f);
        }
        let _ = self.ledger.leave(&self.holder);
    }

    fn lose(&self, f: &Fence) {
        self.fences.remove(&f.name);
        let _ = self.tell.send(LeaseEvent::Lost(f.name.clone()));
    }

    fn gain(&self, f: Fence) {
        info!("holding {} (epoch {})", f.name, f.epoch);
        let name = f.name.clone();
        self.fences.set(f);
        let _ = self.tell.send(LeaseEvent::Gained(name));
    }

    /// One round: heartbeat, renewals, then take or hand over to reach this process's share.
    fn step(&mut self) -> Result<(), LedgerError> {
        let alive = self.ledger.heartbeat(&self.holder, self.ttl)?.max(1) as usize;
        for f in self.fences.held() {
            if !self.ledger.renew(&f, self.ttl)? {
                warn!(
                    "lost lease {} (epoch {}): another segbridge process holds it now; \
                     stopping that work",
                    f.name, f.epoch
                );
                self.lose(&f);
            }
        }
        let wanted: Vec<String> = self.sources.iter().map(|s| source_lease(s)).collect();
        let share = wanted.len().div_ceil(alive);
        let mut held: Vec<Fence> = self
            .fences
            .held()
            .into_iter()
            .filter(|f| wanted.contains(&f.name))
            .collect();
        if held.len() > share {
            for f in held.split_off(share) {
                info!(
                    "handing {} over: {alive} processes share {} sources",
                    f.name,
                    wanted.len()
                );
                self.lose(&f);
                self.ledger.release(&f)?;
            }
        } else if held.len() < share {
            // processes starting together try the sources in different orders
            let start = self.holder.bytes().map(usize::from).sum::<usize>() % wanted.len().max(1);
            for i in 0..wanted.len() {
                let name = &wanted[(start + i) % wanted.len()];
                if held.len() >= share {
                    break;
                }
                if self.fences.get(name).is_some() {
                    continue;
                }
                if let Some(f) = self.ledger.acquire(name, &self.holder, self.ttl)? {
                    held.push(f.clone());
                    self.gain(f);
                }
            }
        }
        if self.fences.get(OUTBOX_LEASE).is_none() {
            if let Some(f) = self.ledger.acquire(OUTBOX_LEASE, &self.holder, self.ttl)? {
                self.gain(f);
            }
        }
        let leases = self.ledger.leases()?;
        self.metrics.set_cluster(ClusterView {
            holder: self.holder.clone(),
            reachable: true,
            leases: leases
                .into_iter()
                .map(|l| LeaseView {
                    name: l.name,
                    holder: l.holder,
                    epoch: l.epoch,
                    age_s: l.age_s,
                    expires_in_s: l.expires_in_s,
                })
                .collect(),
        });
        Ok(())
    }
}

/// A one-shot run (`sync`) on a shared ledger: it holds the leases of its sources and of the
/// outbox for the whole run, renewed on a thread of its own, so that it never races a `watch`
/// process for them; they are handed back at once when it ends.
pub struct Claim {
    pub fences: Arc<Fences>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Claim {
    /// Takes every lease of `sources` and the outbox, waiting up to `wait` for those another
    /// process holds; fails (releasing what it took) naming the holder when one stays held.
    pub fn all(
        at: &StateAt,
        sources: &[String],
        ttl: Duration,
        wait: Duration,
    ) -> Result<Claim, LedgerError> {
        let mut ledger = Ledger::open(at, Duration::ZERO)?;
        let holder = holder_name();
        let mut names: Vec<String> = sources.iter().map(|s| source_lease(s)).collect();
        names.push(OUTBOX_LEASE.to_string());
        let fences = Arc::new(Fences::default());
        let start = Instant::now();
        loop {
            for name in &names {
                if fences.get(name).is_none() {
                    if let Some(f) = ledger.acquire(name, &holder, ttl)? {
                        fences.set(f);
                    }
                }
            }
            let missing: Vec<&String> = names.iter().filter(|n| fences.get(n).is_none()).collect();
            let Some(first) = missing.first() else { break };
            if start.elapsed() >= wait {
                let by = ledger
                    .leases()?
                    .into_iter()
                    .find(|l| &&l.name == first)
                    .map(|l| l.holder)
                    .unwrap_or_else(|| "another process".into());
                for f in fences.held() {
                    let _ = ledger.release(&f);
                }
                return Err(LedgerError::LeaseHeld {
                    path: at.shown(),
                    lease: first.to_string(),
                    holder: by,
                    waited: wait,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (stopping, held) = (stop.clone(), fences.clone());
        let thread = std::thread::Builder::new()
            .name("segbridge-claim".into())
            .spawn(move || {
                let tick = (ttl / 3).max(Duration::from_millis(100));
                let mut next = Instant::now() + tick;
                while !stopping.load(Ordering::SeqCst) {
                    if Instant::now() >= next {
                        for f in held.held() {
                            match ledger.renew(&f, ttl) {
                                Ok(true) => {}
                                Ok(false) => {
                                    warn!(
                                        "lost lease {} (epoch {}) during the run",
                                        f.name, f.epoch
                                    );
                                    held.remove(&f.name);
                                }
                                Err(e) => debug!("renewing {}: {e}", f.name),
                            }
                        }
                        next = Instant::now() + tick;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                for f in held.held() {
                    let _ = ledger.release(&f);
                }
            })
            .map_err(|e| LedgerError::Unreachable {
                path: at.shown(),
                why: format!("cannot start the lease keeper: {e}"),
            })?;
        Ok(Claim {
            fences,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
