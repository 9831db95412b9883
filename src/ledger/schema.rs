//! The state file itself: its schema migrations (`PRAGMA user_version` counts those applied),
//! how a status is stored, the file's private mode, and the advisory lock that makes one
//! process its only writer.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::{Ledger, LedgerError};

/// Schema migrations, applied in order; `PRAGMA user_version` is the number applied.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 5: the journal tells segbridge's own deliveries from notify calls made by hand
    //    (`api notify`), which never change what segbridge believes the server holds
    "ALTER TABLE sent ADD COLUMN by_hand INTEGER NOT NULL DEFAULT 0;",
    // 6: the status page lists the labels first seen most recently, all or of one status: an
    //    index in that order for each (the second replaces labels_status, its prefix), so that a
    //    view reads the rows it shows, not every label
    "CREATE INDEX labels_recent ON labels(first_seen DESC, label_uid);
     CREATE INDEX labels_status_recent ON labels(status, present, first_seen DESC, label_uid);
     DROP INDEX labels_status;",
    // 7: each decision looks up the image's pending entries in the outbox; without an index
    //    that scanned the whole outbox, and a first backfill of N labels (N entries pending
    //    until its notify) cost O(N^2): 4 s of CPU at N = 10,000 (PostgreSQL's schema has had
    //    this index from its first version)
    "CREATE INDEX IF NOT EXISTS outbox_image ON outbox(dataset, image_uid);",
];

/// A connection that writes: WAL lets `status` read while a watcher writes; FULL makes a
/// commit survive power loss.
pub(super) fn writer_pragmas(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")
}

impl Ledger {
    /// Applies the SQLite migrations not applied yet, each in its own transaction.
    pub(super) fn init(&mut self) -> Result<(), LedgerError> {
        let version = self.schema_version()?;
        self.check_version()?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let to = (i + 1) as i64;
            self.tx(|db| db.batch(&format!("{m};\nPRAGMA user_version = {to};")))?;
        }
        self.migrated = true;
        Ok(())
    }
}

/// A state file in a directory segbridge cannot write (`status` only reads): SQLite cannot
/// create the WAL's shared-memory file there, so the file is opened as immutable (no writer can
/// be at work in such a directory).
pub(super) fn read_only_dir_fallback(path: &Path) -> Option<Connection> {
    let abs = std::fs::canonicalize(path).ok()?;
    let mut uri = url::Url::from_file_path(abs).ok()?;
    uri.set_query(Some("immutable=1"));
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
    Connection::open_with_flags(uri.as_str(), flags).ok()
}

/// Makes the state file private (0600) before SQLite opens it: created so when new, narrowed
/// when an older segbridge left it readable. SQLite gives its WAL and shared-memory files the
/// database file's mode.
pub(super) fn private_file(path: &Path) -> std::io::Result<()> {
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
pub(super) fn acquire_lock(path: &Path, wait: Duration) -> Result<File, LedgerError> {
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
