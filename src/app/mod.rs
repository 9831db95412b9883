//! The application layer (L4): what each command does, wired from the adapters below it.
//! It prints nothing of its own choosing and parses no arguments: that is `cli`.

pub mod exit;
pub mod report;

pub use exit::Failure;
