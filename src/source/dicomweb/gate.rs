//! The quality gate for remote labels: each candidate's instances retrieved with WADO-RS, its
//! image series' geometry from WADO-RS metadata (once per series).

use super::fetch::{Prefetched, RETRIEVE_ACCEPT};
use super::*;

/// The quality gate of a PACS's labels ([`DicomWeb::validate_remote`]), for
/// [`crate::rules::pair`].
pub struct RemoteGate<'k> {
    pub dw: &'k DicomWeb,
    pub v: &'k Validator,
    pub known: &'k Known,
    /// SEG files already fetched with their headers, decoded instead of fetched again.
    pub files: &'k Prefetched,
    /// Image series' geometry already fetched (by series UID), not asked again.
    pub geometry: &'k HashMap<String, SeriesGeometry>,
}

impl crate::rules::pair::Gate for RemoteGate<'_> {
    fn judge<'a>(
        &'a self,
        labels: &'a mut [MatchedLabel],
        index: &'a ImageIndex,
    ) -> impl std::future::Future<Output = ()> + Send + 'a {
        self.dw.validate_remote(
            labels,
            index,
            self.v,
            self.known,
            (self.files, self.geometry),
        )
    }
}

impl DicomWeb {
    /// The quality gate for remote labels: each candidate's instances are decoded from the
    /// files fetched with its header, or retrieved with WADO-RS (a few series at a time, each
    /// answer capped); the image series' geometry comes in bulk ([`DicomWeb::geometries`]).
    pub async fn validate_remote(
        &self,
        labels: &mut [MatchedLabel],
        index: &ImageIndex,
        v: &Validator,
        known: &Known,
        (files, fetched): (&Prefetched, &HashMap<String, SeriesGeometry>),
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
        // (the series asked before the index are in `fetched`)
        let images: HashSet<(String, String)> = todo
            .iter()
            .filter_map(|&i| {
                let img = labels[i].outcome.image()?.to_string();
                (!fetched.contains_key(&img))
                    .then(|| (index.study_of(&img).unwrap_or("").to_string(), img))
            })
            .collect();
        let conc = self.client.options().concurrency.clamp(1, 4);
        let geoms = self.geometries(images).await;
        let jobs: Vec<Job> = todo
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
        let geometry_of = |image: &Option<String>| {
            image
                .as_ref()
                .and_then(|im| fetched.get(im).or_else(|| geoms.get(im)))
        };
        let judged = self
            .judge_all(v, files, jobs.iter(), geometry_of, conc)
            .await;
        // a verdict a sampled geometry could not decide: the whole image series read, and the
        // label judged again
        let (mut results, undecided): (Vec<_>, Vec<_>) =
            judged.into_iter().partition(|(_, (q, _))| q.is_some());
        if !undecided.is_empty() {
            let again: HashSet<usize> = undecided.iter().map(|(i, _)| *i).collect();
            let whole = self
                .geometries(
                    jobs.iter()
                        .filter(|(i, ..)| again.contains(i))
                        .filter_map(|(i, ..)| {
                            let img = labels[*i].outcome.image()?.to_string();
                            Some((index.study_of(&img).unwrap_or("").to_string(), img))
                        })
                        .collect(),
                )
                .await;
            tracing::debug!(
                labels = again.len(),
                series = whole.len(),
                "a sampled image series could not decide: read whole"
            );
            let again_jobs = jobs.iter().filter(|(i, ..)| again.contains(i));
            let whole_of = |image: &Option<String>| image.as_ref().and_then(|im| whole.get(im));
            results.extend(self.judge_all(v, files, again_jobs, whole_of, conc).await);
        }
        for (i, (q, uids)) in results {
            let l = &mut labels[i];
            // (a whole geometry always decides, and a series not found again is judged
            // without; were a verdict still undecided, the label fails closed)
            l.set_quality(q.unwrap_or_else(|| Quality {
                problems: vec![
                    "the image series' geometry could not be read whole to check the size".into(),
                ],
                ..Default::default()
            }));
            l.verdict_key = uids
                .filter(|u| *u == l.seg.instances)
                .map(|_| instances_key(&l.seg));
        }
    }

