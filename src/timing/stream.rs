//! Debounce and throttle as `Stream` adapters.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::debounce::{DebounceCore, DebounceOptions, Step};

/// Items taken from the inner stream in one poll before yielding to the
/// runtime (an always-ready inner stream must not starve other tasks).
const BUDGET: usize = 128;

/// Debounce and throttle for any [`Stream`].
///
/// Items are "calls" at the instant the adapter receives them; the adapter
/// yields the items that lodash would invoke with, at the instants it would.
/// **End of stream flushes**: when the inner stream ends, a pending trailing
/// item is yielded at once (with `trailing` off it is dropped), then the
/// adapter ends.
///
/// **Items ready now come before a timer due now.** An item is a call at the
/// instant the adapter takes it, and every item the inner stream has ready is
/// taken before a timer due at that same instant fires, as the synchronous
/// calls of a JavaScript tick run before its timers. So with `wait` zero the
/// items ready at one instant fold into one (`iter([1, 2, 3]).debounce(ZERO)`
/// yields `3`), and an item ready exactly when a burst's timer is due joins
/// that burst (the core's boundary rule, see [`DebounceCore`]).
///
/// If the consumer is slow and the timer is already overdue (due *before*
/// now) when the next item arrives, the timer is serviced first: the ending
/// burst yields its item, then the new item starts a new burst. No item that
/// lodash would invoke with is lost to a slow consumer.
///
/// The adapters can be built anywhere; like every Tokio timer, polling one
/// needs a Tokio runtime with time enabled. None of these methods panics.
///
/// # Examples
///
/// ```
/// use flowguard::timing::TimingStreamExt;
/// use futures::StreamExt;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let keys = futures::stream::iter(["r", "ru", "rus", "rust"]);
/// let searches: Vec<_> = keys.debounce(Duration::from_millis(300)).collect().await;
/// assert_eq!(searches, vec!["rust"]); // flushed at end of stream
/// # }
/// ```
pub trait TimingStreamExt: Stream {
    /// Debounces with lodash's defaults: trailing only, no `max_wait`.
    fn debounce(self, wait: Duration) -> Debounced<Self>
    where
        Self: Sized,
    {
        Debounced::new(self, DebounceOptions::debounce(wait))
    }

    /// Debounces with the given options.
    fn debounce_with(self, options: DebounceOptions) -> Debounced<Self>
    where
        Self: Sized,
    {
        Debounced::new(self, options)
    }

    /// Throttles: leading and trailing, `max_wait = wait`.
    fn throttle(self, wait: Duration) -> Debounced<Self>
    where
        Self: Sized,
    {
        Debounced::new(self, DebounceOptions::throttle(wait))
    }

    /// Throttles with the given options, e.g. from
    /// [`DebounceOptions::throttle_builder`]. (A throttle *is* a debounce with
    /// `max_wait = wait`; this is `debounce_with` under the name you look for.)
    fn throttle_with(self, options: DebounceOptions) -> Debounced<Self>
    where
        Self: Sized,
    {
        Debounced::new(self, options)
    }
}

impl<S: Stream> TimingStreamExt for S {}

pin_project! {
    /// The stream returned by [`TimingStreamExt`]'s methods.
    ///
    /// Holds the latest item, at most one item ready to yield, and one
    /// `Sleep` reset in place. Receiving an item allocates nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::timing::TimingStreamExt;
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let (tx, rx) = tokio::sync::mpsc::channel(8);
    /// let mut out = Box::pin(tokio_stream_like(rx).throttle(Duration::from_millis(100)));
    /// tx.send(1).await.unwrap();
    /// tx.send(2).await.unwrap();
    /// assert_eq!(out.next().await, Some(1)); // leading
    /// assert_eq!(out.next().await, Some(2)); // trailing, 100 ms later
    /// drop(tx);
    /// assert_eq!(out.next().await, None);
    /// # }
    /// # fn tokio_stream_like<T>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    /// #     futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    /// # }
    /// ```
    #[must_use = "streams do nothing unless polled"]
    pub struct Debounced<S: Stream> {
        #[pin]
        stream: S,
        // Created on first use, so the adapter can be built outside a runtime.
        #[pin]
        sleep: Option<Sleep>,
        armed: Option<Instant>,
        core: DebounceCore,
        latest: Option<S::Item>,
        ready: Option<S::Item>,
        done: bool,
    }
}

