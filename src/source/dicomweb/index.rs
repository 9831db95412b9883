//! The image index the matcher needs for a batch of SEGs, built on the server: which referenced
//! series exist and pass the image filter, and which series hold their source instances.

use super::*;

/// An image series found on the server: (study, modality, passes the image filter).
type SeriesHit = (String, String, bool);
/// A source instance found on the server: (SOP Instance UID, series, study).
type InstanceHit = (String, String, String);

impl DicomWeb {
    /// Builds the image index the matcher needs for these SEGs: which referenced series exist
    /// (and pass the filter), and which series hold their source instances when that is needed.
    pub async fn resolve_index(&self, segs: &[SegSeries]) -> Result<ImageIndex, PacsError> {
        self.resolve_index_from(segs, ImageIndex::default()).await
    }

    /// [`DicomWeb::resolve_index`], starting from what `read` (image series whose files were
    /// read whole) already says: those series are not asked again, unless the image filter
    /// is more than a Modality (only the server can say whether they pass it).
    pub async fn resolve_index_from(
        &self,
        segs: &[SegSeries],
        read: ImageIndex,
    ) -> Result<ImageIndex, PacsError> {
        let local = self.local_filter();
        // what was read counts unless the filter is more than a Modality
        let usable = self.image_filter.is_none() || local.is_some();
        let mut index = if usable { read } else { ImageIndex::default() };
        let mut wanted: Vec<String> = Vec::new();
        for uid in segs
            .iter()
            .filter_map(|s| s.first.referenced_series.first().cloned())
            .filter(|u| is_uid(u))
            .collect::<HashSet<_>>()
        {
            let Some((_, modality)) = index.series_entry(&uid) else {
                wanted.push(uid);
                continue;
            };
            if local.as_ref().is_some_and(|l| !l.allows(modality)) {
                index.exclude(&uid, self.image_filter.clone().unwrap_or_default());
            }
        }
        let conc = self.client.options().concurrency.max(1);
        if let Some(rest) = self
            .orthanc_rest
            .as_ref()
            .filter(|_| wanted.len() > crate::source::orthanc::rest::BULK)
        {
            // on failure (a filter Orthanc's find cannot express): one QIDO query each, below
            if let Ok((found, odd)) = self.bulk_series(rest, &wanted, segs).await {
                for (uid, (study, modality, passes)) in found {
                    index.insert_series(&uid, &study, &modality);
                    if !passes {
                        index.exclude(&uid, self.image_filter.clone().unwrap_or_default());
                    }
                }
                wanted = odd;
            }
        }
        if self.orthanc_rest.is_none() && wanted.len() > crate::source::orthanc::rest::BULK {
            // any DICOMweb server: listed queries; what they leave unanswered, one by one below
            let (found, rest) = self.listed_series(wanted).await;
            for (uid, (study, modality, passes)) in found {
                index.insert_series(&uid, &study, &modality);
                if !passes {
                    index.exclude(&uid, self.image_filter.clone().unwrap_or_default());
                }
            }
            wanted = rest;
        }
        let found: Vec<Result<(String, Option<SeriesHit>), PacsError>> = stream::iter(wanted)
            .map(|uid| async move {
                let q = Endpoint::at(&["series"])
                    .query("SeriesInstanceUID", &uid)
                    .query("includefield", json_key(tags::MODALITY));
                let found = self.qido(&q).await?;
                let Some(hit) = found.first() else {
                    return Ok((uid, None));
                };
                let study = hit.study().filter(|s| is_uid(s)).unwrap_or_default();
                let modality = hit.modality().unwrap_or_default();
                let local = self.local_filter();
                let passes = match (&self.image_filter, local) {
                    (None, _) => true,
                    (Some(_), Some(l)) => l.allows(&modality),
                    (Some(f), None) => {
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
    pub(super) async fn resolve_sources(
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
                    .query("includefield", json_key(tags::SERIES_INSTANCE_UID))
                    .query("includefield", json_key(tags::MODALITY));
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
    pub(super) async fn bulk_series(
        &self,
        rest: &PacsClient,
        wanted: &[String],
        segs: &[SegSeries],
    ) -> Result<(HashMap<String, SeriesHit>, Vec<String>), PacsError> {
        use crate::source::orthanc::rest::{find_by_uids, ids_by_uids, listable_uid};
        let hints: Vec<&str> = segs.iter().map(|s| s.first.study.as_str()).collect();
        // first by the Orthanc IDs the SEGs' patient and study give (an image series is almost
        // always in its SEG's study): one cheap `/tools/bulk-content` per 500
        let by_id = crate::source::orthanc::rest::series_in_seg_studies(rest, segs).await;
        let (listable, odd): (Vec<&String>, Vec<&String>) = wanted
            .iter()
            .filter(|u| !by_id.contains_key(u.as_str()))
            .partition(|u| listable_uid(u));
        let listable: Vec<&str> = listable.into_iter().map(String::as_str).collect();
        let want: HashSet<&str> = listable.iter().copied().collect();
        let found = if listable.is_empty() {
            Vec::new()
        } else {
            find_by_uids(rest, "Series", "SeriesInstanceUID", &listable).await?
        };
        // a plain Modality filter is checked on the Modality the answer already holds: a second
        // find with the filter costs Orthanc a scan (1.2 s per 500 UIDs at 10,000 series)
        let local = self.local_filter();
        let passing: Option<HashSet<String>> = match &self.image_filter {
            None => None,
            Some(_) if local.is_some() => None,
            Some(f) => {
                let mut q = serde_json::Map::new();
                for pair in f.split('&') {
                    let (k, v) = pair.split_once('=').ok_or_else(|| PacsError::Bad {
                        url: rest.url(&Endpoint::at(&["tools", "find"])),
                        reason: format!("image filter {f:?} is not key=value pairs"),
                    })?;
                    q.insert(k.to_string(), json!(v));
                }
                let every: Vec<&str> = wanted
                    .iter()
                    .map(String::as_str)
                    .filter(|u| listable_uid(u))
                    .collect();
                let ids = ids_by_uids(rest, "Series", "SeriesInstanceUID", &every, &q).await?;
                Some(ids.into_iter().collect())
            }
        };
        let hits: Vec<_> = found
            .into_iter()
            .filter(|s| s.tags.series.as_deref().is_some_and(|u| want.contains(u)))
            .collect();
        let parents: HashSet<String> = hits.iter().filter_map(|s| s.parent_study.clone()).collect();
        let studies = if parents.is_empty() {
            HashMap::new()
        } else {
            crate::source::orthanc::rest::study_uids_hinted(rest, &parents, &hints).await?
        };
        let mut out = HashMap::new();
        for (uid, (id, study, modality)) in by_id {
            let passes = match &local {
                Some(l) => l.allows(&modality),
                None => passing.as_ref().is_none_or(|p| p.contains(&id)),
            };
            out.insert(uid, (study, modality, passes));
        }
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
            let passes = match &local {
                Some(l) => l.allows(&modality),
                None => passing.as_ref().is_none_or(|p| p.contains(&s.id)),
            };
            out.insert(uid, (study.clone(), modality, passes));
        }
        Ok((out, odd.into_iter().cloned().collect()))
    }

    /// The wanted image series through listed QIDO-RS queries (50 UIDs each, and as many with
    /// the image filter): what they found, and the UIDs to ask one by one (not found, which a
    /// query of its own confirms, or in a batch the server did not answer as a list).
    async fn listed_series(
        &self,
        wanted: Vec<String>,
    ) -> (HashMap<String, SeriesHit>, Vec<String>) {
        let fields = |at: Endpoint| {
            at.query("includefield", json_key(tags::STUDY_INSTANCE_UID))
                .query("includefield", json_key(tags::MODALITY))
        };
        let mut found: HashMap<String, (String, String)> = HashMap::new();
        let mut ask: HashSet<String> = HashSet::new();
        for (batch, got) in self.listed_query("series", &wanted, &fields).await {
            match got {
                Some(items) => {
                    for it in items {
                        let Ok(q) = serde_json::from_value::<QidoItem>(it) else {
                            continue;
                        };
                        if let Some(se) = q.series() {
                            let study = q.study().filter(|s| is_uid(s)).unwrap_or_default();
                            found.insert(se, (study, q.modality().unwrap_or_default()));
                        }
                    }
                    ask.extend(batch.into_iter().filter(|u| !found.contains_key(u)));
                }
                None => ask.extend(batch),
            }
        }
        let local = self.local_filter();
        let passing: Option<HashSet<String>> = match &self.image_filter {
            None => None,
            // a plain Modality filter: the Modality of the first answer says it
            Some(_) if local.is_some() => Some(
                found
                    .iter()
                    .filter(|(_, (_, m))| local.as_ref().is_some_and(|l| l.allows(m)))
                    .map(|(u, _)| u.clone())
                    .collect(),
            ),
            Some(f) => {
                let listed: Vec<String> = found.keys().cloned().collect();
                let filtered = |at: Endpoint| at.filter(f);
                let mut passing = HashSet::new();
                for (batch, got) in self.listed_query("series", &listed, &filtered).await {
                    match got {
                        Some(items) => passing.extend(
                            items
                                .iter()
                                .filter_map(|it| json_str(it, tags::SERIES_INSTANCE_UID)),
                        ),
                        // the filter could not be checked as a list: these go one by one
                        None => {
                            for u in batch {
                                found.remove(&u);
                                ask.insert(u);
                            }
                        }
                    }
                }
                Some(passing)
            }
        };
        let hits = found
            .into_iter()
            .map(|(uid, (study, modality))| {
                let passes = passing.as_ref().is_none_or(|p| p.contains(&uid));
                (uid, (study, modality, passes))
            })
            .collect();
        (hits, ask.into_iter().collect())
    }

    /// The image filter when it is a plain Modality filter, checked here on the Modality an
    /// answer already holds instead of by a second query (see `ModalityFilter::local`).
    fn local_filter(&self) -> Option<crate::source::filter::ModalityFilter> {
        self.image_filter
            .as_deref()
            .and_then(crate::source::filter::ModalityFilter::local)
    }
}
