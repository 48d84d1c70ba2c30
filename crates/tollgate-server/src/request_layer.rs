//! The one layer every HTTP request passes through: request id, URI and header limits, the
//! shutdown grace answer, body reading within its limits, the end-to-end request timeout, and the
//! access log line.
//!
//! One tower [`Layer`] rather than a stack of `from_fn` middlewares: each of those boxed its
//! future and cloned the boxed inner service on every request. Timers and the shutdown watch are
//! only armed when the request does not finish in its first poll — a decision on the memory store
//! with its body already received never touches the timer wheel.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::access_log::{self, X_REQUEST_ID};
use crate::error::ApiError;
use crate::extract::MAX_BODY_BYTES;
use crate::hardening::{self, BodyRead, HttpLimits};
use crate::shutdown;
use crate::state::AppState;
use tollgate_core::load::Shed;

/// Applies [`RequestService`] (and the body extractors' [`MAX_BODY_BYTES`] cap) to every route.
#[derive(Clone)]
pub struct RequestLayer {
    state: AppState,
    limits: HttpLimits,
}

impl RequestLayer {
    pub fn new(state: AppState, limits: &HttpLimits) -> Self {
        Self {
            state,
            limits: *limits,
        }
    }
}

impl<S> Layer<S> for RequestLayer {
    type Service = RequestService<<DefaultBodyLimit as Layer<S>>::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner: DefaultBodyLimit::max(MAX_BODY_BYTES).layer(inner),
            state: self.state.clone(),
            limits: self.limits,
        }
    }
}

/// See the [module documentation](self).
#[derive(Clone)]
pub struct RequestService<S> {
    inner: S,
    state: AppState,
    limits: HttpLimits,
}

impl<S> Service<Request> for RequestService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner service is readied in `handle` (by `oneshot`) on its own clone.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let inner = self.inner.clone();
        let state = self.state.clone();
        let limits = self.limits;
        Box::pin(async move { Ok(handle(inner, state, limits, req).await) })
    }
}

async fn handle<S>(inner: S, state: AppState, limits: HttpLimits, req: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let started = Instant::now();
    let request_id = access_log::request_id(req.headers());
    // Kept for the log line. Cloning the URI shares its buffer; copying the path out would
    // allocate on every request.
    let method = req.method().clone();
    let uri = req.uri().clone();
    let mut resp = respond(inner, &state, limits, started, req).await;
    access_log::log_request(&method, &uri, started.into_std(), &request_id, &resp);
    resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
    resp
}

/// The answer to a request: refused by a limit, or the route's, or a timeout or shutdown answer
/// if the route is still running when those come.
async fn respond<S>(
    inner: S,
    state: &AppState,
    limits: HttpLimits,
    started: Instant,
    req: Request,
) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    if shutdown::grace_is_over(state) {
        return ApiError::Shed(Shed::ShuttingDown).into_response();
    }
    if let Err(e) = hardening::check_head(&req) {
        return e.into_response();
    }
    let mut work = pin!(read_and_route(inner, limits, req));
    // Most requests finish here: their body is in, the handler does not wait. Only those that
    // do not get a timer and a shutdown watch.
    if let Poll::Ready(resp) = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await
    {
        return resp;
    }
    // Dropping the route's future on timeout or at the end of the grace period is safe: a queued
    // decision gives its place back, a running one its load-manager slot.
    tokio::select! {
        biased;
        resp = &mut work => resp,
        _ = tokio::time::sleep_until(started + limits.request_timeout) => {
            ApiError::RequestTimeout.into_response()
        }
        _ = shutdown::grace_over(state) => ApiError::Shed(Shed::ShuttingDown).into_response(),
    }
}

/// Reads the body within its limits, then runs the route.
async fn read_and_route<S>(inner: S, limits: HttpLimits, req: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let (mut resp, close) = match hardening::read_body(req, limits.body).await {
        BodyRead::Whole(req) => (route(inner, req).await, false),
        BodyRead::OverLimit(req) => (route(inner, req).await, true),
        BodyRead::Failed(e) => (e.into_response(), true),
    };
    if close {
        // The rest of the body is unread, so the connection cannot carry another request.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn route<S>(inner: S, req: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    match inner.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}
