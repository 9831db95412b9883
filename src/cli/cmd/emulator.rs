//! `emulator`: a local, contract-faithful MONAI API server until a signal.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use crate::app::settings::ConfigError;
use crate::app::Failure;
use crate::cli::args::EmulatorArgs;
use crate::emulator::{self, EmulatorConfig};

pub fn run(a: EmulatorArgs) -> Result<(), Failure> {
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
