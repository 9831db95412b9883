//! `/metrics`: the pipeline's counters and gauges as Prometheus text.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::util::Metrics;

/// Prometheus text exposition of the pipeline's counters and gauges.
pub fn render_metrics(m: &Metrics) -> String {
    let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let last = c(&m.last_success);
    let since = if last == 0 {
        -1
    } else {
        crate::ledger::now() - last as i64
    };
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in lines {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let one = |v: u64| vec![(String::new(), v.to_string())];
    metric(
        "segbridge_seg_series_seen_total",
        "counter",
        "SEG series read from sources",
        one(c(&m.seg_series_seen)),
    );
    metric(
        "segbridge_matched_total",
        "counter",
        "SEG series matched, by rule",
        vec![
            (
                "{rule=\"referenced-series\"}".into(),
                c(&m.matched_referenced_series).to_string(),
            ),
            (
                "{rule=\"source-instances\"}".into(),
                c(&m.matched_source_instances).to_string(),
            ),
        ],
    );
    metric(
        "segbridge_ready_total",
        "counter",
        "Labels found ready to notify",
        one(c(&m.ready)),
    );
    metric(
        "segbridge_unusable_total",
        "counter",
        "Labels the training server will never pair",
        one(c(&m.unusable)),
    );
    metric(
        "segbridge_unmatched_total",
        "counter",
        "Labels whose image series is not present (yet)",
        one(c(&m.unmatched)),
    );
    metric(
        "segbridge_unreadable_total",
        "counter",
        "Files or series that could not be read",
        one(c(&m.unreadable)),
    );
    metric(
        "segbridge_notify_calls_total",
        "counter",
        "Notify calls, by result",
        vec![
            ("{result=\"ok\"}".into(), c(&m.notify_ok).to_string()),
            (
                "{result=\"failed\"}".into(),
                c(&m.notify_failed).to_string(),
            ),
        ],
    );
    metric(
        "segbridge_entries_sent_total",
        "counter",
        "Notify entries confirmed by the API",
        one(c(&m.entries_sent)),
    );
    metric(
        "segbridge_hooks_received_total",
        "counter",
        "Authorized hook calls received",
        one(c(&m.hooks_received)),
    );
    metric(
        "segbridge_hooks_refused_total",
        "counter",
        "Hook calls refused, by reason",
        super::Refusal::ALL
            .iter()
            .map(|r| {
                (
                    format!("{{reason=\"{}\"}}", r.as_str()),
                    c(r.counter(m)).to_string(),
                )
            })
            .collect(),
    );
    metric(
        "segbridge_outbox_depth",
        "gauge",
        "Notify entries waiting for the API",
        one(c(&m.outbox_depth)),
    );
    metric(
        "segbridge_seconds_since_last_success",
        "gauge",
        "Seconds since the last confirmed notify (-1: never)",
        vec![(String::new(), since.to_string())],
    );
    metric(
        "segbridge_api_down",
        "gauge",
        "1 while the MONAI API is unreachable",
        one(c(&m.api_down)),
    );
    metric(
        "segbridge_sources_down",
        "gauge",
        "Sources currently unreachable",
        one(c(&m.sources_down)),
    );
    out
}

pub(super) async fn metrics_text(State(st): State<AppState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        render_metrics(&st.metrics),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_is_prometheus() {
        let m = Metrics::default();
        m.entries_sent.store(3, Ordering::Relaxed);
        let t = render_metrics(&m);
        assert!(t.contains(
            "# TYPE segbridge_entries_sent_total counter\nsegbridge_entries_sent_total 3\n"
        ));
        assert!(t.contains("segbridge_matched_total{rule=\"referenced-series\"} 0"));
        assert!(t.contains("segbridge_seconds_since_last_success -1"));
        m.hooks_refused_unauthorized.store(2, Ordering::Relaxed);
        let t = render_metrics(&m);
        assert!(t.contains("segbridge_hooks_refused_total{reason=\"unauthorized\"} 2\n"));
        assert!(t.contains("segbridge_hooks_refused_total{reason=\"malformed\"} 0\n"));
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(line.split(' ').count(), 2, "{line}");
        }
    }
}
