//! The outbox and the sent journal: what waits to be told, merged per image as `rules::plan`
//! says; delivery's confirm and failure records; and what was sent.

use super::db::{args, DbError, Row, Sql, Val};
use super::leases::{check, OUTBOX_LEASE};
use super::{sql, Ledger, LedgerError};
use crate::model::outbox::{Change, OutboxEntry, Section};
use crate::rules::plan::merged;
use crate::util::time::now;

fn entry(r: &Row) -> Result<OutboxEntry, DbError> {
    Ok(OutboxEntry {
        id: r.int(0)?,
        dataset: r.text(1)?,
        section: r.section(2)?,
        image: r.text(3)?,
        label: r.text(4)?,
        attempts: r.int(5)?,
        last_error: r.opt_text(6)?,
    })
}

impl Ledger {
    /// Up to `n` outbox entries of `dataset`, oldest first.
    /// On a shared ledger, only the holder of the outbox's lease gets any (and, after a lost
    /// lease, gets an error: it must not send).
    pub fn pending(&self, dataset: &str, n: usize) -> Result<Vec<OutboxEntry>, LedgerError> {
        if let Some(f) = self.fence(OUTBOX_LEASE)? {
            check(&*self.db, &f).map_err(|e| sql(&self.path, e))?;
        }
        self.db
            .rows(
                "SELECT id, dataset, section, image_uid, label_uid, attempts, last_error
                 FROM outbox WHERE dataset = ?1 ORDER BY id LIMIT ?2",
                &args![dataset, n],
            )
            .and_then(|rows| rows.iter().map(entry).collect())
            .map_err(|e| sql(&self.path, e))
    }

    pub fn outbox_depth(&self, dataset: Option<&str>) -> Result<i64, LedgerError> {
        match dataset {
            Some(d) => self
                .db
                .one("SELECT COUNT(*) FROM outbox WHERE dataset = ?1", &args![d]),
            None => self.db.one("SELECT COUNT(*) FROM outbox", &[]),
        }
        .map_err(|e| sql(&self.path, e))
    }

