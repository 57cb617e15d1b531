//! # flowguard
//!
//! Async flow-control and resilience primitives for Tokio.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub mod clock;
mod error;
mod sync;
/// Debounce and throttle with lodash semantics: handles and stream adapters.
pub mod timing;

pub use error::{ConfigError, ConfigErrorKind};
