//! Limits that keep slow, oversized or stuck requests from holding the service: a per-request
//! timeout, a URI size limit, a body deadline and minimum body rate, and (in [`crate::listen`])
//! header size, header read timeout and a connection cap.

use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::cli::HttpArgs;
use crate::error::ApiError;
use crate::extract::MAX_BODY_BYTES;

/// Longest request URI accepted (path and query). Three 256-byte ids, fully percent-encoded, fit.
pub const MAX_URI_BYTES: usize = 4096;
/// Largest total of header names and values accepted; past it, 431 `headers_too_large`.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields in one request; past it, 431 `headers_too_large`.
pub const MAX_HEADERS: usize = 64;
/// What hyper itself reads before giving up on a request head (and answering a bare 431 without
/// routing it). Set well above the limits above so that ordinary oversized heads reach
/// [`check_head`], which answers them in JSON like every other error.
pub const HYPER_MAX_HEADER_BYTES: usize = 64 * 1024;
pub const HYPER_MAX_HEADERS: usize = 256;

/// The HTTP limits in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// End-to-end limit per request, body reading and queueing included.
    pub request_timeout: Duration,
    /// Time a client has to send a request head; also closes connections idle that long.
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// How a request body must arrive.
    pub body: BodyLimits,
}

/// How fast a request body must arrive once its head is in. Without these a client can announce a
/// body and trickle it, holding a connection slot until the (much longer) request timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// The whole body must arrive within this.
    pub timeout: Duration,
    /// After [`BODY_RATE_GRACE`], at least this many bytes per second on average; 0 = no check.
    pub min_rate: u64,
}

/// Time a body gets before the minimum rate applies, so a connection's slow start or one lost
/// packet does not cut a small body.
pub const BODY_RATE_GRACE: Duration = Duration::from_secs(1);

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            min_rate: 1024,
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            body: BodyLimits::default(),
        }
    }
}

fn seconds(flag: &str, v: f64) -> anyhow::Result<Duration> {
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        anyhow::bail!("--{flag} must be a number of seconds above 0 and at most 86400, got {v}")
    }
}

impl HttpLimits {
    pub fn from_args(args: &HttpArgs) -> anyhow::Result<Self> {
        // The cap is a tokio Semaphore, which panics when created with more than MAX_PERMITS.
        let max = tokio::sync::Semaphore::MAX_PERMITS;
        if !(1..=max).contains(&args.max_connections) {
            anyhow::bail!("--max-connections must be from 1 to {max}");
        }
        Ok(Self {
            request_timeout: seconds("request-timeout", args.request_timeout)?,
            header_read_timeout: seconds("header-read-timeout", args.header_read_timeout)?,
            max_connections: args.max_connections,
            body: BodyLimits {
                timeout: seconds("body-timeout", args.body_timeout)?,
                min_rate: args.body_min_rate,
            },
        })
    }
}

/// Whether a request's headers exceed [`MAX_HEADERS`] fields or [`MAX_HEADER_BYTES`] bytes.
fn headers_too_large(headers: &axum::http::HeaderMap) -> bool {
    if headers.len() > MAX_HEADERS {
        return true;
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    bytes > MAX_HEADER_BYTES
}

/// Refuses over-long URIs and oversized header sets.
pub fn check_head(req: &Request) -> Result<(), ApiError> {
    let uri_len = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0);
    if uri_len > MAX_URI_BYTES {
        return Err(ApiError::UriTooLong);
    }
    if headers_too_large(req.headers()) {
        return Err(ApiError::HeadersTooLarge);
    }
    Ok(())
}

/// What [`read_body`] made of a request's body.
pub enum BodyRead {
    /// The request with its whole body buffered.
    Whole(Request),
    /// The request with only the first [`MAX_BODY_BYTES`] + 1 bytes of its body, so the body
    /// extractor answers 413; the rest is unread, so the connection must close after the answer.
    OverLimit(Request),
    /// The body was late, too slow or broken: answer this and close the connection.
    Failed(ApiError),
}

/// Reads the whole request body before the handler runs, within [`BodyLimits`]: a body that is
/// late or too slow is [`BodyRead::Failed`] with 408 `body_timeout` (the rest of the body is never
/// read, so the connection cannot be reused), freeing the connection slot. Bodies are capped at
/// [`MAX_BODY_BYTES`], so buffering them here costs no more than the handlers' own extraction did.
/// A body already in memory is taken without arming a timer.
pub async fn read_body(req: Request, limits: BodyLimits) -> BodyRead {
    if req.body().is_end_stream() {
        return BodyRead::Whole(req);
    }
    let (parts, body) = req.into_parts();
    match collect_body(body, limits).await {
        Ok(Collected::Whole(bytes)) => {
            BodyRead::Whole(Request::from_parts(parts, Body::from(bytes)))
        }
        // Handed on rather than answered here, so that the route's own checks (the admin token
        // first) run as they would for any other body, and the body extractor answers 413.
        Ok(Collected::OverLimit(prefix)) => {
            BodyRead::OverLimit(Request::from_parts(parts, Body::from(prefix)))
        }
        Err(e) => BodyRead::Failed(e),
    }
}

/// What [`collect_body`] read.
enum Collected {
    /// The whole body.
    Whole(Bytes),
    /// The first bytes of a body over [`MAX_BODY_BYTES`], one more than the limit; the rest was
    /// not read.
    OverLimit(Bytes),
}

async fn collect_body(mut body: Body, limits: BodyLimits) -> Result<Collected, ApiError> {
    let started = Instant::now();
    let hard_deadline = started + limits.timeout;
    let mut buf = Vec::new();
    loop {
        // The rate check: by `grace + received / min_rate` seconds the next bytes must be in.
        let deadline = match limits.min_rate {
            0 => hard_deadline,
            rate => {
                let allowed = BODY_RATE_GRACE
                    .saturating_add(Duration::from_secs_f64(buf.len() as f64 / rate as f64));
                hard_deadline.min(started + allowed)
            }
        };
        // A frame already received is taken as it is; only a body still on its way arms a timer.
        let frame = match body.frame().now_or_never() {
            Some(frame) => Ok(frame),
            None => tokio::time::timeout_at(deadline, body.frame()).await,
        };
        let frame = match frame {
            Err(_) => return Err(ApiError::BodyTimeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::InvalidJson(format!(
                    "could not read the request body: {e}"
                )))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY_BYTES {
                buf.extend_from_slice(&data[..MAX_BODY_BYTES + 1 - buf.len()]);
                return Ok(Collected::OverLimit(Bytes::from(buf)));
            }
            // The common case on the decision path: the whole body in one frame. Hand that
            // frame on as it is instead of copying it into a buffer.
            if buf.is_empty() && body.is_end_stream() {
                return Ok(Collected::Whole(data));
            }
            buf.extend_from_slice(&data);
        }
        if body.is_end_stream() {
            break;
        }
    }
    Ok(Collected::Whole(Bytes::from(buf)))
}
