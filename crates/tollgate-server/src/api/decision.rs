//! `POST /api/check_and_consume` and `GET /api/status/{tenant}/{client}/{action}`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tollgate_core::clock::Micros;
use tollgate_core::policy::{Algorithm, PolicyLimit};
use tollgate_core::whole_number;
use tollgate_core::{Decision, DecisionRequest, Limit, LimitSource, Outcome, RateKey};

use super::tenant_auth::Credential;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// A decision request. `max_requests` and `window_duration_seconds` go together and are used only
/// when no client or action limit is configured.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    tenant_id: String,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    client_id: String,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    action_type: String,
    #[serde(default, deserialize_with = "whole_number::option")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    max_requests: Option<u64>,
    /// Seconds, rounded to the nearest millisecond (at least one); sent together with
    /// `max_requests`.
    #[serde(default)]
    #[schema(minimum = 0.001, maximum = 31_536_000.0)]
    window_duration_seconds: Option<f64>,
    /// 1 ..= the effective limit's `max_requests`.
    #[serde(default, deserialize_with = "whole_number::option")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    cost: Option<u64>,
}

/// The limit a decision was made under (the one that denied, else the one with the fewest
/// requests remaining).
#[derive(Serialize, utoipa::ToSchema)]
pub struct LimitView {
    pub max_requests: u64,
    /// For a calendar window, the current period's length.
    pub window_duration_seconds: f64,
    #[schema(value_type = super::schema::LimitSourceSchema)]
    pub source: LimitSource,
    /// The limit's name, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Present when not `sliding_log`: `gcra`, `sliding_window_counter` or `fixed_window`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<super::schema::AlgorithmSchema>)]
    pub algorithm: Option<&'static str>,
    /// GCRA only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

impl LimitView {
    fn new(limit: Limit, source: LimitSource) -> Self {
        Self {
            max_requests: limit.max_requests,
            window_duration_seconds: limit.window_seconds(),
            source,
            name: None,
            algorithm: None,
            burst: None,
        }
    }

    fn of(pl: &PolicyLimit, source: LimitSource, now: Micros) -> Self {
        let window = match pl.algorithm {
            Algorithm::FixedWindow {
                calendar: Some(cal),
            } => {
                let (s, e) = tollgate_core::algorithms::calendar::period(cal, now);
                (e - s) as f64 / 1e6
            }
            _ => pl.limit.window_seconds(),
        };
        Self {
            max_requests: pl.limit.max_requests,
            window_duration_seconds: window,
            source,
            name: pl.name.as_deref().map(str::to_string),
            algorithm: (pl.algorithm != Algorithm::SlidingLog).then(|| pl.algorithm.as_str()),
            burst: match pl.algorithm {
                Algorithm::Gcra { burst } => Some(burst),
                _ => None,
            },
        }
    }
}

/// One limit of a policy of several, in the `limits` array.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyLimitView {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[schema(value_type = super::schema::AlgorithmSchema)]
    algorithm: &'static str,
    max_requests: u64,
    window_duration_seconds: f64,
    remaining_requests: u64,
    reset_time_seconds: u64,
    /// This limit alone would allow the request.
    allowed: bool,
    shadow: bool,
}

/// What every decision-shaped answer carries beyond the seed's fields.
pub(super) struct PolicyParts {
    pub limit: LimitView,
    pub remaining: u64,
    pub reset_at: Micros,
    pub limits: Option<Vec<PolicyLimitView>>,
    pub shadow_limit: Option<LimitView>,
}

