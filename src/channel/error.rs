//! The channel's errors. Every send error hands the caller's value back;
//! `Debug` does not need `T: Debug`; "not now" (`Full`, `Timeout`, `Empty`)
//! is distinct from "never" (`Closed`, `TooHeavy`, `TooMany`).

use std::fmt;

macro_rules! value_error {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $msg:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(PartialEq, Eq, Clone, Copy)]
        #[non_exhaustive]
        pub enum $name<T> {
            $( $(#[$vmeta])* $variant(T), )+
        }

        impl<T> $name<T> {
            /// Gives the value back.
            pub fn into_inner(self) -> T {
                match self {
                    $( Self::$variant(v) => v, )+
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $( Self::$variant(_) => f.write_str(concat!(stringify!($variant), "(..)")), )+
                }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $( Self::$variant(_) => f.write_str($msg), )+
                }
            }
        }

        impl<T> std::error::Error for $name<T> {}
    };
}

value_error! {
    /// Why [`Sender::send`](super::Sender::send) gave its value back.
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio_test_block_on(async {
    /// use flowguard::channel::{self, SendError};
    ///
    /// let (tx, rx) = channel::bounded::<u32>(4).unwrap();
    /// drop(rx);
    /// let err = tx.send(7).await.unwrap_err();
    /// assert_eq!(err, SendError::Closed(7));
    /// assert_eq!(err.into_inner(), 7);
    /// # });
    /// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// ```
    SendError {
        /// The channel is closed (by `close()`, or every receiver is gone).
        Closed => "sending on a closed channel",
        /// The value weighs more than `max_weight`; it could never fit.
        TooHeavy => "value weighs more than the channel's max_weight",
    }
}

value_error! {
    /// Why [`Sender::try_send`](super::Sender::try_send) or
    /// [`Sender::force_send`](super::Sender::force_send) gave its value back.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::channel::{self, TrySendError};
    ///
    /// let (tx, _rx) = channel::bounded::<u32>(1).unwrap();
    /// tx.try_send(1).unwrap();
    /// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    /// ```
    TrySendError {
        /// No room now (or senders are waiting ahead); retry later.
        Full => "channel is full",
        /// The channel is closed (by `close()`, or every receiver is gone).
        Closed => "sending on a closed channel",
        /// The value weighs more than `max_weight`; it could never fit.
        TooHeavy => "value weighs more than the channel's max_weight",
    }
}

value_error! {
    /// Why [`Sender::send_timeout`](super::Sender::send_timeout) gave its
    /// value back.
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio_test_block_on(async {
    /// use std::time::Duration;
    /// use flowguard::channel::{self, SendTimeoutError};
    ///
    /// let (tx, _rx) = channel::bounded::<u32>(1).unwrap();
    /// tx.send(1).await.unwrap();
    /// let err = tx.send_timeout(2, Duration::from_secs(1)).await.unwrap_err();
    /// assert_eq!(err, SendTimeoutError::Timeout(2));
    /// # });
    /// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true)
    /// #         .build().unwrap().block_on(f)
    /// # }
    /// ```
    SendTimeoutError {
        /// No room came free before the deadline.
        Timeout => "timed out waiting for room in the channel",
        /// The channel is closed (by `close()`, or every receiver is gone).
        Closed => "sending on a closed channel",
        /// The value weighs more than `max_weight`; it could never fit.
        TooHeavy => "value weighs more than the channel's max_weight",
    }
}

impl<T> From<SendError<T>> for SendTimeoutError<T> {
    fn from(e: SendError<T>) -> Self {
        match e {
            SendError::Closed(v) => Self::Closed(v),
            SendError::TooHeavy(v) => Self::TooHeavy(v),
        }
    }
}

/// Why a reservation failed (`reserve`, `reserve_many`).
///
/// # Examples
///
/// ```
/// # tokio_test_block_on(async {
/// use flowguard::channel::{self, ReserveError};
///
/// let (tx, _rx) = channel::bounded::<u32>(4).unwrap();
/// assert_eq!(tx.reserve_many(5).await.unwrap_err(), ReserveError::TooMany);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum ReserveError {
    /// The channel is closed.
    Closed,
    /// More slots were asked for than the capacity; it could never succeed.
    TooMany,
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "reserving on a closed channel",
            Self::TooMany => "reservation larger than the channel's capacity",
        })
    }
}

impl std::error::Error for ReserveError {}

/// Why a non-waiting reservation failed (`try_reserve`, `try_reserve_many`).
///
/// # Examples
///
/// ```
/// use flowguard::channel::{self, TryReserveError};
///
/// let (tx, _rx) = channel::bounded::<u32>(1).unwrap();
/// let _permit = tx.try_reserve().unwrap();
/// assert_eq!(tx.try_reserve().unwrap_err(), TryReserveError::Full);
/// ```
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum TryReserveError {
    /// No room now; retry later.
    Full,
    /// The channel is closed.
    Closed,
    /// More slots were asked for than the capacity; it could never succeed.
    TooMany,
}

impl fmt::Display for TryReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "channel is full",
            Self::Closed => "reserving on a closed channel",
            Self::TooMany => "reservation larger than the channel's capacity",
        })
    }
}

impl std::error::Error for TryReserveError {}

/// Why [`Receiver::try_recv`](super::Receiver::try_recv) returned nothing.
///
/// # Examples
///
/// ```
/// use flowguard::channel::{self, TryRecvError};
///
/// let (tx, rx) = channel::bounded::<u32>(1).unwrap();
/// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
/// drop(tx);
/// assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
/// ```
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing queued now; more may come.
    Empty,
    /// Closed and drained: nothing will ever come.
    Closed,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "channel is empty",
            Self::Closed => "channel is closed and drained",
        })
    }
}

impl std::error::Error for TryRecvError {}

/// Why [`Receiver::recv_timeout`](super::Receiver::recv_timeout) returned nothing.
///
/// # Examples
///
/// ```
/// # tokio_test_block_on(async {
/// use std::time::Duration;
/// use flowguard::channel::{self, RecvTimeoutError};
///
/// let (_tx, rx) = channel::bounded::<u32>(1).unwrap();
/// let err = rx.recv_timeout(Duration::from_secs(1)).await.unwrap_err();
/// assert_eq!(err, RecvTimeoutError::Timeout);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true)
/// #         .build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// Nothing arrived before the deadline.
    Timeout,
    /// Closed and drained: nothing will ever come.
    Closed,
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Timeout => "timed out waiting for a value",
            Self::Closed => "channel is closed and drained",
        })
    }
}

impl std::error::Error for RecvTimeoutError {}
