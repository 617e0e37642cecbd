//! Resolves a list of Debian packages to its dependency closure the way apt
//! does for a fresh install: Pre-Depends + Depends, alternatives in order
//! (an already chosen one wins), virtual packages through Provides, version
//! constraints checked against the candidate versions in the index.

use crate::debindex::{Alternatives, ArchQualifier, MultiArch, Package, Relation};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SolveError {
    #[error("package {package:?} (spec field `packages`) is not in the apt indices")]
    Missing { package: String },
    #[error("package {package:?} is both in the spec's `packages` and in its `exclude`")]
    Excluded { package: String },
    #[error(
        "cannot satisfy \"{dependency}\", needed by {}: {}",
        chain.join(" → "),
        reasons.join("; ")
    )]
    Unsatisfiable {
        dependency: String,
        /// From the spec's package down to the one that needs `dependency`.
        chain: Vec<String>,
        /// Why each alternative failed.
        reasons: Vec<String>,
    },
}

/// The candidate version of every package, and who provides each virtual name.
pub struct Index {
    packages: HashMap<String, Package>,
    providers: HashMap<String, Vec<String>>,
    arch: String,
}

impl Index {
    /// Builds the index; of several versions of one package the highest wins,
    /// which is apt's candidate when nothing is pinned.
    pub fn new(all: Vec<Package>, arch: &str) -> Index {
        let mut packages: HashMap<String, Package> = HashMap::new();
        for p in all {
            match packages.get(&p.name) {
                Some(have) if have.version >= p.version => {}
                _ => {
                    packages.insert(p.name.clone(), p);
                }
            }
        }
        let mut providers: HashMap<String, Vec<String>> = HashMap::new();
        for p in packages.values() {
            for (virt, _) in &p.provides {
                providers
                    .entry(virt.clone())
                    .or_default()
                    .push(p.name.clone());
            }
        }
        for v in providers.values_mut() {
            v.sort();
        }
        Index {
            packages,
            providers,
            arch: arch.into(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Package> {
        self.packages.get(name)
    }

    /// Whether `p` (already chosen or candidate) satisfies `r` directly or through Provides.
    fn satisfies(&self, p: &Package, r: &Relation) -> bool {
        let arch_ok = match &r.arch {
            ArchQualifier::Same => true,
            ArchQualifier::Any => p.multi_arch == MultiArch::Allowed || p.architecture == self.arch,
            ArchQualifier::Named(a) => {
                a == "native" || *a == p.architecture || p.architecture == "all"
            }
        };
        if !arch_ok {
            return false;
        }
        if p.name == r.name {
            return r.accepts(&p.version);
        }
        // A versioned dependency is only satisfied by a versioned Provides.
        p.provides.iter().any(|(virt, pv)| {
            *virt == r.name
                && match (&r.version, pv) {
                    (None, _) => true,
                    (Some(_), Some(v)) => r.accepts(v),
                    (Some(_), None) => false,
                }
        })
    }

    /// The candidate that would satisfy `r`: the real package, else the
    /// first provider by name; or why there is none.
    fn candidate(&self, r: &Relation) -> Result<&Package, String> {
        if let Some(p) = self.packages.get(&r.name) {
            if self.satisfies(p, r) {
                return Ok(p);
            }
            if !self.providers.contains_key(&r.name) {
                return Err(format!("{r}: the index has {} {}", p.name, p.version));
            }
        }
        let providers = self
            .providers
            .get(&r.name)
            .ok_or_else(|| format!("{r}: no such package in the apt indices"))?;
        providers
            .iter()
            .filter_map(|n| self.packages.get(n))
            .find(|p| self.satisfies(p, r))
            .ok_or_else(|| {
                format!(
                    "{r}: no provider satisfies it (provided by {})",
                    providers.join(", ")
                )
            })
    }
}

/// The closure of `roots`, sorted by name. An `exclude`d name counts as
/// satisfied (whatever depends on it gets nothing for it): the image's own
/// init replaces systemd and its helpers, and maintainer-script tools
/// (adduser, debconf, …) are never run because packages are only unpacked.
pub fn solve<'a>(
    index: &'a Index,
    roots: &[String],
    exclude: &[String],
) -> Result<Vec<&'a Package>, SolveError> {
    let excluded: BTreeSet<&str> = exclude.iter().map(String::as_str).collect();
    let mut chosen: BTreeMap<&str, &Package> = BTreeMap::new();
    // Each queued package with the chain of packages that pulled it in.
    let mut queue: VecDeque<(&Package, Vec<String>)> = VecDeque::new();
    for r in roots {
        if excluded.contains(r.as_str()) {
            return Err(SolveError::Excluded { package: r.clone() });
        }
        let p = index
            .get(r)
            .ok_or_else(|| SolveError::Missing { package: r.clone() })?;
        if chosen.insert(&p.name, p).is_none() {
            queue.push_back((p, vec![p.name.clone()]));
        }
    }
    while let Some((pkg, chain)) = queue.pop_front() {
        for group in pkg.requirements() {
            if satisfied(index, &chosen, &excluded, group) {
                continue;
            }
            let mut reasons = Vec::new();
            let mut pick = None;
            for alt in &group.0 {
                match index.candidate(alt) {
                    // A candidate of the same name as one already chosen
                    // would be a second version of it: apt cannot do that either.
                    Ok(p) if chosen.contains_key(p.name.as_str()) => {
                        reasons.push(format!("{alt}: {} {} is already chosen", p.name, p.version))
                    }
                    Ok(p) => {
                        pick = Some(p);
                        break;
                    }
                    Err(why) => reasons.push(why),
                }
            }
            let Some(p) = pick else {
                return Err(SolveError::Unsatisfiable {
                    dependency: group.to_string(),
                    chain,
                    reasons,
                });
            };
            chosen.insert(&p.name, p);
            let mut next = chain.clone();
            next.push(p.name.clone());
            queue.push_back((p, next));
        }
    }
    Ok(chosen.into_values().collect())
}

fn satisfied(
    index: &Index,
    chosen: &BTreeMap<&str, &Package>,
    excluded: &BTreeSet<&str>,
    group: &Alternatives,
) -> bool {
    group.0.iter().any(|r| {
        excluded.contains(r.name.as_str())
            || chosen
                .get(r.name.as_str())
                .is_some_and(|p| index.satisfies(p, r))
            || index.providers.get(&r.name).is_some_and(|ps| {
                ps.iter()
                    .filter_map(|n| chosen.get(n.as_str()))
                    .any(|p| index.satisfies(p, r))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debindex;

    fn stanza(name: &str, version: &str, extra: &str) -> String {
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\n{extra}Filename: pool/{name}.deb\nSize: 1\nSHA256: {}\n\n",
            "ab".repeat(32)
        )
    }

    fn index() -> Index {
        let text = [
            stanza("app", "1.0", "Depends: libc6 (>= 2.34), mta | default-mta, awk, tool:any\nPre-Depends: init-system-helpers (>= 1.54~)\n"),
            stanza("libc6", "2.36-9", "Depends: libgcc-s1\n"),
            stanza("libc6", "2.36-9+deb12u14", "Depends: libgcc-s1\n"),
            stanza("libgcc-s1", "12.2.0", "Depends: libc6 (>= 2.35)\n"),
            stanza("init-system-helpers", "1.65", "Depends: perl-base\n"),
            stanza("perl-base", "5.36", ""),
            stanza("exim4", "4.96", "Provides: mta\n"),
            stanza("postfix", "3.7", "Provides: default-mta, mail-transport-agent\n"),
            stanza("mawk", "1.3.4", "Provides: awk\n"),
            stanza("gawk", "5.2", "Provides: awk\n"),
            stanza("tool", "1", "Multi-Arch: allowed\n"),
            stanza("old", "1", "Depends: libc6 (>= 3)\n"),
            stanza("vers", "1", "Depends: ebtables (>= 2)\n"),
            stanza("iptables", "1.8", "Provides: ebtables (= 2.0.11)\n"),
        ]
        .concat();
        Index::new(debindex::parse(&text, "amd64").unwrap(), "amd64")
    }

    fn names(v: &[&Package]) -> Vec<String> {
        v.iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect()
    }

    #[test]
    fn closure_follows_depends_pre_depends_alternatives_and_provides() {
        let idx = index();
        let got = solve(&idx, &["app".into()], &[]).unwrap();
        assert_eq!(
            names(&got),
            [
                "app 1.0",
                "exim4 4.96",
                "gawk 5.2",
                "init-system-helpers 1.65",
                "libc6 2.36-9+deb12u14",
                "libgcc-s1 12.2.0",
                "perl-base 5.36",
                "tool 1",
            ],
            "virtual mta → its provider exim4; awk → the first provider by name"
        );
    }

    #[test]
    fn an_already_chosen_alternative_wins() {
        let idx = index();
        let got = solve(&idx, &["mawk".into(), "postfix".into(), "app".into()], &[]).unwrap();
        let n = names(&got);
        assert!(n.contains(&"mawk 1.3.4".into()), "{n:?}");
        assert!(!n.iter().any(|p| p.starts_with("gawk")), "{n:?}");
        assert!(
            !n.iter().any(|p| p.starts_with("exim4")),
            "postfix is default-mta: {n:?}"
        );
    }

    #[test]
    fn excluded_packages_count_as_satisfied() {
        let idx = index();
        let got = solve(&idx, &["app".into()], &["init-system-helpers".into()]).unwrap();
        let n = names(&got);
        assert!(
            !n.iter()
                .any(|p| p.starts_with("init-system") || p.starts_with("perl"))
        );
        assert_eq!(
            solve(&idx, &["app".into()], &["app".into()]).unwrap_err(),
            SolveError::Excluded {
                package: "app".into()
            }
        );
    }

    #[test]
    fn versioned_provides_satisfy_versioned_depends() {
        let idx = index();
        let got = solve(&idx, &["vers".into()], &[]).unwrap();
        assert!(names(&got).contains(&"iptables 1.8".into()));
    }

    #[test]
    fn unsatisfiable_and_missing_name_the_chain() {
        let idx = index();
        let err = solve(&idx, &["old".into()], &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("libc6 (>= 3)"), "{text}");
        assert!(text.contains("needed by old"), "{text}");
        assert!(text.contains("2.36-9+deb12u14"), "{text}");
        let err = solve(&idx, &["nope".into()], &[]).unwrap_err();
        assert!(err.to_string().contains("\"nope\""), "{err}");
    }
}
