//! Bounded multi-producer multi-consumer channels with backpressure.
//!
//! A producer that outruns its consumer must slow down (or shed by an
//! explicit choice) instead of eating memory. [`bounded`] makes a channel of
//! at most `capacity` values; a [`Builder`] adds a weight bound (e.g. bytes)
//! and high/low watermarks.
//!
//! | want | call |
//! |---|---|
//! | wait for room | [`Sender::send`], [`Sender::send_timeout`], [`Sender::send_blocking`] |
//! | never wait | [`Sender::try_send`] (`Full` hands the value back) |
//! | latest wins, drop the oldest | [`Sender::force_send`] |
//! | claim room first, send later without failing | [`Sender::reserve`] → [`Permit::send`] |
//! | receive | [`Receiver::recv`], [`Receiver::try_recv`], [`Receiver::recv_many`], `Stream` |
//! | pause a producer on congestion | [`Sender::is_congested`], [`Sender::drained`] |
//!
//! # Guarantees
//!
//! - **Bounded.** At most `capacity` values are queued or reserved; with a
//!   weight bound, the queued weight stays at most `max_weight` (a value sent
//!   through a [`Permit`] is the one exception, see there). The queue's
//!   storage grows on demand and shrinks again after a burst.
//! - **Fair.** Waiting senders and reservations are served strictly first in,
//!   first out; a new `send`/`try_send` never overtakes a waiting one. Values
//!   from one sender are received in the order sent.
//! - **Lossless.** Every failed send hands its value back. A cancelled `send`
//!   either queued its value completely or not at all; a cancelled `recv`
//!   leaves the value for the next receiver. Nothing queued is lost while a
//!   receiver exists.
//! - **Ordering.** Everything happens under one lock, so a value's sending
//!   happens-before its receiving.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use flowguard::channel;
//!
//! let (tx, rx) = channel::bounded::<u64>(2).unwrap();
//! let producer = tokio::spawn(async move {
//!     for i in 0..5 {
//!         tx.send(i).await.unwrap(); // waits while 2 are queued
//!     }
//! });
//! let mut got = Vec::new();
//! while let Some(v) = rx.recv().await {
//!     got.push(v);
//! }
//! producer.await.unwrap();
//! assert_eq!(got, [0, 1, 2, 3, 4]);
//! # }
//! ```
//!
//! # Cost per message, and why one lock
//!
//! Every operation takes the channel's one lock exactly once: a `send` or
//! `try_send` that finds room is one acquisition, a `recv` that finds a
//! value is one more, so a message costs two (counted: 2.00 to 2.02 per
//! message with one producer and one consumer, two and one, two and two,
//! on both Tokio runtime flavours; 0.002 to 0.024 wake-ups per message). Wake-ups are conditional, not per
//! message: a send wakes a receiver only if one is parked, and a woken
//! receiver leaves the wait list at once, so a burst of sends wakes it once;
//! a receive wakes a sender only when it hands that sender's waiting value
//! its room. Wakers are woken, and the send-wait histogram recorded, after
//! the lock is released; what stays under the lock is the queue push or pop
//! and a few counter updates.
//!
//! A woken `send` does not take the lock again to learn that its value was
//! queued: senders are served strictly in line, so the lock publishes one
//! atomic mark, "every waiting send registered before this one has been
//! served", and the woken future compares its place in line with it. On a
//! full channel that cut the lock acquisitions from 3.0 to 2.4–2.5 per
//! message (capacity 1, one or two producers, one consumer).
//!
//! So on many cores the limit is that one lock: two acquisitions per
//! message on one cache line, however short the critical section. A
//! lock-free fast path (values in a lock-free queue, the lock only for the
//! waiter lists) would remove them from the common case, but it must keep
//! every guarantee above at once: a fast send must never pass a parked one,
//! the weight bound, `force_send` evicting the oldest, the live capacity
//! change and the watermarks' hysteresis all become races between two
//! structures. That design is not built yet.
//!
//! # Why no zero capacity
//!
//! A zero-capacity channel is a rendezvous: every send waits for a receiver,
//! which changes what "backpressure" and "room" mean and makes `try_send`,
//! `reserve` and `force_send` meaningless. It is refused with a
//! [`ConfigError`] rather than silently switching modes; use capacity 1 for
//! the tightest bound.
//!
//! [`bounded`]: crate::channel::bounded
//! [`Builder`]: crate::channel::Builder
//! [`Sender::send`]: crate::channel::Sender::send
//! [`Sender::send_timeout`]: crate::channel::Sender::send_timeout
//! [`Sender::send_blocking`]: crate::channel::Sender::send_blocking
//! [`Sender::try_send`]: crate::channel::Sender::try_send
//! [`Sender::force_send`]: crate::channel::Sender::force_send
//! [`Sender::reserve`]: crate::channel::Sender::reserve
//! [`Permit::send`]: crate::channel::Permit::send
//! [`Receiver::recv`]: crate::channel::Receiver::recv
//! [`Receiver::try_recv`]: crate::channel::Receiver::try_recv
//! [`Receiver::recv_many`]: crate::channel::Receiver::recv_many
//! [`Sender::is_congested`]: crate::channel::Sender::is_congested
//! [`Sender::drained`]: crate::channel::Sender::drained
//! [`Permit`]: crate::channel::Permit
//! [`ConfigError`]: crate::ConfigError

mod core;
mod error;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use self::core::{Core, Empty, Refused, ReserveRefused, SendPoll, WakeList, Watermarks};
use crate::clock::{FastClock, Stamp};
use crate::histogram::{HistogramSnapshot, Recorder, Timed};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex};
use crate::{ConfigError, ConfigErrorKind};

pub use self::error::{
    RecvTimeoutError, ReserveError, SendError, SendTimeoutError, TryRecvError, TryReserveError,
    TrySendError,
};

const COMPONENT: &str = "channel";

type WeighFn<T> = Box<dyn Fn(&T) -> usize + Send + Sync>;

/// Creates a bounded channel holding at most `capacity` values.
///
/// Both halves can be cloned: any number of senders and receivers share the
/// one queue, and each value goes to exactly one receiver.
///
/// # Errors
///
/// A [`ConfigError`] for `capacity` 0 (see the module docs for why) or above
/// `usize::MAX / 4`.
///
/// # Panics
///
/// Never.
///
/// # Examples
///
/// ```
/// use flowguard::channel;
///
/// let (tx, rx) = channel::bounded::<&str>(8).unwrap();
/// tx.try_send("hello").unwrap();
/// assert_eq!(rx.try_recv(), Ok("hello"));
/// assert_eq!(channel::bounded::<u8>(0).unwrap_err().field(), "capacity");
/// ```
pub fn bounded<T>(capacity: usize) -> Result<(Sender<T>, Receiver<T>), ConfigError> {
    Builder::new(capacity).build()
}

/// Configures a channel: capacity, an optional weight bound, watermarks.
///
/// # Examples
///
/// ```
/// use flowguard::channel::Builder;
///
/// // At most 1024 buffers and at most 1 MiB of them.
/// let (tx, rx) = Builder::<Vec<u8>>::new(1024)
///     .weigh(|buf| buf.len())
///     .max_weight(1 << 20)
///     .high_watermark(768)
///     .low_watermark(256)
///     .build()
///     .unwrap();
/// tx.try_send(vec![0; 4096]).unwrap();
/// assert_eq!(rx.metrics().weight, 4096);
/// ```
pub struct Builder<T> {
    capacity: usize,
    weigh: Option<WeighFn<T>>,
    max_weight: Option<usize>,
    high: Option<usize>,
    low: Option<usize>,
    histograms: bool,
    histogram_max_one_in: u32,
    name: Option<String>,
    #[cfg(all(feature = "metrics", not(loom)))]
    export: Option<ExportFn<T>>,
}

#[cfg(all(feature = "metrics", not(loom)))]
type ExportFn<T> = Box<dyn FnOnce(&Arc<Chan<T>>) + Send + Sync>;

impl<T> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("capacity", &self.capacity)
            .field("weighted", &self.weigh.is_some())
            .field("max_weight", &self.max_weight)
            .field("high_watermark", &self.high)
            .field("low_watermark", &self.low)
            .finish()
    }
}

impl<T: Send + 'static> Builder<T> {
    /// Names the channel: its congestion `tracing` events carry the name,
    /// and with the `metrics` feature its metrics are published under it
    /// (see `flowguard::metrics`); unnamed channels are
    /// not. (Values must be `Send`: the exporter reads the channel from
    /// wherever `publish` runs.)
    pub fn name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        #[cfg(all(feature = "metrics", not(loom)))]
        {
            let exported = name.clone();
            self.export = Some(Box::new(move |chan: &Arc<Chan<T>>| export(chan, &exported)));
        }
        self.name = Some(name);
        self
    }
}

/// Publishes a named channel's metrics (feature `metrics`).
#[cfg(all(feature = "metrics", not(loom)))]
fn export<T: Send + 'static>(chan: &Arc<Chan<T>>, name: &str) {
    let h = crate::metrics::Handles::new("channel", name);
    chan.send_wait.export_to(h.histogram("send_wait_seconds"));
    let (len, capacity) = (h.gauge("len"), h.gauge("capacity"));
    let (senders, congested) = (h.gauge("waiting_senders"), h.gauge("congested"));
    let (sent, received, evicted) = (
        h.counter("sent_total"),
        h.counter("received_total"),
        h.counter("evicted_total"),
    );
    let weak = Arc::downgrade(chan);
    crate::metrics::register(move || {
        let Some(chan) = weak.upgrade() else {
            return false;
        };
        let c = chan.core.lock();
        let n = c.counters();
        len.set(c.len() as f64);
        capacity.set(c.capacity() as f64);
        senders.set(c.waiting_senders() as f64);
        congested.set(if c.is_congested() { 1.0 } else { 0.0 });
        sent.absolute(n.sent);
        received.absolute(n.received);
        evicted.absolute(n.evicted);
        true
    });
}

