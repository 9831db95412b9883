//! The server's side of a DICOMweb dataset: the probe on create, and what `nextimage` reads
//! (the dataset's image series, its SEG series, and the image each SEG's first instance names),
//! always with the dataset's `client_id`/`client_secret` (HTTP Basic).
//!
//! Every URL is built from parts (`path_segments_mut`, `query_pairs_mut`), never formatted from
//! outside values. Every answer is bounded in size and checked before use: a list that is not a
//! JSON array fails the call; an item without valid UIDs is skipped. Messages name the server
//! without credentials and never carry the secret.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use reqwest::{StatusCode, Url};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::Value;

use crate::model::uid::is_uid;
use crate::monai::types::{DatasetFilters, DatasetSpec};
use crate::util::Secret;

/// Largest QIDO list answer read (bytes), and most rows taken from it.
const MAX_LIST: usize = 32 << 20;
const MAX_ROWS: usize = 100_000;
/// Largest WADO-RS metadata answer of one instance (a SEG's per-frame groups can be large; only
/// its ReferencedSeriesSequence is kept while parsing).
const MAX_METADATA: usize = 32 << 20;
/// How many SEGs' references are read at once.
const PARALLEL: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(20);

/// The DICOM JSON keys read.
const STUDY_UID: &str = "0020000D";
const SERIES_UID: &str = "0020000E";
const SOP_UID: &str = "00080018";
const MODALITY: &str = "00080060";
/// What an image's `meta` needs beyond the UIDs: StudyDate, StudyTime, PatientID.
const META_FIELDS: [&str; 3] = ["00080020", "00080030", "00100020"];

/// A dataset's DICOMweb server, as the server reaches it.
pub(super) struct Dicomweb {
    root: Url,
    /// The root without credentials, query or fragment: for messages and `RetrieveURL`.
    public: Url,
    user: Option<String>,
    secret: Option<Secret>,
    http: reqwest::Client,
}

/// An instance's WADO-RS metadata, of which only ReferencedSeriesSequence is kept.
#[derive(Deserialize)]
struct References {
    #[serde(rename = "00081115", default)]
    referenced_series: Option<Value>,
}

/// An image series as listed: its UIDs (checked) and its DICOM JSON row.
pub(super) struct ImageRow {
    pub(super) study: String,
    pub(super) series: String,
    row: Value,
}

impl ImageRow {
    /// The first value of `tag` when it is a short string (DICOM JSON key, eight hex digits).
    pub(super) fn text(&self, tag: &str) -> Option<String> {
        text(&self.row, tag)
    }
}

fn text(row: &Value, tag: &str) -> Option<String> {
    row.get(tag)?
        .get("Value")?
        .get(0)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .map(str::to_string)
}

/// A UID read from a DICOM JSON row, if it is one.
fn uid(row: &Value, tag: &str) -> Option<String> {
    text(row, tag).filter(|u| is_uid(u))
}

impl Dicomweb {
    /// The dataset's server: `client_url` must be an http(s) URL.
    pub(super) fn of(spec: &DatasetSpec) -> Result<Dicomweb, String> {
        let root = Url::parse(spec.client_url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or("client_url is not an http(s) URL")?;
        let mut public = root.clone();
        // infallible for an http(s) URL
        let _ = public.set_username("");
        let _ = public.set_password(None);
        public.set_query(None);
        public.set_fragment(None);
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.without_url().to_string())?;
        Ok(Dicomweb {
            root,
            public,
            user: spec.client_id.clone().filter(|u| !u.is_empty()),
            secret: spec.client_secret.clone(),
            http,
        })
    }

    /// The server as messages name it (no credentials).
    pub(super) fn name(&self) -> &str {
        self.public.as_str().trim_end_matches('/')
    }

    /// `{root}/studies/{study}/series/{series}`, without credentials.
    pub(super) fn retrieve_url(&self, study: &str, series: &str) -> String {
        below(&self.public, &["studies", study, "series", series], &[]).to_string()
    }

    /// The probe on create: `GET {root}/studies?limit=1` must answer 2xx.
    pub(super) async fn probe(&self) -> Result<(), String> {
        let url = below(&self.root, &["studies"], &[("limit".into(), "1".into())]);
        self.get(url, 1 << 20).await.map(|_| ())
    }

