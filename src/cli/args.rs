//! Every flag and subcommand, defined once with clap; [`settings`] turns them into
//! [`Settings`] (command line over environment over config file over defaults).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::settings::{ConfigError, FileConfig, Overrides, Settings};

#[derive(Parser, Debug)]
#[command(
    name = "segbridge",
    version,
    about = "Notifies the MONAI Cloud API of new, changed and deleted DICOM SEG labels",
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// TOML config file (same names as the long flags)
    #[arg(long, global = true, env = "SEGBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// MONAI API host [default: https://api.monai.ngc.nvidia.com]
    #[arg(long, global = true, env = "SEGBRIDGE_API")]
    pub api: Option<String>,
    /// Organisation [default: iasixjqzw1hj]
    #[arg(long, global = true, env = "SEGBRIDGE_ORG")]
    pub org: Option<String>,
    /// Dataset ID to notify
    #[arg(long, global = true, env = "SEGBRIDGE_DATASET")]
    pub dataset: Option<String>,
    /// State file (SQLite) [default: segbridge.db]
    #[arg(long, global = true, env = "SEGBRIDGE_STATE")]
    pub state: Option<PathBuf>,
    /// Largest number of entries in one notify call [default: 100]
    #[arg(long, global = true)]
    pub batch: Option<usize>,
    /// Seconds to keep retrying a failing API call before giving up for this run [default: 120]
    #[arg(long, global = true)]
    pub retry_for: Option<f64>,
    /// Seconds before one request (API or PACS) times out [default: 30]
    #[arg(long, global = true)]
    pub request_timeout: Option<f64>,
    /// Seconds to wait for another segbridge process to release the state file [default: 5]
    #[arg(long, global = true)]
    pub lock_wait: Option<f64>,
    /// Log format on stderr
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// More log output (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the whole job offline: built-in emulator, fixtures, temporary state
    Demo(DemoArgs),
    /// List SEG series in a source and how each matches (writes nothing)
    Scan(ScanArgs),
    /// Notify the API of what changed since the last run, once
    Sync(SyncArgs),
    /// Keep watching the sources and notify as labels come, until SIGTERM
    Watch(WatchArgs),
    /// `watch` plus the HTTP endpoint Orthanc's Lua hooks call, /healthz and /metrics
    Serve(ServeArgs),
    /// Print the Lua script for Orthanc's LuaScripts that calls `serve`
    OrthancLua(LuaArgs),
    /// What the ledger knows (and, with --experiment, the continual-learning job)
    Status(StatusArgs),
    /// Every call of the annotation workflow: datasets, experiments, CL, jobs, inference
    Api(crate::cli::cmd::api::ApiArgs),
    /// Run a local, contract-faithful MONAI API server
    Emulator(EmulatorArgs),
    /// Write the project's generated DICOM fixtures into a folder
    Fixtures(FixturesArgs),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// JSON output for scripts
    #[arg(long)]
    pub json: bool,
    /// Also show this experiment's continual-learning job: rounds, key metric, next round
    #[arg(long, env = "SEGBRIDGE_EXPERIMENT")]
    pub experiment: Option<String>,
}

