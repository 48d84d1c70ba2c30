//! One log line per request, and the `X-Request-Id` that ties it to the client's view.
//!
//! Every request is logged at debug (method, path, status, latency, request id); failures —
//! any 4xx or 5xx except a 429 denial, which is a normal answer — again at warn. Only the method
//! and path are taken from the request: headers (and so the admin token) and query strings are
//! never logged.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id that is echoed; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client's request id is safe to echo and log: 1–128 bytes of `[A-Za-z0-9._:-]`, so
/// it can neither forge log fields nor carry a secret-sized blob around.
pub fn is_sane_request_id(v: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A random 128-bit id in hex. Random rather than counted, so ids reveal nothing about how many
/// requests the service handles. `rand`'s thread-local generator is a CSPRNG seeded from the OS,
/// so this costs no syscall per request.
fn generate_request_id() -> HeaderValue {
    let n: u128 = rand::random();
    HeaderValue::try_from(format!("{n:032x}"))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The middleware: assigns the request id, times the request, logs it, echoes the id.
pub async fn log_requests(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if is_sane_request_id(v.as_bytes()) => v.clone(),
        _ => {
            let id = generate_request_id();
            req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
            id
        }
    };
    let method = req.method().clone();
    // The path only: query strings may carry data the operator did not mean to log. Cloning the
    // URI shares its buffer; copying the path out would allocate on every request.
    let uri = req.uri().clone();
    let path = uri.path();
    let mut resp = next.run(req).await;
    let status = resp.status();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let request_id = id.to_str().unwrap_or("");
    tracing::debug!(%method, path, status = status.as_u16(), latency_ms, request_id, "request");
    if (status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS)
        || status.is_server_error()
    {
        tracing::warn!(%method, path, status = status.as_u16(), latency_ms, request_id, "request failed");
    }
    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
    resp
}
