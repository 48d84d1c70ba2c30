//! Whole-number fields that also take integral floats (`224.0`, `1e3`), as JSON Schema's
//! `integer` does: a client or a generated SDK that writes every number as a double must not be
//! refused a value the API documents as valid. Fractions, negatives and out-of-range values are
//! still refused, with serde's usual "invalid value" error for the caller to name the field.
//!
//! Use with `#[serde(deserialize_with = "whole_number::exact")]` on an integer field, or
//! `whole_number::option` on an `Option` of one (with `#[serde(default)]`).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Unexpected, Visitor};

/// 2^64 as a double: the first integral double a `u64` cannot hold.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

struct Whole<T>(PhantomData<T>);

impl<T: TryFrom<u64>> Whole<T> {
    fn fit<E: de::Error>(v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &"a smaller number"))
    }
}

impl<'de, T: TryFrom<u64>> Visitor<'de> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Self::fit(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(v) => Self::fit(v),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // `-0.0` is zero; any other negative, a fraction, or a value past u64 is refused.
        if v.is_finite() && v.fract() == 0.0 && v > -1.0 && v < TWO_POW_64 {
            Self::fit(v as u64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

/// A whole number; an integral float is taken as the integer it equals.
pub fn exact<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    d.deserialize_any(Whole(PhantomData))
}

struct OptionalWhole<T>(PhantomData<T>);

impl<'de, T: TryFrom<u64>> Visitor<'de> for OptionalWhole<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        exact(d).map(Some)
    }
}

/// An optional whole number: `null` (or, with `#[serde(default)]`, absence) is `None`.
pub fn option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    d.deserialize_option(OptionalWhole(PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct Body {
        #[serde(deserialize_with = "super::exact")]
        n: u32,
        #[serde(default, deserialize_with = "super::option")]
        m: Option<u64>,
    }

    fn parse(json: &str) -> Result<Body, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn integral_floats_are_integers() {
        let b = parse(r#"{"n": 224.0, "m": 1e3}"#).unwrap();
        assert_eq!((b.n, b.m), (224, Some(1000)));
        assert_eq!(parse(r#"{"n": -0.0}"#).unwrap().n, 0);
        assert_eq!(parse(r#"{"n": 7, "m": null}"#).unwrap().m, None);
        assert_eq!(parse(r#"{"n": 7}"#).unwrap().m, None);
        assert_eq!(
            parse(r#"{"n": 1, "m": 18446744073709551615}"#).unwrap().m,
            Some(u64::MAX)
        );
    }

    #[test]
    fn fractions_negatives_and_overflow_are_refused() {
        for bad in [
            r#"{"n": 1.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": -1.0}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": 4294967296.0}"#,
            r#"{"n": 1, "m": 1.8446744073709552e19}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": "5"}"#,
            r#"{"n": true}"#,
            r#"{"n": null}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
