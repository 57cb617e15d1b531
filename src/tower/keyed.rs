//! A rate limit per key of the request, on a [`KeyedRateLimiter`].

use std::fmt;
use std::hash::Hash;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::BoxError;
use super::future::ResponseFuture;
use super::rate::rate_refusal;
use crate::clock::{Clock, FastClock};
use crate::rate::KeyedRateLimiter;

/// Applies [`KeyedRateLimit`]: one token per request from the bucket of
/// the request's key, as `key_of` reads it (the client's address, an API
/// key, a tenant); a key out of tokens is refused with
/// [`Refusal::RateLimited`](super::Refusal::RateLimited) and its exact
/// `retry_after` (a 429 with `Retry-After`), while other keys go on.
/// Buckets are shared by every service this layer makes and their clones.
///
/// The limiter caps the number of keys it holds (idle keys are evicted);
/// see [`KeyedRateLimiter`].
///
/// # Examples
///
/// ```
/// use flowguard::rate::{KeyedRateLimiter, Quota};
/// use flowguard::tower::KeyedRateLimitLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = KeyedRateLimiter::new(Quota::per_minute(1).unwrap());
/// let layer = KeyedRateLimitLayer::new(limiter, |req: &(&str, u32)| req.0.to_owned());
/// let svc = layer.layer(service_fn(|(_, n): (&str, u32)| async move { Ok::<_, std::io::Error>(n) }));
/// assert_eq!(svc.clone().oneshot(("alice", 1)).await.unwrap(), 1);
/// assert!(svc.clone().oneshot(("alice", 2)).await.is_err()); // alice is out
/// assert_eq!(svc.oneshot(("bob", 3)).await.unwrap(), 3); // bob is not
/// # }
/// ```
pub struct KeyedRateLimitLayer<K, F, C: Clock = FastClock> {
    limiter: KeyedRateLimiter<K, C>,
    key_of: F,
}

impl<K, F, C> KeyedRateLimitLayer<K, F, C>
where
    K: Hash + Eq + Clone,
    C: Clock,
{
    /// A layer taking each request's key from `key_of`.
    pub fn new<Req>(limiter: KeyedRateLimiter<K, C>, key_of: F) -> Self
    where
        F: Fn(&Req) -> K,
    {
        Self { limiter, key_of }
    }

    /// The limiter (for its snapshot).
    pub fn limiter(&self) -> &KeyedRateLimiter<K, C> {
        &self.limiter
    }
}

impl<K, F: Clone, C: Clock> Clone for KeyedRateLimitLayer<K, F, C> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            key_of: self.key_of.clone(),
        }
    }
}

impl<K, F, C: Clock> fmt::Debug for KeyedRateLimitLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, K, F: Clone, C: Clock> Layer<S> for KeyedRateLimitLayer<K, F, C> {
    type Service = KeyedRateLimit<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimit {
            inner,
            limiter: self.limiter.clone(),
            key_of: self.key_of.clone(),
        }
    }
}

/// Takes one token from the request's key's bucket in `call`, the first
/// moment the key is known.
///
/// * **`poll_ready`** is the inner service's: backpressure from below
///   passes through unchanged.
/// * **`call`** reads the key and takes a token: with one, it calls the
///   inner service; without, it answers
///   [`Refusal::RateLimited`](super::Refusal::RateLimited) at once. The
///   inner service was made ready for that request and is not called: what
///   its `poll_ready` reserved (a [`ConcurrencyLimit`](super::ConcurrencyLimit)'s
///   permit) stays with it until its next call or its drop. axum clones
///   a route's service for each request and drops the clone after `call`,
///   so there the reservation ends with the refusal (the refused request
///   did wait for it, though, if capacity below was short). Layers that
///   reserve capacity are best placed above this one: then a refusal
///   holds their permit only until its response future completes, at once.
/// * **Clone**: shares the buckets.
///
/// # Cancel safety
///
/// The token is taken in `call`; dropping the response future does not
/// refund it (the request was sent).
///
/// # Examples
///
/// ```
/// use flowguard::rate::{KeyedRateLimiter, Quota};
/// use flowguard::tower::{KeyedRateLimitLayer, Refusal};
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = KeyedRateLimiter::new(Quota::per_second(10).unwrap().with_burst(1).unwrap());
/// let svc = KeyedRateLimitLayer::new(limiter, |ip: &[u8; 4]| *ip)
///     .layer(service_fn(|_ip: [u8; 4]| async { Ok::<_, std::io::Error>("hello") }));
/// svc.clone().oneshot([10, 0, 0, 1]).await.unwrap();
/// let err = svc.oneshot([10, 0, 0, 1]).await.unwrap_err();
/// let refusal = Refusal::find(&*err).unwrap();
/// assert_eq!(refusal.retry_after(), Some(Duration::from_millis(100)));
/// # }
/// ```
pub struct KeyedRateLimit<S, K, F, C: Clock = FastClock> {
    inner: S,
    limiter: KeyedRateLimiter<K, C>,
    key_of: F,
}

impl<S, K, F, C: Clock> KeyedRateLimit<S, K, F, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, K, F, C, Req> Service<Req> for KeyedRateLimit<S, K, F, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    F: Fn(&Req) -> K,
    C: Clock,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, ()>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.key_of)(&req);
        match self.limiter.try_acquire(&key, 1) {
            Ok(()) => ResponseFuture::running(self.inner.call(req), ()),
            Err(e) => ResponseFuture::failed(rate_refusal(e, self.limiter.clock().now())),
        }
    }
}

impl<S: Clone, K, F: Clone, C: Clock> Clone for KeyedRateLimit<S, K, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            key_of: self.key_of.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F, C: Clock> fmt::Debug for KeyedRateLimit<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}
