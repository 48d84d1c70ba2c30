//! One log line per request, and the `X-Request-Id` that ties it to the client's view (both
//! applied by [`crate::request_layer`]).
//!
//! Every request is logged once (method, path, status, latency in ms to the µs, request id):
//! client errors and denials at debug — the client's mistake is not the operator's problem, and a
//! flood of them must not drown the log — with the API error code; server errors at warn (503)
//! or error (500). Only the method and path are taken from the request, the path cut to 256
//! bytes: headers (and so the admin token) and query strings are never logged.

use std::borrow::Cow;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The API error code of a failed response, left in its extensions for this log.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// Longest path logged; a 414 path may be kilobytes of whatever the client sent.
pub const MAX_LOGGED_PATH_BYTES: usize = 256;

fn loggable_path(path: &str) -> Cow<'_, str> {
    if path.len() <= MAX_LOGGED_PATH_BYTES {
        return Cow::Borrowed(path);
    }
    let mut end = MAX_LOGGED_PATH_BYTES;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}... ({} bytes)", &path[..end], path.len()))
}

/// Longest client-supplied request id that is echoed; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client's request id is safe to echo and log: 1–128 bytes of `[A-Za-z0-9._:-]`, so
/// it can neither forge log fields nor carry a secret-sized blob around.
pub fn is_sane_request_id(v: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The request id to answer with: the client's own when it is sane, else a fresh one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(v) if is_sane_request_id(v.as_bytes()) => v.clone(),
        _ => generate_request_id(),
    }
}

/// A random 128-bit id in hex. Random rather than counted, so ids reveal nothing about how many
/// requests the service handles. `rand`'s thread-local generator is a CSPRNG seeded from the OS,
/// so this costs no syscall per request. The hex is written into a stack buffer: no formatting
/// machinery and no intermediate `String` on every request.
fn generate_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n: u128 = rand::random();
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Writes the request's log line. Nothing is formatted (path cut, latency) unless the line's
/// level is enabled: tracing evaluates a macro's fields only then.
pub fn log_request(
    method: &Method,
    uri: &Uri,
    started: Instant,
    request_id: &HeaderValue,
    resp: &Response,
) {
    let status = resp.status();
    let status_code = status.as_u16();
    let request_id = request_id.to_str().unwrap_or("");
    // Whole microseconds: more digits are noise, not precision.
    let latency_ms = || started.elapsed().as_micros() as f64 / 1000.0;
    let code = || resp.extensions().get::<ErrorCode>().map_or("", |c| c.0);
    // The path only: query strings may carry data the operator did not mean to log.
    let path = || loggable_path(uri.path());
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(api = "http", %method, path = path().as_ref(), status = status_code, error = code(), latency_ms = latency_ms(), request_id, "request failed");
    } else if status.is_server_error() {
        tracing::warn!(api = "http", %method, path = path().as_ref(), status = status_code, error = code(), latency_ms = latency_ms(), request_id, "request failed");
    } else if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
        tracing::debug!(api = "http", %method, path = path().as_ref(), status = status_code, error = code(), latency_ms = latency_ms(), request_id, "request failed");
    } else {
        tracing::debug!(api = "http", %method, path = path().as_ref(), status = status_code, latency_ms = latency_ms(), request_id, "request");
    }
}
