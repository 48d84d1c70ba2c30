//! Extractors that turn every malformed input into the API's JSON error instead of axum's
//! plain-text rejections.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

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
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(e) => {
            use serde_json::error::Category;
            match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => Err(ApiError::InvalidJson(
                    format!("request body is not valid JSON: {e}"),
                )),
                Category::Data => {
                    let de = &mut serde_json::Deserializer::from_slice(bytes);
                    let msg = match serde_path_to_error::deserialize::<_, T>(de) {
                        Err(pe)
                            if !pe.path().to_string().is_empty()
                                && pe.path().to_string() != "." =>
                        {
                            format!("{}: {}", pe.path(), pe.inner())
                        }
                        _ => e.to_string(),
                    };
                    Err(ApiError::InvalidArgument(msg))
                }
            }
        }
    }
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

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::InvalidArgument(format!("invalid query string: {}", e.body_text()))
            })
    }
}