/// The reported limit, its figures, and (for several limits) every limit's.
pub(super) fn policy_parts(d: &Decision, now: Micros) -> Option<PolicyParts> {
    let iv = d.verdict.as_ref()?;
    let i = d.reported;
    let pl = d.policy.limits.get(i)?;
    let lv = iv.limits.get(i)?;
    let limits = (d.policy.limits.len() > 1).then(|| {
        d.policy
            .limits
            .iter()
            .zip(iv.limits.iter())
            .enumerate()
            .map(|(j, (pl, lv))| {
                let view = LimitView::of(pl, d.source, now);
                PolicyLimitView {
                    name: view.name,
                    algorithm: pl.algorithm.as_str(),
                    max_requests: pl.limit.max_requests,
                    window_duration_seconds: view.window_duration_seconds,
                    remaining_requests: lv.remaining,
                    reset_time_seconds: seconds_ceil(lv.reset_at),
                    allowed: lv.allowed,
                    shadow: d.is_shadow(j),
                }
            })
            .collect()
    });
    let shadow_limit = iv
        .shadow_denied
        .and_then(|j| d.policy.limits.get(j))
        .map(|pl| LimitView::of(pl, d.source, now));
    Some(PolicyParts {
        limit: LimitView::of(pl, d.source, now),
        remaining: lv.remaining,
        reset_at: lv.reset_at,
        limits,
        shadow_limit,
    })
}

/// A decision: 200 when allowed, 429 when denied (then with `retry_after_seconds`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct DecisionBody {
    allowed: bool,
    remaining_requests: u64,
    reset_time_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<f64>,
    status: &'static str,
    limit: LimitView,
    /// Every limit, when several apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<Vec<PolicyLimitView>>,
    /// A shadow limit would have denied this request (it was allowed and that limit consumed
    /// nothing).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    shadow_denied: bool,
    /// The shadow limit that would have denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_limit: Option<LimitView>,
    /// Milliseconds spent waiting in the tenant's queue before the decision.
    queue_wait_ms: f64,
}

/// The request's own limit, if it sent one. Both fields or neither.
pub fn requested_limit(
    max_requests: Option<u64>,
    window: Option<f64>,
) -> Result<Option<Limit>, ApiError> {
    match (max_requests, window) {
        (None, None) => Ok(None),
        (Some(m), Some(w)) => Limit::new(m, w)
            .map(Some)
            .map_err(|e| ApiError::InvalidArgument(e.0)),
        _ => Err(ApiError::InvalidArgument(
            "max_requests and window_duration_seconds go together: send both or neither".into(),
        )),
    }
}

/// Whole seconds, rounded up: a reset or retry time a client obeys is never early.
pub(super) fn seconds_ceil(t: Micros) -> u64 {
    t.div_ceil(1_000_000)
}

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

pub(super) fn rate_headers(headers: &mut HeaderMap, limit: u64, remaining: u64, reset_in: u64) {
    headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(limit));
    headers.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(remaining));
    headers.insert(RATELIMIT_RESET.clone(), HeaderValue::from(reset_in));
}

