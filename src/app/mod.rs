//! The application layer (L4): what each command does, wired from the adapters below it
//! (ledger, notify, source). It parses no arguments: that is `cli`.

pub mod demo;
pub mod exit;
pub mod live;
pub mod pipeline;
pub mod report;
pub mod serve;
pub mod settings;
pub mod sync;

pub use exit::Failure;
