//! # flowguard
//!
//! Async flow-control and resilience primitives for Tokio.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod clock;
mod error;
/// Deadline fan-out: `gather_with_timeout`, the `Gather` builder (quorum, fail-fast, spawn) and hedged requests.
pub mod fanout;
mod sync;

pub use error::{ConfigError, ConfigErrorKind};
