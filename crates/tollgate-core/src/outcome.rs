//! How a decision ended, classified once for every consumer (dashboard statistics, Prometheus
//! metrics, logs), and the hook through which the engine reports decisions and store calls to
//! whoever records them.

use std::time::Duration;

use crate::limit::{Limit, RateKey};
use crate::limiter::{Decision, LimitError, Outcome};
use crate::policy::Op;
use crate::store::StoreError;

/// Which front end a decision came through (the `api` label of metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    #[default]
    Http = 0,
    Rls = 1,
}

impl Api {
    pub const ALL: [Api; 2] = [Api::Http, Api::Rls];

    pub fn as_str(self) -> &'static str {
        match self {
            Api::Http => "http",
            Api::Rls => "rls",
        }
    }
}

/// How a decision request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DecisionOutcome {
    Allowed = 0,
    Denied = 1,
    /// Allowed, but a limit in shadow mode would have denied it.
    ShadowDenied = 2,
    /// Refused by the load manager (queue full, queue timeout, shutting down).
    Shed = 3,
    /// Allowed uncounted because the store was down (`--on-store-error allow`).
    FailOpen = 4,
    /// The store could not decide (`--on-store-error deny`, or a bound on state).
    Error = 5,
}

/// Number of [`DecisionOutcome`] values.
pub const OUTCOMES: usize = 6;

impl DecisionOutcome {
    /// Every outcome, in discriminant order.
    pub const ALL: [DecisionOutcome; OUTCOMES] = [
        DecisionOutcome::Allowed,
        DecisionOutcome::Denied,
        DecisionOutcome::ShadowDenied,
        DecisionOutcome::Shed,
        DecisionOutcome::FailOpen,
        DecisionOutcome::Error,
    ];

    /// The name used in responses, statistics and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionOutcome::Allowed => "allowed",
            DecisionOutcome::Denied => "denied",
            DecisionOutcome::ShadowDenied => "shadow_denied",
            DecisionOutcome::Shed => "shed",
            DecisionOutcome::FailOpen => "fail_open",
            DecisionOutcome::Error => "error",
        }
    }

    /// The outcome of a single-key call; `None` for calls refused before a decision was attempted
    /// (invalid arguments, no limit, unknown tenant), which are not decisions.
    pub fn of(result: &Result<Decision, LimitError>) -> Option<Self> {
        match result {
            Ok(d) => Some(d.outcome()),
            Err(e) => Self::of_error(e),
        }
    }

    /// The outcome of a call that failed; `None` when it was refused before a decision.
    pub fn of_error(e: &LimitError) -> Option<Self> {
        match e {
            LimitError::Shed(_) => Some(DecisionOutcome::Shed),
            LimitError::Store(_) => Some(DecisionOutcome::Error),
            // Unknown tenants must not claim statistics rows or metric labels either.
            LimitError::Invalid(_) | LimitError::NoLimit | LimitError::UnknownTenant => None,
        }
    }

    /// Whether the request held an admission slot (every outcome but shed).
    pub fn admitted(self) -> bool {
        self != DecisionOutcome::Shed
    }
}

impl DecisionOutcome {
    /// The one classification of a decided call, whatever its shape (one key or several):
    /// failed open, else denied, else allowed only because a shadow limit would have denied,
    /// else allowed.
    pub fn classify(fail_open: bool, allowed: bool, shadow_denied: bool) -> Self {
        if fail_open {
            DecisionOutcome::FailOpen
        } else if !allowed {
            DecisionOutcome::Denied
        } else if shadow_denied {
            DecisionOutcome::ShadowDenied
        } else {
            DecisionOutcome::Allowed
        }
    }
}

impl Decision {
    /// How this decision ended.
    pub fn outcome(&self) -> DecisionOutcome {
        let (fail_open, allowed) = match self.outcome {
            Outcome::Decided(v) => (false, v.allowed),
            Outcome::FailOpen { .. } => (true, true),
        };
        let shadow_denied = self
            .verdict
            .as_ref()
            .is_some_and(|iv| iv.shadow_denied.is_some());
        DecisionOutcome::classify(fail_open, allowed, shadow_denied)
    }
}

/// One decision, as the engine reports it to statistics and observers.
#[derive(Debug, Clone, Copy)]
pub struct DecisionSummary<'a> {
    pub api: Api,
    /// The key the decision is counted under (for several keys: the first that denied, else the
    /// first limited one).
    pub key: RateKey<'a>,
    pub outcome: DecisionOutcome,
    /// From the engine call to its answer, admission wait included.
    pub took: Duration,
    /// Time spent queued for admission, when admitted.
    pub waited: Option<Duration>,
    /// The store's error, for outcome `error`.
    pub store_error: Option<&'a StoreError>,
    /// The limit the answer reports.
    pub limit: Option<Limit>,
    /// The name of the reported limit, or of the shadow limit that would have denied.
    pub limit_name: Option<&'a str>,
}

/// Receives what the engine measures: every store call and every decision. The server registers
/// its metrics here; implementations must be cheap (they run on the decision path).
pub trait DecisionObserver: Send + Sync {
    /// A store call of `op` took `took`; `error` when it failed.
    fn store_call(&self, op: Op, took: Duration, error: Option<&StoreError>);
    /// A decision was made (or refused by shedding or the store).
    fn decision(&self, summary: &DecisionSummary<'_>);
}
