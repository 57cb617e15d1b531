//! Load shedding: refuse at once when there is no capacity.

use std::fmt;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::concurrency::refusal_of;
use super::future::ResponseFuture;
use super::{BoxError, ConcurrencyLimitLayer, NotReady, Refusal};
use crate::ConfigError;
use crate::semaphore::{OwnedPermit, Semaphore};

/// Applies [`LoadShed`]: at most `max` requests in flight across every
/// service this layer makes and their clones; a request beyond that is
/// refused at once with [`Refusal::Overloaded`] (a 503), never queued.
///
/// # Examples
///
/// ```
/// use flowguard::tower::{LoadShedLayer, Refusal};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = LoadShedLayer::new(1).unwrap();
/// let svc = layer.layer(service_fn(|()| async { Ok::<_, std::io::Error>("done") }));
/// let held = layer.semaphore().try_acquire().unwrap(); // the one slot is busy
/// let err = svc.clone().oneshot(()).await.unwrap_err();
/// assert_eq!(Refusal::find(&*err), Some(&Refusal::Overloaded));
/// drop(held);
/// assert_eq!(svc.oneshot(()).await.unwrap(), "done");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LoadShedLayer {
    semaphore: Semaphore,
}

impl LoadShedLayer {
    /// At most `max` requests in flight, on a new semaphore.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `max` when it is 0 or above
    /// [`MAX_PERMITS`](crate::semaphore::MAX_PERMITS).
    pub fn new(max: usize) -> Result<Self, ConfigError> {
        ConcurrencyLimitLayer::new(max).map(|l| Self::with_semaphore(l.semaphore().clone()))
    }

    /// At most the capacity of `semaphore` in flight, shared with whoever
    /// else holds it.
    pub fn with_semaphore(semaphore: Semaphore) -> Self {
        Self { semaphore }
    }

    /// The semaphore (for its metrics, or to resize it).
    pub fn semaphore(&self) -> &Semaphore {
        &self.semaphore
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            semaphore: self.semaphore.clone(),
            state: State::Idle,
        }
    }
}

/// Refuses a request at once when no permit is free or the inner service
/// is not ready: the shape of tower's `LoadShed` with a concurrency limit
/// of its own.
///
/// * **`poll_ready`** is always ready at once. It takes a permit without
///   waiting (never ahead of queued waiters on a shared semaphore) and, with
///   one, polls the inner service; when either is missing, it drops the
///   permit and marks the next `call` as shed.
/// * **`call`** answers [`Refusal::Overloaded`] at once when shed
///   ([`Refusal::Closed`] when the semaphore is closed); otherwise it calls
///   the inner service and the permit rides in the response future until
///   it completes or is dropped.
/// * **Drop / clone**: as [`ConcurrencyLimit`](super::ConcurrencyLimit): a
///   dropped service gives its permit back, a clone starts with none.
///
/// # Cancel safety
///
/// Dropping the service or the response future gives the permit back.
///
/// # Examples
///
/// ```
/// use flowguard::tower::LoadShedLayer;
/// use std::task::{Context, Waker};
/// use tower::{Layer, Service, service_fn};
///
/// let layer = LoadShedLayer::new(1).unwrap();
/// let inner = service_fn(|()| async { Ok::<_, std::io::Error>(()) });
/// let (mut a, mut b) = (layer.layer(inner), layer.layer(inner));
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(a.poll_ready(&mut cx).is_ready()); // a took the permit
/// assert!(b.poll_ready(&mut cx).is_ready()); // b is ready too: to refuse
/// assert_eq!(layer.semaphore().available(), 0);
/// ```
pub struct LoadShed<S> {
    inner: S,
    semaphore: Semaphore,
    state: State,
}

enum State {
    Idle,
    Ready(OwnedPermit),
    Shed(Refusal),
}

impl<S> LoadShed<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req> Service<Req> for LoadShed<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, OwnedPermit>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !matches!(self.state, State::Ready(_)) {
            self.state = match self.semaphore.try_acquire_owned() {
                Ok(permit) => State::Ready(permit),
                Err(e) => {
                    self.state = State::Shed(refusal_of(e));
                    return Poll::Ready(Ok(()));
                }
            };
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(r) => Poll::Ready(r.map_err(Into::into)),
            Poll::Pending => {
                // Not ready below: shed, and free the slot for a request
                // that can use it.
                self.state = State::Shed(Refusal::Overloaded);
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Ready(permit) => ResponseFuture::running(self.inner.call(req), permit),
            State::Shed(r) => ResponseFuture::failed(r),
            State::Idle => ResponseFuture::failed(NotReady),
        }
    }
}

impl<S: Clone> Clone for LoadShed<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            semaphore: self.semaphore.clone(),
            state: State::Idle,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for LoadShed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Idle => "idle",
            State::Ready(_) => "holding a permit",
            State::Shed(_) => "shedding",
        };
        f.debug_struct("LoadShed")
            .field("inner", &self.inner)
            .field("semaphore", &self.semaphore)
            .field("state", &state)
            .finish()
    }
}
