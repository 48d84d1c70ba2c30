//! Who may act for a tenant on the decision API: with `--decision-auth tenant-keys`, the holder
//! of one of the tenant's keys, or the admin token. The key check itself lives in
//! `tollgate_core::credentials`; this maps it to 401 / 403.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use tollgate_core::credentials::{authorize, Access};

use super::bearer_token;
use crate::error::ApiError;
use crate::state::{AppState, DecisionAuth};

/// The `Authorization` header of a decision call, taken only when keys are required (so the
/// default mode copies nothing).
pub struct Credential(Presented);

enum Presented {
    NotRequired,
    /// None, or more than one `Authorization` header (ambiguous, so refused).
    Missing,
    Given(HeaderValue),
}

impl FromRequestParts<AppState> for Credential {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.inner.decision_auth == DecisionAuth::None {
            return Ok(Credential(Presented::NotRequired));
        }
        let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
        Ok(Credential(match (values.next(), values.next()) {
            (Some(v), None) => Presented::Given(v.clone()),
            _ => Presented::Missing,
        }))
    }
}

impl Credential {
    /// Whether the caller may act for `tenant`. Call before anything reads or creates state.
    pub fn check(&self, state: &AppState, tenant: &str) -> Result<(), ApiError> {
        let value = match &self.0 {
            Presented::NotRequired => return Ok(()),
            Presented::Missing => return Err(unauthorized()),
            Presented::Given(v) => v,
        };
        let Some(token) = bearer_token(value.as_bytes()) else {
            return Err(unauthorized());
        };
        if state.is_admin(token) {
            return Ok(());
        }
        let Ok(token) = std::str::from_utf8(token) else {
            return Err(unauthorized());
        };
        match authorize(&state.engine().config(), tenant, token) {
            Access::Granted => Ok(()),
            Access::Unauthenticated => Err(unauthorized()),
            // Worded so it says nothing about whether the requested tenant exists.
            Access::OtherTenant => Err(ApiError::Forbidden(
                "this key is valid but not for the requested tenant_id; use a key issued for that tenant".into(),
            )),
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError::Unauthorized(
        "decision calls need the header 'Authorization: Bearer <key>' with a key of the tenant (or the admin token)".into(),
    )
}
