//! The ledger: a durable record (SQLite) of every label series seen, what each image's notified
//! label is, and an outbox of notify entries not yet confirmed by the API.
//!
//! Every public method that writes is one transaction: the label state and the outbox entries it
//! implies are committed together, and an entry leaves the outbox only in [`Ledger::confirm`],
//! after the API answered 2xx. A crash at any point loses nothing and repeats at most the batch
//! that was in flight. This is the only module that speaks SQL.
//!
//! The files: `schema` (migrations, file modes, the writer's lock), `labels` (recording a
//! listing, deciding what each image's dataset is told), `outbox` (the queue, delivery,
//! the sent journal), `reports` (summary, status, label listings), `lookup` (what sources
//! ask before reading). The policy itself (what to send) is `rules::plan`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub(crate) mod db;
mod hooks;
mod labels;
mod leases;
mod lookup;
mod outbox;
mod pg;
mod reports;
mod schema;
mod schema_pg;
mod sqlite;
#[cfg(test)]
mod test_stores;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_leases;
#[cfg(test)]
mod tests_reports;

// Transitional (issue 14): the domain types at their old paths, until every caller imports
// them from `model` (and `util::time`).
pub use crate::model::known::{is_unchanged, Known, KnownLabel};
pub use crate::model::outbox::{Change, OutboxEntry, Section};
pub use crate::util::time::{fmt_time, now};
pub use db::{DbError, Dialect};
pub use hooks::HOOK_BATCH;
pub use leases::{source_lease, Fence, LeaseRow, OUTBOX_LEASE};
pub use lookup::KnownLookup;
pub use pg::Dsn;
pub use reports::{LabelRow, Overview, RecentLabel, StatusReport, Summary};

use db::Sql;
use schema::{acquire_lock, private_file, read_only_dir_fallback, MIGRATIONS};

/// Where the ledger lives: a SQLite file (the default) or a PostgreSQL database that several
/// segbridge processes share (`--state postgres://user@host/db`).
#[derive(Debug, Clone)]
pub enum StateAt {
    File(PathBuf),
    Postgres(Dsn),
}

impl StateAt {
    /// A `postgres://` or `postgresql://` URL names PostgreSQL; anything else is a file path.
    pub fn parse(s: &str) -> Result<StateAt, String> {
        if Dsn::is_dsn(s) {
            Dsn::parse(s).map(StateAt::Postgres)
        } else {
            Ok(StateAt::File(PathBuf::from(s)))
        }
    }

    /// What logs and errors show: the path, or the DSN without its password.
    pub fn shown(&self) -> String {
        match self {
            StateAt::File(p) => p.display().to_string(),
            StateAt::Postgres(d) => d.shown().to_string(),
        }
    }

    /// The state file, when the ledger is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            StateAt::File(p) => Some(p),
            StateAt::Postgres(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("state {path}: {source}")]
    Sql {
        path: String,
        #[source]
        source: DbError,
    },
    /// This process lost a lease while writing under it: it must stop that work.
    #[error("lost lease {lease} (epoch {epoch}): another segbridge process took over")]
    Fenced { lease: String, epoch: i64 },
    #[error("lease {lease} is not held by this process")]
    NotHeld { lease: String },
    /// A one-shot run (`sync`) on a shared ledger found work it needs held by a running
    /// process.
    #[error(
        "state {path}: lease {lease} is held by {holder}, a running watch or serve that does \
         this work already; waited {waited:?}. Let it, or stop it to sync by hand"
    )]
    LeaseHeld {
        path: String,
        lease: String,
        holder: String,
        waited: Duration,
    },
    /// The PostgreSQL server cannot be reached (down, restarting, the network): worth waiting.
    #[error("state {path}: PostgreSQL is unreachable: {why}")]
    Unreachable { path: String, why: String },
    #[error(
        "state file {path} is in use by another segbridge process{holder}; waited {waited:?}. \
         Stop the other process or use another --state file"
    )]
    Locked {
        path: String,
        holder: String,
        waited: Duration,
    },
    #[error("state file {path}: cannot create lock file {lock}: {source}")]
    LockFile {
        path: String,
        lock: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state file {path} has schema version {found}, newer than this segbridge knows ({known}); \
         upgrade segbridge"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
}

/// The durable state of one segbridge installation.
pub struct Ledger {
    db: Box<dyn Sql>,
    at: StateAt,
    path: String,
    /// Held for the ledger's lifetime: one writer process per state file.
    _lock: Option<File>,
    /// A dry run on PostgreSQL: everything happens inside one transaction that is never
    /// committed (each write is a savepoint in it).
    dry: bool,
    /// Migrated to this build's schema when opened (writers): no need to ask its version again.
    migrated: bool,
    /// The leases this process holds, when it shares the ledger with others: every write that
    /// records a listing or confirms a delivery is fenced by the lease it needs.
    fences: Option<std::sync::Arc<Fences>>,
}

