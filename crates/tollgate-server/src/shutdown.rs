//! What happens to requests at shutdown: after SIGTERM readiness turns 503 `draining` while the
//! listener keeps serving for `--drain-delay` (so load balancers stop sending before connections
//! are refused); then the listener closes and accepted requests get `--shutdown-grace` to finish;
//! a request still running when the grace period ends is answered 503 `shutting_down` instead of
//! having its connection closed without an answer.

use crate::state::AppState;

/// Whether the grace period is over: a request arriving now is answered 503 `shutting_down`.
pub fn grace_is_over(state: &AppState) -> bool {
    *state.inner.grace_over.borrow()
}

/// Resolves when the grace period ends, for racing a request that is still running (see
/// [`crate::request_layer`]). Dropping the handler then is safe: a queued decision gives back its
/// place, a running one its load-manager slot.
pub async fn grace_over(state: &AppState) {
    let mut over = state.inner.grace_over.subscribe();
    // An error means the sender is gone, i.e. the service itself is being dropped.
    let _ = over.wait_for(|v| *v).await;
}
