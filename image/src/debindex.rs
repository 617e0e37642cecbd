//! Debian package indices (`Packages` format) parsed into typed records: the
//! fields dependency resolution and verified downloads need.

use crate::debversion::{DebVersion, VersionError};
use std::collections::HashMap;
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("package index stanza {stanza} ({package}): field {field}: {reason}")]
    Field {
        stanza: usize,
        package: String,
        field: &'static str,
        reason: String,
    },
    #[error("package index stanza {stanza}: no Package field")]
    NoName { stanza: usize },
}

/// A relation operator in `pkg (op version)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "<<" => Op::Lt,
            // `<` and `>` are the obsolete spellings of `<=` and `>=`.
            "<=" | "<" => Op::Le,
            "=" => Op::Eq,
            ">=" | ">" => Op::Ge,
            ">>" => Op::Gt,
            _ => return None,
        })
    }

    pub fn holds(self, have: &DebVersion, want: &DebVersion) -> bool {
        let o = have.cmp(want);
        match self {
            Op::Lt => o.is_lt(),
            Op::Le => o.is_le(),
            Op::Eq => o.is_eq(),
            Op::Ge => o.is_ge(),
            Op::Gt => o.is_gt(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        })
    }
}

/// The `:arch` qualifier of a dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchQualifier {
    /// No qualifier: the depender's architecture.
    Same,
    /// `:any`: any architecture, if the target is `Multi-Arch: allowed`.
    Any,
    /// `:native` or a named architecture.
    Named(String),
}

/// One alternative of a dependency: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    pub arch: ArchQualifier,
    pub version: Option<(Op, DebVersion)>,
}

impl Relation {
    pub fn accepts(&self, version: &DebVersion) -> bool {
        self.version
            .as_ref()
            .is_none_or(|(op, want)| op.holds(version, want))
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.arch {
            ArchQualifier::Same => {}
            ArchQualifier::Any => f.write_str(":any")?,
            ArchQualifier::Named(a) => write!(f, ":{a}")?,
        }
        if let Some((op, v)) = &self.version {
            write!(f, " ({op} {v})")?;
        }
        Ok(())
    }
}

/// `a | b | c`: satisfied by any one alternative, preferred in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternatives(pub Vec<Relation>);

impl fmt::Display for Alternatives {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiArch {
    No,
    Same,
    Foreign,
    Allowed,
}

/// One binary package of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    pub name: String,
    pub version: DebVersion,
    pub architecture: String,
    pub multi_arch: MultiArch,
    pub pre_depends: Vec<Alternatives>,
    pub depends: Vec<Alternatives>,
    /// Virtual packages this one provides, with the version it provides them at.
    pub provides: Vec<(String, Option<DebVersion>)>,
    /// Path of the `.deb` in the archive (`pool/…`).
    pub filename: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the `.deb`.
    pub sha256: String,
}

impl Package {
    /// Pre-Depends first: they must be unpacked before the package itself.
    pub fn requirements(&self) -> impl Iterator<Item = &Alternatives> {
        self.pre_depends.iter().chain(&self.depends)
    }
}

/// Parses a whole index (stanzas separated by blank lines). Stanzas for
/// other architectures than `arch` (and `all`) are skipped.
pub fn parse(text: &str, arch: &str) -> Result<Vec<Package>, IndexError> {
    let mut out = Vec::new();
    for (i, stanza) in text.split("\n\n").enumerate() {
        if stanza.trim().is_empty() {
            continue;
        }
        if let Some(p) = parse_stanza(stanza, i + 1)?
            && (p.architecture == arch || p.architecture == "all")
        {
            out.push(p);
        }
    }
    Ok(out)
}

/// Field name → value of one stanza (continuation lines joined).
fn fields(stanza: &str) -> HashMap<&str, String> {
    let mut map: HashMap<&str, String> = HashMap::new();
    let mut last: Option<&str> = None;
    for line in stanza.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(k) = last
                && let Some(v) = map.get_mut(k)
            {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            map.insert(k, v.trim().to_string());
            last = Some(k);
        }
    }
    map
}

fn parse_stanza(stanza: &str, n: usize) -> Result<Option<Package>, IndexError> {
    let f = fields(stanza);
    let name = f
        .get("Package")
        .ok_or(IndexError::NoName { stanza: n })?
        .clone();
    let bad = |field: &'static str, reason: String| IndexError::Field {
        stanza: n,
        package: name.clone(),
        field,
        reason,
    };
    let need = |field: &'static str| {
        f.get(field)
            .cloned()
            .ok_or_else(|| bad(field, "missing".into()))
    };
    // Installed packages that no archive carries (a vendor's .deb) appear
    // without Filename: nothing could download them, so they are not offered.
    if !f.contains_key("Filename") {
        return Ok(None);
    }
    let version = DebVersion::parse(&need("Version")?)
        .map_err(|e: VersionError| bad("Version", e.to_string()))?;
    let multi_arch = match f.get("Multi-Arch").map(String::as_str) {
        None | Some("no") => MultiArch::No,
        Some("same") => MultiArch::Same,
        Some("foreign") => MultiArch::Foreign,
        Some("allowed") => MultiArch::Allowed,
        Some(other) => return Err(bad("Multi-Arch", format!("unknown value {other:?}"))),
    };
    let rels = |field: &'static str| -> Result<Vec<Alternatives>, IndexError> {
        match f.get(field) {
            Some(v) => parse_relations(v).map_err(|r| bad(field, r)),
            None => Ok(Vec::new()),
        }
    };
    let provides = rels("Provides")?
        .into_iter()
        .map(|alts| {
            let r = alts.0.into_iter().next().expect("non-empty group");
            (r.name, r.version.map(|(_, v)| v))
        })
        .collect();
    let sha256 = need("SHA256")?.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("SHA256", format!("{sha256:?} is not 64 hex digits")));
    }
    Ok(Some(Package {
        version,
        architecture: need("Architecture")?,
        multi_arch,
        pre_depends: rels("Pre-Depends")?,
        depends: rels("Depends")?,
        provides,
        filename: need("Filename")?,
        size: need("Size")?
            .parse()
            .map_err(|e| bad("Size", format!("{e}")))?,
        sha256,
        name,
    }))
}

