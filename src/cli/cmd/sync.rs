//! `sync`: shows what `app::sync::run` did (or, with `--dry-run`, the calls it would make).

use std::io::Write;

use serde_json::json;

use crate::app::exit::{self, Failure};
use crate::app::pipeline;
use crate::app::settings::Settings;
use crate::model::LabelStatus;

pub fn sync(s: &Settings, dry_run: bool, json_out: bool) -> Result<(), Failure> {
    if dry_run {
        let mut printer = pipeline::Printer {
            out: std::io::stdout(),
            json: json_out,
            org_url: format!("{}/api/v1/orgs/{}", s.api, s.org),
        };
        let run = crate::app::sync::dry_run(s, &mut printer)?;
        let listed_any = run.listed_any();
        let done = run.delivery.map_err(anyhow::Error::from)?;
        if !json_out && listed_any {
            writeln!(
                printer.out,
                "dry run: {} new changes, {} entries in {} notify call(s) to dataset {}; \
                 nothing written, nothing sent",
                run.report.changes, run.waiting, done.calls, run.dataset
            )
            .map_err(anyhow::Error::from)?;
        }
        return super::source_errors(run.report.source_errors);
    }
    let run = crate::app::sync::run(s)?;
    let st = &run.summary;
    let count = |k: LabelStatus| st.count(k);
    let seg_series: i64 = st.labels_by_status.iter().map(|(_, n)| n).sum();
    let result = &run.delivery;
    let mut out = std::io::stdout().lock();
    if json_out {
        let summary = json!({
            "dataset": run.dataset,
            "sources": run.sources,
            "seg_series": seg_series,
            "ready": count(LabelStatus::Ready),
            "superseded": count(LabelStatus::Superseded),
            "unusable": count(LabelStatus::Unusable),
            "unmatched": count(LabelStatus::Unmatched),
            "invalid": count(LabelStatus::Invalid),
            "unreadable_files": st.problems.len(),
            "changes_queued": run.report.changes,
            "notify_calls": result.as_ref().map(|d| d.calls).unwrap_or(0),
            "entries_sent": result.as_ref().map(|d| d.entries_sent).unwrap_or(0),
            "outbox_remaining": run.remaining,
            "source_errors": run.report.source_errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            "error": result.as_ref().err().map(|e| e.to_string()),
        });
        writeln!(out, "{summary}").map_err(anyhow::Error::from)?;
    } else if run.listed_any() {
        writeln!(
            out,
            "{seg_series} SEG series: {} ready, {} superseded, {} unusable, {} unmatched, {} invalid; {} unreadable",
            count(LabelStatus::Ready),
            count(LabelStatus::Superseded),
            count(LabelStatus::Unusable),
            count(LabelStatus::Unmatched),
            count(LabelStatus::Invalid),
            st.problems.len()
        )
        .map_err(anyhow::Error::from)?;
        for l in &st.attention {
            writeln!(out, "  {} {}: {}", l.status, l.label, l.reason)
                .map_err(anyhow::Error::from)?;
        }
        if let Ok(d) = result {
            writeln!(
                out,
                "{} changes queued; {} entries sent in {} notify call(s); outbox: {}",
                run.report.changes, d.entries_sent, d.calls, run.remaining
            )
            .map_err(anyhow::Error::from)?;
        }
    } else if let Some(d) = result.as_ref().ok().filter(|d| d.calls > 0) {
        // no source could be listed (the error says why); what waited in the outbox was sent
        writeln!(
            out,
            "{} entries from earlier runs sent in {} notify call(s); outbox: {}",
            d.entries_sent, d.calls, run.remaining
        )
        .map_err(anyhow::Error::from)?;
    }
    match run.delivery {
        Ok(_) => super::source_errors(run.report.source_errors),
        Err(e) => Err(delivery_failure(e, run.remaining)),
    }
}

/// How a delivery that stopped is reported: the API's failure (exit 3), or the state file's
/// (exit 4: a disk that filled after the API accepted a batch is not "the API could not be
/// reached", and that batch may be sent again).
fn delivery_failure(e: pipeline::DeliveryError, depth: i64) -> Failure {
    match e {
        pipeline::DeliveryError::Ledger(e) => Failure {
            code: exit::STATE,
            error: anyhow::anyhow!(
                "{e}; what the API accepted could not be recorded, so the next run may send it \
                 again ({depth} entries in the outbox)"
            ),
        },
        e => Failure {
            code: exit::DELIVERY,
            error: anyhow::anyhow!("{e}; {depth} entries stay in the outbox for the next run"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerError;
    use crate::monai::ApiError;
    use std::time::Duration;

    #[test]
    fn a_state_failure_after_delivery_is_not_an_api_failure() {
        let ledger = LedgerError::Locked {
            path: "s.db".into(),
            holder: String::new(),
            waited: Duration::ZERO,
        };
        let f = delivery_failure(pipeline::DeliveryError::Ledger(ledger), 1);
        assert_eq!(f.code, exit::STATE);
        assert!(f.error.to_string().contains("could not be recorded"));
        let f = delivery_failure(pipeline::DeliveryError::Api(ApiError::MissingKey), 1);
        assert_eq!(f.code, exit::DELIVERY);
    }
}