impl<T> Builder<T> {
    /// Starts a channel holding at most `capacity` values.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            weigh: None,
            max_weight: None,
            high: None,
            low: None,
            histograms: true,
            histogram_max_one_in: crate::histogram::DEFAULT_MAX_ONE_IN,
            name: None,
            #[cfg(all(feature = "metrics", not(loom)))]
            export: None,
        }
    }

    /// Whether to keep the [`send_wait`](ChannelMetrics::send_wait)
    /// histogram (default on). Off, a `send` that has to wait reads no clock.
    /// The waits are read from a [`FastClock`]
    /// made by `build`: the CPU's counter when built inside a multi-thread
    /// runtime, Tokio's clock (which a paused test clock stops) anywhere
    /// else.
    pub fn histograms(mut self, on: bool) -> Self {
        self.histograms = on;
        self
    }

    /// The most events one timed wait may stand for when sends wait often
    /// (default [`DEFAULT_MAX_ONE_IN`](crate::histogram::DEFAULT_MAX_ONE_IN),
    /// 64; rounded down to a power of two); 1 times every waiting `send`,
    /// at two clock reads each. Below about 128 waiting sends a
    /// millisecond every one is timed. See
    /// [sampled timing](crate::histogram#sampled-timing). Has no effect
    /// while [`histograms`](Self::histograms) is off.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::channel::Builder;
    ///
    /// assert!(Builder::<u8>::new(8).histogram_max_one_in(1).build().is_ok());
    /// let err = Builder::<u8>::new(8).histogram_max_one_in(0).build().unwrap_err();
    /// assert_eq!(err.field(), "histogram_max_one_in");
    /// ```
    pub fn histogram_max_one_in(mut self, n: u32) -> Self {
        self.histogram_max_one_in = n;
        self
    }

    /// Weighs each value (e.g. its length in bytes); requires
    /// [`max_weight`](Self::max_weight). Called once per value, outside the
    /// channel's lock; it should be cheap and deterministic.
    pub fn weigh(mut self, weigh: impl Fn(&T) -> usize + Send + Sync + 'static) -> Self {
        self.weigh = Some(Box::new(weigh));
        self
    }

    /// The most total weight the queue may hold. A single value heavier than
    /// this is refused at once (`TooHeavy`) with the value handed back.
    pub fn max_weight(mut self, max_weight: usize) -> Self {
        self.max_weight = Some(max_weight);
        self
    }

    /// The channel becomes congested once this many values are queued.
    pub fn high_watermark(mut self, high: usize) -> Self {
        self.high = Some(high);
        self
    }

    /// A congested channel stops being congested once at most this many
    /// values are queued (default: half the high watermark). Must be below
    /// the high watermark, which gives the hysteresis.
    pub fn low_watermark(mut self, low: usize) -> Self {
        self.low = Some(low);
        self
    }

    /// Creates the channel.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `capacity` 0 or too large;
    /// `max_weight` 0, or without `weigh`; `weigh` without `max_weight`;
    /// `high_watermark` 0 or above the capacity; `low_watermark` without a
    /// high one, or not below it.
    ///
    /// # Panics
    ///
    /// Never.
    pub fn build(self) -> Result<(Sender<T>, Receiver<T>), ConfigError> {
        check_capacity(self.capacity)?;
        let max_one_in = crate::histogram::check_max_one_in(COMPONENT, self.histogram_max_one_in)?;
        let max_weight = match (&self.weigh, self.max_weight) {
            (None, None) => usize::MAX,
            (Some(_), Some(0)) | (None, Some(0)) => {
                return Err(ConfigError::new(
                    COMPONENT,
                    "max_weight",
                    ConfigErrorKind::Zero,
                    "must be at least 1",
                ));
            }
            (Some(_), Some(w)) => w,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    COMPONENT,
                    "max_weight",
                    ConfigErrorKind::Missing,
                    "must be set when weigh is set",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    COMPONENT,
                    "weigh",
                    ConfigErrorKind::Missing,
                    "must be set when max_weight is set",
                ));
            }
        };
        let marks = match (self.high, self.low) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    COMPONENT,
                    "high_watermark",
                    ConfigErrorKind::Missing,
                    "must be set when low_watermark is set",
                ));
            }
            (Some(0), _) => {
                return Err(ConfigError::new(
                    COMPONENT,
                    "high_watermark",
                    ConfigErrorKind::Zero,
                    "must be at least 1",
                ));
            }
            (Some(h), _) if h > self.capacity => {
                return Err(ConfigError::new(
                    COMPONENT,
                    "high_watermark",
                    ConfigErrorKind::TooLarge,
                    format!("must be at most the capacity {}, got {h}", self.capacity),
                ));
            }
            (Some(h), Some(l)) if l >= h => {
                return Err(ConfigError::new(
                    COMPONENT,
                    "low_watermark",
                    ConfigErrorKind::Conflict,
                    format!("must be below high_watermark {h}, got {l}"),
                ));
            }
            (Some(h), l) => Some(Watermarks {
                high: h,
                low: l.unwrap_or(h / 2),
            }),
        };
        let clock = FastClock::for_histograms(self.histograms);
        let origin = crate::clock::Clock::epoch(&clock);
        let chan = Arc::new(Chan {
            core: Mutex::new(match &self.name {
                Some(name) => {
                    Core::new(self.capacity, max_weight, marks).named(name.as_str().into())
                }
                None => Core::new(self.capacity, max_weight, marks),
            }),
            weigh: self.weigh,
            served_below: AtomicU64::new(0),
            send_wait: Recorder::with_sampling(self.histograms, max_one_in),
            clock,
            origin,
        });
        #[cfg(all(feature = "metrics", not(loom)))]
        if let Some(export) = self.export {
            export(&chan);
        }
        Ok((
            Sender { chan: chan.clone() },
            Receiver {
                chan,
                stream_id: None,
            },
        ))
    }
}

fn check_capacity(capacity: usize) -> Result<(), ConfigError> {
    if capacity == 0 {
        return Err(ConfigError::new(
            COMPONENT,
            "capacity",
            ConfigErrorKind::Zero,
            "must be at least 1 (no rendezvous mode; use 1 for the tightest bound)",
        ));
    }
    if capacity > core::MAX_CAPACITY {
        return Err(ConfigError::new(
            COMPONENT,
            "capacity",
            ConfigErrorKind::TooLarge,
            format!("must be at most {}, got {capacity}", core::MAX_CAPACITY),
        ));
    }
    Ok(())
}

/// A plain-number snapshot of a channel, from `metrics()`.
///
/// # Examples
///
/// ```
/// use flowguard::channel;
///
/// let (tx, rx) = channel::bounded::<u32>(4).unwrap();
/// tx.try_send(1).unwrap();
/// let m = rx.metrics();
/// assert_eq!((m.len, m.capacity, m.sent, m.received), (1, 4, 1, 0));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelMetrics {
    /// Values queued now.
    pub len: usize,
    /// Total weight queued now (0 for an unweighted channel).
    pub weight: usize,
    /// Slot capacity now.
    pub capacity: usize,
    /// The weight bound, if the channel is weighted.
    pub max_weight: Option<usize>,
    /// Slots held by unused reserve permits.
    pub reserved: usize,
    /// Slots the queue's storage has allocated now (shrinks after a burst).
    pub allocated: usize,
    /// The most values ever queued at once.
    pub peak_len: usize,
    /// Values queued so far (by any kind of send).
    pub sent: u64,
    /// Values received so far.
    pub received: u64,
    /// Values evicted by `force_send` so far.
    pub evicted: u64,
    /// Sends and reservations waiting for room.
    pub waiting_senders: usize,
    /// Receivers waiting for a value.
    pub waiting_receivers: usize,
    /// Whether the queue is above its watermarks (see `is_congested`).
    pub congested: bool,
    /// Whether the channel is closed.
    pub closed: bool,
    /// How long `send` calls that found the channel full waited until
    /// their value was queued (nanoseconds). Sends that found room, sends
    /// that failed or were dropped, and the other kinds of send are not in
    /// it. Empty when built with [`histograms(false)`](Builder::histograms).
    /// Sampled when sends wait often, each timed wait weighted by the
    /// waits it stands for (see
    /// [`histogram_max_one_in`](Builder::histogram_max_one_in)).
    pub send_wait: HistogramSnapshot,
}

struct Chan<T> {
    core: Mutex<Core<T, Waker>>,
    weigh: Option<WeighFn<T>>,
    /// Time a `send` that found the channel full waited for room (sampled:
    /// see `Recorder::sample`).
    send_wait: Recorder,
    /// Reads the waits; `origin` is its epoch, the sampling windows' origin.
    clock: FastClock,
    origin: Instant,
    /// `Core::served_below`, published under the lock whenever a call
    /// served a waiting sender, so that a woken `send` learns it was served
    /// without taking the lock again (see [`Chan::send_served`]).
    served_below: AtomicU64,
}

impl<T> Chan<T> {
    /// Runs `f` under the lock, then wakes what it collected, unlocked.
    #[inline]
    fn locked<R>(&self, f: impl FnOnce(&mut Core<T, Waker>, &mut WakeList<Waker>) -> R) -> R {
        let mut wake = WakeList::new();
        let r = {
            let mut core = self.core.lock();
            let r = f(&mut core, &mut wake);
            if wake.served {
                self.served_below
                    .store(core.served_below(), Ordering::Release);
            }
            r
        };
        wake.drain(Waker::wake);
        r
    }

