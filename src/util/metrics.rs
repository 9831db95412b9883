//! The counters and gauges of a running pipeline, shared by its tasks and served as `/metrics`.

use std::sync::atomic::AtomicU64;

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
}