    /// The image series of the dataset that no SEG on the server labels: the image series
    /// listed with the dataset's filters (search filters and QIDO options), less those named by
    /// the first instance of a SEG series listed with the same search filters and
    /// `Modality=SEG`.
    pub(super) async fn unlabeled(&self, filters: &str) -> Result<Vec<ImageRow>, String> {
        let f = DatasetFilters::parse(filters);
        let owned = |v: Vec<(&str, &str)>| -> Vec<(String, String)> {
            v.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let (options, search) = (owned(f.options()), owned(f.search()));
        let mut image_query = search.clone();
        image_query.extend(options);
        image_query.extend(
            META_FIELDS
                .iter()
                .map(|f| ("includefield".to_string(), f.to_string())),
        );
        let mut seg_query: Vec<(String, String)> = search
            .into_iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("Modality") && k != MODALITY)
            .collect();
        seg_query.push(("Modality".into(), "SEG".into()));
        let images = self.series(image_query).await?;
        let segs: Vec<(String, String)> = self
            .series(seg_query)
            .await?
            .iter()
            .filter_map(|s| Some((uid(s, STUDY_UID)?, uid(s, SERIES_UID)?)))
            .collect();
        let labeled: HashSet<String> = stream::iter(segs)
            .map(|(study, series)| async move { self.first_reference(&study, &series).await })
            .buffer_unordered(PARALLEL)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, String>>()?
            .into_iter()
            .flatten()
            .collect();
        let mut seen = HashSet::new();
        Ok(images
            .into_iter()
            .filter_map(|row| {
                let study = uid(&row, STUDY_UID)?;
                let series = uid(&row, SERIES_UID)?;
                (!labeled.contains(&series) && seen.insert(series.clone())).then_some(ImageRow {
                    study,
                    series,
                    row,
                })
            })
            .collect())
    }

    /// QIDO-RS `GET {root}/series?…`: a JSON array (an empty answer is none).
    async fn series(&self, query: Vec<(String, String)>) -> Result<Vec<Value>, String> {
        let body = self
            .get(below(&self.root, &["series"], &query), MAX_LIST)
            .await?;
        self.rows(&body, "its series list")
    }

    /// [`rows`], its error naming the server.
    fn rows<T: DeserializeOwned>(&self, body: &[u8], what: &str) -> Result<Vec<T>, String> {
        rows(body, what).map_err(|e| format!("{}: {e}", self.name()))
    }

    /// The series that the first instance of a SEG series names in
    /// ReferencedSeriesSequence[0].SeriesInstanceUID, if it names a valid one.
    async fn first_reference(&self, study: &str, series: &str) -> Result<Option<String>, String> {
        let at = ["studies", study, "series", series, "instances"];
        let list = self
            .get(
                below(&self.root, &at, &[("limit".into(), "1".into())]),
                MAX_LIST,
            )
            .await?;
        let Some(sop) = self
            .rows::<Value>(&list, "its instance list")?
            .first()
            .and_then(|i| uid(i, SOP_UID))
        else {
            return Ok(None);
        };
        let meta = self
            .get(
                below(
                    &self.root,
                    &[
                        "studies",
                        study,
                        "series",
                        series,
                        "instances",
                        &sop,
                        "metadata",
                    ],
                    &[],
                ),
                MAX_METADATA,
            )
            .await?;
        let meta: Vec<References> = self.rows(&meta, "its instance metadata")?;
        Ok(meta.first().and_then(|m| {
            m.referenced_series
                .as_ref()?
                .get("Value")?
                .get(0)
                .and_then(|item| uid(item, SERIES_UID))
        }))
    }

