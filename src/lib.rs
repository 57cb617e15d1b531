//! # flowguard
//!
//! Async flow-control and resilience primitives for Tokio.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod batch;
pub mod clock;
mod error;
mod sync;

pub use error::{ConfigError, ConfigErrorKind};
