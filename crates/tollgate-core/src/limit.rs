//! The values a decision is made from — a limit, a cost, the (tenant, client, action) identity — and
//! their validation. Everything that crosses the API boundary is checked here, once, so the engine
//! below can trust its inputs.

use serde::{Deserialize, Serialize};

use crate::clock::Micros;

/// Largest `max_requests` accepted.
pub const MAX_REQUESTS_CEILING: u64 = 1_000_000_000;
/// Longest window accepted: one year.
pub const MAX_WINDOW_SECONDS: f64 = 31_536_000.0;
/// Longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Why a value was refused. The message tells the caller what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidArgument(pub String);

fn invalid(msg: impl Into<String>) -> InvalidArgument {
    InvalidArgument(msg.into())
}

/// A rate limit: at most `max_requests` (summed cost) in any sliding window of `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    pub max_requests: u64,
    /// Window length in microseconds; always a whole number of milliseconds.
    pub window_micros: Micros,
}

impl Limit {
    /// Builds a limit from API values, refusing anything outside the documented ranges.
    pub fn new(max_requests: u64, window_seconds: f64) -> Result<Self, InvalidArgument> {
        if !(1..=MAX_REQUESTS_CEILING).contains(&max_requests) {
            return Err(invalid(format!(
                "max_requests must be an integer from 1 to {MAX_REQUESTS_CEILING}, got {max_requests}"
            )));
        }
        Ok(Self {
            max_requests,
            window_micros: window_micros(window_seconds)?,
        })
    }

    /// The window in seconds as the API reports it (millisecond resolution).
    pub fn window_seconds(&self) -> f64 {
        (self.window_micros / 1000) as f64 / 1000.0
    }
}

/// Converts an API window in seconds to microseconds, rounded to the nearest millisecond. The
/// smallest window is one millisecond: a shorter one cannot be kept at millisecond resolution, so it
/// is refused rather than silently lengthened. Between whole milliseconds the window is rounded (a
/// sub-millisecond rule cannot be stated exactly in the OpenAPI document: floating-point
/// `multipleOf` is unreliable, so clients generated from it would send values a stricter rule
/// refuses); responses echo the window in force, so the rounding is visible. The document states
/// the same range: `minimum: 0.001`, `maximum: 31536000`.
pub fn window_micros(seconds: f64) -> Result<Micros, InvalidArgument> {
    if !seconds.is_finite() || seconds <= 0.0 || seconds > MAX_WINDOW_SECONDS {
        return Err(invalid(format!(
            "window_duration_seconds must be a number from 0.001 (one millisecond) to {MAX_WINDOW_SECONDS}, got {}",
            readable(seconds)
        )));
    }
    if seconds < 0.001 {
        return Err(invalid(format!(
            "window_duration_seconds has millisecond resolution, so the shortest window is 0.001; got {}",
            readable(seconds)
        )));
    }
    let millis = (seconds * 1000.0).round();
    Ok(millis as Micros * 1000)
}

