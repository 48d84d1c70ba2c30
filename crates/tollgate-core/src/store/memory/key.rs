//! How the memory store keeps a key: the three ids in one compact buffer, inside the table slot
//! when short.
//!
//! Why inline: with a key in its own heap block, a lookup among a million keys paid one more
//! dependent cache miss (slot, then key) before it could even compare. Typical keys (a tenant and
//! an action of about ten bytes, a client id of ten to twenty) fit in [`INLINE`] bytes; longer ones
//! go to the heap and cost that miss.
//!
//! Layout: `len(tenant) len(client) tenant client action`. A length below 255 is one byte; a longer
//! one is 255 followed by the length as 8 bytes little-endian. The lengths make the encoding
//! injective (tenant `a:b` + client `c` differs from tenant `a` + client `b:c`).

use crate::limit::RateKey;

/// Bytes of encoded key kept inside the slot; with the tag and length byte the key is 40 bytes.
pub(super) const INLINE: usize = 38;

/// Longest length header: a marker byte and 8 length bytes, for each of the first two ids.
const MAX_HEADER: usize = 2 * 9;

pub(super) enum StoredKey {
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    /// A long key keeps its hash beside the pointer, so probing past it compares hashes and only
    /// reads the heap block of the key it is after.
    Heap {
        hash: u64,
        bytes: Box<[u8]>,
    },
}

impl StoredKey {
    /// The stored form of `key`, whose hash is `hash`.
    pub(super) fn new(key: &RateKey<'_>, hash: u64) -> Self {
        let (header, header_len) = header(key);
        let ids = [key.tenant, key.client, key.action].map(str::as_bytes);
        let len = header_len + ids.iter().map(|id| id.len()).sum::<usize>();
        if len <= INLINE {
            let mut bytes = [0; INLINE];
            let mut at = 0;
            for piece in std::iter::once(&header[..header_len]).chain(ids) {
                bytes[at..at + piece.len()].copy_from_slice(piece);
                at += piece.len();
            }
            // `len <= INLINE` (38) fits a byte.
            StoredKey::Inline {
                len: len as u8,
                bytes,
            }
        } else {
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(&header[..header_len]);
            for id in ids {
                v.extend_from_slice(id);
            }
            StoredKey::Heap {
                hash,
                bytes: v.into_boxed_slice(),
            }
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            StoredKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            StoredKey::Heap { bytes, .. } => bytes,
        }
    }

    /// Whether this is the stored form of `key` (whose hash is `hash`), compared without building
    /// that form.
    #[inline]
    pub(super) fn is(&self, key: &RateKey<'_>, hash: u64) -> bool {
        let stored = match self {
            StoredKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            StoredKey::Heap { hash: h, .. } if *h != hash => return false,
            StoredKey::Heap { bytes, .. } => bytes,
        };
        let (t, c, a) = (
            key.tenant.as_bytes(),
            key.client.as_bytes(),
            key.action.as_bytes(),
        );
        let body = if t.len() < 255 && c.len() < 255 {
            // The usual case, two one-byte lengths: checked without building a header (this
            // comparison runs on every decision; the general path cost it ~100 instructions).
            match stored {
                [tl, cl, body @ ..]
                    if usize::from(*tl) == t.len() && usize::from(*cl) == c.len() =>
                {
                    body
                }
                _ => return false,
            }
        } else {
            let (header, header_len) = header(key);
            match stored.strip_prefix(&header[..header_len]) {
                Some(body) => body,
                None => return false,
            }
        };
        body.len() == t.len() + c.len() + a.len()
            && same(&body[..t.len()], t)
            && same(&body[t.len()..t.len() + c.len()], c)
            && same(&body[t.len() + c.len()..], a)
    }

    /// The three ids back, for rehashing when a table grows.
    pub(super) fn ids(&self) -> [&[u8]; 3] {
        let bytes = self.bytes();
        let (t_len, rest) = read_len(bytes);
        let (c_len, rest) = read_len(rest);
        // Stored keys were written by `new`, so the lengths fit; clamp rather than panic anyway.
        let (tenant, rest) = rest.split_at(t_len.min(rest.len()));
        let (client, action) = rest.split_at(c_len.min(rest.len()));
        [tenant, client, action]
    }
}

