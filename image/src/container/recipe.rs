//! What a container image is made of (packages, added files, entrypoint,
//! env, working directory, tag), checked when it is parsed, and the pause image's recipe.

/// The reference the kubelet runs a pod's infra container from.
pub const PAUSE_IMAGE: &str = "herd/pause:1";

use super::added::Added;

/// `PATH` in every image unless the recipe sets its own (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecipeError {
    #[error("--packages: give at least one Debian package")]
    NoPackages,
    #[error("--env {given:?}: expected KEY=VALUE with a KEY of letters, digits and _")]
    Env { given: String },
    #[error("--workdir {given:?}: must be an absolute path")]
    Workdir { given: String },
    #[error("--tag {given:?}: a tag is 1–128 of [A-Za-z0-9_.-], not starting with . or -")]
    Tag { given: String },
    #[error("--entrypoint: the command is empty")]
    EmptyEntrypoint,
}

/// A container image to build.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// Debian packages; their dependency closure is installed too.
    pub packages: Vec<String>,
    /// Packages never pulled in as dependencies (as the OS spec's `exclude`).
    pub exclude: Vec<String>,
    /// The program and its first arguments (`Entrypoint`).
    pub entrypoint: Vec<String>,
    /// Default arguments (`Cmd`).
    pub cmd: Vec<String>,
    /// `KEY=VALUE`s, in order; `PATH` defaults to [`DEFAULT_PATH`].
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// The name `index.json` gives the image.
    pub tag: String,
    /// Host files laid over the packages, in a layer of their own.
    pub files: Vec<Added>,
}

impl Recipe {
    /// Checks every field; the first bad one is named.
    pub fn new(
        packages: Vec<String>,
        exclude: Vec<String>,
        entrypoint: Vec<String>,
        cmd: Vec<String>,
        env: &[String],
        workdir: Option<String>,
        tag: String,
    ) -> Result<Recipe, RecipeError> {
        let packages: Vec<String> = packages
            .into_iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        if packages.is_empty() {
            return Err(RecipeError::NoPackages);
        }
        if entrypoint.first().is_some_and(|c| c.trim().is_empty()) {
            return Err(RecipeError::EmptyEntrypoint);
        }
        let env = env
            .iter()
            .map(|kv| parse_env(kv))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(w) = &workdir
            && !w.starts_with('/')
        {
            return Err(RecipeError::Workdir { given: w.clone() });
        }
        if !valid_tag(&tag) {
            return Err(RecipeError::Tag { given: tag });
        }
        Ok(Recipe {
            packages,
            exclude,
            entrypoint,
            cmd,
            env,
            workdir,
            tag,
            files: Vec::new(),
        })
    }

    /// The recipe with host files added (`--add SRC:DEST`).
    pub fn with_files(mut self, files: Vec<Added>) -> Recipe {
        self.files = files;
        self
    }

    /// The pause (infra) container: busybox-static, sleeping until told to
    /// stop. The trap makes it exit at once on SIGTERM (a PID 1 without a
    /// handler ignores it, and `docker stop` would wait for its timeout).
    pub fn pause() -> Recipe {
        Recipe {
            packages: vec!["busybox-static".into()],
            exclude: Vec::new(),
            entrypoint: vec![
                "/bin/busybox".into(),
                "sh".into(),
                "-c".into(),
                "trap 'exit 0' TERM INT; while :; do /bin/busybox sleep 3600 & wait $!; done"
                    .into(),
            ],
            cmd: Vec::new(),
            env: Vec::new(),
            workdir: None,
            files: Vec::new(),
            tag: PAUSE_IMAGE
                .rsplit_once(':')
                .map_or("latest", |(_, t)| t)
                .into(),
        }
    }

    /// The `Env` list of the image config: `PATH` first unless given.
    pub fn env_list(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.env.iter().any(|(k, _)| k == "PATH") {
            out.push(format!("PATH={DEFAULT_PATH}"));
        }
        out.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        out
    }

    /// The `PATH` an entrypoint without a `/` is looked up in.
    pub fn path(&self) -> &str {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v)
    }
}

fn parse_env(kv: &str) -> Result<(String, String), RecipeError> {
    let bad = || RecipeError::Env { given: kv.into() };
    let (k, v) = kv.split_once('=').ok_or_else(bad)?;
    let key_ok = !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !key_ok {
        return Err(bad());
    }
    Ok((k.into(), v.into()))
}

/// Docker's tag grammar: `[\w][\w.-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(env: &[&str], workdir: Option<&str>, tag: &str) -> Result<Recipe, RecipeError> {
        Recipe::new(
            vec!["busybox-static".into()],
            vec![],
            vec!["/bin/busybox".into()],
            vec![],
            &env.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            workdir.map(Into::into),
            tag.into(),
        )
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            recipe(&["NOEQUALS"], None, "1").unwrap_err(),
            RecipeError::Env {
                given: "NOEQUALS".into()
            }
        );
        assert!(matches!(
            recipe(&["1A=b"], None, "1"),
            Err(RecipeError::Env { .. })
        ));
        assert!(matches!(
            recipe(&[], Some("rel"), "1"),
            Err(RecipeError::Workdir { .. })
        ));
        assert!(matches!(
            recipe(&[], None, "-x"),
            Err(RecipeError::Tag { .. })
        ));
        assert!(matches!(
            recipe(&[], None, "a:b"),
            Err(RecipeError::Tag { .. })
        ));
        let err = Recipe::new(
            vec![" ".into()],
            vec![],
            vec![],
            vec![],
            &[],
            None,
            "1".into(),
        );
        assert_eq!(err.unwrap_err(), RecipeError::NoPackages);
    }

    #[test]
    fn path_comes_first_unless_given() {
        let r = recipe(&["A=1=2", "B="], Some("/srv"), "v1.0_x").unwrap();
        assert_eq!(
            r.env_list(),
            vec![format!("PATH={DEFAULT_PATH}"), "A=1=2".into(), "B=".into()]
        );
        let r = recipe(&["PATH=/opt/bin"], None, "1").unwrap();
        assert_eq!(r.env_list(), vec!["PATH=/opt/bin".to_string()]);
        assert_eq!(r.path(), "/opt/bin");
    }

    #[test]
    fn pause_tag_matches_its_reference() {
        assert!(PAUSE_IMAGE.ends_with(&format!(":{}", Recipe::pause().tag)));
    }
}
