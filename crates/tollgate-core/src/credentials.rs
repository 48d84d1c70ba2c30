//! Tenant API keys: issuing them, the form they are stored in, and checking one presented for a
//! tenant. Front ends (the HTTP server) map the [`Access`] answer to their protocol.
//!
//! A key reads `tg_<key_id>_<secret>`: `key_id` is 16 hex digits (64 random bits) naming the key
//! so it is found without scanning, `secret` is 64 hex digits (256 bits from the OS random number
//! generator). The configuration keeps only the SHA-256 of the whole key. A fast unsalted hash is
//! enough here, unlike for passwords: the secret has 256 bits of entropy, so a stolen hash cannot
//! be reversed by guessing, and a slow KDF would only cost every decision time.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Snapshot;

/// What every key starts with, so a leaked one is recognisable (e.g. by secret scanners).
pub const KEY_PREFIX: &str = "tg_";
/// Random bytes of a key id (16 hex digits).
const KEY_ID_BYTES: usize = 8;
/// Random bytes of a key's secret (64 hex digits): 256 bits.
const SECRET_BYTES: usize = 32;
/// Longest key name accepted.
pub const MAX_KEY_NAME_BYTES: usize = 128;
/// Most keys one tenant may hold (rotation needs two or three; this only stops runaway scripts).
pub const MAX_KEYS_PER_TENANT: usize = 100;

/// A key as the configuration stores it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRecord {
    /// Free text chosen by the operator, e.g. which service holds the key.
    #[serde(default)]
    pub name: String,
    /// Lowercase hex SHA-256 of the whole key (`tg_<key_id>_<secret>`).
    pub sha256: String,
    /// Unix time, seconds, when the key was issued.
    pub created_at: u64,
}

/// A newly issued key: its id, what to store, and the key itself, which is shown to the operator
/// once and kept nowhere.
pub struct IssuedKey {
    pub key_id: String,
    pub record: ApiKeyRecord,
    key: String,
}

impl IssuedKey {
    /// The whole key, `tg_<key_id>_<secret>`, to hand to the tenant.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl std::fmt::Debug for IssuedKey {
    // Never print the key: a Debug in a log line must not leak it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key_id", &self.key_id)
            .field("record", &self.record)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why a key could not be issued or stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("{0}")]
    Invalid(String),
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// Issues a new key named `name`, created at `now_unix_secs`.
pub fn issue(name: &str, now_unix_secs: u64) -> Result<IssuedKey, CredentialError> {
    if let Some(p) = name_problem(name) {
        return Err(CredentialError::Invalid(p));
    }
    let mut bytes = [0u8; KEY_ID_BYTES + SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| CredentialError::Random(e.to_string()))?;
    let key_id = hex(&bytes[..KEY_ID_BYTES]);
    let key = format!("{KEY_PREFIX}{key_id}_{}", hex(&bytes[KEY_ID_BYTES..]));
    let record = ApiKeyRecord {
        name: name.to_string(),
        sha256: hex(&Sha256::digest(key.as_bytes())),
        created_at: now_unix_secs,
    };
    Ok(IssuedKey {
        key_id,
        record,
        key,
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `id` has the form of a key id (16 lowercase hex digits).
pub fn is_key_id(id: &str) -> bool {
    is_lower_hex(id, KEY_ID_BYTES * 2)
}

fn name_problem(name: &str) -> Option<String> {
    if name.len() > MAX_KEY_NAME_BYTES {
        return Some(format!(
            "key name must be at most {MAX_KEY_NAME_BYTES} bytes, got {}",
            name.len()
        ));
    }
    name.chars()
        .any(char::is_control)
        .then(|| "key name must not contain control characters".to_string())
}

/// What is wrong with a stored key, if anything (for configuration validation).
pub fn record_problem(key_id: &str, record: &ApiKeyRecord) -> Option<String> {
    if !is_key_id(key_id) {
        return Some(format!(
            "key id must be {} lowercase hex digits",
            KEY_ID_BYTES * 2
        ));
    }
    if !is_lower_hex(&record.sha256, 64) {
        return Some("sha256 must be 64 lowercase hex digits".into());
    }
    name_problem(&record.name)
}

/// The answer to "may the holder of this key act for this tenant?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A valid key of the tenant.
    Granted,
    /// No key, a malformed one, or one that matches no stored key.
    Unauthenticated,
    /// A valid key, of another tenant.
    OtherTenant,
}

/// Splits `tg_<key_id>_<secret>` into the id; `None` when the shape is wrong.
fn key_id_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (is_key_id(id) && is_lower_hex(secret, SECRET_BYTES * 2)).then_some(id)
}

/// Checks `presented` (the whole key) for `tenant` against the configuration in `snap`.
///
/// The stored hash is compared in constant time, and a hash is computed even when the id is
/// unknown, so neither the answer nor its timing tells a guessed id from a guessed secret. A key
/// of another tenant is reported only when its secret is right, so ids cannot be probed either.
pub fn authorize(snap: &Snapshot, tenant: &str, presented: &str) -> Access {
    let digest = hex(&Sha256::digest(presented.as_bytes()));
    let stored = key_id_of(presented).and_then(|id| {
        let owner = snap.key_owners.get(id)?;
        let record = snap.tenants.get(owner.as_str())?.api_keys.get(id)?;
        Some((owner, record))
    });
    // A stand-in to compare against, so the unknown-id path does the same work.
    const NONE: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    let expected = stored.map_or(NONE, |(_, r)| r.sha256.as_str());
    let matches: bool = digest.as_bytes().ct_eq(expected.as_bytes()).into();
    match stored {
        Some((owner, _)) if matches => {
            if owner == tenant {
                Access::Granted
            } else {
                Access::OtherTenant
            }
        }
        _ => Access::Unauthenticated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_have_the_documented_shape_and_differ() {
        let a = issue("ci", 7).unwrap();
        let b = issue("ci", 7).unwrap();
        assert_ne!(a.key(), b.key());
        assert_ne!(a.key_id, b.key_id);
        assert_eq!(a.key().len(), 3 + 16 + 1 + 64);
        assert_eq!(key_id_of(a.key()), Some(a.key_id.as_str()));
        assert!(record_problem(&a.key_id, &a.record).is_none());
        assert!(!a.key().contains(&a.record.sha256));
        assert!(
            !format!("{a:?}").contains(a.key()),
            "Debug never shows the key"
        );
    }

    #[test]
    fn names_and_records_are_validated() {
        assert!(issue(&"x".repeat(MAX_KEY_NAME_BYTES + 1), 0).is_err());
        assert!(issue("bad\nname", 0).is_err());
        let ok = issue("", 0).unwrap();
        assert!(record_problem("ABCDEF0123456789", &ok.record).is_some());
        let mut r = ok.record.clone();
        r.sha256.pop();
        assert!(record_problem(&ok.key_id, &r).is_some());
    }

    #[test]
    fn malformed_keys_have_no_id() {
        for k in [
            "",
            "tg_",
            "tg_0123456789abcdef",
            "tg_0123456789abcdef_",
            "xx_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000",
            "tg_0123456789ABCDEF_0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert_eq!(key_id_of(k), None, "{k}");
        }
    }
}
