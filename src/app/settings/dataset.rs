//! The dataset as the source of truth: `sync`, `watch` and `serve` with `--dataset ID` read the
//! dataset from the API (`GET /datasets/{id}`) before their sources start, and take from it
//! what the flags and the config file leave open: its `client_url` as the DICOMweb source, its
//! `client_id` as the DICOMweb user (the password from `DICOMWEB_PASSWORD`, as for
//! `--dicomweb-user`), its `filters` as the image filter (read as the service reads them,
//! [`DatasetFilters`]). A flag still wins; where it differs from the dataset, one warning names
//! both values (never a secret).

use std::time::Duration;

use tracing::{debug, info, warn};

use super::{check_url, ConfigError, Settings};
use crate::monai::{Client, Dataset, DatasetFilters, DEFAULT_FILTERS};

/// How long the dataset is asked for when the flags already name a source: the answer only
/// checks them, so a down API delays the run this long at most.
const CHECK_ONLY_RETRY: Duration = Duration::from_secs(5);

impl Settings {
    /// Whether the flags (or the config file) name a source: then the dataset only checks them.
    pub fn source_given(&self) -> bool {
        let p = &self.pacs;
        !p.folders.is_empty() || p.dicomweb.is_some() || !p.orthanc.is_empty()
    }

    /// These settings with what the flags left open taken from the dataset `--dataset` names
    /// (unchanged without `--dataset`). When no source was given the dataset must be read: an
    /// API that cannot be reached is then an error naming the dataset and the flags that do
    /// without it. When a source was given, a failed read is a warning and the run goes on;
    /// `check_only_quietly` (a dry run) then does not call the API at all.
    pub async fn from_dataset(&self, check_only_quietly: bool) -> Result<Settings, ConfigError> {
        let Some(id) = self.dataset.as_deref() else {
            return Ok(self.clone());
        };
        let needed = !self.source_given();
        if !needed {
            // a source given wrong fails at once, before the API is asked
            self.sources()?;
        }
        if !needed && (check_only_quietly || self.key.is_none()) {
            debug!("dataset {id} not read: the sources are given and no API call is wanted");
            return Ok(self.clone());
        }
        let without = "give --dicomweb URL (and --image-filter, --dicomweb-user) to run \
                       without reading it";
        if self.key.is_none() {
            return Err(ConfigError(format!(
                "dataset {id}: no API key to read its client_url and filters with: set \
                 MONAI_API_KEY, or {without}"
            )));
        }
        let mut cfg = self.api_config();
        if !needed {
            cfg.retry_for = cfg.retry_for.min(CHECK_ONLY_RETRY);
        }
        let read = async { Client::new(cfg)?.dataset(id).await };
        match read.await {
            Ok(d) => {
                let (s, warnings) = self.adopt(&d)?;
                for w in warnings {
                    warn!("{w}");
                }
                Ok(s)
            }
            Err(e) if !needed => {
                warn!(
                    "cannot read dataset {id} from {} ({e}); going on with the sources and \
                     filter given, unchecked against the dataset",
                    self.api
                );
                Ok(self.clone())
            }
            Err(e) => Err(ConfigError(format!(
                "cannot read dataset {id} from {} ({e}): with no source flag segbridge takes \
                 the PACS and the image filter from the dataset; {without}",
                self.api
            ))),
        }
    }

