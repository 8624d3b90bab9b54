//! The Redis backend's pure parts (work in progress).

pub mod resp;
