//! The MONAI Cloud API adapter (layer 3): the notify body as the contract has it ([`types`]) and
//! the client that sends it and every other call of the workflow ([`client`]).

pub mod client;
pub mod types;

pub use client::*;