    /// Whether the waiting `send` registered as `id` has been served (its
    /// value queued and its entry removed), read without the lock.
    ///
    /// Waiting senders are served strictly in id order, skipping only
    /// refused ones, and a `send` asks for one slot while the capacity is
    /// at least one, so a `send` is never refused: once any sender
    /// registered after it was served, so was it. `false` means "ask under
    /// the lock" (not served yet, or not published yet). Not for waiting
    /// reservations, which a capacity shrink can refuse.
    #[inline]
    fn send_served(&self, id: u64) -> bool {
        id < self.served_below.load(Ordering::Acquire)
    }

    #[inline]
    fn weigh(&self, value: &T) -> usize {
        match &self.weigh {
            Some(f) => f(value),
            None => 0,
        }
    }

    fn metrics(&self) -> ChannelMetrics {
        let send_wait = self.send_wait.snapshot(); // outside the lock
        let c = self.core.lock();
        let n = c.counters();
        ChannelMetrics {
            len: c.len(),
            weight: c.weight(),
            capacity: c.capacity(),
            max_weight: self.weigh.as_ref().map(|_| c.max_weight()),
            reserved: c.reserved(),
            allocated: c.allocated(),
            peak_len: n.peak_len,
            sent: n.sent,
            received: n.received,
            evicted: n.evicted,
            waiting_senders: c.waiting_senders(),
            waiting_receivers: c.waiting_receivers(),
            congested: c.is_congested(),
            closed: c.is_closed(),
            send_wait,
        }
    }

    fn close(&self) -> bool {
        self.locked(|c, w| c.close(w))
    }

    /// Looks at the waiting send or reservation `id`, refreshing its waker.
    fn poll_send(&self, id: u64, cx: &Context<'_>) -> SendPoll<T> {
        let mut stale = None;
        let r = self.locked(|c, w| c.poll_send(id, |s| refresh(s, cx, &mut stale), w));
        drop(stale); // unlocked
        r
    }

    fn is_full(&self) -> bool {
        let c = self.core.lock();
        c.len() + c.reserved() >= c.capacity()
    }

    fn set_capacity(&self, capacity: usize) -> Result<(), ConfigError> {
        check_capacity(capacity)?;
        if let Some(marks) = self.core.lock().marks_high() {
            if marks > capacity {
                return Err(ConfigError::new(
                    COMPONENT,
                    "capacity",
                    ConfigErrorKind::TooSmall,
                    format!("must be at least high_watermark {marks}, got {capacity}"),
                ));
            }
        }
        self.locked(|c, w| c.set_capacity(capacity, w));
        Ok(())
    }
}

/// Stores `cx`'s waker in `slot` unless an equivalent one is there; a
/// replaced waker goes to `stale`, which the caller drops after unlocking
/// (see `core`'s module docs: a waker's drop may use this channel).
#[inline]
fn refresh(slot: &mut Option<Waker>, cx: &Context<'_>, stale: &mut Option<Waker>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *stale = slot.replace(cx.waker().clone()),
    }
}

// ---- Sender ----------------------------------------------------------------

/// The sending half. Cloning makes another sender of the same channel; the
/// channel closes when the last sender is dropped (receivers first drain
/// what is queued).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use flowguard::channel;
///
/// let (tx, rx) = channel::bounded::<u32>(4).unwrap();
/// let tx2 = tx.clone();
/// tx.send(1).await.unwrap();
/// tx2.send(2).await.unwrap();
/// drop((tx, tx2));
/// assert_eq!(rx.recv().await, Some(1));
/// assert_eq!(rx.recv().await, Some(2));
/// assert_eq!(rx.recv().await, None);
/// # }
/// ```
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.core.lock().add_sender();
        Self {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.chan.locked(|c, w| c.drop_sender(w));
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("metrics", &self.chan.metrics())
            .finish()
    }
}