/// A number as a person writes it: `1e300`, not the 301 digits `{}` prints for it.
fn readable(x: f64) -> String {
    if x != 0.0 && x.is_finite() && !(1e-6..1e15).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// Checks one id (tenant, client or action): 1–256 bytes of UTF-8 with no control characters.
pub fn validate_id(field: &str, value: &str) -> Result<(), InvalidArgument> {
    if value.is_empty() || value.len() > MAX_ID_BYTES {
        return Err(invalid(format!(
            "{field} must be 1 to {MAX_ID_BYTES} bytes long, got {} bytes",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// Checks a request's cost against the limit it will be charged to.
pub fn validate_cost(cost: u64, limit: &Limit) -> Result<(), InvalidArgument> {
    if cost == 0 || cost > limit.max_requests {
        return Err(invalid(format!(
            "cost must be an integer from 1 to max_requests ({}), got {cost}",
            limit.max_requests
        )));
    }
    Ok(())
}

/// Which level of the hierarchy supplied the limit used for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitSource {
    /// A client-specific limit for this tenant and action.
    Client,
    /// The tenant's limit for this action.
    Action,
    /// The limit sent with the request itself.
    Request,
}

/// The identity a log is kept for. Owned strings are avoided on the hot path: this borrows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateKey<'a> {
    pub tenant: &'a str,
    pub client: &'a str,
    pub action: &'a str,
}

impl<'a> RateKey<'a> {
    pub fn new(tenant: &'a str, client: &'a str, action: &'a str) -> Self {
        Self {
            tenant,
            client,
            action,
        }
    }

    /// Validates all three ids.
    pub fn validate(&self) -> Result<(), InvalidArgument> {
        validate_id("tenant_id", self.tenant)?;
        validate_id("client_id", self.client)?;
        validate_id("action_type", self.action)
    }

    /// An injective byte encoding: each of the first two ids is prefixed by its length, so tenant
    /// `a:b` + client `c` and tenant `a` + client `b:c` can never produce the same bytes.
    /// The pieces go to `put` in order; their concatenation is the key. (The Redis store names
    /// its keys with this; the memory store keeps a more compact form of its own, `store/memory/key.rs`.)
    #[inline]
    fn encode_with(&self, mut put: impl FnMut(&[u8])) {
        // Decimal lengths by hand rather than `write!`: fmt was a measurable part of a decision
        // when every decision built this key.
        let mut digits = [0u8; 24];
        for id in [self.tenant, self.client] {
            put(decimal_colon(id.len(), &mut digits));
            put(id.as_bytes());
        }
        put(self.action.as_bytes());
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_with(|b| out.extend_from_slice(b));
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v =
            Vec::with_capacity(self.tenant.len() + self.client.len() + self.action.len() + 8);
        self.encode_into(&mut v);
        v
    }
}

/// `n` in decimal followed by `:`, written at the end of `buf`; returns the written part.
#[inline]
fn decimal_colon(mut n: usize, buf: &mut [u8; 24]) -> &[u8] {
    let mut i = buf.len() - 1;
    buf[i] = b':';
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_resolution() {
        assert_eq!(window_micros(0.25), Ok(250_000));
        assert_eq!(window_micros(60.0), Ok(60_000_000));
        assert_eq!(window_micros(0.001), Ok(1_000));
        // Shorter than the resolution: refused, never lengthened.
        assert!(window_micros(0.0004).is_err());
        assert!(window_micros(0.000_999).is_err());
        assert!(window_micros(5e-324).is_err());
        // Between whole milliseconds: rounded to the nearest one.
        assert_eq!(window_micros(1.0004), Ok(1_000_000));
        assert_eq!(window_micros(1.0016), Ok(1_002_000));
        assert_eq!(
            window_micros(14_380_609.958_988_953),
            Ok(14_380_609_959_000)
        );
        assert_eq!(window_micros(0.007), Ok(7_000));
        assert!(window_micros(0.0).is_err());
        assert!(window_micros(-1.0).is_err());
        assert!(window_micros(f64::NAN).is_err());
        assert!(window_micros(31_536_000.001).is_err());
        assert_eq!(window_micros(31_536_000.0), Ok(31_536_000_000_000));
    }

    #[test]
    fn limit_ranges() {
        assert!(Limit::new(0, 1.0).is_err());
        assert!(Limit::new(1_000_000_001, 1.0).is_err());
        assert!(Limit::new(1_000_000_000, 3600.0).is_ok());
    }

    #[test]
    fn ids() {
        assert!(validate_id("tenant_id", "").is_err());
        assert!(validate_id("tenant_id", &"x".repeat(257)).is_err());
        assert!(validate_id("tenant_id", &"x".repeat(256)).is_ok());
        assert!(validate_id("tenant_id", "a\nb").is_err());
        assert!(validate_id("tenant_id", "a\u{7f}b").is_err());
        assert!(validate_id("tenant_id", "org:ä/1 x").is_ok());
    }

    #[test]
    fn key_encoding_is_injective_across_separators() {
        let a = RateKey::new("a:b", "c", "x").encode();
        let b = RateKey::new("a", "b:c", "x").encode();
        assert_ne!(a, b);
        let c = RateKey::new("1:a", "b", "x").encode();
        let d = RateKey::new("1", "a1:b", "x").encode();
        assert_ne!(c, d);
    }

    #[test]
    fn key_encoding_layout() {
        assert_eq!(RateKey::new("org", "u", "act").encode(), b"3:org1:uact");
        let long = "t".repeat(256);
        let mut want = b"256:".to_vec();
        want.extend_from_slice(long.as_bytes());
        want.extend_from_slice(b"10:client-123x");
        assert_eq!(RateKey::new(&long, "client-123", "x").encode(), want);
    }
}
