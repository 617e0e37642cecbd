//! The declarative image spec: YAML in, typed values out, every error naming the field.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The spec `herd image build` uses when none is given.
pub const DEFAULT_SPEC: &str = include_str!("../assets/default-spec.yaml");

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("spec {origin}: not valid YAML: {message}")]
    Yaml { origin: String, message: String },
    #[error("spec {origin}: field `{path}`: {message}")]
    Field {
        origin: String,
        path: String,
        message: String,
    },
    #[error("spec {origin}: field `{path}`: {message}")]
    Invalid {
        origin: String,
        path: &'static str,
        message: String,
    },
    #[error("reading spec {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The OS version, written into the image and the manifest.
    pub version: String,
    pub kernel: KernelSpec,
    /// Kernel modules (and their dependency closure) the image carries; they
    /// are loaded at boot in this order.
    #[serde(default)]
    pub modules: Vec<String>,
    /// Debian packages unpacked into the rootfs, with their dependency
    /// closure (Pre-Depends + Depends) resolved from the host's apt indices.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Packages never pulled in as dependencies: whatever depends on them
    /// counts as satisfied. For what the image deliberately lacks (systemd:
    /// herd's init is PID 1) and for tools only maintainer scripts use
    /// (adduser, debconf): packages are unpacked, their scripts never run.
    #[serde(default)]
    pub exclude: Vec<String>,
    pub herd: HerdSpec,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// Extra kernel command line for disk boots (`herd.usr=` is added per slot).
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// How often a freshly flipped slot is tried before falling back.
    #[serde(default = "default_tries")]
    pub boot_tries: u8,
    pub partitions: Partitions,
}

fn default_kernel_package() -> String {
    "linux-image-amd64".into()
}
fn default_cmdline() -> String {
    "console=ttyS0".into()
}
fn default_tries() -> u8 {
    3
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, tag = "source", rename_all = "lowercase")]
pub enum KernelSpec {
    /// A kernel package from the host's apt indices (`apt-get download`),
    /// e.g. the `linux-image-amd64` metapackage, followed to the versioned
    /// `linux-image-<release>` it depends on; vmlinuz and modules come from
    /// that package, whatever the build host runs.
    Apt {
        #[serde(default = "default_kernel_package")]
        package: String,
    },
    /// The kernel installed on the build host (`/boot/vmlinuz-<kver>` and
    /// `/lib/modules/<kver>`); the newest one unless `version` names one.
    Host {
        #[serde(default)]
        version: Option<String>,
    },
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, tag = "source", rename_all = "lowercase")]
pub enum HerdSpec {
    /// The binary running the build.
    #[serde(rename = "self")]
    Current,
    /// A prebuilt binary, e.g. the static one from `--profile image`.
    Path { path: PathBuf },
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// File on the build host (relative paths are relative to the spec file).
    pub src: PathBuf,
    /// Absolute destination in the image; must be under `/usr` or `/etc`.
    pub dst: String,
    #[serde(default = "default_mode")]
    pub mode: u32,
}

fn default_mode() -> u32 {
    0o644
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Partitions {
    pub esp_mib: u64,
    /// Size of each USR slot (A and B).
    pub usr_mib: u64,
    pub state_mib: u64,
}

impl Spec {
    /// Parses `text`; `origin` names where it came from in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Spec, SpecError> {
        // Through serde_json::Value so serde_path_to_error can name the field
        // path (serde-saphyr only reports line and column).
        let value: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| SpecError::Yaml {
                origin: origin.into(),
                message: e.to_string(),
            })?;
        let spec: Spec = serde_path_to_error::deserialize(value).map_err(|e| SpecError::Field {
            origin: origin.into(),
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
        spec.validate(origin)?;
        Ok(spec)
    }

    /// Reads and parses a spec file, resolving relative `files[].src` against its directory.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.into(),
            source,
        })?;
        let mut spec = Spec::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        for f in &mut spec.files {
            if f.src.is_relative() {
                f.src = base.join(&f.src);
            }
        }
        if let HerdSpec::Path { path: p } = &mut spec.herd
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
        Ok(spec)
    }

    pub fn default_spec() -> Spec {
        Spec::parse(DEFAULT_SPEC, "(embedded default)").expect("the embedded default spec is valid")
    }

    fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let bad = |path: &'static str, message: String| SpecError::Invalid {
            origin: origin.into(),
            path,
            message,
        };
        if self.version.is_empty()
            || !self
                .version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_+".contains(c))
        {
            return Err(bad(
                "version",
                format!(
                    "{:?} must be non-empty and use only [A-Za-z0-9.-_+]",
                    self.version
                ),
            ));
        }
        if !(1..=9).contains(&self.boot_tries) {
            return Err(bad(
                "boot_tries",
                format!("{} is not in 1..=9", self.boot_tries),
            ));
        }
        for f in &self.files {
            if !(f.dst.starts_with("/usr/") || f.dst.starts_with("/etc/")) || f.dst.contains("..") {
                return Err(bad(
                    "files[].dst",
                    format!("{:?} must be an absolute path under /usr/ or /etc/", f.dst),
                ));
            }
        }
        if self.partitions.esp_mib < 32 {
            return Err(bad(
                "partitions.esp_mib",
                format!(
                    "{} MiB is too small: FAT32 needs at least 32 MiB",
                    self.partitions.esp_mib
                ),
            ));
        }
        if self.partitions.state_mib < 8 {
            return Err(bad(
                "partitions.state_mib",
                format!(
                    "{} MiB is too small (at least 8)",
                    self.partitions.state_mib
                ),
            ));
        }
        if self.partitions.usr_mib == 0 {
            return Err(bad("partitions.usr_mib", "must be more than 0".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_parses() {
        let spec = Spec::default_spec();
        assert_eq!(
            spec.kernel,
            KernelSpec::Apt {
                package: "linux-image-amd64".into()
            }
        );
        assert_eq!(spec.herd, HerdSpec::Current);
        assert!(spec.packages.contains(&"busybox-static".to_string()));
        assert!(spec.exclude.contains(&"systemd".to_string()));
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let text = DEFAULT_SPEC.replace("esp_mib: 64", "esp_mib: 64\n  swap_mib: 4");
        let err = Spec::parse(&text, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("partitions"), "{err}");
        assert!(err.contains("swap_mib"), "{err}");
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        let text = DEFAULT_SPEC.replace("usr_mib: 96", "usr_mib: lots");
        let err = Spec::parse(&text, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("partitions.usr_mib"), "{err}");
    }

    #[test]
    fn too_small_esp_is_rejected() {
        let text = DEFAULT_SPEC.replace("esp_mib: 64", "esp_mib: 4");
        let err = Spec::parse(&text, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("partitions.esp_mib"), "{err}");
    }

    #[test]
    fn file_outside_usr_and_etc_is_rejected() {
        let text = DEFAULT_SPEC.replace("files: []", "files:\n  - {src: a, dst: /var/a}");
        let err = Spec::parse(&text, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("files[].dst"), "{err}");
    }
}
