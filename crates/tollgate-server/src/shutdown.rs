//! What happens to requests at shutdown: after SIGTERM readiness turns 503 `draining` while the
//! listener keeps serving for `--drain-delay` (so load balancers stop sending before connections
//! are refused); then the listener closes and accepted requests get `--shutdown-grace` to finish;
//! a request still running when the grace period ends is answered 503 `shutting_down` instead of
//! having its connection closed without an answer.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tollgate_core::load::Shed;

use crate::error::ApiError;
use crate::state::AppState;

/// Races the request against the end of the grace period. Dropping the handler there is safe: a
/// queued decision gives back its place, a running one its load-manager slot.
pub async fn answer_when_grace_over(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let mut over = state.inner.grace_over.subscribe();
    if *over.borrow_and_update() {
        return ApiError::Shed(Shed::ShuttingDown).into_response();
    }
    tokio::select! {
        resp = next.run(req) => resp,
        // An error means the sender is gone, i.e. the service itself is being dropped.
        _ = over.wait_for(|v| *v) => ApiError::Shed(Shed::ShuttingDown).into_response(),
    }
}