    /// These settings completed from `d`, and the warnings for where a given value differs
    /// from the dataset's (one each).
    pub fn adopt(&self, d: &Dataset) -> Result<(Settings, Vec<String>), ConfigError> {
        let id = &d.id;
        let mut s = self.clone();
        let mut warnings = Vec::new();
        let url = d
            .client_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty());
        let p = &mut s.pacs;
        if !self.source_given() {
            let Some(u) = url else {
                return Err(ConfigError(format!(
                    "dataset {id} names no client_url: give --dicomweb URL"
                )));
            };
            p.dicomweb = check_url(&format!("dataset {id}'s client_url"), Some(u.to_string()))?;
            info!("dataset {id}: reading its client_url {u}");
        } else if let Some(u) = url {
            let read_elsewhere = |flag: &str, given: &str| {
                format!(
                    "{flag} {given} is not dataset {id}'s client_url {u}: segbridge reads \
                     {given}, the service reads {u}; labels it cannot find there are never \
                     trained on"
                )
            };
            match (&p.dicomweb, p.orthanc.as_slice()) {
                (Some(dw), _) if !same_url(dw, u) => {
                    warnings.push(read_elsewhere("--dicomweb", dw));
                }
                // every Orthanc: the service reads one server, so labels on another are never
                // trained on (one dataset per PACS)
                (None, all) => {
                    for o in all.iter().filter(|o| !same_server(o, u)) {
                        warnings.push(read_elsewhere("--orthanc", o));
                    }
                }
                _ => {}
            }
            if let Some(st) = p.stow.as_deref().filter(|st| !same_server(st, u)) {
                warnings.push(read_elsewhere("--stow", st));
            }
        }
        let on_dataset_server = url.is_some_and(|u| {
            p.dicomweb
                .as_deref()
                .or(p.orthanc.first().map(String::as_str))
                .is_some_and(|x| same_server(x, u))
        });
        let client_id = d.client_id.as_deref().filter(|c| !c.is_empty());
        match (&p.user, client_id) {
            (Some(user), Some(cid)) if user != cid => warnings.push(format!(
                "--dicomweb-user {user} is not dataset {id}'s client_id {cid}: reading the PACS \
                 as {user}"
            )),
            (None, Some(cid)) if p.token.is_none() && on_dataset_server => {
                p.user = Some(cid.to_string());
                if p.password.is_none() {
                    warnings.push(format!(
                        "dataset {id}'s client_id {cid} is the DICOMweb user, but \
                         DICOMWEB_PASSWORD is not set"
                    ));
                }
            }
            _ => {}
        }
        let theirs = d.read_filters();
        let shown = d
            .filters
            .as_deref()
            .filter(|f| !f.trim().is_empty())
            .unwrap_or(DEFAULT_FILTERS);
        match &p.image_filter {
            Some(given) if !DatasetFilters::parse(given).same_search(&theirs) => {
                warnings.push(format!(
                    "--image-filter {given} is not dataset {id}'s filters {shown}: segbridge \
                     uses {given}, the service trains only on what {shown} selects"
                ));
            }
            Some(_) => {}
            None => {
                p.image_filter = theirs.image_query();
                p.filter_from_dataset = true;
            }
        }
        Ok((s, warnings))
    }
}

/// Whether two URLs name the same DICOMweb root: the same server and path.
fn same_url(a: &str, b: &str) -> bool {
    let path = |u: &str| {
        url::Url::parse(u)
            .map(|p| p.path().trim_end_matches('/').to_string())
            .unwrap_or_default()
    };
    same_server(a, b) && path(a) == path(b)
}

