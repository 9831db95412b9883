//! Layer 2: the policy, no I/O. [`matcher`]: which image series a SEG series labels and which
//! label of an image is current.

pub mod matcher;
