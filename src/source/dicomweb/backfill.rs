//! One pass over a remote listing: read what is new or changed in chunks, match, gate, and send
//! each chunk to the ledger as a scan; the last scan is the complete listing.

use super::fetch::Fetched;
use super::gate::Decoder;
use super::*;

/// How one pass over a remote listing is recorded.
#[derive(Debug, Clone)]
pub struct Pass {
    /// SEG series per scan sent to the ledger.
    pub chunk: usize,
    /// A complete listing (may remove labels) or a partial one (changes from a feed).
    pub complete: bool,
    /// The source's cursor after this pass, stored with its last scan.
    pub cursor: Option<String>,
}

/// Reads what a remote listing names and sends it as scans, in chunks of `chunk` SEG series, so
/// that a long backfill stopped half way keeps what it did. The last scan carries the cursor
/// and, when `complete`, is the complete listing (it alone may remove labels); it is sent only
/// when every step succeeded.
pub async fn backfill(
    dw: &DicomWeb,
    source: &str,
    listed: Vec<RemoteSeries>,
    known: &Known,
    pass: Pass,
    tx: &mpsc::Sender<Scan>,
) -> Result<(), PacsError> {
    let Pass {
        chunk,
        complete,
        cursor,
    } = pass;
    let mut unchanged = Vec::new();
    let mut to_read = Vec::new();
    for r in listed {
        if crate::model::known::is_unchanged(
            known,
            &r.series,
            r.instances,
            Some(&dw.listed_stamp(&r)),
        ) {
            unchanged.push(r.series);
        } else {
            to_read.push(r);
        }
    }
    if !to_read.is_empty() {
        info!(
            source,
            new_or_changed = to_read.len(),
            unchanged = unchanged.len(),
            "reading SEG headers"
        );
    }
    let bar = progress(to_read.len() as u64);
    let mut all_seen: Vec<String> = Vec::new();
    let mut problems_total: Vec<Problem> = Vec::new();
    // chunks overlap: while one chunk's image series and geometry are asked, the next ones'
    // SEG files are read (most of a chunk's time is waiting on the server); scans still go to
    // the ledger in listing order
    // (futures made first, not in a stream's closure: that keeps the task Send)
    let parts: Vec<_> = to_read
        .chunks(chunk.max(1))
        .map(|part| read_part(dw, source, part, known, bar.as_ref()))
        .collect();
    let mut chunks = stream::iter(parts).buffered(CHUNKS_IN_FLIGHT);
    while let Some(done) = chunks.next().await {
        let (scan, seen, problems) = done?;
        all_seen.extend(seen);
        problems_total.extend(problems);
        if tx.send(scan).await.is_err() {
            return Ok(()); // shutting down
        }
    }
    drop(chunks);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    // the complete listing: everything seen, nothing re-read (only it may remove labels)
    let listing = Listing {
        source: source.to_string(),
        unchanged: unchanged.into_iter().chain(all_seen).collect(),
        problems: problems_total,
        cursor,
        partial: !complete,
        ..Default::default()
    };
    let _ = tx
        .send(Scan {
            listing,
            labels: vec![],
        })
        .await;
    Ok(())
}

/// Chunks of a pass read at once (see [`backfill`]). Three rather than two: at N = 1,000 on
/// Orthanc, a backfill took 0.38-0.43 s instead of 0.49-0.51 s with the gate, 0.26-0.30 s
/// instead of 0.30-0.35 s without; four gave nothing more (an A/B of ten runs each later gave
/// 0.55 s against 0.60 s with the gate, the same without: the gain is small). Each chunk reads
/// `--concurrency` series at once (each at most [`super::fetch::PREFETCH_BUDGET`] of files),
/// and 32 MiB of files wait to be decoded, or one larger series alone
/// ([`super::gate::Decoder`]); a series that waits for room keeps its files meanwhile.
const CHUNKS_IN_FLIGHT: usize = 3;

