//! The ledger: a durable record (SQLite) of every label series seen, what each image's notified
//! label is, and an outbox of notify entries not yet confirmed by the API.
//!
//! Every public method that writes is one transaction: the label state and the outbox entries it
//! implies are committed together, and an entry leaves the outbox only in [`Ledger::confirm`],
//! after the API answered 2xx. A crash at any point loses nothing and repeats at most the batch
//! that was in flight. This is the only module that speaks SQL.

use std::collections::{BTreeSet, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use serde::Serialize;

use crate::dicom::{MatchOutcome, MatchedLabel};
use crate::model::status::LabelStatus;
use crate::rules::plan::{merged, transition, Belief};
use crate::source::Listing;

/// Schema migrations, applied in order; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: labels, per-image notified state, outbox, sent journal, problems, cursors, meta
    "CREATE TABLE labels (
        label_uid   TEXT PRIMARY KEY,
        study_uid   TEXT NOT NULL,
        image_uid   TEXT,
        rule        TEXT NOT NULL,
        status      TEXT NOT NULL,
        reason      TEXT NOT NULL DEFAULT '',
        fingerprint TEXT NOT NULL,
        sort_key    TEXT NOT NULL,
        instances   INTEGER NOT NULL,
        locations   TEXT NOT NULL,
        source      TEXT NOT NULL,
        present     INTEGER NOT NULL,
        first_seen  INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        gone_at     INTEGER
     );
     CREATE INDEX labels_image ON labels(image_uid, present, status);
     CREATE INDEX labels_source ON labels(source, present);
     CREATE TABLE images (
        dataset      TEXT NOT NULL,
        image_uid    TEXT NOT NULL,
        label_uid    TEXT,
        fingerprint  TEXT,
        sort_key     TEXT,
        updated_at   INTEGER NOT NULL,
        PRIMARY KEY (dataset, image_uid)
     );
     CREATE TABLE outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        dataset     TEXT NOT NULL,
        section     TEXT NOT NULL CHECK (section IN ('added','updated','removed')),
        image_uid   TEXT NOT NULL,
        label_uid   TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT
     );
     CREATE TABLE sent (
        id          INTEGER PRIMARY KEY,
        dataset     TEXT NOT NULL,
        section     TEXT NOT NULL,
        image_uid   TEXT NOT NULL,
        label_uid   TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        sent_at     INTEGER NOT NULL
     );
     CREATE TABLE problems (
        source      TEXT NOT NULL,
        path        TEXT NOT NULL,
        reason      TEXT NOT NULL,
        seen_at     INTEGER NOT NULL,
        PRIMARY KEY (source, path)
     );
     CREATE TABLE cursors (
        source      TEXT PRIMARY KEY,
        value       TEXT NOT NULL,
        updated_at  INTEGER NOT NULL
     );
     CREATE TABLE meta (
        key         TEXT PRIMARY KEY,
        value       TEXT NOT NULL
     );",
    // 2: the source's own series ID (Orthanc), to resolve deletion hooks that carry only it
    "ALTER TABLE labels ADD COLUMN remote_id TEXT;
     CREATE INDEX labels_remote ON labels(remote_id);",
    // 3: label counts kept by triggers, and labels by status: a run's summary (counts, the
    //    labels that need attention) and the unmatched list no longer scan every label
    "CREATE TABLE label_counts (
        present INTEGER NOT NULL,
        status  TEXT NOT NULL,
        n       INTEGER NOT NULL,
        PRIMARY KEY (present, status)
     ) WITHOUT ROWID;
     INSERT INTO label_counts (present, status, n)
        SELECT present, status, COUNT(*) FROM labels GROUP BY present, status;
     CREATE TRIGGER labels_counted_insert AFTER INSERT ON labels BEGIN
        INSERT INTO label_counts (present, status, n) VALUES (NEW.present, NEW.status, 1)
            ON CONFLICT (present, status) DO UPDATE SET n = n + 1;
     END;
     CREATE TRIGGER labels_counted_delete AFTER DELETE ON labels BEGIN
        UPDATE label_counts SET n = n - 1 WHERE present = OLD.present AND status = OLD.status;
     END;
     CREATE TRIGGER labels_counted_update AFTER UPDATE OF present, status ON labels
        WHEN OLD.present IS NOT NEW.present OR OLD.status IS NOT NEW.status BEGIN
        UPDATE label_counts SET n = n - 1 WHERE present = OLD.present AND status = OLD.status;
        INSERT INTO label_counts (present, status, n) VALUES (NEW.present, NEW.status, 1)
            ON CONFLICT (present, status) DO UPDATE SET n = n + 1;
     END;
     CREATE INDEX labels_status ON labels(status, present);",
    // 4: what a later listing compares to know a label unchanged: the settings its verdict
    //    depended on and the Orthanc instance set (remote_stamp), and what the quality verdict
    //    was based on (verdict_key: the files' names, sizes and times, or the PACS instance set;
    //    NULL when the content was not read completely: never reused)
    "ALTER TABLE labels ADD COLUMN remote_stamp TEXT;
     ALTER TABLE labels ADD COLUMN verdict_key TEXT;",
];

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