impl<T> Sender<T> {
    /// Sends `value`, waiting for room while the channel is full.
    ///
    /// Waiting senders are served first in, first out.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the channel is closed or every receiver is
    /// gone; [`SendError::TooHeavy`] at once if the value weighs more than
    /// `max_weight`. Either way the value comes back.
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future either leaves the value fully queued (it was sent)
    /// or drops it unsent: it is never half-enqueued and its place in line is
    /// given up. To keep the value on cancellation, [`reserve`](Self::reserve)
    /// first and send through the permit.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// tx.send(1).await.unwrap();
    /// let waiting = tokio::spawn({ let tx = tx.clone(); async move { tx.send(2).await } });
    /// assert_eq!(rx.recv().await, Some(1));
    /// waiting.await.unwrap().unwrap();
    /// assert_eq!(rx.recv().await, Some(2));
    /// # }
    /// ```
    pub fn send(&self, value: T) -> SendFuture<'_, T> {
        let weight = self.chan.weigh(&value);
        SendFuture {
            chan: &self.chan,
            value: Some(value),
            weight,
            id: None,
            since: None,
        }
    }

    /// Sends `value` if there is room now, without waiting.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] if there is no room or senders are waiting
    /// ahead; `Closed` / `TooHeavy` as for [`send`](Self::send). The value
    /// comes back.
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::channel::{self, TrySendError};
    ///
    /// let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    /// assert_eq!(tx.try_send(1), Ok(()));
    /// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    /// drop(rx);
    /// assert_eq!(tx.try_send(3), Err(TrySendError::Closed(3)));
    /// ```
    #[inline]
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let weight = self.chan.weigh(&value);
        self.chan
            .locked(|c, w| c.try_send(value, weight, w))
            .map_err(|e| match e {
                Refused::Full(v) => TrySendError::Full(v),
                Refused::Closed(v) => TrySendError::Closed(v),
                Refused::TooHeavy(v) => TrySendError::TooHeavy(v),
            })
    }

    /// Sends `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError::Timeout`] if no room came free in time, otherwise
    /// as for [`send`](Self::send); the value comes back.
    ///
    /// # Panics
    ///
    /// Not on any argument (a huge `timeout` means "practically forever");
    /// like `tokio::time::sleep`, it must be called within a Tokio runtime
    /// with time enabled.
    ///
    /// # Cancel safety
    ///
    /// As for [`send`](Self::send).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use flowguard::channel::{self, SendTimeoutError};
    ///
    /// let (tx, _rx) = channel::bounded::<u32>(1).unwrap();
    /// tx.send(1).await.unwrap();
    /// let err = tx.send_timeout(2, Duration::from_millis(50)).await;
    /// assert_eq!(err, Err(SendTimeoutError::Timeout(2)));
    /// # }
    /// ```
    pub fn send_timeout(&self, value: T, timeout: Duration) -> SendTimeoutFuture<'_, T> {
        SendTimeoutFuture {
            inner: self.send(value),
            sleep: tokio::time::sleep(timeout),
            grace: false,
        }
    }

    /// Sends `value`, waiting for room until `deadline`.
    ///
    /// # Errors
    ///
    /// As for [`send_timeout`](Self::send_timeout).
    ///
    /// # Panics
    ///
    /// As for [`send_timeout`](Self::send_timeout).
    ///
    /// # Cancel safety
    ///
    /// As for [`send`](Self::send).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// tx.send_deadline(1, Instant::now() + Duration::from_secs(1)).await.unwrap();
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// # }
    /// ```
    pub fn send_deadline(&self, value: T, deadline: Instant) -> SendTimeoutFuture<'_, T> {
        SendTimeoutFuture {
            inner: self.send(value),
            sleep: tokio::time::sleep_until(deadline),
            grace: false,
        }
    }

    /// Sends `value` from a plain (non-async) thread, blocking it while the
    /// channel is full; e.g. a `CpuPool` worker feeding async consumers.
    ///
    /// # Errors
    ///
    /// As for [`send`](Self::send).
    ///
    /// # Panics
    ///
    /// Never itself; do not call it on an async runtime's worker thread
    /// (it would block that thread).
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// let t = std::thread::spawn(move || {
    ///     for i in 0..3 {
    ///         tx.send_blocking(i).unwrap();
    ///     }
    /// });
    /// let got: Vec<u32> = std::iter::from_fn(|| rx.recv_blocking()).collect();
    /// t.join().unwrap();
    /// assert_eq!(got, [0, 1, 2]);
    /// ```
    pub fn send_blocking(&self, value: T) -> Result<(), SendError<T>> {
        crate::sync::block_on(self.send(value))
    }

    /// Queues `value` at once, evicting the oldest queued values until it
    /// fits ("latest wins"). Returns the evicted values, oldest first (none
    /// if there was room). On an unweighted channel that is at most one,
    /// except after [`set_capacity`](Self::set_capacity) shrank the channel
    /// below what it held: then as many as it takes to get back under the
    /// new capacity, so the bound holds again. Evictions are counted in
    /// [`ChannelMetrics::evicted`].
    ///
    /// It does not wait and does not queue behind waiting senders.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] if the room is held by reserve permits so that
    /// even evicting everything would not make room (nothing is evicted
    /// then); `Closed` / `TooHeavy` as for [`send`](Self::send). The value
    /// comes back.
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(2).unwrap();
    /// tx.force_send(1).unwrap();
    /// tx.force_send(2).unwrap();
    /// let evicted: Vec<u32> = tx.force_send(3).unwrap().collect();
    /// assert_eq!(evicted, [1]);
    /// assert_eq!(rx.try_recv(), Ok(2));
    /// assert_eq!(rx.metrics().evicted, 1);
    /// ```
    pub fn force_send(&self, value: T) -> Result<Evicted<T>, TrySendError<T>> {
        let weight = self.chan.weigh(&value);
        let mut evicted = Evicted {
            first: None,
            rest: Vec::new().into_iter(),
        };
        let mut rest = Vec::new();
        let r = self.chan.locked(|c, w| {
            c.force_send(
                value,
                weight,
                |v| {
                    if evicted.first.is_none() {
                        evicted.first = Some(v);
                    } else {
                        rest.push(v);
                    }
                },
                w,
            )
        });
        evicted.rest = rest.into_iter();
        match r {
            Ok(()) => Ok(evicted),
            Err(Refused::Full(v)) => Err(TrySendError::Full(v)),
            Err(Refused::Closed(v)) => Err(TrySendError::Closed(v)),
            Err(Refused::TooHeavy(v)) => Err(TrySendError::TooHeavy(v)),
        }
    }

    /// Waits for one slot of room and holds it as a [`Permit`], whose
    /// [`send`](Permit::send) cannot fail. Dropping the permit returns the
    /// room.
    ///
    /// # Errors
    ///
    /// [`ReserveError::Closed`] once the channel is closed.
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up its place in line; if room had already
    /// been granted to it, the room is returned (and handed to the next
    /// waiter). Nothing leaks.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = flowguard::channel::bounded::<String>(1).unwrap();
    /// let permit = tx.reserve().await.unwrap();
    /// // Build the value only once room is certain; sending cannot fail.
    /// permit.send("ready".to_string());
    /// assert_eq!(rx.recv().await.as_deref(), Some("ready"));
    /// # }
    /// ```
    pub fn reserve(&self) -> ReserveFuture<'_, T> {
        ReserveFuture {
            inner: Reserving::new(&self.chan, 1),
        }
    }

    /// As [`reserve`](Self::reserve), but the permit owns this sender, so
    /// it can move into a `'static` task.
    ///
    /// # Errors
    ///
    /// [`ReserveError::Closed`] once the channel is closed (the sender is
    /// dropped then; clone it first to keep one).
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// As for [`reserve`](Self::reserve).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// let permit = tx.clone().reserve_owned().await.unwrap();
    /// let _tx_again = permit.send(3);
    /// assert_eq!(rx.try_recv(), Ok(3));
    /// # }
    /// ```
    pub fn reserve_owned(self) -> ReserveOwnedFuture<T> {
        ReserveOwnedFuture {
            sender: Some(self),
            state: ReserveState::new(1),
        }
    }

    /// Waits for `n` slots of room at once (all or nothing; first in, first
    /// out with other waiters) and returns them as [`Permits`], an iterator
    /// of `n` [`Permit`]s.
    ///
    /// # Errors
    ///
    /// [`ReserveError::TooMany`] at once if `n` exceeds the capacity (or
    /// later, if `set_capacity` shrinks it below `n` while waiting);
    /// [`ReserveError::Closed`] once the channel is closed.
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// As for [`reserve`](Self::reserve).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(4).unwrap();
    /// let permits = tx.reserve_many(3).await.unwrap();
    /// for (i, p) in permits.enumerate() {
    ///     p.send(i as u32);
    /// }
    /// assert_eq!(rx.metrics().len, 3);
    /// # }
    /// ```
    pub fn reserve_many(&self, n: usize) -> ReserveManyFuture<'_, T> {
        ReserveManyFuture {
            inner: Reserving::new(&self.chan, n),
        }
    }

    /// Takes one slot of room now, if free and nobody waits ahead.
    ///
    /// # Errors
    ///
    /// [`TryReserveError::Full`] or [`TryReserveError::Closed`].
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::channel::{self, TryReserveError};
    ///
    /// let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    /// let p = tx.try_reserve().unwrap();
    /// assert_eq!(tx.try_reserve().unwrap_err(), TryReserveError::Full);
    /// drop(p); // the room comes back
    /// assert!(tx.try_reserve().is_ok());
    /// # drop(rx);
    /// ```
    pub fn try_reserve(&self) -> Result<Permit<'_, T>, TryReserveError> {
        self.try_reserve_many(1).map(|mut p| {
            p.remaining = 0;
            Permit {
                chan: p.chan,
                live: true,
            }
        })
    }

    /// Takes `n` slots of room now, if free and nobody waits ahead.
    ///
    /// # Errors
    ///
    /// [`TryReserveError::TooMany`] if `n` exceeds the capacity,
    /// otherwise as for [`try_reserve`](Self::try_reserve).
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = flowguard::channel::bounded::<u32>(4).unwrap();
    /// let permits = tx.try_reserve_many(4).unwrap();
    /// assert_eq!(permits.len(), 4);
    /// ```
    pub fn try_reserve_many(&self, n: usize) -> Result<Permits<'_, T>, TryReserveError> {
        match self.chan.locked(|c, _| c.try_reserve(n, 0)) {
            Ok(()) => Ok(Permits {
                chan: &self.chan,
                remaining: n,
            }),
            Err(ReserveRefused::Full) => Err(TryReserveError::Full),
            Err(ReserveRefused::Closed) => Err(TryReserveError::Closed),
            Err(ReserveRefused::TooMany) => Err(TryReserveError::TooMany),
        }
    }

    /// Whether the queue is congested: it reached the high watermark and has
    /// not yet fallen to the low one. Always `false` without watermarks.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = flowguard::channel::Builder::<u32>::new(8)
    ///     .high_watermark(2).low_watermark(0).build().unwrap();
    /// tx.try_send(1).unwrap();
    /// assert!(!tx.is_congested());
    /// tx.try_send(2).unwrap();
    /// assert!(tx.is_congested());
    /// rx.try_recv().unwrap();
    /// assert!(tx.is_congested()); // hysteresis: not yet at the low mark
    /// rx.try_recv().unwrap();
    /// assert!(!tx.is_congested());
    /// ```
    pub fn is_congested(&self) -> bool {
        self.chan.core.lock().is_congested()
    }

    /// Resolves once the queue is not congested (at once if it is not, or
    /// if the channel is closed). A producer that sees
    /// [`is_congested`](Self::is_congested) awaits this to resume.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only removes its registration.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = flowguard::channel::Builder::<u32>::new(8)
    ///     .high_watermark(2).build().unwrap();
    /// tx.send(1).await.unwrap();
    /// tx.send(2).await.unwrap();
    /// let consumer = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    /// tx.drained().await; // resumes once at most 1 (= 2 / 2) is queued
    /// assert!(!tx.is_congested());
    /// # drop(tx); consumer.await.unwrap();
    /// # }
    /// ```
    pub fn drained(&self) -> DrainedFuture<'_, T> {
        DrainedFuture {
            chan: &self.chan,
            id: None,
        }
    }

    /// Closes the channel for every handle: sends fail from now on and
    /// waiting senders get their values back; receivers still drain what
    /// is queued (and what outstanding permits send). Returns `false` if it
    /// was already closed.
    ///
    /// A waiting [`send`](Self::send) or [`reserve`](Self::reserve) that
    /// was already served (its value queued, its room granted) before the
    /// close, but not yet polled, still succeeds: the send resolves `Ok`
    /// and its value is received, the reservation resolves to a permit
    /// whose send is delivered. Tokio's `mpsc` answers both with an error
    /// after a close; here nothing already admitted is lost or refused.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(2).unwrap();
    /// tx.try_send(1).unwrap();
    /// assert!(tx.close());
    /// assert!(tx.try_send(2).is_err());
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// assert!(rx.try_recv().is_err());
    /// ```
    pub fn close(&self) -> bool {
        self.chan.close()
    }

    /// Whether the channel is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(2).unwrap();
    /// drop(rx);
    /// assert!(tx.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.chan.core.lock().is_closed()
    }

    /// Changes the capacity live. Growing lets waiting senders in at once;
    /// shrinking never drops queued values (senders just wait until the
    /// queue is below the new capacity).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for 0, a too-large value, or one below the high
    /// watermark.
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// tx.try_send(1).unwrap();
    /// assert!(tx.try_send(2).is_err());
    /// tx.set_capacity(2).unwrap();
    /// tx.try_send(2).unwrap();
    /// assert!(tx.set_capacity(0).is_err());
    /// # drop(rx);
    /// ```
    pub fn set_capacity(&self, capacity: usize) -> Result<(), ConfigError> {
        self.chan.set_capacity(capacity)
    }

    /// Queued values now (see also [`metrics`](Self::metrics)).
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(2).unwrap();
    /// assert!(tx.is_empty() && !tx.is_full());
    /// tx.try_send(1).unwrap();
    /// tx.try_send(2).unwrap();
    /// assert_eq!((tx.len(), tx.capacity()), (2, 2));
    /// assert!(tx.is_full() && rx.is_full());
    /// ```
    pub fn len(&self) -> usize {
        self.chan.core.lock().len()
    }

    /// The slot capacity now (it may change with `set_capacity`).
    pub fn capacity(&self) -> usize {
        self.chan.core.lock().capacity()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every slot is taken by a queued value or a reserve permit, so
    /// a `send` would wait (on a weighted channel a send can also wait for
    /// weight while slots are free: see `metrics().weight`).
    pub fn is_full(&self) -> bool {
        self.chan.is_full()
    }

    /// Live senders (clones included; a [`WeakSender`] does not count).
    pub fn sender_count(&self) -> usize {
        self.chan.core.lock().senders()
    }

    /// Live receivers.
    pub fn receiver_count(&self) -> usize {
        self.chan.core.lock().receivers()
    }

    /// Whether `other` sends into the same channel.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _rx) = flowguard::channel::bounded::<u8>(1).unwrap();
    /// let (b, _rx2) = flowguard::channel::bounded::<u8>(1).unwrap();
    /// assert!(a.same_channel(&a.clone()));
    /// assert!(!a.same_channel(&b));
    /// ```
    pub fn same_channel(&self, other: &Sender<T>) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }

    /// A handle that can become a sender again while other senders live,
    /// without keeping the channel open itself (tokio's `WeakSender`).
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// let weak = tx.downgrade();
    /// assert!(weak.upgrade().is_some());
    /// drop(tx); // the last sender: the channel closes
    /// assert!(weak.upgrade().is_none());
    /// assert_eq!(rx.recv_blocking(), None);
    /// ```
    pub fn downgrade(&self) -> WeakSender<T> {
        WeakSender {
            chan: self.chan.clone(),
        }
    }

    /// Resolves once the channel is closed: every receiver gone, or
    /// [`close`](Self::close) called on either side. A producer can
    /// `select!` on it to stop work nobody will receive.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it holds nothing but its registration.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// let watcher = tokio::spawn(async move { tx.closed().await });
    /// drop(rx);
    /// watcher.await.unwrap();
    /// # }
    /// ```
    pub fn closed(&self) -> ClosedFuture<'_, T> {
        ClosedFuture {
            chan: &self.chan,
            id: None,
        }
    }

    /// [`send_blocking`](Self::send_blocking), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError::Timeout`] with the value when no room came in
    /// time; `Closed` / `TooHeavy` as for [`send`](Self::send).
    ///
    /// # Panics
    ///
    /// Never itself; do not call it on an async runtime's worker thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::channel::SendTimeoutError;
    /// use std::time::Duration;
    ///
    /// let (tx, _rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// tx.send_blocking(1).unwrap();
    /// let err = tx.send_blocking_timeout(2, Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(err, SendTimeoutError::Timeout(2));
    /// ```
    #[cfg(not(loom))]
    pub fn send_blocking_timeout(
        &self,
        value: T,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<T>> {
        let deadline = std::time::Instant::now().checked_add(timeout);
        let mut fut = self.send(value);
        match crate::sync::block_on_until(&mut fut, deadline) {
            Some(r) => r.map_err(SendTimeoutError::from),
            None => match fut.cancel() {
                Some(v) => Err(SendTimeoutError::Timeout(v)),
                None => Ok(()),
            },
        }
    }

    /// A snapshot of the channel's numbers.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = flowguard::channel::bounded::<u32>(4).unwrap();
    /// tx.try_send(1).unwrap();
    /// assert_eq!(tx.metrics().sent, 1);
    /// ```
    pub fn metrics(&self) -> ChannelMetrics {
        self.chan.metrics()
    }
}

