//! # flowguard
//!
//! Async flow-control and resilience primitives for Tokio.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod clock;
mod error;
/// Token-bucket rate limiters (GCRA): plain, FIFO-fair and keyed.
pub mod rate;
mod sync;

pub use error::{ConfigError, ConfigErrorKind};
