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
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

mod labels;
mod lookup;
mod outbox;
mod reports;
mod schema;
#[cfg(test)]
mod tests;

// Transitional (issue 14): the domain types at their old paths, until every caller imports
// them from `model` (and `util::time`).
pub use crate::model::known::{is_unchanged, Known, KnownLabel};
pub use crate::model::outbox::{Change, OutboxEntry, Section};
pub use crate::util::time::{fmt_time, now};
pub use lookup::KnownLookup;
pub use reports::{LabelRow, RecentLabel, StatusReport, Summary};

use schema::{acquire_lock, private_file, read_only_dir_fallback, MIGRATIONS};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("state file {path}: {source}")]
    Sql {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
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
    conn: Connection,
    path: String,
    /// Held for the ledger's lifetime: one writer process per state file.
    _lock: Option<File>,
}

impl Ledger {
    /// Opens (creating and migrating when needed) the state file for writing. Only one process
    /// may write a state file: a second one waits up to `lock_wait`, then fails with
    /// [`LedgerError::Locked`].
    pub fn open(path: &Path, lock_wait: Duration) -> Result<Ledger, LedgerError> {
        let shown = path.display().to_string();
        let lock = acquire_lock(path, lock_wait)?;
        private_file(path).map_err(|e| LedgerError::LockFile {
            path: shown.clone(),
            lock: shown.clone(),
            source: e,
        })?;
        let conn = Connection::open(path).map_err(|e| sql(&shown, e))?;
        let mut ledger = Ledger {
            conn,
            path: shown,
            _lock: Some(lock),
        };
        ledger.init()?;
        Ok(ledger)
    }

    /// A private in-memory ledger: a copy of the state file when it exists, else empty. Used by
    /// `--dry-run`, which must change nothing and take no lock.
    pub fn snapshot(path: &Path) -> Result<Ledger, LedgerError> {
        let shown = path.display().to_string();
        let mut conn = Connection::open_in_memory().map_err(|e| sql(&shown, e))?;
        if path.exists() {
            let src = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| sql(&shown, e))?;
            src.busy_timeout(Duration::from_secs(5))
                .map_err(|e| sql(&shown, e))?;
            let backup =
                rusqlite::backup::Backup::new(&src, &mut conn).map_err(|e| sql(&shown, e))?;
            backup
                .run_to_completion(1000, Duration::ZERO, None)
                .map_err(|e| sql(&shown, e))?;
        }
        let mut ledger = Ledger {
            conn,
            path: shown,
            _lock: None,
        };
        ledger.init()?;
        Ok(ledger)
    }

    /// Opens the state file read-only, without the writer lock (for `status` while a watcher runs).
    pub fn open_read_only(path: &Path) -> Result<Ledger, LedgerError> {
        let shown = path.display().to_string();
        let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| sql(&shown, e))?;
        // SQLite opens lazily: the first read says whether the WAL's files could be made
        if conn
            .query_row("PRAGMA schema_version", [], |_| Ok(()))
            .is_err()
        {
            if let Some(c) = read_only_dir_fallback(path) {
                conn = c;
            }
        }
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| sql(&shown, e))?;
        let ledger = Ledger {
            conn,
            path: shown,
            _lock: None,
        };
        let v = ledger.schema_version()?;
        if v > MIGRATIONS.len() as i64 {
            return Err(LedgerError::TooNew {
                path: ledger.path.clone(),
                found: v,
                known: MIGRATIONS.len() as i64,
            });
        }
        Ok(ledger)
    }

    pub fn schema_version(&self) -> Result<i64, LedgerError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| sql(&self.path, e))
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// SQLite's own integrity check; `ok` when the file is sound.
    pub fn integrity_check(&self) -> Result<String, LedgerError> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| sql(&self.path, e))
    }
}

fn sql(path: &str, e: rusqlite::Error) -> LedgerError {
    LedgerError::Sql {
        path: path.to_string(),
        source: e,
    }
}
