//! The sources and the quality gate that resolved settings name.

use super::{ConfigError, Settings};

impl Settings {
    /// The quality gate these settings ask for: None with --no-validate. The experiment's labels
    /// come from --labels FILE, or from the API with --experiment ID.
    pub async fn validator(&self) -> anyhow::Result<Option<crate::dicom::quality::Validator>> {
        use crate::dicom::quality::{ExpectedLabels, Validator};
        let p = &self.pacs;
        if !p.validate {
            return Ok(None);
        }
        let parse = |v: &serde_json::Value, what: &str| -> Result<ExpectedLabels, ConfigError> {
            v.as_object()
                .filter(|m| !m.is_empty())
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .ok_or_else(|| {
                    ConfigError(format!(
                        "{what}: expected a JSON object like {{\"1\": \"liver\"}}"
                    ))
                })
        };
        let labels = match (&p.labels, &p.experiment) {
            (Some(f), _) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| ConfigError(format!("--labels {}: {e}", f.display())))?;
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| ConfigError(format!("--labels {}: {e}", f.display())))?;
                Some(parse(&v, &format!("--labels {}", f.display()))?)
            }
            (None, Some(exp)) => {
                self.require_key()?;
                let mut c = crate::monai::Client::new(self.api_config())?;
                let e = c.experiment(exp).await?;
                let labels = e.labels().filter(|m| !m.is_empty()).cloned();
                Some(labels.ok_or_else(|| {
                    ConfigError(format!(
                        "experiment {exp} model_params.labels: expected a JSON object like \
                         {{\"1\": \"liver\"}}"
                    ))
                })?)
            }
            (None, None) => None,
        };
        Ok(Some(Validator {
            labels,
            strict_labels: p.strict_labels,
        }))
    }

    /// The sources these settings name; at least one is required.
    pub fn sources(&self) -> Result<Vec<crate::source::Source>, ConfigError> {
        self.sources_with(None)
    }

    /// The sources, with the quality gate.
    pub fn sources_with(
        &self,
        validator: Option<crate::dicom::quality::Validator>,
    ) -> Result<Vec<crate::source::Source>, ConfigError> {
        use crate::source::dicomweb::DicomWeb;
        use crate::source::folder::FolderSource;
        use crate::source::http::{Auth, PacsOptions};
        use crate::source::orthanc::Orthanc;
        use crate::source::Source;
        let p = &self.pacs;
        let auth = match (&p.token, &p.user) {
            (Some(t), _) => Auth::Bearer(t.clone()),
            (None, Some(u)) => Auth::Basic {
                user: u.clone(),
                password: p.password.clone(),
            },
            (None, None) => Auth::None,
        };
        let opts = PacsOptions {
            auth,
            ca_cert: p.ca_cert.clone(),
            insecure: p.insecure,
            timeout: self.timeout,
            concurrency: p.concurrency,
            ..Default::default()
        };
        let setup = |e: crate::source::http::PacsError| ConfigError(e.to_string());
        let mut out = Vec::new();
        let stow = match &p.stow {
            Some(u) => Some(
                DicomWeb::new(u, opts.clone(), p.page_size, p.image_filter.clone())
                    .map_err(setup)?,
            ),
            None => None,
        };
        for f in &p.folders {
            let meta = std::fs::metadata(f)
                .map_err(|e| ConfigError(format!("folder {}: {e}", f.display())))?;
            if !meta.is_dir() {
                return Err(ConfigError(format!(
                    "folder {}: not a directory",
                    f.display()
                )));
            }
            std::fs::read_dir(f)
                .map_err(|e| ConfigError(format!("folder {}: {e}", f.display())))?;
            let mut src = FolderSource::new(f.clone(), stow.clone());
            src.validator = validator.clone();
            if stow.is_none() {
                // with --stow the images that count are on the server, which applies the filter
                src.filter = match &p.image_filter {
                    Some(q) => folder_filter(q, p.filter_from_dataset, f)?,
                    None => None,
                };
            }
            out.push(Source::Folder(src));
        }
        // --dicomweb names one Orthanc's DICOMweb root; with several, each is URL/dicom-web
        if p.orthanc.len() > 1 && p.dicomweb.is_some() {
            return Err(ConfigError(
                "--dicomweb with several --orthanc: each Orthanc's DICOMweb root is its \
                 URL/dicom-web; leave --dicomweb out"
                    .into(),
            ));
        }
        for o in &p.orthanc {
            let dw = p.dicomweb.as_deref();
            let mut src = Orthanc::new(o, dw, opts.clone(), p.page_size, p.image_filter.clone())
                .map_err(setup)?;
            src.on_new_series = p.on_new_series;
            src.dicomweb.validator = validator.clone();
            out.push(Source::Orthanc(src));
        }
        if let (true, Some(dw)) = (p.orthanc.is_empty(), &p.dicomweb) {
            let mut src = DicomWeb::new(dw, opts.clone(), p.page_size, p.image_filter.clone())
                .map_err(setup)?;
            src.validator = validator.clone();
            out.push(Source::DicomWeb(src));
        }
        if out.is_empty() {
            return Err(ConfigError(
                "no source: give --folder DIR, --dicomweb URL or --orthanc URL".into(),
            ));
        }
        Ok(out)
    }
}

/// The image filter as folder `dir` applies it. A filter given on the command line that names
/// more than Modality is refused (a folder cannot check it); the dataset's own filters are
/// checked on Modality, with a warning that the rest is not.
fn folder_filter(
    q: &str,
    from_dataset: bool,
    dir: &std::path::Path,
) -> Result<Option<crate::source::folder::ModalityFilter>, ConfigError> {
    use crate::source::folder::ModalityFilter;
    match ModalityFilter::parse(q) {
        Ok(f) => Ok(Some(f)),
        Err(e) if !from_dataset => Err(ConfigError(e)),
        Err(_) => {
            let filters = crate::model::DatasetFilters::parse(q);
            tracing::warn!(
                "folder {}: the dataset's filters {q} name more than Modality, which a folder \
                 cannot check: a label the service does not see (outside {}) is notified \
                 anyway; upload with --stow, or read the PACS instead (--dataset alone)",
                dir.display(),
                filters.seg_query().unwrap_or_default()
            );
            // no Modality in the filters: every image series passes on the folder
            Ok(filters
                .modality_query()
                .and_then(|m| ModalityFilter::parse(&m).ok()))
        }
    }
}
