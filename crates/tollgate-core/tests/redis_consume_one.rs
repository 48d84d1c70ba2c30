//! The one-consume script (`redis_consume_one.lua`) is the general script (`redis_policy.lua`)
//! on its case: the same random sequences of consumes (every algorithm, windows and maxes changing
//! between calls, time jumps, with and without a creation token) sent to both scripts on two keys
//! give the same answers, leave the same bytes in the key and set the same expiry, call by call.
//! The store sends each script only its own case; this test sends both the same calls by hand.

#[path = "support/redis_server.rs"]
mod redis_server;

use redis_server::{skip_without_redis, RedisServer};
use tollgate_core::store::redis::{CONSUME_ONE_SCRIPT, SCRIPT};

/// A small deterministic generator (xorshift), so a failure names its seed and replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn general(
    c: &mut redis::Connection,
    key: &str,
    at: u64,
    args: (u8, bool, u64, u64, u64, u64),
) -> Result<Vec<i64>, String> {
    let (kind, may_create, cost, max, window, burst) = args;
    redis::Script::new(SCRIPT)
        .key(key)
        .arg("c")
        .arg(at)
        .arg(1)
        .arg(cost)
        .arg(if may_create { "1" } else { "0" })
        .arg(1)
        .arg(&[kind][..])
        .arg(max)
        .arg(window)
        .arg(burst)
        .invoke(c)
        .map_err(|e| e.to_string())
}

fn one(
    c: &mut redis::Connection,
    key: &str,
    at: u64,
    args: (u8, bool, u64, u64, u64, u64),
) -> Result<Vec<i64>, String> {
    let (kind, may_create, cost, max, window, burst) = args;
    let mut p = vec![kind, if may_create { b'1' } else { b'0' }];
    for v in [cost, max, window, burst] {
        p.extend_from_slice(&(v as f64).to_le_bytes());
    }
    let reply: Vec<u8> = redis::Script::new(CONSUME_ONE_SCRIPT)
        .key(key)
        .arg(p)
        .arg(at)
        .invoke(c)
        .map_err(|e| e.to_string())?;
    assert_eq!(reply.len(), 48, "six doubles");
    let f: Vec<i64> = reply
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as i64)
        .collect();
    let (flags, ok) = (f[1], i64::from(f[1] & 4 != 0));
    Ok(vec![
        f[0],
        i64::from(flags & 1 != 0),
        i64::from(flags & 2 != 0),
        ok,
        -1,
        i64::from(flags & 8 != 0),
        ok,
        f[2],
        f[3],
        f[4],
        f[5],
    ])
}

fn state(c: &mut redis::Connection, key: &str) -> (Option<Vec<u8>>, i64) {
    let v: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(c).unwrap();
    let e: i64 = redis::cmd("PEXPIRETIME").arg(key).query(c).unwrap();
    (v, e)
}

#[test]
fn the_one_consume_script_is_the_general_script_on_its_case() {
    if skip_without_redis("the_one_consume_script_is_the_general_script") {
        return;
    }
    let server = RedisServer::start();
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    // Times at or after the real clock: Redis expires keys on its own clock.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
        + 60_000_000;
    let mut calls = 0;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let kind = b"llllgcfdwm"[rng.below(10) as usize];
        let (a, b) = (format!("g{seed}"), format!("o{seed}"));
        let mut now = start;
        let windows = [1_000u64, 50_000, 1_000_000, 60_000_000];
        let mut window = windows[rng.below(4) as usize];
        let mut max = 1 + rng.below(6);
        for step in 0..300 {
            if rng.below(20) == 0 {
                window = windows[rng.below(4) as usize];
            }
            if rng.below(20) == 0 {
                max = 1 + rng.below(6);
            }
            // Mostly within a tick of the last call, sometimes across windows.
            now += match rng.below(10) {
                0..=4 => rng.below(3),
                5..=7 => rng.below(window / 4 + 1),
                _ => rng.below(window * 2),
            };
            let cost = 1 + rng.below(max.min(3));
            let may_create = rng.below(8) != 0;
            let args = (kind, may_create, cost, max, window, max + rng.below(3));
            let g = general(&mut c, &a, now, args);
            let o = one(&mut c, &b, now, args);
            let ctx = format!(
                "seed {seed} step {step} kind {} {args:?} at {now}",
                kind as char
            );
            assert_eq!(o, g, "{ctx}: answers");
            let (sa, sb) = (state(&mut c, &a), state(&mut c, &b));
            assert_eq!(sb, sa, "{ctx}: key bytes and expiry");
            calls += 1;
        }
    }
    assert_eq!(calls, 40 * 300);
}
