//! The Orthanc source: Orthanc's own REST API for the cheap paths (one `/tools/find` lists every
//! SEG series with its instance count; `/changes` is the steady-state feed, one small request
//! when idle; SEG headers from the files; image checks by lists of UIDs) and its DICOMweb root
//! for what REST cannot answer as well (large SEGs, the quality gate's retrieves).
//!
//! `/changes` never reports deletions: each poll also compares Orthanc's count of series with
//! the series the feed says were created (`orthanc/deletions.rs`), and a missing one runs the
//! full listing (reconcile) at once; it also runs on start and every `--reconcile`. Deletion
//! hooks (`serve`) come in through the same ledger.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};
use tokio::sync::mpsc;

mod answers;
pub mod archive;
mod deletions;
mod feed;
pub use answers::ChangesPoll;
pub use answers::{Found, FoundInstance, FoundTags};
pub use deletions::{Deletions, Verdict};
pub use feed::Feed;

use super::dicomweb::{backfill, DicomWeb, Known, Pass, RemoteSeries};
use super::endpoint::{is_orthanc_id, is_uid, Endpoint};
use super::http::{PacsClient, PacsError, PacsOptions};
use crate::model::known::is_unchanged;
use crate::model::KnownLabels;
use crate::model::Scan;

/// Above this many lookups, one bulk `/tools/find` replaces one request each.
pub const BULK: usize = 16;

/// UIDs per `/tools/find` that matches a list of UIDs (a body of about 32 KiB).
const UIDS_PER_FIND: usize = 500;

fn tools_find() -> Endpoint {
    Endpoint::at(&["tools", "find"])
}

/// `/tools/find` at `level` with `query`, expanded.
pub async fn find(rest: &PacsClient, level: &str, query: Value) -> Result<Vec<Found>, PacsError> {
    rest.post_json(
        &tools_find(),
        &json!({"Level": level, "Query": query, "Expand": true}),
    )
    .await
}

/// Whether `uid` can go into a `/tools/find` list of UIDs as it is: digits and dots only, so
/// that nothing in it reads as a list separator or a wildcard.
pub fn listable_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// The `/tools/find` bodies for the resources at `level` whose `tag` is one of `uids` (each
/// listable), plus `extra` constraints: one per 500 UIDs, so the cost follows the UIDs asked,
/// not the size of the PACS.
fn uid_list_queries(
    level: &str,
    tag: &str,
    uids: &[&str],
    extra: &serde_json::Map<String, Value>,
    expand: bool,
) -> Vec<Value> {
    uids.chunks(UIDS_PER_FIND)
        .map(|part| {
            let mut query = extra.clone();
            query.insert(tag.to_string(), json!(part.join("\\")));
            json!({"Level": level, "Query": query, "Expand": expand})
        })
        .collect()
}

/// The resources at `level` whose `tag` is one of `uids`, expanded.
pub async fn find_by_uids(
    rest: &PacsClient,
    level: &str,
    tag: &str,
    uids: &[&str],
) -> Result<Vec<Found>, PacsError> {
    let mut found = Vec::new();
    for body in uid_list_queries(level, tag, uids, &serde_json::Map::new(), true) {
        found.extend(rest.post_json::<Vec<Found>>(&tools_find(), &body).await?);
    }
    Ok(found)
}

/// The Orthanc IDs of the resources at `level` whose `tag` is one of `uids` and that also
/// match `extra`.
pub async fn ids_by_uids(
    rest: &PacsClient,
    level: &str,
    tag: &str,
    uids: &[&str],
    extra: &serde_json::Map<String, Value>,
) -> Result<Vec<String>, PacsError> {
    let mut ids = Vec::new();
    for body in uid_list_queries(level, tag, uids, extra, false) {
        ids.extend(
            rest.post_json::<Vec<String>>(&tools_find(), &body)
                .await?
                .into_iter()
                .filter(|id| is_orthanc_id(id)),
        );
    }
    Ok(ids)
}

#[derive(Clone)]
pub struct Orthanc {
    pub rest: PacsClient,
    pub dicomweb: DicomWeb,
    /// React to NewSeries as well as StableSeries (when Orthanc's StableAge is long).
    pub on_new_series: bool,
}

