//! The sources' tasks of a live run: all of them from the start when this process is alone,
//! or, when it shares the ledger, those whose lease it holds, started and stopped as leases
//! come and go.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::app::pipeline::Scan;
use crate::source::{LiveCtx, Source};

struct Task {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

pub(super) struct Running {
    sources: BTreeMap<String, Source>,
    tasks: BTreeMap<String, Task>,
    ctx: LiveCtx,
    tx: mpsc::Sender<Scan>,
}

impl Running {
    pub fn new(sources: Vec<Source>, ctx: LiveCtx, tx: mpsc::Sender<Scan>) -> Running {
        Running {
            sources: sources.into_iter().map(|s| (s.name(), s)).collect(),
            tasks: BTreeMap::new(),
            ctx,
            tx,
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.sources.keys().cloned().collect()
    }

    /// Starts the source `name` (unless running or unknown).
    pub fn start(&mut self, name: &str) {
        let Some(source) = self.sources.get(name) else {
            return;
        };
        if self.tasks.contains_key(name) {
            return;
        }
        info!("watching {name}");
        let (stop, stopped) = watch::channel(false);
        let mut ctx = self.ctx.clone();
        ctx.shutdown = stopped;
        let handle = tokio::spawn(source.clone().run_live(ctx, self.tx.clone()));
        self.tasks.insert(name.to_string(), Task { stop, handle });
    }

    pub fn start_all(&mut self) {
        for name in self.names() {
            self.start(&name);
        }
    }

    /// Stops the source `name` at its next step (what it already sent is still recorded, or
    /// refused by the ledger's fence when the lease is gone).
    pub fn stop(&mut self, name: &str) {
        if let Some(t) = self.tasks.remove(name) {
            info!("no longer watching {name}");
            let _ = t.stop.send(true);
        }
    }

    /// Stops every source and waits for them, up to `wait` in all.
    pub async fn stop_all(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let tasks = std::mem::take(&mut self.tasks);
        for t in tasks.values() {
            let _ = t.stop.send(true);
        }
        for (_, t) in tasks {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, t.handle).await.is_err() {
                warn!(
                    "a source did not stop in time; its unfinished work will be redone on the \
                     next start"
                );
            }
        }
    }
}
