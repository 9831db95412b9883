//! Recording what a source listed: labels upserted, seen again or gone, problems and the
//! cursor, all in the caller's transaction; and, for every image whose labels changed, the
//! decision of what its dataset must be told (the policy is `rules::plan`), queued in the
//! same transaction.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::db::{args, DbError, Sql, Val};
use super::leases::{check, source_lease};
use super::outbox::queue;
use super::{Ledger, LedgerError};
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
        let fence = self.fence(&source_lease(&listing.source))?;
        self.tx(|db| {
            if let Some(f) = &fence {
                check(db, f)?;
            }
            apply_tx(db, listing, labels, dataset)
        })
    }

    /// Marks labels gone because the source said so (a deletion event), and plans what the
    /// dataset must be told, in one transaction.
    pub fn remove_labels(
        &mut self,
        labels: &[String],
        dataset: &str,
    ) -> Result<Vec<Change>, LedgerError> {
        let t = now();
        let fences = self.fences.clone();
        self.tx(|db| {
            let mut dirty = BTreeSet::new();
            for uid in labels {
                let img = db.row(
                    "SELECT image_uid, source FROM labels WHERE label_uid = ?1 AND present = 1",
                    &args![uid],
                )?;
                if let Some(img) = img {
                    // shared ledger: only the holder of the label's source removes it
                    if let Some(fences) = &fences {
                        let lease = source_lease(&img.text(1)?);
                        let f = fences.get(&lease).ok_or(DbError::NotHeld(lease))?;
                        check(db, &f)?;
                    }
                    db.exec(
                        "UPDATE labels SET present = 0, gone_at = ?2 WHERE label_uid = ?1",
                        &args![uid, t],
                    )?;
                    if let Some(img) = img.opt_text(0)? {
                        dirty.insert(img);
                    }
                }
            }
            let mut changes = Vec::new();
            for image in dirty {
                decide(db, dataset, &image, t, &mut changes)?;
            }
            queue(db, dataset, &changes, t)?;
            Ok(changes)
        })
    }

    pub fn cursor(&self, source: &str) -> Result<Option<String>, LedgerError> {
        self.db
            .row(
                "SELECT value FROM cursors WHERE source = ?1",
                &args![source],
            )
            .and_then(|r| r.map(|r| r.text(0)).transpose())
            .map_err(|e| super::sql(&self.path, e))
    }
}

