//! Export through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`, off by default).
//!
//! Give a primitive a name on its builder (`.name("search")`) and, with
//! this feature on, it publishes its counters, gauges and histograms under
//! one naming scheme, `flowguard_<primitive>_<what>`, with the single label
//! `name`. The application installs the exporter it wants (Prometheus,
//! StatsD, OpenTelemetry, ...) as for any crate using the facade. A keyed
//! limiter's keys are never labels: cardinality stays bounded by the number
//! of primitives you name.
//!
//! # How values get there
//!
//! * **Histograms** are recorded as they happen (each value that goes
//!   into the primitive's own [`Histogram`](crate::histogram::Histogram)
//!   also goes to a [`metrics::Histogram`] handle); durations in seconds.
//!   A primitive built with `histograms(false)` records none.
//! * **Counters and gauges** are copied from the primitive's `metrics()`
//!   snapshot by [`publish`] (or periodically by [`spawn_publisher`]):
//!   the hot paths keep their own atomics and pay nothing for export.
//!   Counters are set with [`Counter::absolute`](::metrics::Counter::absolute).
//!
//! Handles are registered once, when the named primitive is built, from
//! the recorder installed *then*: install the exporter before building
//! named primitives (the `metrics` crate's usual rule). A primitive that is
//! dropped stops being published; its last values stay with the exporter.
//!
//! # Metric names
//!
//! | metric | kind | from |
//! |---|---|---|
//! | `flowguard_semaphore_capacity` | gauge | [`SemaphoreMetrics::capacity`](crate::semaphore::SemaphoreMetrics::capacity) |
//! | `flowguard_semaphore_available` | gauge | `available` |
//! | `flowguard_semaphore_waiters` | gauge | `waiters` |
//! | `flowguard_semaphore_wait_seconds` | histogram | `wait`: acquires that queued (with `histograms(true)`) |
//! | `flowguard_pool_running` | gauge | [`PoolMetrics::running`](crate::pool::PoolMetrics::running) |
//! | `flowguard_pool_queued` | gauge | `queued` |
//! | `flowguard_pool_max_concurrency` | gauge | `max_concurrency` |
//! | `flowguard_pool_completed_total` | counter | `completed` |
//! | `flowguard_pool_failed_total` | counter | `failed` (panicked or timed out) |
//! | `flowguard_pool_cancelled_total` | counter | `cancelled` |
//! | `flowguard_pool_rejected_total` | counter | `rejected` |
//! | `flowguard_pool_submit_wait_seconds` | histogram | `submit_wait` (with `histograms(true)`) |
//! | `flowguard_pool_queue_wait_seconds` | histogram | `queue_wait` (with `histograms(true)`) |
//! | `flowguard_pool_run_seconds` | histogram | `run_time` (with `histograms(true)`) |
//! | `flowguard_channel_len` | gauge | [`ChannelMetrics::len`](crate::channel::ChannelMetrics::len) |
//! | `flowguard_channel_capacity` | gauge | `capacity` |
//! | `flowguard_channel_waiting_senders` | gauge | `waiting_senders` |
//! | `flowguard_channel_congested` | gauge | `congested` (0 or 1) |
//! | `flowguard_channel_sent_total` | counter | `sent` |
//! | `flowguard_channel_received_total` | counter | `received` |
//! | `flowguard_channel_evicted_total` | counter | `evicted` |
//! | `flowguard_channel_send_wait_seconds` | histogram | `send_wait` |
//! | `flowguard_rate_available` | gauge | [`RateSnapshot::available`](crate::rate::RateSnapshot::available) |
//! | `flowguard_rate_waiters` | gauge | `waiters` |
//! | `flowguard_rate_wait_seconds` | histogram | `wait`: acquires that queued |
//! | `flowguard_breaker_state` | gauge | [`BreakerMetrics::state`](crate::breaker::BreakerMetrics::state): 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled |
//! | `flowguard_breaker_failure_rate` | gauge | `failure_rate`, percent (absent until judged) |
//! | `flowguard_breaker_calls` | gauge | `calls` in the window |
//! | `flowguard_breaker_refused_total` | counter | `refused` |
//! | `flowguard_breaker_transitions_total` | counter | `transitions` |
//! | `flowguard_breaker_call_seconds` | histogram | `call_duration` |
//! | `flowguard_loader_batches_total` | counter | [`LoaderMetrics::batches_dispatched`](crate::batch::LoaderMetrics::batches_dispatched) |
//! | `flowguard_loader_keys_requested_total` | counter | `keys_requested` |
//! | `flowguard_loader_keys_loaded_total` | counter | `keys_loaded` |
//! | `flowguard_loader_cache_hits_total` | counter | `cache_hits` |
//! | `flowguard_loader_failed_batches_total` | counter | `failed_batches` |
//! | `flowguard_loader_in_flight_batches` | gauge | `in_flight_batches` |
//! | `flowguard_loader_batch_size` | histogram | `batch_size` (keys) |
//! | `flowguard_loader_batch_seconds` | histogram | `batch_latency` |
//! | `flowguard_adaptive_limit` | gauge | [`AdaptiveMetrics::limit`](crate::adaptive::AdaptiveMetrics::limit) |
//! | `flowguard_adaptive_inflight` | gauge | `inflight` |
//! | `flowguard_adaptive_waiting` | gauge | `waiting` |
//! | `flowguard_adaptive_samples_total` | counter | `samples` |
//! | `flowguard_adaptive_drops_total` | counter | `drops` |
//! | `flowguard_adaptive_rejections_total` | counter | `rejections` |
//!
//! # Example
//!
//! ```
//! use flowguard::pool::WorkerPool;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // Install an exporter first (here none: the facade's no-op recorder).
//! let pool = WorkerPool::builder().max_concurrency(4).name("search").build().unwrap();
//! pool.submit(async {}).await.unwrap().await.unwrap();
//! flowguard::metrics::publish(); // flowguard_pool_completed_total{name="search"} 1
//! # }
//! ```