impl<S: Stream> Debounced<S> {
    fn new(stream: S, options: DebounceOptions) -> Self {
        Self {
            stream,
            sleep: None,
            armed: None,
            core: DebounceCore::new(options),
            latest: None,
            ready: None,
            done: false,
        }
    }

    /// The options in force.
    pub fn options(&self) -> &DebounceOptions {
        self.core.options()
    }

    /// Whether an item waits for a trailing edge.
    pub fn is_pending(&self) -> bool {
        self.core.is_pending()
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

/// What a core step yields: the latest item on `Invoke`, nothing otherwise
/// (a `Discard` drops it).
fn take_on<T>(step: Step, latest: &mut Option<T>) -> Option<T> {
    match step {
        Step::Invoke => latest.take(),
        Step::Discard => {
            *latest = None;
            None
        }
        _ => None,
    }
}

impl<S: Stream> Stream for Debounced<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let mut this = self.project();
        if let Some(item) = this.ready.take() {
            return Poll::Ready(Some(item));
        }
        let mut budget = BUDGET;
        while !*this.done {
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            budget -= 1;
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    let now = Instant::now();
                    let mut first = None;
                    // Only a timer due *before* now is serviced first (a slow
                    // consumer). One due *at* now waits until every item ready
                    // now is taken: they are calls at this instant, and a
                    // tick's calls run before its timers (so `wait` zero folds
                    // them into one item).
                    if this.core.deadline().is_some_and(|d| d < now) {
                        first = take_on(this.core.timer_fired(now), this.latest);
                    }
                    *this.latest = Some(item);
                    let second = take_on(this.core.call(now), this.latest);
                    match (first, second) {
                        (Some(a), b) => {
                            *this.ready = b;
                            return Poll::Ready(Some(a));
                        }
                        (None, Some(b)) => return Poll::Ready(Some(b)),
                        (None, None) => {}
                    }
                }
                Poll::Ready(None) => {
                    *this.done = true;
                    let step = this.core.flush(Instant::now());
                    if let Some(item) = take_on(step, this.latest) {
                        return Poll::Ready(Some(item));
                    }
                }
                Poll::Pending => break,
            }
        }
        if *this.done {
            return Poll::Ready(None);
        }
        while let Some(deadline) = this.core.deadline() {
            if *this.armed != Some(deadline) {
                match this.sleep.as_mut().as_pin_mut() {
                    Some(sleep) => sleep.reset(deadline),
                    None => this.sleep.set(Some(tokio::time::sleep_until(deadline))),
                }
                *this.armed = Some(deadline);
            }
            let Some(sleep) = this.sleep.as_mut().as_pin_mut() else {
                break;
            };
            if sleep.poll(cx).is_pending() {
                break;
            }
            *this.armed = None;
            let now = Instant::now().max(deadline);
            if let Some(item) = take_on(this.core.timer_fired(now), this.latest) {
                return Poll::Ready(Some(item));
            }
        }
        Poll::Pending
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let extra = usize::from(self.ready.is_some()) + usize::from(self.latest.is_some());
        let (_, upper) = self.stream.size_hint();
        (0, upper.and_then(|u| u.checked_add(extra)))
    }
}

impl<S: Stream> fmt::Debug for Debounced<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Debounced")
            .field("options", self.core.options())
            .field("pending", &self.core.is_pending())
            .field("done", &self.done)
            .finish()
    }
}
