//! A folder watched live: a full scan on start, on every (debounced) change and every
//! reconcile interval; files that could not be read are tried again shortly.

use super::*;

impl FolderSource {
    /// Watches the folder: a full scan on start, on every (debounced) change and every
    /// `reconcile`; files that could not be read are tried again shortly.
    pub async fn run_live(
        self,
        mut ctx: crate::source::LiveCtx,
        tx: tokio::sync::mpsc::Sender<crate::model::Scan>,
    ) {
        use notify_debouncer_mini::notify::{self, EventKind, RecursiveMode, Watcher};
        let name = self.source_name();
        let (ev_tx, mut ev_rx) = tokio::sync::mpsc::channel::<()>(1);
        // Only changes count: the watcher also reports opens and reads (access events), and
        // every scan opens the folder's directories, so each scan used to trigger the next one,
        // every half second for ever (a symbolic link loop made it visible: one warning per
        // scan). Links are not followed by the watcher; files behind them are still read by
        // every scan and the reconcile.
        let watcher = notify::RecommendedWatcher::new(
            move |res: notify::Result<notify::Event>| {
                if res.is_ok_and(|e| !matches!(e.kind, EventKind::Access(_))) {
                    let _ = ev_tx.try_send(());
                }
            },
            notify::Config::default().with_follow_symlinks(false),
        );
        let _watcher = match watcher {
            Ok(mut w) => match w.watch(&self.root, RecursiveMode::Recursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    warn!("{name}: cannot watch for changes ({e}); rescanning every reconcile interval only");
                    None
                }
            },
            Err(e) => {
                warn!("{name}: cannot watch for changes ({e}); rescanning every reconcile interval only");
                None
            }
        };
        let mut health = crate::source::Health::new(&name).counting(ctx.metrics.clone());
        let known = ctx.known.clone();
        loop {
            if *ctx.shutdown.borrow() {
                return;
            }
            let retry = match self.scan(known.as_ref()).await {
                Ok(scan) => {
                    health.ok();
                    // a file still being written, or an upload that failed: look again soon
                    let again = scan.listing.retry_soon;
                    if tx.send(scan).await.is_err() {
                        return;
                    }
                    again.then_some(std::time::Duration::from_secs(2))
                }
                Err(e) => Some(health.fail(&e.to_string())),
            };
            let wait = retry.unwrap_or(ctx.reconcile).min(ctx.reconcile);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                Some(()) = ev_rx.recv() => {
                    // debounce: a copy of many files is one rescan, half a second after it ends
                    loop {
                        tokio::select! {
                            Some(()) = ev_rx.recv() => continue,
                            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => break,
                            _ = ctx.shutdown.changed() => return,
                        }
                    }
                }
                _ = ctx.shutdown.changed() => return,
            }
        }
    }
}
