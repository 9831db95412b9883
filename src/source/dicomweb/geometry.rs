//! Many series at once: QIDO-RS with a list of SeriesInstanceUIDs (PS3.18 UID list matching,
//! comma-separated), for the image index and the image series' geometry. The cost follows the
//! SEGs asked about, never the size of the PACS; a server that does not honour the list is
//! asked one series at a time.

use super::*;
use crate::source::orthanc::geometry::ImageRef;
use serde_json::Value;

/// The length of one listed query's UID list: with the rest, a URL under the 8 KiB that web
/// servers and proxies commonly accept (about 130 UIDs of 2.25 form, 90 of the longest).
const LIST_CHARS: usize = 6000;

/// Groups `uids` into lists of at most [`LIST_CHARS`] characters.
fn lists(uids: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut len = 0;
    for u in uids {
        match out.last_mut() {
            Some(last) if len + 1 + u.len() <= LIST_CHARS => {
                last.push(u.clone());
                len += 1 + u.len();
            }
            _ => {
                out.push(vec![u.clone()]);
                len = u.len();
            }
        }
    }
    out
}

/// Pages one listed query may take before it is given up for one query per series.
const MAX_PAGES: usize = 200;

/// What one listed query answered: its items, or nothing when the server did not honour the list
/// (an item of another series, or a page that repeats the last) or failed.
type Listed = Option<Vec<Value>>;

impl DicomWeb {
    /// QIDO-RS at `level` (`series` or `instances`) for the resources of the series `uids`, with
    /// `extra` query pairs (include fields, a filter): one query per list of UIDs that fits a
    /// URL, paged. Each element is one list of UIDs and what it answered.
    pub(super) async fn listed_query(
        &self,
        level: &str,
        uids: &[String],
        extra: &(dyn Fn(Endpoint) -> Endpoint + Sync),
    ) -> Vec<(Vec<String>, Listed)> {
        let conc = self.client.options().concurrency.clamp(1, 4);
        stream::iter(lists(uids))
            .map(|batch| async move {
                let got = self.listed_pages(level, &batch, extra).await;
                (batch, got)
            })
            .buffer_unordered(conc)
            .collect()
            .await
    }