/// The body of [`Ledger::apply`], inside its transaction.
fn apply_tx(
    db: &dyn Sql,
    listing: &Listing,
    labels: &[MatchedLabel],
    dataset: &str,
) -> Result<Vec<Change>, DbError> {
    let t = now();
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    let mut seen: HashSet<&str> = HashSet::new();
    // what is known of these labels and their images, read up front in a few statements
    // (each statement is a round trip on PostgreSQL)
    let uids: Vec<&str> = labels.iter().map(|l| l.seg.uid()).collect();
    let mut known_labels = prior_labels(db, &uids)?;
    let images: BTreeSet<&str> = labels.iter().filter_map(|l| l.outcome.image()).collect();
    let told_images = told_images(db, dataset, &images)?;
    for l in labels {
        let uid = l.seg.uid();
        let again = !seen.insert(uid);
        let fp = l.seg.fingerprint();
        let image = l.outcome.image().map(str::to_string);
        let status = l.outcome.status();
        // a label listed twice in one listing: the second sees the first's write
        let before = if again {
            prior_labels(db, &[uid])?.remove(uid)
        } else {
            known_labels.remove(uid)
        };
        let changed = match &before {
            None => true,
            Some((img, was, f, present)) => {
                *img != image || *was != status || *f != fp || *present == 0
            }
        };
        db.exec(
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
            &args![
                uid,
                &l.seg.first.study,
                &image,
                l.rule.as_str(),
                status,
                l.outcome.reason(),
                fp,
                l.seg.first.sort_key.encoded(),
                l.seg.instances.len(),
                serde_json::to_string(&l.seg.locations).unwrap_or_default(),
                &listing.source,
                t,
                &l.seg.remote_id,
                &l.seg.remote_stamp,
                &l.verdict_key,
            ],
        )?;
        if let Some(img) = &image {
            if status.pairable() {
                // an image this dataset was never told about needs a decision too
                if changed || !told_images.contains(img.as_str()) {
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
    // Unchanged labels: seen again, nothing to write (unless another source saw them last), so
    // a listing where nothing changed writes nothing per label.
    for uid in &listing.unchanged {
        db.exec(
            "UPDATE labels SET last_seen = ?2, source = ?3
             WHERE label_uid = ?1 AND present = 1 AND source != ?3",
            &args![uid, t, &listing.source],
        )?;
        seen.insert(uid.as_str());
    }
    // Problems are replaced by a complete listing, added to by a partial one.
    if listing.complete() {
        db.exec(
            "DELETE FROM problems WHERE source = ?1",
            &args![&listing.source],
        )?;
    }
    for pr in &listing.problems {
        db.exec(
            "INSERT INTO problems (source, path, reason, seen_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (source, path) DO UPDATE SET reason = excluded.reason,
                seen_at = excluded.seen_at",
            &args![&listing.source, &pr.path, &pr.reason, t],
        )?;
    }
    // Removals: only from a complete listing, never for labels stored where reading failed.
    if listing.complete() {
        let unreadable: HashSet<&str> = listing.problems.iter().map(|p| p.path.as_str()).collect();
        let mut missing = Vec::new();
        for r in db.rows(
            "SELECT label_uid, image_uid, locations FROM labels WHERE source = ?1 AND present = 1",
            &args![&listing.source],
        )? {
            let (uid, img, locs) = (r.text(0)?, r.opt_text(1)?, r.text(2)?);
            if seen.contains(uid.as_str()) {
                continue;
            }
            let locs: Vec<String> = serde_json::from_str(&locs).unwrap_or_default();
            if locs.iter().any(|l| unreadable.contains(l.as_str())) {
                continue;
            }
            missing.push((uid, img));
        }
        for (uid, img) in missing {
            db.exec(
                "UPDATE labels SET present = 0, gone_at = ?2 WHERE label_uid = ?1",
                &args![uid, t],
            )?;
            if let Some(img) = img {
                dirty.insert(img);
            }
        }
    }
    if let Some(cursor) = &listing.cursor {
        db.exec(
            "INSERT INTO cursors (source, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (source) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            &args![&listing.source, cursor, t],
        )?;
    }
    let mut changes = Vec::new();
    for image in dirty {
        decide(db, dataset, &image, t, &mut changes)?;
    }
    queue(db, dataset, &changes, t)?;
    Ok(changes)
}

/// A label as the ledger had it: image, status, fingerprint, present.
type Prior = (Option<String>, LabelStatus, String, i64);

/// The labels among `uids` the ledger has, one statement per 500.
fn prior_labels(db: &dyn Sql, uids: &[&str]) -> Result<HashMap<String, Prior>, DbError> {
    let mut out = HashMap::with_capacity(uids.len());
    for part in uids.chunks(500) {
        let marks: Vec<String> = (1..=part.len()).map(|i| format!("?{i}")).collect();
        let q = format!(
            "SELECT label_uid, image_uid, status, fingerprint, present FROM labels
             WHERE label_uid IN ({})",
            marks.join(", ")
        );
        let a: Vec<Val> = part.iter().map(|u| Val::from(*u)).collect();
        for r in db.rows(&q, &a)? {
            out.insert(
                r.text(0)?,
                (r.opt_text(1)?, r.status(2)?, r.text(3)?, r.int(4)?),
            );
        }
    }
    Ok(out)
}

/// The images among `images` that `dataset` has a row for (told, or decided), one statement
/// per 500.
fn told_images(
    db: &dyn Sql,
    dataset: &str,
    images: &BTreeSet<&str>,
) -> Result<HashSet<String>, DbError> {
    let images: Vec<&str> = images.iter().copied().collect();
    let mut out = HashSet::with_capacity(images.len());
    for part in images.chunks(500) {
        let marks: Vec<String> = (2..part.len() + 2).map(|i| format!("?{i}")).collect();
        let q = format!(
            "SELECT image_uid FROM images WHERE dataset = ?1 AND image_uid IN ({})",
            marks.join(", ")
        );
        let mut a = vec![Val::from(dataset)];
        a.extend(part.iter().map(|u| Val::from(*u)));
        for r in db.rows(&q, &a)? {
            out.insert(r.text(0)?);
        }
    }
    Ok(out)
}

/// Decides what `dataset` must be told about one image, updates what it has been told, and
/// re-applies the newest-label order across sources (the order is the matcher's sort key).
fn decide(
    db: &dyn Sql,
    dataset: &str,
    image: &str,
    t: i64,
    out: &mut Vec<Change>,
) -> Result<(), DbError> {
    // The current label: newest present pairable label of this image.
    let candidates = db
        .rows(
            "SELECT label_uid, fingerprint, sort_key FROM labels
             WHERE image_uid = ?1 AND present = 1 AND status IN (?2, ?3)
             ORDER BY sort_key DESC, label_uid DESC",
            &args![image, LabelStatus::Ready, LabelStatus::Superseded],
        )?
        .into_iter()
        .map(|r| Ok((r.text(0)?, r.text(1)?, r.text(2)?)))
        .collect::<Result<Vec<(String, String, String)>, DbError>>()?;
    if let Some((cur, ..)) = candidates.first() {
        let set = "UPDATE labels SET status = ?2, reason = ?3 WHERE label_uid = ?1";
        db.exec(set, &args![cur, LabelStatus::Ready, ""])?;
        for (other, ..) in candidates.iter().skip(1) {
            let why = format!("superseded by newer label {cur}");
            db.exec(set, &args![other, LabelStatus::Superseded, why])?;
        }
    }
    let current = candidates.into_iter().next();
    let told = db.row(
        "SELECT label_uid, fingerprint FROM images WHERE dataset = ?1 AND image_uid = ?2",
        &args![dataset, image],
    )?;
    let known_row = told.is_some();
    let told: Belief = match told {
        Some(r) => r
            .opt_text(0)?
            .map(|l| Ok::<_, DbError>((l, r.opt_text(1)?.unwrap_or_default())))
            .transpose()?,
        None => None,
    };
    let should: Belief = current.as_ref().map(|(l, f, _)| (l.clone(), f.clone()));
    out.extend(transition(image, &told, &should));
    if should != told || !known_row {
        db.exec(
            "INSERT INTO images (dataset, image_uid, label_uid, fingerprint, sort_key, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (dataset, image_uid) DO UPDATE SET label_uid = excluded.label_uid,
                fingerprint = excluded.fingerprint, sort_key = excluded.sort_key,
                updated_at = excluded.updated_at",
            &args![
                dataset,
                image,
                current.as_ref().map(|c| c.0.as_str()),
                current.as_ref().map(|c| c.1.as_str()),
                current.as_ref().map(|c| c.2.as_str()),
                t
            ],
        )?;
    }
    Ok(())
}
