//! Settings: command line, then environment, then the TOML config file, then defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::monai::{ApiConfig, Secret};

pub const DEFAULT_API: &str = "https://api.monai.ngc.nvidia.com";
pub const DEFAULT_ORG: &str = "iasixjqzw1hj";
pub const DEFAULT_STATE: &str = "segbridge.db";
pub const DEFAULT_BATCH: usize = 100;

/// One layer of settings: the config file, or the command line (already merged with the
/// environment by clap). Both have the same names as the long flags and are merged field by
/// field in [`Settings::resolve`] (command line over file over default), so a new setting is a
/// field here, its flag in `cli/args.rs`, and its use in `resolve`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Layer {
    pub api: Option<String>,
    pub org: Option<String>,
    pub dataset: Option<String>,
    pub state: Option<PathBuf>,
    pub batch: Option<usize>,
    pub folder: Option<PathBuf>,
    /// Seconds to keep retrying a failing API call before leaving entries for the next run.
    pub retry_for: Option<f64>,
    /// Seconds before one request (API or PACS) times out.
    pub request_timeout: Option<f64>,
    /// The MONAI API key; prefer the MONAI_API_KEY environment variable.
    pub api_key: Option<String>,
    pub dicomweb: Option<String>,
    pub orthanc: Option<String>,
    pub dicomweb_user: Option<String>,
    /// Prefer the DICOMWEB_PASSWORD environment variable.
    pub dicomweb_password: Option<String>,
    /// Prefer the DICOMWEB_TOKEN environment variable.
    pub dicomweb_token: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub image_filter: Option<String>,
    pub concurrency: Option<usize>,
    pub page_size: Option<usize>,
    pub stow: Option<String>,
    /// Seconds between full listings in `watch`.
    pub reconcile: Option<f64>,
    /// Seconds between polls of the Orthanc changes feed or a DICOMweb listing in `watch`.
    pub poll: Option<f64>,
    pub on_new_series: Option<bool>,
    pub chunk: Option<usize>,
    pub no_validate: Option<bool>,
    /// The experiment's labels file (JSON, like model_params.labels).
    pub labels: Option<PathBuf>,
    /// Read the experiment's labels from the API.
    pub experiment: Option<String>,
    pub strict_labels: Option<bool>,
    /// Command line only: the folders after the first `--folder`.
    #[serde(skip)]
    pub more_folders: Vec<PathBuf>,
    /// Command line only: a file never turns TLS verification off.
    #[serde(skip)]
    pub insecure: bool,
}

/// The config file: a [`Layer`] read from TOML (its secrets, `api-key` and the PACS password or
/// token, have no flag).
pub type FileConfig = Layer;
/// The command line: a [`Layer`] built from the flags.
pub type Overrides = Layer;

/// A configuration problem: shown as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Layer {
    pub fn load(path: &Path) -> Result<Layer, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
        let cfg: Layer =
            toml::from_str(&text).map_err(|e| ConfigError(toml_error(path, &text, &e)))?;
        if cfg.api_key.is_some() || cfg.dicomweb_password.is_some() || cfg.dicomweb_token.is_some()
        {
            warn_if_readable_by_others(path);
        }
        Ok(cfg)
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "config file {} holds a secret and is readable by other users; chmod 600 it",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

/// Everything a command needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api: String,
    pub org: String,
    pub dataset: Option<String>,
    pub state: PathBuf,
    pub batch: usize,
    pub folder: Option<PathBuf>,
    pub key: Option<Secret>,
    pub retry_for: Duration,
    pub timeout: Duration,
    pub lock_wait: Duration,
    pub pacs: PacsSettings,
}

/// Where and how to reach the PACS.
#[derive(Debug, Clone, Default)]
pub struct PacsSettings {
    pub folders: Vec<PathBuf>,
    pub dicomweb: Option<String>,
    pub orthanc: Option<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub ca_cert: Option<PathBuf>,
    pub insecure: bool,
    pub image_filter: Option<String>,
    pub concurrency: usize,
    pub page_size: usize,
    pub stow: Option<String>,
    pub reconcile: Duration,
    pub poll: Duration,
    pub on_new_series: bool,
    pub chunk: usize,
    /// The quality gate: on unless --no-validate.
    pub validate: bool,
    pub labels: Option<PathBuf>,
    pub experiment: Option<String>,
    pub strict_labels: bool,
}

