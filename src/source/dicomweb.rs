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
    instances_key, parse_full, reuse_known, Quality, SeriesGeometry, Validator,
};

use futures_util::stream::{self, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::dicom_json::{
    each_item, json_str, qido_items, sanitize, segs_from_metadata, QidoItem, MAX_JSON,
};
use super::endpoint::{is_orthanc_id, is_uid, Endpoint};
use super::http::{PacsClient, PacsError, PacsOptions};
use super::{Listing, Problem};
use crate::dicom::reader::{group_series, InstanceHeader, SegSeries};
use crate::model::Scan;
use crate::model::{ImageIndex, MatchedLabel};
use crate::rules::matcher::{apply_newest, match_each};

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
    /// The dataset's image filter, a QIDO query string such as `Modality=CT`.
    pub image_filter: Option<String>,
    /// The quality gate (None: `--no-validate`).
    pub validator: Option<Validator>,
    /// Orthanc's REST root, when the server is Orthanc: many image checks become one request.
    pub orthanc_rest: Option<PacsClient>,
}

pub use crate::ledger::Known;

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

const DICOM_JSON: &str = "application/dicom+json, application/json";

impl DicomWeb {
    pub fn new(
        base: &str,
        opts: PacsOptions,
        page_size: usize,
        image_filter: Option<String>,
    ) -> Result<DicomWeb, PacsError> {
        Ok(DicomWeb {
            client: PacsClient::new(base, opts)?,
            page_size: page_size.max(1),
            image_filter: image_filter.filter(|f| !f.trim().is_empty()),
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

    /// QIDO-RS `/series?Modality=SEG`, page by page until a short page. The flag says whether
    /// the listing is known complete (a server that ignores `offset`, or a listing that hits
    /// [`LISTING_BOUND`], leaves it unknown, and an unknown listing never removes anything).
    pub async fn list_seg_series(&self) -> Result<(Vec<RemoteSeries>, bool), PacsError> {
        let started = std::time::Instant::now();
        let mut pages = 0usize;
        let mut complete = true;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut offset = 0usize;
        let mut effective = self.page_size;
        let mut malformed = 0usize;
        loop {
            let at = Endpoint::at(&["series"])
                .query("Modality", "SEG")
                .query("limit", self.page_size)
                .query("offset", offset)
                .query("includefield", "00201209")
                .query("includefield", "0020000D");
            let items = self.qido(&at).await?;
            pages += 1;
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
            // A server may cap the page below our limit: the first page tells the real page
            // size, and a page shorter than that is the last. An empty page always ends.
            if items.is_empty() {
                break;
            }
            // a server that ignores `offset` repeats its first page for ever
            if offset > 0 && new_here == 0 {
                tracing::warn!(
                    "{}: the QIDO server ignores offset (page {} repeats earlier series); \
                     listing ends with {} series",
                    self.client.base,
                    offset / effective.max(1) + 1,
                    out.len()
                );
                complete = false;
                break;
            }
            if offset == 0 && items.len() < effective {
                effective = items.len();
            } else if items.len() < effective {
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
        lookup: &crate::ledger::KnownLookup,
        tx: &mpsc::Sender<Scan>,
    ) -> Result<(), PacsError> {
        let at = Endpoint::at(&["series"])
            .query("SeriesInstanceUID", uid)
            .query("includefield", "00080060")
            .query("includefield", "00201209");
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
        let known = lookup.among([uid]);
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

    /// The SEG header of a listed series. Listed through Orthanc's REST API, its instances'
    /// files are read with the same reader as a folder's (Orthanc answers a small file several
    /// times faster than WADO-RS metadata, whose cost grows with the size of the PACS); a file
    /// over 1 MiB, or one that cannot be read, falls back to WADO-RS metadata.
    pub async fn series_header_of(&self, r: &RemoteSeries) -> Result<SegSeries, String> {
        if let (Some(rest), false) = (&self.orthanc_rest, r.orthanc_instances.is_empty()) {
            match self.header_from_files(rest, r).await {
                Ok(s) => return Ok(s),
                Err(e) => tracing::debug!(series = %r.series, "{e}; reading WADO-RS metadata"),
            }
        }
        self.series_header(&r.study, &r.series).await
    }

    async fn header_from_files(
        &self,
        rest: &PacsClient,
        r: &RemoteSeries,
    ) -> Result<SegSeries, String> {
        const SMALL_FILE: usize = 1024 * 1024;
        let location = self.client.url(&series_at(&r.study, &r.series));
        let mut found = Vec::new();
        for id in &r.orthanc_instances {
            if !is_orthanc_id(id) {
                return Err(format!("{id:?} is not an Orthanc instance ID"));
            }
            let at = Endpoint::at(&["instances", id, "file"]);
            let bytes = rest
                .get_at_most(&at, "application/dicom", SMALL_FILE)
                .await
                .map_err(|e| e.to_string())?;
            match crate::dicom::reader::read_instance_from_bytes(&bytes) {
                Ok(InstanceHeader::Seg(s)) => found.push((s, location.clone())),
                Ok(InstanceHeader::Image(_)) => {}
                Err(e) => return Err(format!("{}: {e}", rest.url(&at))),
            }
        }
        group_series(found)
            .into_iter()
            .find(|s| s.uid() == r.series)
            .ok_or_else(|| format!("no SEG instance of series {} in its files", r.series))
    }

    /// WADO-RS metadata of one series → its SEG header.
    pub async fn series_header(&self, study: &str, series: &str) -> Result<SegSeries, String> {
        let path = metadata_at(study, series);
        let v = self
            .client
            .get_at_most(&path, "application/dicom+json", MAX_JSON)
            .await
            .map_err(|e| e.to_string())?;
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

    /// The quality gate for remote labels: each candidate's instances are retrieved with
    /// WADO-RS (a few series at a time, each answer capped), its image series' geometry comes
    /// from WADO-RS metadata (once per series).
    pub async fn validate_remote(
        &self,
        labels: &mut [MatchedLabel],
        index: &ImageIndex,
        v: &Validator,
        known: &Known,
    ) {
        let todo: Vec<usize> = labels
            .iter_mut()
            .enumerate()
            .filter(|(_, l)| l.is_candidate())
            .filter_map(|(i, l)| {
                let key = instances_key(&l.seg);
                (!reuse_known(l, known, Some(&key))).then_some(i)
            })
            .collect();
        if todo.is_empty() {
            return;
        }
        // geometry of the image series, once each
        let images: HashSet<(String, String)> = todo
            .iter()
            .filter_map(|&i| {
                let img = labels[i].outcome.image()?.to_string();
                Some((index.study_of(&img).unwrap_or("").to_string(), img))
            })
            .collect();
        let conc = self.client.options().concurrency.clamp(1, 4);
        let geoms: HashMap<String, SeriesGeometry> = stream::iter(images)
            .map(|(st, se)| async move {
                let g = self.series_geometry(&st, &se).await;
                (se, g)
            })
            .buffer_unordered(conc)
            .filter_map(|(se, g)| async move {
                match g {
                    Ok(g) => Some((se, g)),
                    Err(e) => {
                        warn!(series = %se, "geometry not checked: {e}");
                        None
                    }
                }
            })
            .collect()
            .await;
        let jobs: Vec<(usize, String, String, Option<String>)> = todo
            .iter()
            .map(|&i| {
                let l = &labels[i];
                (
                    i,
                    l.seg.first.study.clone(),
                    l.seg.uid().to_string(),
                    l.outcome.image().map(str::to_string),
                )
            })
            .collect();
        // each verdict with the instance UIDs it rests on, when it rests on everything: all
        // instances retrieved and parsed, and the image series' geometry known
        let results: Vec<(usize, Quality, Option<Vec<String>>)> = stream::iter(jobs)
            .map(|(i, st, se, image)| {
                let geoms = &geoms;
                async move {
                    match self.retrieve(&st, &se).await {
                        Ok(objs) => {
                            let geom = image.as_ref().and_then(|im| geoms.get(im));
                            let mut q = v.validate(&objs, geom);
                            if geom.is_none() {
                                q.warnings.push(
                                    "geometry not checked: image series metadata unavailable"
                                        .into(),
                                );
                            }
                            let uids = geom.map(|_| {
                                objs.iter()
                                    .map(|o| {
                                        crate::dicom::reader::text(
                                            o,
                                            dicom_dictionary_std::tags::SOP_INSTANCE_UID,
                                        )
                                    })
                                    .collect()
                            });
                            (i, q, uids)
                        }
                        Err(e) => {
                            let q = Quality {
                                problems: vec![format!("cannot retrieve the SEG instances: {e}")],
                                ..Default::default()
                            };
                            (i, q, None)
                        }
                    }
                }
            })
            .buffer_unordered(conc)
            .collect()
            .await;
        for (i, q, uids) in results {
            let l = &mut labels[i];
            l.set_quality(q);
            l.verdict_key = uids
                .filter(|u| *u == l.seg.instances)
                .map(|_| instances_key(&l.seg));
        }
    }

    /// WADO-RS retrieve of a series' instances, parsed (pixel data included).
    async fn retrieve(
        &self,
        study: &str,
        series: &str,
    ) -> Result<Vec<dicom_object::DefaultDicomObject>, String> {
        let parts = self
            .client
            .get_parts(
                &series_at(study, series),
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
            )
            .await
            .map_err(|e| e.to_string())?;
        if parts.is_empty() {
            return Err("no instance in the answer".into());
        }
        // in SOP Instance UID order, as a folder's: the verdict never depends on the answer's
        let mut objs: Vec<dicom_object::DefaultDicomObject> = parts
            .iter()
            .map(|p| parse_full(p))
            .collect::<Result<_, _>>()?;
        objs.sort_by_cached_key(|o| {
            crate::dicom::reader::text(o, dicom_dictionary_std::tags::SOP_INSTANCE_UID)
        });
        Ok(objs)
    }

    /// The geometry of an image series' instances, from its WADO-RS metadata.
    pub async fn series_geometry(
        &self,
        study: &str,
        series: &str,
    ) -> Result<SeriesGeometry, String> {
        let path = metadata_at(study, series);
        let v = self
            .client
            .get_at_most(&path, "application/dicom+json", MAX_JSON)
            .await
            .map_err(|e| e.to_string())?;
        let mut g = SeriesGeometry {
            series: series.to_string(),
            ..Default::default()
        };
        each_item(&v, |_, mut item| {
            sanitize(&mut item, 0);
            let Some(sop) = json_str(&item, "00080018") else {
                return Ok(());
            };
            let obj: dicom_object::InMemDicomObject =
                dicom_json::from_value(item).map_err(|e| format!("metadata: {e}"))?;
            g.instances
                .insert(sop, crate::dicom::reader::geometry_of(&obj));
            Ok(())
        })?;
        Ok(g)
    }

    /// Builds the image index the matcher needs for these SEGs: which referenced series exist
    /// (and pass the filter), and which series hold their source instances when that is needed.
    pub async fn resolve_index(&self, segs: &[SegSeries]) -> Result<ImageIndex, PacsError> {
        let mut index = ImageIndex::default();
        let wanted: Vec<String> = segs
            .iter()
            .filter_map(|s| s.first.referenced_series.first().cloned())
            .filter(|u| is_uid(u))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let conc = self.client.options().concurrency.max(1);
        let mut wanted = wanted;
        if let Some(rest) = self
            .orthanc_rest
            .as_ref()
            .filter(|_| wanted.len() > super::orthanc::BULK)
        {
            let hints: Vec<&str> = segs.iter().map(|s| s.first.study.as_str()).collect();
            // on failure (a filter Orthanc's find cannot express): one QIDO query each, below
            if let Ok((found, odd)) = self.bulk_series(rest, &wanted, &hints).await {
                for (uid, (study, modality, passes)) in found {
                    index.insert_series(&uid, &study, &modality);
                    if !passes {
                        index.exclude(&uid, self.image_filter.clone().unwrap_or_default());
                    }
                }
                wanted = odd;
            }
        }
        let found: Vec<Result<(String, Option<SeriesHit>), PacsError>> = stream::iter(wanted)
            .map(|uid| async move {
                let q = Endpoint::at(&["series"])
                    .query("SeriesInstanceUID", &uid)
                    .query("includefield", "00080060");
                let found = self.qido(&q).await?;
                let Some(hit) = found.first() else {
                    return Ok((uid, None));
                };
                let study = hit.study().filter(|s| is_uid(s)).unwrap_or_default();
                let modality = hit.modality().unwrap_or_default();
                let passes = match &self.image_filter {
                    None => true,
                    Some(f) => {
                        let q = Endpoint::at(&["series"])
                            .query("SeriesInstanceUID", &uid)
                            .filter(f);
                        !self.qido(&q).await?.is_empty()
                    }
                };
                Ok((uid, Some((study, modality, passes))))
            })
            .buffer_unordered(conc)
            .collect()
            .await;
        for r in found {
            let (uid, hit) = r?;
            if let Some((study, modality, passes)) = hit {
                index.insert_series(&uid, &study, &modality);
                if !passes {
                    index.exclude(&uid, self.image_filter.clone().unwrap_or_default());
                }
            }
        }
        self.resolve_sources(index, segs).await
    }

    /// The source-instances fallback: only for SEGs whose referenced series is absent.
    async fn resolve_sources(
        &self,
        mut index: ImageIndex,
        segs: &[SegSeries],
    ) -> Result<ImageIndex, PacsError> {
        let conc = self.client.options().concurrency.max(1);
        // source-instances fallback: only for SEGs whose referenced series is absent
        let mut sops: Vec<String> = Vec::new();
        for s in segs {
            let usable = s
                .first
                .referenced_series
                .first()
                .is_some_and(|r| index.has_series(r));
            if !usable {
                sops.extend(s.source_instances().into_iter().take(16));
            }
        }
        sops.retain(|s| is_uid(s));
        sops.sort();
        sops.dedup();
        let found: Vec<Result<Option<InstanceHit>, PacsError>> = stream::iter(sops)
            .map(|sop| async move {
                let q = Endpoint::at(&["instances"])
                    .query("SOPInstanceUID", &sop)
                    .query("includefield", "0020000E")
                    .query("includefield", "00080060");
                let found = self.qido(&q).await?;
                Ok(found.first().and_then(|hit| {
                    Some((
                        sop.clone(),
                        hit.series().filter(|s| is_uid(s))?,
                        hit.study().filter(|s| is_uid(s)).unwrap_or_default(),
                    ))
                }))
            })
            .buffer_unordered(conc)
            .collect()
            .await;
        for r in found {
            if let Some((sop, series, study)) = r? {
                index.insert(&sop, &series, &study, "");
            }
        }
        Ok(index)
    }

    /// The wanted image series Orthanc has: one `/tools/find` per 500 UIDs (and as many for
    /// the image filter, when it names only plain tags), their studies found by the SEGs'
    /// study UIDs (`hints`). Every request is bounded by the UIDs asked, never by the size of
    /// the PACS. UIDs that cannot go into a list come back unasked, for one QIDO query each.
    async fn bulk_series(
        &self,
        rest: &PacsClient,
        wanted: &[String],
        hints: &[&str],
    ) -> Result<(HashMap<String, SeriesHit>, Vec<String>), PacsError> {
        use super::orthanc::{find_by_uids, ids_by_uids, listable_uid};
        let (listable, odd): (Vec<&String>, Vec<&String>) =
            wanted.iter().partition(|u| listable_uid(u));
        let listable: Vec<&str> = listable.into_iter().map(String::as_str).collect();
        let want: HashSet<&str> = listable.iter().copied().collect();
        let found = find_by_uids(rest, "Series", "SeriesInstanceUID", &listable).await?;
        let passing: Option<HashSet<String>> = match &self.image_filter {
            None => None,
            Some(f) => {
                let mut q = serde_json::Map::new();
                for pair in f.split('&') {
                    let (k, v) = pair.split_once('=').ok_or_else(|| PacsError::Bad {
                        url: rest.url(&Endpoint::at(&["tools", "find"])),
                        reason: format!("image filter {f:?} is not key=value pairs"),
                    })?;
                    q.insert(k.to_string(), json!(v));
                }
                let ids = ids_by_uids(rest, "Series", "SeriesInstanceUID", &listable, &q).await?;
                Some(ids.into_iter().collect())
            }
        };
        let hits: Vec<_> = found
            .into_iter()
            .filter(|s| s.tags.series.as_deref().is_some_and(|u| want.contains(u)))
            .collect();
        let parents: HashSet<String> = hits.iter().filter_map(|s| s.parent_study.clone()).collect();
        let studies = super::orthanc::study_uids_hinted(rest, &parents, hints).await?;
        let mut out = HashMap::new();
        for s in hits {
            let (Some(uid), Some(parent)) = (s.tags.series, s.parent_study) else {
                continue;
            };
            if !is_uid(&uid) || !is_orthanc_id(&parent) {
                continue;
            }
            let Some(study) = studies.get(&parent) else {
                continue;
            };
            let modality = s.tags.modality.unwrap_or_default();
            let passes = passing.as_ref().is_none_or(|p| p.contains(&s.id));
            out.insert(uid, (study.clone(), modality, passes));
        }
        Ok((out, odd.into_iter().cloned().collect()))
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

/// How one pass over a remote listing is recorded.
#[derive(Debug, Clone)]
pub struct Pass {
    /// SEG series per scan sent to the ledger.
    pub chunk: usize,
    /// A complete listing (may remove labels) or a partial one (changes from a feed).
    pub complete: bool,
    /// The source's cursor after this pass, stored with its last scan.
    pub cursor: Option<String>,
}

/// An image series found on the server: (study, modality, passes the image filter).
type SeriesHit = (String, String, bool);
/// A source instance found on the server: (SOP Instance UID, series, study).
type InstanceHit = (String, String, String);

/// Reads what a remote listing names and sends it as scans, in chunks of `chunk` SEG series, so
/// that a long backfill stopped half way keeps what it did. The last scan carries the cursor
/// and, when `complete`, is the complete listing (it alone may remove labels); it is sent only
/// when every step succeeded.
pub async fn backfill(
    dw: &DicomWeb,
    source: &str,
    listed: Vec<RemoteSeries>,
    known: &Known,
    pass: Pass,
    tx: &mpsc::Sender<Scan>,
) -> Result<(), PacsError> {
    let Pass {
        chunk,
        complete,
        cursor,
    } = pass;
    let mut unchanged = Vec::new();
    let mut to_read = Vec::new();
    for r in listed {
        if crate::ledger::is_unchanged(known, &r.series, r.instances, Some(&dw.listed_stamp(&r))) {
            unchanged.push(r.series);
        } else {
            to_read.push(r);
        }
    }
    if !to_read.is_empty() {
        info!(
            source,
            new_or_changed = to_read.len(),
            unchanged = unchanged.len(),
            "reading SEG headers"
        );
    }
    let bar = progress(to_read.len() as u64);
    let mut all_seen: Vec<String> = Vec::new();
    let mut problems_total: Vec<Problem> = Vec::new();
    for part in to_read.chunks(chunk.max(1)) {
        let conc = dw.client.options().concurrency.max(1);
        let results: Vec<(RemoteSeries, Result<SegSeries, String>)> =
            stream::iter(part.iter().cloned())
                .map(|r| async move {
                    let h = dw.series_header_of(&r).await;
                    (r, h)
                })
                .buffer_unordered(conc)
                .collect()
                .await;
        let mut segs = Vec::new();
        let mut problems = Vec::new();
        let mut transient = None;
        for (r, h) in results {
            if let Some(b) = &bar {
                b.inc(1);
            }
            match h {
                Ok(mut s) => {
                    s.remote_id = r.remote_id.clone();
                    s.remote_stamp = Some(dw.listed_stamp(&r));
                    all_seen.push(s.uid().to_string());
                    segs.push(s);
                }
                Err(reason) => {
                    warn!(series = %r.series, "cannot read SEG header: {reason}");
                    let location = dw.client.url(&series_at(&r.study, &r.series));
                    problems.push(Problem {
                        path: location,
                        reason: reason.clone(),
                    });
                    // keep it seen: a label we cannot read now is not a label that is gone
                    all_seen.push(r.series.clone());
                    transient.get_or_insert(reason);
                }
            }
        }
        let index = dw.resolve_index(&segs).await?;
        let mut labels = match_each(segs, &index);
        if let Some(v) = &dw.validator {
            dw.validate_remote(&mut labels, &index, v, known).await;
        }
        let labels = apply_newest(labels);
        let mut listing = Listing::partial(source);
        listing.index = index;
        listing.problems = problems.clone();
        problems_total.extend(problems);
        if tx.send(Scan { listing, labels }).await.is_err() {
            return Ok(()); // shutting down
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    // the complete listing: everything seen, nothing re-read (only it may remove labels)
    let listing = Listing {
        source: source.to_string(),
        unchanged: unchanged.into_iter().chain(all_seen).collect(),
        problems: problems_total,
        cursor,
        partial: !complete,
        ..Default::default()
    };
    let _ = tx
        .send(Scan {
            listing,
            labels: vec![],
        })
        .await;
    Ok(())
}

fn progress(n: u64) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if n < 50 || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(n);
    b.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} SEG series ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_message("backfill");
    Some(b)
}
