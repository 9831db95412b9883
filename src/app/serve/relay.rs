//! Hook calls when several processes share the ledger: the process that receives a call may
//! not hold the source it is about. So every call goes through the database: a relay thread
//! keeps the calls its endpoint received (`hook_events`), and takes the kept calls (any
//! process's) while it holds the lease of the source the hooks are about, handing them to its
//! own hook worker. While the database cannot be reached, calls are handed to the worker
//! directly when this process holds that lease, else kept in memory (bounded) and sent when it
//! is back; beyond that bound they are dropped with a warning (the changes feed and the
//! reconcile catch up, as for any lost hook call).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::HookEvent;
use crate::ledger::{source_lease, Fences, Ledger, LedgerError, StateAt, HOOK_BATCH};

/// Calls kept in memory at most while the database cannot be reached.
const MAX_WAITING: usize = 10 * HOOK_BATCH;

/// How often kept calls are looked for.
const ROUND: Duration = Duration::from_millis(200);

pub struct Relay {
    pub at: StateAt,
    pub holder: String,
    pub fences: Arc<Fences>,
    /// The source the hooks are about (the hook worker's), by name.
    pub source: Option<String>,
}

impl Relay {
    /// Runs on its own thread until the endpoint's channel closes.
    pub fn start(
        self,
        from_endpoint: mpsc::Receiver<HookEvent>,
        to_worker: mpsc::Sender<HookEvent>,
    ) -> Result<(), LedgerError> {
        let mut ledger = Ledger::open(&self.at, Duration::ZERO)?;
        ledger.fence_with(self.fences.clone());
        std::thread::Builder::new()
            .name("segbridge-hook-relay".into())
            .spawn(move || self.run(ledger, from_endpoint, to_worker))
            .map(|_| ())
            .map_err(|e| LedgerError::Unreachable {
                path: String::new(),
                why: format!("cannot start the hook relay: {e}"),
            })
    }

    fn holds_source(&self) -> bool {
        self.source
            .as_deref()
            .is_some_and(|s| self.fences.get(&source_lease(s)).is_some())
    }

    fn run(
        self,
        mut ledger: Ledger,
        mut from_endpoint: mpsc::Receiver<HookEvent>,
        to_worker: mpsc::Sender<HookEvent>,
    ) {
        let mut waiting: Vec<HookEvent> = Vec::new();
        let mut down = false;
        loop {
            let mut closed = false;
            loop {
                match from_endpoint.try_recv() {
                    Ok(ev) => waiting.push(ev),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if !waiting.is_empty() {
                let json: Vec<String> = waiting
                    .iter()
                    .filter_map(|e| serde_json::to_string(e).ok())
                    .collect();
                match ledger.keep_hooks(&self.holder, &json) {
                    Ok(()) => {
                        waiting.clear();
                        down = false;
                    }
                    Err(e) => {
                        if !down {
                            debug!("hook calls not kept in the ledger: {e}");
                            down = true;
                        }
                        if self.holds_source() {
                            for ev in waiting.drain(..) {
                                let _ = to_worker.blocking_send(ev);
                            }
                        } else if waiting.len() > MAX_WAITING {
                            let n = waiting.len() - MAX_WAITING;
                            waiting.drain(..n);
                            warn!(
                                "{n} hook call(s) dropped while the ledger cannot be reached; \
                                 the changes feed and the reconcile will catch up"
                            );
                        }
                    }
                }
            }
            if let Some(source) = &self.source {
                match ledger.take_hooks(source) {
                    Ok(events) => {
                        for e in events {
                            match serde_json::from_str::<HookEvent>(&e) {
                                Ok(ev) if ev.is_valid() => {
                                    let _ = to_worker.blocking_send(ev);
                                }
                                _ => warn!("a kept hook call is not one segbridge keeps: ignored"),
                            }
                        }
                    }
                    Err(e) => debug!("hook calls not taken: {e}"),
                }
            }
            if closed {
                return;
            }
            std::thread::sleep(ROUND);
        }
    }
}
