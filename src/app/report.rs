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
    // no count line for sources that could not be listed: theirs would be zeros, not counts
    if !scan.listing.source.is_empty() {
        let files = if scan.listing.files_seen > 0 {
            format!("{} files, ", scan.listing.files_seen)
        } else {
            String::new()
        };
        writeln!(
            out,
            "{}: {files}{} SEG series matched to {} image series",
            scan.listing.source,
            scan.labels.len(),
            matched_images(scan)
        )?;
    }
    if !scan.labels.is_empty() {
        // columns as wide as their widest value: UIDs run from a few characters to 64
        let label_w = width(
            "LABEL (SEG SERIES)",
            scan.labels.iter().map(|l| l.seg.uid()),
        );
        writeln!(
            out,
            "\n{:<11} {:<18} {:<label_w$} IMAGE SERIES",
            "STATUS", "MATCH", "LABEL (SEG SERIES)"
        )?;
        for l in &scan.labels {
            writeln!(
                out,
                "{:<11} {:<18} {:<label_w$} {}",
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

/// The image series the labels are matched to (by either rule, whatever their status): the
/// same count for every kind of source. (A folder's index holds every image series it read, a
/// PACS's only those the labels named.)
fn matched_images(scan: &Scan) -> usize {
    let images: std::collections::HashSet<&str> = scan
        .labels
        .iter()
        .filter_map(|l| l.outcome.image())
        .collect();
    images.len()
}

/// The width of a column: its header's or its widest value's.
fn width<'a>(header: &str, values: impl Iterator<Item = &'a str>) -> usize {
    values
        .map(str::len)
        .chain([header.len()])
        .max()
        .unwrap_or(0)
}
