//! The Orthanc source: Orthanc's own REST API for the cheap paths (one `/tools/find` lists every
//! SEG series with its instance count; `/changes` is the steady-state feed, one small request
//! when idle; SEG headers from the files; image checks by lists of UIDs) and its DICOMweb root
//! for what REST cannot answer as well (large SEGs, the quality gate's retrieves).
//!
//! `/changes` never reports deletions: each poll also compares Orthanc's count of series with
//! the series the feed says were created (`orthanc/deletions.rs`), and a missing one runs the
//! full listing (reconcile) at once; it also runs on start and every `--reconcile`. Deletion
//! hooks (`serve`) come in through the same ledger.

use serde_json::json;
use tokio::sync::mpsc;

mod answers;
mod deletions;
mod feed;
pub mod geometry;
pub mod rest;
pub use answers::ChangesPoll;
pub use answers::{Found, FoundInstance, FoundTags};
pub use deletions::{Deletions, Verdict};
pub use feed::Feed;
pub use rest::{
    bulk_content, find, find_by_uids, ids_by_uids, listable_uid, series_id, series_in_seg_studies,
    study_uids, study_uids_hinted, BULK,
};

use super::dicomweb::{backfill, DicomWeb, Pass, RemoteSeries};
use super::endpoint::{is_orthanc_id, is_uid, Endpoint};
use super::http::{PacsClient, PacsError, PacsOptions};
use crate::model::KnownLabels;
use crate::model::Scan;

#[derive(Clone)]
pub struct Orthanc {
    pub rest: PacsClient,
    pub dicomweb: DicomWeb,
    /// React to NewSeries as well as StableSeries (when Orthanc's StableAge is long).
    pub on_new_series: bool,
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
        let listed = listed.into_iter().map(|(r, _)| r).collect();
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
        let listed = entries.into_iter().map(|(r, _)| r).collect();
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
            orthanc_study: Some(parent.clone()),
        },
        parent,
    ))
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
