//! Profiles (what a machine boots) and groups (which machines get which
//! profile), loaded from YAML in matchbox's shape; the most specific
//! matching group wins.

pub mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::inventory::Mac;
pub use template::{TemplateError, Vars};

/// Where a profile's cloud-config template comes from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CloudConfigSource {
    File(PathBuf),
    Inline(String),
}

/// A profile as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    pub id: String,
    pub kernel: PathBuf,
    #[serde(default)]
    pub initrd: Vec<PathBuf>,
    #[serde(default)]
    pub cmdline: String,
    #[serde(default)]
    pub cloud_config: Option<CloudConfigSource>,
    /// After the agent reports a verified install, boot this machine from disk.
    #[serde(default)]
    pub install_to_disk: bool,
    /// Extra files served at `/assets/{profile}/files/{name}` (e.g. the
    /// `disk.img` and `manifest.json` a firstboot install fetches). Only
    /// these names are served, so a request can never reach another path.
    #[serde(default)]
    pub files: BTreeMap<String, PathBuf>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// What a group matches on; every field given must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    pub mac: Option<Mac>,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    /// How specific a selector is: one naming the machine itself (MAC or
    /// UUID) beats one naming a class of machines (hostname, labels); then
    /// more fields beat fewer.
    fn specificity(&self) -> (usize, usize) {
        let identity = usize::from(self.mac.is_some()) + usize::from(self.uuid.is_some());
        (
            identity,
            identity + usize::from(self.hostname.is_some()) + self.labels.len(),
        )
    }

    fn matches(&self, m: &MachineFacts) -> bool {
        self.mac.is_none_or(|mac| Some(mac) == m.mac)
            && self
                .uuid
                .as_ref()
                .is_none_or(|u| m.uuid.as_ref().is_some_and(|x| x.eq_ignore_ascii_case(u)))
            && self
                .hostname
                .as_ref()
                .is_none_or(|h| m.hostname.as_ref() == Some(h))
            && self.labels.iter().all(|(k, v)| m.labels.get(k) == Some(v))
    }
}

/// A group as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: String,
    pub profile: String,
    /// No selector (or an empty one) makes this the default group.
    #[serde(default)]
    pub selector: Selector,
    /// Extra template values for machines in this group.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The cluster join token handed to machines' cloud-configs.
    #[serde(default)]
    pub token: Option<String>,
    /// Addresses of existing cluster members.
    #[serde(default)]
    pub peers: Vec<String>,
    pub profiles: Vec<ProfileSpec>,
    #[serde(default)]
    pub groups: Vec<Group>,
}

/// A profile ready to serve: paths resolved, template loaded and checked.
#[derive(Debug, Clone)]
pub struct Profile {
    pub id: String,
    pub kernel: PathBuf,
    pub initrd: Vec<PathBuf>,
    pub cmdline: String,
    pub cloud_config: Option<String>,
    /// The file `cloud_config` was read from, if any (watched for reloads).
    pub cloud_config_path: Option<PathBuf>,
    pub install_to_disk: bool,
    pub files: BTreeMap<String, PathBuf>,
    pub metadata: BTreeMap<String, String>,
}

/// Why a profiles config is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: at `{field}`: {message}")]
    Parse {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("profile id {0:?} is used twice")]
    DuplicateProfile(String),
    #[error("group id {0:?} is used twice")]
    DuplicateGroup(String),
    #[error("group {group:?} names profile {profile:?}, which does not exist")]
    UnknownProfile { group: String, profile: String },
    #[error("groups {0:?} and {1:?} are both default groups (no selector)")]
    TwoDefaults(String, String),
    #[error("profile {profile:?}: {what} {path} does not exist")]
    MissingFile {
        profile: String,
        what: &'static str,
        path: PathBuf,
    },
    #[error(
        "profile {profile:?}: file name {name:?} must be letters, digits, `.`, `_` or `-` and not start with `.`"
    )]
    BadFileName { profile: String, name: String },
    #[error("profile {profile:?}: {what}: {source}")]
    Template {
        profile: String,
        what: &'static str,
        #[source]
        source: TemplateError,
    },
}

/// The facts a request or the inventory gives about a machine.
#[derive(Debug, Clone, Default)]
pub struct MachineFacts {
    pub mac: Option<Mac>,
    pub uuid: Option<String>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// The loaded, validated configuration. Swapped whole on reload.
#[derive(Debug, Clone)]
pub struct Profiles {
    pub token: Option<String>,
    pub peers: Vec<String>,
    profiles: BTreeMap<String, Profile>,
    groups: Vec<Group>,
    /// Files whose contents were read into this config: the YAML file and
    /// cloud-config templates. Kernels and initrds are read per request.
    sources: Vec<PathBuf>,
}

/// The profile a machine gets and the group that chose it.
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    pub group: &'a Group,
    pub profile: &'a Profile,
}