/// Reads one chunk of a listing: its SEG headers (and, for the gate, files), the image series
/// they name, and the gate's verdicts. Answers the chunk's scan, the series it saw, and what
/// could not be read.
async fn read_part(
    dw: &DicomWeb,
    source: &str,
    part: &[RemoteSeries],
    known: &Known,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<(Scan, Vec<String>, Vec<Problem>), PacsError> {
    let conc = dw.client.options().concurrency.max(1);
    // with the gate on, the files read for the headers are decoded for it as they come (on a
    // thread of its own, while the image series are asked), and dropped
    let keep = dw.validator.is_some();
    let decoding = keep.then(Decoder::start);
    let decoder = decoding.as_ref();
    let results: Vec<(RemoteSeries, Result<SegSeries, String>)> =
        stream::iter(part.iter().cloned())
            .map(|r| async move {
                let h: Result<Fetched, String> = dw.series_header_of(&r, keep).await;
                let h = match h {
                    Ok((s, files)) => {
                        if let (Some(d), Some(f)) = (decoder, files) {
                            d.send(vec![(s.uid().to_string(), f)]).await;
                        }
                        Ok(s)
                    }
                    Err(e) => Err(e),
                };
                (r, h)
            })
            .buffer_unordered(conc)
            .collect()
            .await;
    let mut segs = Vec::new();
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for (r, h) in results {
        if let Some(b) = bar {
            b.inc(1);
        }
        match h {
            Ok(mut s) => {
                s.remote_id = r.remote_id.clone();
                s.remote_stamp = Some(dw.listed_stamp(&r));
                seen.push(s.uid().to_string());
                segs.push(s);
            }
            Err(reason) => {
                warn!(series = %r.series, "cannot read SEG header: {reason}");
                // where WADO-RS has it (listed through Orthanc's REST API, the study is looked
                // up: rare, and it keeps every problem's location one form)
                let location = match dw.study_of(&r).await {
                    Ok(study) => dw.client.url(&series_at(&study, &r.series)),
                    Err(_) => match (&dw.orthanc_rest, &r.remote_id) {
                        (Some(rest), Some(id)) if is_orthanc_id(id) => {
                            rest.url(&Endpoint::at(&["series", id]))
                        }
                        _ => dw.client.url(&series_at(&r.study, &r.series)),
                    },
                };
                problems.push(Problem {
                    path: location,
                    reason,
                });
                // keep it seen: a label we cannot read now is not a label that is gone
                seen.push(r.series.clone());
            }
        }
    }
    // the image series' geometry for the gate, asked beside the index: the series the SEGs
    // reference, with their own study and patient (the gate asks again for any other)
    let images: HashSet<crate::source::orthanc::geometry::ImageRef> = match &dw.validator {
        Some(_) => segs
            .iter()
            .filter_map(|s| {
                let image = s.first.referenced_series.first()?;
                Some((
                    s.first.study.clone(),
                    image.clone(),
                    s.first.patient_id.clone(),
                ))
            })
            .collect(),
        None => HashSet::new(),
    };
    // the instances the SEGs name: an image series is sampled at one of them
    let named: HashSet<String> = match &dw.validator {
        Some(_) => segs
            .iter()
            .flat_map(|s| s.first.source_instances.iter().cloned())
            .collect(),
        None => HashSet::new(),
    };
    let ((index, geometry), hidden) = tokio::join!(
        async {
            // the image files read for the geometry also say the series' study and modality
            let (geometry, known_images) = dw.geometries_first(images, &named).await;
            (dw.resolve_index_from(&segs, known_images).await, geometry)
        },
        dw.hidden_segs(&segs),
    );
    let (index, hidden) = (index?, hidden?);
    let prefetched = match decoding {
        Some(d) => d.finish().await,
        None => Default::default(),
    };
    let gate = dw.validator.as_ref().map(|v| RemoteGate {
        dw,
        v,
        known,
        files: &prefetched,
        geometry: &geometry,
    });
    let gate = crate::rules::pair::Hidden {
        hidden: &hidden,
        gate: &gate,
    };
    let labels = crate::rules::pair::pair(segs, &index, &gate).await;
    let mut listing = Listing::partial(source);
    listing.index = index;
    listing.problems = problems.clone();
    Ok((Scan { listing, labels }, seen, problems))
}

fn progress(n: u64) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if n < 50 || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(n);
    b.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} SEG series ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_message("backfill");
    Some(b)
}
