//! The command line: parses arguments, resolves settings, calls the library, prints, and maps
//! failures to documented exit codes.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::app::exit::{self, Failure};
use crate::app::live;
use crate::app::pipeline;
use crate::app::report::print_scan;
use crate::app::settings::{ConfigError, FileConfig, Overrides, Settings};
use crate::emulator::{self, EmulatorConfig};
use crate::ledger::Ledger;
use crate::notify::Client;
use crate::source::Source;

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
    Api(crate::api_cli::ApiArgs),
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

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Watch(_) | Command::Serve(_));
    init_logging(&cli.global, daemon);
    match dispatch(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(f) if is_broken_pipe(&f.error) => ExitCode::from(exit::OK),
        Err(f) => {
            let mut msg = format!("{:#}", f.error);
            if msg.is_empty() {
                msg = "failed".into();
            }
            eprintln!("segbridge: error: {msg}");
            ExitCode::from(f.code)
        }
    }
}

/// Output piped into `head` and closed early is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

fn init_logging(g: &Global, daemon: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match g.verbose {
        // a daemon says what it notifies; a one-shot command only what went wrong
        0 if daemon => "segbridge=info",
        0 => "segbridge=warn",
        1 => "segbridge=info",
        _ => "segbridge=debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // control characters in logged values (a file name with a newline) are escaped
        .with_writer(move || crate::util::logsafe::SafeWriter::new(std::io::stderr(), ansi))
        .with_ansi(ansi)
        .with_target(false);
    if g.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn settings(
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
            timeout: g.request_timeout,
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
            on_new_series: src.on_new_series,
            chunk: src.chunk,
            no_validate: src.no_validate,
            labels: src.labels.clone(),
            experiment: src.experiment.clone(),
            strict_labels: src.strict_labels,
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

fn dispatch(cli: Cli) -> Result<(), Failure> {
    let g = cli.global;
    match cli.command {
        Command::Scan(a) => {
            let s = settings(&g, &a.sources, None, None)?;
            scan(&s, a.json)
        }
        Command::Sync(a) => {
            let s = settings(&g, &a.sources, None, None)?;
            sync(&s, a.dry_run, a.json)
        }
        Command::Watch(a) => {
            let s = settings(&g, &a.sources, a.reconcile, a.poll)?;
            live::run(&s, None)
        }
        Command::Serve(a) => {
            let s = settings(&g, &a.watch.sources, a.watch.reconcile, a.watch.poll)?;
            live::run(&s, Some(a.listen))
        }
        Command::OrthancLua(a) => {
            if !(a.url.starts_with("http://") || a.url.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "--url {}: expected an http:// or https:// URL",
                    a.url
                ))
                .into());
            }
            // the token serve uses: SEGBRIDGE_HOOK_TOKEN, else the one kept beside the state
            let s = settings(&g, &SourceArgs::default(), None, None)?;
            let token = crate::app::serve::token::hook_token(&s.state).map_err(ConfigError)?;
            print!(
                "{}",
                crate::app::serve::orthanc_lua(&a.url, Some(&token.secret))
            );
            Ok(())
        }
        Command::Status(a) => status(
            &settings(&g, &SourceArgs::default(), None, None)?,
            a.json,
            a.experiment.as_deref(),
        ),
        Command::Api(a) => {
            crate::api_cli::run(&settings(&g, &SourceArgs::default(), None, None)?, a)
        }
        Command::Emulator(a) => {
            let cfg = EmulatorConfig {
                api_key: a.api_key,
                token_ttl: Duration::try_from_secs_f64(a.token_ttl)
                    .map_err(|_| ConfigError("--token-ttl must be >= 0".into()))?,
                train_seconds: a.train_seconds.max(0.0),
                probe_dicomweb: a.probe_dicomweb,
                ..Default::default()
            };
            let rt = crate::app::runtime()?;
            rt.block_on(async move {
                let running = emulator::spawn(a.listen, cfg)
                    .await
                    .with_context(|| format!("cannot listen on {}", a.listen))?;
                println!("emulator listening on {}", running.url());
                let _ = std::io::stdout().flush();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate() => {}
                    r = running.handle => { r.context("emulator task")?; }
                }
                anyhow::Ok(())
            })?;
            Ok(())
        }
        Command::Demo(a) => crate::app::demo::run(&a.folder, a.train_seconds),
        Command::Fixtures(a) => {
            let written = crate::fixtures::write_demo_set(&a.out)
                .with_context(|| format!("writing fixtures to {}", a.out.display()))?;
            println!("wrote {} files under {}", written.len(), a.out.display());
            Ok(())
        }
    }
}

#[cfg(unix)]
async fn terminate() {
    if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        s.recv().await;
    } else {
        std::future::pending::<()>().await
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending::<()>().await
}

fn scan(s: &Settings, json_out: bool) -> Result<(), Failure> {
    let rt = crate::app::runtime()?;
    let validator = rt.block_on(s.validator())?;
    let sources = s.sources_with(validator)?;
    let (merged, errors) = rt.block_on(crate::app::sync::scan_once(&sources, s.pacs.chunk));
    print_scan(&merged, json_out)?;
    source_errors(errors)
}

