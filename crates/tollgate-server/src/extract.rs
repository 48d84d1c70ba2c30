//! Extractors that turn every malformed input into the API's JSON error instead of axum's
//! plain-text rejections.

use axum::body::Bytes;
use std::collections::HashMap;

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_path_to_error::Segment;

use crate::error::ApiError;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body: syntax errors are `invalid_json`, wrong types or missing fields `invalid_argument`.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(Json)
    }
}

/// The raw body, for routes whose body is optional; read errors are JSON like [`Json`]'s.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(body_error)
    }
}

fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::InvalidJson(format!("could not read the request body: {e}"))
    }
}

/// Parses JSON quickly; only on failure re-parses to name the offending field.
///
/// Every body of the API is a JSON object: serde would also fill a struct from an array of its
/// fields in order, which no client means, so anything but an object is refused up front.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    refuse_non_object(bytes)?;
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(e) => {
            use serde_json::error::Category;
            match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => Err(ApiError::InvalidJson(
                    format!("request body is not valid JSON: {e}"),
                )),
                Category::Data => Err(ApiError::InvalidArgument(data_error::<T>(bytes, &e))),
            }
        }
    }
}

/// Re-parses a body that failed on its data to say which field is wrong, what it accepts, and
/// what was sent, as written by the client.
fn data_error<T: DeserializeOwned>(bytes: &[u8], e: &serde_json::Error) -> String {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let detail = match serde_path_to_error::deserialize::<_, T>(de) {
        Err(pe) => match pe.path().iter().next_back() {
            Some(Segment::Map { key }) => {
                let raw: Option<HashMap<String, &RawValue>> = serde_json::from_slice(bytes).ok();
                let given = raw.as_ref().and_then(|m| m.get(key)).map(|v| v.get());
                return bad_field(key, given, &pe.inner().to_string());
            }
            _ => pe.into_inner().to_string(),
        },
        Ok(_) => e.to_string(),
    };
    whole_body_error(&detail)
}

/// Errors not tied to one field's value: a missing or an unknown field.
fn whole_body_error(detail: &str) -> String {
    // serde's position suffix means nothing to someone reading a one-line body.
    let detail = detail.split(" at line ").next().unwrap_or(detail);
    if let Some(field) = detail
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return match field_rule(field) {
            Some(rule) => format!("{field} is required: {rule}"),
            None => format!("{field} is required"),
        };
    }
    shorten(detail)
}

/// The message for one field whose value could not be read: its rule and what was given.
pub fn bad_field(field: &str, given: Option<&str>, detail: &str) -> String {
    let given = given
        .map(|g| format!("; got {}", shorten(g)))
        .unwrap_or_default();
    match field_rule(field) {
        Some(rule) => format!("{field} must be {rule}{given}"),
        None => format!("{}: {}{given}", shorten(field), shorten(detail)),
    }
}

/// What each field of the API's bodies and queries accepts, as a person would say it.
fn field_rule(field: &str) -> Option<&'static str> {
    Some(match field {
        "tenant_id" | "client_id" | "action_type" => {
            "a string of 1 to 256 bytes of printable UTF-8"
        }
        "max_requests" => "a whole number from 1 to 1000000000",
        "window_duration_seconds" => {
            "a number of seconds greater than 0 and at most 31536000 (one year), in steps of 0.001"
        }
        "cost" => "a whole number from 1 to the limit's max_requests",
        "weight" => "a whole number from 1 to 1000",
        "max_global_concurrent_requests" => "a whole number from 1 to 1000000",
        "max_tenant_queue_size" => "a whole number from 0 to 1000000",
        "queue_timeout_ms" => "a whole number of milliseconds from 1 to 600000",
        "max_keys_per_tenant" | "new_keys_per_second" => "a whole number from 1 to 1000000000",
        "max_keys" => "a whole number from 1 to 1000000000, or null for the global value",
        "max_request_window_seconds" => {
            "a whole number of seconds from 1 to 31536000, or null for the global value"
        }
        "name" => "a string of at most 128 bytes",
        _ => return None,
    })
}

/// A client-sent text cut to a readable length, saying how long it really was.
pub fn shorten(text: &str) -> String {
    const KEEP: usize = 40;
    let len = text.chars().count();
    if len <= KEEP + 12 {
        return text.to_string();
    }
    let head: String = text.chars().take(KEEP).collect();
    format!("{head}... ({len} characters)")
}

fn refuse_non_object(bytes: &[u8]) -> Result<(), ApiError> {
    let kind = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None | Some(b'{') => return Ok(()),
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'-' | b'0'..=b'9') => "a number",
        // Not JSON at all: the parser names the syntax error.
        Some(_) => return Ok(()),
    };
    if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
        return Ok(());
    }
    Err(ApiError::InvalidArgument(format!(
        "the request body must be a JSON object ({{\"field\": value, ...}}), got {kind}"
    )))
}

/// Path parameters; a segment that is not valid UTF-8 is `invalid_argument`.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| ApiError::InvalidArgument(format!("invalid path: {e}")))
    }
}

/// Query parameters; malformed ones are `invalid_argument`.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize::<_, T>(de)
            .map(Query)
            .map_err(|pe| {
                let detail = pe.inner().to_string();
                let msg = match pe.path().iter().next_back() {
                    Some(Segment::Map { key }) => {
                        let given = form_urlencoded::parse(query.as_bytes())
                            .find(|(k, _)| k == key)
                            .map(|(_, v)| v.into_owned());
                        bad_field(key, given.as_deref(), &detail)
                    }
                    _ => whole_body_error(&detail),
                };
                ApiError::InvalidArgument(format!("query string: {msg}"))
            })
    }
}
