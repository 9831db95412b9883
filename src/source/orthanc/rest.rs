//! Orthanc's REST API as the other sources use it: `/tools/find` by lists of UIDs,
//! `/tools/bulk-content` by Orthanc IDs (computed from UIDs: [`series_id`]), study UIDs. Nothing
//! here depends on the DICOMweb source, which calls it.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::answers::Found;
use crate::source::endpoint::{is_orthanc_id, is_uid, Endpoint};
use crate::source::http::{PacsClient, PacsError};

/// Above this many lookups, one bulk `/tools/find` replaces one request each.
pub const BULK: usize = 16;

/// UIDs per `/tools/find` that matches a list of UIDs (a body of about 32 KiB).
const UIDS_PER_FIND: usize = 500;

fn tools_find() -> Endpoint {
    Endpoint::at(&["tools", "find"])
}

/// `/tools/find` at `level` with `query`, expanded.
pub async fn find(rest: &PacsClient, level: &str, query: Value) -> Result<Vec<Found>, PacsError> {
    rest.post_json(
        &tools_find(),
        &json!({"Level": level, "Query": query, "Expand": true}),
    )
    .await
}

/// Whether `uid` can go into a `/tools/find` list of UIDs as it is: digits and dots only, so
/// that nothing in it reads as a list separator or a wildcard.
pub fn listable_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// The `/tools/find` bodies for the resources at `level` whose `tag` is one of `uids` (each
/// listable), plus `extra` constraints: one per 500 UIDs, so the cost follows the UIDs asked,
/// not the size of the PACS.
fn uid_list_queries(
    level: &str,
    tag: &str,
    uids: &[&str],
    extra: &serde_json::Map<String, Value>,
    expand: bool,
) -> Vec<Value> {
    uids.chunks(UIDS_PER_FIND)
        .map(|part| {
            let mut query = extra.clone();
            query.insert(tag.to_string(), json!(part.join("\\")));
            json!({"Level": level, "Query": query, "Expand": expand})
        })
        .collect()
}

/// The resources at `level` whose `tag` is one of `uids`, expanded.
pub async fn find_by_uids(
    rest: &PacsClient,
    level: &str,
    tag: &str,
    uids: &[&str],
) -> Result<Vec<Found>, PacsError> {
    let mut found = Vec::new();
    for body in uid_list_queries(level, tag, uids, &serde_json::Map::new(), true) {
        found.extend(rest.post_json::<Vec<Found>>(&tools_find(), &body).await?);
    }
    Ok(found)
}

/// The Orthanc IDs of the resources at `level` whose `tag` is one of `uids` and that also
/// match `extra`.
pub async fn ids_by_uids(
    rest: &PacsClient,
    level: &str,
    tag: &str,
    uids: &[&str],
    extra: &serde_json::Map<String, Value>,
) -> Result<Vec<String>, PacsError> {
    let mut ids = Vec::new();
    for body in uid_list_queries(level, tag, uids, extra, false) {
        ids.extend(
            rest.post_json::<Vec<String>>(&tools_find(), &body)
                .await?
                .into_iter()
                .filter(|id| is_orthanc_id(id)),
        );
    }
    Ok(ids)
}

/// `POST /tools/bulk-content` (Orthanc 1.9.4+): the resources `ids` (Orthanc IDs), or their
/// descendants at `level`, one request per 500 IDs. IDs Orthanc does not have are left out of
/// its answer.
pub async fn bulk_content<T: serde::de::DeserializeOwned>(
    rest: &PacsClient,
    ids: &[&str],
    level: Option<&str>,
) -> Result<Vec<T>, PacsError> {
    let at = Endpoint::at(&["tools", "bulk-content"]);
    let mut out = Vec::new();
    for part in ids.chunks(UIDS_PER_FIND) {
        // (no metadata: nothing here reads it, and it costs Orthanc a third more)
        let mut body = json!({"Resources": part, "Metadata": false});
        if let Some(level) = level {
            body["Level"] = json!(level);
        }
        out.extend(rest.post_json::<Vec<T>>(&at, &body).await?);
    }
    Ok(out)
}