    async fn listed_pages(
        &self,
        level: &str,
        batch: &[String],
        extra: &(dyn Fn(Endpoint) -> Endpoint + Sync),
    ) -> Listed {
        let want: HashSet<&str> = batch.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut offset = 0usize;
        let mut effective = self.page_size;
        for _ in 0..MAX_PAGES {
            let at = extra(
                Endpoint::at(&[level])
                    .query("SeriesInstanceUID", batch.join(","))
                    .query("includefield", json_key(tags::SERIES_INSTANCE_UID))
                    .query("limit", self.page_size)
                    .query("offset", offset),
            );
            let bytes = match self.client.get_at_most(&at, DICOM_JSON, MAX_JSON).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!("{}: {e}; asking one series at a time", self.client.url(&at));
                    return None;
                }
            };
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Some(out); // 204: nothing (more)
            }
            let mut page = Vec::new();
            each_item(&bytes, |_, item| {
                page.push(item);
                Ok(())
            })
            .ok()?;
            let mut new_here = 0;
            for item in page.iter() {
                let series = json_str(item, tags::SERIES_INSTANCE_UID).unwrap_or_default();
                if !want.contains(series.as_str()) {
                    tracing::debug!(
                        "{}: a listed QIDO query answered series {series}, which it did not ask \
                         for; asking one series at a time",
                        self.client.base
                    );
                    return None;
                }
                // one key per resource: its SOP Instance UID at instance level, else the series
                let key = json_str(item, tags::SOP_INSTANCE_UID).unwrap_or(series);
                if seen.insert(key) {
                    new_here += 1;
                }
            }
            let n = page.len();
            out.extend(page);
            // a series answers once: when every series asked has, nothing more can come
            if n == 0 || (level == "series" && seen.len() == want.len()) {
                return Some(out);
            }
            if offset > 0 && new_here == 0 {
                return None; // offset ignored: the answer cannot be known complete
            }
            // a server may cap pages below our limit: the first page tells the real size
            if offset == 0 && n < effective {
                effective = n;
            } else if n < effective {
                return Some(out);
            }
            offset += n;
        }
        None
    }

    /// The geometry of the image series the SEGs of a chunk reference, asked before the image
    /// index is built, and the index entries (study, modality) the same answers give, so that
    /// the index needs no request of its own for them. Through Orthanc's REST API, series of
    /// one sampled file (or all, when small) per series ([`crate::source::orthanc::geometry`],
    /// `named` the SEGs' source instances, preferred as samples); the others by listed
    /// QIDO-RS instance queries. A series neither answers is left to the gate, which asks
    /// again ([`DicomWeb::geometries`]).
    pub async fn geometries_first(
        &self,
        images: HashSet<ImageRef>,
        named: &HashSet<String>,
    ) -> (HashMap<String, SeriesGeometry>, ImageIndex) {
        if images.is_empty() {
            return Default::default();
        }
        let (mut out, mut index) = match &self.orthanc_rest {
            Some(rest) => {
                let wanted: Vec<_> = images.iter().cloned().collect();
                crate::source::orthanc::geometry::series_geometries(
                    rest,
                    &wanted,
                    named,
                    super::fetch::PREFETCH_BUDGET / 4,
                    self.client.options().concurrency,
                )
                .await
            }
            None => Default::default(),
        };
        let uids: Vec<String> = images
            .into_iter()
            .map(|(_, se, _)| se)
            .filter(|se| is_uid(se) && !out.contains_key(se))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let (more, more_index, _) = self.listed_geometries(&uids).await;
        out.extend(more);
        index.merge(more_index);
        (out, index)
    }

    /// Listed QIDO-RS instance queries for the geometry of the series `uids` (Rows, Columns,
    /// ImagePositionPatient and ImageOrientationPatient of every instance): what they answered,
    /// the index entries the answers give, and the series to ask one by one (in a list the
    /// server did not answer as one, or not named in its answer).
    async fn listed_geometries(
        &self,
        uids: &[String],
    ) -> (HashMap<String, SeriesGeometry>, ImageIndex, Vec<String>) {
        let mut out: HashMap<String, SeriesGeometry> = HashMap::new();
        let mut index = ImageIndex::default();
        let mut one_by_one: Vec<String> = Vec::new();
        if uids.is_empty() {
            return (out, index, one_by_one);
        }
        let fields = |at: Endpoint| {
            at.query("includefield", json_key(tags::SOP_INSTANCE_UID))
                .query("includefield", json_key(tags::STUDY_INSTANCE_UID))
                .query("includefield", json_key(tags::MODALITY))
                .query("includefield", json_key(tags::ROWS))
                .query("includefield", json_key(tags::COLUMNS))
                .query("includefield", json_key(tags::IMAGE_POSITION_PATIENT))
                .query("includefield", json_key(tags::IMAGE_ORIENTATION_PATIENT))
        };
        for (batch, got) in self.listed_query("instances", uids, &fields).await {
            let Some(items) = got else {
                one_by_one.extend(batch);
                continue;
            };
            for mut item in items {
                sanitize(&mut item, 0);
                let (Some(series), Some(sop)) = (
                    json_str(&item, tags::SERIES_INSTANCE_UID),
                    json_str(&item, tags::SOP_INSTANCE_UID),
                ) else {
                    continue;
                };
                let study = json_str(&item, tags::STUDY_INSTANCE_UID).filter(|s| is_uid(s));
                let modality = json_str(&item, tags::MODALITY).unwrap_or_default();
                let Ok(obj) = dicom_json::from_value::<dicom_object::InMemDicomObject>(item) else {
                    continue;
                };
                let g = crate::dicom::reader::geometry_of(&obj);
                if let Some(study) = study {
                    // a non-image instance never decides the series' modality
                    let m = if g.is_image() { modality.as_str() } else { "" };
                    index.insert(&sop, &series, &study, m);
                }
                out.entry(series.clone())
                    .or_insert_with(|| SeriesGeometry {
                        series,
                        ..Default::default()
                    })
                    .instances
                    .insert(sop, g);
            }
            // a series the answer did not name: asked on its own
            one_by_one.extend(batch.into_iter().filter(|u| !out.contains_key(u)));
        }
        (out, index, one_by_one)
    }

    /// The geometry of these image series `(study, series)`: listed QIDO-RS instance queries
    /// ([`DicomWeb::listed_geometries`]); a series the server did not answer for comes from its
    /// WADO-RS metadata.
    pub async fn geometries(
        &self,
        images: HashSet<(String, String)>,
    ) -> HashMap<String, SeriesGeometry> {
        let study_of: HashMap<String, String> =
            images.into_iter().map(|(st, se)| (se, st)).collect();
        let uids: Vec<String> = study_of.keys().filter(|u| is_uid(u)).cloned().collect();
        let (mut out, _, one_by_one) = self.listed_geometries(&uids).await;
        let conc = self.client.options().concurrency.clamp(1, 4);
        let rest: Vec<(String, Result<SeriesGeometry, String>)> = stream::iter(one_by_one)
            .map(|se| {
                let st = study_of.get(&se).cloned().unwrap_or_default();
                async move {
                    let g = self.series_geometry(&st, &se).await;
                    (se, g)
                }
            })
            .buffer_unordered(conc)
            .collect()
            .await;
        for (se, g) in rest {
            match g {
                Ok(g) => {
                    out.insert(se, g);
                }
                Err(e) => warn!(series = %se, "geometry not checked: {e}"),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_lists_fit_a_url() {
        let uids: Vec<String> = (0..1000).map(|i| format!("2.25.{i:040}")).collect();
        let l = lists(&uids);
        assert!(l.iter().all(|b| b.join(",").len() <= LIST_CHARS));
        assert_eq!(l.iter().map(Vec::len).sum::<usize>(), 1000);
        assert!(l.len() <= 8, "{} lists", l.len());
        assert!(lists(&[]).is_empty());
    }
}
