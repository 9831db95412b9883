//! How a command ends: a [`Failure`] carries the exit code documented in the README. Both the
//! application layer and the command line use it, so it lives here rather than in `cli`.

use crate::app::pipeline::DeliveryError;
use crate::app::settings::ConfigError;
use crate::ledger::LedgerError;
use crate::monai::ApiError;

pub const OK: u8 = 0;
pub const ERROR: u8 = 1;
pub const CONFIG: u8 = 2;
pub const DELIVERY: u8 = 3;
pub const STATE: u8 = 4;
pub const SOURCE: u8 = 5;
pub const WAIT: u8 = 6;

/// A failure with its exit code.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Failure {
        let error: anyhow::Error = e.into();
        let code = if error.downcast_ref::<ConfigError>().is_some() {
            CONFIG
        } else if error.downcast_ref::<LedgerError>().is_some() {
            STATE
        } else if error.downcast_ref::<ApiError>().is_some()
            || error.downcast_ref::<DeliveryError>().is_some()
        {
            DELIVERY
        } else if error
            .downcast_ref::<crate::source::folder::FolderError>()
            .is_some()
        {
            CONFIG
        } else {
            ERROR
        };
        Failure { code, error }
    }
}
