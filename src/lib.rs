//! segbridge: discovers DICOM SEG labels, pairs them with their image series, keeps a durable
//! ledger, and notifies the MONAI Cloud API so continual-learning rounds start by themselves.
//!
//! Data flows one way: [`source`] → [`dicom`] (reader, matcher) → [`ledger`] (SQLite outbox) →
//! [`notify`]. [`pipeline`] wires them; [`emulator`] is a local MONAI API for tests and the demo.

pub mod api_cli;
pub mod app;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod dicom;
pub mod emulator;
pub mod fixtures;
pub mod fuzz_targets;
pub mod hook;
pub mod hook_token;
pub mod ledger;
pub mod model;
pub mod notify;
pub mod pipeline;
pub mod source;
pub mod util;