/// The leases a process holds, shared between the task that keeps them and the ledger that
/// writes under them.
#[derive(Debug, Default)]
pub struct Fences(std::sync::RwLock<std::collections::HashMap<String, Fence>>);

impl Fences {
    pub fn get(&self, name: &str) -> Option<Fence> {
        self.0.read().expect("fences").get(name).cloned()
    }
    pub fn set(&self, f: Fence) {
        self.0.write().expect("fences").insert(f.name.clone(), f);
    }
    pub fn remove(&self, name: &str) -> Option<Fence> {
        self.0.write().expect("fences").remove(name)
    }
    pub fn held(&self) -> Vec<Fence> {
        let mut v: Vec<Fence> = self.0.read().expect("fences").values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

impl Ledger {
    /// Opens (creating and migrating when needed) the ledger for writing. Only one process
    /// may write a state file: a second one waits up to `lock_wait`, then fails with
    /// [`LedgerError::Locked`]. PostgreSQL is shared: who does what is decided by leases.
    pub fn open(at: &StateAt, lock_wait: Duration) -> Result<Ledger, LedgerError> {
        let path = match at {
            StateAt::Postgres(dsn) => return Ledger::postgres(dsn, false),
            StateAt::File(p) => p,
        };
        let shown = path.display().to_string();
        let lock = acquire_lock(path, lock_wait)?;
        private_file(path).map_err(|e| LedgerError::LockFile {
            path: shown.clone(),
            lock: shown.clone(),
            source: e,
        })?;
        let conn = Connection::open(path).map_err(|e| sql(&shown, e.into()))?;
        schema::writer_pragmas(&conn).map_err(|e| sql(&shown, e.into()))?;
        let mut ledger = Ledger::on(conn, at, Some(lock));
        ledger.init()?;
        Ok(ledger)
    }

    fn on(conn: Connection, at: &StateAt, lock: Option<File>) -> Ledger {
        Ledger {
            db: Box::new(sqlite::Sqlite(conn)),
            at: at.clone(),
            path: at.shown(),
            _lock: lock,
            dry: false,
            fences: None,
            migrated: false,
        }
    }

    fn postgres(dsn: &Dsn, dry: bool) -> Result<Ledger, LedgerError> {
        let shown = dsn.shown().to_string();
        let db = pg::Pg::connect(dsn).map_err(|e| sql(&shown, e))?;
        let mut ledger = Ledger {
            db: Box::new(db),
            at: StateAt::Postgres(dsn.clone()),
            path: shown,
            _lock: None,
            dry: false,
            fences: None,
            migrated: false,
        };
        if dry {
            ledger.batch("BEGIN ISOLATION LEVEL REPEATABLE READ")?;
            ledger.dry = true;
        }
        ledger.init_pg()?;
        Ok(ledger)
    }

    /// A private ledger for `--dry-run`, which must change nothing and take no lock: an
    /// in-memory copy of the state file (empty when there is none), or on PostgreSQL one
    /// transaction that is rolled back.
    pub fn snapshot(at: &StateAt) -> Result<Ledger, LedgerError> {
        let path = match at {
            StateAt::Postgres(dsn) => return Ledger::postgres(dsn, true),
            StateAt::File(p) => p,
        };
        let shown = path.display().to_string();
        let e = |e: rusqlite::Error| sql(&shown, e.into());
        let mut conn = Connection::open_in_memory().map_err(e)?;
        if path.exists() {
            let src =
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(e)?;
            src.busy_timeout(Duration::from_secs(5)).map_err(e)?;
            let backup = rusqlite::backup::Backup::new(&src, &mut conn).map_err(e)?;
            backup
                .run_to_completion(1000, Duration::ZERO, None)
                .map_err(e)?;
        }
        schema::writer_pragmas(&conn).map_err(e)?;
        let mut ledger = Ledger::on(conn, at, None);
        ledger.init()?;
        Ok(ledger)
    }

    /// Opens the ledger to read, without the writer lock (for `status` while a watcher runs).
    pub fn open_read_only(at: &StateAt) -> Result<Ledger, LedgerError> {
        let path = match at {
            StateAt::Postgres(dsn) => {
                let shown = dsn.shown().to_string();
                let db = pg::Pg::connect(dsn).map_err(|e| sql(&shown, e))?;
                let ledger = Ledger {
                    db: Box::new(db),
                    at: at.clone(),
                    path: shown,
                    _lock: None,
                    dry: false,
                    fences: None,
                    migrated: false,
                };
                ledger.check_version()?;
                return Ok(ledger);
            }
            StateAt::File(p) => p,
        };
        let shown = path.display().to_string();
        let e = |e: rusqlite::Error| sql(&shown, e.into());
        let mut conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(e)?;
        // SQLite opens lazily: the first read says whether the WAL's files could be made
        if conn
            .query_row("PRAGMA schema_version", [], |_| Ok(()))
            .is_err()
        {
            if let Some(c) = read_only_dir_fallback(path) {
                conn = c;
            }
        }
        conn.busy_timeout(Duration::from_secs(5)).map_err(e)?;
        let ledger = Ledger::on(conn, at, None);
        ledger.check_version()?;
        Ok(ledger)
    }

    /// Whether the schema has at least `version` migrations (known without asking once this
    /// process migrated it).
    fn has_schema(&self, version: i64) -> Result<bool, LedgerError> {
        Ok(self.migrated || self.schema_version()? >= version)
    }

    fn check_version(&self) -> Result<(), LedgerError> {
        let v = self.schema_version()?;
        let known = self.migrations_known();
        if v > known {
            return Err(LedgerError::TooNew {
                path: self.path.clone(),
                found: v,
                known,
            });
        }
        Ok(())
    }

    fn migrations_known(&self) -> i64 {
        match self.db.dialect() {
            Dialect::Sqlite => MIGRATIONS.len() as i64,
            Dialect::Postgres => schema_pg::MIGRATIONS.len() as i64,
        }
    }

    pub fn schema_version(&self) -> Result<i64, LedgerError> {
        match self.db.dialect() {
            Dialect::Sqlite => self.db.one("PRAGMA user_version", &[]),
            Dialect::Postgres => self.pg_schema_version(),
        }
        .map_err(|e| sql(&self.path, e))
    }

    /// The ledger's path (or DSN without its password), as shown.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// From now on, writes are fenced by the leases in `fences` (a process sharing the ledger).
    pub fn fence_with(&mut self, fences: std::sync::Arc<Fences>) {
        self.fences = Some(fences);
    }

    /// The fence a write under lease `name` must check: none when the ledger is not shared;
    /// an error when it is and this process does not hold the lease.
    fn fence(&self, name: &str) -> Result<Option<Fence>, LedgerError> {
        match &self.fences {
            None => Ok(None),
            Some(f) => match f.get(name) {
                Some(f) => Ok(Some(f)),
                None => Err(sql(&self.path, DbError::NotHeld(name.to_string()))),
            },
        }
    }

    /// Where the ledger lives.
    pub fn at(&self) -> &StateAt {
        &self.at
    }

    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    /// The store's own consistency check; `ok` when sound (SQLite's integrity check; on
    /// PostgreSQL, the server keeps its own).
    pub fn integrity_check(&self) -> Result<String, LedgerError> {
        match self.db.dialect() {
            Dialect::Sqlite => self
                .db
                .row("PRAGMA integrity_check", &[])
                .and_then(|r| r.map_or(Ok("no answer".into()), |r| r.text(0)))
                .map_err(|e| sql(&self.path, e)),
            Dialect::Postgres => Ok("ok".into()),
        }
    }

    fn batch(&self, q: &str) -> Result<(), LedgerError> {
        self.db.batch(q).map_err(|e| sql(&self.path, e))
    }

    /// Runs `f` in one transaction: committed when it returns Ok, rolled back otherwise. On
    /// PostgreSQL the transaction is serializable, and run again (up to five times) when the
    /// server gave up on it because of another process's.
    fn tx<T>(&mut self, f: impl Fn(&dyn Sql) -> Result<T, DbError>) -> Result<T, LedgerError> {
        let (begin, commit, rollback) = match (self.dry, self.db.dialect()) {
            (true, _) => (
                "SAVEPOINT w",
                "RELEASE SAVEPOINT w",
                "ROLLBACK TO SAVEPOINT w",
            ),
            (false, Dialect::Sqlite) => ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"),
            (false, Dialect::Postgres) => {
                ("BEGIN ISOLATION LEVEL SERIALIZABLE", "COMMIT", "ROLLBACK")
            }
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = self
                .db
                .batch(begin)
                .and_then(|()| f(&*self.db))
                .and_then(|v| self.db.batch(commit).map(|()| v));
            match r {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let _ = self.db.batch(rollback);
                    if !(e.is_retryable() && attempt < 5) {
                        return Err(sql(&self.path, e));
                    }
                    std::thread::sleep(Duration::from_millis(10 << attempt));
                }
            }
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if self.dry {
            let _ = self.db.batch("ROLLBACK");
        }
    }
}

fn sql(path: &str, e: DbError) -> LedgerError {
    match e {
        DbError::Fenced { lease, epoch } => return LedgerError::Fenced { lease, epoch },
        DbError::NotHeld(lease) => return LedgerError::NotHeld { lease },
        DbError::Unreachable(why) => {
            return LedgerError::Unreachable {
                path: path.to_string(),
                why,
            }
        }
        _ => {}
    }
    LedgerError::Sql {
        path: path.to_string(),
        source: e,
    }
}
