//! Recording what a source listed: labels upserted, seen again or gone, problems and the
//! cursor, all in the caller's transaction; and, for every image whose labels changed, the
//! decision of what its dataset must be told (the policy is `rules::plan`), queued in the
//! same transaction.

use std::collections::{BTreeSet, HashSet};

use rusqlite::{params, OptionalExtension, Transaction};

use super::outbox::queue;
use super::{sql, Ledger, LedgerError};
use crate::model::outbox::Change;
use crate::model::scan::Listing;
use crate::model::status::LabelStatus;
use crate::model::MatchedLabel;
use crate::rules::plan::{transition, Belief};
use crate::util::time::now;

impl Ledger {
    /// Records one listing of a source and plans the notify entries it implies for `dataset`,
    /// all in one transaction. Returns the changes added to the outbox.
    ///
    /// Only a complete listing turns a label that was not seen into `gone`, and never one stored
    /// at a location the source could not read this time.
    pub fn apply(
        &mut self,
        listing: &Listing,
        labels: &[MatchedLabel],
        dataset: &str,
    ) -> Result<Vec<Change>, LedgerError> {
        let p = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql(&p, e))?;
        let changes = apply_tx(&tx, listing, labels, dataset).map_err(|e| sql(&p, e))?;
        tx.commit().map_err(|e| sql(&p, e))?;
        Ok(changes)
    }

    /// Marks labels gone because the source said so (a deletion event), and plans what the
    /// dataset must be told, in one transaction.
    pub fn remove_labels(
        &mut self,
        labels: &[String],
        dataset: &str,
    ) -> Result<Vec<Change>, LedgerError> {
        let p = self.path.clone();
        let t = now();
        let tx = self.conn.transaction().map_err(|e| sql(&p, e))?;
        let changes = (|| -> rusqlite::Result<Vec<Change>> {
            let mut dirty = BTreeSet::new();
            for uid in labels {
                let img: Option<Option<String>> = tx
                    .query_row(
                        "SELECT image_uid FROM labels WHERE label_uid = ?1 AND present = 1",
                        [uid],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(img) = img {
                    tx.execute(
                        "UPDATE labels SET present = 0, gone_at = ?2 WHERE label_uid = ?1",
                        params![uid, t],
                    )?;
                    if let Some(img) = img {
                        dirty.insert(img);
                    }
                }
            }
            let mut changes = Vec::new();
            for image in dirty {
                decide(&tx, dataset, &image, t, &mut changes)?;
            }
            queue(&tx, dataset, &changes, t)?;
            Ok(changes)
        })()
        .map_err(|e| sql(&p, e))?;
        tx.commit().map_err(|e| sql(&p, e))?;
        Ok(changes)
    }

    pub fn cursor(&self, source: &str) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row(
                "SELECT value FROM cursors WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| sql(&self.path, e))
    }
}

