//! Layer 0: what every other layer may use and that knows nothing of DICOM, labels or the API:
//! errors as one line, wall-clock time, secrets, the retry policy, log hygiene and the
//! pipeline's counters.

pub mod backoff;
pub mod error;
pub mod logsafe;
pub mod metrics;
pub mod secret;
pub mod time;

pub use backoff::Backoff;
pub use error::error_chain;
pub use metrics::Metrics;
pub use secret::Secret;
