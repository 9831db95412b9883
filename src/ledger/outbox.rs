//! The outbox and the sent journal: what waits to be told, merged per image as `rules::plan`
//! says; delivery's confirm and failure records; and what was sent.

use rusqlite::{params, OptionalExtension, Transaction};

use super::{sql, Ledger, LedgerError};
use crate::model::outbox::{Change, OutboxEntry, Section};
use crate::rules::plan::merged;
use crate::util::time::now;

impl Ledger {
    /// Up to `n` outbox entries of `dataset`, oldest first.
    pub fn pending(&self, dataset: &str, n: usize) -> Result<Vec<OutboxEntry>, LedgerError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, dataset, section, image_uid, label_uid, attempts, last_error
                 FROM outbox WHERE dataset = ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| sql(&self.path, e))?;
        let rows = st
            .query_map(params![dataset, n as i64], |r| {
                Ok(OutboxEntry {
                    id: r.get(0)?,
                    dataset: r.get(1)?,
                    section: Section::parse(&r.get::<_, String>(2)?),
                    image: r.get(3)?,
                    label: r.get(4)?,
                    attempts: r.get(5)?,
                    last_error: r.get(6)?,
                })
            })
            .map_err(|e| sql(&self.path, e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| sql(&self.path, e))
    }

    pub fn outbox_depth(&self, dataset: Option<&str>) -> Result<i64, LedgerError> {
        let q = match dataset {
            Some(d) => {
                self.conn
                    .query_row("SELECT COUNT(*) FROM outbox WHERE dataset = ?1", [d], |r| {
                        r.get(0)
                    })
            }
            None => self
                .conn
                .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)),
        };
        q.map_err(|e| sql(&self.path, e))
    }

    /// The API accepted these entries: move them from the outbox to the sent journal.
    pub fn confirm(&mut self, ids: &[i64]) -> Result<(), LedgerError> {
        let p = self.path.clone();
        let t = now();
        let tx = self.conn.transaction().map_err(|e| sql(&p, e))?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO sent (id, dataset, section, image_uid, label_uid, created_at, sent_at)
                     SELECT id, dataset, section, image_uid, label_uid, created_at, ?2
                     FROM outbox WHERE id = ?1",
                )
                .map_err(|e| sql(&p, e))?;
            let mut del = tx
                .prepare_cached("DELETE FROM outbox WHERE id = ?1")
                .map_err(|e| sql(&p, e))?;
            for id in ids {
                ins.execute(params![id, t]).map_err(|e| sql(&p, e))?;
                del.execute([id]).map_err(|e| sql(&p, e))?;
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('last_notify', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [t.to_string()],
            )
            .map_err(|e| sql(&p, e))?;
        }
        tx.commit().map_err(|e| sql(&p, e))
    }

    /// Journals a notify call made by hand (`api notify`) that the API accepted, marked as
    /// such. The outbox and what segbridge believes the dataset holds (`images`) are left as
    /// they are: segbridge's own plan stays the replay of what segbridge sent (README, "A
    /// notify by hand"). The entry's id comes from the outbox's sequence, so that no later
    /// outbox entry can take it in the journal.
    pub fn journal_by_hand(&mut self, dataset: &str, change: &Change) -> Result<(), LedgerError> {
        let p = self.path.clone();
        let t = now();
        let tx = self.conn.transaction().map_err(|e| sql(&p, e))?;
        tx.execute(
            "INSERT INTO outbox (dataset, section, image_uid, label_uid, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                dataset,
                change.section.as_str(),
                change.image,
                change.label,
                t
            ],
        )
        .map_err(|e| sql(&p, e))?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO sent (id, dataset, section, image_uid, label_uid, created_at, sent_at,
                               by_hand)
             SELECT id, dataset, section, image_uid, label_uid, created_at, ?2, 1
             FROM outbox WHERE id = ?1",
            params![id, t],
        )
        .map_err(|e| sql(&p, e))?;
        tx.execute("DELETE FROM outbox WHERE id = ?1", [id])
            .map_err(|e| sql(&p, e))?;
        tx.commit().map_err(|e| sql(&p, e))
    }

    /// The label segbridge last told `dataset` about for `image` (none: never, or removed).
    pub fn told_label(&self, dataset: &str, image: &str) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row(
                "SELECT label_uid FROM images WHERE dataset = ?1 AND image_uid = ?2",
                params![dataset, image],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| sql(&self.path, e))
    }

    /// When the API last accepted one of segbridge's deliveries (seconds since the epoch).
    pub fn last_notify(&self) -> Result<Option<i64>, LedgerError> {
        let v: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'last_notify'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| sql(&self.path, e))?;
        Ok(v.and_then(|s| s.parse().ok()))
    }

    /// A delivery attempt failed: count it and keep the reason, for `status`.
    pub fn record_failure(&mut self, ids: &[i64], error: &str) -> Result<(), LedgerError> {
        let p = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql(&p, e))?;
        {
            let mut st = tx
                .prepare_cached(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
                )
                .map_err(|e| sql(&p, e))?;
            for id in ids {
                st.execute(params![id, error]).map_err(|e| sql(&p, e))?;
            }
        }
        tx.commit().map_err(|e| sql(&p, e))
    }

    /// Distinct images sent as added or updated (to `dataset`, or any) since a time: what the
    /// continual-learning job counts toward its next round.
    pub fn images_notified_since(
        &self,
        dataset: Option<&str>,
        since: Option<i64>,
    ) -> Result<i64, LedgerError> {
        self.conn
            .query_row(
                "SELECT COUNT(DISTINCT image_uid) FROM sent
                 WHERE section IN ('added', 'updated') AND sent_at >= ?1
                 AND (?2 IS NULL OR dataset = ?2)",
                params![since.unwrap_or(0), dataset],
                |r| r.get(0),
            )
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
    tx: &Transaction<'_>,
    dataset: &str,
    changes: &[Change],
    t: i64,
) -> rusqlite::Result<()> {
    let mut waiting = tx.prepare_cached(
        "SELECT id, section, label_uid FROM outbox WHERE dataset = ?1 AND image_uid = ?2
         ORDER BY id",
    )?;
    let mut forget = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
    let mut ins = tx.prepare_cached(
        "INSERT INTO outbox (dataset, section, image_uid, label_uid, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for c in changes {
        let pending: Vec<(i64, Section, String)> = waiting
            .query_map(params![dataset, c.image], |r| {
                Ok((
                    r.get(0)?,
                    Section::parse(&r.get::<_, String>(1)?),
                    r.get(2)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
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
                forget.execute([id])?;
            }
        }
        ins.execute(params![dataset, section.as_str(), c.image, c.label, t])?;
    }
    Ok(())
}
