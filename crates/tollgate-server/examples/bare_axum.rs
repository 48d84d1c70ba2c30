//! The HTTP baseline `scripts/bench-http` measures tollgate against: a bare axum server with no
//! limiter, no middleware and no state, on the same runtime, allocator and socket setup. It parses
//! the same `check_and_consume` body (the same fields, unknown fields refused) and answers JSON of
//! the same shape and the same `RateLimit-*` headers; `GET /api/health` answers a body the size of
//! tollgate's. What tollgate costs beyond this is its own work: limiter, load manager, metrics,
//! access log, request ids, timeouts and header limits.
//!
//! Run: `cargo run --release -p tollgate-server --example bare_axum -- 127.0.0.1:5099`

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use serde::{Deserialize, Serialize};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Parsed as tollgate parses it; the baseline decides nothing with it.
struct CheckBody {
    tenant_id: String,
    client_id: String,
    action_type: String,
    max_requests: Option<u64>,
    window_duration_seconds: Option<f64>,
    cost: Option<u64>,
}

#[derive(Serialize)]
struct LimitOut {
    max_requests: u64,
    window_duration_seconds: f64,
    source: &'static str,
}

#[derive(Serialize)]
struct CheckOut {
    allowed: bool,
    remaining_requests: u64,
    reset_time_seconds: u64,
    status: &'static str,
    limit: LimitOut,
    queue_wait_ms: f64,
}

async fn check(Json(body): Json<CheckBody>) -> Response {
    let max = body.max_requests.unwrap_or(1);
    let window = body.window_duration_seconds.unwrap_or(1.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let out = CheckOut {
        allowed: true,
        remaining_requests: max.saturating_sub(body.cost.unwrap_or(1)),
        reset_time_seconds: now + window.ceil() as u64,
        status: "processed",
        limit: LimitOut {
            max_requests: max,
            window_duration_seconds: window,
            source: "request",
        },
        queue_wait_ms: 0.0,
    };
    let mut headers = HeaderMap::new();
    headers.insert("ratelimit-limit", HeaderValue::from(max));
    headers.insert(
        "ratelimit-remaining",
        HeaderValue::from(out.remaining_requests),
    );
    headers.insert("ratelimit-reset", HeaderValue::from(window.ceil() as u64));
    (StatusCode::OK, headers, Json(out)).into_response()
}

#[derive(Serialize)]
struct HealthOut {
    config_version: u64,
    in_flight: u64,
    queued: u64,
    status: &'static str,
    store: &'static str,
}

/// The same body as tollgate's health with the memory store and nothing in flight (81 bytes).
async fn health() -> Json<HealthOut> {
    Json(HealthOut {
        config_version: 1,
        in_flight: 0,
        queued: 0,
        status: "healthy",
        store: "memory",
    })
}

#[tokio::main]
async fn main() {
    let addr: SocketAddr = match std::env::args().nth(1).unwrap_or_default().parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!("usage: bare_axum ADDR (e.g. 127.0.0.1:5099)");
            std::process::exit(2);
        }
    };
    let app = Router::new()
        .route("/api/check_and_consume", post(check))
        .route("/api/health", get(health));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    // tollgate sets TCP_NODELAY on every accepted connection; so does the baseline.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}
