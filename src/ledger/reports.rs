//! What the ledger reports: a run's summary (from the trigger-kept counters), `status`, and
//! label listings. Read-only; the cost follows what is reported, not the size of the ledger.

use serde::Serialize;

use super::db::{args, DbError, Dialect, Row, Val};
use super::{sql, Ledger, LedgerError};
use crate::model::status::LabelStatus;
use crate::util::time::fmt_time;

/// What a run reports at its end: label counts, the labels that need attention, unreadable
/// files. Its cost follows what it reports, not the size of the ledger.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Present labels by status.
    pub labels_by_status: Vec<(LabelStatus, i64)>,
    pub labels_gone: i64,
    /// Present labels that are unusable, unmatched or invalid.
    pub attention: Vec<LabelRow>,
    pub problems: Vec<crate::model::scan::Problem>,
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
    /// Of `entries_sent`, those sent by hand (`api notify`).
    pub entries_sent_by_hand: i64,
    pub last_notify: Option<String>,
    pub attention: Vec<LabelRow>,
    pub problems: Vec<crate::model::scan::Problem>,
}

/// What the status page reads at each view: the counts, the outbox and the journal, and at most
/// a given number of unreadable files (with how many there are). No row per label: its cost
/// does not grow with the labels (the page lists them through [`Ledger::recent_labels`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overview {
    pub labels_by_status: Vec<(LabelStatus, i64)>,
    pub labels_gone: i64,
    pub images_notified: i64,
    pub outbox_depth: i64,
    pub outbox_oldest: Option<String>,
    pub outbox_last_error: Option<String>,
    pub entries_sent: i64,
    pub entries_sent_by_hand: i64,
    pub last_notify: Option<String>,
    /// The first unreadable files of the last listing, by path.
    pub problems: Vec<crate::model::scan::Problem>,
    /// How many unreadable files there are in all.
    pub problems_total: i64,
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

/// A label and when the ledger first saw it, for the status page.
#[derive(Debug, Clone, Serialize)]
pub struct RecentLabel {
    #[serde(flatten)]
    pub row: LabelRow,
    /// Unix seconds.
    pub first_seen: i64,
}

fn label_row(r: &Row) -> Result<LabelRow, DbError> {
    Ok(LabelRow {
        label: r.text(0)?,
        image: r.opt_text(1)?,
        status: r.status(2)?,
        rule: r.text(3)?,
        reason: r.text(4)?,
        source: r.text(5)?,
    })
}

/// The query of [`Ledger::recent_labels`]: each form walks an index in its order
/// (`labels_recent`, or `labels_status_recent` for a status), so that it reads `limit` rows, not
/// every label.
pub(super) fn recent_query(status: Option<LabelStatus>, limit: usize) -> (String, Vec<Val>) {
    let columns = "SELECT label_uid, image_uid, CASE WHEN present = 1 THEN status ELSE ?1 END,
                   rule, reason, source, first_seen FROM labels";
    let order = "ORDER BY first_seen DESC, label_uid LIMIT ?2";
    let mut a = args![LabelStatus::Gone, limit].to_vec();
    let q = match status {
        None => format!("{columns} {order}"),
        Some(LabelStatus::Gone) => format!("{columns} WHERE present = 0 {order}"),
        Some(s) => {
            a.push(s.into());
            format!("{columns} WHERE status = ?3 AND present = 1 {order}")
        }
    };
    (q, a)
}

