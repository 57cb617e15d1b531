//! Debounce and throttle: collapse bursts of events, with lodash's semantics.
//!
//! Three forms share one set of timer rules ([`DebounceCore`], lodash's
//! `debounce` as a pure state machine):
//!
//! - [`Debouncer`] and [`Throttler`]: handles around a handler (sync or async)
//!   that receives the latest value. `call(v)` from any task or clone,
//!   [`flush`](crate::timing::Debouncer::flush), [`cancel`](crate::timing::Debouncer::cancel),
//!   [`is_pending`](crate::timing::Debouncer::is_pending), and
//!   [`call_wait`](crate::timing::Debouncer::call_wait) to await the result of the
//!   invocation a call was folded into.
//! - [`TimingStreamExt`]: `debounce`, `debounce_with`, `throttle`,
//!   `throttle_with` on any `futures_core::Stream`.
//! - [`DebounceCore`] itself, for driving by hand with your own clock.
//!
//! # Semantics (lodash)
//!
//! - `wait`: the quiet time. A trailing invocation happens `wait` after the
//!   last call of a burst, with the latest value.
//! - `leading` (debounce default off): invoke on the first call of a burst.
//! - `trailing` (default on): invoke at the end of a burst. With both edges on,
//!   the trailing invocation happens only if there was more than one call in
//!   the burst (the leading one already used the first).
//! - `max_wait`: the longest a call may be delayed during a continuous burst.
//!   A `max_wait` below `wait` is raised to `wait`, as lodash does.
//! - A **throttle is a debounce with `max_wait = wait`**, leading and trailing
//!   on by default: at most one invocation per `wait` during a burst.
//! - `wait` zero: calls made at the same instant fold into one invocation at
//!   that instant.
//! - Calls exactly at a boundary: a call at `last_call + wait` starts a new
//!   burst if the timer has already fired, and joins (and extends) the ending
//!   one if not; with `max_wait` reached it invokes itself, as lodash's
//!   "tight loop" branch does. For the handles, which of the two ran first at
//!   one instant is up to the runtime, as in JavaScript; the pure core is
//!   exact about either order (see [`DebounceCore`]). The stream adapters
//!   always take every item that is ready before a timer due at the same
//!   instant (see [`TimingStreamExt`]).
//! - Like lodash, the timer is not pushed back on each call: it fires where it
//!   was armed and re-arms itself for the time left. One `Sleep` per
//!   debouncer, reset in place; a call allocates nothing and touches no timer.
//!
//! One deliberate difference from lodash: `flush` clears the armed timer (in
//! lodash a stale timer survives a `flush` and can invoke early with
//! `maxWait`).
//!
//! [`DebounceCore`]: crate::timing::DebounceCore
//! [`Debouncer`]: crate::timing::Debouncer
//! [`Throttler`]: crate::timing::Throttler
//! [`TimingStreamExt`]: crate::timing::TimingStreamExt
//!
//! # Examples
//!
//! ```
//! use flowguard::timing::Debouncer;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let search = Debouncer::builder(Duration::from_millis(300))
//!     .build_sync(|query: String| query.len())
//!     .unwrap();
//! search.call("r".into()).unwrap();
//! search.call("ru".into()).unwrap();
//! let len = search.call_wait("rust".into()).unwrap().await.unwrap();
//! assert_eq!(len, 4); // one invocation, with the latest value
//! assert_eq!(search.metrics().invocations, 1);
//! # }
//! ```

mod debounce;
mod error;
mod handle;
mod stream;
mod throttle;

pub use debounce::{DebounceCore, DebounceOptions, DebounceOptionsBuilder, Step};
pub use error::{CallError, Closed};
pub use handle::{CallWait, Debouncer, DebouncerBuilder, TimingMetrics};
pub use stream::{Debounced, TimingStreamExt};
pub use throttle::{Throttler, ThrottlerBuilder};