    /// GET with the dataset's credentials and `Accept: application/dicom+json`; a non-2xx
    /// answer or a body over `cap` bytes fails, naming the server and the status.
    async fn get(&self, url: Url, cap: usize) -> Result<Vec<u8>, String> {
        let mut req = self
            .http
            .get(url)
            .header("accept", "application/dicom+json");
        if let Some(user) = &self.user {
            req = req.basic_auth(user, self.secret.as_ref().map(Secret::expose));
        }
        let mut resp = req.send().await.map_err(|e| {
            let e = e.without_url();
            format!("{}: {e}", self.name())
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("{} answered HTTP {status}", self.name()));
        }
        if status == StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("{}: {}", self.name(), e.without_url()))?
        {
            if body.len() + chunk.len() > cap {
                return Err(format!("{} answered more than {cap} bytes", self.name()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// A DICOM JSON answer that must be an array of `T` (an empty body: none), at most
/// [`MAX_ROWS`] items.
fn rows<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<Vec<T>, String> {
    let Some(start) = body.iter().position(|b| !b.is_ascii_whitespace()) else {
        return Ok(Vec::new());
    };
    if body[start] != b'[' {
        return Err(match serde_json::from_slice::<IgnoredAny>(body) {
            Ok(_) => format!("{what} is not a JSON array"),
            Err(e) => format!("{what} is not JSON: {e}"),
        });
    }
    let items: Vec<T> =
        serde_json::from_slice(body).map_err(|e| format!("{what} is not DICOM JSON: {e}"))?;
    if items.len() > MAX_ROWS {
        return Err(format!(
            "{what} has {} items, more than {MAX_ROWS}",
            items.len()
        ));
    }
    Ok(items)
}

/// `root` with these path segments appended (each one encoded as one segment) and this query.
fn below(root: &Url, segments: &[&str], query: &[(String, String)]) -> Url {
    let mut u = root.clone();
    if let Ok(mut p) = u.path_segments_mut() {
        p.pop_if_empty();
        p.extend(segments);
    }
    if !query.is_empty() {
        let mut q = u.query_pairs_mut();
        for (k, v) in query {
            q.append_pair(k, v);
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_are_built_from_parts() {
        let root = Url::parse("http://u:pw@pacs:8042/dicom-web/").unwrap();
        let u = below(
            &root,
            &["studies", "1.2/../x", "series"],
            &[("Modality".into(), "CT&limit=1".into())],
        );
        assert_eq!(
            u.as_str(),
            "http://u:pw@pacs:8042/dicom-web/studies/1.2%2F..%2Fx/series?Modality=CT%26limit%3D1"
        );
        let spec = DatasetSpec::dicomweb("d", "http://u:pw@pacs:8042/dicom-web?x=1")
            .with_credentials("orthanc", Secret::new("s3cret"));
        let d = Dicomweb::of(&spec).unwrap();
        assert_eq!(d.name(), "http://pacs:8042/dicom-web");
        assert_eq!(
            d.retrieve_url("1.2", "1.3"),
            "http://pacs:8042/dicom-web/studies/1.2/series/1.3"
        );
        for bad in ["", "ftp://pacs/dicom-web", "mailto:x@y", "pacs:8042"] {
            assert!(
                Dicomweb::of(&DatasetSpec::dicomweb("d", bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn answers_are_checked_before_use() {
        assert_eq!(rows::<Value>(b" \n", "x").unwrap().len(), 0);
        assert_eq!(rows::<Value>(b"[{}]", "x").unwrap().len(), 1);
        let e = rows::<Value>(b"{}", "x").unwrap_err();
        assert!(e.contains("not a JSON array"), "{e}");
        let e = rows::<Value>(b"<html>", "x").unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
        let e = rows::<Value>(b"[1,", "x").unwrap_err();
        assert!(e.contains("not DICOM JSON"), "{e}");
        // metadata: only the reference is kept, the rest skipped while parsing
        let meta: Vec<References> = rows(
            br#"[{"00081115": {"vr": "SQ", "Value": [{"0020000E": {"vr": "UI", "Value": ["1.9"]}}]},
                 "52009230": {"vr": "SQ", "Value": [{}, {}]}}]"#,
            "m",
        )
        .unwrap();
        let r = meta[0].referenced_series.as_ref().unwrap();
        assert_eq!(uid(&r["Value"][0], SERIES_UID).as_deref(), Some("1.9"));
        assert!(rows::<References>(b"[2]", "m").is_err());
        let row = json!({"0020000E": {"vr": "UI", "Value": ["1.2.3"]},
            "0020000D": {"vr": "UI", "Value": ["1.2/../4"]},
            "00100020": {"vr": "LO", "Value": [{"Alphabetic": "x"}]}});
        assert_eq!(uid(&row, SERIES_UID).as_deref(), Some("1.2.3"));
        assert_eq!(uid(&row, STUDY_UID), None, "bad UID grammar");
        assert_eq!(text(&row, "00100020"), None, "not a string");
        assert_eq!(text(&row, "00080020"), None, "missing");
    }
}
