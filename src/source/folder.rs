//! The folder source: walks a directory tree, recognises DICOM by content, reads headers only.

use std::path::{Path, PathBuf};

use tracing::{debug, warn};
use walkdir::WalkDir;

use super::{Listing, Problem};
use crate::dicom::reader::{self, group_series, InstanceHeader, ReadError};

/// Why a folder cannot be listed at all.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("folder {path}: {reason}")]
    Unreadable { path: String, reason: String },
}

/// Lists everything under `root`. Unreadable files are reported and skipped; an unreadable
/// sub-directory makes the listing incomplete (so nothing is removed because of it).
pub fn list(root: &Path) -> Result<Listing, FolderError> {
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
                    // A loop is a property of the tree, not a failure to read it: say so, go on.
                    warn!(path = %path, "symbolic link loop, not followed");
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
    let results = read_all(&files);
    let mut segs = Vec::new();
    for (path, res) in files.iter().zip(results) {
        let shown = reader::display_path(path);
        match res {
            Ok(InstanceHeader::Seg(s)) => segs.push((s, shown)),
            Ok(InstanceHeader::Image(i)) => {
                listing
                    .index
                    .insert(&i.sop_instance, &i.series, &i.study, &i.modality)
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
                listing.problems.push(Problem {
                    path: shown,
                    reason: e.to_string(),
                });
            }
        }
    }
    listing.segs = group_series(segs);
    Ok(listing)
}

/// The ledger's name for a folder source.
pub fn source_name(root: &Path) -> String {
    let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    format!("folder:{}", abs.display())
}

/// Reads headers on all cores; the order of the results is the order of `files`.
fn read_all(files: &[PathBuf]) -> Vec<Result<InstanceHeader, ReadError>> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    if files.len() < 64 || workers == 1 {
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