/// Whether two byte strings are equal, compared inline eight bytes at a time. Ids are short, and
/// `==` on slices calls `memcmp`: three calls per lookup cost more than the comparisons (~10 ns of
/// a ~100 ns hot-key decision in the profile).
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let (a8, a_rest) = a.as_chunks::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    a.len() == b.len()
        && a8.iter().zip(b8).all(|(x, y)| x == y)
        && a_rest.iter().zip(b_rest).all(|(x, y)| x == y)
}

/// The length header of `key` and how many of its bytes are used.
#[inline]
fn header(key: &RateKey<'_>) -> ([u8; MAX_HEADER], usize) {
    let mut out = [0; MAX_HEADER];
    let mut at = 0;
    for len in [key.tenant.len(), key.client.len()] {
        if len < 255 {
            out[at] = len as u8;
            at += 1;
        } else {
            out[at] = 255;
            out[at + 1..at + 9].copy_from_slice(&(len as u64).to_le_bytes());
            at += 9;
        }
    }
    (out, at)
}

fn read_len(bytes: &[u8]) -> (usize, &[u8]) {
    match bytes.split_first() {
        Some((&255, rest)) if rest.len() >= 8 => {
            let (len, rest) = rest.split_at(8);
            let mut le = [0; 8];
            le.copy_from_slice(len);
            (
                usize::try_from(u64::from_le_bytes(le)).unwrap_or(usize::MAX),
                rest,
            )
        }
        Some((&len, rest)) => (usize::from(len), rest),
        None => (0, bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_compares_exactly() {
        let long = "x".repeat(300);
        let (l254, l255) = ("y".repeat(254), "z".repeat(255));
        let keys = [
            RateKey::new("a:b", "c", "x"),
            RateKey::new("a", "b:c", "x"),
            RateKey::new("ab", "c", "x"),
            RateKey::new("a", "bc", "x"),
            RateKey::new("a", "b", "cx"),
            RateKey::new("tenant-123", "client-123456", "api_call"),
            RateKey::new("tenant-123", "client-1234567", "api_call"),
            RateKey::new(&long, "c", "a"),
            RateKey::new("t", &long, "a"),
            RateKey::new("t", "c", &long),
            RateKey::new(&l254, &l255, "a"),
            RateKey::new(&l255, &l254, "a"),
            RateKey::new("", "", ""),
        ];
        for k in &keys {
            let stored = StoredKey::new(k, 1);
            let [t, c, a] = stored.ids();
            assert_eq!(
                (t, c, a),
                (
                    k.tenant.as_bytes(),
                    k.client.as_bytes(),
                    k.action.as_bytes()
                )
            );
            for other in &keys {
                assert_eq!(stored.is(other, 1), k == other, "{k:?} vs {other:?}");
            }
        }
    }

    /// The chunked comparison against `==`: every length through two chunks and a tail, with one
    /// byte changed at every position, and lengths that differ.
    #[test]
    fn same_is_byte_equality() {
        for len in 0..=20usize {
            let a: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            assert!(same(&a, &a.clone()));
            for at in 0..len {
                let mut b = a.clone();
                b[at] ^= 0x40;
                assert!(!same(&a, &b), "len {len}, byte {at}");
            }
            assert!(!same(&a, &a[..len.saturating_sub(1)]) || len == 0);
        }
    }

    #[test]
    fn typical_keys_are_inline_and_the_slot_stays_small() {
        assert_eq!(std::mem::size_of::<StoredKey>(), 40);
        let k = StoredKey::new(&RateKey::new("tenant-123", "client-123456", "api_call"), 1);
        assert!(matches!(k, StoredKey::Inline { .. }));
        let uuid = "6f1c2a0e-9a4b-4c1e-8f57-2b8e5d1f0c3a";
        let key = RateKey::new("org_a_123", uuid, "api_call");
        let k = StoredKey::new(&key, 1);
        assert!(matches!(k, StoredKey::Heap { .. }));
        // A heap key is only read when the hash matches.
        assert!(k.is(&key, 1));
        assert!(!k.is(&key, 2));
    }
}