/// The body of [`Ledger::apply`], inside its transaction.
fn apply_tx(
    tx: &Transaction<'_>,
    listing: &Listing,
    labels: &[MatchedLabel],
    dataset: &str,
) -> rusqlite::Result<Vec<Change>> {
    let t = now();
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    let mut seen: HashSet<&str> = HashSet::new();
    {
        let mut get = tx.prepare_cached(
            "SELECT image_uid, status, fingerprint, present FROM labels WHERE label_uid = ?1",
        )?;
        let mut upsert = tx.prepare_cached(
            "INSERT INTO labels (label_uid, study_uid, image_uid, rule, status, reason, fingerprint,
                                 sort_key, instances, locations, source, present, first_seen, last_seen,
                                 remote_id, remote_stamp, verdict_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, ?12, ?12, ?13, ?14, ?15)
             ON CONFLICT (label_uid) DO UPDATE SET
                study_uid = excluded.study_uid, image_uid = excluded.image_uid,
                rule = excluded.rule, status = excluded.status, reason = excluded.reason,
                fingerprint = excluded.fingerprint, sort_key = excluded.sort_key,
                instances = excluded.instances, locations = excluded.locations,
                source = excluded.source, present = 1, last_seen = excluded.last_seen,
                gone_at = NULL, remote_id = COALESCE(excluded.remote_id, labels.remote_id),
                remote_stamp = excluded.remote_stamp, verdict_key = excluded.verdict_key",
        )?;
        let mut told = tx
            .prepare_cached("SELECT label_uid FROM images WHERE dataset = ?1 AND image_uid = ?2")?;
        for l in labels {
            let uid = l.seg.uid();
            seen.insert(uid);
            let fp = l.seg.fingerprint();
            let image = l.outcome.image().map(str::to_string);
            let status = l.outcome.status();
            let before: Option<(Option<String>, LabelStatus, String, i64)> = get
                .query_row([uid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            let changed = match &before {
                None => true,
                Some((img, was, f, present)) => {
                    *img != image || *was != status || *f != fp || *present == 0
                }
            };
            upsert.execute(params![
                uid,
                l.seg.first.study,
                image,
                l.rule.as_str(),
                status,
                l.outcome.reason(),
                fp,
                l.seg.first.sort_key.encoded(),
                l.seg.instances.len() as i64,
                serde_json::to_string(&l.seg.locations).unwrap_or_default(),
                listing.source,
                t,
                l.seg.remote_id,
                l.seg.remote_stamp,
                l.verdict_key,
            ])?;
            if let Some(img) = &image {
                if status.pairable() {
                    // an image this dataset was never told about needs a decision too
                    let known: Option<Option<String>> = told
                        .query_row(params![dataset, img], |r| r.get(0))
                        .optional()?;
                    if changed || known.is_none() {
                        dirty.insert(img.clone());
                    }
                } else if changed {
                    dirty.insert(img.clone());
                }
            }
            if let Some((Some(old_img), ..)) = &before {
                if image.as_ref() != Some(old_img) {
                    dirty.insert(old_img.clone());
                }
            }
        }
    }
    // Unchanged labels: seen again, nothing to write (unless another source saw them last), so
    // a listing where nothing changed writes nothing per label.
    {
        let mut touch = tx.prepare_cached(
            "UPDATE labels SET last_seen = ?2, source = ?3
             WHERE label_uid = ?1 AND present = 1 AND source != ?3",
        )?;
        for uid in &listing.unchanged {
            touch.execute(params![uid, t, listing.source])?;
            seen.insert(uid.as_str());
        }
    }
    // Problems are replaced by a complete listing, added to by a partial one.
    if listing.complete() {
        tx.execute("DELETE FROM problems WHERE source = ?1", [&listing.source])?;
    }
    {
        let mut ins = tx.prepare_cached(
            "INSERT OR REPLACE INTO problems (source, path, reason, seen_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for pr in &listing.problems {
            ins.execute(params![listing.source, pr.path, pr.reason, t])?;
        }
    }
    // Removals: only from a complete listing, never for labels stored where reading failed.
    if listing.complete() {
        let unreadable: HashSet<&str> = listing.problems.iter().map(|p| p.path.as_str()).collect();
        let mut missing = Vec::new();
        {
            let mut st = tx.prepare_cached(
                "SELECT label_uid, image_uid, locations FROM labels WHERE source = ?1 AND present = 1",
            )?;
            let rows = st.query_map([&listing.source], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (uid, img, locs) = row?;
                if seen.contains(uid.as_str()) {
                    continue;
                }
                let locs: Vec<String> = serde_json::from_str(&locs).unwrap_or_default();
                if locs.iter().any(|l| unreadable.contains(l.as_str())) {
                    continue;
                }
                missing.push((uid, img));
            }
        }
        let mut gone =
            tx.prepare_cached("UPDATE labels SET present = 0, gone_at = ?2 WHERE label_uid = ?1")?;
        for (uid, img) in missing {
            gone.execute(params![uid, t])?;
            if let Some(img) = img {
                dirty.insert(img);
            }
        }
    }
    if let Some(cursor) = &listing.cursor {
        tx.execute(
            "INSERT INTO cursors (source, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (source) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![listing.source, cursor, t],
        )?;
    }
    let mut changes = Vec::new();
    for image in dirty {
        decide(tx, dataset, &image, t, &mut changes)?;
    }
    queue(tx, dataset, &changes, t)?;
    Ok(changes)
}

/// Decides what `dataset` must be told about one image, updates what it has been told, and
/// re-applies the newest-label order across sources (the order is the matcher's sort key).
fn decide(
    tx: &Transaction<'_>,
    dataset: &str,
    image: &str,
    t: i64,
    out: &mut Vec<Change>,
) -> rusqlite::Result<()> {
    // The current label: newest present pairable label of this image.
    let candidates: Vec<(String, String, String)> = {
        let mut st = tx.prepare_cached(
            "SELECT label_uid, fingerprint, sort_key FROM labels
             WHERE image_uid = ?1 AND present = 1 AND status IN (?2, ?3)
             ORDER BY sort_key DESC, label_uid DESC",
        )?;
        let args = params![image, LabelStatus::Ready, LabelStatus::Superseded];
        let rows = st.query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    if let Some((cur, ..)) = candidates.first() {
        let mut set =
            tx.prepare_cached("UPDATE labels SET status = ?2, reason = ?3 WHERE label_uid = ?1")?;
        set.execute(params![cur, LabelStatus::Ready, ""])?;
        for (other, ..) in candidates.iter().skip(1) {
            set.execute(params![
                other,
                LabelStatus::Superseded,
                format!("superseded by newer label {cur}")
            ])?;
        }
    }
    let current = candidates.into_iter().next();
    let told: Option<(Option<String>, Option<String>)> = tx
        .prepare_cached(
            "SELECT label_uid, fingerprint FROM images WHERE dataset = ?1 AND image_uid = ?2",
        )?
        .query_row(params![dataset, image], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let known_row = told.is_some();
    let told: Belief = told.and_then(|(l, f)| l.map(|l| (l, f.unwrap_or_default())));
    let should: Belief = current.as_ref().map(|(l, f, _)| (l.clone(), f.clone()));
    out.extend(transition(image, &told, &should));
    if should != told || !known_row {
        let (l, f, k) = match &current {
            Some((l, f, k)) => (Some(l.as_str()), Some(f.as_str()), Some(k.as_str())),
            None => (None, None, None),
        };
        tx.prepare_cached(
            "INSERT INTO images (dataset, image_uid, label_uid, fingerprint, sort_key, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (dataset, image_uid) DO UPDATE SET label_uid = excluded.label_uid,
                fingerprint = excluded.fingerprint, sort_key = excluded.sort_key,
                updated_at = excluded.updated_at",
        )?
        .execute(params![dataset, image, l, f, k, t])?;
    }
    Ok(())
}
