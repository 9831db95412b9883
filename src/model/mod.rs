//! Layer 1: the domain, no I/O. What a source saw (listings, problems, scans), the outbox's
//! sections and changes, the labels the ledger knows, label statuses. Every layer above
//! speaks these types; they import only `util`.

pub mod known;
pub mod outbox;
pub mod scan;
pub mod status;
