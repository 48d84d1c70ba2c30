//! How Envoy's rate-limit descriptors become tollgate keys, limits and costs, and how tollgate's
//! answers become descriptor statuses. Pure functions; the README's "Envoy RLS" section is the
//! description of record.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::RateLimit;
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use tollgate_core::clock::Micros;
use tollgate_core::{Limit, LimitSource};

/// Joins descriptor parts injectively (DESIGN.md section 6): `\` and `|` inside a part are
/// escaped with a backslash, parts are separated by `|`. So `a|b` + `c` and `a` + `b|c` differ.
pub fn join<'a>(parts: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, p) in parts.enumerate() {
        if i > 0 {
            out.push('|');
        }
        for c in p.chars() {
            if c == '\\' || c == '|' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// A descriptor's key in tollgate's terms: the action (its entry keys) and the client (its entry
/// values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorKey {
    pub action: String,
    pub client: String,
}

/// The action and client of one descriptor.
pub fn descriptor_key(d: &RateLimitDescriptor) -> DescriptorKey {
    DescriptorKey {
        action: join(d.entries.iter().map(|e| e.key.as_str())),
        client: join(d.entries.iter().map(|e| e.value.as_str())),
    }
}

/// Seconds in one unit, as Envoy's own ratelimit service counts them (a month is 30 days, a year
/// 365 days).
const SECOND: u64 = 1;
const MINUTE: u64 = 60;
const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;
const WEEK: u64 = 7 * DAY;
const MONTH: u64 = 30 * DAY;
const YEAR: u64 = 365 * DAY;

/// The limit a descriptor carries itself (`limit: {requests_per_unit, unit}`), used only when no
/// client or action limit is configured. `Err` explains a limit tollgate cannot use.
pub fn override_limit(o: &RateLimitOverride) -> Result<Limit, String> {
    let secs = match RateLimitUnit::try_from(o.unit) {
        Ok(RateLimitUnit::Second) => SECOND,
        Ok(RateLimitUnit::Minute) => MINUTE,
        Ok(RateLimitUnit::Hour) => HOUR,
        Ok(RateLimitUnit::Day) => DAY,
        Ok(RateLimitUnit::Month) => MONTH,
        Ok(RateLimitUnit::Year) => YEAR,
        Ok(RateLimitUnit::Unknown) | Err(_) => {
            return Err(format!(
                "descriptor limit has unit {} which is not a time unit tollgate knows (SECOND, MINUTE, HOUR, DAY, MONTH, YEAR)",
                o.unit
            ))
        }
    };
    Limit::new(u64::from(o.requests_per_unit), secs as f64)
        .map_err(|e| format!("descriptor limit: {}", e.0))
}

/// The cost of one descriptor: its own `hits_addend`, else the request's; 0 means 1, as in Envoy.
pub fn cost(d: &RateLimitDescriptor, request_hits_addend: u32) -> u64 {
    let hits = d
        .hits_addend
        .map(|h| h.value)
        .unwrap_or(u64::from(request_hits_addend));
    hits.max(1)
}

/// `current_limit` for a limit: the unit equal to the window when the window is one whole unit
/// (1 s, 1 min, 1 h, 1 day, 7 days, 30 days, 365 days); otherwise unit `UNKNOWN`, with
/// `requests_per_unit` = `max_requests` and the window spelled out in the name.
pub fn current_limit(limit: &Limit, source: LimitSource, name: Option<&str>) -> RateLimit {
    let unit = match limit.window_micros {
        w if w == SECOND * 1_000_000 => Unit::Second,
        w if w == MINUTE * 1_000_000 => Unit::Minute,
        w if w == HOUR * 1_000_000 => Unit::Hour,
        w if w == DAY * 1_000_000 => Unit::Day,
        w if w == WEEK * 1_000_000 => Unit::Week,
        w if w == MONTH * 1_000_000 => Unit::Month,
        w if w == YEAR * 1_000_000 => Unit::Year,
        _ => Unit::Unknown,
    };
    let source = match source {
        LimitSource::Client => "client",
        LimitSource::Action => "action",
        LimitSource::Request => "descriptor",
    };
    let name = match name {
        Some(n) => n.to_string(),
        None => format!(
            "{source}: {} per {}s",
            limit.max_requests,
            limit.window_seconds()
        ),
    };
    RateLimit {
        name,
        requests_per_unit: u32::try_from(limit.max_requests).unwrap_or(u32::MAX),
        unit: unit as i32,
    }
}

/// A protobuf duration of `micros`.
pub fn duration(micros: Micros) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(micros / 1_000_000).unwrap_or(i64::MAX),
        nanos: ((micros % 1_000_000) * 1_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;

    fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn one_entry_is_action_key_and_client_value() {
        let k = descriptor_key(&desc(&[("user", "alice")]));
        assert_eq!(k.action, "user");
        assert_eq!(k.client, "alice");
    }

    #[test]
    fn entries_join_in_order_with_escapes() {
        let k = descriptor_key(&desc(&[("generic_key", "api"), ("path", "/a|b\\c")]));
        assert_eq!(k.action, "generic_key|path");
        assert_eq!(k.client, "api|/a\\|b\\\\c");
    }

    #[test]
    fn joining_is_injective_where_plain_joining_is_not() {
        let a = descriptor_key(&desc(&[("k", "a|b"), ("k2", "c")]));
        let b = descriptor_key(&desc(&[("k", "a"), ("k2", "b|c")]));
        assert_ne!(a.client, b.client);
        let c = descriptor_key(&desc(&[("a|b", "x")]));
        let d = descriptor_key(&desc(&[("a", "x"), ("b", "")]));
        assert_ne!(c.action, d.action);
    }

    #[test]
    fn hits_addend_descriptor_then_request_zero_is_one() {
        let mut d = desc(&[("a", "b")]);
        assert_eq!(cost(&d, 0), 1);
        assert_eq!(cost(&d, 5), 5);
        d.hits_addend = Some(envoy_types::pb::google::protobuf::UInt64Value { value: 3 });
        assert_eq!(cost(&d, 5), 3);
        d.hits_addend = Some(envoy_types::pb::google::protobuf::UInt64Value { value: 0 });
        assert_eq!(cost(&d, 5), 1);
    }

    #[test]
    fn units_round_trip_and_odd_windows_are_unknown() {
        let o = RateLimitOverride {
            requests_per_unit: 7,
            unit: RateLimitUnit::Minute as i32,
        };
        let l = override_limit(&o).unwrap();
        assert_eq!(l.window_micros, 60_000_000);
        let cl = current_limit(&l, LimitSource::Request, None);
        assert_eq!(cl.unit, Unit::Minute as i32);
        assert_eq!(cl.requests_per_unit, 7);
        let odd = Limit::new(5, 90.0).unwrap();
        let cl = current_limit(&odd, LimitSource::Action, None);
        assert_eq!(cl.unit, Unit::Unknown as i32);
        assert_eq!(cl.name, "action: 5 per 90s");
        let bad = RateLimitOverride {
            requests_per_unit: 7,
            unit: RateLimitUnit::Unknown as i32,
        };
        assert!(override_limit(&bad).is_err());
        let zero = RateLimitOverride {
            requests_per_unit: 0,
            unit: RateLimitUnit::Second as i32,
        };
        assert!(override_limit(&zero).is_err());
    }
}