    /// The API accepted these entries: move them from the outbox to the sent journal.
    pub fn confirm(&mut self, ids: &[i64]) -> Result<(), LedgerError> {
        let t = now();
        let fence = self.fence(OUTBOX_LEASE)?;
        self.tx(|db| {
            if let Some(f) = &fence {
                check(db, f)?;
            }
            // two statements per batch, not per entry (a round trip each on PostgreSQL)
            for part in ids.chunks(500) {
                let marks: Vec<String> = (2..part.len() + 2).map(|i| format!("?{i}")).collect();
                let marks = marks.join(", ");
                let mut a = vec![Val::Int(t)];
                a.extend(part.iter().map(|id| Val::Int(*id)));
                db.exec(
                    &format!(
                        "INSERT INTO sent (id, dataset, section, image_uid, label_uid, created_at,
                                           sent_at)
                         SELECT id, dataset, section, image_uid, label_uid, created_at, ?1
                         FROM outbox WHERE id IN ({marks})"
                    ),
                    &a,
                )?;
                let gone: Vec<String> = (1..part.len() + 1).map(|i| format!("?{i}")).collect();
                db.exec(
                    &format!("DELETE FROM outbox WHERE id IN ({})", gone.join(", ")),
                    &a[1..],
                )?;
            }
            db.exec(
                "INSERT INTO meta (key, value) VALUES ('last_notify', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &args![t.to_string()],
            )?;
            Ok(())
        })
    }

    /// Journals a notify call made by hand (`api notify`) that the API accepted, marked as
    /// such. The outbox and what segbridge believes the dataset holds (`images`) are left as
    /// they are: segbridge's own plan stays the replay of what segbridge sent (README, "A
    /// notify by hand"). The entry's id comes from the outbox's sequence, so that no later
    /// outbox entry can take it in the journal.
    pub fn journal_by_hand(&mut self, dataset: &str, change: &Change) -> Result<(), LedgerError> {
        let t = now();
        self.tx(|db| {
            let id = db.one(
                "INSERT INTO outbox (dataset, section, image_uid, label_uid, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
                &args![dataset, change.section, &change.image, &change.label, t],
            )?;
            db.exec(
                "INSERT INTO sent (id, dataset, section, image_uid, label_uid, created_at, sent_at,
                                   by_hand)
                 SELECT id, dataset, section, image_uid, label_uid, created_at, ?2, 1
                 FROM outbox WHERE id = ?1",
                &args![id, t],
            )?;
            db.exec("DELETE FROM outbox WHERE id = ?1", &args![id])?;
            Ok(())
        })
    }

    /// The label segbridge last told `dataset` about for `image` (none: never, or removed).
    pub fn told_label(&self, dataset: &str, image: &str) -> Result<Option<String>, LedgerError> {
        self.db
            .row(
                "SELECT label_uid FROM images WHERE dataset = ?1 AND image_uid = ?2",
                &args![dataset, image],
            )
            .and_then(|r| r.map(|r| r.opt_text(0)).transpose())
            .map(Option::flatten)
            .map_err(|e| sql(&self.path, e))
    }

    /// When the API last accepted one of segbridge's deliveries (seconds since the epoch).
    pub fn last_notify(&self) -> Result<Option<i64>, LedgerError> {
        let v = self
            .db
            .row("SELECT value FROM meta WHERE key = 'last_notify'", &[])
            .and_then(|r| r.map(|r| r.text(0)).transpose())
            .map_err(|e| sql(&self.path, e))?;
        Ok(v.and_then(|s| s.parse().ok()))
    }

    /// A delivery attempt failed: count it and keep the reason, for `status`.
    pub fn record_failure(&mut self, ids: &[i64], error: &str) -> Result<(), LedgerError> {
        let fence = self.fence(OUTBOX_LEASE)?;
        self.tx(|db| {
            if let Some(f) = &fence {
                check(db, f)?;
            }
            for id in ids {
                db.exec(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
                    &args![*id, error],
                )?;
            }
            Ok(())
        })
    }

    /// The images of the added and updated entries sent (to `dataset`, or any) since a time,
    /// in the order they were sent: what the continual-learning job counted, entry by entry.
    pub fn images_notified_in_order(
        &self,
        dataset: Option<&str>,
        since: i64,
    ) -> Result<Vec<String>, LedgerError> {
        let rows = match dataset {
            Some(d) => self.db.rows(
                "SELECT image_uid FROM sent
                 WHERE section IN ('added', 'updated') AND sent_at >= ?1 AND dataset = ?2
                 ORDER BY id",
                &args![since, d],
            ),
            None => self.db.rows(
                "SELECT image_uid FROM sent
                 WHERE section IN ('added', 'updated') AND sent_at >= ?1 ORDER BY id",
                &args![since],
            ),
        };
        rows.and_then(|rows| rows.iter().map(|r| r.text(0)).collect())
            .map_err(|e| sql(&self.path, e))
    }

    /// Distinct images sent as added or updated (to `dataset`, or any) since a time: what the
    /// continual-learning job counts toward its next round.
    pub fn images_notified_since(
        &self,
        dataset: Option<&str>,
        since: Option<i64>,
    ) -> Result<i64, LedgerError> {
        let since = since.unwrap_or(0);
        match dataset {
            Some(d) => self.db.one(
                "SELECT COUNT(DISTINCT image_uid) FROM sent
                 WHERE section IN ('added', 'updated') AND sent_at >= ?1 AND dataset = ?2",
                &args![since, d],
            ),
            None => self.db.one(
                "SELECT COUNT(DISTINCT image_uid) FROM sent
                 WHERE section IN ('added', 'updated') AND sent_at >= ?1",
                &args![since],
            ),
        }
        .map_err(|e| sql(&self.path, e))
    }
}

/// Queues `changes`. A change that sets an image's label (added, updated) replaces the entries
/// still waiting for that image: the server's final view is the last label set, whatever came
/// before. The merged section keeps what the server knew before the first pending entry: an
/// image it had no label for is `added`, one it had is `updated`. A removal replaces only
/// pending `added` entries of the same label (the server either never heard of it, or clears
/// it); after anything else it is queued behind, and [`Ledger::pending`] never puts two entries
/// of one image in one body, so the order the server sees is the order decided here.
pub(super) fn queue(
    db: &dyn Sql,
    dataset: &str,
    changes: &[Change],
    t: i64,
) -> Result<(), DbError> {
    for c in changes {
        let pending = db
            .rows(
                "SELECT id, section, label_uid FROM outbox WHERE dataset = ?1 AND image_uid = ?2
                 ORDER BY id",
                &args![dataset, &c.image],
            )?
            .iter()
            .map(|r| Ok((r.int(0)?, r.section(1)?, r.text(2)?)))
            .collect::<Result<Vec<(i64, Section, String)>, DbError>>()?;
        let replaces = match c.section {
            Section::Added | Section::Updated => true,
            Section::Removed => pending
                .iter()
                .all(|(_, s, l)| *s == Section::Added && *l == c.label),
        };
        let section = match pending.first() {
            Some((_, first, _)) if replaces => merged(*first, c.section),
            _ => c.section,
        };
        if replaces {
            for (id, ..) in &pending {
                db.exec("DELETE FROM outbox WHERE id = ?1", &args![*id])?;
            }
        }
        db.exec(
            "INSERT INTO outbox (dataset, section, image_uid, label_uid, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            &args![dataset, section, &c.image, &c.label, t],
        )?;
    }
    Ok(())
}
