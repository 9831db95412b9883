//! What sources ask the ledger before reading: the known labels among a listing's UIDs (to
//! skip unchanged series), the unmatched labels, a series by the source's own ID.

use super::db::{args, Val};
use super::{sql, Ledger, LedgerError, StateAt};
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
    /// The ledger, opened read-only for each lookup (it never takes the writer's lock, and
    /// with WAL it reads beside a writer).
    State(StateAt),
}

impl KnownLookup {
    /// The known labels among `uids`. A state file that cannot be read (not there yet, locked
    /// too long) means nothing known: series are read again, never skipped wrongly.
    pub fn among<'a>(&self, uids: impl IntoIterator<Item = &'a str>) -> Known {
        let KnownLookup::State(at) = self else {
            return Known::default();
        };
        let mut uids = uids.into_iter().peekable();
        if uids.peek().is_none() || at.file().is_some_and(|p| !p.exists()) {
            return Known::default();
        }
        match Ledger::open_read_only(at).and_then(|l| l.known_among(uids)) {
            Ok(k) => k,
            // an unreachable PostgreSQL is said once by the lease keeper
            Err(e @ LedgerError::Unreachable { .. }) => {
                tracing::debug!("{e}; reading every listed series again");
                Known::default()
            }
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

    fn unmatched(&self, source: &str) -> Vec<(String, String)> {
        match self {
            KnownLookup::Nothing => Vec::new(),
            KnownLookup::State(at) => Ledger::open_read_only(at)
                .and_then(|l| l.unmatched_labels(source))
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
            let q = format!(
                "SELECT label_uid, instances, status, reason, remote_stamp, verdict_key FROM labels
                 WHERE label_uid IN ({marks}) AND present = 1 AND status != ?"
            );
            let mut a: Vec<Val> = part.iter().map(|u| Val::from(*u)).collect();
            a.push(LabelStatus::Unmatched.into());
            let rows = self.db.rows(&q, &a).map_err(|e| sql(&self.path, e))?;
            for r in rows {
                let k = (|| {
                    Ok::<_, super::DbError>((
                        r.text(0)?,
                        KnownLabel {
                            instances: r.int(1)?,
                            status: r.status(2)?,
                            reason: r.text(3)?,
                            stamp: r.opt_text(4)?,
                            verdict_key: r.opt_text(5)?,
                        },
                    ))
                })()
                .map_err(|e| sql(&self.path, e))?;
                known.insert(k.0, k.1);
            }
        }
        Ok(known)
    }

    /// Present labels of `source` that are unmatched (their image may have arrived since).
    pub fn unmatched_labels(&self, source: &str) -> Result<Vec<(String, String)>, LedgerError> {
        self.db
            .rows(
                "SELECT label_uid, study_uid FROM labels
                 WHERE present = 1 AND status = ?1 AND source = ?2",
                &args![LabelStatus::Unmatched, source],
            )
            .and_then(|rows| rows.iter().map(|r| Ok((r.text(0)?, r.text(1)?))).collect())
            .map_err(|e| sql(&self.path, e))
    }

    /// The label UID of a series known by the source's own ID (Orthanc's), if any.
    pub fn label_by_remote_id(&self, remote_id: &str) -> Result<Option<String>, LedgerError> {
        self.db
            .row(
                "SELECT label_uid FROM labels WHERE remote_id = ?1",
                &args![remote_id],
            )
            .and_then(|r| r.map(|r| r.text(0)).transpose())
            .map_err(|e| sql(&self.path, e))
    }
}