pub use crate::model::known::{is_unchanged, Known, KnownLabel};
pub use crate::model::outbox::{Change, OutboxEntry, Section};

/// A status is stored as its name (see [`LabelStatus::as_str`]).
impl rusqlite::ToSql for LabelStatus {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl rusqlite::types::FromSql for LabelStatus {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let s = v.as_str()?;
        s.parse()
            .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

/// The status a match outcome is stored with.
fn status_of(o: &MatchOutcome) -> LabelStatus {
    match o {
        MatchOutcome::Ready { .. } => LabelStatus::Ready,
        MatchOutcome::Superseded { .. } => LabelStatus::Superseded,
        MatchOutcome::Unusable { .. } => LabelStatus::Unusable,
        MatchOutcome::Unmatched { .. } => LabelStatus::Unmatched,
        MatchOutcome::Invalid { .. } => LabelStatus::Invalid,
    }
}

/// Where a source asks what the ledger knows of the series it listed. It asks once per
/// listing, with that listing's UIDs, so a listing with nothing new costs what the listing
/// costs, whatever the size of the ledger.
#[derive(Debug, Clone, Default)]
pub enum KnownLookup {
    /// Nothing is known: everything listed is read (a first run, the demo).
    #[default]
    Nothing,
    /// The state file, opened read-only for each lookup (it never takes the writer's lock, and
    /// with WAL it reads beside a writer).
    State(PathBuf),
}

impl KnownLookup {
    /// The known labels among `uids`. A state file that cannot be read (not there yet, locked
    /// too long) means nothing known: series are read again, never skipped wrongly.
    pub fn among<'a>(&self, uids: impl IntoIterator<Item = &'a str>) -> Known {
        let KnownLookup::State(path) = self else {
            return Known::default();
        };
        let mut uids = uids.into_iter().peekable();
        if uids.peek().is_none() || !path.exists() {
            return Known::default();
        }
        match Ledger::open_read_only(path).and_then(|l| l.known_among(uids)) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!("{e}; reading every listed series again");
                Known::default()
            }
        }
    }
}

impl crate::model::known::KnownLabels for KnownLookup {
    fn among(&self, uids: &[&str]) -> Known {
        KnownLookup::among(self, uids.iter().copied())
    }
}

/// What a run reports at its end: label counts, the labels that need attention, unreadable
/// files. Its cost follows what it reports, not the size of the ledger.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Present labels by status.
    pub labels_by_status: Vec<(LabelStatus, i64)>,
    pub labels_gone: i64,
    /// Present labels that are unusable, unmatched or invalid.
    pub attention: Vec<LabelRow>,
    pub problems: Vec<crate::source::Problem>,
}

impl Summary {
    /// Present labels with `status`.
    pub fn count(&self, status: LabelStatus) -> i64 {
        self.labels_by_status
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }
}

/// What the ledger knows, for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub state: String,
    pub schema_version: i64,
    pub labels_by_status: Vec<(LabelStatus, i64)>,
    pub labels_gone: i64,
    pub images_notified: i64,
    pub outbox_depth: i64,
    pub outbox_oldest: Option<String>,
    pub outbox_last_error: Option<String>,
    pub entries_sent: i64,
    pub last_notify: Option<String>,
    pub attention: Vec<LabelRow>,
    pub problems: Vec<crate::source::Problem>,
}

/// A label as the ledger knows it.
#[derive(Debug, Clone, Serialize)]
pub struct LabelRow {
    pub label: String,
    pub image: Option<String>,
    pub status: LabelStatus,
    #[serde(rename = "match")]
    pub rule: String,
    pub reason: String,
    pub source: String,
}

/// The durable state of one segbridge installation.
pub struct Ledger {
    conn: Connection,
    path: String,
    /// Held for the ledger's lifetime: one writer process per state file.
    _lock: Option<File>,
}

