//! How a scan is shown to a person: a table with the problems below it, or JSON lines.
//! `scan` and the demo print the same thing.

use std::io::Write;

use serde_json::json;

use crate::app::pipeline::{LabelLine, Scan};
use crate::dicom::MatchOutcome;

/// Prints a scan: JSON lines, or a table with the problems below it.
pub fn print_scan(scan: &Scan, json_out: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json_out {
        for l in &scan.labels {
            serde_json::to_writer(&mut out, &LabelLine::of(l))?;
            writeln!(out)?;
        }
        for p in &scan.listing.problems {
            serde_json::to_writer(
                &mut out,
                &json!({"path": p.path, "status": "unreadable", "reason": p.reason}),
            )?;
            writeln!(out)?;
        }
        return Ok(());
    }
    let files = if scan.listing.files_seen > 0 {
        format!("{} files, ", scan.listing.files_seen)
    } else {
        String::new()
    };
    writeln!(
        out,
        "{}: {files}{} image series, {} SEG series",
        scan.listing.source,
        scan.listing.index.series_count(),
        scan.labels.len()
    )?;
    if !scan.labels.is_empty() {
        writeln!(
            out,
            "\n{:<11} {:<18} {:<44} {:<44} ",
            "STATUS", "MATCH", "LABEL (SEG SERIES)", "IMAGE SERIES"
        )?;
        for l in &scan.labels {
            writeln!(
                out,
                "{:<11} {:<18} {:<44} {:<44}",
                l.outcome.status(),
                l.rule.as_str(),
                l.seg.uid(),
                l.outcome.image().unwrap_or("-"),
            )?;
            writeln!(
                out,
                "{:<11} from {}",
                "",
                l.seg.locations.first().map(String::as_str).unwrap_or("")
            )?;
            if !matches!(l.outcome, MatchOutcome::Ready { .. }) {
                writeln!(out, "{:<11} why: {}", "", l.outcome.reason())?;
            }
            if let Some(q) = &l.quality {
                let segs: Vec<String> = q
                    .segments
                    .iter()
                    .map(|s| format!("{} '{}' {} voxels", s.number, s.label, s.voxels))
                    .collect();
                writeln!(
                    out,
                    "{:<11} {} frames; segments: {}",
                    "",
                    q.frames,
                    segs.join(", ")
                )?;
            }
            for w in l
                .seg
                .warnings
                .iter()
                .chain(l.quality.iter().flat_map(|q| q.warnings.iter()))
            {
                writeln!(out, "{:<11} note: {w}", "")?;
            }
        }
    }
    if !scan.listing.problems.is_empty() {
        writeln!(out, "\nskipped files:")?;
        for p in &scan.listing.problems {
            let safe = |t: &str| crate::util::logsafe::escape_controls(t, false);
            writeln!(out, "  {}: {}", safe(&p.path), safe(&p.reason))?;
        }
    }
    Ok(())
}
