//! Export through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`, off by default).
//!
//! Give a primitive a name on its builder (`.name("search")`; for a rate
//! limiter, a keyed one, a debouncer and a throttler, on the built value)
//! and, with this feature on, it publishes its counters, gauges and
//! histograms under one naming scheme, `flowguard_<primitive>_<what>`, with
//! the single label `name`. The application installs the exporter it wants (Prometheus,
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
//! | `flowguard_pool_submit_wait_seconds` | histogram | `submit_wait` (unless `histograms(false)`) |
//! | `flowguard_pool_queue_wait_seconds` | histogram | `queue_wait` (unless `histograms(false)`) |
//! | `flowguard_pool_run_seconds` | histogram | `run_time` (unless `histograms(false)`) |
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
//! | `flowguard_breaker_failure_rate` | gauge | `failure_rate`, percent; -1 while unjudged (below `minimum_calls`, or an emptied window), as resilience4j's |
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
//! | `flowguard_keyed_rate_keys` | gauge | [`KeyedSnapshot::keys`](crate::rate::KeyedSnapshot::keys) (named with [`KeyedRateLimiter::name`](crate::rate::KeyedRateLimiter::name)) |
//! | `flowguard_keyed_rate_max_keys` | gauge | `max_keys` |
//! | `flowguard_keyed_rate_admitted_total` | counter | `admitted`, over all keys |
//! | `flowguard_keyed_rate_refused_total` | counter | `refused`, over all keys |
//! | `flowguard_keyed_rate_evicted_total` | counter | `evicted_while_full` |
//! | `flowguard_pipeline_succeeded_total` | counter | [`PipelineMetrics::succeeded`](crate::pipeline::PipelineMetrics::succeeded) (the pipeline's own counters; each layer publishes under its own name) |
//! | `flowguard_pipeline_failed_total` | counter | `failed` |
//! | `flowguard_pipeline_fallbacks_total` | counter | `fallbacks` |
//! | `flowguard_pipeline_timeouts_total` | counter | `timeouts` |
//! | `flowguard_pipeline_breaker_refusals_total` | counter | `breaker_refusals` |
//! | `flowguard_pipeline_rate_limited_total` | counter | `rate_limited` |
//! | `flowguard_pipeline_bulkhead_full_total` | counter | `bulkhead_full` |
//! | `flowguard_pipeline_adaptive_limited_total` | counter | `adaptive_limited` |
//! | `flowguard_retry_calls_total` | counter | [`RetryMetrics::calls`](crate::retry::RetryMetrics::calls) |
//! | `flowguard_retry_attempts_total` | counter | `attempts` |
//! | `flowguard_retry_retries_total` | counter | `retries` |
//! | `flowguard_retry_succeeded_first_total` | counter | `succeeded_first` |
//! | `flowguard_retry_succeeded_after_retry_total` | counter | `succeeded_after_retry` |
//! | `flowguard_retry_exhausted_total` | counter | `exhausted` |
//! | `flowguard_retry_not_retryable_total` | counter | `not_retryable` |
//! | `flowguard_retry_budget_refusals_total` | counter | `budget_refusals` |
//! | `flowguard_retry_deadline_total` | counter | `deadline` |
//! | `flowguard_debounce_calls_total` | counter | [`TimingMetrics::calls`](crate::timing::TimingMetrics::calls) (a [`Debouncer`](crate::timing::Debouncer); a [`Throttler`](crate::timing::Throttler) publishes the same under `flowguard_throttle_*`) |
//! | `flowguard_debounce_invocations_total` | counter | `invocations` |
//! | `flowguard_debounce_discarded_total` | counter | `discarded` |
//! | `flowguard_debounce_cancelled_total` | counter | `cancelled` |
//! | `flowguard_debounce_folded_total` | counter | `folded` |
//! | `flowguard_debounce_pending` | gauge | `pending` (0 or 1) |
//! | `flowguard_debounce_running` | gauge | `running` (0 or 1) |
//! | `flowguard_hedge_calls_total` | counter | [`HedgeMetrics::calls`](crate::fanout::HedgeMetrics::calls) |
//! | `flowguard_hedge_hedges_sent_total` | counter | `hedges_sent` |
//! | `flowguard_hedge_hedge_wins_total` | counter | `hedge_wins` |
//! | `flowguard_hedge_failures_total` | counter | `failures` |
//! | `flowguard_hedge_hedges_denied_total` | counter | `hedges_denied` |
//! | `flowguard_hedge_budget_available` | gauge | `budget_available` (absent without a budget) |
//! | `flowguard_hedge_samples` | gauge | `samples` |
//! | `flowguard_hedge_delay_seconds` | gauge | `current_delay` (0 while a call would not hedge) |
//! | `flowguard_gather_calls_total` | counter | gathers named with [`Gather::name`](crate::fanout::Gather::name) that finished (added to as each finishes; no snapshot to copy: a gather lives for one call) |
//! | `flowguard_gather_children_total` | counter | their futures ([`GatherMetrics::total`](crate::fanout::GatherMetrics::total)) |
//! | `flowguard_gather_succeeded_total` | counter | `succeeded` |
//! | `flowguard_gather_failed_total` | counter | `failed` |
//! | `flowguard_gather_unfinished_total` | counter | futures cut off, detached or never started when it finished |
//! | `flowguard_gather_child_seconds` | histogram | each future's latency (with [`child_latency`](crate::fanout::Gather::child_latency) on) |
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
    /// Registers a publisher for this primitive's counters and gauges, in
    /// the order of `whats`: names ending in `_total` are counters (set to
    /// the value read), the others gauges. `read` returns `None` once the
    /// primitive is gone, which unregisters it; a value of `None` leaves
    /// that series as it was.
    pub(crate) fn publish_each<const N: usize>(
        &self,
        whats: [&str; N],
        read: impl Fn() -> Option<[Option<f64>; N]> + Send + Sync + 'static,
    ) {
        let series: Vec<Series> = whats
            .iter()
            .map(|what| {
                if what.ends_with("_total") {
                    Series::Counter(self.counter(what))
                } else {
                    Series::Gauge(self.gauge(what))
                }
            })
            .collect();
        register(move || {
            let Some(values) = read() else {
                return false;
            };
            for (s, v) in series.iter().zip(values) {
                match (s, v) {
                    (Series::Counter(c), Some(v)) => c.absolute(v as u64),
                    (Series::Gauge(g), Some(v)) => g.set(v),
                    (_, None) => {}
                }
            }
            true
        });
    }
}

/// One published counter or gauge.
enum Series {
    Counter(Counter),
    Gauge(Gauge),
}
