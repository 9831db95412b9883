//! The MONAI Cloud API adapter (layer 3): the request bodies and answers as the contract has
//! them ([`types`]), the client that sends them ([`client`]: login, retries, errors) and its
//! typed calls, one per API call of the workflow ([`calls`]).

mod calls;
pub mod client;
pub mod types;

pub use calls::Resource;
pub use client::*;
pub use types::*;