/// Where labels come from. Several may be given; each keeps its own cursor.
#[derive(Args, Debug, Clone, Default)]
pub struct SourceArgs {
    /// Folder to scan recursively (DICOM recognised by content); may be repeated
    #[arg(long)]
    pub folder: Vec<PathBuf>,
    /// DICOMweb root of any server, e.g. http://pacs:8042/dicom-web
    #[arg(long)]
    pub dicomweb: Option<String>,
    /// Orthanc REST root, e.g. http://pacs:8042 (its DICOMweb root: URL/dicom-web, or --dicomweb)
    #[arg(long)]
    pub orthanc: Option<String>,
    /// Basic-auth user for the PACS (password from env DICOMWEB_PASSWORD; a bearer token from
    /// env DICOMWEB_TOKEN instead)
    #[arg(long)]
    pub dicomweb_user: Option<String>,
    /// PEM file of a CA to trust for the PACS's TLS certificate
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Do not verify the PACS's TLS certificate (dangerous; warned about on every start)
    #[arg(long)]
    pub insecure: bool,
    /// The dataset's image filter (QIDO query string, e.g. "Modality=CT"): labels of images
    /// outside it are unusable
    #[arg(long)]
    pub image_filter: Option<String>,
    /// Concurrent requests to the PACS at most [default: 8]
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// QIDO page size [default: 500]
    #[arg(long)]
    pub page_size: Option<usize>,
    /// Upload SEG files found in --folder to this DICOMweb root (STOW-RS) before notifying them
    #[arg(long)]
    pub stow: Option<String>,
    /// Also react to Orthanc's NewSeries (when its StableAge is long)
    #[arg(long)]
    pub on_new_series: bool,
    /// SEG series recorded per ledger transaction during a backfill [default: 200]
    #[arg(long)]
    pub chunk: Option<usize>,
    /// Do not decode and check labels before notifying them (the quality gate is on by default)
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

#[derive(Args, Debug)]
pub struct ScanArgs {
    #[command(flatten)]
    pub sources: SourceArgs,
    /// One JSON object per line on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SyncArgs {
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Print the notify bodies that would be sent; change nothing, call nothing
    #[arg(long)]
    pub dry_run: bool,
    /// JSON output for scripts
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Seconds between full listings (also on start) [default: 600]
    #[arg(long)]
    pub reconcile: Option<f64>,
    /// Seconds between polls of the Orthanc changes feed or a DICOMweb listing [default: 2]
    #[arg(long)]
    pub poll: Option<f64>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Address of the hook endpoint (a non-loopback address needs SEGBRIDGE_HOOK_TOKEN)
    #[arg(long, default_value = "127.0.0.1:8765")]
    pub listen: SocketAddr,
}

#[derive(Args, Debug)]
pub struct LuaArgs {
    /// Where `segbridge serve` listens, as Orthanc reaches it
    #[arg(long, default_value = "http://127.0.0.1:8765")]
    pub url: String,
}

#[derive(Args, Debug)]
pub struct EmulatorArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// The API key the emulator accepts
    #[arg(long, default_value = "demo")]
    pub api_key: String,
    /// Seconds a login token stays valid
    #[arg(long, default_value_t = 86400.0)]
    pub token_ttl: f64,
    /// Seconds a training round runs
    #[arg(long, default_value_t = 5.0)]
    pub train_seconds: f64,
    /// Check a dataset's DICOMweb URL on create, as the real server does
    #[arg(long)]
    pub probe_dicomweb: bool,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Folder to sync [default: ./fixtures when present, else freshly generated files]
    #[arg(long)]
    pub folder: Option<PathBuf>,
    /// Seconds each emulated training round runs
    #[arg(long, default_value_t = 1.0)]
    pub train_seconds: f64,
}

#[derive(Args, Debug)]
pub struct FixturesArgs {
    /// Output folder
    #[arg(long, default_value = "fixtures/generated")]
    pub out: PathBuf,
}

pub fn settings(
    g: &Global,
    src: &SourceArgs,
    reconcile: Option<f64>,
    poll: Option<f64>,
) -> Result<Settings, ConfigError> {
    let file = match &g.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let mut s = Settings::resolve(
        Overrides {
            api: g.api.clone(),
            org: g.org.clone(),
            dataset: g.dataset.clone(),
            state: g.state.clone(),
            batch: g.batch,
            folder: src.folder.first().cloned(),
            more_folders: src.folder.iter().skip(1).cloned().collect(),
            retry_for: g.retry_for,
            request_timeout: g.request_timeout,
            dicomweb: src.dicomweb.clone(),
            orthanc: src.orthanc.clone(),
            dicomweb_user: src.dicomweb_user.clone(),
            ca_cert: src.ca_cert.clone(),
            insecure: src.insecure,
            image_filter: src.image_filter.clone(),
            concurrency: src.concurrency,
            page_size: src.page_size,
            stow: src.stow.clone(),
            reconcile,
            poll,
            // a switch that is not given leaves the file's choice
            on_new_series: src.on_new_series.then_some(true),
            chunk: src.chunk,
            no_validate: src.no_validate.then_some(true),
            labels: src.labels.clone(),
            experiment: src.experiment.clone(),
            strict_labels: src.strict_labels.then_some(true),
            // the secrets (api-key, PACS password or token) have no flag
            ..Default::default()
        },
        file,
    )?;
    if let Some(w) = g.lock_wait {
        s.lock_wait = Duration::try_from_secs_f64(w).map_err(|_| {
            ConfigError("--lock-wait must be a non-negative number of seconds".into())
        })?;
    }
    Ok(s)
}