impl Ledger {
    /// The `limit` labels first seen most recently; with `status`, only those with it (`Gone`:
    /// those no longer present). How many there are in all is in [`Ledger::summary`]'s counts.
    pub fn recent_labels(
        &self,
        status: Option<LabelStatus>,
        limit: usize,
    ) -> Result<Vec<RecentLabel>, LedgerError> {
        let (q, a) = recent_query(status, limit);
        self.db
            .rows(&q, &a)
            .and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok(RecentLabel {
                            row: label_row(r)?,
                            first_seen: r.int(6)?,
                        })
                    })
                    .collect()
            })
            .map_err(|e| sql(&self.path, e))
    }

    /// Every label the ledger has, for `status --json` and tests.
    pub fn labels(&self) -> Result<Vec<LabelRow>, LedgerError> {
        self.label_rows(
            "SELECT label_uid, image_uid, CASE WHEN present = 1 THEN status ELSE ?1 END, rule,
                    reason, source FROM labels ORDER BY label_uid",
            &args![LabelStatus::Gone],
        )
    }

    fn label_rows(&self, q: &str, a: &[Val]) -> Result<Vec<LabelRow>, LedgerError> {
        self.db
            .rows(q, a)
            .and_then(|rows| rows.iter().map(label_row).collect())
            .map_err(|e| sql(&self.path, e))
    }

    /// Present labels by status, and those gone: from the counters and the status index (no
    /// scan of every label).
    fn label_counts(&self) -> Result<(Vec<(LabelStatus, i64)>, i64), LedgerError> {
        let p = &self.path;
        let mut labels_by_status = Vec::new();
        let mut labels_gone = 0;
        // SQLite keeps counters (version 3 on); PostgreSQL and a file an older segbridge wrote,
        // opened read-only (not migrated), count from the status index
        let counts = if self.dialect() == Dialect::Sqlite && self.schema_version()? >= 3 {
            "SELECT present, status, n FROM label_counts WHERE n > 0 ORDER BY status"
        } else {
            "SELECT present, status, COUNT(*) FROM labels GROUP BY present, status ORDER BY status"
        };
        for r in self.db.rows(counts, &[]).map_err(|e| sql(p, e))? {
            let (present, status, n) =
                (|| Ok::<_, DbError>((r.int(0)?, r.status(1)?, r.int(2)?)))()
                    .map_err(|e| sql(p, e))?;
            if present == 1 {
                labels_by_status.push((status, n));
            } else {
                labels_gone += n;
            }
        }
        Ok((labels_by_status, labels_gone))
    }

    /// The unreadable files of the last listing by path, the first `limit` (None: all).
    fn problems(
        &self,
        limit: Option<usize>,
    ) -> Result<Vec<crate::model::scan::Problem>, LedgerError> {
        let q = "SELECT path, reason FROM problems ORDER BY path";
        let (q, a) = match limit {
            Some(n) => (format!("{q} LIMIT ?1"), args![n].to_vec()),
            None => (q.to_string(), vec![]),
        };
        self.db
            .rows(&q, &a)
            .and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok(crate::model::scan::Problem {
                            path: r.text(0)?,
                            reason: r.text(1)?,
                        })
                    })
                    .collect()
            })
            .map_err(|e| sql(&self.path, e))
    }

    /// Present labels that will not be notified (unusable, unmatched, invalid), every one.
    fn attention(&self) -> Result<Vec<LabelRow>, LedgerError> {
        self.label_rows(
            "SELECT label_uid, image_uid, status, rule, reason, source FROM labels
             WHERE status IN (?1, ?2, ?3) AND present = 1
             ORDER BY status, label_uid",
            &args![
                LabelStatus::Unusable,
                LabelStatus::Unmatched,
                LabelStatus::Invalid,
            ],
        )
    }

    /// A run's summary, from the counters and the status index (no scan of every label).
    pub fn summary(&self) -> Result<Summary, LedgerError> {
        let (labels_by_status, labels_gone) = self.label_counts()?;
        Ok(Summary {
            labels_by_status,
            labels_gone,
            attention: self.attention()?,
            problems: self.problems(None)?,
        })
    }

    /// The counts, the outbox and the journal, and the first `problems` unreadable files (None:
    /// all): what the status page reads at each view.
    pub fn overview(&self, problems: Option<usize>) -> Result<Overview, LedgerError> {
        let p = &self.path;
        let one =
            |q: &str| -> Result<i64, LedgerError> { self.db.one(q, &[]).map_err(|e| sql(p, e)) };
        let oldest = self
            .db
            .row("SELECT MIN(created_at) FROM outbox", &[])
            .and_then(|r| r.map(|r| r.opt_int(0)).transpose())
            .map_err(|e| sql(p, e))?
            .flatten();
        let last_error = self
            .db
            .row(
                "SELECT last_error FROM outbox WHERE last_error IS NOT NULL ORDER BY id DESC LIMIT 1",
                &[],
            )
            .and_then(|r| r.map(|r| r.opt_text(0)).transpose())
            .map_err(|e| sql(p, e))?
            .flatten();
        let (labels_by_status, labels_gone) = self.label_counts()?;
        Ok(Overview {
            labels_by_status,
            labels_gone,
            images_notified: one("SELECT COUNT(*) FROM images WHERE label_uid IS NOT NULL")?,
            outbox_depth: one("SELECT COUNT(*) FROM outbox")?,
            outbox_oldest: oldest.map(fmt_time),
            outbox_last_error: last_error,
            entries_sent: one("SELECT COUNT(*) FROM sent")?,
            entries_sent_by_hand: one("SELECT COUNT(*) FROM sent WHERE by_hand = 1")?,
            last_notify: self.last_notify()?.map(fmt_time),
            problems: self.problems(problems)?,
            problems_total: one("SELECT COUNT(*) FROM problems")?,
        })
    }

    /// Everything the ledger knows, for `status`: the overview, with every unreadable file and
    /// every label that needs attention.
    pub fn status(&self) -> Result<StatusReport, LedgerError> {
        let o = self.overview(None)?;
        Ok(StatusReport {
            state: self.path.clone(),
            schema_version: self.schema_version()?,
            labels_by_status: o.labels_by_status,
            labels_gone: o.labels_gone,
            images_notified: o.images_notified,
            outbox_depth: o.outbox_depth,
            outbox_oldest: o.outbox_oldest,
            outbox_last_error: o.outbox_last_error,
            entries_sent: o.entries_sent,
            entries_sent_by_hand: o.entries_sent_by_hand,
            last_notify: o.last_notify,
            attention: self.attention()?,
            problems: o.problems,
        })
    }
}