/// Orthanc's series ID: SHA-1 of "PatientID|StudyInstanceUID|SeriesInstanceUID", as 40 hex
/// digits in five groups of eight.
pub fn series_id(patient: &str, study: &str, series: &str) -> String {
    let hex = sha1_smol::Sha1::from(format!("{patient}|{study}|{series}"))
        .digest()
        .to_string();
    hex.as_bytes()
        .chunks(8)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("-")
}

impl Orthanc {
    pub fn new(
        url: &str,
        dicomweb_root: Option<&str>,
        opts: PacsOptions,
        page_size: usize,
        image_filter: Option<String>,
    ) -> Result<Orthanc, PacsError> {
        let url = url.trim_end_matches('/');
        let dw_root = dicomweb_root
            .map(str::to_string)
            .unwrap_or_else(|| format!("{url}/dicom-web"));
        let rest = PacsClient::new(url, opts.clone())?;
        let mut dicomweb = DicomWeb::new(&dw_root, opts, page_size, image_filter)?;
        // image checks in bulk through Orthanc's REST API when there are many
        dicomweb.orthanc_rest = Some(rest.clone());
        Ok(Orthanc {
            rest,
            dicomweb,
            on_new_series: false,
        })
    }

    pub fn source_name(&self) -> String {
        format!("orthanc:{}", self.rest.base)
    }

    /// Every SEG series, with its Orthanc ID and instance count, in one request.
    pub async fn list_seg_series(&self) -> Result<Vec<(RemoteSeries, String)>, PacsError> {
        let found = find(&self.rest, "Series", json!({"Modality": "SEG"})).await?;
        Ok(found.into_iter().filter_map(found_series).collect())
    }

    /// Fills in the study UIDs of the series that will be read (the others do not need it).
    async fn with_studies(
        &self,
        entries: Vec<(RemoteSeries, String)>,
        known: &Known,
    ) -> Result<Vec<RemoteSeries>, PacsError> {
        let parents: HashSet<String> = entries
            .iter()
            .filter(|(r, _)| {
                r.study.is_empty()
                    && !is_unchanged(
                        known,
                        &r.series,
                        r.instances,
                        Some(&self.dicomweb.listed_stamp(r)),
                    )
            })
            .map(|(_, p)| p.clone())
            .collect();
        let studies = study_uids(&self.rest, &parents).await?;
        let mut out = Vec::with_capacity(entries.len());
        for (mut r, parent) in entries {
            if r.study.is_empty()
                && !is_unchanged(
                    known,
                    &r.series,
                    r.instances,
                    Some(&self.dicomweb.listed_stamp(&r)),
                )
            {
                r.study = studies
                    .get(&parent)
                    .cloned()
                    .ok_or_else(|| PacsError::Bad {
                        url: self.rest.url(&Endpoint::at(&["studies", &parent])),
                        reason: "study not found (deleted while listing?)".into(),
                    })?;
            }
            out.push(r);
        }
        Ok(out)
    }

