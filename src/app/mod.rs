//! The application layer (L4): what each command does, wired from the adapters below it
//! (ledger, notify, source). It parses no arguments: that is `cli`.

pub mod cl;
pub mod cluster;
pub mod demo;
pub mod exit;
pub mod live;
pub mod pipeline;
pub mod report;
pub mod serve;
pub mod settings;
pub mod sync;

pub use exit::Failure;

/// The one async runtime every command runs on: two workers are plenty for I/O.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