use std::time::Duration;

use ::metrics::{Counter, Gauge, Histogram, Label};

use crate::sync::Mutex;

type Publisher = Box<dyn Fn() -> bool + Send + Sync>;

/// The live named primitives; each entry returns false once its primitive
/// is gone.
static PUBLISHERS: Mutex<Vec<Publisher>> = Mutex::new(Vec::new());

/// Copies the counters and gauges of every live named primitive into the
/// installed recorder (histograms need no call: they are recorded as they
/// happen). Call it before each scrape, or let [`spawn_publisher`] call it.
///
/// Takes one global lock and each primitive's `metrics()`; meant for a few
/// calls a second, not the hot path.
///
/// # Examples
///
/// See the [module documentation](self).
pub fn publish() {
    PUBLISHERS.lock().retain(|p| p());
}

/// Spawns a Tokio task that calls [`publish`] every `period` (at least
/// 1 ms) until aborted. Typically a little shorter than the scrape interval.
///
/// # Panics
///
/// Outside a Tokio runtime with time enabled, as `tokio::spawn` and
/// `tokio::time::interval` do.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let publisher = flowguard::metrics::spawn_publisher(Duration::from_secs(5));
/// // ... serve; then, at shutdown:
/// publisher.abort();
/// # }
/// ```
pub fn spawn_publisher(period: Duration) -> tokio::task::JoinHandle<()> {
    let period = period.max(Duration::from_millis(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            publish();
        }
    })
}

/// Adds a publisher (a named primitive being built).
pub(crate) fn register(publisher: impl Fn() -> bool + Send + Sync + 'static) {
    PUBLISHERS.lock().push(Box::new(publisher));
}

fn key(primitive: &str, what: &str) -> String {
    format!("flowguard_{primitive}_{what}")
}

fn labels(name: &str) -> [Label; 1] {
    [Label::new("name", name.to_owned())]
}

/// The handles of one named primitive, registered once.
pub(crate) struct Handles {
    primitive: &'static str,
    name: String,
}

impl Handles {
    pub(crate) fn new(primitive: &'static str, name: &str) -> Self {
        Self {
            primitive,
            name: name.to_owned(),
        }
    }

    pub(crate) fn counter(&self, what: &str) -> Counter {
        ::metrics::counter!(key(self.primitive, what), labels(&self.name).iter())
    }

    pub(crate) fn gauge(&self, what: &str) -> Gauge {
        ::metrics::gauge!(key(self.primitive, what), labels(&self.name).iter())
    }

    pub(crate) fn histogram(&self, what: &str) -> Histogram {
        ::metrics::histogram!(key(self.primitive, what), labels(&self.name).iter())
    }
}
