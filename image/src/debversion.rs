//! Debian package versions (`[epoch:]upstream[-revision]`) and their ordering, as dpkg defines it.

use std::cmp::Ordering;
use std::fmt;

/// A Debian version; ordered with dpkg's algorithm (`~` sorts before
/// everything, letters before other characters, digit runs numerically).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DebVersion {
    epoch: u64,
    upstream: String,
    revision: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{text:?} is not a Debian version: {reason}")]
pub struct VersionError {
    pub text: String,
    pub reason: &'static str,
}

impl DebVersion {
    pub fn parse(text: &str) -> Result<DebVersion, VersionError> {
        let bad = |reason| VersionError {
            text: text.into(),
            reason,
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(bad("empty"));
        }
        let (epoch, rest) = match t.split_once(':') {
            Some((e, rest)) => (e.parse().map_err(|_| bad("epoch is not a number"))?, rest),
            None => (0, t),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad("the upstream version must start with a digit"));
        }
        if !upstream
            .chars()
            .chain(revision.chars())
            .all(|c| c.is_ascii_alphanumeric() || ".+~-:".contains(c))
        {
            return Err(bad("only [A-Za-z0-9.+~-:] are allowed"));
        }
        Ok(DebVersion {
            epoch,
            upstream: upstream.into(),
            revision: revision.into(),
        })
    }
}

impl fmt::Display for DebVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != 0 {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.upstream)?;
        if !self.revision.is_empty() {
            write!(f, "-{}", self.revision)?;
        }
        Ok(())
    }
}

impl Ord for DebVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(&self.upstream, &other.upstream))
            .then_with(|| verrevcmp(&self.revision, &other.revision))
    }
}

impl PartialOrd for DebVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The weight of a non-digit character (0 for the end of the string).
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

/// dpkg's `verrevcmp`: alternating non-digit runs (by [`order`]) and digit runs (numerically).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (ca, cb) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ca != cb {
                return ca.cmp(&cb);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let (si, sj) = (i, j);
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        // Leading zeros are gone: a longer digit run is the bigger number.
        let by_len = (i - si).cmp(&(j - sj));
        if by_len != Ordering::Equal {
            return by_len;
        }
        let by_digits = a[si..i].cmp(&b[sj..j]);
        if by_digits != Ordering::Equal {
            return by_digits;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> DebVersion {
        DebVersion::parse(s).unwrap()
    }

    #[test]
    fn orders_like_dpkg() {
        // Pairs checked with `dpkg --compare-versions a lt b`.
        for (a, b) in [
            ("1.0~rc1", "1.0"),
            ("1.0", "1.0+b1"),
            ("1.0-1", "1.0-1+deb12u1"),
            ("2.9", "2.10"),
            ("2.0", "1:0.1"),
            ("1.0~rc8~", "1.0.0~rc8~"),
            ("20.10.24+dfsg1-1+deb12u1", "20.10.24+dfsg1-1+deb12u1+b6"),
            ("1.0a", "1.0+"),
            ("6.1.0-9", "6.1.0-10"),
        ] {
            assert!(v(a) < v(b), "{a} < {b}");
            assert!(v(b) > v(a), "{b} > {a}");
        }
        assert_eq!(v("1.02-1").cmp(&v("1.2-1")), Ordering::Equal);
        assert_eq!(v("0:1.0").to_string(), "1.0");
        assert_eq!(v("2:1.02.97").to_string(), "2:1.02.97");
    }

    #[test]
    fn garbage_is_rejected_with_the_text() {
        let err = DebVersion::parse("x:1").unwrap_err();
        assert!(err.to_string().contains("x:1"), "{err}");
        assert!(DebVersion::parse("").is_err());
        assert!(DebVersion::parse("abc").is_err());
    }
}
