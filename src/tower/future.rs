//! The response future shared by the admission layers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::BoxError;

pin_project! {
    /// The response future of [`ConcurrencyLimit`](super::ConcurrencyLimit),
    /// [`LoadShed`](super::LoadShed), [`RateLimit`](super::RateLimit) and
    /// [`KeyedRateLimit`](super::KeyedRateLimit): the inner service's
    /// future, holding a guard `G` (a semaphore permit, or nothing) until
    /// it completes, or a refusal ready at once.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the inner future and the guard: a permit goes
    /// back to its semaphore at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use flowguard::tower::{ConcurrencyLimitLayer, ResponseFuture};
    /// use flowguard::semaphore::OwnedPermit;
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = ConcurrencyLimitLayer::new(1).unwrap();
    /// let mut svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n + 1) }));
    /// let fut: ResponseFuture<_, OwnedPermit> = svc.ready().await.unwrap().call(1);
    /// assert_eq!(layer.semaphore().available(), 0); // the future holds the permit
    /// assert_eq!(fut.await.unwrap(), 2);
    /// assert_eq!(layer.semaphore().available(), 1);
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, G = ()> {
        #[pin]
        kind: Kind<F, G>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, G> {
        Running {
            #[pin]
            fut: F,
            guard: Option<G>,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

impl<F, G> ResponseFuture<F, G> {
    pub(super) fn running(fut: F, guard: G) -> Self {
        Self {
            kind: Kind::Running {
                fut,
                guard: Some(guard),
            },
        }
    }

    pub(super) fn failed(error: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::Failed {
                error: Some(error.into()),
            },
        }
    }
}

impl<F, G, T, E> Future for ResponseFuture<F, G>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Running { fut, guard } => {
                let out = std::task::ready!(fut.poll(cx));
                // Release at completion, not when the future is dropped.
                drop(guard.take());
                Poll::Ready(out.map_err(Into::into))
            }
            KindProj::Failed { error } => match error.take() {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl<F, G> fmt::Debug for ResponseFuture<F, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Running { guard, .. } => f
                .debug_struct("ResponseFuture")
                .field("running", &true)
                .field("guard_held", &guard.is_some())
                .finish(),
            Kind::Failed { error } => f
                .debug_struct("ResponseFuture")
                .field("running", &false)
                .field("error", error)
                .finish(),
        }
    }
}
