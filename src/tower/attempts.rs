//! One request sent as several attempts (retry, hedge, pipeline): the
//! service made ready by `poll_ready` serves the first; each later one is
//! a clone, made ready before it is called. [`Runner`] and [`call`] are
//! the plumbing `RetryService` and `PipelineService` share: only what
//! runs the attempts (a `Retry`, a `Pipeline`) and how its errors map
//! differ.

use std::future::{Future, poll_fn};

use tower_service::Service;

use super::{BoxError, BoxResponseFuture};

/// Runs one request as attempts and maps its errors to this module's: a
/// [`Retry`](crate::retry::Retry), a [`Pipeline`](crate::pipeline::Pipeline)
/// or a [`HedgePolicy`](crate::fanout::HedgePolicy), shared by a layer, its
/// services and their clones.
pub(super) trait Runner<T>: Clone + Send + 'static {
    /// Runs the attempts `next` makes to the response, or to the error as
    /// a `BoxError` (a refusal as a [`Refusal`](super::Refusal)).
    fn run<F, Fut>(self, next: F) -> impl Future<Output = Result<T, BoxError>> + Send
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, BoxError>> + Send,
        T: Send;
}

/// `Service::call` of a service that sends each request through `runner`:
/// the ready `svc` serves the first attempt, clones the others; boxed.
pub(super) fn call<R, S, Req, T>(runner: &R, svc: &mut S, req: Req) -> BoxResponseFuture<T>
where
    R: Runner<T>,
    S: Service<Req, Response = T> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    Req: Clone + Send + 'static,
    T: Send + 'static,
{
    let mut attempts = Attempts::new(svc, req);
    Box::pin(runner.clone().run(move || attempts.next()))
}

pub(super) struct Attempts<S, Req> {
    /// The service made ready by `poll_ready`, until the first attempt.
    first: Option<S>,
    /// What later attempts clone (not ready).
    template: S,
    req: Req,
}

impl<S, Req> Attempts<S, Req>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: Clone,
{
    /// Takes the ready service out of `svc`, leaving a fresh clone there
    /// (tower's way: a clone is not ready, the original is).
    pub(super) fn new(svc: &mut S, req: Req) -> Self {
        let template = svc.clone();
        let first = std::mem::replace(svc, template.clone());
        Self {
            first: Some(first),
            template,
            req,
        }
    }

    /// The next attempt: a future owning its service and its request.
    pub(super) fn next(
        &mut self,
    ) -> impl Future<Output = Result<S::Response, BoxError>> + use<S, Req> {
        let req = self.req.clone();
        let (mut svc, ready) = match self.first.take() {
            Some(s) => (s, true),
            None => (self.template.clone(), false),
        };
        async move {
            if !ready {
                poll_fn(|cx| svc.poll_ready(cx)).await.map_err(Into::into)?;
            }
            svc.call(req).await.map_err(Into::into)
        }
    }
}
