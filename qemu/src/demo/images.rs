//! The demo's images, built from Debian packages with the image
//! pipeline's container builder (no Dockerfile, no pull from anywhere) and
//! pushed to the lab registry from inside the lab network. Each build is
//! printed as the `herd image container` command that does the same.

use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_image::container::{self, Added, Recipe, Reference};

use super::DemoError;
use super::files;

/// One image of the demo, as `herd image container`'s arguments.
pub struct Image {
    /// The repository under the lab registry (`demo/NAME`).
    pub name: &'static str,
    pub tag: &'static str,
    pub packages: &'static [&'static str],
    /// Dependencies a container does not need (maintainer-script tools,
    /// perl, LLVM for Postgres's JIT): smaller images, faster pulls on
    /// the emulated machines.
    pub exclude: &'static [&'static str],
    /// A demo file and where it goes in the image.
    pub add: Option<(&'static str, &'static str)>,
    pub env: &'static [&'static str],
    pub entrypoint: &'static [&'static str],
}

const PGVIEW_PACKAGES: &[&str] = &["python3", "python3-psycopg2"];

pub const IMAGES: &[Image] = &[
    Image {
        name: "demo/postgres",
        tag: "15",
        packages: &["postgresql-15", "tzdata", "util-linux", "dash", "coreutils"],
        exclude: &[
            "libllvm14",
            "postgresql-common",
            "locales",
            "ssl-cert",
            "debconf",
            "perl",
            "perl-base",
            "libperl5.36",
            "adduser",
        ],
        add: Some((files::PG_START, "/usr/local/bin/pg-start")),
        env: &[],
        entrypoint: &["/usr/local/bin/pg-start"],
    },
    Image {
        name: "demo/memcached",
        tag: "1",
        packages: &["memcached"],
        exclude: &["perl", "perl-base", "libperl5.36", "adduser", "lsb-base"],
        add: None,
        env: &[],
        entrypoint: &[
            "/usr/bin/memcached",
            "-u",
            "nobody",
            "-l",
            "127.0.0.1",
            "-m",
            "16",
        ],
    },
    Image {
        name: "demo/pgview",
        tag: "1",
        packages: PGVIEW_PACKAGES,
        exclude: &[],
        add: Some((files::PGVIEW_APP, "/usr/local/bin/pgview")),
        env: &["PGVIEW_VERSION=1"],
        entrypoint: &["/usr/local/bin/pgview"],
    },
    Image {
        name: "demo/pgview",
        tag: "2",
        packages: PGVIEW_PACKAGES,
        exclude: &[],
        add: Some((files::PGVIEW_APP, "/usr/local/bin/pgview")),
        env: &["PGVIEW_VERSION=2"],
        entrypoint: &["/usr/local/bin/pgview"],
    },
];

impl Image {
    /// `10.77.0.1:5000/demo/NAME:TAG`.
    pub fn reference(&self) -> String {
        format!("{}/{}:{}", crate::registry::address(), self.name, self.tag)
    }

    /// Where its OCI layout is written under the demo directory.
    pub fn out(&self, demo_dir: &Path) -> PathBuf {
        demo_dir.join("images").join(format!(
            "{}-{}",
            self.name.trim_start_matches("demo/"),
            self.tag
        ))
    }

    fn recipe(&self, demo_dir: &Path) -> Result<Recipe, DemoError> {
        let strings = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let recipe = Recipe::new(
            strings(self.packages),
            strings(self.exclude),
            strings(self.entrypoint),
            Vec::new(),
            &strings(self.env),
            None,
            self.tag.into(),
        )
        .map_err(|e| DemoError::Image {
            image: self.reference(),
            reason: e.to_string(),
        })?;
        Ok(recipe.with_files(
            self.add
                .map(|(file, dest)| Added {
                    src: demo_dir.join(file),
                    dest: dest.into(),
                })
                .into_iter()
                .collect(),
        ))
    }

    /// The command line that builds the same image by hand.
    pub fn command(&self, demo_dir: &Path) -> String {
        let mut c = format!(
            "herd image container --packages {}",
            self.packages.join(",")
        );
        if !self.exclude.is_empty() {
            c.push_str(&format!(" --exclude {}", self.exclude.join(",")));
        }
        if let Some((file, dest)) = self.add {
            c.push_str(&format!(" --add {}:{dest}", demo_dir.join(file).display()));
        }
        for e in self.env {
            c.push_str(&format!(" --env {e}"));
        }
        c.push_str(&format!(
            " --tag {} --out {} --entrypoint {}",
            self.tag,
            self.out(demo_dir).display(),
            self.entrypoint.join(" ")
        ));
        c
    }
}

/// Builds every image (package layers come from the image cache after the
/// first run) and pushes it to the lab registry; `say` prints each step.
pub async fn build_and_push(
    demo_dir: &Path,
    netns: &str,
    say: &(dyn Fn(&str) + Sync),
) -> Result<(), DemoError> {
    let epoch = herd_image::build::epoch().map_err(|e| DemoError::Image {
        image: "(all)".into(),
        reason: e.to_string(),
    })?;
    let cache = herd_image::build::default_cache();
    let http = crate::nsnet::http(netns, Duration::from_secs(600));
    for image in IMAGES {
        say(&format!("$ {}", image.command(demo_dir)));
        let recipe = image.recipe(demo_dir)?;
        let out = image.out(demo_dir);
        let cache = cache.clone();
        let built =
            tokio::task::spawn_blocking(move || container::build(&recipe, &out, &cache, epoch))
                .await
                .expect("the image build does not panic")
                .map_err(|e| DemoError::Image {
                    image: image.reference(),
                    reason: e.to_string(),
                })?;
        say(&format!(
            "  {} packages, {} MB{}",
            built.packages.len(),
            built.layer.size / 1_000_000,
            if built.cached { " (cached layer)" } else { "" }
        ));
        let reference = image.reference();
        say(&format!(
            "$ herd lab exec -- herd image push {} {reference} --insecure",
            image.out(demo_dir).display()
        ));
        let parsed: Reference =
            reference
                .parse()
                .map_err(|e: container::reference::ReferenceError| DemoError::Image {
                    image: reference.clone(),
                    reason: e.to_string(),
                })?;
        let pushed = container::push(&http, &image.out(demo_dir), &parsed, true)
            .await
            .map_err(|e| DemoError::Image {
                image: reference.clone(),
                reason: e.to_string(),
            })?;
        say(&format!("  pushed {}", pushed.digest));
    }
    Ok(())
}
