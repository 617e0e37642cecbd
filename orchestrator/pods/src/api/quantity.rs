//! Resource quantities (`100m` CPU, `128Mi` memory) as Kubernetes writes
//! them, kept as written and compared in thousandths.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A quantity as written (`"500m"`, `"1Gi"`, `2`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    /// Kubernetes accepts a bare number as well as a string.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
            F(f64),
        }
        Ok(Quantity(match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::I(i) => i.to_string(),
            Raw::F(f) => f.to_string(),
        }))
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "io.k8s.apimachinery.pkg.api.resource.Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A fixed-point number with an optional suffix: m (thousandths), k M G T P E (powers of 1000), Ki Mi Gi Ti Pi Ei (powers of 1024)."
        })
    }
}

impl Quantity {
    /// The value in thousandths (`"100m"` → 100, `"1Ki"` → 1 024 000), or
    /// `None` when it does not parse.
    pub fn millis(&self) -> Option<i128> {
        let s = self.0.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        if number.is_empty() {
            return None;
        }
        // Exponent form: 1e3, 12E6.
        let (mantissa, scale_exp): (&str, i32) = if let Some(exp) = suffix
            .strip_prefix('e')
            .or_else(|| suffix.strip_prefix('E'))
        {
            (number, exp.parse().ok()?)
        } else {
            (number, 0)
        };
        let factor: i128 = if scale_exp != 0 {
            1
        } else {
            match suffix {
                "" => 1000,
                "m" => 1,
                "k" => 1000 * 1000,
                "M" => 1000 * 1_000_000,
                "G" => 1000 * 1_000_000_000,
                "T" => 1000 * 1_000_000_000_000,
                "P" => 1000 * 1_000_000_000_000_000,
                "E" => 1000 * 1_000_000_000_000_000_000,
                "Ki" => 1000 << 10,
                "Mi" => 1000 << 20,
                "Gi" => 1000 << 30,
                "Ti" => 1000 << 40,
                "Pi" => 1000 << 50,
                "Ei" => 1000 << 60,
                _ => return None,
            }
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let negative = int.starts_with('-');
        let int = int.trim_start_matches(['+', '-']);
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let int: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut frac_scaled: i128 = 0;
        let mut denom: i128 = 1;
        for c in frac.chars().take(18) {
            frac_scaled = frac_scaled * 10 + i128::from(c.to_digit(10)?);
            denom *= 10;
        }
        let mut value = int * factor + frac_scaled * factor / denom;
        if scale_exp != 0 {
            value = int * 1000;
            let pow = 10i128.checked_pow(scale_exp.unsigned_abs())?;
            value = if scale_exp > 0 {
                value * pow
            } else {
                value / pow
            };
        }
        Some(if negative { -value } else { value })
    }
}

/// A resource list (`cpu`, `memory`, `pods`) in thousandths; unparsable
/// entries are left out (validation refuses them before they are stored).
pub fn millis_of(list: &BTreeMap<String, Quantity>) -> BTreeMap<String, i128> {
    list.iter()
        .filter_map(|(k, q)| Some((k.clone(), q.millis()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Option<i128> {
        Quantity(s.into()).millis()
    }

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        assert_eq!(q("100m"), Some(100));
        assert_eq!(q("1"), Some(1000));
        assert_eq!(q("0.5"), Some(500));
        assert_eq!(q("128Mi"), Some(128 * 1000 * 1024 * 1024));
        assert_eq!(q("1G"), Some(1000 * 1_000_000_000));
        assert_eq!(q("1e3"), Some(1_000_000));
        assert_eq!(q("abc"), None);
        assert_eq!(q("1Qi"), None);
        assert_eq!(q(""), None);
        let n: Quantity = serde_json::from_str("2").unwrap();
        assert_eq!(n.millis(), Some(2000));
    }
}
