//! The demo's files, embedded from the repository's `demo/` folder (the
//! manifests a person can apply by hand with `herd apply` or `kubectl`,
//! the pgview app and Postgres's start script), written into `LAB/demo/`
//! so the commands the demo prints name real files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// One file of the demo.
pub struct File {
    /// Its path under `demo/`.
    pub name: &'static str,
    pub text: &'static str,
    pub executable: bool,
}

const fn file(name: &'static str, text: &'static str, executable: bool) -> File {
    File {
        name,
        text,
        executable,
    }
}

pub const POSTGRES: &str = "postgres.yaml";
pub const PSQL: &str = "psql.yaml";
pub const PGVIEW_RC: &str = "pgview-rc.yaml";
pub const PGVIEW_SERVICE: &str = "pgview-service.yaml";
pub const PGVIEW_CANARY: &str = "pgview-canary.yaml";
pub const PGVIEW_APP: &str = "images/pgview.py";
pub const PG_START: &str = "images/pg-start";

pub const FILES: &[File] = &[
    file(POSTGRES, include_str!("../../../demo/postgres.yaml"), false),
    file(PSQL, include_str!("../../../demo/psql.yaml"), false),
    file(
        PGVIEW_RC,
        include_str!("../../../demo/pgview-rc.yaml"),
        false,
    ),
    file(
        PGVIEW_SERVICE,
        include_str!("../../../demo/pgview-service.yaml"),
        false,
    ),
    file(
        PGVIEW_CANARY,
        include_str!("../../../demo/pgview-canary.yaml"),
        false,
    ),
    file(
        PGVIEW_APP,
        include_str!("../../../demo/images/pgview.py"),
        true,
    ),
    file(
        PG_START,
        include_str!("../../../demo/images/pg-start"),
        true,
    ),
];

/// Writes every file under `dir` (replacing what an older run left).
pub fn write(dir: &Path) -> std::io::Result<()> {
    for f in FILES {
        let path = dir.join(f.name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, f.text)?;
        let mode = if f.executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_name_only_lab_registry_images() {
        for f in FILES.iter().filter(|f| f.name.ends_with(".yaml")) {
            for line in f.text.lines().filter(|l| l.contains("image:")) {
                let image = line.split("image:").nth(1).unwrap().trim();
                assert!(
                    image.starts_with(&format!("{}/demo/", crate::registry::address())),
                    "{}: {image}",
                    f.name
                );
                assert!(
                    super::super::images::IMAGES
                        .iter()
                        .any(|i| image.ends_with(&format!("{}:{}", i.name, i.tag))),
                    "{}: {image} is not built by the demo",
                    f.name
                );
            }
        }
    }

    #[test]
    fn written_files_keep_their_modes() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path()).unwrap();
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(PG_START), 0o755);
        assert_eq!(mode(POSTGRES), 0o644);
    }
}
