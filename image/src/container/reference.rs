//! Image references: `REGISTRY/NAME[:TAG]`, with the registry always
//! explicit (there is no default registry to fall back on without the
//! internet), parsed into their parts with errors naming the bad part.

use super::recipe::valid_tag;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("image reference {given:?}: {reason}")]
pub struct ReferenceError {
    pub given: String,
    pub reason: String,
}

/// A parsed `REGISTRY/NAME:TAG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// Slash-separated lowercase components, e.g. `herd/pause`.
    pub name: String,
    pub tag: String,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.name, self.tag)
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        let bad = |reason: &str| ReferenceError {
            given: s.into(),
            reason: reason.into(),
        };
        let (registry, rest) = s
            .split_once('/')
            .ok_or_else(|| bad("expected REGISTRY/NAME:TAG, e.g. 10.77.0.1:5000/herd/pause:1"))?;
        // As Docker tells a registry from a first path component.
        let looks_like_host =
            registry.contains('.') || registry.contains(':') || registry == "localhost";
        if !looks_like_host {
            return Err(bad(
                "the first part must be a registry host (with a dot or a port, or localhost): \
                 herd never falls back to Docker Hub",
            ));
        }
        let host_ok = registry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !host_ok {
            return Err(bad(
                "the registry host has characters a host name cannot have",
            ));
        }
        let (name, tag) = match rest.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t),
            _ => (rest, "latest"),
        };
        if name.is_empty() || !name.split('/').all(valid_component) {
            return Err(bad(
                "the name's components must be lowercase letters and digits, \
                 separated by one of . _ __ -",
            ));
        }
        if !valid_tag(tag) {
            return Err(bad(
                "the tag must be 1–128 of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
        Ok(Reference {
            registry: registry.into(),
            name: name.into(),
            tag: tag.into(),
        })
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(&b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_name_and_tag() {
        let r: Reference = "127.0.0.1:5000/herd/pause:1".parse().unwrap();
        assert_eq!(
            r,
            Reference {
                registry: "127.0.0.1:5000".into(),
                name: "herd/pause".into(),
                tag: "1".into()
            }
        );
        assert_eq!(r.to_string(), "127.0.0.1:5000/herd/pause:1");
        let r: Reference = "registry.example/a.b/c__d-e".parse().unwrap();
        assert_eq!(r.tag, "latest");
        assert_eq!(r.name, "a.b/c__d-e");
    }

    #[test]
    fn rejects_what_docker_rejects() {
        for bad in [
            "herd/pause:1",
            "pause",
            "127.0.0.1:5000/Herd:1",
            "127.0.0.1:5000/herd:",
            "127.0.0.1:5000/herd/:1",
            "127.0.0.1:5000/a..b",
            "127.0.0.1:5000/-a",
            "127.0.0.1:5000/a:b:c",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad} parsed");
        }
        let err = "herd/pause:1".parse::<Reference>().unwrap_err().to_string();
        assert!(err.contains("Docker Hub"), "{err}");
    }
}
