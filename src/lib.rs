//! segbridge: discovers DICOM SEG labels, pairs them with their image series, keeps a durable
//! ledger, and notifies the MONAI Cloud API so continual-learning rounds start by themselves.
//!
//! Data flows one way: [`source`] → [`dicom`] (reader, matcher) → [`ledger`] (SQLite outbox) →
//! [`notify`]. [`app`] wires them; [`emulator`] is a local MONAI API for tests and the demo.

pub mod app;
pub mod cli;
pub mod dicom;
pub mod emulator;
pub mod fixtures;
pub mod fuzz_targets;
pub mod ledger;
pub mod model;
pub mod notify;
pub mod source;
pub mod util;

// Old paths, kept for the files that still use them (not moved with app/): source/ and
// ledger.rs use `pipeline::Scan`/`runs` and `daemon::Metrics`, fuzz_targets.rs `hook`, and
// tests/model.rs + tests/orthanc.rs `config`, `pipeline` and `daemon::collect_once`.
pub use app::pipeline;
pub use app::serve as hook;
pub use app::settings as config;
/// Old path of the live loop's metrics and the one-shot sync (see `app::live`, `app::sync`).
pub mod daemon {
    pub use crate::app::sync::collect_once;
    pub use crate::util::Metrics;
}