// ---- futures of the sender --------------------------------------------------

/// The future of [`Sender::send`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
/// tx.send(1).await.unwrap();
/// let mut sending = Box::pin(tx.send(2)); // a `SendFuture`: waits for room
/// assert!(futures::poll!(sending.as_mut()).is_pending());
/// assert_eq!(rx.recv().await, Some(1));
/// sending.await.unwrap();
/// assert_eq!(rx.recv().await, Some(2));
/// # }
/// ```
pub struct SendFuture<'a, T> {
    chan: &'a Chan<T>,
    /// The value while we hold it; `None` once handed to the waiter queue.
    value: Option<T>,
    weight: usize,
    /// Our entry in the waiter queue.
    id: Option<u64>,
    /// When it started waiting, if this wait is timed (the histogram is on
    /// and the wait was drawn).
    since: Option<(Stamp, Timed)>,
}

// No pinned fields: the value is moved, never borrowed across polls.
impl<T> Unpin for SendFuture<'_, T> {}

impl<T> fmt::Debug for SendFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFuture")
            .field("waiting", &self.id.is_some())
            .finish()
    }
}

impl<T> SendFuture<'_, T> {
    /// Stops waiting. `Some(value)` if it was not sent, `None` if it was.
    #[cold]
    fn cancel(&mut self) -> Option<T> {
        match self.id.take() {
            Some(id) => {
                let mut stale = None;
                let v = self.chan.locked(|c, w| c.cancel_send(id, w, &mut stale));
                drop(stale); // unlocked
                v.ok().flatten()
            }
            None => self.value.take(),
        }
    }
}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(id) = this.id {
            // Woken because a receive queued our value: no lock needed.
            let r = if this.chan.send_served(id) {
                SendPoll::Done
            } else {
                this.chan.poll_send(id, cx)
            };
            return match r {
                SendPoll::Pending => Poll::Pending,
                SendPoll::Done => {
                    this.id = None;
                    if let Some((since, timed)) = this.since.take() {
                        let chan = this.chan;
                        let (waited, now) = chan.clock.elapsed_and_now_nanos(since, chan.origin);
                        chan.send_wait.record_sampled(timed, waited, now);
                    }
                    Poll::Ready(Ok(()))
                }
                SendPoll::Closed(v) | SendPoll::TooMany(v) => {
                    this.id = None;
                    match v {
                        Some(v) => Poll::Ready(Err(SendError::Closed(v))),
                        None => Poll::Ready(Ok(())),
                    }
                }
            };
        }
        let Some(value) = this.value.take() else {
            // Polled again after completion.
            return Poll::Ready(Ok(()));
        };
        let weight = this.weight;
        let r = this.chan.locked(|c, w| match c.try_send(value, weight, w) {
            Err(Refused::Full(v)) => {
                Err(Ok(c.register_send(Some(v), 1, weight, cx.waker().clone())))
            }
            Err(Refused::Closed(v)) => Err(Err(SendError::Closed(v))),
            Err(Refused::TooHeavy(v)) => Err(Err(SendError::TooHeavy(v))),
            Ok(()) => Ok(()),
        });
        match r {
            Ok(()) => Poll::Ready(Ok(())),
            Err(Ok(id)) => {
                this.id = Some(id);
                this.since = this
                    .chan
                    .send_wait
                    .sample()
                    .map(|t| (this.chan.clock.stamp(), t));
                Poll::Pending
            }
            Err(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl<T> Drop for SendFuture<'_, T> {
    // Inline: the common drop (the send completed) is one branch; a call
    // here cost 17 instructions a send (callgrind).
    #[inline]
    fn drop(&mut self) {
        if self.id.is_some() {
            drop(self.cancel());
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Sender::send_timeout`] and [`Sender::send_deadline`].
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::channel::SendTimeoutError;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// tx.send(1).await.unwrap();
    /// let full = tx.send_timeout(2, Duration::from_millis(10));
    /// assert_eq!(full.await, Err(SendTimeoutError::Timeout(2))); // the value comes back
    /// assert_eq!(rx.recv().await, Some(1));
    /// assert_eq!(tx.send_timeout(3, Duration::from_millis(10)).await, Ok(()));
    /// # }
    /// ```
    pub struct SendTimeoutFuture<'a, T> {
        inner: SendFuture<'a, T>,
        #[pin]
        sleep: Sleep,
        // The deadline passed once: one more scheduler turn before it counts.
        grace: bool,
    }
}

impl<T> fmt::Debug for SendTimeoutFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendTimeoutFuture")
            .field("inner", &self.inner)
            .field("deadline", &self.sleep.deadline())
            .finish()
    }
}

impl<T> Future for SendTimeoutFuture<'_, T> {
    type Output = Result<(), SendTimeoutError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(r) = Pin::new(&mut *this.inner).poll(cx) {
            return Poll::Ready(r.map_err(SendTimeoutError::from));
        }
        match this.sleep.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) if !*this.grace => grace(this.grace, cx),
            Poll::Ready(()) => Poll::Ready(match this.inner.cancel() {
                Some(v) => Err(SendTimeoutError::Timeout(v)),
                None => Ok(()),
            }),
        }
    }
}

/// The deadline of a `_timeout`/`_deadline` future has passed for the first
/// time: it is polled once more after a scheduler turn before it counts, so
/// that a value or room made at the deadline instant itself (by a task
/// whose timer fired with ours) goes first, as `clock::timeout_at_inclusive`
/// does for the crate's other deadline waits.
fn grace<R>(grace: &mut bool, cx: &mut Context<'_>) -> Poll<R> {
    *grace = true;
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// The state of a waiting reservation of `count` slots, shared by the
/// borrowed and owned reserve futures.
#[derive(Debug)]
struct ReserveState {
    count: usize,
    id: Option<u64>,
    done: bool,
}

impl ReserveState {
    fn new(count: usize) -> Self {
        Self {
            count,
            id: None,
            done: false,
        }
    }

    fn poll<T>(&mut self, chan: &Chan<T>, cx: &Context<'_>) -> Poll<Result<(), ReserveError>> {
        if self.done {
            return Poll::Ready(Err(ReserveError::Closed));
        }
        let r = match self.id {
            Some(id) => match chan.poll_send(id, cx) {
                SendPoll::Pending => return Poll::Pending,
                SendPoll::Done => Ok(()),
                SendPoll::Closed(_) => Err(ReserveError::Closed),
                SendPoll::TooMany(_) => Err(ReserveError::TooMany),
            },
            None => {
                let count = self.count;
                let r = chan.locked(|c, _| match c.try_reserve(count, 0) {
                    Ok(()) => Ok(Ok(())),
                    Err(ReserveRefused::Full) => {
                        Err(c.register_send(None, count, 0, cx.waker().clone()))
                    }
                    Err(ReserveRefused::Closed) => Ok(Err(ReserveError::Closed)),
                    Err(ReserveRefused::TooMany) => Ok(Err(ReserveError::TooMany)),
                });
                match r {
                    Ok(r) => r,
                    Err(id) => {
                        self.id = Some(id);
                        return Poll::Pending;
                    }
                }
            }
        };
        self.id = None;
        self.done = true;
        Poll::Ready(r)
    }

    /// Gives up waiting; room granted meanwhile goes back.
    fn cancel<T>(&mut self, chan: &Chan<T>) {
        if let Some(id) = self.id.take() {
            let count = self.count;
            let mut stale = None;
            chan.locked(|c, w| {
                if c.cancel_send(id, w, &mut stale).is_err() {
                    // Granted while we were not looking: give the room back.
                    c.release(count, 0, w);
                }
            });
            drop(stale); // unlocked
        }
    }
}

/// A borrowed waiting reservation.
struct Reserving<'a, T> {
    chan: &'a Chan<T>,
    state: ReserveState,
}