impl Profiles {
    /// Parses and validates a YAML config; relative paths are taken from
    /// the config file's directory. Blocking (reads files).
    pub fn load(path: &Path) -> Result<Profiles, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file = parse(&text).map_err(|(field, message)| ConfigError::Parse {
            path: path.to_owned(),
            field,
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut profiles = Profiles::from_file(file, base)?;
        profiles.sources.insert(0, path.to_owned());
        Ok(profiles)
    }

    /// Validates a parsed config (paths relative to `base`).
    pub fn from_file(file: ConfigFile, base: &Path) -> Result<Profiles, ConfigError> {
        let mut profiles = BTreeMap::new();
        for spec in file.profiles {
            let profile = load_profile(spec, base)?;
            if profiles.contains_key(&profile.id) {
                return Err(ConfigError::DuplicateProfile(profile.id));
            }
            profiles.insert(profile.id.clone(), profile);
        }
        let mut seen = BTreeMap::new();
        let mut default: Option<&str> = None;
        for g in &file.groups {
            if seen.insert(g.id.clone(), ()).is_some() {
                return Err(ConfigError::DuplicateGroup(g.id.clone()));
            }
            if !profiles.contains_key(&g.profile) {
                return Err(ConfigError::UnknownProfile {
                    group: g.id.clone(),
                    profile: g.profile.clone(),
                });
            }
            if g.selector.specificity() == (0, 0) {
                if let Some(d) = default {
                    return Err(ConfigError::TwoDefaults(d.to_owned(), g.id.clone()));
                }
                default = Some(&g.id);
            }
        }
        let sources = profiles
            .values()
            .filter_map(|p| p.cloud_config_path.clone())
            .collect();
        Ok(Profiles {
            token: file.token,
            peers: file.peers,
            profiles,
            groups: file.groups,
            sources,
        })
    }

    /// The files this config was read from, for change detection.
    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }

    pub fn profile(&self, id: &str) -> Option<&Profile> {
        self.profiles.get(id)
    }

    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }

    /// The most specific group matching `facts` (ties: first in the file).
    /// `None` when nothing matches and there is no default group.
    pub fn select(&self, facts: &MachineFacts) -> Option<Selected<'_>> {
        let mut best: Option<&Group> = None;
        for g in &self.groups {
            if g.selector.matches(facts)
                && best.is_none_or(|b| g.selector.specificity() > b.selector.specificity())
            {
                best = Some(g);
            }
        }
        let group = best?;
        Some(Selected {
            group,
            profile: &self.profiles[&group.profile],
        })
    }
}

/// Parses YAML, reporting the path of the offending field.
fn parse(text: &str) -> Result<ConfigFile, (String, String)> {
    // The path is captured on the side: the closure must hand serde-saphyr
    // its own error type back so it stops parsing cleanly.
    let mut field = None;
    serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, ConfigFile>(de).map_err(|e| {
            field = Some(e.path().to_string());
            e.into_inner()
        })
    })
    .map_err(|e| (field.unwrap_or_else(|| ".".to_owned()), e.to_string()))
}

