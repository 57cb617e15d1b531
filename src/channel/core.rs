//! The channel's rules as a plain state machine: queue, room, waiters.
//!
//! No locks, no clock, no runtime. The shell keeps one `Core` behind the
//! facade's `Mutex` and wakes whatever a call pushed into its [`WakeList`]
//! after the lock is released. The waker type `W` is generic so that unit
//! tests, proptest and fuzz can drive the very same rules with plain markers.
//!
//! A waker the rules replace or remove without waking it (a re-poll with a
//! new waker, a cancelled or finished wait) is never dropped here: it is
//! handed back (a returned `Option<W>`, or a `stale` out-parameter), for the
//! shell to drop once the lock is released. Dropping a waker runs its
//! owner's code, which may use this very channel (drop a sender, say) and
//! so take the lock again (tokio's `release_permits_at_drop`).
//!
//! Room is counted in two units at once: slots (`capacity`) and weight
//! (`max_weight`, `usize::MAX` when the channel is not weighted). A slot is
//! "used" while it holds a queued value or is held by a reserve permit.
//!
//! Waiting senders form one FIFO queue (`send_waiters`, ordered by id, so a
//! future finds its entry by binary search). Room freed by a receiver is
//! handed to the head of that queue directly: a waiting `send` has its value
//! moved into the queue by the receiver, a waiting `reserve` has its room
//! marked as reserved. Nobody barges past a waiting sender, so the order of
//! waiting senders is the order their values are queued in.

use std::collections::VecDeque;

use crate::sync::StdArc;

/// Largest accepted capacity: leaves headroom so `len + reserved + n` never
/// overflows.
pub(crate) const MAX_CAPACITY: usize = usize::MAX >> 2;

/// Below this many allocated slots the queue is never shrunk.
const MIN_RETAINED: usize = 32;

/// Halves a waiter list's storage once it is three quarters empty, so a
/// burst of parked tasks does not pin memory forever either.
#[inline]
fn shrink_waiters<X>(d: &mut VecDeque<X>) {
    let cap = d.capacity();
    if cap > MIN_RETAINED && d.len() <= cap / 4 {
        d.shrink_to((cap / 2).max(MIN_RETAINED));
    }
}

/// Wakers collected under the lock, woken after it is released.
///
/// One waker inline (the common case: a push wakes at most one parked
/// receiver, a receive hands room to at most one parked sender), the rest
/// in a `Vec` that allocates only when a single call wakes several (close,
/// a capacity change, a heavy value freeing room for several light ones).
/// Kept this small on purpose: every channel operation makes one and drops
/// one, and with an array of four `Option<Waker>` dropping the list alone
/// cost 55 instructions a call (callgrind), over a fifth of a
/// send-and-receive round.
#[derive(Debug)]
pub(crate) struct WakeList<W> {
    first: Option<W>,
    more: Vec<W>,
    /// Set when the call served at least one waiting sender, so the shell
    /// republishes [`Core::served_below`] before it unlocks.
    pub(crate) served: bool,
}

impl<W> Default for WakeList<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W> WakeList<W> {
    /// An empty list; allocates nothing.
    #[inline]
    pub(crate) fn new() -> Self {
        Self {
            first: None,
            more: Vec::new(),
            served: false,
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, w: W) {
        if self.first.is_none() && self.more.is_empty() {
            self.first = Some(w);
        } else {
            self.more.push(w);
        }
    }

    /// How many wakers are held.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    /// Calls `f` on every waker, in push order.
    #[inline]
    pub(crate) fn drain(&mut self, mut f: impl FnMut(W)) {
        if let Some(w) = self.first.take() {
            f(w);
        }
        if !self.more.is_empty() {
            for w in self.more.drain(..) {
                f(w);
            }
        }
    }
}

/// Why a non-waiting send was refused; the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused<T> {
    Full(T),
    Closed(T),
    TooHeavy(T),
}

/// Why a reservation cannot be taken now or ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReserveRefused {
    Full,
    Closed,
    TooMany,
}

/// What a non-waiting receive found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Empty {
    /// Nothing queued now; more may come.
    Empty,
    /// Closed and drained: nothing will ever come.
    Closed,
}

/// The state of a registered waiting sender when its future looks at it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendPoll<T> {
    /// Still queued for room.
    Pending,
    /// Its value was queued (send) or its room reserved (reserve).
    Done,
    /// The channel closed while it waited; entry removed, value returned.
    Closed(Option<T>),
    /// The capacity shrank below what it asks for; entry removed.
    TooMany(Option<T>),
}

#[derive(Debug)]
struct SendWaiter<T, W> {
    id: u64,
    /// `Some` for a waiting `send`, `None` for a waiting `reserve`.
    value: Option<T>,
    count: usize,
    weight: usize,
    /// Cannot ever be granted (capacity shrank); its future will collect it.
    refused: bool,
    waker: Option<W>,
}

#[derive(Debug)]
struct Slot<T> {
    value: T,
    weight: usize,
}

/// Hysteresis marks on the queue length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Watermarks {
    /// Congested from this length upwards.
    pub(crate) high: usize,
    /// No longer congested at or below this length.
    pub(crate) low: usize,
}

/// Plain counters, copied out by `metrics()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) evicted: u64,
    pub(crate) peak_len: usize,
}