fn source_errors(errors: Vec<crate::source::SourceError>) -> Result<(), Failure> {
    if errors.is_empty() {
        return Ok(());
    }
    Err(Failure {
        code: exit::SOURCE,
        error: anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    })
}

fn sync(s: &Settings, dry_run: bool, json_out: bool) -> Result<(), Failure> {
    let rt = crate::app::runtime()?;
    let validator = rt.block_on(s.validator())?;
    let sources = s.sources_with(validator)?;
    let dataset = s.require_dataset()?.to_string();
    if !dry_run {
        s.require_key()?;
    }
    let mut reporter = pipeline::Reporter::default();
    if dry_run {
        let mut ledger = Ledger::snapshot(&s.state)?;
        let report = rt.block_on(crate::app::sync::collect_once(
            &mut ledger,
            &sources,
            &dataset,
            s.pacs.chunk,
            &mut reporter,
        ))?;
        let pending = ledger.pending(&dataset, usize::MAX >> 1)?;
        let bodies = pipeline::batches(&pending, s.batch);
        let mut out = std::io::stdout().lock();
        if json_out {
            for (_, b) in &bodies {
                serde_json::to_writer(&mut out, b).map_err(anyhow::Error::from)?;
                writeln!(out).map_err(anyhow::Error::from)?;
            }
        } else {
            writeln!(
                out,
                "dry run: {} new changes, {} entries in {} notify call(s) to dataset {dataset}; nothing written, nothing sent",
                report.changes,
                pending.len(),
                bodies.len()
            )
            .map_err(anyhow::Error::from)?;
            for (_, b) in &bodies {
                writeln!(
                    out,
                    "POST {}/api/v1/orgs/{}/datasets/{dataset}/jobs\n{}",
                    s.api,
                    s.org,
                    serde_json::to_string_pretty(b).map_err(anyhow::Error::from)?
                )
                .map_err(anyhow::Error::from)?;
            }
        }
        return source_errors(report.source_errors);
    }
    let mut ledger = Ledger::open(&s.state, s.lock_wait)?;
    let report = rt.block_on(crate::app::sync::collect_once(
        &mut ledger,
        &sources,
        &dataset,
        s.pacs.chunk,
        &mut reporter,
    ))?;
    let result = rt.block_on(async {
        let mut client = Client::new(s.api_config())?;
        pipeline::deliver(&mut ledger, &mut client, &dataset, s.batch).await
    });
    let depth = ledger.outbox_depth(Some(&dataset))?;
    let st = ledger.summary()?;
    let count = |k: &str| st.count(k);
    let summary = json!({
        "dataset": dataset,
        "sources": sources.iter().map(Source::name).collect::<Vec<_>>(),
        "seg_series": st.labels_by_status.iter().map(|(_, n)| n).sum::<i64>(),
        "ready": count("ready"),
        "superseded": count("superseded"),
        "unusable": count("unusable"),
        "unmatched": count("unmatched"),
        "invalid": count("invalid"),
        "unreadable_files": st.problems.len(),
        "changes_queued": report.changes,
        "notify_calls": result.as_ref().map(|d| d.calls).unwrap_or(0),
        "entries_sent": result.as_ref().map(|d| d.entries_sent).unwrap_or(0),
        "outbox_remaining": depth,
        "source_errors": report.source_errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "error": result.as_ref().err().map(|e| e.to_string()),
    });
    let mut out = std::io::stdout().lock();
    if json_out {
        writeln!(out, "{summary}").map_err(anyhow::Error::from)?;
    } else {
        writeln!(
            out,
            "{} SEG series: {} ready, {} superseded, {} unusable, {} unmatched, {} invalid; {} unreadable",
            summary["seg_series"],
            count("ready"),
            count("superseded"),
            count("unusable"),
            count("unmatched"),
            count("invalid"),
            st.problems.len()
        )
        .map_err(anyhow::Error::from)?;
        for l in &st.attention {
            writeln!(out, "  {} {}: {}", l.status, l.label, l.reason)
                .map_err(anyhow::Error::from)?;
        }
        if let Ok(d) = &result {
            writeln!(
                out,
                "{} changes queued; {} entries sent in {} notify call(s); outbox: {}",
                report.changes, d.entries_sent, d.calls, depth
            )
            .map_err(anyhow::Error::from)?;
        }
    }
    match result {
        Ok(_) => source_errors(report.source_errors),
        Err(e) => Err(delivery_failure(e, depth)),
    }
}

/// How a delivery that stopped is reported: the API's failure (exit 3), or the state file's
/// (exit 4: a disk that filled after the API accepted a batch is not "the API could not be
/// reached", and that batch may be sent again).
fn delivery_failure(e: pipeline::DeliveryError, depth: i64) -> Failure {
    match e {
        pipeline::DeliveryError::Ledger(e) => Failure {
            code: exit::STATE,
            error: anyhow::anyhow!(
                "{e}; what the API accepted could not be recorded, so the next run may send it \
                 again ({depth} entries in the outbox)"
            ),
        },
        e => Failure {
            code: exit::DELIVERY,
            error: anyhow::anyhow!("{e}; {depth} entries stay in the outbox for the next run"),
        },
    }
}

