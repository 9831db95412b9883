//! Layer 2: the policy, no I/O. What the server must be told when an image's current label
//! changes, and how a newer decision merges with one still waiting in the outbox. Rules take
//! and return domain values (`model`); the ledger stores what they decide.

pub mod plan;
