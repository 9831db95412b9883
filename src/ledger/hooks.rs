//! Hook calls on a shared ledger: any process may receive one; it is kept in `hook_events`
//! until the process holding the source's lease takes it (fenced by that lease, so a process
//! that lost it takes nothing). What is taken is gone from the table: a call lost after that
//! (its taker killed) is caught by the changes feed and the periodic reconcile, as a lost hook
//! call always is. Calls nobody takes for an hour are dropped, for the same reason.

use super::db::{args, DbError};
use super::leases::{check, source_lease};
use super::{Ledger, LedgerError};

/// The most calls kept per process and taken per round.
pub const HOOK_BATCH: usize = 200;

impl Ledger {
    /// Keeps hook calls (their events as JSON) for the holder of the source's lease.
    pub fn keep_hooks(&mut self, received_by: &str, events: &[String]) -> Result<(), LedgerError> {
        self.need_pg("keeping hook calls")?;
        let t = super::now();
        self.tx(|db| {
            for e in events {
                db.exec(
                    "INSERT INTO hook_events (received_at, received_by, event) VALUES (?1, ?2, ?3)",
                    &args![t, received_by, e],
                )?;
            }
            db.exec(
                "DELETE FROM hook_events WHERE received_at < ?1",
                &args![t - 3600],
            )?;
            Ok(())
        })
    }

    /// Takes up to [`HOOK_BATCH`] kept calls, oldest first, when this process holds the lease of
    /// `source`; none otherwise.
    pub fn take_hooks(&mut self, source: &str) -> Result<Vec<String>, LedgerError> {
        self.need_pg("taking hook calls")?;
        let lease = source_lease(source);
        let Some(fence) = self.fences.as_ref().and_then(|f| f.get(&lease)) else {
            return Ok(Vec::new());
        };
        self.tx(|db| {
            check(db, &fence)?;
            db.rows(
                "DELETE FROM hook_events WHERE id IN (
                    SELECT id FROM hook_events ORDER BY id LIMIT ?1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, event",
                &args![HOOK_BATCH],
            )?
            .into_iter()
            .map(|r| Ok::<_, DbError>((r.int(0)?, r.text(1)?)))
            .collect::<Result<Vec<_>, _>>()
            .map(|mut v| {
                v.sort();
                v.into_iter().map(|(_, e)| e).collect()
            })
        })
    }

    /// Hook calls kept and not taken yet (0 on SQLite, which keeps none).
    pub fn hooks_kept(&self) -> Result<i64, LedgerError> {
        if self.dialect() == super::Dialect::Sqlite || !self.has_schema(4)? {
            return Ok(0);
        }
        self.db
            .one("SELECT COUNT(*) FROM hook_events", &[])
            .map_err(|e| super::sql(&self.path, e))
    }
}
