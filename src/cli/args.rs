//! Every subcommand and its flags. The settings' flags are defined once, in
//! `app/settings/layers.rs` (each is also a config-file key); each command flattens the layers
//! it reads, and only those, so its `--help` lists what it uses. `ConfigArg::settings` (`cli/config.rs`) turns
//! them into [`Settings`] (command line over environment over config file over defaults).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use super::config::ConfigArg;

use crate::app::settings::{
    ApiLayer, ConfigError, DatasetLayer, DeliveryLayer, Layers, LiveLayer, Settings, SourceLayer,
    StateLayer, WriterLayer,
};

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

/// What every command takes: how it logs.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Log format on stderr
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"], help_heading = "Logging")]
    pub log_format: String,
    /// More log output (-v info, -vv debug; `watch` and `serve` log info without it); RUST_LOG
    /// overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Logging")]
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
    // a command's own flags come first: a flattened layer's help heading covers what follows
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub state: StateLayer,
    #[command(flatten)]
    pub dataset: DatasetLayer,
    #[command(flatten)]
    pub api: ApiLayer,
}

impl StatusArgs {
    pub fn layers(&self) -> Layers {
        Layers {
            api: self.api.clone(),
            dataset: self.dataset.clone(),
            state: self.state.clone(),
            ..Default::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// One JSON object per line on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub sources: SourceLayer,
    // for --experiment
    #[command(flatten)]
    pub api: ApiLayer,
}

impl ScanArgs {
    pub fn layers(&self) -> Layers {
        Layers {
            api: self.api.clone(),
            source: self.sources.clone(),
            ..Default::default()
        }
    }
}

/// What the bridge commands (`sync`, `watch`, `serve`) read besides their sources.
#[derive(Args, Debug)]
pub struct BridgeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub api: ApiLayer,
    #[command(flatten)]
    pub dataset: DatasetLayer,
    #[command(flatten)]
    pub delivery: DeliveryLayer,
    #[command(flatten)]
    pub state: StateLayer,
    #[command(flatten)]
    pub writer: WriterLayer,
}

impl BridgeArgs {
    /// The settings with these sources and this pacing.
    pub fn settings(
        &self,
        source: &SourceLayer,
        live: &LiveLayer,
    ) -> Result<Settings, ConfigError> {
        self.config.settings(Layers {
            api: self.api.clone(),
            dataset: self.dataset.clone(),
            state: self.state.clone(),
            writer: self.writer.clone(),
            delivery: self.delivery.clone(),
            source: source.clone(),
            live: live.clone(),
            ..Default::default()
        })
    }
}

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Print the notify bodies that would be sent; change nothing, call nothing (but read the
    /// --dataset when no source flag is given)
    #[arg(long)]
    pub dry_run: bool,
    /// JSON output for scripts
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sources: SourceLayer,
    #[command(flatten)]
    pub bridge: BridgeArgs,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub sources: SourceLayer,
    #[command(flatten)]
    pub live: LiveLayer,
    #[command(flatten)]
    pub bridge: BridgeArgs,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address of the hook endpoint (a non-loopback address needs SEGBRIDGE_HOOK_TOKEN)
    #[arg(long, default_value = "127.0.0.1:8765")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub watch: WatchArgs,
}

#[derive(Args, Debug)]
pub struct LuaArgs {
    /// Where `segbridge serve` listens, as Orthanc reaches it
    #[arg(long, default_value = "http://127.0.0.1:8765")]
    pub url: String,
    /// Write the script to FILE (mode 0600: it holds the token) instead of stdout
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
    // the generated hook token is kept beside it (unless SEGBRIDGE_HOOK_TOKEN is set)
    #[command(flatten)]
    pub state: StateLayer,
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
    /// Check a dataset's DICOMweb URL on create (with its client_id/client_secret), as the real
    /// server does
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
