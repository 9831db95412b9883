//! What sources ask the ledger before reading: the known labels among a listing's UIDs (to
//! skip unchanged series), the unmatched labels, a series by the source's own ID.

use std::path::PathBuf;

use rusqlite::OptionalExtension;

use super::{sql, Ledger, LedgerError};
use crate::model::known::{Known, KnownLabel};
use crate::model::status::LabelStatus;

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

    fn unmatched(&self) -> Vec<(String, String)> {
        match self {
            KnownLookup::Nothing => Vec::new(),
            KnownLookup::State(path) => Ledger::open_read_only(path)
                .and_then(|l| l.unmatched_labels())
                .unwrap_or_default(),
        }
    }
}

impl Ledger {
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
}