    /// The verdicts of `jobs` (label index, study, SEG series, image series), each against the
    /// geometry `geometry` gives for its image series, `conc` at a time.
    async fn judge_all<'a>(
        &'a self,
        v: &'a Validator,
        files: &'a Prefetched,
        jobs: impl Iterator<Item = &'a Job>,
        geometry: impl Fn(&Option<String>) -> Option<&'a SeriesGeometry>,
        conc: usize,
    ) -> Vec<(usize, Judged)> {
        // (the futures are made first: closures inside the stream's combinators would not be
        // `Send` for every lifetime, as a spawned task needs)
        let futs: Vec<_> = jobs
            .map(|(i, st, se, image)| {
                let g = geometry(image);
                async move { (*i, self.judge_one(v, files, st, se, g).await) }
            })
            .collect();
        stream::iter(futs).buffer_unordered(conc).collect().await
    }

    /// One label's verdict against `geom` (None when a sampled geometry cannot decide it),
    /// with the instance UIDs it rests on when it rests on everything.
    async fn judge_one(
        &self,
        v: &Validator,
        files: &Prefetched,
        study: &str,
        series: &str,
        geom: Option<&SeriesGeometry>,
    ) -> Judged {
        let retrieved;
        let decoded = match files.get(series) {
            Some(d) => d,
            None => {
                retrieved = self
                    .retrieve(study, series)
                    .await
                    .map(|objs| Decoded::of(&objs));
                &retrieved
            }
        };
        let d = match decoded {
            Ok(d) => d,
            Err(e) => {
                let q = Quality {
                    problems: vec![format!("cannot retrieve the SEG instances: {e}")],
                    ..Default::default()
                };
                return (Some(q), None);
            }
        };
        let Some(mut q) = v.judge(d, geom) else {
            return (None, None);
        };
        if geom.is_none() {
            q.warnings
                .push("geometry not checked: image series metadata unavailable".into());
        }
        (Some(q), geom.map(|_| d.sops.clone()))
    }

    /// WADO-RS retrieve of a series' instances, parsed (pixel data included).
    pub(super) async fn retrieve(
        &self,
        study: &str,
        series: &str,
    ) -> Result<Vec<dicom_object::DefaultDicomObject>, String> {
        let parts = self
            .client
            .get_parts(&series_at(study, series), RETRIEVE_ACCEPT)
            .await
            .map_err(|e| e.to_string())?;
        parse_sorted(&parts)
    }

    /// The geometry of an image series' instances, from its WADO-RS metadata.
    pub async fn series_geometry(
        &self,
        study: &str,
        series: &str,
    ) -> Result<SeriesGeometry, String> {
        let (_, v) = self.metadata(study, series).await?;
        let mut g = SeriesGeometry {
            series: series.to_string(),
            ..Default::default()
        };
        each_item(&v, |_, mut item| {
            sanitize(&mut item, 0);
            let Some(sop) = json_str(&item, dicom_dictionary_std::tags::SOP_INSTANCE_UID) else {
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
}

/// A label to judge: (its index, its study, its SEG series, its image series).
type Job = (usize, String, String, Option<String>);

/// A label's verdict (None: a sampled geometry could not decide it) and the instance UIDs it
/// rests on, when it rests on everything.
type Judged = (Option<Quality>, Option<Vec<String>>);

/// Decodes SEG files for the gate on a thread of its own as they are read, while the chunk's
/// other requests (the image series' geometry, the index) go on: each SEG is fetched once,
/// and only its [`Decoded`] form is kept. Files waiting to be decoded take at most
/// [`DECODE_BUDGET`] bytes (a larger batch waits for all of it): a chunk of large SEGs read
/// faster than decoded waits rather than filling memory.
pub struct Decoder {
    tx: tokio::sync::mpsc::UnboundedSender<(Batch, tokio::sync::OwnedSemaphorePermit)>,
    room: std::sync::Arc<tokio::sync::Semaphore>,
    done: tokio::task::JoinHandle<Prefetched>,
}

/// (series UID, its files) to decode.
type Batch = Vec<(String, Vec<Vec<u8>>)>;

/// Bytes of SEG files waiting to be decoded, at most, per chunk.
const DECODE_BUDGET: usize = 32 << 20;

/// The budget's unit (a permit of the semaphore): 4 KiB.
const PERMIT: usize = 4096;

impl Decoder {
    pub fn start() -> Decoder {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(Batch, tokio::sync::OwnedSemaphorePermit)>();
        let done = tokio::task::spawn_blocking(move || {
            let mut p = Prefetched::default();
            while let Some((batch, room)) = rx.blocking_recv() {
                for (series, files) in batch {
                    // one file that panics the decoder costs only its own series
                    let d = std::panic::catch_unwind(|| decode_files(&files))
                        .unwrap_or_else(|_| Err("the decoder panicked".into()));
                    p.keep(&series, d);
                }
                drop(room); // the files are gone: room for more
            }
            p
        });
        let room = std::sync::Arc::new(tokio::sync::Semaphore::new(DECODE_BUDGET / PERMIT));
        Decoder { tx, room, done }
    }

    /// Queues files to decode, once there is room for them.
    pub async fn send(&self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        let bytes: usize = batch.iter().flat_map(|(_, f)| f.iter().map(Vec::len)).sum();
        let permits = (bytes / PERMIT).clamp(1, DECODE_BUDGET / PERMIT);
        let Ok(room) = self.room.clone().acquire_many_owned(permits as u32).await else {
            return; // never closed: nothing to lose
        };
        // (the decoder ends only after `finish`: a failed send has nothing to lose)
        let _ = self.tx.send((batch, room));
    }

    /// Everything sent, decoded. (Were the decoder lost, the gate retrieves those series.)
    pub async fn finish(self) -> Prefetched {
        drop(self.tx);
        self.done.await.unwrap_or_default()
    }
}

/// Parses and decodes the instances of a series for the gate ([`Decoded`]).
pub(super) fn decode_files(parts: &[Vec<u8>]) -> Result<Decoded, String> {
    parse_sorted(parts).map(|objs| Decoded::of(&objs))
}

/// Parses the instances of a series (pixel data included), in SOP Instance UID order as a
/// folder's: the verdict never depends on the order of an answer.
fn parse_sorted(parts: &[Vec<u8>]) -> Result<Vec<dicom_object::DefaultDicomObject>, String> {
    if parts.is_empty() {
        return Err("no instance in the answer".into());
    }
    let mut objs: Vec<dicom_object::DefaultDicomObject> = parts
        .iter()
        .map(|p| parse_full(p))
        .collect::<Result<_, _>>()?;
    objs.sort_by_cached_key(|o| {
        crate::dicom::reader::text(o, dicom_dictionary_std::tags::SOP_INSTANCE_UID)
    });
    Ok(objs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches larger than the budget go through one at a time, none is lost, and what cannot
    /// be decoded is kept as the reason (the gate then says it).
    #[test]
    fn the_decoder_takes_every_batch_within_its_budget() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let d = Decoder::start();
            for i in 0..3 {
                let big = vec![vec![7u8; DECODE_BUDGET + 1]];
                d.send(vec![(format!("1.2.{i}"), big)]).await;
            }
            d.send(vec![("1.2.9".into(), vec![b"not DICOM".to_vec()])])
                .await;
            d.send(vec![]).await;
            d.finish().await
        });
        for s in ["1.2.0", "1.2.1", "1.2.2", "1.2.9"] {
            assert!(matches!(got.get(s), Some(Err(_))), "{s}");
        }
        assert!(got.get("1.2.3").is_none());
    }
}