/// The series the SEGs reference, found by the Orthanc IDs their own patient and study give
/// (an image series is almost always in its SEG's study): series UID → (Orthanc ID, study
/// UID, modality). A series elsewhere, or an Orthanc without `/tools/bulk-content`, is simply
/// not in the answer (the caller then finds it by UID).
pub async fn series_in_seg_studies(
    rest: &PacsClient,
    segs: &[crate::dicom::reader::SegSeries],
) -> HashMap<String, (String, String, String)> {
    // Orthanc ID → (series UID, study UID)
    let mut asked: HashMap<String, (String, String)> = HashMap::new();
    for s in segs {
        let Some(series) = s.first.referenced_series.first().filter(|u| is_uid(u)) else {
            continue;
        };
        if !is_uid(&s.first.study) {
            continue;
        }
        let id = series_id(&s.first.patient_id, &s.first.study, series);
        asked.insert(id, (series.clone(), s.first.study.clone()));
    }
    let mut out = HashMap::new();
    if asked.is_empty() {
        return out;
    }
    let ids: Vec<&str> = asked.keys().map(String::as_str).collect();
    let found: Vec<Found> = match bulk_content(rest, &ids, None).await {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("{e}; finding the image series by UID");
            return out;
        }
    };
    for f in found {
        // only what was asked, and only when Orthanc names the series the ID was made from
        let Some((series, study)) = asked.get(&f.id) else {
            continue;
        };
        if f.tags.series.as_deref() != Some(series.as_str()) {
            continue;
        }
        let modality = f.tags.modality.unwrap_or_default();
        out.insert(series.clone(), (f.id, study.clone(), modality));
    }
    out
}

/// Orthanc's series ID: SHA-1 of "PatientID|StudyInstanceUID|SeriesInstanceUID", as 40 hex
/// digits in five groups of eight.
pub fn series_id(patient: &str, study: &str, series: &str) -> String {
    let hex = sha1_smol::Sha1::from(format!("{patient}|{study}|{series}"))
        .digest()
        .to_string();
    hex.as_bytes()
        .chunks(8)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("-")
}

/// StudyInstanceUIDs of Orthanc studies: one request each for a few, one
/// `/tools/bulk-content` per 500 when there are many (one `/tools/find` of every study before
/// Orthanc 1.9.4).
pub async fn study_uids(
    rest: &PacsClient,
    ids: &HashSet<String>,
) -> Result<HashMap<String, String>, PacsError> {
    let mut out = HashMap::new();
    if ids.len() > BULK {
        // the studies asked (Orthanc 1.9.4+), else every study
        let asked: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| is_orthanc_id(id))
            .collect();
        if let Ok(found) = bulk_content::<Found>(rest, &asked, None).await {
            for s in found {
                if let Some(uid) = s.tags.study.filter(|u| is_uid(u)) {
                    if ids.contains(&s.id) {
                        out.insert(s.id, uid);
                    }
                }
            }
            return Ok(out);
        }
        for s in find(rest, "Study", json!({})).await? {
            if let Some(uid) = s.tags.study.filter(|u| is_uid(u)) {
                if ids.contains(&s.id) {
                    out.insert(s.id, uid);
                }
            }
        }
        return Ok(out);
    }
    for id in ids.iter().filter(|id| is_orthanc_id(id)) {
        match rest
            .get_json::<Found>(&Endpoint::at(&["studies", id]), "application/json")
            .await
        {
            Ok(v) => {
                if let Some(uid) = v.tags.study.filter(|u| is_uid(u)) {
                    out.insert(id.clone(), uid.to_string());
                }
            }
            Err(PacsError::Http { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// StudyInstanceUIDs of the Orthanc studies `ids`, looked up first by the study UIDs the
/// caller expects them to have (`hints`, one `/tools/find` per 500), then any left over as
/// [`study_uids`] does. The cost follows the studies asked, not the size of the PACS.
pub async fn study_uids_hinted(
    rest: &PacsClient,
    ids: &HashSet<String>,
    hints: &[&str],
) -> Result<HashMap<String, String>, PacsError> {
    let mut out = HashMap::new();
    let hints: Vec<&str> = hints
        .iter()
        .copied()
        .filter(|u| listable_uid(u))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !hints.is_empty() {
        for s in find_by_uids(rest, "Study", "StudyInstanceUID", &hints).await? {
            if let Some(uid) = s.tags.study.filter(|u| is_uid(u)) {
                if ids.contains(&s.id) {
                    out.insert(s.id, uid);
                }
            }
        }
    }
    let rest_ids: HashSet<String> = ids
        .iter()
        .filter(|i| !out.contains_key(*i))
        .cloned()
        .collect();
    if !rest_ids.is_empty() {
        out.extend(study_uids(rest, &rest_ids).await?);
    }
    Ok(out)
}