pub use crate::util::time::{fmt_time, now};

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

    fn init(&mut self) -> Result<(), LedgerError> {
        let p = self.path.clone();
        self.conn
            .busy_timeout(Duration::from_secs(5))
            .map_err(|e| sql(&p, e))?;
        // WAL lets `status` read while a watcher writes; FULL makes a commit survive power loss.
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| sql(&p, e))?;
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| sql(&p, e))?;
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| sql(&p, e))?;
        let version = self.schema_version()?;
        if version > MIGRATIONS.len() as i64 {
            return Err(LedgerError::TooNew {
                path: p,
                found: version,
                known: MIGRATIONS.len() as i64,
            });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction().map_err(|e| sql(&p, e))?;
            tx.execute_batch(m).map_err(|e| sql(&p, e))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(|e| sql(&p, e))?;
            tx.commit().map_err(|e| sql(&p, e))?;
        }
        Ok(())
    }

    pub fn schema_version(&self) -> Result<i64, LedgerError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| sql(&self.path, e))
    }

    pub fn path(&self) -> &str {
        &self.path
    }

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

    /// What the ledger knows of the labels `uids` (a source's listing), to skip unchanged
    /// series: label UID → (instance count, status) of each that is present. Unmatched labels
    /// are left out, so they are read and matched again on every listing. One indexed query per
    /// 500 UIDs: the cost follows the listing, not the size of the ledger.
    pub fn known_among<'a>(
        &self,
        uids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Known, LedgerError> {
        const PER_QUERY: usize = 500;
        let uids: Vec<&str> = uids.into_iter().collect();
        let mut known = Known::with_capacity(uids.len());
        for part in uids.chunks(PER_QUERY) {
            let marks = vec!["?"; part.len()].join(",");
            let mut st = self
                .conn
                .prepare_cached(&format!(
                    "SELECT label_uid, instances, status, reason, remote_stamp, verdict_key FROM labels
                     WHERE label_uid IN ({marks}) AND present = 1 AND status != ?"
                ))
                .map_err(|e| sql(&self.path, e))?;
            let unmatched = LabelStatus::Unmatched.as_str();
            let args = part.iter().copied().chain([unmatched]);
            let rows = st
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok((
                        r.get(0)?,
                        KnownLabel {
                            instances: r.get(1)?,
                            status: r.get(2)?,
                            reason: r.get(3)?,
                            stamp: r.get(4)?,
                            verdict_key: r.get(5)?,
                        },
                    ))
                })
                .map_err(|e| sql(&self.path, e))?;
            for row in rows {
                let (uid, k): (String, KnownLabel) = row.map_err(|e| sql(&self.path, e))?;
                known.insert(uid, k);
            }
        }
        Ok(known)
    }

    /// Present labels that are unmatched (their image may have arrived since).
    pub fn unmatched_labels(&self) -> Result<Vec<(String, String)>, LedgerError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT label_uid, study_uid FROM labels WHERE present = 1 AND status = ?1",
            )
            .map_err(|e| sql(&self.path, e))?;
        let rows = st
            .query_map([LabelStatus::Unmatched], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| sql(&self.path, e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| sql(&self.path, e))
    }

    /// The label UID of a series known by the source's own ID (Orthanc's), if any.
    pub fn label_by_remote_id(&self, remote_id: &str) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row(
                "SELECT label_uid FROM labels WHERE remote_id = ?1",
                [remote_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| sql(&self.path, e))
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

    /// Every label the ledger has, for `status --json` and tests.
    pub fn labels(&self) -> Result<Vec<LabelRow>, LedgerError> {
        self.label_rows(
            "SELECT label_uid, image_uid, CASE WHEN present = 1 THEN status ELSE ?1 END, rule,
                    reason, source FROM labels ORDER BY label_uid",
            &[&LabelStatus::Gone],
        )
    }

    fn label_rows(
        &self,
        q: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<LabelRow>, LedgerError> {
        let mut st = self.conn.prepare(q).map_err(|e| sql(&self.path, e))?;
        let rows = st
            .query_map(args, |r| {
                Ok(LabelRow {
                    label: r.get(0)?,
                    image: r.get(1)?,
                    status: r.get(2)?,
                    rule: r.get(3)?,
                    reason: r.get(4)?,
                    source: r.get(5)?,
                })
            })
            .map_err(|e| sql(&self.path, e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| sql(&self.path, e))
    }

    /// A run's summary, from the counters and the status index (no scan of every label).
    pub fn summary(&self) -> Result<Summary, LedgerError> {
        let p = &self.path;
        let c = &self.conn;
        let mut labels_by_status = Vec::new();
        let mut labels_gone = 0;
        {
            // a file an older segbridge wrote, opened read-only (not migrated): count by hand
            let counts = if self.schema_version()? >= 3 {
                "SELECT present, status, n FROM label_counts WHERE n > 0 ORDER BY status"
            } else {
                "SELECT present, status, COUNT(*) FROM labels GROUP BY present, status ORDER BY status"
            };
            let mut st = c.prepare_cached(counts).map_err(|e| sql(p, e))?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, LabelStatus>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(|e| sql(p, e))?;
            for r in rows {
                let (present, status, n) = r.map_err(|e| sql(p, e))?;
                if present == 1 {
                    labels_by_status.push((status, n));
                } else {
                    labels_gone += n;
                }
            }
        }
        let problems = {
            let mut st = c
                .prepare_cached("SELECT path, reason FROM problems ORDER BY path")
                .map_err(|e| sql(p, e))?;
            let rows = st
                .query_map([], |r| {
                    Ok(crate::source::Problem {
                        path: r.get(0)?,
                        reason: r.get(1)?,
                    })
                })
                .map_err(|e| sql(p, e))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(|e| sql(p, e))?
        };
        Ok(Summary {
            labels_by_status,
            labels_gone,
            attention: self.label_rows(
                "SELECT label_uid, image_uid, status, rule, reason, source FROM labels
                 WHERE status IN (?1, ?2, ?3) AND present = 1
                 ORDER BY status, label_uid",
                &[
                    &LabelStatus::Unusable,
                    &LabelStatus::Unmatched,
                    &LabelStatus::Invalid,
                ],
            )?,
            problems,
        })
    }

    /// Everything the ledger knows, for `status`: the summary plus the outbox and the journal.
    pub fn status(&self) -> Result<StatusReport, LedgerError> {
        let p = &self.path;
        let c = &self.conn;
        let one = |q: &str| -> Result<i64, LedgerError> {
            c.query_row(q, [], |r| r.get(0)).map_err(|e| sql(p, e))
        };
        let oldest: Option<i64> = c
            .query_row("SELECT MIN(created_at) FROM outbox", [], |r| r.get(0))
            .map_err(|e| sql(p, e))?;
        let last_error: Option<String> = c
            .query_row(
                "SELECT last_error FROM outbox WHERE last_error IS NOT NULL ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| sql(p, e))?
            .flatten();
        let last_notify: Option<String> = c
            .query_row(
                "SELECT value FROM meta WHERE key = 'last_notify'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| sql(p, e))?;
        let summary = self.summary()?;
        Ok(StatusReport {
            state: self.path.clone(),
            schema_version: self.schema_version()?,
            labels_by_status: summary.labels_by_status,
            labels_gone: summary.labels_gone,
            images_notified: one("SELECT COUNT(*) FROM images WHERE label_uid IS NOT NULL")?,
            outbox_depth: one("SELECT COUNT(*) FROM outbox")?,
            outbox_oldest: oldest.map(fmt_time),
            outbox_last_error: last_error,
            entries_sent: one("SELECT COUNT(*) FROM sent")?,
            last_notify: last_notify
                .and_then(|s| s.parse::<i64>().ok())
                .map(fmt_time),
            attention: summary.attention,
            problems: summary.problems,
        })
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

/// A state file in a directory segbridge cannot write (`status` only reads): SQLite cannot
/// create the WAL's shared-memory file there, so the file is opened as immutable (no writer can
/// be at work in such a directory).
fn read_only_dir_fallback(path: &Path) -> Option<Connection> {
    let abs = std::fs::canonicalize(path).ok()?;
    let mut uri = url::Url::from_file_path(abs).ok()?;
    uri.set_query(Some("immutable=1"));
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
    Connection::open_with_flags(uri.as_str(), flags).ok()
}

/// Makes the state file private (0600) before SQLite opens it: created so when new, narrowed
/// when an older segbridge left it readable. SQLite gives its WAL and shared-memory files the
/// database file's mode.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(|_| ()),
        Err(e) => Err(e),
    }
}

/// The lock file of the state file itself, however it is reached (a symlink, `..`, a relative
/// path): two paths to one file must share one lock.
fn lock_path(path: &Path) -> PathBuf {
    let mut s = real_path(path).into_os_string();
    s.push(".lock");
    PathBuf::from(s)
}

/// The canonical path of a file that may not exist yet: its own when it exists, else a
/// (dangling) symlink's target's, else its canonical directory's joined with its name.
fn real_path(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    for _ in 0..16 {
        if let Ok(c) = std::fs::canonicalize(&p) {
            return c;
        }
        match std::fs::read_link(&p) {
            Ok(target) => p = p.parent().unwrap_or(Path::new(".")).join(target),
            Err(_) => break,
        }
    }
    let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
    match (
        std::fs::canonicalize(dir.unwrap_or(Path::new("."))),
        p.file_name(),
    ) {
        (Ok(d), Some(name)) => d.join(name),
        _ => p,
    }
}

/// Takes the exclusive advisory lock beside the state file. The OS releases it when the process
/// dies, however it dies, so a killed segbridge never leaves a stale lock.
fn acquire_lock(path: &Path, wait: Duration) -> Result<File, LedgerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let lp = lock_path(path);
    let lock_err = |e: std::io::Error| LedgerError::LockFile {
        path: path.display().to_string(),
        lock: lp.display().to_string(),
        source: e,
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lp)
        .map_err(lock_err)?;
    let start = Instant::now();
    loop {
        match f.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if start.elapsed() >= wait {
                    let holder = std::fs::read_to_string(&lp)
                        .ok()
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .map(|pid| format!(" (pid {pid})"))
                        .unwrap_or_default();
                    return Err(LedgerError::Locked {
                        path: path.display().to_string(),
                        holder,
                        waited: wait,
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
    }
    f.set_len(0).map_err(lock_err)?;
    write!(f, "{}", std::process::id()).map_err(lock_err)?;
    Ok(f)
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
            let status = status_of(&l.outcome);
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

/// Queues `changes`. A change that sets an image's label (added, updated) replaces the entries
/// still waiting for that image: the server's final view is the last label set, whatever came
/// before. The merged section keeps what the server knew before the first pending entry: an
/// image it had no label for is `added`, one it had is `updated`. A removal replaces only
/// pending `added` entries of the same label (the server either never heard of it, or clears
/// it); after anything else it is queued behind, and [`Ledger::pending`] never puts two entries
/// of one image in one body, so the order the server sees is the order decided here.
fn queue(tx: &Transaction<'_>, dataset: &str, changes: &[Change], t: i64) -> rusqlite::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::reader::{SegInstance, SegSeries, SortKey};
    use crate::dicom::{match_all, ImageIndex};
    use crate::source::Problem;

    /// (label uid, image uid, content date, instance uids)
    type L = (
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
    );

    fn listing(labels: &[L], images: &[&str]) -> (Listing, Vec<MatchedLabel>) {
        let mut index = ImageIndex::default();
        for i in images {
            index.insert(&format!("{i}.sop"), i, "st", "CT");
        }
        let segs = labels
            .iter()
            .map(|(uid, img, date, inst)| SegSeries {
                first: SegInstance {
                    sop_class: crate::dicom::SEG_SOP_CLASS.into(),
                    sop_instance: inst[0].into(),
                    series: (*uid).into(),
                    study: "st".into(),
                    instance_number: Some(1),
                    referenced_series: vec![(*img).into()],
                    source_instances: vec![],
                    sort_key: SortKey {
                        content: (*date).into(),
                        uid: (*uid).into(),
                        ..Default::default()
                    },
                    segment_count: 1,
                },
                instances: inst.iter().map(|s| s.to_string()).collect(),
                locations: vec![format!("/f/{uid}")],
                files: vec![],
                warnings: vec![],
                remote_id: None,
                remote_stamp: None,
            })
            .collect();
        let matched = match_all(segs, &index);
        (
            Listing {
                source: "folder:/f".into(),
                ..Default::default()
            },
            matched,
        )
    }

    fn run(l: &mut Ledger, labels: &[L], images: &[&str]) -> Vec<(Section, String, String)> {
        let (listing, matched) = listing(labels, images);
        l.apply(&listing, &matched, "ds")
            .unwrap()
            .into_iter()
            .map(|c| (c.section, c.image, c.label))
            .collect()
    }

    fn c(s: Section, i: &str, l: &str) -> (Section, String, String) {
        (s, i.into(), l.into())
    }

    fn fresh() -> Ledger {
        Ledger::snapshot(Path::new("/nonexistent/segbridge-test.db")).unwrap()
    }

    #[test]
    fn first_label_is_added_then_nothing() {
        let mut l = fresh();
        let ls: &[L] = &[("L1", "A", "1", &["L1.1"])];
        assert_eq!(run(&mut l, ls, &["A"]), vec![c(Section::Added, "A", "L1")]);
        assert_eq!(run(&mut l, ls, &["A"]), vec![]);
        assert_eq!(l.pending("ds", 10).unwrap().len(), 1);
    }

    #[test]
    fn newer_label_is_updated_and_changed_instances_too() {
        let mut l = fresh();
        run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]);
        assert_eq!(
            run(
                &mut l,
                &[("L1", "A", "1", &["L1.1"]), ("L2", "A", "2", &["L2.1"])],
                &["A"]
            ),
            vec![c(Section::Updated, "A", "L2")]
        );
        assert_eq!(
            run(
                &mut l,
                &[
                    ("L1", "A", "1", &["L1.1"]),
                    ("L2", "A", "2", &["L2.1", "L2.2"])
                ],
                &["A"]
            ),
            vec![c(Section::Updated, "A", "L2")]
        );
        // an older label appearing later changes nothing
        assert_eq!(
            run(
                &mut l,
                &[
                    ("L0", "A", "0", &["L0.1"]),
                    ("L1", "A", "1", &["L1.1"]),
                    ("L2", "A", "2", &["L2.1", "L2.2"])
                ],
                &["A"]
            ),
            vec![]
        );
    }

    #[test]
    fn removed_newest_label_falls_back_to_the_older_one_and_says_so() {
        let mut l = fresh();
        run(
            &mut l,
            &[("L1", "A", "1", &["L1.1"]), ("L2", "A", "2", &["L2.1"])],
            &["A"],
        );
        // L2 goes, L1 remains: the server must be told L1, not only that L2 is gone
        assert_eq!(
            run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]),
            vec![c(Section::Updated, "A", "L1")]
        );
        // L1 is now what the dataset has: removing it is a removal
        assert_eq!(
            run(&mut l, &[], &["A"]),
            vec![c(Section::Removed, "A", "L1")]
        );
        // and a new label after that is added again
        assert_eq!(
            run(&mut l, &[("L3", "A", "3", &["L3.1"])], &["A"]),
            vec![c(Section::Added, "A", "L3")]
        );
    }

    #[test]
    fn an_older_label_that_arrived_later_is_told_when_the_newer_goes() {
        let mut l = fresh();
        run(&mut l, &[("L2", "A", "2", &["L2.1"])], &["A"]);
        // L1 arrives later but is dated older: nothing changes for the server
        assert_eq!(
            run(
                &mut l,
                &[("L1", "A", "1", &["L1.1"]), ("L2", "A", "2", &["L2.1"])],
                &["A"]
            ),
            vec![]
        );
        assert_eq!(
            run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]),
            vec![c(Section::Updated, "A", "L1")]
        );
    }

    #[test]
    fn replaced_label_is_updated() {
        let mut l = fresh();
        run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]);
        assert_eq!(
            run(&mut l, &[("L2", "A", "2", &["L2.1"])], &["A"]),
            vec![c(Section::Updated, "A", "L2")]
        );
    }

    fn outbox(l: &Ledger) -> Vec<(Section, String, String)> {
        l.pending("ds", 100)
            .unwrap()
            .into_iter()
            .map(|e| (e.section, e.image, e.label))
            .collect()
    }

    #[test]
    fn the_outbox_keeps_one_setting_entry_per_image() {
        let mut l = fresh();
        run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]);
        run(&mut l, &[("L2", "A", "2", &["L2.1"])], &["A"]);
        // never confirmed: the server may know nothing of A, so it is still an addition
        assert_eq!(outbox(&l), vec![c(Section::Added, "A", "L2")]);
        // the label goes before anything was confirmed: one removal of what was queued
        run(&mut l, &[], &["A"]);
        assert_eq!(outbox(&l), vec![c(Section::Removed, "A", "L2")]);
        // and comes back as a new label: the removal is replaced by a setting entry
        run(&mut l, &[("L3", "A", "3", &["L3.1"])], &["A"]);
        assert_eq!(outbox(&l), vec![c(Section::Updated, "A", "L3")]);
    }

    #[test]
    fn a_removal_after_an_unconfirmed_update_waits_behind_it() {
        let mut l = fresh();
        run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]);
        let ids: Vec<i64> = l.pending("ds", 10).unwrap().iter().map(|e| e.id).collect();
        l.confirm(&ids).unwrap();
        run(&mut l, &[("L2", "A", "2", &["L2.1"])], &["A"]);
        run(&mut l, &[], &["A"]);
        // the server has L1 until the update arrives: both go, in order, in two bodies
        assert_eq!(
            outbox(&l),
            vec![
                c(Section::Updated, "A", "L2"),
                c(Section::Removed, "A", "L2")
            ]
        );
        let pending = l.pending("ds", 10).unwrap();
        let bodies = crate::pipeline::runs(&pending, 10);
        assert_eq!(bodies.len(), 2);
    }

    #[test]
    fn incomplete_listing_or_unreadable_location_never_removes() {
        let mut l = fresh();
        run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]);
        let (mut listing, matched) = listing(&[], &["A"]);
        listing.incomplete_reasons.push("cannot list /f/sub".into());
        assert!(l.apply(&listing, &matched, "ds").unwrap().is_empty());
        listing.incomplete_reasons.clear();
        listing.problems.push(Problem {
            path: "/f/L1".into(),
            reason: "truncated".into(),
        });
        assert!(l.apply(&listing, &matched, "ds").unwrap().is_empty());
        listing.problems.clear();
        assert_eq!(l.apply(&listing, &matched, "ds").unwrap().len(), 1);
    }

    #[test]
    fn unmatched_label_becomes_added_when_its_image_arrives() {
        let mut l = fresh();
        assert!(run(&mut l, &[("L1", "A", "1", &["L1.1"])], &[]).is_empty());
        assert_eq!(
            run(&mut l, &[("L1", "A", "1", &["L1.1"])], &["A"]),
            vec![c(Section::Added, "A", "L1")]
        );
    }

    #[test]
    fn outbox_entries_leave_only_on_confirm_and_are_journaled() {
        let mut l = fresh();
        run(
            &mut l,
            &[("L1", "A", "1", &["L1.1"]), ("L9", "B", "1", &["L9.1"])],
            &["A", "B"],
        );
        let p = l.pending("ds", 1).unwrap();
        assert_eq!(p.len(), 1);
        l.record_failure(&[p[0].id], "HTTP 500").unwrap();
        assert_eq!(l.pending("ds", 10).unwrap()[0].attempts, 1);
        l.confirm(&[p[0].id]).unwrap();
        assert_eq!(l.pending("ds", 10).unwrap().len(), 1);
        let st = l.status().unwrap();
        assert_eq!(st.entries_sent, 1);
        assert_eq!(st.outbox_depth, 1);
        assert_eq!(l.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn datasets_are_told_separately() {
        let mut l = fresh();
        let (listing, matched) = listing(&[("L1", "A", "1", &["L1.1"])], &["A"]);
        assert_eq!(l.apply(&listing, &matched, "ds").unwrap().len(), 1);
        assert_eq!(l.apply(&listing, &matched, "other").unwrap().len(), 1);
        assert_eq!(l.apply(&listing, &matched, "other").unwrap().len(), 0);
    }

    #[test]
    fn second_writer_waits_then_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let _first = Ledger::open(&path, Duration::from_millis(10)).unwrap();
        let err = Ledger::open(&path, Duration::from_millis(300))
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(matches!(err, LedgerError::Locked { .. }), "{msg}");
        assert!(msg.contains("in use by another segbridge process"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
    }

    #[test]
    fn migrations_are_versioned_and_newer_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let l = Ledger::open(&path, Duration::ZERO).unwrap();
            assert_eq!(l.schema_version().unwrap(), MIGRATIONS.len() as i64);
        }
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        assert!(matches!(
            Ledger::open(&path, Duration::ZERO),
            Err(LedgerError::TooNew { found: 99, .. })
        ));
    }

    /// The counters kept by triggers against a count of every label, by hand.
    fn counts_by_hand(l: &Ledger) -> (Vec<(LabelStatus, i64)>, i64) {
        let mut st = l
            .conn
            .prepare(
                "SELECT status, COUNT(*) FROM labels WHERE present = 1
                 GROUP BY status ORDER BY status",
            )
            .unwrap();
        let present = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let gone = l
            .conn
            .query_row("SELECT COUNT(*) FROM labels WHERE present = 0", [], |r| {
                r.get(0)
            })
            .unwrap();
        (present, gone)
    }

    #[test]
    fn summary_counters_follow_every_kind_of_change() {
        let mut l = fresh();
        let steps: &[(&[L], &[&str])] = &[
            // added, one unmatched (no image B yet)
            (
                &[("L1", "A", "1", &["L1.1"]), ("L2", "B", "1", &["L2.1"])],
                &["A"],
            ),
            // B arrives (unmatched → ready), a newer label supersedes L1
            (
                &[
                    ("L1", "A", "1", &["L1.1"]),
                    ("L2", "B", "1", &["L2.1"]),
                    ("L3", "A", "2", &["L3.1"]),
                ],
                &["A", "B"],
            ),
            // L3 and L2 gone
            (&[("L1", "A", "1", &["L1.1"])], &["A", "B"]),
            // L2 back, with a new instance
            (
                &[
                    ("L1", "A", "1", &["L1.1"]),
                    ("L2", "B", "1", &["L2.1", "L2.2"]),
                ],
                &["A", "B"],
            ),
        ];
        for (labels, images) in steps {
            run(&mut l, labels, images);
            let s = l.summary().unwrap();
            assert_eq!(
                (s.labels_by_status.clone(), s.labels_gone),
                counts_by_hand(&l)
            );
        }
        l.remove_labels(&["L1".to_string()], "ds").unwrap();
        let s = l.summary().unwrap();
        assert_eq!(
            (s.labels_by_status.clone(), s.labels_gone),
            counts_by_hand(&l)
        );
        assert_eq!((s.count(LabelStatus::Ready), s.labels_gone), (1, 2));
    }

    #[test]
    fn a_version_2_file_gets_its_counters_from_the_labels_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let mut l = Ledger::open(&path, Duration::ZERO).unwrap();
            run(
                &mut l,
                &[("L1", "A", "1", &["L1.1"]), ("L2", "B", "1", &["L2.1"])],
                &["A"],
            );
            // back to what an older segbridge left: schema 2, no counters
            l.conn
                .execute_batch(
                    "DROP TRIGGER labels_counted_insert; DROP TRIGGER labels_counted_delete;
                     DROP TRIGGER labels_counted_update; DROP TABLE label_counts;
                     DROP INDEX labels_status; ALTER TABLE labels DROP COLUMN remote_stamp;
                     ALTER TABLE labels DROP COLUMN verdict_key;
                     PRAGMA user_version = 2;",
                )
                .unwrap();
        }
        let ro = Ledger::open_read_only(&path).unwrap();
        let by_hand = counts_by_hand(&ro);
        let s = ro.summary().unwrap();
        assert_eq!((s.labels_by_status, s.labels_gone), by_hand);
        drop(ro);
        let l = Ledger::open(&path, Duration::ZERO).unwrap();
        assert_eq!(l.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let s = l.summary().unwrap();
        assert_eq!((s.labels_by_status.clone(), s.labels_gone), by_hand);
        assert_eq!(
            (s.count(LabelStatus::Ready), s.count(LabelStatus::Unmatched)),
            (1, 1)
        );
    }

    #[test]
    fn known_labels_are_looked_up_for_the_listed_uids_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let lookup = KnownLookup::State(path.clone());
        assert!(lookup.among(["L0"]).is_empty(), "no state file yet");
        let mut l = Ledger::open(&path, Duration::ZERO).unwrap();
        // 1,200 labels: more than one query's worth of UIDs
        let uids: Vec<String> = (0..1200).map(|i| format!("L{i}")).collect();
        let insts: Vec<Vec<String>> = uids.iter().map(|u| vec![format!("{u}.1")]).collect();
        let mut index = ImageIndex::default();
        index.insert("A.sop", "A", "st", "CT");
        let segs = uids
            .iter()
            .zip(&insts)
            .map(|(u, i)| SegSeries {
                first: SegInstance {
                    sop_class: crate::dicom::SEG_SOP_CLASS.into(),
                    sop_instance: i[0].clone(),
                    series: u.clone(),
                    study: "st".into(),
                    instance_number: Some(1),
                    // L0 and L1 reference an image that is not there: unmatched
                    referenced_series: vec![if u == "L0" || u == "L1" { "Z" } else { "A" }.into()],
                    source_instances: vec![],
                    sort_key: SortKey {
                        content: "1".into(),
                        uid: u.clone(),
                        ..Default::default()
                    },
                    segment_count: 1,
                },
                instances: i.clone(),
                locations: vec![format!("/f/{u}")],
                files: vec![],
                warnings: vec![],
                remote_id: None,
                remote_stamp: None,
            })
            .collect();
        let listing = Listing {
            source: "folder:/f".into(),
            ..Default::default()
        };
        l.apply(&listing, &match_all(segs, &index), "ds").unwrap();
        l.remove_labels(&["L2".to_string()], "ds").unwrap();
        let asked: Vec<&str> = uids.iter().map(String::as_str).chain(["nope"]).collect();
        let known = lookup.among(asked.iter().copied());
        // all but the unmatched (L0, L1) and the gone (L2)
        assert_eq!(known.len(), 1197);
        assert!(!known.contains_key("L0") && !known.contains_key("L2"));
        assert_eq!(known["L1199"].instances, 1);
        assert!(is_unchanged(&known, "L3", Some(1), None));
        assert!(!is_unchanged(&known, "L3", Some(2), None));
        // a listing that names its instances: recorded without a stamp, so read once more
        assert!(!is_unchanged(
            &known,
            "L3",
            Some(1),
            Some("orthanc-instances:x")
        ));
        // only what was asked
        let few = lookup.among(["L5", "L6", "nope"]);
        assert_eq!(few.len(), 2);
        assert!(KnownLookup::Nothing.among(["L5"]).is_empty());
        assert!(lookup.among(std::iter::empty()).is_empty());
    }
}
