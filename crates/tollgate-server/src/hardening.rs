//! Limits that keep slow, oversized or stuck requests from holding the service: a per-request
//! timeout, a URI size limit, and (in [`crate::listen`]) header size, header read timeout and a
//! connection cap.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::cli::HttpArgs;
use crate::error::ApiError;

/// Longest request URI accepted (path and query). Three 256-byte ids, fully percent-encoded, fit.
pub const MAX_URI_BYTES: usize = 4096;
/// Largest total of header names and values accepted; past it, 431 `headers_too_large`.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields in one request; past it, 431 `headers_too_large`.
pub const MAX_HEADERS: usize = 64;
/// What hyper itself reads before giving up on a request head (and answering a bare 431 without
/// routing it). Set well above the limits above so that ordinary oversized heads reach
/// [`limit_request`], which answers them in JSON like every other error.
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
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
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

/// Refuses over-long URIs and oversized header sets, and answers `request_timeout` when a request
/// runs past its limit. Dropping the handler's future on timeout is safe: a queued decision gives
/// its place back.
pub async fn limit_request(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    let uri_len = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0);
    if uri_len > MAX_URI_BYTES {
        return ApiError::UriTooLong.into_response();
    }
    if headers_too_large(req.headers()) {
        return ApiError::HeadersTooLarge.into_response();
    }
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::RequestTimeout.into_response(),
    }
}
