//! Limits as documents spell them (`LimitSpec`, one or a list) to the policies decisions use, with
//! every problem described, and back.

use std::sync::Arc;

use super::document::{AlgorithmName, LimitEntry, LimitSpec};
use crate::algorithms::{calendar, gcra, shared_state};
use crate::limit::{Limit, MAX_REQUESTS_CEILING};
use crate::policy::{Algorithm, Policy, PolicyLimit, MAX_LIMITS_PER_KEY};

/// Longest limit name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Largest GCRA burst.
pub const MAX_BURST: u64 = 1_000_000_000;
/// Largest `burst × (window / max_requests)`, µs: the span a GCRA timestamp may run ahead of now,
/// kept within what a double (the Redis script's numbers) holds exactly.
pub const MAX_GCRA_SPAN_MICROS: u64 = 1 << 53;

/// One limit, or a message saying what is wrong with it.
pub fn policy_limit(spec: &LimitSpec) -> Result<PolicyLimit, String> {
    let algorithm = match (spec.algorithm, spec.burst, spec.calendar) {
        (Some(AlgorithmName::Gcra), burst, None) => {
            let burst = burst.unwrap_or(spec.max_requests);
            if !(1..=MAX_BURST).contains(&burst) {
                return Err(format!(
                    "burst must be an integer from 1 to {MAX_BURST}, got {burst}"
                ));
            }
            Algorithm::Gcra { burst }
        }
        (_, Some(_), _) => return Err("burst applies only to algorithm \"gcra\"".into()),
        (Some(AlgorithmName::FixedWindow), None, calendar) => Algorithm::FixedWindow { calendar },
        (_, None, Some(_)) => {
            return Err("calendar applies only to algorithm \"fixed_window\"".into())
        }
        (None | Some(AlgorithmName::SlidingLog), None, None) => Algorithm::SlidingLog,
        (Some(AlgorithmName::SlidingWindowCounter), None, None) => Algorithm::SlidingWindowCounter,
    };
    let limit = match spec.calendar {
        // +0.0 is an omitted window; an explicit 0 arrives as -0.0 (document.rs) and is refused.
        Some(cal)
            if spec.window_duration_seconds == 0.0
                && spec.window_duration_seconds.is_sign_positive() =>
        {
            if !(1..=MAX_REQUESTS_CEILING).contains(&spec.max_requests) {
                return Err(format!(
                    "max_requests must be an integer from 1 to {MAX_REQUESTS_CEILING}, got {}",
                    spec.max_requests
                ));
            }
            Limit {
                max_requests: spec.max_requests,
                window_micros: calendar::longest(cal),
            }
        }
        _ => Limit::new(spec.max_requests, spec.window_duration_seconds).map_err(|e| e.0)?,
    };
    if let Some(name) = &spec.name {
        if name.is_empty()
            || name.len() > MAX_NAME_BYTES
            || !name.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            return Err(format!(
                "name must be 1 to {MAX_NAME_BYTES} printable ASCII characters"
            ));
        }
    }
    let pl = PolicyLimit {
        limit,
        algorithm,
        shadow: spec.shadow,
        name: spec.name.as_deref().map(Arc::from),
    };
    if let Algorithm::Gcra { burst } = algorithm {
        if burst.saturating_mul(gcra::interval(&pl)) > MAX_GCRA_SPAN_MICROS {
            return Err(format!(
                "burst × (window_duration_seconds / max_requests) must be at most {MAX_GCRA_SPAN_MICROS} µs (about 285 years)"
            ));
        }
    }
    Ok(pl)
}

/// A policy from its document form; every problem as (sub-path, message).
pub fn policy(entry: &LimitEntry) -> Result<Policy, Vec<(String, String)>> {
    let specs = entry.specs();
    let prefix = |i: usize| match entry {
        LimitEntry::One(_) => String::new(),
        LimitEntry::Many { .. } => format!(".limits[{i}]"),
    };
    if !(1..=MAX_LIMITS_PER_KEY).contains(&specs.len()) {
        return Err(vec![(
            ".limits".into(),
            format!(
                "must hold 1 to {MAX_LIMITS_PER_KEY} limits, got {}",
                specs.len()
            ),
        )]);
    }
    let mut problems = Vec::new();
    let mut limits = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        match policy_limit(s) {
            Ok(l) => limits.push(l),
            Err(m) => problems.push((prefix(i), m)),
        }
    }
    if problems.is_empty() {
        if let Some(i) = shared_state(&limits) {
            problems.push((
                prefix(i),
                "another limit of this key has the same algorithm and window; keep one".into(),
            ));
        }
    }
    if problems.is_empty() {
        Ok(Policy {
            limits: Arc::from(limits),
        })
    } else {
        Err(problems)
    }
}

/// The document form of one limit.
pub fn spec(pl: &PolicyLimit) -> LimitSpec {
    let (algorithm, burst, cal) = match pl.algorithm {
        Algorithm::SlidingLog => (None, None, None),
        Algorithm::Gcra { burst } => (
            Some(AlgorithmName::Gcra),
            (burst != pl.limit.max_requests).then_some(burst),
            None,
        ),
        Algorithm::SlidingWindowCounter => (Some(AlgorithmName::SlidingWindowCounter), None, None),
        Algorithm::FixedWindow { calendar } => (Some(AlgorithmName::FixedWindow), None, calendar),
    };
    let window = match cal {
        Some(c) if pl.limit.window_micros == calendar::longest(c) => 0.0,
        _ => pl.limit.window_seconds(),
    };
    LimitSpec {
        max_requests: pl.limit.max_requests,
        window_duration_seconds: window,
        algorithm,
        burst,
        calendar: cal,
        name: pl.name.as_deref().map(str::to_string),
        shadow: pl.shadow,
    }
}

/// The document form of a policy: one limit as the seed wrote it, several as a list.
pub fn entry(p: &Policy) -> LimitEntry {
    match &*p.limits {
        [one] => LimitEntry::One(spec(one)),
        many => LimitEntry::Many {
            limits: many.iter().map(spec).collect(),
        },
    }
}
