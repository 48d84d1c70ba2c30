//! `ShouldRateLimit`: one engine call for all of a request's descriptors, all or nothing.

use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tollgate_core::clock::Micros;
use tollgate_core::engine::{DecideItem, Decisions, Engine};
use tollgate_core::store::StoreError;
use tollgate_core::{Api, LimitError, RateKey};
use tonic::{Request, Response, Status};

use super::mapping::{self, DescriptorKey};
use crate::state::AppState;

/// The RLS front end; cheap to share.
pub struct RlsService {
    /// The shared engine, counting its decisions under `api="rls"`.
    engine: Engine,
}

impl RlsService {
    pub fn new(state: AppState) -> Self {
        Self {
            engine: state.engine().for_api(Api::Rls),
        }
    }
}

/// One descriptor, owned, ready to borrow into the engine call.
struct Parsed {
    key: DescriptorKey,
    fallback: Option<tollgate_core::Limit>,
    cost: u64,
}

#[tonic::async_trait]
impl RateLimitService for RlsService {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let req = request.into_inner();
        let parsed = parse(&req).inspect_err(|s| {
            tracing::debug!(api = "rls", code = ?s.code(), message = s.message(), "request refused");
        })?;
        let items: Vec<DecideItem<'_>> = parsed
            .iter()
            .map(|p| DecideItem {
                key: RateKey::new(&req.domain, &p.key.client, &p.key.action),
                fallback: p.fallback,
                cost: p.cost,
            })
            .collect();
        let started = Instant::now();
        // The engine records the decision in the statistics and metrics.
        let result = self.engine.decide(&items).await;
        let latency_ms = started.elapsed().as_micros() as f64 / 1000.0;
        match result {
            Ok(d) => {
                tracing::debug!(
                    api = "rls",
                    domain = loggable(&req.domain),
                    descriptors = items.len(),
                    allowed = d.allowed,
                    fail_open = d.fail_open,
                    latency_ms,
                    "decision"
                );
                Ok(Response::new(respond(&d)))
            }
            Err(e) => {
                let status = status_of(&req.domain, e);
                if status.code() == tonic::Code::Unavailable {
                    tracing::warn!(api = "rls", domain = loggable(&req.domain), code = ?status.code(), message = status.message(), latency_ms, "decision failed");
                } else {
                    tracing::debug!(api = "rls", domain = loggable(&req.domain), code = ?status.code(), message = status.message(), latency_ms, "decision failed");
                }
                Err(status)
            }
        }
    }
}

/// Checks the request and maps its descriptors; every problem is INVALID_ARGUMENT with a message
/// naming the descriptor.
#[allow(clippy::result_large_err)]
fn parse(req: &RateLimitRequest) -> Result<Vec<Parsed>, Status> {
    if req.domain.is_empty() {
        return Err(Status::invalid_argument(
            "domain is empty; tollgate uses the domain as the tenant id (set `domain` in Envoy's ratelimit filter)",
        ));
    }
    if req.descriptors.is_empty() {
        return Err(Status::invalid_argument(
            "the request has no descriptors; send at least one",
        ));
    }
    req.descriptors
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if d.entries.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "descriptor {i} has no entries"
                )));
            }
            if d.is_negative_hits {
                return Err(Status::unimplemented(format!(
                    "descriptor {i} asks to give hits back (is_negative_hits); tollgate's RLS front end does not support refunds yet"
                )));
            }
            let fallback = d
                .limit
                .as_ref()
                .map(mapping::override_limit)
                .transpose()
                .map_err(|m| Status::invalid_argument(format!("descriptor {i}: {m}")))?;
            Ok(Parsed {
                key: mapping::descriptor_key(d),
                fallback,
                cost: mapping::cost(d, req.hits_addend),
            })
        })
        .collect()
}

