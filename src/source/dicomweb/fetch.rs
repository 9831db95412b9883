//! Reading a listed SEG series: its header and, when the quality gate will judge it, its
//! instances' bytes, fetched once. Through Orthanc's REST API the files themselves; from any
//! DICOMweb server a WADO-RS retrieve of the series (with the gate) or its metadata (without).

use super::*;

/// How many bytes of one SEG series' files the gate keeps (a larger series is retrieved
/// through WADO-RS, within the same cap), and, a quarter of it, the image files of a chunk read
/// whole for the gate's geometry.
pub const PREFETCH_BUDGET: usize = 64 << 20;

/// The SEG series decoded for the quality gate while their headers were read, by series UID:
/// each is fetched once, and only what the verdict needs (counts and frame places, no pixels)
/// is kept until the gate judges it, so memory does not grow with the size of the SEGs.
#[derive(Debug, Default)]
pub struct Prefetched {
    decoded: HashMap<String, Result<Decoded, String>>,
}

impl Prefetched {
    pub fn keep(&mut self, series: &str, decoded: Result<Decoded, String>) {
        self.decoded.insert(series.to_string(), decoded);
    }

    pub fn get(&self, series: &str) -> Option<&Result<Decoded, String>> {
        self.decoded.get(series)
    }
}

/// Without the quality gate, a series is retrieved whole (rather than its metadata asked) only
/// when its answer is at most this large: on Orthanc a retrieve costs the server about 30 %
/// less than the metadata, and most SEGs are far smaller; a larger one is abandoned at this
/// size and its metadata asked instead.
const SMALL_RETRIEVE: usize = 4 << 20;

/// A header, and the files it was read from when they were read whole and asked for.
pub type Fetched = (SegSeries, Option<Vec<Vec<u8>>>);

impl DicomWeb {
    /// The SEG header of a listed series, and its files when `keep` (the gate will judge it)
    /// and they were read whole.
    ///
    /// Listed through Orthanc's REST API, its instances' files are read with the same reader
    /// as a folder's (Orthanc answers a small file several times faster than WADO-RS metadata,
    /// whose cost grows with the size of the PACS). From any DICOMweb server, with the gate on,
    /// one WADO-RS retrieve gives both header and pixels; without it, the same retrieve when the
    /// series is small ([`SMALL_RETRIEVE`]), else the metadata (no pixels).
    /// Whatever fails falls back to WADO-RS metadata.
    pub async fn series_header_of(&self, r: &RemoteSeries, keep: bool) -> Result<Fetched, String> {
        if let (Some(rest), false) = (&self.orthanc_rest, r.orthanc_instances.is_empty()) {
            match self.header_from_files(rest, r, keep).await {
                Ok(s) => return Ok(s),
                Err(e) => tracing::debug!(series = %r.series, "{e}; reading WADO-RS metadata"),
            }
        } else {
            // without the gate, only a small series is retrieved: a large one's metadata is
            // cheaper to move than its pixels
            let limit = if keep { usize::MAX } else { SMALL_RETRIEVE };
            match self.header_from_retrieve(r, limit).await {
                Ok((s, files)) => return Ok((s, files.filter(|_| keep))),
                Err(e) => tracing::debug!(series = %r.series, "{e}; reading WADO-RS metadata"),
            }
        }
        let study = self.study_of(r).await?;
        Ok((self.series_header(&study, &r.series).await?, None))
    }

    /// The study UID of a listed series: as listed, or (listed through Orthanc's REST API,
    /// which names its study by Orthanc ID) looked up.
    pub(super) async fn study_of(&self, r: &RemoteSeries) -> Result<String, String> {
        if !r.study.is_empty() {
            return Ok(r.study.clone());
        }
        let (Some(rest), Some(id)) = (&self.orthanc_rest, &r.orthanc_study) else {
            return Err(format!("the study of series {} is unknown", r.series));
        };
        let ids = HashSet::from([id.clone()]);
        crate::source::orthanc::rest::study_uids(rest, &ids)
            .await
            .map_err(|e| e.to_string())?
            .remove(id)
            .ok_or_else(|| format!("the study of series {} is gone", r.series))
    }