fn load_profile(spec: ProfileSpec, base: &Path) -> Result<Profile, ConfigError> {
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };
    let kernel = abs(&spec.kernel);
    if !kernel.is_file() {
        return Err(ConfigError::MissingFile {
            profile: spec.id,
            what: "kernel",
            path: kernel,
        });
    }
    let mut initrd = Vec::new();
    for p in &spec.initrd {
        let p = abs(p);
        if !p.is_file() {
            return Err(ConfigError::MissingFile {
                profile: spec.id,
                what: "initrd",
                path: p,
            });
        }
        initrd.push(p);
    }
    let mut files = BTreeMap::new();
    for (name, p) in &spec.files {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !plain {
            return Err(ConfigError::BadFileName {
                profile: spec.id,
                name: name.clone(),
            });
        }
        let p = abs(p);
        if !p.is_file() {
            return Err(ConfigError::MissingFile {
                profile: spec.id,
                what: "file",
                path: p,
            });
        }
        files.insert(name.clone(), p);
    }
    let (cloud_config, cloud_config_path) = match spec.cloud_config {
        None => (None, None),
        Some(CloudConfigSource::Inline(s)) => (Some(s), None),
        Some(CloudConfigSource::File(p)) => {
            let p = abs(&p);
            let text = std::fs::read_to_string(&p).map_err(|_| ConfigError::MissingFile {
                profile: spec.id.clone(),
                what: "cloud_config file",
                path: p.clone(),
            })?;
            (Some(text), Some(p))
        }
    };
    let check = |what, t: &str| {
        template::check(t)
            .map(|_| ())
            .map_err(|source| ConfigError::Template {
                profile: spec.id.clone(),
                what,
                source,
            })
    };
    check("cmdline", &spec.cmdline)?;
    if let Some(c) = &cloud_config {
        check("cloud_config", c)?;
    }
    Ok(Profile {
        id: spec.id,
        kernel,
        initrd,
        cmdline: spec.cmdline,
        cloud_config,
        cloud_config_path,
        install_to_disk: spec.install_to_disk,
        files,
        metadata: spec.metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmlinuz"), b"k").unwrap();
        std::fs::write(dir.path().join("initrd.img"), b"i").unwrap();
        std::fs::write(dir.path().join("cc.yaml"), b"hostname: {{ hostname }}\n").unwrap();
        let cfg = dir.path().join("herd.yaml");
        (dir, cfg)
    }

    const GOOD: &str = r#"
token: secret
peers: [10.0.0.2]
profiles:
  - id: install
    kernel: vmlinuz
    initrd: [initrd.img]
    cmdline: "console=ttyS0 herd.url={{ server_url }}"
    cloud_config: { file: cc.yaml }
    install_to_disk: true
    metadata: { role: worker }
  - id: etcd
    kernel: vmlinuz
    cloud_config: { inline: "role: {{ metadata.role }}" }
groups:
  - id: default
    profile: install
  - id: rack1
    profile: etcd
    selector: { labels: { rack: "1" } }
  - id: one
    profile: install
    selector: { mac: "52:54:00:00:00:01", labels: { rack: "1" } }
"#;

    #[test]
    fn files_are_named_plainly_and_must_exist() {
        let (d, cfg) = fixture();
        std::fs::write(d.path().join("disk.img"), b"d").unwrap();
        let with = |files: &str| {
            GOOD.replace(
                "install_to_disk: true",
                &format!("install_to_disk: true\n    files: {files}"),
            )
        };
        std::fs::write(&cfg, with("{ disk.img: disk.img }")).unwrap();
        let p = Profiles::load(&cfg).unwrap();
        assert_eq!(
            p.profile("install").unwrap().files["disk.img"],
            d.path().join("disk.img")
        );
        for (files, needle) in [
            ("{ ../x: disk.img }", "file name \"../x\""),
            ("{ .hidden: disk.img }", "file name \".hidden\""),
            ("{ a/b: disk.img }", "file name \"a/b\""),
            ("{ usr.img: usr.img }", "usr.img does not exist"),
        ] {
            std::fs::write(&cfg, with(files)).unwrap();
            let err = Profiles::load(&cfg).unwrap_err().to_string();
            assert!(err.contains(needle), "{files}: {err}");
        }
    }

    #[test]
    fn most_specific_group_wins() {
        let (_d, cfg) = fixture();
        std::fs::write(&cfg, GOOD).unwrap();
        let p = Profiles::load(&cfg).unwrap();
        assert_eq!(p.token.as_deref(), Some("secret"));
        let mut facts = MachineFacts {
            mac: Some("52:54:00:00:00:01".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(p.select(&facts).unwrap().group.id, "default");
        facts.labels.insert("rack".into(), "1".into());
        assert_eq!(p.select(&facts).unwrap().group.id, "one");
        // A MAC alone beats a label alone.
        let p2 = Profiles::load(&cfg).unwrap();
        let only_mac = MachineFacts {
            mac: Some("52:54:00:00:00:01".parse().unwrap()),
            labels: [("rack".to_owned(), "1".to_owned())].into(),
            ..Default::default()
        };
        assert_eq!(p2.select(&only_mac).unwrap().group.id, "one");
        facts.mac = Some("52:54:00:00:00:02".parse().unwrap());
        let s = p.select(&facts).unwrap();
        assert_eq!(
            (s.group.id.as_str(), s.profile.id.as_str()),
            ("rack1", "etcd")
        );
        assert_eq!(
            p.profile("install").unwrap().cloud_config.as_deref(),
            Some("hostname: {{ hostname }}\n")
        );
    }

    #[test]
    fn no_default_group_means_no_match() {
        let (_d, cfg) = fixture();
        std::fs::write(
            &cfg,
            GOOD.replace("  - id: default\n    profile: install\n", ""),
        )
        .unwrap();
        let p = Profiles::load(&cfg).unwrap();
        assert!(p.select(&MachineFacts::default()).is_none());
    }

    #[test]
    fn unknown_field_is_reported_with_its_path() {
        let (_d, cfg) = fixture();
        std::fs::write(
            &cfg,
            GOOD.replace("install_to_disk: true", "install_to_dsk: true"),
        )
        .unwrap();
        let err = Profiles::load(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("profiles[0]") && err.contains("install_to_dsk"),
            "{err}"
        );
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let (_d, cfg) = fixture();
        for (from, to, expect) in [
            (
                "kernel: vmlinuz\n    initrd",
                "kernel: nope\n    initrd",
                "kernel",
            ),
            ("profile: etcd", "profile: etc", "does not exist"),
            ("- id: etcd", "- id: install", "used twice"),
            ("{{ server_url }}", "{{ server_url", "unclosed"),
            ("52:54:00:00:00:01", "52:54:00:00:01", "MAC"),
        ] {
            std::fs::write(&cfg, GOOD.replacen(from, to, 1)).unwrap();
            let err = Profiles::load(&cfg).unwrap_err().to_string();
            assert!(err.contains(expect), "{from} -> {to}: {err}");
        }
    }
}
