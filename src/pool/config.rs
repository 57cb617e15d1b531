//! Validation shared by the three pool builders.

use std::time::Duration;

use tokio::runtime::Handle;

use crate::semaphore::MAX_PERMITS;
use crate::{ConfigError, ConfigErrorKind};

/// The largest `max_concurrency + queue_capacity` a pool accepts.
pub(crate) const MAX_POOL_SIZE: usize = MAX_PERMITS;

#[derive(Debug, Clone)]
pub(crate) struct PoolConfig {
    pub(crate) component: &'static str,
    pub(crate) max_concurrency: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) timeout: Option<Duration>,
    pub(crate) name: String,
    /// Starts per priority level a queued task gains (`None`: strict).
    pub(crate) priority_aging: Option<usize>,
    /// Whether the wait and run-time histograms are kept.
    pub(crate) histograms: bool,
    /// The histograms' largest sampling stride (see
    /// `crate::histogram`, "Sampled timing").
    pub(crate) histogram_max_one_in: u32,
    /// Whether `name` was set (only named pools are exported).
    pub(crate) named: bool,
    /// Whether each task runs in a `pool_task` span.
    pub(crate) trace_tasks: bool,
}

impl PoolConfig {
    pub(crate) fn new(component: &'static str, max_concurrency: usize) -> Self {
        Self {
            component,
            max_concurrency,
            queue_capacity: 1024,
            timeout: None,
            name: component.to_owned(),
            priority_aging: None,
            histograms: true,
            histogram_max_one_in: crate::histogram::DEFAULT_MAX_ONE_IN,
            named: false,
            trace_tasks: false,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check_concurrency(self.component, self.max_concurrency, self.queue_capacity)?;
        if self.timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                self.component,
                "timeout",
                ConfigErrorKind::Zero,
                "must be greater than zero (leave it unset for no timeout)",
            ));
        }
        if self.priority_aging == Some(0) {
            return Err(ConfigError::new(
                self.component,
                "priority_aging",
                ConfigErrorKind::Zero,
                "must be at least 1 start per level, got 0 (leave it unset for strict priorities)",
            ));
        }
        crate::histogram::check_max_one_in(self.component, self.histogram_max_one_in)?;
        Ok(())
    }
}

pub(crate) fn check_concurrency(
    component: &'static str,
    max_concurrency: usize,
    queue_capacity: usize,
) -> Result<(), ConfigError> {
    if max_concurrency == 0 {
        return Err(ConfigError::new(
            component,
            "max_concurrency",
            ConfigErrorKind::Zero,
            "must be at least 1, got 0",
        ));
    }
    if max_concurrency > MAX_POOL_SIZE {
        return Err(ConfigError::new(
            component,
            "max_concurrency",
            ConfigErrorKind::TooLarge,
            format!("must be at most {MAX_POOL_SIZE}, got {max_concurrency}"),
        ));
    }
    match max_concurrency.checked_add(queue_capacity) {
        Some(total) if total <= MAX_POOL_SIZE => Ok(()),
        _ => Err(ConfigError::new(
            component,
            "queue_capacity",
            ConfigErrorKind::TooLarge,
            format!(
                "max_concurrency + queue_capacity must be at most {MAX_POOL_SIZE}, got {max_concurrency} + {queue_capacity}"
            ),
        )),
    }
}

/// The runtime an async-backed pool spawns on: the one given, or the current one.
pub(crate) fn runtime_or_current(
    component: &'static str,
    given: Option<Handle>,
) -> Result<Handle, ConfigError> {
    match given {
        Some(h) => Ok(h),
        None => Handle::try_current().map_err(|_| {
            ConfigError::new(
                component,
                "runtime",
                ConfigErrorKind::Missing,
                "is needed: build inside a Tokio runtime or pass one with `runtime(handle)`",
            )
        }),
    }
}
