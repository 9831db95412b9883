//! The changes feed and the live loop of the Orthanc source. One step is a poll of `/changes`
//! and the deletion check's count (`deletions.rs`): two small requests when nothing happens. A
//! full listing (reconcile) runs on start, every `--reconcile`, and at once when the check finds
//! a series missing.

use std::collections::HashSet;
use std::time::Instant;

use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::info;

use super::answers::{ChangesPage, ChangesPoll};
use super::deletions::{Deletions, Verdict};
use super::Orthanc;
use crate::model::{KnownLabels, Scan};
use crate::source::dicom_json::Loose;
use crate::source::dicomweb::{backfill, Pass, RemoteSeries};
use crate::source::endpoint::{is_orthanc_id, Endpoint};
use crate::source::http::PacsError;
use crate::source::LiveCtx;

/// Where the live loop of an Orthanc source stands.
pub struct Feed {
    /// The feed position read up to (None: nothing listed yet).
    cursor: Option<i64>,
    /// When the next full listing is due.
    next_listing: Instant,
    deletions: Deletions,
}

impl Default for Feed {
    fn default() -> Feed {
        Feed {
            cursor: None,
            next_listing: Instant::now(),
            deletions: Deletions::default(),
        }
    }
}

impl Orthanc {
    /// The feed's newest sequence number.
    pub async fn last_change(&self) -> Result<i64, PacsError> {
        let at = Endpoint::at(&["changes"]).flag("last");
        #[derive(Deserialize)]
        struct Last {
            #[serde(rename = "Last", default)]
            last: Loose,
        }
        let v: Last = self.rest.get_json(&at, "application/json").await?;
        v.last.int().ok_or_else(|| PacsError::Bad {
            url: self.rest.url(&at),
            reason: "no \"Last\"".into(),
        })
    }

    /// Follows `/changes` from `since` to its end. When idle this is one small request.
    pub async fn poll_changes(&self, since: i64) -> Result<ChangesPoll, PacsError> {
        let mut poll = ChangesPoll {
            last: since,
            ..Default::default()
        };
        let mut seen = HashSet::new();
        loop {
            let at = Endpoint::at(&["changes"])
                .query("since", poll.last)
                .query("limit", 500);
            let v: ChangesPage = self.rest.get_json(&at, "application/json").await?;
            poll.requests += 1;
            for c in &v.changes {
                let kind = c.kind.as_deref().unwrap_or("");
                if kind == "NewSeries" {
                    // an entry without a readable Seq counts as after any position
                    poll.created.push(c.seq.int().unwrap_or(i64::MAX));
                }
                let wanted = kind == "StableSeries" || (self.on_new_series && kind == "NewSeries");
                if wanted && c.resource.as_deref() == Some("Series") {
                    if let Some(id) = c.id.as_deref().filter(|id| is_orthanc_id(id)) {
                        if seen.insert(id.to_string()) {
                            poll.series.push(id.to_string());
                        }
                    }
                }
            }
            if let Some(last) = v.last.int() {
                poll.last = poll.last.max(last);
            }
            // the rest of a feed that never says done is read by the next poll, from the cursor
            let done = v.done.bool().unwrap_or(true) || v.changes.is_empty();
            if done || poll.requests >= 200 {
                poll.caught_up = done;
                return Ok(poll);
            }
        }
    }

    /// Reads the series a changes poll named (plus `also`, labels to match again because an
    /// image arrived), as a partial listing that stores the cursor.
    pub async fn apply_changes(
        &self,
        poll: &ChangesPoll,
        lookup: &dyn KnownLabels,
        unmatched: &[(String, String)],
        chunk: usize,
        tx: &mpsc::Sender<Scan>,
    ) -> Result<(), PacsError> {
        let mut entries = Vec::new();
        let mut image_arrived = false;
        for id in &poll.series {
            match self.series(id).await? {
                Some((r, parent, modality)) if modality == "SEG" => entries.push((r, parent)),
                Some(_) => image_arrived = true,
                None => {}
            }
        }
        let uids: Vec<&str> = entries.iter().map(|(r, _)| r.series.as_str()).collect();
        let known = lookup.among(&uids);
        let mut listed: Vec<RemoteSeries> = entries.into_iter().map(|(r, _)| r).collect();
        if image_arrived {
            let have: HashSet<String> = listed.iter().map(|r| r.series.clone()).collect();
            for (label, study) in unmatched {
                if !have.contains(label) {
                    listed.push(RemoteSeries {
                        study: study.clone(),
                        series: label.clone(),
                        ..Default::default()
                    });
                }
            }
        }
        backfill(
            &self.dicomweb,
            &self.source_name(),
            listed,
            &known,
            Pass {
                chunk,
                complete: false,
                cursor: Some(poll.last.to_string()),
            },
            tx,
        )
        .await
    }

    /// One step of the live loop: a poll of the feed and the deletion check, then the full
    /// listing when it is due (on start, every `--reconcile`, or because a series is missing).
    pub async fn live_step(
        &self,
        feed: &mut Feed,
        ctx: &LiveCtx,
        tx: &mpsc::Sender<Scan>,
    ) -> Result<(), PacsError> {
        let known = ctx.known.as_ref();
        if let Some(since) = feed.cursor.filter(|_| Instant::now() < feed.next_listing) {
            let poll = self.poll_changes(since).await?;
            let verdict = self
                .check_deletions(&mut feed.deletions, &poll, ctx.reconcile)
                .await;
            if let Verdict::Deleted { expected, counted } = verdict {
                info!(
                    source = %self.source_name(),
                    "Orthanc counts {counted} series where {expected} were expected: something \
                     was deleted; listing every SEG series now"
                );
            }
            if verdict.needs_listing() {
                // kept here, not in this step's flow: a failure below still lists next time
                feed.next_listing = Instant::now();
            }
            if poll.last != since {
                // only now is the ledger read: an idle poll asks nothing of it
                let unmatched = known.unmatched(&self.source_name());
                self.apply_changes(&poll, known, &unmatched, ctx.chunk, tx)
                    .await?;
                feed.cursor = Some(poll.last);
            }
            if Instant::now() < feed.next_listing {
                return Ok(());
            }
        }
        // the feed position and the count before the listing: what changes during it is read
        // (and counted) by the next polls
        let at = self.last_change().await?;
        let count = self.count_series().await;
        feed.deletions
            .rebase(at, count, &self.source_name(), ctx.reconcile);
        self.reconcile(known, ctx.chunk, Some(at.to_string()), tx)
            .await?;
        feed.cursor = Some(at);
        feed.next_listing = Instant::now() + ctx.reconcile;
        Ok(())
    }
}
