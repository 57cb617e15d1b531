//! A concurrency limit on a [`Semaphore`], with backpressure.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
use super::{BoxError, NotReady, Refusal};
use crate::ConfigError;
use crate::semaphore::{AcquireError, AcquireOwned, OwnedPermit, Semaphore};

/// Applies [`ConcurrencyLimit`]: at most `max` requests in flight across
/// every service this layer makes and all their clones (one semaphore for
/// the layer, unlike tower's `ConcurrencyLimitLayer`, which makes one per
/// `layer` call).
///
/// # Examples
///
/// ```
/// use flowguard::tower::ConcurrencyLimitLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = ConcurrencyLimitLayer::new(8).unwrap();
/// let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n * 2) }));
/// assert_eq!(svc.oneshot(21).await.unwrap(), 42);
/// assert_eq!(layer.semaphore().available(), 8);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer {
    semaphore: Semaphore,
}

impl ConcurrencyLimitLayer {
    /// A limit of `max` requests in flight, on a new semaphore.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `max` when it is 0 (nothing could ever run)
    /// or above [`MAX_PERMITS`](crate::semaphore::MAX_PERMITS).
    pub fn new(max: usize) -> Result<Self, ConfigError> {
        if max == 0 {
            return Err(ConfigError::new(
                "concurrency limit",
                "max",
                crate::ConfigErrorKind::Zero,
                "must be at least 1 (nothing could ever run)",
            ));
        }
        Semaphore::try_new(max)
            .map(Self::with_semaphore)
            .map_err(|e| {
                ConfigError::new("concurrency limit", "max", e.kind(), e.reason().to_owned())
            })
    }

    /// A limit on `semaphore`, shared with whoever else holds it (one
    /// permit per request; resize it live with
    /// [`Semaphore::set_capacity`]).
    pub fn with_semaphore(semaphore: Semaphore) -> Self {
        Self { semaphore }
    }

    /// The semaphore (for its metrics, or to resize it).
    pub fn semaphore(&self) -> &Semaphore {
        &self.semaphore
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            semaphore: self.semaphore.clone(),
            state: State::Idle,
            acquiring: None,
        }
    }
}

/// Lets at most the semaphore's capacity of requests run at once; the rest
/// wait, in FIFO order, in `poll_ready`.
///
/// * **`poll_ready`** first waits for a permit (the service is not ready
///   while the limit is reached, so backpressure reaches the caller), then
///   polls the inner service. The permit is held by this service value
///   until `call` moves it into the response future.
/// * **The response future** holds the permit until it completes (the
///   permit is released then, even if the future is kept) or is dropped.
/// * **Drop**: a service dropped while holding a permit (made ready, never
///   called) gives it back; one dropped while waiting leaves the queue.
/// * **Clone**: a clone shares the semaphore and starts with no permit.
///
/// A semaphore resized to 0 makes `poll_ready` ready at once and `call`
/// answer [`Refusal::Overloaded`]; a closed one, [`Refusal::Closed`].
///
/// # Cancel safety
///
/// Every way of stopping early gives the permit back: dropping the service
/// while waiting or while holding a permit, dropping the response future.
///
/// # Examples
///
/// ```
/// use flowguard::tower::ConcurrencyLimitLayer;
/// use std::task::{Context, Poll, Waker};
/// use tower::{Layer, Service, service_fn};
///
/// let layer = ConcurrencyLimitLayer::new(1).unwrap();
/// let inner = service_fn(|()| async { Ok::<_, std::io::Error>(()) });
/// let (mut a, mut b) = (layer.layer(inner), layer.layer(inner));
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(a.poll_ready(&mut cx).is_ready()); // a holds the only permit
/// assert!(b.poll_ready(&mut cx).is_pending()); // b waits for it
/// drop(a); // made ready, never called: the permit goes to b
/// assert!(b.poll_ready(&mut cx).is_ready());
/// ```
pub struct ConcurrencyLimit<S> {
    inner: S,
    semaphore: Semaphore,
    state: State,
    /// The wait for a permit, when none was free. Beside `state`, not in
    /// it: the waiter is large, and an enum holding it made every call
    /// move and drop that size on the fast path (280 against 233
    /// instructions per call for `LoadShed`, whose state has no waiter).
    acquiring: Option<AcquireOwned>,
}

enum State {
    Idle,
    Ready(OwnedPermit),
    Refused(Refusal),
}

impl<S> ConcurrencyLimit<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The semaphore this service takes its permits from.
    pub fn semaphore(&self) -> &Semaphore {
        &self.semaphore
    }
}

pub(super) fn refusal_of(e: AcquireError) -> Refusal {
    match e {
        AcquireError::Closed => Refusal::Closed,
        _ => Refusal::Overloaded,
    }
}

impl<S, Req> Service<Req> for ConcurrencyLimit<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, OwnedPermit>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            if let State::Ready(_) = self.state {
                return self.inner.poll_ready(cx).map_err(Into::into);
            }
            match &mut self.acquiring {
                Some(acquire) => {
                    let got = std::task::ready!(Pin::new(acquire).poll(cx));
                    self.acquiring = None;
                    match got {
                        Ok(permit) => self.state = State::Ready(permit),
                        Err(e) => {
                            self.state = State::Refused(refusal_of(e));
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
                // A free permit at once (it never passes a queued waiter:
                // the semaphore keeps returned permits for its queue); else
                // wait in the queue, which also answers every refusal.
                None => match self.semaphore.try_acquire_owned() {
                    Ok(permit) => self.state = State::Ready(permit),
                    Err(_) => {
                        self.state = State::Idle;
                        self.acquiring = Some(self.semaphore.acquire_owned());
                    }
                },
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Ready(permit) => ResponseFuture::running(self.inner.call(req), permit),
            State::Refused(r) => ResponseFuture::failed(r),
            State::Idle => {
                self.leave_queue();
                ResponseFuture::failed(NotReady)
            }
        }
    }
}

impl<S> ConcurrencyLimit<S> {
    /// Called while waiting (or never made ready): leave the queue, so that
    /// a service its owner stopped polling does not hold a permit back from
    /// the services behind it. Out of line: dropping the wait is a call
    /// into the semaphore that `call`'s common path never makes, and kept
    /// inline it cost that path about 8 ns (`tower/concurrency_limit`).
    #[cold]
    #[inline(never)]
    fn leave_queue(&mut self) {
        self.acquiring = None;
    }
}

impl<S: Clone> Clone for ConcurrencyLimit<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            semaphore: self.semaphore.clone(),
            state: State::Idle,
            acquiring: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for ConcurrencyLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Idle if self.acquiring.is_some() => "waiting for a permit",
            State::Idle => "idle",
            State::Ready(_) => "holding a permit",
            State::Refused(_) => "refused",
        };
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .field("semaphore", &self.semaphore)
            .field("state", &state)
            .finish()
    }
}
