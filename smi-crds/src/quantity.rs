//! Kubernetes resource quantities (`"900m"`, `"1"`, `"1k"`, `"2Ki"`) and the
//! int-or-quantity weight used by TrafficSplit and ServiceProfile overrides.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Why a quantity string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string was empty.
    #[error("empty quantity")]
    Empty,
    /// The string is not a Kubernetes quantity.
    #[error(
        "invalid quantity {input:?}: {reason} (expected e.g. \"900m\", \"1\", \"1k\", \"2Ki\")"
    )]
    Invalid {
        /// The rejected input.
        input: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// Too large to represent in milli-units.
    #[error("quantity {0:?} is out of range")]
    OutOfRange(String),
}

/// Parses a Kubernetes quantity into milli-units (`"900m"` → 900,
/// `"1"` → 1000, `"1k"` → 1 000 000). Signed so validators can report
/// negative weights instead of failing to parse them. Values finer than a
/// milli-unit round up, as Kubernetes' `MilliValue` does.
pub fn parse_quantity_milli(input: &str) -> Result<i64, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let invalid = |reason| QuantityError::Invalid {
        input: input.to_string(),
        reason,
    };
    let out_of_range = || QuantityError::OutOfRange(input.to_string());

    let (negative, rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_end);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(invalid("missing number"));
    }
    if frac_part.contains('.') {
        return Err(invalid("more than one decimal point"));
    }

    // value = digits / 10^frac_len * 10^dec_exp * 2^bin_exp
    let (dec_exp, bin_exp): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other => match other.strip_prefix(['e', 'E']) {
            Some(exp) if !exp.is_empty() => {
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid("malformed exponent"));
                }
                (exp.parse().map_err(|_| out_of_range())?, 0)
            }
            _ => return Err(invalid("unknown suffix")),
        },
    };

    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = digits.parse().map_err(|_| out_of_range())?;
    let frac_len = i32::try_from(frac_part.len()).map_err(|_| out_of_range())?;
    // Milli-units add three decimal places.
    let exp10 = dec_exp + 3 - frac_len;
    let pow10 = |e: i32| -> Result<i128, QuantityError> {
        10i128
            .checked_pow(e.unsigned_abs())
            .ok_or_else(out_of_range)
    };
    let mut numerator = mantissa
        .checked_mul(1i128 << bin_exp)
        .ok_or_else(out_of_range)?;
    let mut denominator: i128 = 1;
    if exp10 >= 0 {
        numerator = numerator
            .checked_mul(pow10(exp10)?)
            .ok_or_else(out_of_range)?;
    } else if mantissa != 0 {
        denominator = pow10(exp10)?;
    }
    // Round the magnitude up so tiny positive weights never become zero.
    let magnitude = (numerator + denominator - 1) / denominator;
    let signed = if negative { -magnitude } else { magnitude };
    i64::try_from(signed).map_err(|_| out_of_range())
}

/// A weight written either as an integer (`90`) or a quantity string
/// (`"900m"`). Every TrafficSplit version deserializes through this type so
/// objects stored under one version and read under another (the API server
/// does not convert SMI versions) still parse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Weight {
    /// A plain integer weight, meaning that many whole units.
    Int(i64),
    /// A Kubernetes quantity string such as `"900m"`.
    Quantity(String),
}

impl Weight {
    /// The weight in milli-units, the common scale used for normalization.
    pub fn milli(&self) -> Result<i64, QuantityError> {
        match self {
            Weight::Int(n) => n
                .checked_mul(1000)
                .ok_or_else(|| QuantityError::OutOfRange(n.to_string())),
            Weight::Quantity(q) => parse_quantity_milli(q),
        }
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct WeightVisitor;

        impl Visitor<'_> for WeightVisitor {
            type Value = Weight;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a quantity string such as \"900m\"")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Weight, E> {
                Ok(Weight::Int(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Weight, E> {
                Ok(i64::try_from(v).map_or_else(|_| Weight::Quantity(v.to_string()), Weight::Int))
            }

            // YAML turns `weight: 0.5` into a float; keep it as the quantity it means.
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Weight, E> {
                Ok(Weight::Quantity(v.to_string()))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Weight, E> {
                Ok(Weight::Quantity(v.to_string()))
            }
        }

        d.deserialize_any(WeightVisitor)
    }
}

impl From<i64> for Weight {
    fn from(n: i64) -> Self {
        Weight::Int(n)
    }
}

impl From<&str> for Weight {
    fn from(q: &str) -> Self {
        Weight::Quantity(q.to_string())
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Weight::Int(n) => write!(f, "{n}"),
            Weight::Quantity(q) => f.write_str(q),
        }
    }
}

impl JsonSchema for Weight {
    fn schema_name() -> Cow<'static, str> {
        "Weight".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "description": "An integer weight or a Kubernetes quantity such as \"900m\"."
        })
    }
}

/// Schema helper for fields typed [`Weight`] whose CRD version only allows
/// integers (TrafficSplit v1alpha2 and later).
pub(crate) fn integer_weight_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int64",
        "description": "Relative weight of this backend."
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_quantities() {
        let cases = [
            ("900m", 900),
            ("100m", 100),
            ("1", 1000),
            ("0", 0),
            ("0.5", 500),
            (".25", 250),
            ("1k", 1_000_000),
            ("2Ki", 2_048_000),
            ("1e3", 1_000_000),
            ("5E-1", 500),
            ("+3", 3000),
            ("-100m", -100),
            ("1u", 1),
            ("1500n", 1),
        ];
        for (input, want) in cases {
            assert_eq!(parse_quantity_milli(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "abc", "1x", "1.2.3", "m", "1e", "1e+", "--1", "1 k", "0x10",
        ] {
            assert!(parse_quantity_milli(bad).is_err(), "{bad:?} should fail");
        }
        assert!(matches!(
            parse_quantity_milli("100E"),
            Err(QuantityError::OutOfRange(_))
        ));
    }

    #[test]
    fn weight_accepts_int_or_string() {
        let w: Weight = serde_json::from_str("90").unwrap();
        assert_eq!(w.milli().unwrap(), 90_000);
        let w: Weight = serde_json::from_str("\"900m\"").unwrap();
        assert_eq!(w.milli().unwrap(), 900);
        let w: Weight = serde_json::from_str("0.25").unwrap();
        assert_eq!(w.milli().unwrap(), 250);
        assert!(serde_json::from_str::<Weight>("[1]").is_err());
    }
}
