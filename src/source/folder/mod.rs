//! The folder source: walks a directory tree, recognises DICOM by content, reads headers only.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::{debug, info, warn};
use walkdir::WalkDir;

use super::{Listing, Problem};

mod live;
mod stow;

use crate::dicom::quality::Validator;
use crate::dicom::reader::{self, group_files, InstanceHeader, ReadError};
use stow::{match_on_server, stow_ready};

/// Why a folder cannot be listed at all.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("folder {path}: {reason}")]
    Unreadable { path: String, reason: String },
}

/// Headers already read, by path, valid while the file's size and mtime stay the same. A live
/// watcher keeps one so that a rescan reads only what changed. Failures are not kept: a file
/// still being written is read again on the next scan.
#[derive(Default)]
pub struct HeaderCache {
    entries: HashMap<PathBuf, (Option<SystemTime>, u64, InstanceHeader)>,
}

fn stamp(p: &Path) -> (Option<SystemTime>, u64) {
    match std::fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    }
}

/// Lists everything under `root`. Unreadable files are reported and skipped; an unreadable
/// sub-directory makes the listing incomplete (so nothing is removed because of it).
pub fn list(root: &Path) -> Result<Listing, FolderError> {
    list_cached(root, &mut HeaderCache::default())
}

/// [`list`], reading again only the files that changed since `cache` saw them.
pub fn list_cached(root: &Path, cache: &mut HeaderCache) -> Result<Listing, FolderError> {
    let meta = std::fs::metadata(root).map_err(|e| FolderError::Unreadable {
        path: root.display().to_string(),
        reason: e.to_string(),
    })?;
    if !meta.is_dir() {
        return Err(FolderError::Unreadable {
            path: root.display().to_string(),
            reason: "not a directory".into(),
        });
    }
    std::fs::read_dir(root).map_err(|e| FolderError::Unreadable {
        path: root.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut listing = Listing {
        source: source_name(root),
        ..Default::default()
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in WalkDir::new(root).follow_links(true).sort_by_file_name() {
        match entry {
            Ok(e) if e.file_type().is_file() => files.push(e.into_path()),
            Ok(_) => {}
            Err(e) => {
                let path = e
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| root.display().to_string());
                if e.loop_ancestor().is_some() {
                    // A loop is a property of the tree, not a failure to read it: say so (once,
                    // as a problem of the scan), go on.
                    tracing::debug!(path = %path, "symbolic link loop, not followed");
                    listing.problems.push(Problem {
                        path,
                        reason: "symbolic link loop, not followed".into(),
                    });
                } else if e
                    .io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
                {
                    // a dangling link or a file deleted while walking
                    listing.problems.push(Problem {
                        path,
                        reason: "vanished or dangling link".into(),
                    });
                } else {
                    let reason = format!("cannot list {path}: {}", reader::error_chain(&e));
                    warn!("{reason}");
                    listing.problems.push(Problem {
                        path,
                        reason: reason.clone(),
                    });
                    listing.incomplete_reasons.push(reason);
                }
            }
        }
    }
    listing.files_seen = files.len();
    let stamps: Vec<(Option<SystemTime>, u64)> = files.iter().map(|f| stamp(f)).collect();
    let stale: Vec<PathBuf> = files
        .iter()
        .zip(&stamps)
        .filter(|(f, st)| {
            st.0.is_none()
                || cache
                    .entries
                    .get(*f)
                    .is_none_or(|(m, l, _)| (*m, *l) != **st)
        })
        .map(|(f, _)| f.clone())
        .collect();
    let mut fresh: HashMap<PathBuf, Result<InstanceHeader, ReadError>> =
        stale.iter().cloned().zip(read_all(&stale)).collect();
    let keep: HashSet<&PathBuf> = files.iter().collect();
    cache.entries.retain(|p, _| keep.contains(p));
    let results: Vec<Result<InstanceHeader, ReadError>> = files
        .iter()
        .zip(&stamps)
        .map(|(f, st)| match fresh.remove(f) {
            Some(r) => {
                match &r {
                    Ok(h) if st.0.is_some() => {
                        cache.entries.insert(f.clone(), (st.0, st.1, h.clone()));
                    }
                    _ => {
                        cache.entries.remove(f);
                    }
                }
                r
            }
            None => Ok(cache.entries[f].2.clone()),
        })
        .collect();
    let mut segs = Vec::new();
    for (path, res) in files.iter().zip(results) {
        let shown = reader::display_path(path);
        match res {
            Ok(InstanceHeader::Seg(s)) => segs.push((s, path.clone())),
            Ok(InstanceHeader::Image(i)) => {
                // an SR or a presentation state in an image series is no image: it gives the
                // series no modality (and the quality gate no geometry)
                let modality = if i.geometry.is_image() {
                    i.modality.as_str()
                } else {
                    ""
                };
                listing
                    .index
                    .insert(&i.sop_instance, &i.series, &i.study, modality);
                listing
                    .index
                    .insert_geometry(&i.sop_instance, &i.series, i.geometry);
            }
            Err(ReadError::NotDicom) => {
                debug!(path = %shown, "not DICOM, skipped");
                listing.problems.push(Problem {
                    path: shown,
                    reason: ReadError::NotDicom.to_string(),
                });
            }
            Err(e) => {
                debug!(path = %shown, reason = %e, "unreadable file skipped");
                // a file cut short is most often one still being written
                listing.retry_soon |= matches!(e, ReadError::Parse(_));
                listing.problems.push(Problem {
                    path: shown,
                    reason: e.to_string(),
                });
            }
        }
    }
    listing.segs = group_files(segs);
    Ok(listing)
}

pub use crate::source::filter::ModalityFilter;

/// Lists a folder and matches what it holds (no quality gate).
pub fn scan_folder(root: &Path) -> Result<crate::model::scan::Scan, FolderError> {
    scan_folder_cached(root, &mut HeaderCache::default(), None, None)
}

/// [`scan_folder`] with a cache of headers already read, the dataset's image filter, and the
/// quality gate when `gate` is given (labels the ledger knows unchanged are not decoded again).
pub fn scan_folder_cached(
    root: &Path,
    cache: &mut HeaderCache,
    filter: Option<&ModalityFilter>,
    gate: Option<(&Validator, &dyn crate::model::KnownLabels)>,
) -> Result<crate::model::Scan, FolderError> {
    let mut listing = list_stamped(root, cache, filter, gate.map(|(v, _)| v))?;
    let segs = std::mem::take(&mut listing.segs);
    let known = match gate {
        Some((_, lookup)) => known_of(lookup, &segs),
        None => Default::default(),
    };
    let gate = gate.map(|(v, _)| LocalGate { v, known: &known });
    let labels = crate::rules::pair::pair_now(segs, &listing.index, &gate);
    Ok(crate::model::Scan { listing, labels })
}

/// Lists the folder, each SEG stamped with the settings a verdict depends on.
fn list_stamped(
    root: &Path,
    cache: &mut HeaderCache,
    filter: Option<&ModalityFilter>,
    validator: Option<&Validator>,
) -> Result<crate::model::Listing, FolderError> {
    let mut listing = list_cached(root, cache)?;
    if let Some(f) = filter {
        f.apply(&mut listing.index);
    }
    // what a verdict here depends on besides the files: recorded, so a change re-judges
    let stamp = crate::source::settings_stamp(filter.map(|f| f.query()), validator);
    for s in &mut listing.segs {
        s.remote_stamp = Some(stamp.clone());
    }
    Ok(listing)
}

/// What the ledger knows of these SEG series.
fn known_of(
    lookup: &dyn crate::model::KnownLabels,
    segs: &[crate::model::SegSeries],
) -> crate::model::Known {
    let uids: Vec<&str> = segs.iter().map(|s| s.uid()).collect();
    lookup.among(&uids)
}

/// The quality gate of labels found in a folder ([`validate_local`]), for
/// [`crate::rules::pair`]. It never waits: it reads files on the calling thread.
pub struct LocalGate<'k> {
    pub v: &'k Validator,
    pub known: &'k crate::model::Known,
}

impl crate::rules::pair::Gate for LocalGate<'_> {
    fn judge<'a>(
        &'a self,
        labels: &'a mut [crate::model::MatchedLabel],
        index: &'a crate::model::ImageIndex,
    ) -> impl std::future::Future<Output = ()> + Send + 'a {
        validate_local(labels, index, self.v, self.known);
        std::future::ready(())
    }
}