/// A config file error that names the key and line but never the value: a value of the wrong
/// type may be a secret (`api-key = 12345678`), and toml's own message quotes it.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim();
    let at = e.span().map(|sp| {
        let start = sp.start.min(text.len());
        let line = text[..start].matches('\n').count() + 1;
        let key = text
            .lines()
            .nth(line - 1)
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim().to_string())
            .unwrap_or_default();
        (line, key)
    });
    let (line, key) = at.unwrap_or((0, String::new()));
    let place = if line > 0 {
        format!(", line {line}")
    } else {
        String::new()
    };
    if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
        let expected = msg
            .rsplit_once(", expected ")
            .map(|(_, x)| x)
            .unwrap_or("another kind of value");
        return format!(
            "config file {}{place}: `{key}` has a value of the wrong type or range (expected \
             {expected}); the value is not shown",
            path.display()
        );
    }
    if msg.starts_with("unknown field") {
        // the key's name and the known names only, never its value
        return format!("config file {}{place}: {msg}", path.display());
    }
    format!(
        "config file {}{place}: not valid TOML ({})",
        path.display(),
        msg.split(['`', '"', '\'']).next().unwrap_or("").trim()
    )
}

fn env_secret(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

/// An http(s) URL with a host and a valid port, and no credentials in it: a URL is logged,
/// shown by `/healthz` and stored in the state file's cursors, so `user:password@` would be
/// too. Messages never show what stood before the `@`.
fn check_url(flag: &str, url: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(u) = url else { return Ok(None) };
    let parsed = url::Url::parse(&u)
        .ok()
        .filter(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some());
    let Some(mut p) = parsed else {
        return Err(ConfigError(format!(
            "{flag} {}: expected an http:// or https:// URL with a host and a valid port",
            without_userinfo(&u)
        )));
    };
    if !p.username().is_empty() || p.password().is_some() {
        let _ = p.set_username("");
        let _ = p.set_password(None);
        return Err(ConfigError(format!(
            "{flag} {p}: credentials in the URL are refused (they would be logged and stored); \
             give the PACS user with --dicomweb-user and its password in DICOMWEB_PASSWORD (or a \
             token in DICOMWEB_TOKEN); the API key goes in MONAI_API_KEY"
        )));
    }
    Ok(Some(u.trim_end_matches('/').to_string()))
}

/// A URL as text with whatever stands between `://` and an `@` of its authority removed.
fn without_userinfo(u: &str) -> String {
    let Some((scheme, rest)) = u.split_once("://") else {
        return u.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://…@{}", &rest[at + 1..]),
        None => u.to_string(),
    }
}

fn secs(v: f64, what: &str) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| ConfigError(format!("{what} must be a non-negative number of seconds")))
}

