//! Why a round trip to Redis failed.

use std::error::Error;
use std::fmt;

/// What went wrong talking to Redis, in one word.
///
/// [`TryAcquireError::Unavailable`](crate::rate::TryAcquireError::Unavailable)
/// and [`AcquireError::Unavailable`](crate::rate::AcquireError::Unavailable)
/// carry it under the fail-closed policy; [`RedisError`] carries it with the
/// details.
///
/// # Examples
///
/// ```
/// use flowguard::rate::RedisErrorKind;
///
/// assert_eq!(RedisErrorKind::Timeout.to_string(), "redis call timed out");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RedisErrorKind {
    /// No connection: refused, dropped, reset, or still being re-established.
    Connection,
    /// No answer within the call timeout (a slow or blocked server, a lost
    /// packet). The script may still have run.
    Timeout,
    /// Redis answered with an error (`OOM`, `BUSY`, `READONLY`, `WRONGTYPE`,
    /// a key that holds something else, …).
    Server,
    /// The answer did not fit the script's contract.
    Protocol,
}

impl RedisErrorKind {
    pub(crate) fn as_u8(self) -> u8 {
        match self {
            Self::Connection => 1,
            Self::Timeout => 2,
            Self::Server => 3,
            Self::Protocol => 4,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            2 => Self::Timeout,
            3 => Self::Server,
            4 => Self::Protocol,
            _ => Self::Connection,
        }
    }
}

impl fmt::Display for RedisErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connection => "no connection to redis",
            Self::Timeout => "redis call timed out",
            Self::Server => "redis answered with an error",
            Self::Protocol => "unexpected reply from redis",
        })
    }
}

/// A failed round trip to Redis: its [`kind`](RedisError::kind) and what
/// the client or server said.
///
/// Returned by [`RedisRateLimiter::ping`](crate::rate::RedisRateLimiter::ping);
/// the acquire paths carry only the [`RedisErrorKind`] (their error types are
/// `Copy`) and log the details with `tracing`.
///
/// # Examples
///
/// ```
/// use flowguard::rate::{RedisClient, RedisErrorKind, RedisRateLimiter, Quota};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // Nothing listens on port 1.
/// let client = RedisClient::open("redis://127.0.0.1:1/").unwrap();
/// let limiter = RedisRateLimiter::builder(client, "doc:ping", Quota::per_second(5).unwrap())
///     .call_timeout(Duration::from_millis(200))
///     .build()
///     .unwrap();
/// let err = limiter.ping().await.unwrap_err();
/// assert!(matches!(err.kind(), RedisErrorKind::Connection | RedisErrorKind::Timeout));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisError {
    kind: RedisErrorKind,
    detail: String,
}

impl RedisError {
    pub(crate) fn new(kind: RedisErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    /// What went wrong, in one word.
    pub fn kind(&self) -> RedisErrorKind {
        self.kind
    }

    /// The client's or server's words.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl From<::redis::RedisError> for RedisError {
    fn from(e: ::redis::RedisError) -> Self {
        let kind = if e.is_timeout() {
            RedisErrorKind::Timeout
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            RedisErrorKind::Connection
        } else {
            match e.kind() {
                ::redis::ErrorKind::Parse | ::redis::ErrorKind::UnexpectedReturnType => {
                    RedisErrorKind::Protocol
                }
                ::redis::ErrorKind::Server(_) | ::redis::ErrorKind::Extension => {
                    RedisErrorKind::Server
                }
                _ => RedisErrorKind::Connection,
            }
        };
        Self::new(kind, e.to_string())
    }
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl Error for RedisError {}
