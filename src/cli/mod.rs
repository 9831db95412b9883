//! The command line (L5): parses arguments ([`args`]), resolves settings, calls the
//! application layer ([`cmd`]), and maps failures to the documented exit codes.

pub mod args;
pub mod cmd;
pub mod config;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::app::exit::{self, Failure};
use crate::app::live;
use crate::app::settings::{ConfigError, Layers};
use args::{Cli, Command, Global};

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Watch(_) | Command::Serve(_));
    init_logging(&cli.global, daemon);
    match dispatch(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(f) if is_broken_pipe(&f.error) => ExitCode::from(exit::OK),
        Err(f) => {
            // the chain of causes, each said once (a cause's text is often in its wrapper's)
            let mut msg = crate::util::error_chain(f.error.as_ref());
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

fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Scan(a) => cmd::scan::scan(&a.config.settings(a.layers())?, a.json),
        Command::Sync(a) => {
            let s = a.bridge.settings(&a.sources, &Default::default())?;
            cmd::sync::sync(&s, a.dry_run, a.json)
        }
        Command::Watch(a) => live::run(&a.bridge.settings(&a.sources, &a.live)?, None),
        Command::Serve(a) => {
            let w = &a.watch;
            live::run(&w.bridge.settings(&w.sources, &w.live)?, Some(a.listen))
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
            let s = a.config.settings(Layers {
                state: a.state.clone(),
                ..Default::default()
            })?;
            let token = crate::app::serve::token::hook_token(&s.state).map_err(ConfigError)?;
            let script = crate::app::serve::orthanc_lua(&a.url, Some(&token.secret));
            match &a.out {
                Some(path) => crate::app::serve::write_private(path, &script)
                    .with_context(|| format!("--out {}", path.display()))
                    .map_err(|e| Failure {
                        code: exit::CONFIG,
                        error: e,
                    }),
                None => {
                    print!("{script}");
                    Ok(())
                }
            }
        }
        Command::Status(a) => {
            let s = a.config.settings(a.layers())?;
            cmd::status::status(&s, a.json, a.experiment.as_deref())
        }
        Command::Api(a) => {
            let s = a.config.interactive_settings(a.layers())?;
            cmd::api::run(&s, a)
        }
        Command::Emulator(a) => cmd::emulator::run(a),
        Command::Demo(a) => crate::app::demo::run(&a.folder, a.train_seconds),
        Command::Fixtures(a) => {
            let written = crate::fixtures::write_demo_set(&a.out)
                .with_context(|| format!("writing fixtures to {}", a.out.display()))?;
            println!("wrote {} files under {}", written.len(), a.out.display());
            Ok(())
        }
    }
}