/// The ledger's name for a folder source.
pub fn source_name(root: &Path) -> String {
    let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    format!("folder:{}", abs.display())
}

/// How many threads read headers: `SEGBRIDGE_READ_THREADS` when set (1 to 64, whatever the
/// number of files: the determinism tests run both sides), else the cores (at most 8) once
/// there are 64 files or more. The results never depend on it.
fn read_threads(files: usize) -> usize {
    if let Some(n) = std::env::var("SEGBRIDGE_READ_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return n.clamp(1, 64);
    }
    if files < 64 {
        return 1;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

/// Reads headers on all cores; the order of the results is the order of `files`.
fn read_all(files: &[PathBuf]) -> Vec<Result<InstanceHeader, ReadError>> {
    let workers = read_threads(files.len());
    if workers == 1 || files.is_empty() {
        return files.iter().map(|f| reader::read_instance(f)).collect();
    }
    let chunk = files.len().div_ceil(workers);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|f| reader::read_instance(f))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(files.chunks(chunk))
            .flat_map(|(h, part)| {
                h.join().unwrap_or_else(|_| {
                    // a panic while parsing is a bug in a dependency: report, never lose alignment
                    part.iter()
                        .map(|_| Err(ReadError::Parse("the DICOM parser panicked".into())))
                        .collect()
                })
            })
            .collect()
    })
}