impl<'a, T> Reserving<'a, T> {
    fn new(chan: &'a Chan<T>, count: usize) -> Self {
        Self {
            chan,
            state: ReserveState::new(count),
        }
    }

    fn poll(&mut self, cx: &Context<'_>) -> Poll<Result<(), ReserveError>> {
        self.state.poll(self.chan, cx)
    }
}

impl<T> Drop for Reserving<'_, T> {
    fn drop(&mut self) {
        self.state.cancel(self.chan);
    }
}

/// The future of [`Sender::reserve`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
/// let first = tx.reserve().await.unwrap();
/// let mut second = Box::pin(tx.reserve()); // a `ReserveFuture`
/// assert!(futures::poll!(second.as_mut()).is_pending()); // the one slot is reserved
/// first.send(1);
/// assert_eq!(rx.recv().await, Some(1));
/// second.await.unwrap().send(2);
/// assert_eq!(rx.recv().await, Some(2));
/// # }
/// ```
pub struct ReserveFuture<'a, T> {
    inner: Reserving<'a, T>,
}

impl<T> Unpin for ReserveFuture<'_, T> {}

impl<T> fmt::Debug for ReserveFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReserveFuture")
            .field("waiting", &self.inner.state.id.is_some())
            .finish()
    }
}

impl<'a, T> Future for ReserveFuture<'a, T> {
    type Output = Result<Permit<'a, T>, ReserveError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.inner.poll(cx).map_ok(|()| Permit {
            chan: this.inner.chan,
            live: true,
        })
    }
}

/// The future of [`Sender::reserve_many`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (tx, rx) = flowguard::channel::bounded::<u32>(2).unwrap();
/// tx.send(0).await.unwrap();
/// let mut both = Box::pin(tx.reserve_many(2)); // a `ReserveManyFuture`: all or nothing
/// assert!(futures::poll!(both.as_mut()).is_pending());
/// assert_eq!(rx.recv().await, Some(0));
/// let permits = both.await.unwrap();
/// assert_eq!(permits.len(), 2);
/// # }
/// ```
pub struct ReserveManyFuture<'a, T> {
    inner: Reserving<'a, T>,
}

impl<T> Unpin for ReserveManyFuture<'_, T> {}

impl<T> fmt::Debug for ReserveManyFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReserveManyFuture")
            .field("count", &self.inner.state.count)
            .field("waiting", &self.inner.state.id.is_some())
            .finish()
    }
}

impl<'a, T> Future for ReserveManyFuture<'a, T> {
    type Output = Result<Permits<'a, T>, ReserveError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.inner.poll(cx).map_ok(|()| Permits {
            chan: this.inner.chan,
            remaining: this.inner.state.count,
        })
    }
}

/// The future of [`Sender::reserve_owned`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
/// // Owns the sender, so it can move into a spawned task.
/// let task = tokio::spawn(tx.reserve_owned());
/// let permit = task.await.unwrap().unwrap();
/// let _tx = permit.send(5); // the sender comes back
/// assert_eq!(rx.recv().await, Some(5));
/// # }
/// ```
pub struct ReserveOwnedFuture<T> {
    sender: Option<Sender<T>>,
    state: ReserveState,
}

impl<T> Unpin for ReserveOwnedFuture<T> {}

impl<T> fmt::Debug for ReserveOwnedFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReserveOwnedFuture")
            .field("waiting", &self.state.id.is_some())
            .finish()
    }
}

impl<T> Future for ReserveOwnedFuture<T> {
    type Output = Result<OwnedPermit<T>, ReserveError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(sender) = this.sender.as_ref() else {
            return Poll::Ready(Err(ReserveError::Closed));
        };
        match this.state.poll(&sender.chan, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(OwnedPermit {
                sender: this.sender.take(),
            })),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl<T> Drop for ReserveOwnedFuture<T> {
    fn drop(&mut self) {
        if let Some(sender) = &self.sender {
            self.state.cancel(&sender.chan);
        }
    }
}

/// The future of [`Sender::drained`] (and [`Receiver::drained`]).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (tx, rx) = flowguard::channel::Builder::<u32>::new(4).high_watermark(2).build().unwrap();
/// tx.send(1).await.unwrap();
/// tx.send(2).await.unwrap(); // at the high watermark: congested
/// let mut drained = Box::pin(tx.drained()); // a `DrainedFuture`
/// assert!(futures::poll!(drained.as_mut()).is_pending());
/// assert_eq!(rx.recv().await, Some(1)); // down to the low watermark (2 / 2)
/// drained.await;
/// assert!(!tx.is_congested());
/// # }
/// ```
pub struct DrainedFuture<'a, T> {
    chan: &'a Chan<T>,
    id: Option<u64>,
}

impl<T> Unpin for DrainedFuture<'_, T> {}

impl<T> fmt::Debug for DrainedFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainedFuture")
            .field("waiting", &self.id.is_some())
            .finish()
    }
}

impl<T> Future for DrainedFuture<'_, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let id = this.id;
        let mut stale = None;
        let r = this
            .chan
            .locked(|c, _| c.poll_drained(id, cx.waker().clone(), &mut stale));
        drop(stale); // unlocked
        match r {
            Ok(()) => {
                this.id = None;
                Poll::Ready(())
            }
            Err(id) => {
                this.id = Some(id);
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for DrainedFuture<'_, T> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let stale = self.chan.core.lock().cancel_drained(id);
            drop(stale); // unlocked
        }
    }
}

/// The future of [`Sender::closed`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
/// let mut closed = Box::pin(tx.closed()); // a `ClosedFuture`
/// assert!(futures::poll!(closed.as_mut()).is_pending());
/// drop(rx); // the last receiver goes
/// closed.await;
/// # }
/// ```
pub struct ClosedFuture<'a, T> {
    chan: &'a Chan<T>,
    id: Option<u64>,
}

impl<T> Unpin for ClosedFuture<'_, T> {}

impl<T> fmt::Debug for ClosedFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClosedFuture")
            .field("waiting", &self.id.is_some())
            .finish()
    }
}

impl<T> Future for ClosedFuture<'_, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let id = this.id;
        let mut stale = None;
        let r = this
            .chan
            .locked(|c, _| c.poll_closed(id, cx.waker().clone(), &mut stale));
        drop(stale); // unlocked
        match r {
            Ok(()) => {
                this.id = None;
                Poll::Ready(())
            }
            Err(id) => {
                this.id = Some(id);
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for ClosedFuture<'_, T> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let stale = self.chan.core.lock().cancel_closed(id);
            drop(stale); // unlocked
        }
    }
}

/// A sender that does not keep the channel open: [`upgrade`](Self::upgrade)
/// gives a [`Sender`] while at least one other sender lives. Made by
/// [`Sender::downgrade`].
///
/// It keeps the channel's allocation (not its queued values, which the
/// receivers or the last receiver's drop own) until it is dropped.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (tx, rx) = flowguard::channel::bounded::<u32>(2).unwrap();
/// let weak = tx.downgrade();
/// let again = weak.upgrade().unwrap();
/// again.send(1).await.unwrap();
/// assert_eq!(tx.sender_count(), 2);
/// # drop(rx);
/// # }
/// ```
pub struct WeakSender<T> {
    chan: Arc<Chan<T>>,
}

impl<T> WeakSender<T> {
    /// A sender, if any sender still lives (the channel is then open or was
    /// closed by `close()`); `None` once every sender is gone.
    pub fn upgrade(&self) -> Option<Sender<T>> {
        let mut c = self.chan.core.lock();
        if c.senders() == 0 {
            return None;
        }
        c.add_sender();
        drop(c);
        Some(Sender {
            chan: self.chan.clone(),
        })
    }
}

impl<T> Clone for WeakSender<T> {
    fn clone(&self) -> Self {
        Self {
            chan: self.chan.clone(),
        }
    }
}

impl<T> fmt::Debug for WeakSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakSender")
            .field("senders", &self.chan.core.lock().senders())
            .finish()
    }
}

// ---- permits -----------------------------------------------------------------

/// One slot of room held for a value; [`send`](Self::send) cannot fail.
/// Dropping it unused returns the room.
///
/// On a weighted channel a permit holds a slot but no weight: the value's
/// weight is charged when it is sent, so permits can take the queued weight
/// above `max_weight` (never the count above the capacity). Use
/// [`Sender::send`] where the weight bound must be strict.
///
/// # Examples
///
/// ```
/// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
/// let permit = tx.try_reserve().unwrap();
/// permit.send(5);
/// assert_eq!(rx.try_recv(), Ok(5));
/// ```
pub struct Permit<'a, T> {
    chan: &'a Chan<T>,
    live: bool,
}

