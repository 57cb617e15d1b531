//! The `tracing` side of observability: state changes are `debug` events
//! carrying the primitive's name; pool tasks and pipeline calls run in
//! spans when asked to; nothing from flowguard reaches INFO.
//!
//! A small recording subscriber (no extra dependency) captures events with
//! the names of the spans they happened in. Single-threaded runtime: the
//! span stack is the test thread's.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowguard::adaptive::{AdaptiveLimiter, Aimd};
use flowguard::breaker::CircuitBreaker;
use flowguard::channel;
use flowguard::pipeline::Pipeline;
use flowguard::pool::{BlockingPool, CpuPool, WorkerPool};
use flowguard::semaphore::Semaphore;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

#[derive(Default)]
struct Fields(Vec<String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push(format!("{}={value:?}", field.name()));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push(format!("{}={value}", field.name()));
    }
}

/// One captured event: level, target, enclosing spans, fields.
#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    target: String,
    spans: Vec<String>,
    fields: Vec<String>,
}

impl Captured {
    fn has(&self, field: &str) -> bool {
        self.fields.iter().any(|f| f == field)
    }
}

#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    spans: Mutex<HashMap<u64, String>>,
    stack: Mutex<Vec<u64>>,
    events: Arc<Mutex<Vec<Captured>>>,
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut f = Fields::default();
        attrs.record(&mut f);
        let text = format!("{}{{{}}}", attrs.metadata().name(), f.0.join(","));
        self.spans.lock().unwrap().insert(id, text);
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let spans = self.spans.lock().unwrap();
        let stack = self.stack.lock().unwrap();
        self.events.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            spans: stack.iter().map(|id| spans[id].clone()).collect(),
            fields: f.0,
        });
    }
    fn enter(&self, id: &Id) {
        self.stack.lock().unwrap().push(id.into_u64());
    }
    fn exit(&self, id: &Id) {
        let mut stack = self.stack.lock().unwrap();
        if let Some(i) = stack.iter().rposition(|&s| s == id.into_u64()) {
            stack.remove(i);
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn state_changes_carry_names_spans_wrap_tasks_and_calls_nothing_at_info() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let _guard = tracing::subscriber::set_default(Recorder {
        events: events.clone(),
        ..Recorder::default()
    });

    // Breaker transition.
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .name("db")
        .build()
        .unwrap();
    let _ = breaker.call(|| async { Err::<(), _>("down") }).await;

    // Pool task span and resize.
    let pool = WorkerPool::builder()
        .max_concurrency(2)
        .name("io")
        .trace_tasks(true)
        .build()
        .unwrap();
    pool.submit(async { tracing::info!(target: "app", "inside a task") })
        .await
        .unwrap()
        .await
        .unwrap();
    pool.set_max_concurrency(4).unwrap();
    let blocking = BlockingPool::builder()
        .max_concurrency(2)
        .name("files")
        .build()
        .unwrap();
    blocking.set_max_concurrency(3).unwrap();
    blocking.close();
    blocking.close(); // idempotent: one event
    let cpu = CpuPool::builder()
        .threads(1)
        .name("crunch")
        .build()
        .unwrap();
    cpu.close();
    let untraced = WorkerPool::builder().max_concurrency(1).build().unwrap();
    untraced
        .submit(async { tracing::info!(target: "app", "untraced task") })
        .await
        .unwrap()
        .await
        .unwrap();

    // Channel congestion on and off.
    let (tx, rx) = channel::Builder::new(4)
        .high_watermark(2)
        .low_watermark(0)
        .name("jobs")
        .build()
        .unwrap();
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    rx.try_recv().unwrap();
    rx.try_recv().unwrap();
    // Channel resize and close.
    tx.set_capacity(8).unwrap();
    assert!(tx.close());

    // A named gather finishing.
    flowguard::fanout::Gather::new([async { 1 }])
        .name("shards")
        .build()
        .unwrap()
        .await;

    // Semaphore resize.
    Semaphore::builder()
        .capacity(1)
        .name("conns")
        .build()
        .unwrap()
        .set_capacity(3)
        .unwrap();

    // Adaptive limit change: a drop backs AIMD off from 10 to 9.
    let aimd = Aimd::builder()
        .initial_limit(10)
        .min_limit(1)
        .build()
        .unwrap();
    let adaptive = AdaptiveLimiter::builder()
        .algorithm(aimd)
        .name("backend")
        .build()
        .unwrap();
    adaptive.try_acquire().unwrap().dropped();
    adaptive.try_acquire().unwrap().ignore(); // no change, no event

    // Pipeline call span.
    let pipeline = Pipeline::<u32, &str>::builder()
        .timeout(Duration::from_secs(1))
        .name("search")
        .trace_calls(true)
        .build()
        .unwrap();
    pipeline
        .call(|| async {
            tracing::info!(target: "app", "inside a call");
            Ok(1)
        })
        .await
        .unwrap();

    let events = events.lock().unwrap().clone();
    let find = |field: &str, msg: &str| -> Captured {
        events
            .iter()
            .find(|e| e.has(field) && e.fields.iter().any(|f| f.contains(msg)))
            .unwrap_or_else(|| panic!("no event {field} {msg:?} in {events:#?}"))
            .clone()
    };
    let e = find("breaker=db", "circuit breaker state change");
    assert_eq!(e.level, Level::DEBUG);
    assert!(e.has("to=Open"), "{e:?}");
    let e = find("pool=io", "pool resized");
    assert!(e.has("max_concurrency=4"), "{e:?}");
    let e = find("pool=files", "pool resized");
    assert!(e.has("max_concurrency=3"), "{e:?}");
    // Every pool's close() is a state change, as WorkerPool's is.
    let closed = |pool: &str| {
        events
            .iter()
            .filter(|e| e.has(pool) && e.fields.iter().any(|f| f.contains("pool closed")))
            .count()
    };
    assert_eq!(closed("pool=files"), 1);
    assert_eq!(closed("pool=crunch"), 1);
    find("channel=jobs", "channel congested");
    find("channel=jobs", "channel drained below low watermark");
    let e = find("channel=jobs", "channel capacity changed");
    assert!(e.has("to=8"), "{e:?}");
    find("channel=jobs", "channel closed");
    find("semaphore=conns", "semaphore resized");
    find("gather=shards", "gather finished");
    let e = find("limiter=backend", "adaptive limit changed");
    assert_eq!(e.level, Level::DEBUG);
    assert!(e.has("from=10") && e.has("to=9"), "{e:?}");
    let changes = events
        .iter()
        .filter(|e| {
            e.fields
                .iter()
                .any(|f| f.contains("adaptive limit changed"))
        })
        .count();
    assert_eq!(changes, 1, "one event per change, none per call");

    let inside = |msg: &str| {
        events
            .iter()
            .find(|e| e.target == "app" && e.fields.iter().any(|f| f.contains(msg)))
            .unwrap_or_else(|| panic!("no app event {msg:?}"))
            .spans
            .clone()
    };
    assert_eq!(inside("inside a task"), ["pool_task{pool=io}"]);
    assert!(inside("untraced task").is_empty());
    assert_eq!(inside("inside a call"), ["pipeline_call{pipeline=search}"]);

    // Nothing from flowguard at INFO or above.
    let loud: Vec<_> = events
        .iter()
        .filter(|e| e.target.starts_with("flowguard") && e.level <= Level::INFO)
        .collect();
    assert!(loud.is_empty(), "{loud:#?}");
}
