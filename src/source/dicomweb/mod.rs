//! The DICOMweb source: QIDO-RS lists SEG series (paged), WADO-RS metadata gives each new or
//! changed SEG's references (QIDO never returns sequences), QIDO checks the image series exist
//! and pass the dataset's image filter.
//!
//! A hand-written client over the project's one reqwest stack rather than the `dicom-web` crate:
//! that crate pulls a second major version of reqwest (and hyper, rustls) into the binary, and
//! segbridge needs only four requests, with its own auth, body caps and concurrency bound.
//! DICOM JSON is parsed by `dicom-json` into the same objects the file reader builds, so one
//! function ([`crate::dicom::reader::header_from_object`]) reads SEG headers from both.

use std::collections::{HashMap, HashSet};

use crate::dicom::quality::{
    instances_key, parse_full, reuse_known, Decoded, Quality, SeriesGeometry, Validator,
};

use futures_util::stream::{self, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use dicom_dictionary_std::tags;

use super::dicom_json::{
    each_item, json_key, json_str, qido_items, sanitize, segs_from_metadata, QidoItem, MAX_JSON,
};
use super::endpoint::{is_orthanc_id, is_uid, Endpoint};
use super::http::{PacsClient, PacsError, PacsOptions};
use super::{Listing, Problem};
use crate::dicom::reader::{group_series, InstanceHeader, SegSeries};
use crate::model::Scan;
use crate::model::{ImageIndex, MatchedLabel};

mod backfill;
mod fetch;
mod filters;
mod gate;
mod geometry;
pub use gate::RemoteGate;
mod index;
mod pager;

pub use backfill::{backfill, Pass};

/// One SEG series as a listing names it, before its headers are read.
#[derive(Debug, Clone, Default)]
pub struct RemoteSeries {
    pub study: String,
    pub series: String,
    /// Number of instances, when the listing says (the cheap change signal).
    pub instances: Option<i64>,
    /// The server's own ID (Orthanc).
    pub remote_id: Option<String>,
    /// Orthanc's IDs of the series' instances, when listed through its REST API: their
    /// headers are then read from the files themselves (see [`DicomWeb::series_header_of`]).
    pub orthanc_instances: Vec<String>,
    /// Orthanc's ID of the series' study, when listed through its REST API: `study` is then
    /// left empty, as the files read give it; it is looked up only for a series whose files
    /// cannot be read (WADO-RS needs it).
    pub orthanc_study: Option<String>,
}

impl RemoteSeries {
    /// A digest of the listed instance set, when the listing names the instances (Orthanc's
    /// IDs are digests of the instance UIDs): a new instance set with the same count differs.
    pub fn stamp(&self) -> Option<String> {
        if self.orthanc_instances.is_empty() {
            return None;
        }
        let mut ids: Vec<&str> = self.orthanc_instances.iter().map(String::as_str).collect();
        ids.sort_unstable();
        let mut h = sha1_smol::Sha1::new();
        for id in ids {
            h.update(id.as_bytes());
            h.update(b"\n");
        }
        Some(format!("orthanc-instances:{}", h.digest()))
    }
}

/// A DICOMweb server.
#[derive(Clone)]
pub struct DicomWeb {
    pub client: PacsClient,
    pub page_size: usize,
    /// The dataset's image filter, a QIDO query string such as `Modality=CT` (its search
    /// filters: QIDO options such as `limit` are left out).
    pub image_filter: Option<String>,
    /// What a SEG series must match besides `Modality=SEG` for the service to see it: the
    /// image filter's search filters other than Modality (`None`: every SEG is seen).
    pub seg_filter: Option<String>,
    /// The quality gate (None: `--no-validate`).
    pub validator: Option<Validator>,
    /// Orthanc's REST root, when the server is Orthanc: many image checks become one request.
    pub orthanc_rest: Option<PacsClient>,
}

pub use crate::model::Known;

impl DicomWeb {
    /// What the ledger keeps to know a listed series unchanged: the settings its verdict
    /// depended on, and the instance set when the listing names it.
    pub fn listed_stamp(&self, r: &RemoteSeries) -> String {
        format!(
            "{}/{}",
            super::settings_stamp(self.image_filter.as_deref(), self.validator.as_ref()),
            r.stamp().unwrap_or_else(|| "-".into())
        )
    }
}

/// The one type asked of QIDO-RS and WADO-RS metadata: DICOMweb's own JSON, which every server
/// serves. A list (`application/dicom+json, application/json`) made Orthanc's plugin log an
/// error ("Unsupported return MIME type") on every request, though it answered.
const DICOM_JSON: &str = "application/dicom+json";

impl DicomWeb {
    pub fn new(
        base: &str,
        opts: PacsOptions,
        page_size: usize,
        image_filter: Option<String>,
    ) -> Result<DicomWeb, PacsError> {
        let filters = image_filter
            .filter(|f| !f.trim().is_empty())
            .map(|f| crate::model::DatasetFilters::parse(&f));
        Ok(DicomWeb {
            client: PacsClient::new(base, opts)?,
            page_size: page_size.max(1),
            image_filter: filters.as_ref().and_then(|f| f.image_query()),
            seg_filter: filters.as_ref().and_then(|f| f.seg_query()),
            validator: None,
            orthanc_rest: None,
        })
    }

    pub fn source_name(&self) -> String {
        format!("dicomweb:{}", self.client.base)
    }

    /// A QIDO-RS query, its answer (at most [`MAX_JSON`] bytes) parsed into typed results.
    async fn qido(&self, at: &Endpoint) -> Result<Vec<QidoItem>, PacsError> {
        let bytes = self.client.get_at_most(at, DICOM_JSON, MAX_JSON).await?;
        qido_items(&bytes).map_err(|reason| PacsError::Bad {
            url: self.client.url(at),
            reason,
        })
    }

    /// QIDO-RS `/series?Modality=SEG`, in pages that grow while full, until the end
    /// ([`pager::Pager`] tells it from a server's page cap). The flag says whether
    /// the listing is known complete (a server that ignores `offset`, or a listing that hits
    /// [`LISTING_BOUND`], leaves it unknown, and an unknown listing never removes anything).
    pub async fn list_seg_series(&self) -> Result<(Vec<RemoteSeries>, bool), PacsError> {
        let started = std::time::Instant::now();
        let mut pages = 0usize;
        let mut complete = true;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut offset = 0usize;
        let mut pager = pager::Pager::new(self.page_size);
        let mut malformed = 0usize;
        loop {
            let at = Endpoint::at(&["series"])
                .query("Modality", "SEG")
                .query("limit", pager.limit)
                .query("offset", offset)
                .query(
                    "includefield",
                    json_key(tags::NUMBER_OF_SERIES_RELATED_INSTANCES),
                )
                .query("includefield", json_key(tags::STUDY_INSTANCE_UID));
            pages += 1;
            let items = match self.qido(&at).await {
                Ok(items) => items,
                // a server whose series take more room than Orthanc's: smaller pages
                Err(e @ PacsError::TooLarge { .. }) => {
                    if !pager.too_large() {
                        return Err(e);
                    }
                    tracing::debug!("{e}; pages of {} series from here", pager.limit);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut new_here = 0;
            for it in &items {
                let (Some(study), Some(series)) = (it.study(), it.series()) else {
                    continue;
                };
                if !is_uid(&study) || !is_uid(&series) {
                    malformed += 1;
                    continue;
                }
                if seen.insert(series.clone()) {
                    new_here += 1;
                    out.push(RemoteSeries {
                        study,
                        series,
                        instances: it.instances(),
                        ..Default::default()
                    });
                }
            }
            // a server that ignores `offset` repeats its first page for ever
            if offset > 0 && new_here == 0 && !items.is_empty() {
                tracing::warn!(
                    "{}: the QIDO server ignores offset (page {pages} repeats earlier series); \
                     listing ends with {} series",
                    self.client.base,
                    out.len()
                );
                complete = false;
                break;
            }
            // pages grow while full; a shorter one is the last, or the server's cap
            // (see `pager`); an empty page always ends
            if !pager.next(items.len()) {
                break;
            }
            offset += items.len();
            if let Some(bound) = LISTING_BOUND.hit(pages, out.len(), started.elapsed()) {
                warn!(
                    "{}: the SEG listing stopped at {bound} ({pages} pages, {} series in {:.0?}); \
                     it is treated as incomplete, so nothing is removed",
                    self.client.base,
                    out.len(),
                    started.elapsed()
                );
                complete = false;
                break;
            }
        }
        if malformed > 0 {
            warn!(
                "{}: {malformed} SEG series with a malformed study or series UID left out",
                self.client.base
            );
        }
        Ok((out, complete))
    }

    /// Reads one series a webhook named (by UID) as a partial listing; the study is looked up
    /// when not given, and a series that is not a SEG is ignored.
    pub async fn read_series_by_uid(
        &self,
        uid: &str,
        study: Option<&str>,
        lookup: &dyn crate::model::KnownLabels,
        tx: &mpsc::Sender<Scan>,
    ) -> Result<(), PacsError> {
        let at = Endpoint::at(&["series"])
            .query("SeriesInstanceUID", uid)
            .query("includefield", json_key(tags::MODALITY))
            .query(
                "includefield",
                json_key(tags::NUMBER_OF_SERIES_RELATED_INSTANCES),
            );
        if !is_uid(uid) || study.is_some_and(|s| !is_uid(s)) {
            return Err(PacsError::Bad {
                url: self.client.base.clone(),
                reason: "a series or study UID that is not a DICOM UID".into(),
            });
        }
        let found = self.qido(&at).await?;
        let Some(hit) = found.first() else {
            return Ok(()); // not (or no longer) on the server
        };
        if hit.modality().as_deref() != Some("SEG") {
            return Ok(());
        }
        let study = match study {
            Some(s) => s.to_string(),
            None => hit.study().filter(|s| is_uid(s)).unwrap_or_default(),
        };
        let r = RemoteSeries {
            study,
            series: uid.to_string(),
            instances: hit.instances(),
            ..Default::default()
        };
        let known = lookup.among(&[uid]);
        backfill(
            self,
            &self.source_name(),
            vec![r],
            &known,
            Pass {
                chunk: 1,
                complete: false,
                cursor: None,
            },
            tx,
        )
        .await
    }

    /// The WADO-RS metadata answer of one series (capped at [`MAX_JSON`]), and where it was.
    async fn metadata(&self, study: &str, series: &str) -> Result<(Endpoint, Vec<u8>), String> {
        let path = metadata_at(study, series);
        let v = self
            .client
            .get_at_most(&path, DICOM_JSON, MAX_JSON)
            .await
            .map_err(|e| e.to_string())?;
        Ok((path, v))
    }

    /// WADO-RS metadata of one series → its SEG header.
    pub async fn series_header(&self, study: &str, series: &str) -> Result<SegSeries, String> {
        let (path, v) = self.metadata(study, series).await?;
        let location = self.client.url(&series_at(study, series));
        segs_from_metadata(&v, &location)
            .map_err(|e| format!("{}: {e}", self.client.url(&path)))?
            .into_iter()
            .find(|s| s.uid() == series)
            .ok_or_else(|| {
                format!(
                    "{}: no SEG instance of series {series} in the metadata",
                    self.client.url(&path)
                )
            })
    }
}

/// How far one QIDO listing may go: a server that keeps answering full pages of new series
/// would otherwise grow it without end (4,375 pages and 665 MB in 40 s).
pub struct ListingBound {
    pub pages: usize,
    pub series: usize,
    pub time: std::time::Duration,
}

/// The bound of every SEG listing: 2,000 pages, 200,000 series, 10 minutes.
pub const LISTING_BOUND: ListingBound = ListingBound {
    pages: 2_000,
    series: 200_000,
    time: std::time::Duration::from_secs(600),
};

impl ListingBound {
    /// Which bound a listing has reached, if any.
    fn hit(&self, pages: usize, series: usize, took: std::time::Duration) -> Option<String> {
        if pages >= self.pages {
            Some(format!("the bound of {} pages", self.pages))
        } else if series >= self.series {
            Some(format!("the bound of {} series", self.series))
        } else if took >= self.time {
            Some(format!("the bound of {:?}", self.time))
        } else {
            None
        }
    }
}

/// WADO-RS: one series.
fn series_at(study: &str, series: &str) -> Endpoint {
    Endpoint::at(&["studies", study, "series", series])
}

/// WADO-RS: one series' metadata.
fn metadata_at(study: &str, series: &str) -> Endpoint {
    Endpoint::at(&["studies", study, "series", series, "metadata"])
}
