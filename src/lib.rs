//! # flowguard
//!
//! Async flow-control and resilience primitives for Tokio.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Circuit breakers: stop calling a failing backend, probe it, recover.
pub mod breaker;
pub mod clock;
mod error;
pub mod semaphore;
mod sync;

pub use error::{ConfigError, ConfigErrorKind};