/// The gRPC status for a decision that was not made. Shedding and store outages under
/// `--on-store-error deny` are UNAVAILABLE, so Envoy's `failure_mode_deny` decides.
fn status_of(tenant: &str, e: LimitError) -> Status {
    match e {
        LimitError::Invalid(m) => Status::invalid_argument(m.0),
        LimitError::UnknownTenant => Status::permission_denied(format!(
            "tenant (domain) '{tenant}' has no configuration and the service refuses unconfigured tenants (--unknown-tenants deny)"
        )),
        LimitError::Shed(s) => Status::unavailable(s.to_string()),
        LimitError::Store(
            e @ (StoreError::KeyBudgetExhausted { .. } | StoreError::TenantKeyBudget(_)),
        ) => Status::resource_exhausted(e.to_string()),
        LimitError::Store(StoreError::Unsupported(what)) => Status::unimplemented(format!(
            "this store does not support {what} yet; send one descriptor per request or use the memory store"
        )),
        LimitError::Store(e) => Status::unavailable(format!(
            "{e}; the service refuses decisions on store errors (--on-store-error deny)"
        )),
        LimitError::NoLimit => Status::internal("no limit resolved"),
    }
}

/// The most restrictive descriptor's figures, for the `RateLimit-*` headers.
struct Headline {
    over: bool,
    limit: u64,
    remaining: u64,
    reset_in: Micros,
    retry_in: Option<Micros>,
}

fn respond(d: &Decisions) -> RateLimitResponse {
    let mut statuses = Vec::with_capacity(d.items.len());
    let mut headline: Option<Headline> = None;
    for item in &d.items {
        let Some(resolved) = &item.resolved else {
            // Not limited: OK with no limit, as Envoy's own service answers unknown descriptors.
            statuses.push(DescriptorStatus {
                code: Code::Ok as i32,
                ..Default::default()
            });
            continue;
        };
        let (limit, remaining, reset_in, retry_in, allowed) = match item.reported() {
            Some((limit, lv)) => (
                *limit,
                lv.remaining,
                lv.reset_at.saturating_sub(d.now),
                lv.retry_at.map(|r| r.saturating_sub(d.now)),
                item.verdict.as_ref().is_none_or(|v| v.allowed),
            ),
            // Failed open: admitted uncounted, so the whole limit is reported available.
            None => {
                let Some(first) = resolved.policy.limits.first() else {
                    continue;
                };
                (first.limit, first.capacity(), 0, None, true)
            }
        };
        // The name of the limit the status reports (the first when failing open, as above).
        let pl = match item.verdict {
            Some(_) => resolved.policy.limits.get(item.reported),
            None => resolved.policy.limits.first(),
        };
        statuses.push(DescriptorStatus {
            code: if allowed { Code::Ok } else { Code::OverLimit } as i32,
            current_limit: Some(mapping::current_limit(
                &limit,
                resolved.source,
                pl.and_then(|p| p.name.as_deref()),
            )),
            limit_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            duration_until_reset: Some(mapping::duration(reset_in)),
            quota: None,
        });
        let candidate = Headline {
            over: !allowed,
            limit: limit.max_requests,
            remaining,
            reset_in,
            retry_in,
        };
        let better = match &headline {
            None => true,
            Some(h) => {
                (candidate.over && !h.over)
                    || (candidate.over == h.over && candidate.remaining < h.remaining)
            }
        };
        if better {
            headline = Some(candidate);
        }
    }
    let mut headers = Vec::new();
    if let Some(h) = headline {
        let mut add = |k: &str, v: u64| {
            headers.push(HeaderValue {
                key: k.to_string(),
                value: v.to_string(),
                ..Default::default()
            })
        };
        add("ratelimit-limit", h.limit);
        add("ratelimit-remaining", h.remaining);
        add("ratelimit-reset", seconds_ceil(h.reset_in));
        if h.over {
            if let Some(r) = h.retry_in {
                add("retry-after", seconds_ceil(r).max(1));
            }
        }
    }
    RateLimitResponse {
        overall_code: if d.allowed { Code::Ok } else { Code::OverLimit } as i32,
        statuses,
        response_headers_to_add: headers,
        ..Default::default()
    }
}

/// The domain for a log line: a valid tenant id as is; anything else (control characters could
/// forge log lines, a huge one would flood them) replaced.
fn loggable(domain: &str) -> &str {
    if tollgate_core::limit::validate_id("tenant_id", domain).is_ok() {
        domain
    } else {
        "<invalid>"
    }
}

/// Whole seconds, rounded up: a reset a client obeys is never early.
fn seconds_ceil(micros: Micros) -> u64 {
    micros.div_ceil(1_000_000)
}
