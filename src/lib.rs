//! segbridge: discovers DICOM SEG labels, pairs them with their image series, keeps a durable
//! ledger, and notifies the MONAI Cloud API so continual-learning rounds start by themselves.
//!
//! Data flows one way: [`source`] → [`dicom`] (headers, pixels) → [`rules`] (matching, the
//! newest label) → [`ledger`] (SQLite outbox) → [`monai`] (notify). [`app`] wires them and
//! [`cli`] parses the command line; [`model`] holds the domain types every layer speaks and
//! [`util`] what every layer may use. ARCHITECTURE.md draws the layers; `tests/layers.rs`
//! enforces them.

pub mod app;
pub mod cli;
pub mod dicom;
pub mod emulator;
pub mod fixtures;
pub mod fuzz_targets;
pub mod ledger;
pub mod model;
pub mod monai;
pub mod pacs;
pub mod rules;
pub mod source;
pub mod util;
