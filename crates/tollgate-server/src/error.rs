//! The one error type of the HTTP API. Every failure becomes `{"error": code, "message": text}`
//! with the right status; internals are logged, never returned.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tollgate_core::config::ConfigError;
use tollgate_core::load::Shed;
use tollgate_core::store::StoreError;
use tollgate_core::LimitError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    InvalidJson(String),
    InvalidArgument(String),
    NoLimit(String),
    NotFound(String),
    MethodNotAllowed,
    Unauthorized(String),
    /// A valid credential for a different tenant than the one the call is for.
    Forbidden(String),
    /// The tenant has no configuration and `--unknown-tenants deny` is in effect.
    UnknownTenant(String),
    PayloadTooLarge,
    /// Shed by the load manager before a decision.
    Shed(Shed),
    StoreUnavailable(String),
    KeyBudgetExhausted(String),
    /// The request URI is longer than the service accepts.
    UriTooLong,
    /// The request head has more header fields or bytes than the service accepts.
    HeadersTooLarge,
    /// A configuration write while `--config FILE` is the source of truth; holds the path.
    ConfigManagedByFile(String),
    /// The request did not complete within the per-request timeout.
    RequestTimeout,
    /// The request body did not arrive within `--body-timeout` or at `--body-min-rate`.
    BodyTimeout,
    Internal(String),
}