/// The channel's whole state.
#[derive(Debug)]
pub(crate) struct Core<T, W> {
    /// For `tracing` events.
    name: StdArc<str>,
    queue: VecDeque<Slot<T>>,
    capacity: usize,
    max_weight: usize,
    queued_weight: usize,
    reserved_count: usize,
    reserved_weight: usize,
    send_waiters: VecDeque<SendWaiter<T, W>>,
    /// How many of `send_waiters` are refused (waiting to be collected by
    /// their futures); they hold no place in the line.
    refused_waiters: usize,
    /// One past the id of the last waiting sender served. Senders are served
    /// strictly in id order, skipping only refused ones, so a registered
    /// sender whose id is below this was served, unless it was refused.
    served_below: u64,
    recv_waiters: VecDeque<(u64, W)>,
    drain_waiters: VecDeque<(u64, W)>,
    /// `Sender::closed()` futures, woken when the channel closes.
    close_waiters: VecDeque<(u64, W)>,
    next_id: u64,
    closed: bool,
    senders: usize,
    receivers: usize,
    marks: Option<Watermarks>,
    congested: bool,
    counters: Counters,
}

impl<T, W> Core<T, W> {
    /// A channel with one sender and one receiver. Arguments are validated by
    /// the builder (`capacity` in `1..=MAX_CAPACITY`, `max_weight >= 1`).
    pub(crate) fn new(capacity: usize, max_weight: usize, marks: Option<Watermarks>) -> Self {
        Self {
            queue: VecDeque::new(),
            capacity,
            max_weight,
            queued_weight: 0,
            reserved_count: 0,
            reserved_weight: 0,
            send_waiters: VecDeque::new(),
            refused_waiters: 0,
            served_below: 0,
            recv_waiters: VecDeque::new(),
            drain_waiters: VecDeque::new(),
            close_waiters: VecDeque::new(),
            next_id: 0,
            closed: false,
            senders: 1,
            receivers: 1,
            marks,
            congested: false,
            counters: Counters::default(),
            name: StdArc::from("channel"),
        }
    }

    /// Names the channel in its `tracing` events.
    pub(crate) fn named(mut self, name: StdArc<str>) -> Self {
        self.name = name;
        self
    }

