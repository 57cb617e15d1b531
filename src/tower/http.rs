//! Refusals as HTTP responses, and the HTTP pieces the layers use.

use std::error::Error;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use super::{BoxError, Classify, Refusal};
use crate::breaker::Outcome;

/// The `Retry-After` sent with a 503 when the layer knows no time (load
/// shed, a half-open breaker with every probe slot taken, a forced-open
/// breaker): one second.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

impl Refusal {
    /// The HTTP status for this refusal: 429 Too Many Requests when rate
    /// limited, 504 Gateway Timeout when timed out, 503 Service
    /// Unavailable otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::tower::Refusal;
    /// use http::StatusCode;
    ///
    /// assert_eq!(Refusal::Overloaded.status(), StatusCode::SERVICE_UNAVAILABLE);
    /// assert_eq!(Refusal::TimedOut.status(), StatusCode::GATEWAY_TIMEOUT);
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            Self::Overloaded | Self::BreakerOpen { .. } | Self::Closed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The `Retry-After` this refusal's response carries, in whole seconds
    /// rounded up: the layer's `retry_after` when it has one; for a 503
    /// without one (load shed, a breaker with no known time),
    /// [`DEFAULT_RETRY_AFTER`]; none for a timeout, a closed semaphore, or
    /// a rate-limit request that can never fit.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::tower::Refusal;
    /// use std::time::Duration;
    ///
    /// let r = Refusal::BreakerOpen { retry_after: Some(Duration::from_millis(2001)) };
    /// assert_eq!(r.retry_after_secs(), Some(3));
    /// assert_eq!(Refusal::Overloaded.retry_after_secs(), Some(1));
    /// assert_eq!(Refusal::TimedOut.retry_after_secs(), None);
    /// ```
    pub fn retry_after_secs(&self) -> Option<u64> {
        let wait = match self {
            Self::RateLimited { retry_after } => *retry_after,
            Self::BreakerOpen { retry_after } => Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
            Self::Overloaded => Some(DEFAULT_RETRY_AFTER),
            Self::TimedOut | Self::Closed => None,
        }?;
        let secs = wait.as_secs();
        Some(if wait.subsec_nanos() > 0 {
            secs.saturating_add(1)
        } else {
            secs
        })
    }

    /// This refusal as an HTTP response: [`status`](Self::status), a
    /// `Retry-After` header as [`retry_after_secs`](Self::retry_after_secs)
    /// says, and a one-line plain-text body.
    ///
    /// `B` is any body type that can be made from a `&'static str`
    /// (`String`, `axum::body::Body`, `http_body_util::Full<Bytes>`, …).
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::tower::Refusal;
    /// use std::time::Duration;
    ///
    /// let resp = Refusal::RateLimited { retry_after: Some(Duration::from_millis(300)) }
    ///     .to_response::<String>();
    /// assert_eq!(resp.status(), 429);
    /// assert_eq!(resp.headers()["retry-after"], "1");
    /// assert_eq!(resp.body(), "rate limited\n");
    /// ```
    pub fn to_response<B: From<&'static str>>(&self) -> Response<B> {
        let body = match self {
            Self::RateLimited { .. } => "rate limited\n",
            Self::Overloaded => "overloaded\n",
            Self::BreakerOpen { .. } => "circuit breaker open\n",
            Self::TimedOut => "timed out\n",
            Self::Closed => "closed\n",
        };
        let mut resp = Response::new(B::from(body));
        *resp.status_mut() = self.status();
        if let Some(secs) = self.retry_after_secs() {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The HTTP response for an error from a stack of these layers: the
/// [`Refusal`]'s response when `err` is or wraps one (429, 503 or 504,
/// see [`Refusal::to_response`]), otherwise 500 Internal Server Error
/// with a body that says nothing about the error.
///
/// # Examples
///
/// ```
/// use flowguard::tower::{BoxError, Refusal, error_response};
///
/// let err: BoxError = Refusal::Overloaded.into();
/// let resp = error_response::<String>(&*err);
/// assert_eq!(resp.status(), 503);
/// assert_eq!(resp.headers()["retry-after"], "1");
///
/// let err: BoxError = "database on fire".into();
/// assert_eq!(error_response::<String>(&*err).status(), 500);
/// ```
pub fn error_response<B: From<&'static str>>(err: &(dyn Error + 'static)) -> Response<B> {
    match Refusal::find(err) {
        Some(r) => r.to_response(),
        None => {
            let mut resp = Response::new(B::from("internal server error\n"));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    }
}

/// [`error_response`] in the shape axum's `HandleErrorLayer` takes, so a
/// stack of these layers can sit on an axum `Router` (whose services may
/// not fail): `HandleErrorLayer::new(flowguard::tower::handle_error)`.
/// `http::Response<String>` is an axum `IntoResponse`.
///
/// # Cancel safety
///
/// Ready at its first poll; dropping it loses nothing.
///
/// # Examples
///
/// ```
/// use flowguard::tower::{BoxError, Refusal, handle_error};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let resp = handle_error(Refusal::TimedOut.into()).await;
/// assert_eq!(resp.status(), 504);
/// # }
/// ```
pub async fn handle_error(err: BoxError) -> Response<String> {
    error_response(&*err)
}

/// The delay in a `Retry-After` header given in seconds (`Retry-After:
/// 120`), for a retry hook that honours what a downstream 429 or 503
/// asked. `None` when there is no such header or it holds an HTTP date.
///
/// # Examples
///
/// ```
/// use flowguard::tower::parse_retry_after;
/// use std::time::Duration;
///
/// let mut headers = http::HeaderMap::new();
/// assert_eq!(parse_retry_after(&headers), None);
/// headers.insert("retry-after", "7".parse().unwrap());
/// assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(7)));
/// ```
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    v.parse::<u64>().ok().map(Duration::from_secs)
}

/// A breaker classifier for HTTP: an error or a 5xx response is a failure,
/// anything else (4xx included: the caller's fault, not the backend's) a
/// success.
///
/// # Examples
///
/// ```
/// use flowguard::breaker::Outcome;
/// use flowguard::tower::{Classify, ServerErrors};
///
/// let ok = http::Response::new(());
/// let mut bad = http::Response::new(());
/// *bad.status_mut() = http::StatusCode::BAD_GATEWAY;
/// assert_eq!(ServerErrors.classify(Ok::<_, &()>(&ok)), Outcome::Success);
/// assert_eq!(ServerErrors.classify(Ok::<_, &()>(&bad)), Outcome::Failure);
/// assert_eq!(ServerErrors.classify(Err::<&http::Response<()>, _>(&())), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerErrors;

impl<B, E> Classify<Response<B>, E> for ServerErrors {
    fn classify(&self, outcome: Result<&Response<B>, &E>) -> Outcome {
        match outcome {
            Ok(resp) if !resp.status().is_server_error() => Outcome::Success,
            _ => Outcome::Failure,
        }
    }
}
