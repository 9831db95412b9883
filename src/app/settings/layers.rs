//! The settings, each defined once. A field of a layer below is at the same time a flag (its
//! doc comment is its `--help`, its name the long flag), a key of the TOML config file (the
//! same name, e.g. `retry-for`) and a value merged field by field (command line over
//! environment over file over default) by the `over` the [`layer!`] macro writes for it. A new
//! setting is one field here and its use in [`super::Settings::resolve`].

use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Deserializer};

use super::ConfigError;

/// A value given in a higher layer wins over the one below; a switch not given (`false`) or a
/// list left empty leaves the lower layer's choice.
pub trait Over {
    fn over(self, below: Self) -> Self;
}

impl<T> Over for Option<T> {
    fn over(self, below: Self) -> Self {
        self.or(below)
    }
}

impl Over for bool {
    fn over(self, below: Self) -> Self {
        self || below
    }
}

impl<T> Over for Vec<T> {
    fn over(self, below: Self) -> Self {
        if self.is_empty() {
            below
        } else {
            self
        }
    }
}

/// Defines a layer struct and its `over`, from one list of fields.
macro_rules! layer {
    ($(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty, )* }) => {
        $(#[$m])*
        pub struct $name { $( $(#[$fm])* pub $f: $t, )* }
        impl $name {
            /// This layer over `below`, field by field.
            pub fn over(self, below: Self) -> Self {
                Self { $( $f: Over::over(self.$f, below.$f), )* }
            }
        }
    };
}

layer! {
    /// How to reach the MONAI API: every command that calls it (for `scan`, `--experiment`).
    /// Its flags are global below the command that takes them (`api --api URL login` and
    /// `api login --api URL` both work).
    #[derive(Args, Debug, Default, Clone, Deserialize)]
    #[serde(default, rename_all = "kebab-case")]
    #[command(next_help_heading = "MONAI API")]
    pub struct ApiLayer {
        /// MONAI API host [default: https://api.monai.ngc.nvidia.com]
        #[arg(long, global = true, env = "SEGBRIDGE_API")]
        pub api: Option<String>,
        /// Organisation [default: iasixjqzw1hj]
        #[arg(long, global = true, env = "SEGBRIDGE_ORG")]
        pub org: Option<String>,
        /// Seconds to keep retrying a failing API call before giving up for this run
        /// [default: 120; 15 for `api` commands]
        #[arg(long, global = true)]
        pub retry_for: Option<f64>,
        /// Seconds before one request (API or PACS) times out [default: 30]
        #[arg(long, global = true)]
        pub request_timeout: Option<f64>,
    }
}

layer! {
    /// The dataset notified: `sync`, `watch`, `serve`, `status`, `api next-image`, `api notify`.
    #[derive(Args, Debug, Default, Clone, Deserialize)]
    #[serde(default, rename_all = "kebab-case")]
    #[command(next_help_heading = "MONAI API")]
    pub struct DatasetLayer {
        /// Dataset ID to notify. `sync`, `watch` and `serve` read it from the API and take its
        /// client_url (the DICOMweb source), client_id (the user) and filters where no flag
        /// gives them; a flag that differs is warned about
        #[arg(long, env = "SEGBRIDGE_DATASET")]
        pub dataset: Option<String>,
    }
}

layer! {
    /// Where the ledger is: every command that reads or writes it (`orthanc-lua` keeps the
    /// generated hook token beside it).
    #[derive(Args, Debug, Default, Clone, Deserialize)]
    #[serde(default, rename_all = "kebab-case")]
    #[command(next_help_heading = "State")]
    pub struct StateLayer {
        /// The ledger: a SQLite file, or `postgres://user@host/db` to share it between
        /// segbridge processes (password from the URL or PGPASSWORD) [default: segbridge.db]
        #[arg(long, env = "SEGBRIDGE_STATE")]
        pub state: Option<String>,
    }
}

layer! {
    /// What a command that writes the ledger reads: one writer process per state file.
    #[derive(Args, Debug, Default, Clone, Deserialize)]
    #[serde(default, rename_all = "kebab-case")]
    #[command(next_help_heading = "State")]
    pub struct WriterLayer {
        /// Seconds to wait for another segbridge process to release the state file [default: 5]
        #[arg(long)]
        pub lock_wait: Option<f64>,
        /// With the ledger in PostgreSQL: seconds a process holds a source (or the outbox)
        /// without renewing; renewed every third of it, and taken over by another process
        /// once it expires [default: 6]
        #[arg(long)]
        pub lease: Option<f64>,
    }
}

layer! {
    /// How the outbox is delivered: `sync`, `watch`, `serve`.
    #[derive(Args, Debug, Default, Clone, Deserialize)]
    #[serde(default, rename_all = "kebab-case")]
    #[command(next_help_heading = "MONAI API")]
    pub struct DeliveryLayer {
        /// Largest number of entries in one notify call [default: 100]
        #[arg(long)]
        pub batch: Option<usize>,
    }
}

layer! {
    /// Where labels come from and how they are judged. Several sources may be given; each
    /// keeps its own cursor.
    #[derive(Args, Debug, Default, Clone, Deserialize)]
    #[serde(default, rename_all = "kebab-case")]
    #[command(next_help_heading = "Sources and quality gate")]
    pub struct SourceLayer {
        /// Folder to scan recursively (DICOM recognised by content); may be repeated
        #[arg(long)]
        #[serde(deserialize_with = "one_or_many")]
        pub folder: Vec<PathBuf>,
        /// DICOMweb root of any server, e.g. http://pacs:8042/dicom-web [default with --dataset
        /// and no other source: the dataset's client_url]
        #[arg(long)]
        pub dicomweb: Option<String>,
        /// Orthanc REST root, e.g. http://pacs:8042 (its DICOMweb root: URL/dicom-web, or
        /// --dicomweb with one Orthanc); may be repeated
        #[arg(long)]
        #[serde(deserialize_with = "one_or_many")]
        pub orthanc: Vec<String>,
        /// Basic-auth user for the PACS (password from env DICOMWEB_PASSWORD; a bearer token
        /// from env DICOMWEB_TOKEN instead) [default with --dataset, reading its server: the
        /// dataset's client_id]
        #[arg(long)]
        pub dicomweb_user: Option<String>,
        /// PEM file of a CA to trust for the PACS's TLS certificate
        #[arg(long)]
        pub ca_cert: Option<PathBuf>,
        /// Do not verify the PACS's TLS certificate (dangerous; warned about on every start)
        #[arg(long)]
        #[serde(skip)]
        pub insecure: bool,
        /// The dataset's image filter (QIDO query string, e.g. "Modality=CT"): labels of
        /// images outside it are unusable, SEG series outside its search filters other than
        /// Modality are invalid (the service never sees them); includefield, limit, offset and
        /// fuzzymatching are QIDO options, not filters [default with --dataset: the dataset's
        /// filters, else Modality=CT]
        #[arg(long)]
        pub image_filter: Option<String>,
        /// Concurrent requests to the PACS at most [default: 8]
        #[arg(long)]
        pub concurrency: Option<usize>,
        /// The first QIDO page's size; full pages double, up to 16 times it [default: 500]
        #[arg(long)]
        pub page_size: Option<usize>,
        /// Upload SEG files found in --folder to this DICOMweb root (STOW-RS) before notifying
        /// them
        #[arg(long)]
        pub stow: Option<String>,
        /// Also react to Orthanc's NewSeries (when its StableAge is long)
        #[arg(long)]
        pub on_new_series: bool,
        /// SEG series recorded per ledger transaction during a backfill [default: 200]
        #[arg(long)]
        pub chunk: Option<usize>,
        /// Do not decode and check labels before notifying them (the quality gate is on by
        /// default)
        #[arg(long)]
        pub no_validate: bool,
        /// The experiment's labels, a JSON object like {"1": "liver"} (model_params.labels)
        #[arg(long)]
        pub labels: Option<PathBuf>,
        /// Read the experiment's labels from the API (GET /experiments/{id})
        #[arg(long, conflicts_with = "labels")]
        pub experiment: Option<String>,
        /// A segment that matches no experiment label makes the label invalid (else a warning)
        #[arg(long)]
        pub strict_labels: bool,
    }
}

layer! {
    /// How a long-running command (`watch`, `serve`) paces itself.
    #[derive(Args, Debug, Default, Clone, Deserialize)]
    #[serde(default, rename_all = "kebab-case")]
    #[command(next_help_heading = "Pacing")]
    pub struct LiveLayer {
        /// Seconds between full listings (also on start) [default: 600]
        #[arg(long)]
        pub reconcile: Option<f64>,
        /// Seconds between polls of the Orthanc changes feed or a DICOMweb listing [default: 2]
        #[arg(long)]
        pub poll: Option<f64>,
    }
}

/// Secrets have no flag (a flag would show in `ps`): env first, then the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct FileSecrets {
    /// The MONAI API key; prefer the MONAI_API_KEY environment variable.
    pub api_key: Option<String>,
    /// Prefer the DICOMWEB_PASSWORD environment variable.
    pub dicomweb_password: Option<String>,
    /// Prefer the DICOMWEB_TOKEN environment variable.
    pub dicomweb_token: Option<String>,
}

const SECRET_KEYS: [&str; 3] = ["api-key", "dicomweb-password", "dicomweb-token"];

/// Flags a config file may not set, and why.
const FLAG_ONLY: [(&str, &str); 1] = [(
    "insecure",
    "a config file never turns TLS verification off; give --insecure on the command line",
)];

/// All the layers together: the command line's (flags and environment, parsed by clap) or the
/// config file's.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    pub api: ApiLayer,
    pub dataset: DatasetLayer,
    pub state: StateLayer,
    pub writer: WriterLayer,
    pub delivery: DeliveryLayer,
    pub source: SourceLayer,
    pub live: LiveLayer,
    pub secrets: FileSecrets,
}

impl Layers {
    /// The command line over `file`.
    pub fn over(self, file: Layers) -> Layers {
        Layers {
            api: self.api.over(file.api),
            dataset: self.dataset.over(file.dataset),
            state: self.state.over(file.state),
            writer: self.writer.over(file.writer),
            delivery: self.delivery.over(file.delivery),
            source: self.source.over(file.source),
            live: self.live.over(file.live),
            // secrets never come from the command line
            secrets: file.secrets,
        }
    }

    /// An interactive command's defaults under these merged layers: a person waits for it, so
    /// a failing API call is retried for [`super::INTERACTIVE_RETRY_FOR`] seconds unless the
    /// command line, the environment or the file sets `retry-for`.
    pub fn interactive(mut self) -> Layers {
        self.api.retry_for = self.api.retry_for.or(Some(super::INTERACTIVE_RETRY_FOR));
        self
    }

    /// Reads a TOML config file whose keys are the long flags' names. An unknown key is an
    /// error naming it and its line; a value is never shown (it may be a secret).
    pub fn load(path: &Path) -> Result<Layers, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
        Layers::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Layers, ConfigError> {
        let err = |e: toml::de::Error| ConfigError(toml_error(path, text, &e));
        let table: toml::Table = toml::from_str(text).map_err(err)?;
        let known = known_keys();
        for key in table.keys() {
            let line = line_of(text, key);
            if let Some((_, why)) = FLAG_ONLY.iter().find(|(k, _)| k == key) {
                return Err(ConfigError(format!(
                    "config file {}{line}: `{key}`: {why}",
                    path.display()
                )));
            }
            if !known.iter().any(|k| k == key) {
                return Err(ConfigError(format!(
                    "config file {}{line}: unknown key `{key}` (the keys are the long flags' \
                     names: {})",
                    path.display(),
                    known.join(", ")
                )));
            }
        }
        let layers = Layers {
            api: toml::from_str(text).map_err(err)?,
            dataset: toml::from_str(text).map_err(err)?,
            state: toml::from_str(text).map_err(err)?,
            writer: toml::from_str(text).map_err(err)?,
            delivery: toml::from_str(text).map_err(err)?,
            source: toml::from_str(text).map_err(err)?,
            live: toml::from_str(text).map_err(err)?,
            secrets: toml::from_str(text).map_err(err)?,
        };
        let s = &layers.secrets;
        if s.api_key.is_some() || s.dicomweb_password.is_some() || s.dicomweb_token.is_some() {
            warn_if_readable_by_others(path);
        }
        Ok(layers)
    }
}

/// The config file's keys: every layer's long flag, and the secrets.
pub fn known_keys() -> Vec<String> {
    fn longs<A: Args>() -> Vec<String> {
        A::augment_args(clap::Command::new("keys"))
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .filter(|l| !FLAG_ONLY.iter().any(|(k, _)| k == l))
            .collect()
    }
    let mut keys = longs::<ApiLayer>();
    keys.extend(longs::<DatasetLayer>());
    keys.extend(longs::<StateLayer>());
    keys.extend(longs::<WriterLayer>());
    keys.extend(longs::<DeliveryLayer>());
    keys.extend(longs::<SourceLayer>());
    keys.extend(longs::<LiveLayer>());
    keys.extend(SECRET_KEYS.iter().map(|k| k.to_string()));
    keys
}

/// `folder = "a"` or `folder = ["a", "b"]`.
fn one_or_many<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

/// ", line N" of the first line that sets `key`, or nothing.
fn line_of(text: &str, key: &str) -> String {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| format!(", line {}", i + 1))
        .unwrap_or_default()
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
    if msg.starts_with("invalid type")
        || msg.starts_with("invalid value")
        || msg.starts_with("data did not match")
    {
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
    format!(
        "config file {}{place}: not valid TOML ({})",
        path.display(),
        msg.split(['`', '"', '\'']).next().unwrap_or("").trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Layers, ConfigError> {
        Layers::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn every_flag_is_a_key_and_unknown_keys_are_refused() {
        let keys = known_keys();
        for k in [
            "api",
            "retry-for",
            "image-filter",
            "no-validate",
            "poll",
            "api-key",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
        let e = parse("org = 'o'\ndatset = \"x\"").unwrap_err();
        assert!(
            e.0.contains("unknown key `datset`") && e.0.contains("line 2"),
            "{e}"
        );
        let e = parse("insecure = true").unwrap_err();
        assert!(e.0.contains("--insecure"), "{e}");
    }

    #[test]
    fn values_of_the_wrong_type_are_named_not_shown() {
        for text in [
            "batch = \"hunter2\"",
            "folder = 12345678",
            "poll = [\"hunter2\"]",
        ] {
            let e = parse(text).unwrap_err().0;
            assert!(e.contains("the value is not shown"), "{text}: {e}");
            assert!(!e.contains("hunter2") && !e.contains("12345678"), "{e}");
        }
    }

    #[test]
    fn the_command_line_wins_field_by_field() {
        let file =
            parse("folder = 'f'\nbatch = 7\nno-validate = true\npoll = 3\napi-key = 'k'").unwrap();
        assert_eq!(file.source.folder, vec![PathBuf::from("f")]);
        let cli = Layers {
            delivery: DeliveryLayer { batch: Some(9) },
            ..Default::default()
        };
        let m = cli.over(file);
        assert_eq!(m.delivery.batch, Some(9));
        assert!(m.source.no_validate);
        assert_eq!(m.live.poll, Some(3.0));
        assert_eq!(m.source.folder, vec![PathBuf::from("f")]);
        assert_eq!(m.secrets.api_key.as_deref(), Some("k"));
        let many = parse("folder = ['a', 'b']").unwrap();
        assert_eq!(many.source.folder.len(), 2);
    }
}