/// Every 4xx/5xx body. Load-shedding answers (503 `tenant_queue_full`, `queue_timeout`,
/// `shutting_down`) also carry `allowed: false`, `status` and `reason`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    /// Machine-readable code: invalid_json, invalid_argument, no_limit, not_found,
    /// method_not_allowed, unauthorized, forbidden, unknown_tenant, config_managed_by_file,
    /// payload_too_large, uri_too_long, headers_too_large,
    /// tenant_queue_full, queue_timeout, shutting_down, store_unavailable, key_budget_exhausted,
    /// request_timeout, body_timeout, internal.
    error: &'a str,
    /// What is wrong and how to fix it.
    message: &'a str,
    /// Shed responses also carry the decision fields the contract gives them.
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidArgument(_) => "invalid_argument",
            ApiError::NoLimit(_) => "no_limit",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::UnknownTenant(_) => "unknown_tenant",
            ApiError::ConfigManagedByFile(_) => "config_managed_by_file",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::Shed(Shed::QueueFull) => "tenant_queue_full",
            ApiError::Shed(Shed::Timeout) => "queue_timeout",
            ApiError::Shed(Shed::ShuttingDown) => "shutting_down",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::KeyBudgetExhausted(_) => "key_budget_exhausted",
            ApiError::UriTooLong => "uri_too_long",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) | ApiError::InvalidArgument(_) | ApiError::NoLimit(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::UnknownTenant(_) => StatusCode::FORBIDDEN,
            ApiError::ConfigManagedByFile(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Shed(_) | ApiError::StoreUnavailable(_) | ApiError::KeyBudgetExhausted(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::InvalidJson(m)
            | ApiError::InvalidArgument(m)
            | ApiError::NoLimit(m)
            | ApiError::NotFound(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::UnknownTenant(m)
            | ApiError::StoreUnavailable(m)
            | ApiError::KeyBudgetExhausted(m) => m.clone(),
            ApiError::MethodNotAllowed => {
                "this path does not accept that HTTP method; see the API reference in the README"
                    .into()
            }
            ApiError::ConfigManagedByFile(path) => format!(
                "the configuration is managed by the file {path} (--config), which is the source of truth: edit that file instead (it is applied within a few seconds of a change, or at once on SIGHUP). Reads, and issuing and revoking tenant API keys, stay allowed through the API"
            ),
            ApiError::PayloadTooLarge => "request body exceeds the 64 KiB limit".into(),
            ApiError::UriTooLong => format!(
                "request URI exceeds {} bytes; ids are at most 256 bytes each",
                crate::hardening::MAX_URI_BYTES
            ),
            ApiError::HeadersTooLarge => format!(
                "request headers exceed {} fields or {} bytes",
                crate::hardening::MAX_HEADERS,
                crate::hardening::MAX_HEADER_BYTES
            ),
            ApiError::RequestTimeout => {
                "the request did not complete within the per-request timeout (--request-timeout); retry after the Retry-After delay".into()
            }
            ApiError::BodyTimeout => {
                "the request body did not arrive within --body-timeout or fell below --body-min-rate; the connection is closed".into()
            }
            ApiError::Shed(Shed::QueueFull) => {
                "the service is saturated and this tenant's queue is full; retry after the Retry-After delay".into()
            }
            ApiError::Shed(Shed::Timeout) => {
                "the service is saturated and the request waited longer than the queue timeout; retry after the Retry-After delay".into()
            }
            ApiError::Shed(Shed::ShuttingDown) => {
                "the service is shutting down; retry on another instance".into()
            }
            // Internal details go to the log, not to the client.
            ApiError::Internal(_) => "internal error; the service logged the details".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(detail, "internal error");
        }
        let message = self.message();
        let (allowed, status, reason) = match &self {
            ApiError::Shed(Shed::QueueFull) => {
                (Some(false), Some("rejected"), Some("tenant_queue_full"))
            }
            ApiError::Shed(Shed::Timeout) => (Some(false), Some("timeout"), Some("queue_timeout")),
            ApiError::Shed(Shed::ShuttingDown) => {
                (Some(false), Some("rejected"), Some("shutting_down"))
            }
            _ => (None, None, None),
        };
        let body = ErrorBody {
            error: self.code(),
            message: &message,
            allowed,
            status,
            reason,
        };
        let bytes =
            serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
        let mut resp = (self.status(), bytes).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp.extensions_mut()
            .insert(crate::access_log::ErrorCode(self.code()));
        resp
    }
}

impl ApiError {
    /// Adds `context` to a `store_unavailable` message; other errors pass unchanged.
    pub fn with_store_context(self, context: &str) -> Self {
        match self {
            ApiError::StoreUnavailable(m) => ApiError::StoreUnavailable(format!("{m}; {context}")),
            other => other,
        }
    }
}

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Invalid(e) => ApiError::InvalidArgument(e.0),
            LimitError::NoLimit => ApiError::NoLimit(e.to_string()),
            LimitError::Shed(s) => ApiError::Shed(s),
            LimitError::Store(s) => s.into(),
            LimitError::UnknownTenant => ApiError::UnknownTenant(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::KeyBudgetExhausted { .. } | StoreError::TenantKeyBudget(_) => {
                ApiError::KeyBudgetExhausted(e.to_string())
            }
            // Which call failed, and under which policy, is added by the handler that knows.
            StoreError::Unavailable(_) => ApiError::StoreUnavailable(format!(
                "{e}; the rate-limit store could not be reached, so this request could not be answered"
            )),
            // The key name is internal (and logged with the reason); the client learns what to do.
            StoreError::Corrupt { .. } => ApiError::StoreUnavailable(
                "the stored state of this rate-limit key was corrupt and has been reset, so this request could not be answered; retry".into(),
            ),
            // A feature the configured store lacks is the service's fault, not the client's.
            StoreError::Unsupported(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::NotFound(m) => ApiError::NotFound(m),
            ConfigError::Invalid(m) => ApiError::InvalidArgument(m),
            // The data dir or Redis could not be written (or read back): an outage, not a bug.
            // The running configuration is unchanged; the detail (paths, Redis errors) is logged.
            ConfigError::Persist(detail) => {
                tracing::warn!(detail, "configuration change not applied");
                ApiError::StoreUnavailable(
                    "the configuration store could not be written, so the change was not applied; retry later"
                        .into(),
                )
            }
            ConfigError::Conflict { .. } | ConfigError::Corrupt(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}