fn status(s: &Settings, json_out: bool, experiment: Option<&str>) -> Result<(), Failure> {
    if !s.state.exists() {
        return Err(ConfigError(format!(
            "state file {} does not exist yet: run `segbridge sync` first (or give --state)",
            s.state.display()
        ))
        .into());
    }
    let ledger = Ledger::open_read_only(&s.state)?;
    let report = ledger.status()?;
    // the CL job, when asked: from the API, with the images notified since from the ledger
    let cl = match experiment {
        Some(exp) => {
            s.require_key()?;
            let dataset = s.dataset.clone();
            let rt = crate::app::runtime()?;
            let summary = rt.block_on(async {
                let mut c = Client::new(s.api_config())?;
                crate::api_cli::cl_summary(&mut c, exp, |since| {
                    let since = since
                        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs() as i64);
                    ledger
                        .images_notified_since(dataset.as_deref(), since)
                        .unwrap_or(0)
                })
                .await
            })?;
            Some(summary)
        }
        None => None,
    };
    let mut out = std::io::stdout().lock();
    if json_out {
        let labels = ledger.labels()?;
        let v = json!({"status": report, "labels": labels, "continual_learning": cl});
        writeln!(out, "{v}").map_err(anyhow::Error::from)?;
        return Ok(());
    }
    let w = |out: &mut std::io::StdoutLock, s: String| {
        writeln!(out, "{s}").map_err(anyhow::Error::from)
    };
    w(
        &mut out,
        format!(
            "state file      {} (schema {})",
            report.state, report.schema_version
        ),
    )?;
    let by: Vec<String> = report
        .labels_by_status
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    w(
        &mut out,
        format!(
            "labels          {} ; {} gone",
            if by.is_empty() {
                "none".into()
            } else {
                by.join(", ")
            },
            report.labels_gone
        ),
    )?;
    w(
        &mut out,
        format!("images told     {}", report.images_notified),
    )?;
    w(&mut out, format!("entries sent    {}", report.entries_sent))?;
    w(
        &mut out,
        format!(
            "last notify     {}",
            report.last_notify.as_deref().unwrap_or("never")
        ),
    )?;
    w(
        &mut out,
        format!(
            "outbox          {} waiting{}",
            report.outbox_depth,
            report
                .outbox_oldest
                .as_ref()
                .map(|o| format!(", oldest {o}"))
                .unwrap_or_default()
        ),
    )?;
    if let Some(e) = &report.outbox_last_error {
        w(&mut out, format!("last error      {e}"))?;
    }
    if !report.attention.is_empty() {
        w(&mut out, "\nlabels that will not be notified:".into())?;
        for l in &report.attention {
            w(
                &mut out,
                format!("  {} {} ({}): {}", l.status, l.label, l.rule, l.reason),
            )?;
        }
    }
    if let Some(cl) = &cl {
        if cl["cl_job"].is_null() {
            w(
                &mut out,
                format!(
                    "CL job          none in experiment {}",
                    cl["experiment"].as_str().unwrap_or("")
                ),
            )?;
        } else {
            w(
                &mut out,
                format!(
                    "CL job          {} {}: {} rounds done ({} started), last key metric {}",
                    cl["cl_job"].as_str().unwrap_or(""),
                    cl["status"].as_str().unwrap_or(""),
                    cl["rounds_done"],
                    cl["rounds_started"],
                    cl["last_key_metric"]
                        .as_f64()
                        .map(|m| format!("{m:.3}"))
                        .unwrap_or_else(|| "-".into())
                ),
            )?;
            w(
                &mut out,
                format!(
                    "next round      {} images notified since the last round; {} more start the next (round size {})",
                    cl["images_since_last_round"], cl["images_to_next_round"], cl["round_size"]
                ),
            )?;
        }
    }
    if !report.problems.is_empty() {
        w(&mut out, "\nunreadable files (last listing):".into())?;
        for p in &report.problems {
            let safe = |t: &str| crate::util::logsafe::escape_controls(t, false);
            w(
                &mut out,
                format!("  {}: {}", safe(&p.path), safe(&p.reason)),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerError;
    use crate::notify::ApiError;

    #[test]
    fn a_state_failure_after_delivery_is_not_an_api_failure() {
        let ledger = LedgerError::Locked {
            path: "s.db".into(),
            holder: String::new(),
            waited: Duration::ZERO,
        };
        let f = delivery_failure(pipeline::DeliveryError::Ledger(ledger), 1);
        assert_eq!(f.code, exit::STATE);
        assert!(f.error.to_string().contains("could not be recorded"));
        let f = delivery_failure(pipeline::DeliveryError::Api(ApiError::MissingKey), 1);
        assert_eq!(f.code, exit::DELIVERY);
    }
}