    // ---- reads -------------------------------------------------------------

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
    pub(crate) fn weight(&self) -> usize {
        self.queued_weight
    }
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
    pub(crate) fn max_weight(&self) -> usize {
        self.max_weight
    }
    pub(crate) fn reserved(&self) -> usize {
        self.reserved_count
    }
    pub(crate) fn allocated(&self) -> usize {
        self.queue.capacity()
    }
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }
    pub(crate) fn is_congested(&self) -> bool {
        self.congested
    }
    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }
    pub(crate) fn waiting_senders(&self) -> usize {
        self.send_waiters.len() - self.refused_waiters
    }
    /// See the field: a waiting `send` (one slot, never refused) whose id
    /// is below this has been served.
    pub(crate) fn served_below(&self) -> u64 {
        self.served_below
    }
    pub(crate) fn waiting_receivers(&self) -> usize {
        self.recv_waiters.len()
    }
    pub(crate) fn marks_high(&self) -> Option<usize> {
        self.marks.map(|m| m.high)
    }

    /// Whether `count` more slots and `weight` more units fit right now.
    #[inline]
    fn fits(&self, count: usize, weight: usize) -> bool {
        self.queue.len() + self.reserved_count + count <= self.capacity
            && self
                .queued_weight
                .saturating_add(self.reserved_weight)
                .saturating_add(weight)
                <= self.max_weight
    }

    /// Whether a sender that can still be served is waiting: a newcomer must
    /// queue behind it. Refused waiters do not count: they only wait for
    /// their futures to collect them.
    #[inline]
    fn live_waiters(&self) -> bool {
        self.send_waiters.len() > self.refused_waiters
    }

    /// Whether the request could ever fit (with nothing queued or reserved).
    fn possible(&self, count: usize, weight: usize) -> bool {
        count <= self.capacity && weight <= self.max_weight
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ---- queue primitives --------------------------------------------------

    #[inline]
    fn push(&mut self, value: T, weight: usize, wake: &mut WakeList<W>) {
        self.queue.push_back(Slot { value, weight });
        self.queued_weight = self.queued_weight.saturating_add(weight);
        self.counters.sent += 1;
        let len = self.queue.len();
        if len > self.counters.peak_len {
            self.counters.peak_len = len;
        }
        if let Some(marks) = self.marks {
            if !self.congested && len >= marks.high {
                self.congested = true;
                tracing::debug!(channel = %self.name, len, high = marks.high, "channel congested");
            }
        }
        if let Some((_, w)) = self.recv_waiters.pop_front() {
            wake.push(w);
            shrink_waiters(&mut self.recv_waiters);
        }
    }

    /// After the queue shrank (receive or eviction): shrink storage, clear
    /// congestion, hand room to waiting senders.
    #[inline]
    fn after_pop(&mut self, wake: &mut WakeList<W>) {
        let len = self.queue.len();
        let cap = self.queue.capacity();
        // Memory returns after a burst: halve storage once it is three
        // quarters empty. Amortised O(1); the hysteresis avoids thrashing.
        if cap > MIN_RETAINED && len <= cap / 4 {
            self.queue.shrink_to((cap / 2).max(MIN_RETAINED));
        }
        if let Some(marks) = self.marks {
            if self.congested && len <= marks.low {
                self.congested = false;
                tracing::debug!(
                    channel = %self.name,
                    len,
                    low = marks.low,
                    "channel drained below low watermark"
                );
                for (_, w) in self.drain_waiters.drain(..) {
                    wake.push(w);
                }
            }
        }
        if self.closed && len == 0 && self.reserved_count == 0 {
            // The end: every receiver still waiting must see it.
            self.wake_end(wake);
        }
        // Nobody to hand room to (the common case): skip the walk.
        if self.live_waiters() {
            self.grant(wake);
        }
    }

    /// Hands free room to waiting senders, strictly in FIFO order.
    fn grant(&mut self, wake: &mut WakeList<W>) {
        if self.closed {
            return;
        }
        let mut i = 0;
        while i < self.send_waiters.len() {
            let w = &self.send_waiters[i];
            if w.refused {
                i += 1;
                continue;
            }
            if !self.fits(w.count, w.weight) {
                break;
            }
            let Some(mut w) = self.send_waiters.remove(i) else {
                break;
            };
            self.served_below = w.id + 1;
            wake.served = true;
            match w.value.take() {
                Some(v) => self.push(v, w.weight, wake),
                None => {
                    self.reserved_count += w.count;
                    self.reserved_weight = self.reserved_weight.saturating_add(w.weight);
                }
            }
            if let Some(waker) = w.waker.take() {
                wake.push(waker);
            }
        }
        shrink_waiters(&mut self.send_waiters);
    }

    fn find_sender(&self, id: u64) -> Result<usize, usize> {
        self.send_waiters.binary_search_by_key(&id, |w| w.id)
    }

    // ---- sending -----------------------------------------------------------

    /// Queues `value` if there is room and nobody is waiting ahead.
    #[inline]
    pub(crate) fn try_send(
        &mut self,
        value: T,
        weight: usize,
        wake: &mut WakeList<W>,
    ) -> Result<(), Refused<T>> {
        if self.closed {
            return Err(Refused::Closed(value));
        }
        if weight > self.max_weight {
            return Err(Refused::TooHeavy(value));
        }
        if self.live_waiters() || !self.fits(1, weight) {
            return Err(Refused::Full(value));
        }
        self.push(value, weight, wake);
        Ok(())
    }

    /// Queues `value`, evicting the oldest queued values until it fits.
    /// Evicted values are passed to `evicted`, oldest first. Refuses
    /// (`Full`) without evicting anything when even an empty queue could not
    /// take it because reserve permits hold the room.
    pub(crate) fn force_send(
        &mut self,
        value: T,
        weight: usize,
        mut evicted: impl FnMut(T),
        wake: &mut WakeList<W>,
    ) -> Result<(), Refused<T>> {
        if self.closed {
            return Err(Refused::Closed(value));
        }
        if weight > self.max_weight {
            return Err(Refused::TooHeavy(value));
        }
        let room_if_empty = self.reserved_count < self.capacity
            && self.reserved_weight.saturating_add(weight) <= self.max_weight;
        if !room_if_empty {
            return Err(Refused::Full(value));
        }
        let mut any = false;
        while !self.fits(1, weight) {
            let Some(slot) = self.queue.pop_front() else {
                break;
            };
            self.queued_weight -= slot.weight;
            self.counters.evicted += 1;
            any = true;
            evicted(slot.value);
        }
        self.push(value, weight, wake);
        if any {
            let len = self.queue.len();
            let cap = self.queue.capacity();
            if cap > MIN_RETAINED && len <= cap / 4 {
                self.queue.shrink_to((cap / 2).max(MIN_RETAINED));
            }
            // Evicting several light values for a heavy one can leave room
            // that a waiting sender fits in.
            self.grant(wake);
        }
        Ok(())
    }

    /// Registers a waiting sender (`value: Some`) or reservation (`None`)
    /// at the back of the FIFO. Call only after the matching `try_*` failed
    /// with `Full`.
    pub(crate) fn register_send(
        &mut self,
        value: Option<T>,
        count: usize,
        weight: usize,
        waker: W,
    ) -> u64 {
        let id = self.take_id();
        self.send_waiters.push_back(SendWaiter {
            id,
            value,
            count,
            weight,
            refused: false,
            waker: Some(waker),
        });
        id
    }

    /// Looks at a registered sender. `waker` replaces the stored one while
    /// it keeps waiting.
    pub(crate) fn poll_send(
        &mut self,
        id: u64,
        waker: impl FnOnce(&mut Option<W>),
        wake: &mut WakeList<W>,
    ) -> SendPoll<T> {
        let Ok(i) = self.find_sender(id) else {
            return SendPoll::Done;
        };
        if self.closed {
            let w = self.remove_sender(i, wake);
            return SendPoll::Closed(w.and_then(|w| w.value));
        }
        if self.send_waiters[i].refused {
            let w = self.remove_sender(i, wake);
            return SendPoll::TooMany(w.and_then(|w| w.value));
        }
        waker(&mut self.send_waiters[i].waker);
        SendPoll::Pending
    }

    /// A waiting sender gives up. Returns `Ok(value)` if it was still
    /// waiting (its value, if any, comes back), `Err(())` if it had already
    /// been served (value queued or room reserved: the caller owns that).
    /// Its waker goes to `stale` (see the module docs).
    pub(crate) fn cancel_send(
        &mut self,
        id: u64,
        wake: &mut WakeList<W>,
        stale: &mut Option<W>,
    ) -> Result<Option<T>, ()> {
        let Ok(i) = self.find_sender(id) else {
            return Err(());
        };
        Ok(self.remove_sender(i, wake).and_then(|mut w| {
            *stale = w.waker.take();
            w.value
        }))
    }

    /// Removes waiter `i` (cancelled, refused or closed) and re-runs the
    /// hand-off: whoever it blocked, or whoever a newcomer queued behind
    /// while it waited to be collected, may fit now.
    fn remove_sender(&mut self, i: usize, wake: &mut WakeList<W>) -> Option<SendWaiter<T, W>> {
        let w = self.send_waiters.remove(i)?;
        if w.refused {
            self.refused_waiters -= 1;
        }
        self.grant(wake);
        Some(w)
    }

    // ---- reserving ---------------------------------------------------------

    /// Reserves `count` slots and `weight` units if free and nobody waits.
    pub(crate) fn try_reserve(
        &mut self,
        count: usize,
        weight: usize,
    ) -> Result<(), ReserveRefused> {
        if self.closed {
            return Err(ReserveRefused::Closed);
        }
        if !self.possible(count, weight) {
            return Err(ReserveRefused::TooMany);
        }
        if self.live_waiters() || !self.fits(count, weight) {
            return Err(ReserveRefused::Full);
        }
        self.reserved_count += count;
        self.reserved_weight = self.reserved_weight.saturating_add(weight);
        Ok(())
    }

    /// Sends through one reserved slot of `reserved_weight` units. Never
    /// refuses: if no receiver is left the value is dropped (returned as
    /// `Some` so the caller drops it outside the lock).
    pub(crate) fn send_reserved(
        &mut self,
        value: T,
        reserved_weight: usize,
        weight: usize,
        wake: &mut WakeList<W>,
    ) -> Option<T> {
        self.reserved_count -= 1;
        self.reserved_weight -= reserved_weight;
        if self.receivers == 0 {
            self.wake_end(wake);
            return Some(value);
        }
        self.push(value, weight, wake);
        // A permit charged less than the value weighs: the difference may
        // have freed nothing; if it charged more, room came free.
        if weight < reserved_weight {
            self.grant(wake);
        }
        None
    }

    /// Returns unused reserved room.
    pub(crate) fn release(&mut self, count: usize, weight: usize, wake: &mut WakeList<W>) {
        self.reserved_count -= count;
        self.reserved_weight -= weight;
        if self.closed && self.reserved_count == 0 {
            self.wake_end(wake);
        }
        self.grant(wake);
    }

    // ---- receiving ---------------------------------------------------------

    /// Takes the oldest value.
    #[inline]
    pub(crate) fn try_recv(&mut self, wake: &mut WakeList<W>) -> Result<T, Empty> {
        match self.queue.pop_front() {
            Some(slot) => {
                self.queued_weight -= slot.weight;
                self.counters.received += 1;
                self.after_pop(wake);
                Ok(slot.value)
            }
            None if self.closed && self.reserved_count == 0 => Err(Empty::Closed),
            None => Err(Empty::Empty),
        }
    }

    /// Registers a waiting receiver or refreshes its waker. `id` is the
    /// receiver's previous registration, if any; returns the current one.
    /// A replaced waker goes to `stale` (see the module docs).
    pub(crate) fn register_recv(
        &mut self,
        id: Option<u64>,
        waker: W,
        stale: &mut Option<W>,
    ) -> u64 {
        if let Some(id) = id {
            if let Ok(i) = self.recv_waiters.binary_search_by_key(&id, |e| e.0) {
                *stale = Some(std::mem::replace(&mut self.recv_waiters[i].1, waker));
                return id;
            }
        }
        let id = self.take_id();
        self.recv_waiters.push_back((id, waker));
        id
    }

    /// A receiver stops waiting (got a value, or was cancelled). If it had
    /// been woken for a value it did not take, the wake-up is handed on.
    /// Returns its waker if it was still registered (see the module docs).
    #[must_use = "drop the waker after unlocking"]
    pub(crate) fn cancel_recv(&mut self, id: u64, wake: &mut WakeList<W>) -> Option<W> {
        match self.recv_waiters.binary_search_by_key(&id, |e| e.0) {
            Ok(i) => self.recv_waiters.remove(i).map(|(_, w)| w),
            Err(_) => {
                if !self.queue.is_empty() {
                    if let Some((_, w)) = self.recv_waiters.pop_front() {
                        wake.push(w);
                    }
                }
                None
            }
        }
    }

    /// Removes a receiver's registration after it took a value. Unlike
    /// `cancel_recv` it does not pass the wake-up on: it was used. Returns
    /// its waker, if still registered (see the module docs).
    #[must_use = "drop the waker after unlocking"]
    pub(crate) fn done_recv(&mut self, id: u64) -> Option<W> {
        let i = self.recv_waiters.binary_search_by_key(&id, |e| e.0).ok()?;
        self.recv_waiters.remove(i).map(|(_, w)| w)
    }

    // ---- watermarks --------------------------------------------------------

    /// `true` once the queue is not congested (or the channel is closed);
    /// otherwise registers/refreshes the waiter and returns its id. A
    /// replaced or removed waker goes to `stale` (see the module docs).
    pub(crate) fn poll_drained(
        &mut self,
        id: Option<u64>,
        waker: W,
        stale: &mut Option<W>,
    ) -> Result<(), u64> {
        if !self.congested || self.closed {
            if let Some(id) = id {
                *stale = self.cancel_drained(id);
            }
            return Ok(());
        }
        if let Some(id) = id {
            if let Ok(i) = self.drain_waiters.binary_search_by_key(&id, |e| e.0) {
                *stale = Some(std::mem::replace(&mut self.drain_waiters[i].1, waker));
                return Err(id);
            }
        }
        let id = self.take_id();
        self.drain_waiters.push_back((id, waker));
        Err(id)
    }

    /// Removes a `drained` registration; returns its waker (see the module
    /// docs).
    #[must_use = "drop the waker after unlocking"]
    pub(crate) fn cancel_drained(&mut self, id: u64) -> Option<W> {
        let i = self.drain_waiters.binary_search_by_key(&id, |e| e.0).ok()?;
        self.drain_waiters.remove(i).map(|(_, w)| w)
    }

    /// `Ok` once the channel is closed; otherwise registers/refreshes the
    /// waiter and returns its id. A replaced or removed waker goes to
    /// `stale` (see the module docs).
    pub(crate) fn poll_closed(
        &mut self,
        id: Option<u64>,
        waker: W,
        stale: &mut Option<W>,
    ) -> Result<(), u64> {
        if self.closed {
            if let Some(id) = id {
                *stale = self.cancel_closed(id);
            }
            return Ok(());
        }
        if let Some(id) = id {
            if let Ok(i) = self.close_waiters.binary_search_by_key(&id, |e| e.0) {
                *stale = Some(std::mem::replace(&mut self.close_waiters[i].1, waker));
                return Err(id);
            }
        }
        let id = self.take_id();
        self.close_waiters.push_back((id, waker));
        Err(id)
    }

    /// Removes a `closed` registration; returns its waker (see the module
    /// docs).
    #[must_use = "drop the waker after unlocking"]
    pub(crate) fn cancel_closed(&mut self, id: u64) -> Option<W> {
        let i = self.close_waiters.binary_search_by_key(&id, |e| e.0).ok()?;
        self.close_waiters.remove(i).map(|(_, w)| w)
    }

    pub(crate) fn senders(&self) -> usize {
        self.senders
    }

    pub(crate) fn receivers(&self) -> usize {
        self.receivers
    }

    // ---- lifecycle ---------------------------------------------------------

    fn wake_end(&mut self, wake: &mut WakeList<W>) {
        for (_, w) in self.recv_waiters.drain(..) {
            wake.push(w);
        }
    }

    /// Closes the channel: sends fail from now on, receivers drain what is
    /// queued. Returns `false` if it was already closed.
    pub(crate) fn close(&mut self, wake: &mut WakeList<W>) -> bool {
        if self.closed {
            return false;
        }
        self.closed = true;
        tracing::debug!(channel = %self.name, len = self.queue.len(), "channel closed");
        self.wake_end(wake);
        for w in &mut self.send_waiters {
            if let Some(waker) = w.waker.take() {
                wake.push(waker);
            }
        }
        for (_, w) in self.drain_waiters.drain(..) {
            wake.push(w);
        }
        for (_, w) in self.close_waiters.drain(..) {
            wake.push(w);
        }
        true
    }

    pub(crate) fn add_sender(&mut self) {
        self.senders += 1;
    }

    pub(crate) fn add_receiver(&mut self) {
        self.receivers += 1;
    }

    /// The last sender leaving closes the channel.
    pub(crate) fn drop_sender(&mut self, wake: &mut WakeList<W>) {
        self.senders -= 1;
        if self.senders == 0 {
            self.close(wake);
        }
    }

    /// The last receiver leaving closes the channel and gives back what was
    /// queued (nobody can receive it), for the caller to drop outside the lock.
    pub(crate) fn drop_receiver(&mut self, wake: &mut WakeList<W>) -> Vec<T> {
        self.receivers -= 1;
        if self.receivers > 0 {
            return Vec::new();
        }
        self.close(wake);
        self.queued_weight = 0;
        let left: Vec<T> = self.queue.drain(..).map(|s| s.value).collect();
        self.queue.shrink_to_fit();
        left
    }

    /// Changes the slot capacity (validated by the caller). Growing hands
    /// room to waiting senders; shrinking never drops queued values, it only
    /// makes senders wait longer, and refuses waiting reservations that can
    /// no longer fit.
    pub(crate) fn set_capacity(&mut self, capacity: usize, wake: &mut WakeList<W>) {
        tracing::debug!(
            channel = %self.name,
            from = self.capacity,
            to = capacity,
            "channel capacity changed"
        );
        self.capacity = capacity;
        for w in &mut self.send_waiters {
            if !w.refused && w.count > capacity {
                w.refused = true;
                self.refused_waiters += 1;
                if let Some(waker) = w.waker.take() {
                    wake.push(waker);
                }
            }
        }
        self.grant(wake);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    type C = Core<u32, u32>;

    fn woken(wl: &mut WakeList<u32>) -> Vec<u32> {
        let mut v = Vec::new();
        wl.drain(|w| v.push(w));
        v
    }

    #[test]
    fn wake_list_keeps_push_order_past_the_inline_slot() {
        let mut wl = WakeList::new();
        for i in 0..5u32 {
            wl.push(i);
        }
        assert_eq!(wl.len(), 5);
        assert_eq!(woken(&mut wl), [0, 1, 2, 3, 4]);
        assert_eq!(wl.len(), 0);
        wl.push(7);
        wl.push(8);
        assert_eq!(woken(&mut wl), [7, 8]);
    }

    #[test]
    fn served_below_passes_each_sender_as_it_is_served() {
        let mut c = C::new(1, usize::MAX, None);
        let mut wl = WakeList::new();
        c.try_send(0, 0, &mut wl).unwrap();
        let a = c.register_send(Some(1), 1, 0, 10);
        let b = c.register_send(Some(2), 1, 0, 11);
        assert!(c.served_below() <= a);
        assert_eq!(c.try_recv(&mut wl), Ok(0));
        assert!(wl.served);
        assert!(a < c.served_below() && c.served_below() <= b);
        assert_eq!(c.poll_send(a, |_| {}, &mut wl), SendPoll::Done);
        let mut wl = WakeList::new();
        assert_eq!(c.poll_send(b, |_| {}, &mut wl), SendPoll::Pending);
        assert!(!wl.served);
        assert_eq!(c.try_recv(&mut wl), Ok(1));
        assert!(wl.served && b < c.served_below());
    }

    #[test]
    fn served_below_skips_only_refused_reservations() {
        let mut c = C::new(2, usize::MAX, None);
        let mut wl = WakeList::new();
        c.try_send(0, 0, &mut wl).unwrap();
        c.try_send(1, 0, &mut wl).unwrap();
        let many = c.register_send(None, 2, 0, 10);
        let one = c.register_send(Some(2), 1, 0, 11);
        c.set_capacity(1, &mut wl);
        assert_eq!(c.try_recv(&mut wl), Ok(0));
        assert_eq!(c.try_recv(&mut wl), Ok(1));
        // The refused reservation was passed over, the send behind it served.
        assert!(one < c.served_below());
        assert!(matches!(
            c.poll_send(many, |_| {}, &mut wl),
            SendPoll::TooMany(None)
        ));
        assert_eq!(c.poll_send(one, |_| {}, &mut wl), SendPoll::Done);
    }

    #[test]
    fn fifo_and_full() {
        let mut c = C::new(2, usize::MAX, None);
        let mut wl = WakeList::new();
        c.try_send(1, 0, &mut wl).unwrap();
        c.try_send(2, 0, &mut wl).unwrap();
        assert_eq!(c.try_send(3, 0, &mut wl), Err(Refused::Full(3)));
        assert_eq!(c.try_recv(&mut wl), Ok(1));
        assert_eq!(c.try_recv(&mut wl), Ok(2));
        assert_eq!(c.try_recv(&mut wl), Err(Empty::Empty));
        assert_eq!(c.counters().sent, 2);
        assert_eq!(c.counters().received, 2);
        assert_eq!(c.counters().peak_len, 2);
    }

    #[test]
    fn weight_bounds_and_too_heavy() {
        let mut c = C::new(10, 10, None);
        let mut wl = WakeList::new();
        assert_eq!(c.try_send(1, 11, &mut wl), Err(Refused::TooHeavy(1)));
        c.try_send(1, 6, &mut wl).unwrap();
        assert_eq!(c.try_send(2, 5, &mut wl), Err(Refused::Full(2)));
        c.try_send(2, 4, &mut wl).unwrap();
        assert_eq!(c.weight(), 10);
        c.try_recv(&mut wl).unwrap();
        assert_eq!(c.weight(), 4);
    }

    #[test]
    fn waiting_senders_are_served_in_order_and_block_barging() {
        let mut c = C::new(1, usize::MAX, None);
        let mut wl = WakeList::new();
        c.try_send(0, 0, &mut wl).unwrap();
        let a = c.register_send(Some(1), 1, 0, 100);
        let b = c.register_send(Some(2), 1, 0, 200);
        assert_eq!(c.waiting_senders(), 2);
        assert_eq!(c.try_recv(&mut wl), Ok(0));
        // Room went to `a`; its value is queued and it is woken.
        assert_eq!(woken(&mut wl), vec![100]);
        assert_eq!(c.poll_send(a, |_| {}, &mut wl), SendPoll::Done);
        // A newcomer may not barge ahead of `b`.
        assert_eq!(c.try_recv(&mut wl), Ok(1));
        assert_eq!(woken(&mut wl), vec![200]);
        assert_eq!(c.try_send(9, 0, &mut wl), Err(Refused::Full(9)));
        assert_eq!(c.poll_send(b, |_| {}, &mut wl), SendPoll::Done);
        assert_eq!(c.try_recv(&mut wl), Ok(2));
    }

    #[test]
    fn cancelled_waiter_returns_value_and_unblocks_next() {
        let mut c = C::new(3, 10, None);
        let mut wl = WakeList::new();
        c.try_send(0, 8, &mut wl).unwrap();
        let big = c.register_send(Some(1), 1, 9, 1);
        let small = c.register_send(Some(2), 1, 2, 2);
        assert_eq!(c.cancel_send(big, &mut wl, &mut None), Ok(Some(1)));
        assert_eq!(woken(&mut wl), vec![2]);
        assert_eq!(c.poll_send(small, |_| {}, &mut wl), SendPoll::Done);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn close_returns_waiting_values_and_drains() {
        let mut c = C::new(1, usize::MAX, None);
        let mut wl = WakeList::new();
        c.try_send(7, 0, &mut wl).unwrap();
        let a = c.register_send(Some(8), 1, 0, 1);
        c.register_recv(None, 5, &mut None);
        assert!(c.close(&mut wl));
        assert!(!c.close(&mut wl));
        let mut w = woken(&mut wl);
        w.sort();
        assert_eq!(w, vec![1, 5]);
        assert_eq!(c.poll_send(a, |_| {}, &mut wl), SendPoll::Closed(Some(8)));
        assert_eq!(c.try_recv(&mut wl), Ok(7));
        assert_eq!(c.try_recv(&mut wl), Err(Empty::Closed));
        assert_eq!(c.try_send(1, 0, &mut wl), Err(Refused::Closed(1)));
    }

    #[test]
    fn force_send_evicts_oldest() {
        let mut c = C::new(2, usize::MAX, None);
        let mut wl = WakeList::new();
        let mut ev = Vec::new();
        c.force_send(1, 0, |v| ev.push(v), &mut wl).unwrap();
        c.force_send(2, 0, |v| ev.push(v), &mut wl).unwrap();
        assert!(ev.is_empty());
        c.force_send(3, 0, |v| ev.push(v), &mut wl).unwrap();
        assert_eq!(ev, vec![1]);
        assert_eq!(c.counters().evicted, 1);
        assert_eq!(c.try_recv(&mut wl), Ok(2));
        assert_eq!(c.try_recv(&mut wl), Ok(3));
    }

    #[test]
    fn force_send_weighted_evicts_until_it_fits() {
        let mut c = C::new(10, 10, None);
        let mut wl = WakeList::new();
        let mut ev = Vec::new();
        for i in 0..5 {
            c.try_send(i, 2, &mut wl).unwrap();
        }
        c.force_send(9, 5, |v| ev.push(v), &mut wl).unwrap();
        assert_eq!(ev, vec![0, 1, 2]);
        assert_eq!(c.weight(), 9);
    }

    #[test]
    fn force_send_refuses_when_permits_hold_all_room() {
        let mut c = C::new(1, usize::MAX, None);
        let mut wl = WakeList::new();
        let mut ev = Vec::new();
        c.try_reserve(1, 0).unwrap();
        assert_eq!(
            c.force_send(1, 0, |v| ev.push(v), &mut wl),
            Err(Refused::Full(1))
        );
        assert!(ev.is_empty());
    }

    #[test]
    fn reserve_and_release() {
        let mut c = C::new(2, usize::MAX, None);
        let mut wl = WakeList::new();
        assert_eq!(c.try_reserve(3, 0), Err(ReserveRefused::TooMany));
        c.try_reserve(2, 0).unwrap();
        assert_eq!(c.try_send(1, 0, &mut wl), Err(Refused::Full(1)));
        let w = c.register_send(Some(1), 1, 0, 3);
        assert_eq!(c.send_reserved(5, 0, 0, &mut wl), None);
        c.release(1, 0, &mut wl);
        assert_eq!(woken(&mut wl), vec![3]);
        assert_eq!(c.poll_send(w, |_| {}, &mut wl), SendPoll::Done);
        assert_eq!(c.try_recv(&mut wl), Ok(5));
        assert_eq!(c.try_recv(&mut wl), Ok(1));
    }

    #[test]
    fn end_waits_for_outstanding_permits() {
        let mut c = C::new(2, usize::MAX, None);
        let mut wl = WakeList::new();
        c.try_reserve(1, 0).unwrap();
        c.close(&mut wl);
        assert_eq!(c.try_recv(&mut wl), Err(Empty::Empty));
        assert_eq!(c.send_reserved(4, 0, 0, &mut wl), None);
        assert_eq!(c.try_recv(&mut wl), Ok(4));
        assert_eq!(c.try_recv(&mut wl), Err(Empty::Closed));
    }

    #[test]
    fn recv_wake_is_handed_on_when_cancelled() {
        let mut c = C::new(4, usize::MAX, None);
        let mut wl = WakeList::new();
        let a = c.register_recv(None, 1, &mut None);
        let _b = c.register_recv(None, 2, &mut None);
        c.try_send(1, 0, &mut wl).unwrap();
        assert_eq!(woken(&mut wl), vec![1]);
        assert_eq!(c.cancel_recv(a, &mut wl), None, "its waker was used");
        assert_eq!(woken(&mut wl), vec![2]);
    }

    /// Wakers replaced or removed without a wake-up come back to the
    /// caller, which drops them after unlocking, and are never woken.
    #[test]
    fn replaced_and_removed_wakers_come_back_unwoken() {
        let mut c = C::new(1, usize::MAX, Some(Watermarks { high: 1, low: 0 }));
        let mut wl = WakeList::new();
        let mut stale = None;
        let r = c.register_recv(None, 1, &mut stale);
        assert_eq!(c.register_recv(Some(r), 2, &mut stale), r);
        assert_eq!(stale.take(), Some(1));
        assert_eq!(c.cancel_recv(r, &mut wl), Some(2));
        let r = c.register_recv(None, 3, &mut stale);
        assert_eq!(c.done_recv(r), Some(3));
        c.try_send(0, 0, &mut wl).unwrap();
        let s = c.register_send(Some(1), 1, 0, 4);
        assert_eq!(
            c.poll_send(s, |w| stale = w.replace(5), &mut wl),
            SendPoll::Pending
        );
        assert_eq!(stale.take(), Some(4));
        assert_eq!(c.cancel_send(s, &mut wl, &mut stale), Ok(Some(1)));
        assert_eq!(stale.take(), Some(5));
        let d = c.poll_drained(None, 6, &mut stale).unwrap_err();
        assert_eq!(c.poll_drained(Some(d), 7, &mut stale), Err(d));
        assert_eq!(stale.take(), Some(6));
        assert_eq!(c.cancel_drained(d), Some(7));
        let k = c.poll_closed(None, 8, &mut stale).unwrap_err();
        assert_eq!(c.poll_closed(Some(k), 9, &mut stale), Err(k));
        assert_eq!(stale.take(), Some(8));
        assert_eq!(c.cancel_closed(k), Some(9));
        assert_eq!(wl.len(), 0, "nothing was woken");
    }

    #[test]
    fn watermarks_have_hysteresis() {
        let mut c = C::new(10, usize::MAX, Some(Watermarks { high: 4, low: 1 }));
        let mut wl = WakeList::new();
        for i in 0..4 {
            assert!(!c.is_congested());
            c.try_send(i, 0, &mut wl).unwrap();
        }
        assert!(c.is_congested());
        let id = c.poll_drained(None, 9, &mut None).unwrap_err();
        c.try_recv(&mut wl).unwrap();
        c.try_recv(&mut wl).unwrap();
        assert!(c.is_congested());
        assert_eq!(wl.len(), 0);
        c.try_recv(&mut wl).unwrap();
        assert!(!c.is_congested());
        assert_eq!(woken(&mut wl), vec![9]);
        let mut stale = None;
        assert_eq!(c.poll_drained(Some(id), 9, &mut stale), Ok(()));
        assert_eq!(stale, None, "woken: its waker was used");
    }

    #[test]
    fn storage_shrinks_after_burst() {
        let mut c = C::new(100_000, usize::MAX, None);
        let mut wl = WakeList::new();
        for i in 0..10_000 {
            c.try_send(i, 0, &mut wl).unwrap();
        }
        assert!(c.allocated() >= 10_000);
        while c.try_recv(&mut wl).is_ok() {}
        assert!(c.allocated() <= MIN_RETAINED, "{}", c.allocated());
    }

    #[test]
    fn waiter_lists_shrink_after_a_burst() {
        let mut c = C::new(1, usize::MAX, None);
        let mut wl = WakeList::new();
        c.try_send(0, 0, &mut wl).unwrap();
        for i in 0..1000 {
            c.register_send(Some(i), 1, 0, i);
        }
        assert!(c.send_waiters.capacity() >= 1000);
        while c.try_recv(&mut wl).is_ok() {}
        wl.drain(drop);
        assert_eq!(c.waiting_senders(), 0);
        assert!(c.send_waiters.capacity() <= MIN_RETAINED);
        let mut c = C::new(1, usize::MAX, None);
        let mut ids = Vec::new();
        for i in 0..1000 {
            ids.push(c.register_recv(None, i, &mut None));
        }
        for i in 0..1000 {
            c.try_send(i, 0, &mut wl).unwrap();
            c.try_recv(&mut wl).unwrap();
        }
        assert!(c.recv_waiters.capacity() <= MIN_RETAINED);
    }

    #[test]
    fn shrinking_capacity_refuses_oversized_reservations() {
        let mut c = C::new(4, usize::MAX, None);
        let mut wl = WakeList::new();
        c.try_send(0, 0, &mut wl).unwrap();
        let big = c.register_send(None, 4, 0, 1);
        let small = c.register_send(Some(5), 1, 0, 2);
        c.set_capacity(2, &mut wl);
        assert_eq!(woken(&mut wl), vec![1, 2]);
        assert_eq!(c.poll_send(small, |_| {}, &mut wl), SendPoll::Done);
        assert_eq!(c.poll_send(big, |_| {}, &mut wl), SendPoll::TooMany(None));
    }

    /// Issue 19, item 3: a refused reservation must not keep a later
    /// sender parked while there is room.
    #[test]
    fn refused_waiter_does_not_block_a_newcomer() {
        let mut c = C::new(3, usize::MAX, None);
        let mut wl = WakeList::new();
        c.try_send(0, 0, &mut wl).unwrap();
        let big = c.register_send(None, 3, 0, 1);
        c.set_capacity(2, &mut wl);
        assert_eq!(woken(&mut wl), vec![1]);
        // One of two slots is used: a send fits at once.
        assert_eq!(c.try_send(9, 0, &mut wl), Ok(()));
        assert_eq!(c.waiting_senders(), 0);
        assert_eq!(c.poll_send(big, |_| {}, &mut wl), SendPoll::TooMany(None));
        assert_eq!(c.len(), 2);
    }

    /// A sender that registered behind a refused waiter is served when the
    /// refused one is collected.
    #[test]
    fn collecting_a_refused_waiter_hands_room_on() {
        let mut c = C::new(3, usize::MAX, None);
        let mut wl = WakeList::new();
        c.try_send(0, 0, &mut wl).unwrap();
        let big = c.register_send(None, 3, 0, 1);
        let behind = c.register_send(Some(9), 1, 0, 2);
        // Shrinking refuses `big` and hands its place to `behind`.
        c.set_capacity(2, &mut wl);
        assert_eq!(woken(&mut wl), vec![1, 2]);
        assert_eq!(c.poll_send(behind, |_| {}, &mut wl), SendPoll::Done);
        // A second one arrives while `big` is still uncollected and room
        // is short: it waits, and collecting `big` must not strand it.
        let late = c.register_send(Some(10), 1, 0, 3);
        assert_eq!(c.try_recv(&mut wl), Ok(0));
        assert_eq!(woken(&mut wl), vec![3]);
        assert_eq!(c.poll_send(late, |_| {}, &mut wl), SendPoll::Done);
        assert_eq!(c.poll_send(big, |_| {}, &mut wl), SendPoll::TooMany(None));
        assert_eq!(c.waiting_senders(), 0);
    }

    /// Cancelling the first waiter that can still be served re-runs the
    /// hand-off even when a refused waiter stands before it.
    #[test]
    fn cancel_behind_a_refused_waiter_hands_room_on() {
        let mut c = C::new(4, usize::MAX, None);
        let mut wl = WakeList::new();
        c.try_send(0, 0, &mut wl).unwrap();
        let huge = c.register_send(None, 4, 0, 1);
        let big = c.register_send(None, 3, 0, 2);
        let small = c.register_send(Some(5), 1, 0, 3);
        c.set_capacity(3, &mut wl);
        assert_eq!(woken(&mut wl), vec![1]);
        // `big` (3 slots, 1 used) blocks `small`; cancel it.
        assert_eq!(c.cancel_send(big, &mut wl, &mut None), Ok(None));
        assert_eq!(woken(&mut wl), vec![3]);
        assert_eq!(c.poll_send(small, |_| {}, &mut wl), SendPoll::Done);
        assert_eq!(c.poll_send(huge, |_| {}, &mut wl), SendPoll::TooMany(None));
    }

    #[test]
    fn last_receiver_gone_returns_queue_and_closes() {
        let mut c = C::new(4, usize::MAX, None);
        let mut wl = WakeList::new();
        c.try_send(1, 0, &mut wl).unwrap();
        c.add_receiver();
        assert!(c.drop_receiver(&mut wl).is_empty());
        assert_eq!(c.drop_receiver(&mut wl), vec![1]);
        assert!(c.is_closed());
        assert_eq!(c.try_send(2, 0, &mut wl), Err(Refused::Closed(2)));
    }
}
