//! # flowguard
//!
//! Async flow-control and resilience primitives for Tokio.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Bounded MPMC channels with backpressure, weights, watermarks and eviction.
pub mod channel;
pub mod clock;
mod error;
pub mod semaphore;
mod sync;

pub use error::{ConfigError, ConfigErrorKind};