/// Whether two URLs clearly name one server: scheme, host and port (loopback names alike).
fn same_server(a: &str, b: &str) -> bool {
    let origin = |u: &str| {
        let p = url::Url::parse(u).ok()?;
        let host = p.host_str()?.to_ascii_lowercase();
        let host = match host.as_str() {
            "localhost" | "127.0.0.1" | "[::1]" => "loopback".to_string(),
            _ => host,
        };
        Some((p.scheme().to_string(), host, p.port_or_known_default()))
    };
    match (origin(a), origin(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.trim_end_matches('/') == b.trim_end_matches('/'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::settings::Layers;
    use serde_json::json;

    fn dataset(v: serde_json::Value) -> Dataset {
        serde_json::from_value(v).unwrap()
    }

    fn settings(f: impl FnOnce(&mut Layers)) -> Settings {
        let mut l = Layers::default();
        l.dataset.dataset = Some("d1".into());
        f(&mut l);
        Settings::resolve(l).unwrap()
    }

    #[test]
    fn with_no_source_flag_the_dataset_names_the_pacs_the_user_and_the_filter() {
        let d = dataset(
            json!({"id": "d1", "client_url": "http://pacs:8042/dicom-web/",
            "client_id": "reader", "filters": "StudyDescription=Kidney*&limit=10"}),
        );
        let (s, w) = settings(|_| {}).adopt(&d).unwrap();
        assert_eq!(
            s.pacs.dicomweb.as_deref(),
            Some("http://pacs:8042/dicom-web")
        );
        assert_eq!(s.pacs.user.as_deref(), Some("reader"));
        assert_eq!(
            s.pacs.image_filter.as_deref(),
            Some("StudyDescription=Kidney*")
        );
        assert!(s.pacs.filter_from_dataset);
        // no DICOMWEB_PASSWORD in a unit test's environment is not assumed either way
        assert!(w.iter().all(|w| w.contains("DICOMWEB_PASSWORD")), "{w:?}");
        // none: the service's default
        let (s, _) = settings(|_| {})
            .adopt(&dataset(
                json!({"id": "d1", "client_url": "http://pacs/dicom-web"}),
            ))
            .unwrap();
        assert_eq!(s.pacs.image_filter.as_deref(), Some("Modality=CT"));
        // no client_url and no flag: nothing to read
        let e = settings(|_| {})
            .adopt(&dataset(json!({"id": "d1"})))
            .unwrap_err();
        assert!(e.0.contains("d1") && e.0.contains("--dicomweb URL"), "{e}");
        // credentials in the dataset's URL are refused like a flag's, and not shown
        let e = settings(|_| {})
            .adopt(&dataset(
                json!({"id": "d1", "client_url": "http://u:hunter2@pacs/dicom-web"}),
            ))
            .unwrap_err();
        assert!(!e.0.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_flag_wins_and_each_difference_is_one_warning_naming_both_values() {
        let d = dataset(
            json!({"id": "d1", "client_url": "http://pacs:8042/dicom-web",
            "client_id": "reader", "filters": "Modality=CT&StudyDescription=Kidney*"}),
        );
        let (s, w) = settings(|l| {
            l.source.dicomweb = Some("http://other:8042/dicom-web".into());
            l.source.dicomweb_user = Some("me".into());
            l.source.image_filter = Some("Modality=MR".into());
        })
        .adopt(&d)
        .unwrap();
        assert_eq!(
            s.pacs.dicomweb.as_deref(),
            Some("http://other:8042/dicom-web")
        );
        assert_eq!(s.pacs.user.as_deref(), Some("me"));
        assert_eq!(s.pacs.image_filter.as_deref(), Some("Modality=MR"));
        assert!(!s.pacs.filter_from_dataset);
        assert_eq!(w.len(), 3, "{w:?}");
        for (a, b) in [
            ("http://other:8042/dicom-web", "http://pacs:8042/dicom-web"),
            ("me", "reader"),
            ("Modality=MR", "Modality=CT&StudyDescription=Kidney*"),
        ] {
            assert!(
                w.iter().any(|w| w.contains(a) && w.contains(b)),
                "{a} {b}: {w:?}"
            );
        }
        // the same values in other words are no difference
        let (_, w) = settings(|l| {
            l.source.dicomweb = Some("http://pacs:8042/dicom-web/".into());
            l.source.image_filter = Some("StudyDescription=Kidney*&Modality=CT&limit=5".into());
        })
        .adopt(&d)
        .unwrap();
        assert!(w.iter().all(|w| w.contains("DICOMWEB_PASSWORD")), "{w:?}");
    }

    #[test]
    fn orthanc_given_is_only_compared_by_server() {
        let d = dataset(json!({"id": "d1", "client_url": "http://127.0.0.1:8042/dicom-web"}));
        let (s, w) = settings(|l| l.source.orthanc = vec!["http://localhost:8042".into()])
            .adopt(&d)
            .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.pacs.dicomweb, None, "Orthanc finds its own DICOMweb root");
        let (_, w) = settings(|l| l.source.orthanc = vec!["http://pacs2:8042".into()])
            .adopt(&d)
            .unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("http://pacs2:8042") && w[0].contains("127.0.0.1:8042"));
        // a folder source has no PACS to compare; the filter still comes from the dataset
        let (s, w) = settings(|l| l.source.folder = vec!["f".into()])
            .adopt(&d)
            .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.pacs.image_filter.as_deref(), Some("Modality=CT"));
    }
}
