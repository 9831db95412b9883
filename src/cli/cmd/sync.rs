//! `sync`: record what changed since the last run and notify the API once (or, with
//! `--dry-run`, print the calls it would make).

use std::io::Write;

use serde_json::json;

use crate::app::exit::{self, Failure};
use crate::app::pipeline;
use crate::app::settings::Settings;
use crate::ledger::Ledger;
use crate::model::LabelStatus;
use crate::monai::Client;
use crate::source::Source;

pub fn sync(s: &Settings, dry_run: bool, json_out: bool) -> Result<(), Failure> {
    let rt = crate::app::runtime()?;
    let validator = rt.block_on(s.validator())?;
    let sources = s.sources_with(validator)?;
    let dataset = s.require_dataset()?.to_string();
    if !dry_run {
        s.require_key()?;
    }
    let mut reporter = pipeline::Reporter::default();
    // a dry run records into a throw-away copy of the state, then shows what it would send
    let mut ledger = if dry_run {
        Ledger::snapshot(&s.state)?
    } else {
        Ledger::open(&s.state, s.lock_wait)?
    };
    let report = rt.block_on(crate::app::sync::collect_once(
        &mut ledger,
        &sources,
        &dataset,
        s.pacs.chunk,
        &mut reporter,
    ))?;
    if dry_run {
        // the same delivery into a printer; the snapshot absorbs what it "confirms"
        let entries = ledger.outbox_depth(Some(&dataset))?;
        let mut printer = pipeline::Printer {
            out: std::io::stdout(),
            json: json_out,
            org_url: format!("{}/api/v1/orgs/{}", s.api, s.org),
        };
        let done = rt.block_on(pipeline::deliver(
            &mut ledger,
            &mut printer,
            &dataset,
            s.batch,
        ));
        let done = done.map_err(anyhow::Error::from)?;
        if !json_out {
            writeln!(
                printer.out,
                "dry run: {} new changes, {entries} entries in {} notify call(s) to dataset \
                 {dataset}; nothing written, nothing sent",
                report.changes, done.calls
            )
            .map_err(anyhow::Error::from)?;
        }
        return super::source_errors(report.source_errors);
    }
    let result = rt.block_on(async {
        let mut client = Client::new(s.api_config())?;
        pipeline::deliver(&mut ledger, &mut client, &dataset, s.batch).await
    });
    let depth = ledger.outbox_depth(Some(&dataset))?;
    let st = ledger.summary()?;
    let count = |k: LabelStatus| st.count(k);
    let summary = json!({
        "dataset": dataset,
        "sources": sources.iter().map(Source::name).collect::<Vec<_>>(),
        "seg_series": st.labels_by_status.iter().map(|(_, n)| n).sum::<i64>(),
        "ready": count(LabelStatus::Ready),
        "superseded": count(LabelStatus::Superseded),
        "unusable": count(LabelStatus::Unusable),
        "unmatched": count(LabelStatus::Unmatched),
        "invalid": count(LabelStatus::Invalid),
        "unreadable_files": st.problems.len(),
        "changes_queued": report.changes,
        "notify_calls": result.as_ref().map(|d| d.calls).unwrap_or(0),
        "entries_sent": result.as_ref().map(|d| d.entries_sent).unwrap_or(0),
        "outbox_remaining": depth,
        "source_errors": report.source_errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "error": result.as_ref().err().map(|e| e.to_string()),
    });
    let mut out = std::io::stdout().lock();
    if json_out {
        writeln!(out, "{summary}").map_err(anyhow::Error::from)?;
    } else {
        writeln!(
            out,
            "{} SEG series: {} ready, {} superseded, {} unusable, {} unmatched, {} invalid; {} unreadable",
            summary["seg_series"],
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
        if let Ok(d) = &result {
            writeln!(
                out,
                "{} changes queued; {} entries sent in {} notify call(s); outbox: {}",
                report.changes, d.entries_sent, d.calls, depth
            )
            .map_err(anyhow::Error::from)?;
        }
    }
    match result {
        Ok(_) => super::source_errors(report.source_errors),
        Err(e) => Err(delivery_failure(e, depth)),
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