#[utoipa::path(
    post,
    path = "/api/check_and_consume",
    tag = "decisions",
    security((), ("tenant_key" = []), ("admin_token" = [])),
    request_body = CheckBody,
    responses(
        (status = 200, description = "Allowed (status processed, or fail_open when the store is down and policy is allow)", body = DecisionBody, headers(("RateLimit-Limit" = u64, description = "The limit's max_requests"), ("RateLimit-Remaining" = u64, description = "Requests left in the window"), ("RateLimit-Reset" = u64, description = "Seconds until the oldest counted request leaves the window"))),
        (status = 429, description = "Denied by the limit", body = DecisionBody, headers(("Retry-After" = u64, description = "Whole seconds until a request of this cost fits"), ("RateLimit-Limit" = u64), ("RateLimit-Remaining" = u64), ("RateLimit-Reset" = u64))),
        (status = 400, description = "invalid_json, invalid_argument or no_limit", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized (with --decision-auth tenant-keys): no key, a malformed one, or one that matches no key; the same answer whether or not the tenant exists", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 403, description = "forbidden: a valid key of another tenant (with --decision-auth tenant-keys); or unknown_tenant: the tenant has no configuration (with --unknown-tenants deny)", body = crate::error::ErrorBody),
        (status = 408, description = "body_timeout: the body did not arrive within --body-timeout or at --body-min-rate; the connection is closed", body = crate::error::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = crate::error::ErrorBody),
        (status = 414, description = "uri_too_long", body = crate::error::ErrorBody),
        (status = 431, description = "headers_too_large: over 64 header fields or 16 KiB of headers", body = crate::error::ErrorBody),
        (status = 503, description = "Shed (tenant_queue_full, queue_timeout, shutting_down; with allowed/status/reason), store_unavailable, key_budget_exhausted or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn check_and_consume(
    State(state): State<AppState>,
    credential: Credential,
    Json(body): Json<CheckBody>,
) -> Result<Response, ApiError> {
    credential.check(&state, &body.tenant_id)?;
    let requested = requested_limit(body.max_requests, body.window_duration_seconds)?;
    let key = RateKey::new(&body.tenant_id, &body.client_id, &body.action_type);
    let result = state
        .engine()
        .check_and_consume(DecisionRequest {
            key,
            requested,
            cost: body.cost.unwrap_or(1),
        })
        .await;
    // With --on-store-error allow a store outage fails open, so an error here means deny.
    let decision = result.map_err(|e| {
        ApiError::from(e).with_store_context(
            "the service is configured to refuse decisions on store errors (--on-store-error deny); retry after the Retry-After delay",
        )
    })?;
    decision_response(&decision, "processed")
}

/// The answer for a decision-shaped result (decide, report, refund).
pub(super) fn decision_response(
    decision: &Decision,
    processed: &'static str,
) -> Result<Response, ApiError> {
    let limit = decision.limit;
    let queue_wait_ms = decision.waited.as_micros() as f64 / 1000.0;
    let (status_code, body, reset_in, retry_in) = match decision.outcome {
        Outcome::Decided(v) => {
            let retry = v.retry_at.map(|r| r.saturating_sub(v.now));
            let parts = policy_parts(decision, v.now);
            let (remaining, reset_at, limit_view, limits, shadow_limit) = match parts {
                Some(p) => (p.remaining, p.reset_at, p.limit, p.limits, p.shadow_limit),
                None => (
                    v.remaining(&limit),
                    v.reset_at,
                    LimitView::new(limit, decision.source),
                    None,
                    None,
                ),
            };
            let body = DecisionBody {
                allowed: v.allowed,
                remaining_requests: remaining,
                reset_time_seconds: seconds_ceil(reset_at),
                retry_after_seconds: retry.map(|r| (r.div_ceil(1000)) as f64 / 1000.0),
                status: processed,
                limit: limit_view,
                limits,
                shadow_denied: shadow_limit.is_some(),
                shadow_limit,
                queue_wait_ms,
            };
            let code = if v.allowed {
                StatusCode::OK
            } else {
                StatusCode::TOO_MANY_REQUESTS
            };
            (
                code,
                body,
                seconds_ceil(reset_at.saturating_sub(v.now)),
                retry,
            )
        }
        Outcome::FailOpen { now } => (
            StatusCode::OK,
            DecisionBody {
                allowed: true,
                remaining_requests: limit.max_requests,
                reset_time_seconds: seconds_ceil(now),
                retry_after_seconds: None,
                status: "fail_open",
                limit: LimitView::new(limit, decision.source),
                limits: None,
                shadow_denied: false,
                shadow_limit: None,
                queue_wait_ms,
            },
            0,
            None,
        ),
    };
    let remaining = body.remaining_requests;
    let bytes = serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut resp = (status_code, bytes).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let header_limit = decision
        .policy
        .limits
        .get(decision.reported)
        .map_or(limit.max_requests, |pl| pl.capacity());
    rate_headers(headers, header_limit, remaining, reset_in);
    if let Some(r) = retry_in {
        // Retry-After is whole seconds; round up so a client that obeys it is not denied again.
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(seconds_ceil(r).max(1)),
        );
    }
    Ok(resp)
}

/// The caller's own limit, used when none is configured; both or neither.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    #[serde(default)]
    #[param(minimum = 1, maximum = 1_000_000_000)]
    max_requests: Option<u64>,
    /// Seconds, rounded to the nearest millisecond (at least one).
    #[serde(default)]
    #[param(minimum = 0.001, maximum = 31_536_000.0)]
    window_duration_seconds: Option<f64>,
}