impl<T> fmt::Debug for Permit<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl<T> Permit<'_, T> {
    /// Queues `value` in the held slot. If every receiver is already gone,
    /// the value is dropped (nobody could receive it).
    ///
    /// # Panics
    ///
    /// Never.
    pub fn send(mut self, value: T) {
        self.live = false;
        let weight = self.chan.weigh(&value);
        let dropped = self
            .chan
            .locked(|c, w| c.send_reserved(value, 0, weight, w));
        drop(dropped);
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        if self.live {
            self.chan.locked(|c, w| c.release(1, 0, w));
        }
    }
}

/// One slot of room held for a value, owning its [`Sender`] (for
/// `'static` tasks); from [`Sender::reserve_owned`]. [`send`](Self::send)
/// cannot fail and gives the sender back. Dropping it unused returns the
/// room. Weighted channels: as for [`Permit`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
/// let permit = tx.reserve_owned().await.unwrap();
/// let task = tokio::spawn(async move {
///     let tx = permit.send(1); // the sender comes back
///     tx.is_closed()
/// });
/// assert!(!task.await.unwrap());
/// assert_eq!(rx.recv().await, Some(1));
/// # }
/// ```
pub struct OwnedPermit<T> {
    sender: Option<Sender<T>>,
}

impl<T> fmt::Debug for OwnedPermit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit").finish_non_exhaustive()
    }
}

impl<T> OwnedPermit<T> {
    /// Queues `value` in the held slot and returns the sender. If every
    /// receiver is already gone, the value is dropped.
    ///
    /// # Panics
    ///
    /// Never.
    pub fn send(mut self, value: T) -> Sender<T> {
        let Some(sender) = self.sender.take() else {
            unreachable!("an OwnedPermit always holds its sender until consumed")
        };
        let weight = sender.chan.weigh(&value);
        let dropped = sender
            .chan
            .locked(|c, w| c.send_reserved(value, 0, weight, w));
        drop(dropped);
        sender
    }

    /// Returns the room unused and gives the sender back.
    pub fn release(mut self) -> Sender<T> {
        let Some(sender) = self.sender.take() else {
            unreachable!("an OwnedPermit always holds its sender until consumed")
        };
        sender.chan.locked(|c, w| c.release(1, 0, w));
        sender
    }
}

impl<T> Drop for OwnedPermit<T> {
    fn drop(&mut self) {
        if let Some(sender) = &self.sender {
            sender.chan.locked(|c, w| c.release(1, 0, w));
        }
    }
}

/// Several slots of room from [`Sender::reserve_many`]: an iterator of
/// [`Permit`]s. Dropping it returns the room of the permits not taken.
///
/// # Examples
///
/// ```
/// let (tx, rx) = flowguard::channel::bounded::<u32>(3).unwrap();
/// let mut permits = tx.try_reserve_many(3).unwrap();
/// permits.next().unwrap().send(1);
/// drop(permits); // two slots come back
/// assert_eq!(rx.metrics().reserved, 0);
/// ```
pub struct Permits<'a, T> {
    chan: &'a Chan<T>,
    remaining: usize,
}

impl<T> fmt::Debug for Permits<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permits")
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl<'a, T> Iterator for Permits<'a, T> {
    type Item = Permit<'a, T>;

    fn next(&mut self) -> Option<Permit<'a, T>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(Permit {
            chan: self.chan,
            live: true,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<T> ExactSizeIterator for Permits<'_, T> {}

impl<T> Drop for Permits<'_, T> {
    fn drop(&mut self) {
        if self.remaining > 0 {
            let n = self.remaining;
            self.chan.locked(|c, w| c.release(n, 0, w));
        }
    }
}

/// The values [`Sender::force_send`] evicted, oldest first.
///
/// # Examples
///
/// ```
/// let (tx, _rx) = flowguard::channel::bounded::<u32>(1).unwrap();
/// assert_eq!(tx.force_send(1).unwrap().len(), 0);
/// assert_eq!(tx.force_send(2).unwrap().collect::<Vec<_>>(), [1]);
/// ```
pub struct Evicted<T> {
    first: Option<T>,
    rest: std::vec::IntoIter<T>,
}

impl<T> fmt::Debug for Evicted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Evicted").field("len", &self.len()).finish()
    }
}

impl<T> Iterator for Evicted<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.first.take().or_else(|| self.rest.next())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.first.is_some()) + self.rest.len();
        (n, Some(n))
    }
}

impl<T> ExactSizeIterator for Evicted<T> {}

// ---- Receiver ----------------------------------------------------------------

/// The receiving half. Cloning makes another receiver of the same channel
/// (each value goes to one of them). When the last receiver is dropped the
/// channel closes, sends fail at once, and queued values are dropped.
///
/// Implements [`futures_core::Stream`], ending once the channel is closed
/// and drained.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
///
/// let (tx, rx) = flowguard::channel::bounded::<u32>(4).unwrap();
/// for i in 0..3 {
///     tx.send(i).await.unwrap();
/// }
/// drop(tx);
/// let all: Vec<u32> = rx.collect().await;
/// assert_eq!(all, [0, 1, 2]);
/// # }
/// ```
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
    /// The `Stream` impl's registration among waiting receivers.
    stream_id: Option<u64>,
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.chan.core.lock().add_receiver();
        Self {
            chan: self.chan.clone(),
            stream_id: None,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let id = self.stream_id.take();
        let (left, stale) = self.chan.locked(|c, w| {
            let stale = id.and_then(|id| c.cancel_recv(id, w));
            (c.drop_receiver(w), stale)
        });
        drop((left, stale)); // unlocked
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("metrics", &self.chan.metrics())
            .finish()
    }
}

/// Takes a value or registers `id` as waiting; the shared step of every
/// receive future.
#[inline]
fn poll_recv<T>(chan: &Chan<T>, id: &mut Option<u64>, cx: &Context<'_>) -> Poll<Option<T>> {
    // A waker replaced or removed here is dropped after unlocking (see
    // `core`'s module docs).
    let mut stale = None;
    let r = chan.locked(|c, w| match c.try_recv(w) {
        Ok(v) => {
            if let Some(id) = id.take() {
                stale = c.done_recv(id);
            }
            Poll::Ready(Some(v))
        }
        Err(Empty::Closed) => {
            if let Some(id) = id.take() {
                stale = c.done_recv(id);
            }
            Poll::Ready(None)
        }
        Err(Empty::Empty) => {
            *id = Some(c.register_recv(*id, cx.waker().clone(), &mut stale));
            Poll::Pending
        }
    });
    drop(stale);
    r
}

#[cold]
fn cancel_recv<T>(chan: &Chan<T>, id: &mut Option<u64>) {
    if let Some(id) = id.take() {
        let stale = chan.locked(|c, w| c.cancel_recv(id, w));
        drop(stale); // unlocked
    }
}

