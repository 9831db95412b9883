//! The config file argument every settings-reading command takes, and how a command's layers
//! become [`Settings`]. Its own module, so that `args` and the command modules both use it
//! without importing each other.

use std::path::PathBuf;

use clap::Args;

use crate::app::settings::{ConfigError, Layers, Settings};

/// The config file, for every command that reads settings.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArg {
    /// TOML config file (same names as the long flags)
    #[arg(long, global = true, env = "SEGBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The settings of a command: the layers it took from its flags (and the environment)
    /// over the config file's.
    pub fn settings(&self, cli: Layers) -> Result<Settings, ConfigError> {
        Settings::resolve(self.merged(cli)?)
    }

    /// The settings of an interactive command (`api …`): a shorter default `--retry-for`.
    pub fn interactive_settings(&self, cli: Layers) -> Result<Settings, ConfigError> {
        Settings::resolve(self.merged(cli)?.interactive())
    }

    fn merged(&self, cli: Layers) -> Result<Layers, ConfigError> {
        let file = match &self.config {
            Some(p) => Layers::load(p)?,
            None => Layers::default(),
        };
        Ok(cli.over(file))
    }
}