/// Usage of one key under its effective limit.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StatusBody<'a> {
    tenant_id: &'a str,
    client_id: &'a str,
    action_type: &'a str,
    current_requests: u64,
    remaining_requests: u64,
    reset_time_seconds: u64,
    limit: LimitView,
    /// Every limit, when several apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<Vec<PolicyLimitView>>,
}

#[utoipa::path(
    get,
    path = "/api/status/{tenant}/{client}/{action}",
    tag = "decisions",
    security((), ("tenant_key" = []), ("admin_token" = [])),
    params(("tenant" = String, Path, description = "Tenant id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"), ("client" = String, Path, description = "Client id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"), ("action" = String, Path, description = "Action type: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"), StatusQuery),
    responses(
        (status = 200, description = "Usage without consuming anything", body = StatusBody, headers(("RateLimit-Limit" = u64, description = "The limit's max_requests"), ("RateLimit-Remaining" = u64, description = "Requests left in the window"), ("RateLimit-Reset" = u64, description = "Seconds until the oldest counted request leaves the window"))),
        (status = 400, description = "invalid_json, invalid_argument or no_limit", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized (with --decision-auth tenant-keys): no key, a malformed one, or one that matches no key; the same answer whether or not the tenant exists", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 403, description = "forbidden: a valid key of another tenant (with --decision-auth tenant-keys); or unknown_tenant: the tenant has no configuration (with --unknown-tenants deny)", body = crate::error::ErrorBody),
        (status = 414, description = "uri_too_long", body = crate::error::ErrorBody),
        (status = 431, description = "headers_too_large: over 64 header fields or 16 KiB of headers", body = crate::error::ErrorBody),
        (status = 503, description = "Shed (tenant_queue_full, queue_timeout, shutting_down; with allowed/status/reason), store_unavailable, key_budget_exhausted or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    credential: Credential,
    Path((tenant, client, action)): Path<(String, String, String)>,
    Query(q): Query<StatusQuery>,
) -> Result<Response, ApiError> {
    credential.check(&state, &tenant)?;
    let requested = requested_limit(q.max_requests, q.window_duration_seconds)?;
    let key = RateKey::new(&tenant, &client, &action);
    let d = state
        .engine()
        .status(key, requested)
        .await
        .map_err(|e| {
            ApiError::from(e).with_store_context(
                "status reads the store and cannot answer until it is back; meanwhile decisions follow --on-store-error (allow, the default: admitted uncounted as fail_open; deny: refused with 503)",
            )
        })?;
    let Outcome::Decided(v) = d.outcome else {
        return Err(ApiError::Internal("the store answered no verdict".into()));
    };
    let parts = policy_parts(&d, v.now)
        .ok_or_else(|| ApiError::Internal("the store answered no verdict".into()))?;
    let capacity = d
        .policy
        .limits
        .get(d.reported)
        .map_or(d.limit.max_requests, |pl| pl.capacity());
    let body = StatusBody {
        tenant_id: &tenant,
        client_id: &client,
        action_type: &action,
        current_requests: v.used,
        remaining_requests: parts.remaining,
        reset_time_seconds: seconds_ceil(parts.reset_at),
        limit: parts.limit,
        limits: parts.limits,
    };
    let mut resp = axum::Json(&body).into_response();
    rate_headers(
        resp.headers_mut(),
        capacity,
        body.remaining_requests,
        seconds_ceil(parts.reset_at.saturating_sub(v.now)),
    );
    Ok(resp)
}