/// The quality gate for labels found in a folder: decodes their files and checks them against
/// the folder's own images.
pub fn validate_local(
    labels: &mut [crate::dicom::MatchedLabel],
    index: &crate::dicom::ImageIndex,
    v: &crate::dicom::quality::Validator,
    known: &crate::model::Known,
) {
    use crate::dicom::quality::{files_key, read_full, reuse_known, Quality};
    for l in labels.iter_mut().filter(|l| l.is_candidate()) {
        let key = files_key(&l.seg.files);
        if reuse_known(l, known, key.as_deref()) {
            continue;
        }
        let mut objs = Vec::new();
        let mut failed = None;
        for (file, loc) in l.seg.files.iter().zip(&l.seg.locations) {
            match read_full(file) {
                Ok(o) => objs.push(o),
                Err(e) => failed = Some(format!("cannot read {loc}: {e}")),
            }
        }
        if l.seg.files.len() != l.seg.locations.len() {
            failed = Some("the SEG's files are not known".into());
        }
        let complete = failed.is_none();
        let q = match failed {
            Some(e) => Quality {
                problems: vec![e],
                ..Default::default()
            },
            None => {
                let image = l.outcome.image().unwrap_or_default().to_string();
                let mut q = v.validate(&objs, index.geometry(&image));
                if index.geometry(&image).is_none() {
                    q.warnings.push(format!(
                        "geometry not checked: the images of series {image} are not in the folder"
                    ));
                }
                q
            }
        };
        l.set_quality(q);
        // kept only when every file was read whole and none changed while being read
        l.verdict_key = key.filter(|k| complete && files_key(&l.seg.files).as_deref() == Some(k));
    }
}

/// A folder as a source: listing, optional STOW-RS upload of its SEGs, live watching.
#[derive(Clone)]
pub struct FolderSource {
    pub root: PathBuf,
    /// Upload SEG files found here to this DICOMweb server before notifying them. Their images
    /// must then be on that server (the training server trains only on what it finds there).
    pub stow: Option<super::dicomweb::DicomWeb>,
    /// The quality gate (None: `--no-validate`).
    pub validator: Option<crate::dicom::quality::Validator>,
    /// The dataset's image filter, as far as a folder can apply it.
    pub filter: Option<ModalityFilter>,
    cache: std::sync::Arc<std::sync::Mutex<HeaderCache>>,
}

impl FolderSource {
    pub fn new(root: PathBuf, stow: Option<super::dicomweb::DicomWeb>) -> FolderSource {
        FolderSource {
            root,
            stow,
            validator: None,
            filter: None,
            cache: Default::default(),
        }
    }

    pub fn source_name(&self) -> String {
        source_name(&self.root)
    }

    /// Lists and matches the folder and runs the gate (on blocking threads), then uploads what
    /// must be.
    pub async fn scan(
        &self,
        lookup: &dyn crate::model::KnownLabels,
    ) -> Result<crate::model::Scan, FolderError> {
        let root = self.root.clone();
        let cache = self.cache.clone();
        let filter = self.filter.clone();
        let validator = self.validator.clone();
        let failed = |e: tokio::task::JoinError| FolderError::Unreadable {
            path: self.root.display().to_string(),
            reason: format!("scan task failed: {e}"),
        };
        let stow = self.stow.is_some();
        let lookup_known = |segs: &[crate::model::SegSeries]| match &validator {
            Some(_) => known_of(lookup, segs),
            None => Default::default(),
        };
        let mut listing = {
            let (root, filter, validator) = (root.clone(), filter.clone(), validator.clone());
            tokio::task::spawn_blocking(move || {
                let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
                list_stamped(&root, &mut c, filter.as_ref(), validator.as_ref())
            })
            .await
            .map_err(failed)??
        };
        let segs = std::mem::take(&mut listing.segs);
        // with --stow the images that count are on the server: the gate runs after that match
        let known = if stow {
            Default::default()
        } else {
            lookup_known(&segs)
        };
        let gate = validator.clone().filter(|_| !stow);
        let mut scan = tokio::task::spawn_blocking(move || {
            let gate = gate.as_ref().map(|v| LocalGate { v, known: &known });
            let labels = crate::rules::pair::pair_now(segs, &listing.index, &gate);
            crate::model::Scan { listing, labels }
        })
        .await
        .map_err(failed)?;
        if let Some(stow) = &self.stow {
            let segs: Vec<_> = std::mem::take(&mut scan.labels)
                .into_iter()
                .map(|l| l.seg)
                .collect();
            let known = lookup_known(&segs);
            let gate = validator.as_ref().map(|v| LocalGate { v, known: &known });
            match_on_server(&mut scan, segs, stow, &gate).await;
            stow_ready(&mut scan, &stow.client, &known).await;
        }
        Ok(scan)
    }
}
