//! Reading a listed SEG series: its header and, when the quality gate will judge it, its
//! instances' bytes, fetched once. Through Orthanc's REST API the files themselves; from any
//! DICOMweb server a WADO-RS retrieve of the series (with the gate) or its metadata (without).

use super::*;
use std::sync::atomic::Ordering::Relaxed;

/// How many bytes of files the archives a chunk of a pass reads at once may unpack to (SEG
/// files beyond it are read one series at a time), and, a quarter of it, the image files read
/// for the gate's geometry.
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
        // series is retrieved through WADO-RS instead. At most `concurrency` series of a chunk
        // are read at once, and three chunks.
        const SMALL_FILE: usize = 16 << 20;
        let mut found = Vec::new();
        let mut files = Vec::new();
        let mut kept = 0usize;
        for id in &r.orthanc_instances {
            if !is_orthanc_id(id) {
                return Err(format!("{id:?} is not an Orthanc instance ID"));
            }
            let at = Endpoint::at(&["instances", id, "file"]);
            let bytes = rest
                .get_at_most(&at, "application/dicom", SMALL_FILE)
                .await
                .map_err(|e| e.to_string())?;
            self.seg_file_size.store(bytes.len().max(1), Relaxed);
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

impl DicomWeb {
    /// The headers (and, when `keep`, the files) of a chunk of series listed through Orthanc's
    /// REST API, from one archive of all their instances. A series whose files are not all in
    /// it, or not all readable, is left out: it is read file by file, which says what is wrong.
    pub(super) async fn archive_headers(
        &self,
        rest: &PacsClient,
        part: &[RemoteSeries],
        keep: bool,
    ) -> HashMap<String, Fetched> {
        let mut out = HashMap::new();
        let ids: Vec<&str> = part
            .iter()
            .flat_map(|r| r.orthanc_instances.iter().map(String::as_str))
            .filter(|id| is_orthanc_id(id))
            .collect();
        if ids.len() < 2 {
            return out; // one file: its own request costs the same
        }
        // Orthanc deflates what it archives (110 ms of its CPU for 100 SEGs of 330 KB, against
        // 20 ms to send them raw): large files are read file by file. The size of the files
        // read last tells; before any, the chunk's first file, asked on its own (a small one
        // is kept, and the others archived).
        let mut files = Vec::new();
        match self.seg_file_size.load(Relaxed) {
            0 => match self.first_file(rest, ids[0]).await {
                First::Large => return out,
                First::Small(f) => files.push(f),
                First::Failed => {}
            },
            n if n > ARCHIVED_FILE_MAX => return out,
            _ => {}
        }
        let ids = &ids[files.len()..];
        // a few archives at once: Orthanc builds each on one thread
        let parts = self.client.options().concurrency.clamp(1, 2);
        let per = ids.len().div_ceil(parts).max(1);
        let budget = PREFETCH_BUDGET / parts;
        let lists: Vec<Vec<String>> = ids
            .chunks(per)
            .map(|c| c.iter().map(|s| s.to_string()).collect())
            .collect();
        let answers: Vec<Result<Vec<Vec<u8>>, PacsError>> =
            stream::iter(lists)
                .map(|some| async move {
                    crate::source::orthanc::archive::files(rest, &some, budget).await
                })
                .buffer_unordered(parts)
                .collect()
                .await;
        for a in answers {
            match a {
                Ok(f) => {
                    if !f.is_empty() {
                        let mean = f.iter().map(Vec::len).sum::<usize>() / f.len();
                        self.seg_file_size.store(mean.max(1), Relaxed);
                    }
                    files.extend(f)
                }
                // the series of a failed archive lack files: they are read one by one
                Err(e) => tracing::debug!("{e}; reading those SEG files one by one"),
            }
        }
        let listed: HashMap<&str, &RemoteSeries> =
            part.iter().map(|r| (r.series.as_str(), r)).collect();
        let mut found: HashMap<String, Vec<(crate::model::SegInstance, String)>> = HashMap::new();
        let mut bytes: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        for f in files {
            let Ok(InstanceHeader::Seg(s)) = crate::dicom::reader::read_instance_from_bytes(&f)
            else {
                continue;
            };
            let Some(r) = listed.get(s.series.as_str()) else {
                continue;
            };
            // where WADO-RS has it: the study is the file's own
            let location = self.client.url(&series_at(&s.study, &r.series));
            if keep {
                bytes.entry(s.series.clone()).or_default().push(f);
            }
            found
                .entry(s.series.clone())
                .or_default()
                .push((s, location));
        }
        for (uid, instances) in found {
            let Some(r) = listed.get(uid.as_str()) else {
                continue;
            };
            if instances.len() != r.orthanc_instances.len() {
                continue;
            }
            if let Ok(seg) = one_series(instances, &uid, "the archive") {
                let files = bytes.remove(&uid);
                out.insert(uid, (seg, files));
            }
        }
        out
    }
}

/// What the first file of a chunk says of the chunk's.
enum First {
    /// Larger than [`ARCHIVED_FILE_MAX`] (its body not read: Orthanc says the size first).
    Large,
    /// Small: the file itself.
    Small(Vec<u8>),
    /// Not read: the archive is tried.
    Failed,
}

impl DicomWeb {
    async fn first_file(&self, rest: &PacsClient, id: &str) -> First {
        let at = Endpoint::at(&["instances", id, "file"]);
        match rest
            .get_at_most(&at, "application/dicom", ARCHIVED_FILE_MAX)
            .await
        {
            Ok(f) => First::Small(f),
            Err(PacsError::TooLarge { .. }) => {
                self.seg_file_size.store(ARCHIVED_FILE_MAX + 1, Relaxed);
                First::Large
            }
            Err(e) => {
                tracing::debug!("{e}; the chunk's SEG files archived");
                First::Failed
            }
        }
    }
}

/// The largest SEG file worth a place in an archive: past it, Orthanc's deflating costs more
/// than a request of its own.
pub const ARCHIVED_FILE_MAX: usize = 32 << 10;

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
