//! OS versions as herd compares them: dot-separated numbers
//! (`3732.0.0`, `0.2.0`), optionally followed by `-` or `+` and a
//! pre-release tag that sorts before the plain version. Missing trailing
//! components count as zero (`1.2` = `1.2.0`).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A parsed version; displays as it was written.
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    parts: Vec<u64>,
    pre: Option<String>,
}

/// Why a string is not a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a version (numbers separated by dots, e.g. 1.2.0, optionally -tag): {reason}"
)]
pub struct VersionError {
    pub text: String,
    pub reason: &'static str,
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Version, VersionError> {
        let bad = |reason| VersionError {
            text: s.to_owned(),
            reason,
        };
        if s.is_empty() || s.len() > 128 {
            return Err(bad("empty or longer than 128 characters"));
        }
        let (core, pre) = match s.find(['-', '+']) {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        if let Some(p) = pre
            && (p.is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.+_".contains(&b)))
        {
            return Err(bad("the tag after - or + must be letters, digits, . - + _"));
        }
        let parts = core
            .split('.')
            .map(|p| {
                if p.is_empty() || p.len() > 19 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    Err(bad("each component is a number"))
                } else {
                    p.parse::<u64>()
                        .map_err(|_| bad("a component is too large"))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if parts.len() > 8 {
            return Err(bad("more than 8 components"));
        }
        Ok(Version {
            text: s.to_owned(),
            parts,
            pre: pre.map(str::to_owned),
        })
    }
}

impl Version {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The numbers without trailing zeros: equal versions have equal keys.
    fn key(&self) -> &[u64] {
        let end = self
            .parts
            .iter()
            .rposition(|p| *p != 0)
            .map_or(0, |i| i + 1);
        &self.parts[..end]
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let a = self.parts.get(i).copied().unwrap_or(0);
            let b = other.parts.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
        self.pre.hash(state);
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn versions_order_by_number_not_text() {
        assert!(v("0.10.0") > v("0.9.9"));
        assert!(v("3732.0.0") > v("2512.2.0"));
        assert_eq!(v("1.2"), v("1.2.0"));
        assert!(v("1.2.0-rc1") < v("1.2.0"));
        assert!(v("1.2.0-rc1") > v("1.1.9"));
        assert!(v("1.2.0-rc2") > v("1.2.0-rc1"));
        assert_eq!(v("0.2.0").to_string(), "0.2.0");
    }

    #[test]
    fn junk_is_refused_with_the_reason() {
        for bad in [
            "",
            "a.b",
            "1..2",
            "1.2.",
            "v1.2",
            "1.2-",
            "1.2-ä",
            "1.2.3.4.5.6.7.8.9",
        ] {
            let e = bad.parse::<Version>().unwrap_err();
            assert!(e.to_string().contains("is not a version"), "{bad}: {e}");
        }
        assert!("99999999999999999999".parse::<Version>().is_err());
    }

    proptest! {
        #[test]
        fn order_is_total_and_consistent(a in proptest::collection::vec(0u64..5, 1..4),
                                         b in proptest::collection::vec(0u64..5, 1..4)) {
            let s = |p: &[u64]| p.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
            let (x, y) = (v(&s(&a)), v(&s(&b)));
            prop_assert_eq!(x.cmp(&y), y.cmp(&x).reverse());
            prop_assert_eq!(x == y, x.cmp(&y) == Ordering::Equal);
            if x == y {
                use std::hash::{BuildHasher, RandomState};
                let h = RandomState::new();
                prop_assert_eq!(h.hash_one(&x), h.hash_one(&y));
            }
        }

        #[test]
        fn parsing_never_panics(s in ".{0,40}") {
            let _ = s.parse::<Version>();
        }
    }
}