impl<T> Receiver<T> {
    /// Receives the oldest value, waiting while the channel is empty.
    /// `None` once the channel is closed and drained.
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: values are only taken in the poll that returns them, so
    /// dropping the future never loses one; it stays queued for the next
    /// receiver, and a wake-up meant for this one is passed on.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// tokio::spawn(async move { tx.send(9).await.unwrap() });
    /// assert_eq!(rx.recv().await, Some(9));
    /// assert_eq!(rx.recv().await, None);
    /// # }
    /// ```
    pub fn recv(&self) -> RecvFuture<'_, T> {
        RecvFuture {
            chan: &self.chan,
            id: None,
        }
    }

    /// Receives the oldest value if there is one now.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if nothing is queued,
    /// [`TryRecvError::Closed`] if closed and drained.
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::channel::{self, TryRecvError};
    ///
    /// let (tx, rx) = channel::bounded::<u32>(1).unwrap();
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    /// tx.try_send(1).unwrap();
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// ```
    #[inline]
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.chan.locked(|c, w| c.try_recv(w)).map_err(|e| match e {
            Empty::Empty => TryRecvError::Empty,
            Empty::Closed => TryRecvError::Closed,
        })
    }

    /// Receives the oldest value, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] if nothing arrived in time,
    /// [`RecvTimeoutError::Closed`] if closed and drained.
    ///
    /// # Panics
    ///
    /// Not on any argument (a huge `timeout` means "practically forever");
    /// like `tokio::time::sleep`, it must be called within a Tokio runtime
    /// with time enabled.
    ///
    /// # Cancel safety
    ///
    /// As for [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use flowguard::channel::{self, RecvTimeoutError};
    ///
    /// let (_tx, rx) = channel::bounded::<u32>(1).unwrap();
    /// assert_eq!(rx.recv_timeout(Duration::from_secs(1)).await, Err(RecvTimeoutError::Timeout));
    /// # }
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> RecvTimeoutFuture<'_, T> {
        RecvTimeoutFuture {
            inner: self.recv(),
            sleep: tokio::time::sleep(timeout),
            grace: false,
        }
    }

    /// Receives the oldest value, waiting until `deadline`.
    ///
    /// # Errors
    ///
    /// As for [`recv_timeout`](Self::recv_timeout).
    ///
    /// # Panics
    ///
    /// As for [`recv_timeout`](Self::recv_timeout).
    ///
    /// # Cancel safety
    ///
    /// As for [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// tx.try_send(3).unwrap();
    /// let got = rx.recv_deadline(Instant::now() + Duration::from_secs(1)).await;
    /// assert_eq!(got, Ok(3));
    /// # }
    /// ```
    pub fn recv_deadline(&self, deadline: Instant) -> RecvTimeoutFuture<'_, T> {
        RecvTimeoutFuture {
            inner: self.recv(),
            sleep: tokio::time::sleep_until(deadline),
            grace: false,
        }
    }

    /// Waits until at least one value is queued, then moves up to `limit`
    /// values into `buf` in one go. Returns how many were moved; 0 means
    /// closed and drained (or `limit` was 0).
    ///
    /// # Panics
    ///
    /// Never.
    ///
    /// # Cancel safety
    ///
    /// As for [`recv`](Self::recv): values move into `buf` only in the poll
    /// that returns.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(8).unwrap();
    /// for i in 0..5 {
    ///     tx.try_send(i).unwrap();
    /// }
    /// let mut buf = Vec::new();
    /// assert_eq!(rx.recv_many(&mut buf, 3).await, 3);
    /// assert_eq!(rx.recv_many(&mut buf, 3).await, 2);
    /// assert_eq!(buf, [0, 1, 2, 3, 4]);
    /// # }
    /// ```
    pub fn recv_many<'a>(&'a self, buf: &'a mut Vec<T>, limit: usize) -> RecvManyFuture<'a, T> {
        RecvManyFuture {
            chan: &self.chan,
            buf,
            limit,
            id: None,
        }
    }

    /// Receives from a plain (non-async) thread, blocking it while the
    /// channel is empty. `None` once closed and drained.
    ///
    /// # Panics
    ///
    /// Never itself; do not call it on an async runtime's worker thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// std::thread::spawn(move || tx.send_blocking(4).unwrap());
    /// assert_eq!(rx.recv_blocking(), Some(4));
    /// assert_eq!(rx.recv_blocking(), None);
    /// ```
    pub fn recv_blocking(&self) -> Option<T> {
        crate::sync::block_on(self.recv())
    }

    /// See [`Sender::is_congested`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// assert!(!rx.is_congested());
    /// ```
    pub fn is_congested(&self) -> bool {
        self.chan.core.lock().is_congested()
    }

    /// See [`Sender::drained`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (_tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// rx.drained().await; // no watermarks: never congested
    /// # }
    /// ```
    pub fn drained(&self) -> DrainedFuture<'_, T> {
        DrainedFuture {
            chan: &self.chan,
            id: None,
        }
    }

    /// See [`Sender::close`]. Receivers still drain what is queued.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// rx.close();
    /// assert!(tx.try_send(1).is_err());
    /// ```
    pub fn close(&self) -> bool {
        self.chan.close()
    }

    /// Whether the channel is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// drop(tx);
    /// assert!(rx.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.chan.core.lock().is_closed()
    }

    /// See [`Sender::set_capacity`].
    ///
    /// # Errors
    ///
    /// As for [`Sender::set_capacity`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// rx.set_capacity(16).unwrap();
    /// assert_eq!(rx.metrics().capacity, 16);
    /// ```
    pub fn set_capacity(&self, capacity: usize) -> Result<(), ConfigError> {
        self.chan.set_capacity(capacity)
    }

    /// See [`Sender::len`].
    pub fn len(&self) -> usize {
        self.chan.core.lock().len()
    }

    /// See [`Sender::capacity`].
    pub fn capacity(&self) -> usize {
        self.chan.core.lock().capacity()
    }

    /// See [`Sender::is_empty`].
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// See [`Sender::is_full`].
    pub fn is_full(&self) -> bool {
        self.chan.is_full()
    }

    /// See [`Sender::sender_count`].
    pub fn sender_count(&self) -> usize {
        self.chan.core.lock().senders()
    }

    /// See [`Sender::receiver_count`].
    pub fn receiver_count(&self) -> usize {
        self.chan.core.lock().receivers()
    }

    /// Whether `other` receives from the same channel.
    pub fn same_channel(&self, other: &Receiver<T>) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }

    /// [`recv_blocking`](Self::recv_blocking), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] when nothing came in time;
    /// [`RecvTimeoutError::Closed`] once closed and drained.
    ///
    /// # Panics
    ///
    /// Never itself; do not call it on an async runtime's worker thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::channel::RecvTimeoutError;
    /// use std::time::Duration;
    ///
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// assert_eq!(rx.recv_blocking_timeout(Duration::from_millis(5)), Err(RecvTimeoutError::Timeout));
    /// tx.send_blocking(7).unwrap();
    /// drop(tx);
    /// assert_eq!(rx.recv_blocking_timeout(Duration::from_millis(5)), Ok(7));
    /// assert_eq!(rx.recv_blocking_timeout(Duration::from_millis(5)), Err(RecvTimeoutError::Closed));
    /// ```
    #[cfg(not(loom))]
    pub fn recv_blocking_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = std::time::Instant::now().checked_add(timeout);
        let mut fut = self.recv();
        match crate::sync::block_on_until(&mut fut, deadline) {
            Some(Some(v)) => Ok(v),
            Some(None) => Err(RecvTimeoutError::Closed),
            None => Err(RecvTimeoutError::Timeout),
        }
    }

    /// A snapshot of the channel's numbers.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = flowguard::channel::bounded::<u32>(4).unwrap();
    /// assert_eq!(rx.metrics().len, 0);
    /// ```
    pub fn metrics(&self) -> ChannelMetrics {
        self.chan.metrics()
    }
}

impl<T> futures_core::Stream for Receiver<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        poll_recv(&this.chan, &mut this.stream_id, cx)
    }
}

/// The future of [`Receiver::recv`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
/// let mut next = Box::pin(rx.recv()); // a `RecvFuture`
/// assert!(futures::poll!(next.as_mut()).is_pending());
/// tx.send(9).await.unwrap();
/// assert_eq!(next.await, Some(9));
/// drop(tx);
/// assert_eq!(rx.recv().await, None); // closed and empty
/// # }
/// ```
pub struct RecvFuture<'a, T> {
    chan: &'a Chan<T>,
    id: Option<u64>,
}

impl<T> Unpin for RecvFuture<'_, T> {}

impl<T> fmt::Debug for RecvFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvFuture")
            .field("waiting", &self.id.is_some())
            .finish()
    }
}

impl<T> Future for RecvFuture<'_, T> {
    type Output = Option<T>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        poll_recv(this.chan, &mut this.id, cx)
    }
}

impl<T> Drop for RecvFuture<'_, T> {
    // Inline, as for `SendFuture`: a completed receive has nothing to undo.
    #[inline]
    fn drop(&mut self) {
        if self.id.is_some() {
            cancel_recv(self.chan, &mut self.id);
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Receiver::recv_timeout`] and [`Receiver::recv_deadline`].
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::channel::RecvTimeoutError;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let (tx, rx) = flowguard::channel::bounded::<u32>(1).unwrap();
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(10)).await, Err(RecvTimeoutError::Timeout));
    /// tx.send(4).await.unwrap();
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(10)).await, Ok(4));
    /// # }
    /// ```
    pub struct RecvTimeoutFuture<'a, T> {
        inner: RecvFuture<'a, T>,
        #[pin]
        sleep: Sleep,
        // The deadline passed once: one more scheduler turn before it counts.
        grace: bool,
    }
}

impl<T> fmt::Debug for RecvTimeoutFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvTimeoutFuture")
            .field("inner", &self.inner)
            .field("deadline", &self.sleep.deadline())
            .finish()
    }
}

impl<T> Future for RecvTimeoutFuture<'_, T> {
    type Output = Result<T, RecvTimeoutError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(r) = Pin::new(&mut *this.inner).poll(cx) {
            return Poll::Ready(r.ok_or(RecvTimeoutError::Closed));
        }
        match this.sleep.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) if !*this.grace => grace(this.grace, cx),
            Poll::Ready(()) => {
                cancel_recv(this.inner.chan, &mut this.inner.id);
                Poll::Ready(Err(RecvTimeoutError::Timeout))
            }
        }
    }
}

/// The future of [`Receiver::recv_many`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (tx, rx) = flowguard::channel::bounded::<u32>(8).unwrap();
/// for v in 0..5 {
///     tx.send(v).await.unwrap();
/// }
/// let mut buf = Vec::new();
/// let got = rx.recv_many(&mut buf, 3).await; // a `RecvManyFuture`: up to 3 at once
/// assert_eq!(got, 3);
/// assert_eq!(buf, [0, 1, 2]);
/// # }
/// ```
pub struct RecvManyFuture<'a, T> {
    chan: &'a Chan<T>,
    buf: &'a mut Vec<T>,
    limit: usize,
    id: Option<u64>,
}

impl<T> Unpin for RecvManyFuture<'_, T> {}

impl<T> fmt::Debug for RecvManyFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvManyFuture")
            .field("limit", &self.limit)
            .field("waiting", &self.id.is_some())
            .finish()
    }
}

impl<T> Future for RecvManyFuture<'_, T> {
    type Output = usize;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        let this = self.get_mut();
        if this.limit == 0 {
            return Poll::Ready(0);
        }
        let limit = this.limit;
        let buf = &mut *this.buf;
        let id = &mut this.id;
        let mut stale = None; // dropped unlocked, as in `poll_recv`
        let r = this.chan.locked(|c, w| {
            let mut n = 0;
            while n < limit {
                match c.try_recv(w) {
                    Ok(v) => {
                        buf.push(v);
                        n += 1;
                    }
                    Err(Empty::Closed) => break,
                    Err(Empty::Empty) if n > 0 => break,
                    Err(Empty::Empty) => {
                        *id = Some(c.register_recv(*id, cx.waker().clone(), &mut stale));
                        return Poll::Pending;
                    }
                }
            }
            if let Some(i) = id.take() {
                stale = c.done_recv(i);
            }
            Poll::Ready(n)
        });
        drop(stale);
        r
    }
}

impl<T> Drop for RecvManyFuture<'_, T> {
    fn drop(&mut self) {
        cancel_recv(self.chan, &mut self.id);
    }
}
