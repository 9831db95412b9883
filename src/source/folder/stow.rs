//! `--stow`: SEGs found in a folder are matched against the DICOMweb server's images and
//! uploaded with STOW-RS before they are notified.

use super::*;

/// With `--stow`, a label is matched against the images on the DICOMweb server it is uploaded
/// to, not against the folder: that is where the training server looks. The pairing (match,
/// the local quality gate, the newest-label rule) is [`crate::rules::pair`]'s.
pub(super) async fn match_on_server(
    scan: &mut crate::model::Scan,
    segs: Vec<crate::model::SegSeries>,
    dw: &crate::source::dicomweb::DicomWeb,
    gate: &Option<LocalGate<'_>>,
) {
    use crate::model::MatchOutcome;
    match dw.resolve_index(&segs).await {
        Ok(remote) => {
            let local = &scan.listing.index;
            // the local gate reads files: off the async workers
            let mut labels =
                tokio::task::block_in_place(|| crate::rules::pair::pair_now(segs, &remote, gate));
            for l in labels.iter_mut() {
                let here = l
                    .seg
                    .first
                    .referenced_series
                    .first()
                    .filter(|r| local.has_series(r))
                    .cloned();
                if let (MatchOutcome::Unmatched { .. }, Some(image)) = (&l.outcome, here) {
                    l.outcome = MatchOutcome::Unmatched {
                        reason: format!(
                            "image series {image} is in the folder but not on the DICOMweb server {}; \
                             the training server can only train on it there",
                            dw.client.base
                        ),
                    };
                }
            }
            scan.labels = labels;
        }
        Err(e) => {
            scan.listing.retry_soon = true;
            let reason = format!(
                "not notified yet: cannot check the images on the STOW-RS server {} ({e}); \
                 retried on the next scan",
                dw.client.base
            );
            scan.labels = segs
                .into_iter()
                .map(|seg| crate::dicom::MatchedLabel {
                    seg,
                    rule: crate::dicom::MatchRule::None,
                    outcome: MatchOutcome::Unmatched {
                        reason: reason.clone(),
                    },
                    quality: None,
                    verdict_key: None,
                })
                .collect();
        }
    }
}

/// Uploads the ready SEGs the ledger does not know yet with STOW-RS. One that fails is kept
/// back (unmatched, with the reason) so it is never notified before the server has it.
pub(super) async fn stow_ready(
    scan: &mut crate::model::Scan,
    stow: &crate::source::http::PacsClient,
    known: &crate::source::dicomweb::Known,
) {
    use crate::dicom::MatchOutcome;
    for l in scan.labels.iter_mut() {
        if !matches!(l.outcome, MatchOutcome::Ready { .. }) {
            continue;
        }
        let uid = l.seg.uid().to_string();
        if crate::model::known::is_unchanged(known, &uid, Some(l.seg.instances.len() as i64), None)
        {
            continue; // uploaded and recorded before
        }
        let mut files = Vec::new();
        let mut failure = None;
        for (file, loc) in l.seg.files.iter().zip(&l.seg.locations) {
            match std::fs::read(file) {
                Ok(b) => files.push(b),
                Err(e) => failure = Some(format!("cannot read {loc}: {e}")),
            }
        }
        if l.seg.files.len() != l.seg.locations.len() {
            failure = Some("the SEG's files are not known".into());
        }
        let result = match failure {
            Some(f) => Err(f),
            None => stow
                .stow(&files)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        match result {
            Ok(()) => info!(label = %uid, "uploaded to {} with STOW-RS", stow.base),
            Err(e) => {
                scan.listing.retry_soon = true;
                warn!(label = %uid, "STOW-RS upload failed: {e}");
                l.outcome = MatchOutcome::Unmatched {
                    reason: format!(
                        "not notified yet: STOW-RS upload to {} failed ({e}); retried on the next scan",
                        stow.base
                    ),
                };
            }
        }
    }
}
