//! State shared by all handlers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tollgate_core::Limiter;

/// Cheap-to-clone handle given to every handler.
#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Shared>,
}

pub struct Shared {
    pub limiter: Arc<Limiter>,
    /// Set when shutdown begins; health turns 503 `draining` from then on.
    pub draining: AtomicBool,
    /// When set, `/api/config*` requires `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
}

impl AppState {
    pub fn new(limiter: Arc<Limiter>, admin_token: Option<String>) -> Self {
        Self {
            inner: Arc::new(Shared {
                limiter,
                draining: AtomicBool::new(false),
                admin_token,
            }),
        }
    }

    pub fn limiter(&self) -> &Limiter {
        &self.inner.limiter
    }

    pub fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }
}
