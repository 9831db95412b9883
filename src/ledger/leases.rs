//! Leases, for several processes sharing one PostgreSQL ledger: a source (or the outbox) is
//! worked by one process at a time, the holder of its lease. A lease lasts until `expires_at`,
//! by the database's clock (never a process's own), and is renewed every few seconds; when its
//! holder stops renewing (killed, paused, cut off), another process takes it over and the
//! `epoch` goes up. The epoch is the fencing token: every write that records a listing or
//! confirms a delivery checks, in its own transaction, that its holder still holds the lease at
//! the epoch it acquired, so a process that lost its lease can no longer change anything.
//!
//! On SQLite there is one process per file (its lock), so there are no leases and no fences.

use std::time::Duration;

use serde::Serialize;

use super::db::{args, DbError, Dialect, Sql};
use super::{sql, Ledger, LedgerError};

/// The lease of the outbox: one process delivers at a time.
pub const OUTBOX_LEASE: &str = "outbox";

/// The lease of a source (by its name, as listings carry it).
pub fn source_lease(source: &str) -> String {
    format!("source:{source}")
}

/// A lease held: its name, its holder and the epoch it was acquired at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
}

/// A lease as `status` and `/healthz` show it.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseRow {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
    /// Seconds since its holder last renewed it.
    pub age_s: i64,
    /// Seconds until it expires (negative: expired, free to take).
    pub expires_in_s: i64,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Fails the transaction unless `f` is still held: same holder, same epoch, not expired.
pub(super) fn check(db: &dyn Sql, f: &Fence) -> Result<(), DbError> {
    let held = db.one(
        "SELECT COUNT(*) FROM leases
         WHERE name = ?1 AND holder = ?2 AND epoch = ?3 AND expires_at > clock_timestamp()",
        &args![&f.name, &f.holder, f.epoch],
    )?;
    if held == 1 {
        Ok(())
    } else {
        Err(DbError::Fenced {
            lease: f.name.clone(),
            epoch: f.epoch,
        })
    }
}

impl Ledger {
    pub(super) fn need_pg(&self, what: &str) -> Result<(), LedgerError> {
        match self.dialect() {
            Dialect::Postgres => Ok(()),
            Dialect::Sqlite => Err(sql(
                &self.path,
                DbError::Postgres(format!("{what} needs the ledger in PostgreSQL")),
            )),
        }
    }

    /// Says `holder` is alive for `ttl` more; the number of processes alive.
    pub fn heartbeat(&mut self, holder: &str, ttl: Duration) -> Result<i64, LedgerError> {
        self.need_pg("a heartbeat")?;
        let q = "INSERT INTO members (holder, started_at, seen_at, expires_at)
             VALUES (?1, now(), now(), now() + CAST(?2 AS BIGINT) * interval '1 millisecond')
             ON CONFLICT (holder) DO UPDATE SET seen_at = now(), expires_at = excluded.expires_at";
        self.tx(|db| {
            db.exec(q, &args![holder, millis(ttl)])?;
            db.one("SELECT COUNT(*) FROM members WHERE expires_at > now()", &[])
        })
    }

    /// Forgets processes gone for an hour (killed ones never leave): now and then, not at each
    /// heartbeat.
    pub fn forget_gone_members(&mut self) -> Result<(), LedgerError> {
        self.need_pg("members")?;
        self.tx(|db| {
            db.exec(
                "DELETE FROM members WHERE expires_at < now() - interval '1 hour'",
                &[],
            )
            .map(|_| ())
        })
    }

    /// `holder` leaves: its member row goes at once (its leases are released one by one).
    pub fn leave(&mut self, holder: &str) -> Result<(), LedgerError> {
        self.need_pg("leaving")?;
        self.tx(|db| {
            db.exec("DELETE FROM members WHERE holder = ?1", &args![holder])
                .map(|_| ())
        })
    }

    /// Takes the lease `name` for `holder` when nobody holds it (never held, released, or
    /// expired): its new fence, with the epoch raised. None when another holds it.
    pub fn acquire(
        &mut self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Fence>, LedgerError> {
        self.need_pg("a lease")?;
        let q = "INSERT INTO leases (name, holder, epoch, acquired_at, renewed_at, expires_at)
             VALUES (?1, ?2, 1, now(), now(),
                     now() + CAST(?3 AS BIGINT) * interval '1 millisecond')
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                epoch = leases.epoch + 1, acquired_at = now(), renewed_at = now(),
                expires_at = excluded.expires_at
             WHERE leases.expires_at <= now()
             RETURNING epoch";
        let epoch = self.tx(|db| {
            db.row(q, &args![name, holder, millis(ttl)])?
                .map(|r| r.int(0))
                .transpose()
        })?;
        Ok(epoch.map(|epoch| Fence {
            name: name.to_string(),
            holder: holder.to_string(),
            epoch,
        }))
    }

    /// Extends a lease still held; false when it was lost (expired, or taken over).
    pub fn renew(&mut self, f: &Fence, ttl: Duration) -> Result<bool, LedgerError> {
        self.need_pg("a lease")?;
        let q = "UPDATE leases SET renewed_at = now(),
                    expires_at = now() + CAST(?4 AS BIGINT) * interval '1 millisecond'
             WHERE name = ?1 AND holder = ?2 AND epoch = ?3 AND expires_at > clock_timestamp()";
        self.tx(|db| db.exec(q, &args![&f.name, &f.holder, f.epoch, millis(ttl)]))
            .map(|n| n == 1)
    }

    /// Gives a lease up at once, so that another process can take it without waiting for it
    /// to expire.
    pub fn release(&mut self, f: &Fence) -> Result<(), LedgerError> {
        self.need_pg("a lease")?;
        self.tx(|db| {
            db.exec(
                "UPDATE leases SET expires_at = now() - interval '1 millisecond'
                 WHERE name = ?1 AND holder = ?2 AND epoch = ?3",
                &args![&f.name, &f.holder, f.epoch],
            )
            .map(|_| ())
        })
    }

    /// Every lease, for `status` and `/healthz` (none on SQLite).
    pub fn leases(&self) -> Result<Vec<LeaseRow>, LedgerError> {
        if self.dialect() == Dialect::Sqlite || !self.has_schema(2)? {
            return Ok(Vec::new());
        }
        self.db
            .rows(
                "SELECT name, holder, epoch,
                        CAST(floor(EXTRACT(EPOCH FROM (now() - renewed_at))) AS BIGINT),
                        CAST(floor(EXTRACT(EPOCH FROM (expires_at - now()))) AS BIGINT)
                 FROM leases ORDER BY name",
                &[],
            )
            .and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok(LeaseRow {
                            name: r.text(0)?,
                            holder: r.text(1)?,
                            epoch: r.int(2)?,
                            age_s: r.int(3)?,
                            expires_in_s: r.int(4)?,
                        })
                    })
                    .collect()
            })
            .map_err(|e| sql(&self.path, e))
    }
}
