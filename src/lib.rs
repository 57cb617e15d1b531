//! # flowguard
//!
//! Async flow-control and resilience primitives for Tokio.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod breaker;
pub mod clock;
mod error;
pub mod semaphore;
mod sync;

pub use error::{ConfigError, ConfigErrorKind};
