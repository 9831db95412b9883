//! The counters and gauges of a running pipeline, shared by its tasks and served as `/metrics`;
//! and each source's health, shown on the status page.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// Counters and gauges of a running pipeline (served as `/metrics` by `serve`).
#[derive(Default, Debug)]
pub struct Metrics {
    pub seg_series_seen: AtomicU64,
    pub matched_referenced_series: AtomicU64,
    pub matched_source_instances: AtomicU64,
    pub ready: AtomicU64,
    pub unusable: AtomicU64,
    pub unmatched: AtomicU64,
    pub invalid: AtomicU64,
    pub unreadable: AtomicU64,
    pub notify_ok: AtomicU64,
    pub notify_failed: AtomicU64,
    pub entries_sent: AtomicU64,
    pub outbox_depth: AtomicU64,
    /// Unix seconds of the last confirmed notify (0 = never).
    pub last_success: AtomicU64,
    pub api_down: AtomicU64,
    pub sources_down: AtomicU64,
    pub hooks_received: AtomicU64,
    /// Hook calls refused, by reason (see `app::serve::Refusal`).
    pub hooks_refused_browser: AtomicU64,
    pub hooks_refused_unauthorized: AtomicU64,
    pub hooks_refused_too_large: AtomicU64,
    pub hooks_refused_malformed: AtomicU64,
    /// Each source's health by name, once it has tried a first time (see [`Metrics::source`]).
    sources: Mutex<BTreeMap<String, SourceHealth>>,
    /// With a shared ledger: this process and every lease, as the lease keeper last saw them.
    cluster: Mutex<Option<ClusterView>>,
}

/// Who holds what, when several processes share the ledger (`/healthz`, the status page).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClusterView {
    /// This process.
    pub holder: String,
    /// Whether the shared ledger answered the keeper's last round.
    pub reachable: bool,
    pub leases: Vec<LeaseView>,
}

/// One lease: its holder, its epoch (the fencing token), how long since it was renewed and
/// how long until it expires (negative: expired, free to take).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LeaseView {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
    pub age_s: i64,
    pub expires_in_s: i64,
}

/// Whether a source's last attempt worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    Up,
    Down,
}

/// A source's health as its last attempt left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceHealth {
    pub state: SourceState,
    /// Unix seconds since when it is in `state`.
    pub since: i64,
    /// While down, the last failure's reason (as logged).
    pub reason: Option<String>,
}

impl Metrics {
    /// The lease keeper's last view of the shared ledger.
    pub fn set_cluster(&self, view: ClusterView) {
        *self.cluster.lock().expect("metrics") = Some(view);
    }

    /// Who holds what (None: the ledger is not shared).
    pub fn cluster(&self) -> Option<ClusterView> {
        self.cluster.lock().expect("metrics").clone()
    }

    /// Records a source's attempt: up (`reason` None) or down with `reason`. `since` moves only
    /// when the state changes.
    pub fn source(&self, name: &str, reason: Option<&str>) {
        let state = match reason {
            None => SourceState::Up,
            Some(_) => SourceState::Down,
        };
        let mut all = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let since = match all.get(name) {
            Some(h) if h.state == state => h.since,
            _ => super::time::now(),
        };
        all.insert(
            name.to_string(),
            SourceHealth {
                state,
                since,
                reason: reason.map(str::to_string),
            },
        );
    }

    /// The health of the source `name`; None before its first attempt.
    pub fn source_health(&self, name: &str) -> Option<SourceHealth> {
        let all = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        all.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_keeps_its_since_until_its_state_changes() {
        let m = Metrics::default();
        assert_eq!(m.source_health("folder:/x"), None);
        m.source("folder:/x", Some("unreadable"));
        let down = m.source_health("folder:/x").unwrap();
        assert_eq!(down.state, SourceState::Down);
        assert_eq!(down.reason.as_deref(), Some("unreadable"));
        m.source("folder:/x", Some("still unreadable"));
        let again = m.source_health("folder:/x").unwrap();
        assert_eq!(again.since, down.since);
        assert_eq!(again.reason.as_deref(), Some("still unreadable"));
        m.source("folder:/x", None);
        let up = m.source_health("folder:/x").unwrap();
        assert_eq!((up.state, up.reason), (SourceState::Up, None));
        assert_eq!(m.source_health("orthanc:http://pacs"), None);
    }
}