    async fn header_from_files(
        &self,
        rest: &PacsClient,
        r: &RemoteSeries,
        keep: bool,
    ) -> Result<Fetched, String> {
        // Each file at most 16 MiB, and what the gate keeps of one series at most
        // PREFETCH_BUDGET (64 MiB, the cap of a WADO-RS retrieve's answer too): past it the
        // series is retrieved through WADO-RS instead. A series of many instances has
        // FILES_AT_ONCE of them asked at once, in order. So one series holds at most
        // PREFETCH_BUDGET plus FILES_AT_ONCE files in flight; `--concurrency` series of a chunk
        // are read at once, and three chunks (see `backfill::CHUNKS_IN_FLIGHT`).
        const SMALL_FILE: usize = 16 << 20;
        const FILES_AT_ONCE: usize = 4;
        if let Some(id) = r.orthanc_instances.iter().find(|id| !is_orthanc_id(id)) {
            return Err(format!("{id:?} is not an Orthanc instance ID"));
        }
        let mut answers = stream::iter(r.orthanc_instances.iter().cloned())
            .map(|id| async move {
                let at = Endpoint::at(&["instances", &id, "file"]);
                let got = rest.get_at_most(&at, "application/dicom", SMALL_FILE).await;
                (at, got)
            })
            .buffered(FILES_AT_ONCE);
        let mut found = Vec::new();
        let mut files = Vec::new();
        let mut kept = 0usize;
        while let Some((at, got)) = answers.next().await {
            let bytes = got.map_err(|e| e.to_string())?;
            match crate::dicom::reader::read_instance_from_bytes(&bytes) {
                Ok(InstanceHeader::Seg(s)) => {
                    let location = self.client.url(&series_at(&s.study, &r.series));
                    found.push((s, location));
                }
                Ok(InstanceHeader::Image(_)) => {}
                Err(e) => return Err(format!("{}: {e}", rest.url(&at))),
            }
            if keep {
                kept += bytes.len();
                if kept > PREFETCH_BUDGET {
                    return Err(format!(
                        "the files of series {} are over {PREFETCH_BUDGET} bytes",
                        r.series
                    ));
                }
                files.push(bytes);
            }
        }
        let seg = one_series(found, &r.series, "its files")?;
        Ok((seg, keep.then_some(files)))
    }

    /// One WADO-RS retrieve of the series (an answer of at most `limit` bytes): the header
    /// from the parts, and the parts.
    async fn header_from_retrieve(
        &self,
        r: &RemoteSeries,
        limit: usize,
    ) -> Result<Fetched, String> {
        let at = series_at(&r.study, &r.series);
        let location = self.client.url(&at);
        let parts = self
            .client
            .get_parts_at_most(&at, RETRIEVE_ACCEPT, limit)
            .await
            .map_err(|e| e.to_string())?;
        let mut found = Vec::new();
        for p in &parts {
            match crate::dicom::reader::read_instance_from_bytes(p) {
                Ok(InstanceHeader::Seg(s)) => found.push((s, location.clone())),
                Ok(InstanceHeader::Image(_)) => {}
                Err(e) => return Err(format!("{location}: {e}")),
            }
        }
        let seg = one_series(found, &r.series, "the retrieved instances")?;
        Ok((seg, Some(parts)))
    }
}

/// The accepted type of a WADO-RS retrieve: Part-10 instances in any transfer syntax.
pub(super) const RETRIEVE_ACCEPT: &str =
    "multipart/related; type=\"application/dicom\"; transfer-syntax=*";

fn one_series(
    found: Vec<(crate::model::SegInstance, String)>,
    series: &str,
    from: &str,
) -> Result<SegSeries, String> {
    group_series(found)
        .into_iter()
        .find(|s| s.uid() == series)
        .ok_or_else(|| format!("no SEG instance of series {series} in {from}"))
}
