//! One file per command group; each takes resolved settings and its own flags.

pub mod api;
pub mod emulator;
pub mod scan;
pub mod status;
pub mod sync;

use crate::app::exit::{self, Failure};

/// Sources that failed end the command with exit 5, after what the others sent was used.
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