impl Settings {
    pub fn resolve(cli: Layer, file: Layer) -> Result<Settings, ConfigError> {
        let key = std::env::var("MONAI_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .or(file.api_key)
            .map(Secret::new);
        let batch = cli.batch.or(file.batch).unwrap_or(DEFAULT_BATCH);
        if batch == 0 {
            return Err(ConfigError("--batch must be at least 1".into()));
        }
        let api = check_url(
            "--api",
            Some(cli.api.or(file.api).unwrap_or_else(|| DEFAULT_API.into())),
        )?
        .unwrap_or_else(|| DEFAULT_API.into());
        let mut folders: Vec<PathBuf> = cli
            .folder
            .clone()
            .or(file.folder.clone())
            .into_iter()
            .collect();
        folders.extend(cli.more_folders.iter().cloned());
        folders.dedup();
        let pacs = PacsSettings {
            folders,
            dicomweb: check_url("--dicomweb", cli.dicomweb.or(file.dicomweb))?,
            orthanc: check_url("--orthanc", cli.orthanc.or(file.orthanc))?,
            user: cli.dicomweb_user.or(file.dicomweb_user),
            password: env_secret("DICOMWEB_PASSWORD").or(file.dicomweb_password.map(Secret::new)),
            token: env_secret("DICOMWEB_TOKEN").or(file.dicomweb_token.map(Secret::new)),
            ca_cert: cli.ca_cert.or(file.ca_cert),
            insecure: cli.insecure,
            image_filter: cli
                .image_filter
                .or(file.image_filter)
                .filter(|f| !f.trim().is_empty()),
            concurrency: cli
                .concurrency
                .or(file.concurrency)
                .unwrap_or(8)
                .clamp(1, 64),
            page_size: cli.page_size.or(file.page_size).unwrap_or(500).max(1),
            stow: check_url("--stow", cli.stow.or(file.stow))?,
            reconcile: secs(
                cli.reconcile.or(file.reconcile).unwrap_or(600.0),
                "--reconcile",
            )?,
            poll: secs(cli.poll.or(file.poll).unwrap_or(2.0), "--poll")?,
            on_new_series: cli.on_new_series.or(file.on_new_series).unwrap_or(false),
            chunk: cli.chunk.or(file.chunk).unwrap_or(200).max(1),
            validate: !cli.no_validate.or(file.no_validate).unwrap_or(false),
            labels: cli.labels.or(file.labels),
            experiment: cli.experiment.or(file.experiment),
            strict_labels: cli.strict_labels.or(file.strict_labels).unwrap_or(false),
        };
        Ok(Settings {
            pacs,
            api,
            org: cli.org.or(file.org).unwrap_or_else(|| DEFAULT_ORG.into()),
            dataset: cli.dataset.or(file.dataset).filter(|d| !d.is_empty()),
            state: cli
                .state
                .or(file.state)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE)),
            batch,
            folder: cli.folder.or(file.folder),
            key,
            retry_for: secs(
                cli.retry_for.or(file.retry_for).unwrap_or(120.0),
                "--retry-for",
            )?,
            timeout: secs(
                cli.request_timeout.or(file.request_timeout).unwrap_or(30.0),
                "--request-timeout",
            )?,
            lock_wait: Duration::from_secs(5),
        })
    }

    pub fn api_config(&self) -> ApiConfig {
        let mut c = ApiConfig::new(&self.api, &self.org, self.key.clone());
        c.retry_for = self.retry_for;
        c.timeout = self.timeout;
        c
    }

    pub fn require_dataset(&self) -> Result<&str, ConfigError> {
        self.dataset.as_deref().ok_or_else(|| {
            ConfigError(
                "no dataset: give --dataset ID (or SEGBRIDGE_DATASET, or dataset in the config file)"
                    .into(),
            )
        })
    }

    pub fn require_folder(&self) -> Result<&Path, ConfigError> {
        self.folder
            .as_deref()
            .ok_or_else(|| ConfigError("no source: give --folder DIR".into()))
    }

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
                let path = c.org_path(&format!("/experiments/{exp}"));
                let v = c.call(reqwest::Method::GET, &path, None).await?.body;
                Some(parse(
                    &v["model_params"]["labels"],
                    &format!("experiment {exp} model_params.labels"),
                )?)
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
        use crate::source::folder::{FolderSource, ModalityFilter};
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
                    Some(q) => Some(ModalityFilter::parse(q).map_err(ConfigError)?),
                    None => None,
                };
            }
            out.push(Source::Folder(src));
        }
        match (&p.orthanc, &p.dicomweb) {
            (Some(o), dw) => {
                let mut src = Orthanc::new(
                    o,
                    dw.as_deref(),
                    opts.clone(),
                    p.page_size,
                    p.image_filter.clone(),
                )
                .map_err(setup)?;
                src.on_new_series = p.on_new_series;
                src.dicomweb.validator = validator.clone();
                out.push(Source::Orthanc(src));
            }
            (None, Some(dw)) => {
                let mut src = DicomWeb::new(dw, opts.clone(), p.page_size, p.image_filter.clone())
                    .map_err(setup)?;
                src.validator = validator.clone();
                out.push(Source::DicomWeb(src));
            }
            (None, None) => {}
        }
        if out.is_empty() {
            return Err(ConfigError(
                "no source: give --folder DIR, --dicomweb URL or --orthanc URL".into(),
            ));
        }
        Ok(out)
    }

    pub fn require_key(&self) -> Result<(), ConfigError> {
        if self.key.is_none() {
            return Err(ConfigError(
                "no API key: set MONAI_API_KEY (or api-key in the config file)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_beats_file_beats_default() {
        let file: FileConfig =
            toml::from_str("org = \"fileorg\"\ndataset = \"d1\"\nbatch = 7").unwrap();
        let s = Settings::resolve(
            Overrides {
                dataset: Some("d2".into()),
                ..Default::default()
            },
            file,
        )
        .unwrap();
        assert_eq!(s.org, "fileorg");
        assert_eq!(s.dataset.as_deref(), Some("d2"));
        assert_eq!(s.batch, 7);
        assert_eq!(s.api, DEFAULT_API);
        assert_eq!(s.state, PathBuf::from(DEFAULT_STATE));
    }

    #[test]
    fn the_shipped_sample_config_parses() {
        let cfg: FileConfig = toml::from_str(include_str!("../../contrib/segbridge.toml")).unwrap();
        assert_eq!(cfg.orthanc.as_deref(), Some("http://127.0.0.1:8042"));
        assert_eq!(cfg.image_filter.as_deref(), Some("Modality=CT"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        assert!(toml::from_str::<FileConfig>("datset = \"x\"").is_err());
    }

    #[test]
    fn bad_values_are_config_errors() {
        let e = Settings::resolve(
            Overrides {
                batch: Some(0),
                ..Default::default()
            },
            FileConfig::default(),
        )
        .unwrap_err();
        assert!(e.0.contains("--batch"));
        let e = Settings::resolve(
            Overrides {
                api: Some("ftp://x".into()),
                ..Default::default()
            },
            FileConfig::default(),
        )
        .unwrap_err();
        assert!(e.0.contains("http"));
    }
}