/// Parses a relationship field: `a (>= 1), b:any | c [amd64] <!nocheck>`.
pub fn parse_relations(text: &str) -> Result<Vec<Alternatives>, String> {
    let mut groups = Vec::new();
    for group in text.split(',') {
        if group.trim().is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for alt in group.split('|') {
            alts.push(parse_relation(alt.trim()).map_err(|e| format!("{alt:?}: {e}"))?);
        }
        groups.push(Alternatives(alts));
    }
    Ok(groups)
}

fn parse_relation(s: &str) -> Result<Relation, String> {
    // Architecture lists `[…]` and build profiles `<…>` follow the version
    // and only appear in source packages: everything after `)` is dropped.
    let (head, version) = match s.split_once('(') {
        Some((head, rest)) => {
            let (inner, _) = rest.split_once(')').ok_or("unclosed '('")?;
            let inner = inner.trim();
            let split = inner
                .find(|c: char| !"<>=".contains(c))
                .ok_or("no version after the operator")?;
            let (op, v) = inner.split_at(split);
            let op = Op::parse(op.trim()).ok_or_else(|| format!("unknown operator {op:?}"))?;
            let v = DebVersion::parse(v.trim()).map_err(|e| e.to_string())?;
            (head.trim(), Some((op, v)))
        }
        None => (s.split(['[', '<']).next().unwrap_or_default().trim(), None),
    };
    let (name, arch) = match head.split_once(':') {
        Some((n, "any")) => (n, ArchQualifier::Any),
        Some((n, a)) => (n, ArchQualifier::Named(a.to_string())),
        None => (head, ArchQualifier::Same),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
    {
        return Err(format!("{name:?} is not a package name"));
    }
    Ok(Relation {
        name: name.into(),
        arch,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANZAS: &str = "Package: docker.io\nVersion: 20.10.24+dfsg1-1+deb12u1+b6\nArchitecture: amd64\nDepends: libc6 (>= 2.34), adduser, containerd (>= 1.4~), runc (>= 1.0.0~rc8~)\nPre-Depends: init-system-helpers (>= 1.54~)\nDescription: Linux container runtime\n long text\nFilename: pool/main/d/docker.io/docker.io_20.10.24_amd64.deb\nSize: 36256664\nSHA256: daf8ff8f7aa53e8533d38e386fcc2a11e8f3891210776fb78a84b98feb4eea0e\n\nPackage: mawk\nVersion: 1.3.4.20200120-3.1\nArchitecture: arm64\nFilename: x\nSize: 1\nSHA256: daf8ff8f7aa53e8533d38e386fcc2a11e8f3891210776fb78a84b98feb4eea0e\n\nPackage: iptables\nVersion: 1.8.9-2\nArchitecture: amd64\nMulti-Arch: foreign\nDepends: libip4tc2 (= 1.8.9-2), netbase | foo:any\nProvides: arptables, ebtables (= 2.0)\nFilename: y\nSize: 2\nSHA256: DAF8FF8F7AA53E8533D38E386FCC2A11E8F3891210776FB78A84B98FEB4EEA0E\n";

    #[test]
    fn parses_typed_records_for_the_arch() {
        let pkgs = parse(STANZAS, "amd64").unwrap();
        assert_eq!(pkgs.len(), 2, "the arm64 stanza is skipped");
        let d = &pkgs[0];
        assert_eq!(d.name, "docker.io");
        assert_eq!(
            d.pre_depends[0].to_string(),
            "init-system-helpers (>= 1.54~)"
        );
        assert_eq!(d.depends.len(), 4);
        assert_eq!(d.depends[2].0[0].version.as_ref().unwrap().0, Op::Ge);
        let i = &pkgs[1];
        assert_eq!(i.multi_arch, MultiArch::Foreign);
        assert_eq!(i.depends[1].0.len(), 2);
        assert_eq!(i.depends[1].0[1].arch, ArchQualifier::Any);
        assert_eq!(i.provides[1].0, "ebtables");
        assert_eq!(i.provides[1].1.as_ref().unwrap().to_string(), "2.0");
        assert!(i.sha256.starts_with("daf8"));
    }

    #[test]
    fn bad_fields_name_the_package_and_field() {
        let text = STANZAS.replace("(>= 1.4~)", "(=> )");
        let err = parse(&text, "amd64").unwrap_err().to_string();
        assert!(
            err.contains("docker.io") && err.contains("Depends"),
            "{err}"
        );
        let text = STANZAS.replace("Filename: x\n", "");
        assert_eq!(
            parse(&text, "arm64").unwrap().len(),
            0,
            "no Filename: not offered"
        );
        let text = STANZAS.replace("Size: 2\n", "");
        let err = parse(&text, "amd64").unwrap_err().to_string();
        assert!(err.contains("iptables") && err.contains("Size"), "{err}");
    }
}
