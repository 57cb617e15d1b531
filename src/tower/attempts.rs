//! One request sent as several attempts (retry, hedge, pipeline): the
//! service made ready by `poll_ready` serves the first; each later one is
//! a clone, made ready before it is called.

use std::future::{Future, poll_fn};

use tower_service::Service;

use super::BoxError;

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
