//! Layer 2: the policy, no I/O. Rules take and return domain values (`model`); the ledger
//! stores what they decide.
//! - [`matcher`]: which image series a SEG series labels, and which label of an image is
//!   current (the newest-label rule);
//! - [`plan`]: what the server must be told when an image's current label changes, and how a
//!   newer decision merges with one still waiting in the outbox.

pub mod matcher;
pub mod pair;
pub mod plan;