    /// One series by Orthanc ID: `None` when it is gone, else (entry, parent study, modality).
    pub async fn series(
        &self,
        id: &str,
    ) -> Result<Option<(RemoteSeries, String, String)>, PacsError> {
        let at = Endpoint::at(&["series", id]);
        if !is_orthanc_id(id) {
            return Err(PacsError::Bad {
                url: self.rest.base.clone(),
                reason: format!("{:?} is not an Orthanc series ID", id),
            });
        }
        // the same resource as a `/tools/find` answer item, read the same way
        match self.rest.get_json::<Found>(&at, "application/json").await {
            Ok(f) => {
                let modality = f.tags.modality.clone().unwrap_or_default();
                Ok(found_series(f).map(|(r, parent)| (r, parent, modality)))
            }
            Err(PacsError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The Orthanc ID of instance `id`'s series: `None` when the instance is gone.
    pub async fn instance_series(&self, id: &str) -> Result<Option<String>, PacsError> {
        if !is_orthanc_id(id) {
            return Err(PacsError::Bad {
                url: self.rest.base.clone(),
                reason: format!("{id:?} is not an Orthanc instance ID"),
            });
        }
        let at = Endpoint::at(&["instances", id]);
        match self
            .rest
            .get_json::<FoundInstance>(&at, "application/json")
            .await
        {
            Ok(f) => match f.parent_series.filter(|s| is_orthanc_id(s)) {
                Some(series) => Ok(Some(series)),
                None => Err(PacsError::Bad {
                    url: self.rest.url(&at),
                    reason: "no ParentSeries, or not an Orthanc ID".into(),
                }),
            },
            Err(PacsError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A full listing (reconcile): every SEG series, reading only new or changed ones.
    pub async fn reconcile(
        &self,
        lookup: &dyn KnownLabels,
        chunk: usize,
        cursor: Option<String>,
        tx: &mpsc::Sender<Scan>,
    ) -> Result<(), PacsError> {
        let listed = self.list_seg_series().await?;
        let uids: Vec<&str> = listed.iter().map(|(r, _)| r.series.as_str()).collect();
        let known = lookup.among(&uids);
        let listed = self.with_studies(listed, &known).await?;
        backfill(
            &self.dicomweb,
            &self.source_name(),
            listed,
            &known,
            Pass {
                chunk,
                complete: true,
                cursor,
            },
            tx,
        )
        .await
    }

    /// Reads the series hooks named (by Orthanc ID) as one partial listing; non-SEG series and
    /// series already gone are ignored.
    pub async fn read_series(
        &self,
        ids: &[String],
        lookup: &dyn KnownLabels,
        tx: &mpsc::Sender<Scan>,
    ) -> Result<(), PacsError> {
        let mut entries = Vec::new();
        for id in ids {
            if let Some((r, parent, modality)) = self.series(id).await? {
                if modality == "SEG" {
                    entries.push((r, parent));
                }
            }
        }
        if entries.is_empty() {
            return Ok(());
        }
        let uids: Vec<&str> = entries.iter().map(|(r, _)| r.series.as_str()).collect();
        let known = lookup.among(&uids);
        let listed = self.with_studies(entries, &known).await?;
        let pass = Pass {
            chunk: 200,
            complete: false,
            cursor: None,
        };
        backfill(
            &self.dicomweb,
            &self.source_name(),
            listed,
            &known,
            pass,
            tx,
        )
        .await
    }
}

/// StudyInstanceUIDs of Orthanc studies: one request each for a few, one `/tools/find` for
/// every study when there are many.
pub async fn study_uids(
    rest: &PacsClient,
    ids: &HashSet<String>,
) -> Result<HashMap<String, String>, PacsError> {
    let mut out = HashMap::new();
    if ids.len() > BULK {
        for s in find(rest, "Study", json!({})).await? {
            if let Some(uid) = s.tags.study.filter(|u| is_uid(u)) {
                if ids.contains(&s.id) {
                    out.insert(s.id, uid);
                }
            }
        }
        return Ok(out);
    }
    for id in ids.iter().filter(|id| is_orthanc_id(id)) {
        match rest
            .get_json::<Found>(&Endpoint::at(&["studies", id]), "application/json")
            .await
        {
            Ok(v) => {
                if let Some(uid) = v.tags.study.filter(|u| is_uid(u)) {
                    out.insert(id.clone(), uid.to_string());
                }
            }
            Err(PacsError::Http { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A found SEG series as a listing entry, with its parent study's Orthanc ID. A series whose
/// UID or IDs break their grammar is left out (and said once per listing by the caller's count).
fn found_series(f: Found) -> Option<(RemoteSeries, String)> {
    let series = f.tags.series?;
    let parent = f.parent_study.unwrap_or_default();
    if !is_uid(&series) || !is_orthanc_id(&f.id) || !is_orthanc_id(&parent) {
        tracing::warn!(
            series = ?series,
            "Orthanc answered a series whose UID or IDs are malformed: left out"
        );
        return None;
    }
    if f.instances.iter().flatten().any(|i| !is_orthanc_id(i)) {
        tracing::warn!(series = %series, "malformed instance IDs in Orthanc's answer: left out");
        return None;
    }
    Some((
        RemoteSeries {
            study: String::new(),
            series,
            instances: f.instances.as_ref().map(|i| i.len() as i64),
            remote_id: Some(f.id),
            orthanc_instances: f.instances.unwrap_or_default(),
        },
        parent,
    ))
}

/// StudyInstanceUIDs of the Orthanc studies `ids`, looked up first by the study UIDs the
/// caller expects them to have (`hints`, one `/tools/find` per 500), then any left over as
/// [`study_uids`] does. The cost follows the studies asked, not the size of the PACS.
pub async fn study_uids_hinted(
    rest: &PacsClient,
    ids: &HashSet<String>,
    hints: &[&str],
) -> Result<HashMap<String, String>, PacsError> {
    let mut out = HashMap::new();
    let hints: Vec<&str> = hints
        .iter()
        .copied()
        .filter(|u| listable_uid(u))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !hints.is_empty() {
        for s in find_by_uids(rest, "Study", "StudyInstanceUID", &hints).await? {
            if let Some(uid) = s.tags.study.filter(|u| is_uid(u)) {
                if ids.contains(&s.id) {
                    out.insert(s.id, uid);
                }
            }
        }
    }
    let rest_ids: HashSet<String> = ids
        .iter()
        .filter(|i| !out.contains_key(*i))
        .cloned()
        .collect();
    if !rest_ids.is_empty() {
        out.extend(study_uids(rest, &rest_ids).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthanc_series_id_is_grouped_sha1() {
        let id = series_id("P", "1.2", "1.2.3");
        assert_eq!(id.len(), 44);
        assert_eq!(id.split('-').count(), 5);
        assert!(id.split('-').all(|g| g.len() == 8));
    }

    #[test]
    fn found_resources_keep_what_is_read_and_survive_odd_values() {
        let (a, p) = (series_id("P", "1", "2"), series_id("P", "1", "3"));
        let (i1, i2) = (series_id("I", "1", "2"), series_id("I", "1", "3"));
        let text = r#"[{"ID": "a", "ParentStudy": "p", "Instances": ["i1", "i2"], "Type": "Series",
                 "MainDicomTags": {"SeriesInstanceUID": "1.2", "Modality": "SEG", "Other": "x"}},
                {"ID": "b", "MainDicomTags": {"SeriesInstanceUID": 7, "Modality": null},
                 "Instances": "odd", "ParentStudy": ["odd"]},
                {"ID": "c"}]"#
            .replace("\"a\"", &format!("{a:?}"))
            .replace("\"p\"", &format!("{p:?}"))
            .replace("\"i1\"", &format!("{i1:?}"))
            .replace("\"i2\"", &format!("{i2:?}"));
        let v: Vec<Found> = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v[0].instances.as_deref(),
            Some(&[i1.clone(), i2.clone()][..])
        );
        assert_eq!(v[0].tags.series.as_deref(), Some("1.2"));
        assert_eq!(v[0].parent_study.as_deref(), Some(p.as_str()));
        assert_eq!(
            (v[1].tags.series.as_ref(), v[1].instances.as_ref()),
            (None, None)
        );
        assert!(v[1].parent_study.is_none() && v[2].tags.modality.is_none());
        let (entry, parent) = found_series(v.into_iter().next().unwrap()).unwrap();
        assert_eq!(
            (
                entry.instances,
                entry.orthanc_instances.len(),
                parent.as_str()
            ),
            (Some(2), 2, p.as_str())
        );
        // a series whose IDs are not Orthanc IDs is left out
        let odd: Found = serde_json::from_str(
            r#"{"ID": "../tools/find", "ParentStudy": "p",
                "MainDicomTags": {"SeriesInstanceUID": "1.2"}}"#,
        )
        .unwrap();
        assert!(found_series(odd).is_none());
    }

    #[test]
    fn only_plain_uids_go_into_a_list_query() {
        assert!(listable_uid("1.2.840.10008.5.1.4.1.1.66.4"));
        for odd in ["", "1.2\\3.4", "1.2*", "1.2?", " 1.2", &"1".repeat(65)] {
            assert!(!listable_uid(odd), "{odd:?}");
        }
    }
}
