//! Settings: command line, then environment, then the TOML config file, then defaults. Each
//! setting is defined once, in [`layers`]; [`Settings::resolve`] checks and defaults them.

mod dataset;
pub mod layers;
mod sources;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ledger::StateAt;
use crate::monai::{ApiConfig, Secret};
pub use layers::{
    ApiLayer, DatasetLayer, DeliveryLayer, Layers, LiveLayer, SourceLayer, StateLayer, WriterLayer,
};

pub const DEFAULT_API: &str = "https://api.monai.ngc.nvidia.com";
pub const DEFAULT_ORG: &str = "iasixjqzw1hj";
pub const DEFAULT_STATE: &str = "segbridge.db";
pub const DEFAULT_BATCH: usize = 100;
/// How long the bridge (`sync`, `watch`, `serve`) keeps retrying a failing API call.
pub const DEFAULT_RETRY_FOR: f64 = 120.0;
/// How long an interactive `api` command keeps retrying: a person is waiting.
pub const INTERACTIVE_RETRY_FOR: f64 = 15.0;

/// A configuration problem: shown as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Everything a command needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api: String,
    pub org: String,
    pub dataset: Option<String>,
    pub state: StateAt,
    pub batch: usize,
    pub folder: Option<PathBuf>,
    pub key: Option<Secret>,
    pub retry_for: Duration,
    pub timeout: Duration,
    pub lock_wait: Duration,
    /// How long a lease lasts (a ledger shared in PostgreSQL).
    pub lease: Duration,
    pub pacs: PacsSettings,
}

/// Where and how to reach the PACS.
#[derive(Debug, Clone, Default)]
pub struct PacsSettings {
    pub folders: Vec<PathBuf>,
    pub dicomweb: Option<String>,
    /// Orthanc REST roots, one source each.
    pub orthanc: Vec<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub ca_cert: Option<PathBuf>,
    pub insecure: bool,
    pub image_filter: Option<String>,
    /// The image filter is the dataset's `filters` (no `--image-filter` was given).
    pub filter_from_dataset: bool,
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
    /// Checks and defaults the merged layers (see [`Layers::over`]).
    pub fn resolve(l: Layers) -> Result<Settings, ConfigError> {
        let Layers {
            api: a,
            dataset,
            state,
            writer,
            delivery,
            source: src,
            live,
            secrets,
        } = l;
        let key = std::env::var("MONAI_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .or(secrets.api_key)
            .map(Secret::new);
        let batch = delivery.batch.unwrap_or(DEFAULT_BATCH);
        if batch == 0 {
            return Err(ConfigError("--batch must be at least 1".into()));
        }
        let api = check_url("--api", Some(a.api.unwrap_or_else(|| DEFAULT_API.into())))?
            .unwrap_or_else(|| DEFAULT_API.into());
        let mut folders = src.folder;
        folders.dedup();
        let folder = folders.first().cloned();
        let pacs = PacsSettings {
            folders,
            dicomweb: check_url("--dicomweb", src.dicomweb)?,
            orthanc: {
                let mut all = Vec::new();
                for o in src.orthanc {
                    all.extend(check_url("--orthanc", Some(o))?);
                }
                all.dedup();
                all
            },
            user: src.dicomweb_user,
            password: env_secret("DICOMWEB_PASSWORD")
                .or(secrets.dicomweb_password.map(Secret::new)),
            token: env_secret("DICOMWEB_TOKEN").or(secrets.dicomweb_token.map(Secret::new)),
            ca_cert: src.ca_cert,
            insecure: src.insecure,
            image_filter: src.image_filter.filter(|f| !f.trim().is_empty()),
            filter_from_dataset: false,
            concurrency: src.concurrency.unwrap_or(8).clamp(1, 64),
            page_size: src.page_size.unwrap_or(500).max(1),
            stow: check_url("--stow", src.stow)?,
            reconcile: secs(live.reconcile.unwrap_or(600.0), "--reconcile")?,
            poll: secs(live.poll.unwrap_or(2.0), "--poll")?,
            on_new_series: src.on_new_series,
            chunk: src.chunk.unwrap_or(200).max(1),
            validate: !src.no_validate,
            labels: src.labels,
            experiment: src.experiment,
            strict_labels: src.strict_labels,
        };
        Ok(Settings {
            api,
            org: a.org.unwrap_or_else(|| DEFAULT_ORG.into()),
            dataset: dataset.dataset.filter(|d| !d.is_empty()),
            state: StateAt::parse(state.state.as_deref().unwrap_or(DEFAULT_STATE))
                .map_err(|e| ConfigError(format!("--state: {e}")))?,
            batch,
            folder,
            key,
            retry_for: secs(a.retry_for.unwrap_or(DEFAULT_RETRY_FOR), "--retry-for")?,
            timeout: secs(a.request_timeout.unwrap_or(30.0), "--request-timeout")?,
            lock_wait: secs(writer.lock_wait.unwrap_or(5.0), "--lock-wait")?,
            lease: match secs(writer.lease.unwrap_or(6.0), "--lease")? {
                l if l < Duration::from_millis(300) => {
                    return Err(ConfigError("--lease must be at least 0.3 seconds".into()))
                }
                l => l,
            },
            pacs,
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

    fn layers(text: &str) -> Layers {
        Layers::parse(Path::new("t.toml"), text).unwrap()
    }

    #[test]
    fn cli_beats_file_beats_default() {
        let file = layers("org = \"fileorg\"\ndataset = \"d1\"\nbatch = 7");
        let cli = Layers {
            dataset: DatasetLayer {
                dataset: Some("d2".into()),
            },
            ..Default::default()
        };
        let s = Settings::resolve(cli.over(file)).unwrap();
        assert_eq!(s.org, "fileorg");
        assert_eq!(s.dataset.as_deref(), Some("d2"));
        assert_eq!(s.batch, 7);
        assert_eq!(s.api, DEFAULT_API);
        assert_eq!(s.state.file(), Some(std::path::Path::new(DEFAULT_STATE)));
        assert_eq!(s.lock_wait, Duration::from_secs(5));
    }

    #[test]
    fn an_interactive_command_retries_for_15_s_unless_a_layer_says_otherwise() {
        let resolve = |l: Layers| Settings::resolve(l).unwrap().retry_for;
        assert_eq!(resolve(Layers::default()), Duration::from_secs(120));
        assert_eq!(
            resolve(Layers::default().interactive()),
            Duration::from_secs(15)
        );
        let file = layers("retry-for = 40");
        assert_eq!(
            resolve(Layers::default().over(file).interactive()),
            Duration::from_secs(40)
        );
    }

    #[test]
    fn the_shipped_sample_config_parses() {
        let cfg = layers(include_str!("../../../contrib/segbridge.toml"));
        assert_eq!(
            cfg.source.orthanc,
            vec!["http://127.0.0.1:8042".to_string()]
        );
        assert_eq!(cfg.source.image_filter.as_deref(), Some("Modality=CT"));
        assert_eq!(cfg.live.reconcile, Some(600.0));
    }

    #[test]
    fn bad_values_are_config_errors() {
        let mut l = Layers::default();
        l.delivery.batch = Some(0);
        assert!(Settings::resolve(l).unwrap_err().0.contains("--batch"));
        let mut l = Layers::default();
        l.api.api = Some("ftp://x".into());
        assert!(Settings::resolve(l).unwrap_err().0.contains("http"));
        let mut l = Layers::default();
        l.writer.lock_wait = Some(-1.0);
        assert!(Settings::resolve(l).unwrap_err().0.contains("--lock-wait"));
    }
}
