//! Unit names as systemd spells them: `prefix.service`, templates
//! `prefix@.service` and their instances `prefix@instance.service`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::UnitError;

/// A valid unit name (see the module doc). Only services run here: herd
/// has no systemd to hand sockets, timers or mounts to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UnitName(String);

/// What kind of name it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    /// `foo@.service`: never runs itself.
    Template,
    /// `foo@1.service`: runs from its template's file.
    Instance,
}

impl UnitName {
    pub fn parse(name: &str) -> Result<UnitName, UnitError> {
        let bad = |reason: &str| UnitError::Name {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        if name.is_empty() || name.len() > 255 {
            return Err(bad("must be 1 to 255 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
        {
            return Err(bad("may hold only ASCII letters, digits and : - _ . \\ @"));
        }
        let Some(stem) = name.strip_suffix(".service") else {
            return Err(bad(
                "must end in .service (herd runs services only: there is no systemd for sockets, timers or mounts)",
            ));
        };
        if stem.is_empty() || stem.starts_with('@') {
            return Err(bad("has an empty prefix"));
        }
        if stem.matches('@').count() > 1 {
            return Err(bad("has more than one @"));
        }
        Ok(UnitName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn stem(&self) -> &str {
        self.0.strip_suffix(".service").expect("checked in parse")
    }

    pub fn kind(&self) -> Kind {
        match self.stem().split_once('@') {
            None => Kind::Plain,
            Some((_, "")) => Kind::Template,
            Some(_) => Kind::Instance,
        }
    }

    /// `%p`: the part before `@` (or the whole name without its suffix).
    pub fn prefix(&self) -> &str {
        self.stem().split_once('@').map_or(self.stem(), |(p, _)| p)
    }

    /// `%i`: the instance (empty for plain units and templates).
    pub fn instance(&self) -> &str {
        self.stem().split_once('@').map_or("", |(_, i)| i)
    }

    /// `%N`: the name without its suffix.
    pub fn without_suffix(&self) -> &str {
        self.stem()
    }

    /// The template an instance is made from (`foo@1.service` → `foo@.service`).
    pub fn template(&self) -> Option<UnitName> {
        (self.kind() == Kind::Instance).then(|| UnitName(format!("{}@.service", self.prefix())))
    }

    /// The instance `instance` of this template.
    pub fn instantiate(&self, instance: &str) -> Result<UnitName, UnitError> {
        UnitName::parse(&format!("{}@{instance}.service", self.prefix()))
    }
}

/// systemd's unescaping (`-` → `/`, `\xNN` → the byte), for `%I` and `%P`.
pub fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            out.push(b'/');
        } else if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or(""), 16)
            {
                out.push(v);
                i += 4;
                continue;
            }
            out.push(b[i]);
        } else {
            out.push(b[i]);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TryFrom<String> for UnitName {
    type Error = UnitError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        UnitName::parse(&s)
    }
}

impl From<UnitName> for String {
    fn from(n: UnitName) -> String {
        n.0
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for UnitName {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UnitName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_instances() {
        let t = UnitName::parse("web@.service").unwrap();
        assert_eq!(t.kind(), Kind::Template);
        let i = t.instantiate("8080").unwrap();
        assert_eq!(i.as_str(), "web@8080.service");
        assert_eq!(i.kind(), Kind::Instance);
        assert_eq!(
            (i.prefix(), i.instance(), i.without_suffix()),
            ("web", "8080", "web@8080")
        );
        assert_eq!(i.template(), Some(t));
        let p = UnitName::parse("db.service").unwrap();
        assert_eq!(
            (p.kind(), p.prefix(), p.instance()),
            (Kind::Plain, "db", "")
        );
        assert_eq!(unescape("var-lib-x\\x2dy"), "var/lib/x-y");
    }

    #[test]
    fn bad_names_say_why() {
        for (name, why) in [
            ("x.socket", ".service"),
            ("", "1 to 255"),
            ("a b.service", "ASCII"),
            ("@x.service", "empty prefix"),
            ("a@b@c.service", "more than one"),
        ] {
            let e = UnitName::parse(name).unwrap_err().to_string();
            assert!(e.contains(why), "{name}: {e}");
        }
    }
}
