//! The one order in which a SEG series becomes a label to notify: match it to its image
//! series ([`match_each`]), let the quality gate judge the candidates, then keep the newest
//! valid label per image ([`apply_newest`]). The gate runs before the newest-label rule so that
//! an invalid newer label leaves the older one current. Every source pairs through [`pair`].

use std::collections::HashMap;
use std::future::Future;

use super::matcher::{apply_newest, match_each};
use crate::model::{ImageIndex, MatchOutcome, MatchedLabel, SegSeries};

/// The quality gate as the pairing sees it: judges the candidates among `labels` in place
/// (a verdict, and `Invalid` for a label that must not be notified). A folder's gate reads
/// files; a PACS's gate fetches. Either may reuse a verdict the ledger already holds.
pub trait Gate {
    fn judge<'a>(
        &'a self,
        labels: &'a mut [MatchedLabel],
        index: &'a ImageIndex,
    ) -> impl Future<Output = ()> + Send + 'a;
}

/// No gate (`--no-validate`, or none configured): every matched candidate stands.
impl<G: Gate + Sync> Gate for Option<G> {
    async fn judge(&self, labels: &mut [MatchedLabel], index: &ImageIndex) {
        if let Some(g) = self {
            g.judge(labels, index).await;
        }
    }
}

/// SEG series the dataset's filters hide from the service (SEG UID → why), judged invalid
/// before `gate` runs, whatever matching said: the service lists SEG series with the dataset's
/// search filters, so it never sees these and never trains on them.
pub struct Hidden<'a, G> {
    pub hidden: &'a HashMap<String, String>,
    pub gate: &'a G,
}

impl<G: Gate + Sync> Gate for Hidden<'_, G> {
    async fn judge(&self, labels: &mut [MatchedLabel], index: &ImageIndex) {
        for l in labels.iter_mut() {
            if let Some(reason) = self.hidden.get(l.seg.uid()) {
                let image = l
                    .outcome
                    .image()
                    .map(str::to_string)
                    .or_else(|| l.seg.first.referenced_series.first().cloned())
                    .unwrap_or_default();
                l.outcome = MatchOutcome::Invalid {
                    image,
                    reason: reason.clone(),
                };
            }
        }
        self.gate.judge(labels, index).await;
    }
}

/// Matches every SEG series against `index`, gates the candidates, applies the newest-label
/// rule. The output is sorted by label UID, so two runs over the same input say the same.
pub async fn pair<G: Gate>(
    segs: Vec<SegSeries>,
    index: &ImageIndex,
    gate: &G,
) -> Vec<MatchedLabel> {
    let mut labels = match_each(segs, index);
    gate.judge(&mut labels, index).await;
    apply_newest(labels)
}

/// [`pair`] for a gate that never waits (a folder's reads files on the calling thread): the
/// future completes on its first poll.
pub fn pair_now<G: Gate>(segs: Vec<SegSeries>, index: &ImageIndex, gate: &G) -> Vec<MatchedLabel> {
    let fut = std::pin::pin!(pair(segs, index, gate));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.poll(&mut cx) {
        std::task::Poll::Ready(labels) => labels,
        std::task::Poll::Pending => unreachable!("pair_now: the gate waited; use pair"),
    }
}

/// The gate of a pairing without one.
pub struct NoGate;

impl Gate for NoGate {
    fn judge<'a>(
        &'a self,
        _: &'a mut [MatchedLabel],
        _: &'a ImageIndex,
    ) -> impl Future<Output = ()> + Send + 'a {
        std::future::ready(())
    }
}

/// Matching and the newest-label rule, no gate (what `scan` without a gate shows).
pub fn pair_ungated(segs: Vec<SegSeries>, index: &ImageIndex) -> Vec<MatchedLabel> {
    pair_now(segs, index, &NoGate)
}
