//! Heavy hitters: a Space-Saving sketch of fixed size. It keeps `K` counters; a key already
//! counted is incremented, a new key takes over the smallest counter and inherits its count as its
//! possible overcount (`error`). Any key seen more than `n / K` times in `n` records is guaranteed
//! to be in it, and the memory is fixed whatever the number of distinct keys.
//!
//! Keys are matched by a 64-bit hash of (tenant, client, action); each counter reuses its own
//! string buffer for the key's text, so after warming up a record never allocates.

use crate::limit::{Limit, RateKey};

/// Counters per sketch.
pub const K: usize = 32;

/// One counted key.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    pub hash: u64,
    pub count: u64,
    /// How much of `count` may belong to keys this counter held before.
    pub error: u64,
    pub tenant: String,
    pub client: String,
    pub action: String,
    /// The limit of the key's latest decision.
    pub limit: Option<Limit>,
}

/// A fixed-size Space-Saving sketch.
#[derive(Debug, Default)]
pub struct Sketch {
    counters: Vec<Counter>,
}

fn set(buf: &mut String, s: &str) {
    buf.clear();
    buf.push_str(s);
}

impl Sketch {
    pub fn record(&mut self, hash: u64, key: RateKey<'_>, limit: Option<Limit>) {
        if let Some(c) = self.counters.iter_mut().find(|c| c.hash == hash) {
            c.count += 1;
            if limit.is_some() {
                c.limit = limit;
            }
            return;
        }
        let c = if self.counters.len() < K {
            self.counters.push(Counter::default());
            let last = self.counters.len() - 1;
            let c = &mut self.counters[last];
            c.error = 0;
            c.count = 1;
            c
        } else {
            let c = self
                .counters
                .iter_mut()
                .min_by_key(|c| c.count)
                .expect("the sketch is full, so it has counters");
            c.error = c.count;
            c.count += 1;
            c
        };
        c.hash = hash;
        c.limit = limit;
        set(&mut c.tenant, key.tenant);
        set(&mut c.client, key.client);
        set(&mut c.action, key.action);
    }

    /// The counters holding counts since the last drain, copied out; the counts are reset while
    /// the counters (and their buffers) are kept for reuse.
    pub fn drain(&mut self) -> Vec<Counter> {
        let out: Vec<Counter> = self
            .counters
            .iter()
            .filter(|c| c.count > 0)
            .cloned()
            .collect();
        for c in &mut self.counters {
            c.count = 0;
            c.error = 0;
            c.hash = 0;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heavy_key_is_found_among_many_light_ones() {
        let mut s = Sketch::default();
        let heavy = RateKey::new("t", "heavy", "a");
        let names: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
        for (i, n) in names.iter().enumerate() {
            s.record(10_000 + i as u64, RateKey::new("t", n, "a"), None);
            s.record(1, heavy, None);
        }
        let top = s.drain();
        let h = top
            .iter()
            .find(|c| c.client == "heavy")
            .expect("heavy key kept");
        assert!(h.count >= 1000 && h.count - h.error <= 1000, "{h:?}");
        assert!(top.len() <= K);
        assert!(s.drain().is_empty(), "counts reset by the drain");
    }
}
