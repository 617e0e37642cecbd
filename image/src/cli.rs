//! `herd image …` and `herd bench image`: argument parsing at the binary's edge.

use crate::build::{self, BuildOptions};
use crate::spec::{HerdSpec, Spec};
use crate::{container, install, manifest, payload, slot};
use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use herd_cli::{Output, Table};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SlotArg {
    A,
    B,
}

impl From<SlotArg> for slot::Slot {
    fn from(s: SlotArg) -> slot::Slot {
        match s {
            SlotArg::A => slot::Slot::A,
            SlotArg::B => slot::Slot::B,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the OS image from a spec (the embedded default without --spec).
    Build {
        #[arg(long)]
        spec: Option<PathBuf>,
        #[arg(long, required_unless_present = "print_default_spec")]
        out: Option<PathBuf>,
        /// ed25519 seed, 64 hex characters. Without it a development key in the cache signs.
        #[arg(long)]
        signing_key: Option<PathBuf>,
        /// Use this herd binary instead of the spec's `herd`.
        #[arg(long)]
        herd_bin: Option<PathBuf>,
        /// Stage cache (default: $HERD_IMAGE_CACHE or ~/.cache/herd/image).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Print the embedded default spec and exit.
        #[arg(long)]
        print_default_spec: bool,
    },
    /// Build a container image (OCI layout) from Debian packages, without the internet.
    #[command(
        after_help = "Example:\n  herd image container --packages busybox-static --out hello/ \\\n      --entrypoint /bin/busybox echo hello\n  herd image container --pause --out pause/      # the kubelet's infra image (herd/pause:1)"
    )]
    Container {
        /// Debian packages (comma-separated or repeated); their dependencies come along.
        #[arg(long, value_delimiter = ',', required_unless_present = "pause")]
        packages: Vec<String>,
        /// Packages never pulled in as dependencies.
        #[arg(long, value_delimiter = ',')]
        exclude: Vec<String>,
        /// The program and its arguments (the rest of the words up to the next option).
        #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "CMD")]
        entrypoint: Vec<String>,
        /// Default arguments to the entrypoint.
        #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "ARG")]
        cmd: Vec<String>,
        /// A host file laid into the image at an absolute path, mode kept
        /// (repeatable; the files form a layer of their own).
        #[arg(long = "add", value_name = "SRC:DEST")]
        add: Vec<container::Added>,
        /// KEY=VALUE in the container's environment (repeatable).
        #[arg(long)]
        env: Vec<String>,
        /// The container's working directory (absolute).
        #[arg(long)]
        workdir: Option<String>,
        /// The tag index.json names the image with.
        #[arg(long, default_value = "latest")]
        tag: String,
        /// Build the pause (infra) image the kubelet uses (busybox-static, sleeping; tag 1).
        #[arg(long, conflicts_with_all = ["packages", "entrypoint", "cmd"])]
        pause: bool,
        /// The OCI layout directory to write (replaced if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Stage cache (default: $HERD_IMAGE_CACHE or ~/.cache/herd/image).
        #[arg(long)]
        cache: Option<PathBuf>,
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Push an OCI layout's image to a registry (distribution API v2).
    Push {
        /// The OCI layout (as `herd image container` writes it).
        dir: PathBuf,
        /// REGISTRY/NAME[:TAG], e.g. 10.77.0.1:5000/herd/pause:1.
        reference: String,
        /// Speak plain HTTP to the registry (a lab or loopback registry).
        #[arg(long)]
        insecure: bool,
        /// Bound on each request to the registry (a layer upload is one request).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Check a built directory: artifact hashes and the payload signature.
    Verify {
        dir: PathBuf,
        /// Hex public key to check the payload against (default: the manifest's).
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Write a disk image onto a disk, verify it, optionally reboot (firstboot install).
    Install {
        /// http:// URL or file of disk.img.
        #[arg(long)]
        image: String,
        #[arg(long)]
        disk: PathBuf,
        /// Expected sha256 (default: from manifest.json beside the image).
        #[arg(long)]
        sha256: Option<String>,
        #[arg(long)]
        reboot: bool,
    },
    /// Write a signed update payload into the passive slot and boot it next, with a try counter.
    Flip {
        /// The disk (block device or disk.img) with the herd GPT layout.
        #[arg(long)]
        disk: PathBuf,
        #[arg(long)]
        payload: PathBuf,
        /// Detached signature (default: <payload>.sig).
        #[arg(long)]
        sig: Option<PathBuf>,
        /// Hex public key (default: /usr/share/herd/update.pub).
        #[arg(long)]
        public_key: Option<String>,
        /// Mounted ESP directory; without it the ESP inside --disk is edited with mtools.
        #[arg(long)]
        esp: Option<PathBuf>,
        #[arg(long, value_enum)]
        slot: Option<SlotArg>,
        #[arg(long, default_value_t = 3)]
        tries: u8,
        #[arg(long, default_value = "console=ttyS0")]
        cmdline: String,
    },
    /// Mark a slot good (drop its boot counter). Without arguments: the booted slot on /boot.
    MarkGood {
        #[arg(long)]
        disk: Option<PathBuf>,
        #[arg(long, value_enum)]
        slot: Option<SlotArg>,
    },
    /// List the slot entries and their try counters.
    Slots {
        #[arg(long)]
        disk: Option<PathBuf>,
    },
    /// Grow the disk's last partition (STATE) to the end of the disk; the
    /// init then runs resize2fs on the mounted filesystem. Idempotent.
    GrowState {
        /// The whole disk (e.g. /dev/vda) or a disk image file.
        #[arg(long)]
        disk: PathBuf,
        /// The name the last partition must have.
        #[arg(long, default_value = "STATE")]
        partition: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Image sizes and build times (full build, cached rebuild after a herd change).
    Image {
        /// Scratch directory for the cache and outputs.
        #[arg(long, default_value = "/tmp/herd-bench-image")]
        dir: PathBuf,
        #[arg(long)]
        herd_bin: Option<PathBuf>,
    },
}

fn esp_for(disk: &std::path::Path) -> anyhow::Result<Box<dyn slot::Esp>> {
    Ok(Box::new(slot::esp_of(disk)?))
}

pub async fn run(args: ImageArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    if let ImageCommand::Push {
        dir,
        reference,
        insecure,
        timeout,
        output,
    } = args.command
    {
        let reference: container::Reference = reference.parse()?;
        let client = herd_http::Client::new().with_timeout(timeout);
        let pushed = tokio::select! {
            r = container::push(&client, &dir, &reference, insecure) => r,
            () = shutdown.cancelled() => bail!("interrupted: {reference} not pushed (blobs already uploaded stay)"),
        };
        let pushed = pushed.map_err(|e| {
            let hint = if insecure {
                ""
            } else {
                " (herd speaks plain HTTP to registries for now: pass --insecure for a lab or loopback registry)"
            };
            anyhow::anyhow!("{e}{hint}")
        }).with_context(|| format!("pushing {} to {reference}", dir.display()))?;
        output.print(&pushed, |p| {
            let mut t = Table::new(["BLOB", "SIZE", "UPLOADED"]);
            for b in &p.blobs {
                t.row([b.digest.clone(), b.size.to_string(), b.uploaded.to_string()]);
            }
            format!("{}{} pushed: {}\n", t.render(), p.reference, p.digest)
        })?;
        return Ok(());
    }
    // The pipeline is file and process work: keep it off the async workers.
    tokio::task::spawn_blocking(move || run_blocking(args.command))
        .await
        .context("image task panicked")?
}

#[allow(clippy::too_many_arguments)]
fn container_command(
    packages: Vec<String>,
    exclude: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    add: Vec<container::Added>,
    env: Vec<String>,
    workdir: Option<String>,
    tag: String,
    pause: bool,
    out: PathBuf,
    cache: Option<PathBuf>,
    output: Output,
) -> anyhow::Result<()> {
    let recipe = if pause {
        container::Recipe::pause()
    } else {
        container::Recipe::new(packages, exclude, entrypoint, cmd, &env, workdir, tag)?
            .with_files(add)
    };
    let epoch = build::epoch()?;
    let cache = cache.unwrap_or_else(build::default_cache);
    let built = container::build(&recipe, &out, &cache, epoch)
        .with_context(|| format!("herd image container --out {}", out.display()))?;
    output.print(&built, |b| {
        let mut t = Table::new(["FIELD", "VALUE"]);
        t.row(["out", &b.out.display().to_string()]);
        t.row(["tag", &b.tag]);
        t.row(["manifest", &b.manifest]);
        t.row(["config", &b.config]);
        t.row([
            "layer",
            &format!(
                "{} ({} bytes{})",
                b.layer.digest,
                b.layer.size,
                if b.cached { ", cached" } else { "" }
            ),
        ]);
        if let Some(files) = &b.files_layer {
            t.row([
                "files layer",
                &format!("{} ({} bytes)", files.digest, files.size),
            ]);
        }
        t.row(["packages", &b.packages.len().to_string()]);
        t.row(["elapsed", &format!("{:.1} s", b.elapsed.as_secs_f64())]);
        t.render()
    })?;
    Ok(())
}

fn run_blocking(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Container {
            packages,
            exclude,
            entrypoint,
            cmd,
            add,
            env,
            workdir,
            tag,
            pause,
            out,
            cache,
            output,
        } => container_command(
            packages, exclude, entrypoint, cmd, add, env, workdir, tag, pause, out, cache, output,
        ),
        ImageCommand::Push { .. } => unreachable!("push runs on the async side"),
        ImageCommand::Build {
            spec,
            out,
            signing_key,
            herd_bin,
            cache,
            print_default_spec,
        } => {
            if print_default_spec {
                print!("{}", crate::spec::DEFAULT_SPEC);
                return Ok(());
            }
            let mut spec = match &spec {
                Some(p) => Spec::load(p)?,
                None => Spec::default_spec(),
            };
            if let Some(bin) = herd_bin {
                spec.herd = HerdSpec::Path { path: bin };
            }
            let Some(out) = out else {
                bail!("--out is required");
            };
            let opts = BuildOptions {
                spec,
                out,
                signing_key,
                cache: cache.unwrap_or_else(build::default_cache),
                progress: true,
            };
            let summary = build::build(&opts).context("herd image build")?;
            print_summary(&summary);
            Ok(())
        }
        ImageCommand::Verify { dir, public_key } => {
            let m = manifest::verify(&dir, public_key.as_deref())
                .with_context(|| format!("verifying {}", dir.display()))?;
            println!(
                "{}: herd OS {} (kernel {}): {} artifacts match, payload signature good",
                dir.display(),
                m.version,
                m.kernel,
                m.artifacts.len()
            );
            Ok(())
        }
        ImageCommand::Install {
            image,
            disk,
            sha256,
            reboot,
        } => {
            let source = install::Source::parse(&image)?;
            // This command runs on a blocking thread of the runtime.
            let n = tokio::runtime::Handle::current()
                .block_on(install::install(&source, &disk, sha256))
                .with_context(|| format!("installing {image} onto {}", disk.display()))?;
            println!(
                "herd image install: wrote and verified {n} bytes on {}",
                disk.display()
            );
            if reboot {
                println!("herd image install: rebooting into slot A");
                let status = std::process::Command::new("reboot")
                    .arg("-f")
                    .status()
                    .context("running reboot -f")?;
                bail!("reboot -f returned {status}");
            }
            Ok(())
        }
        ImageCommand::Flip {
            disk,
            payload: p,
            sig,
            public_key,
            esp,
            slot: target,
            tries,
            cmdline,
        } => {
            let key_text = match public_key {
                Some(k) => k,
                None => std::fs::read_to_string("/usr/share/herd/update.pub")
                    .context("no --public-key and no /usr/share/herd/update.pub")?,
            };
            let key = payload::parse_public_key(&key_text)?;
            let sig = sig.unwrap_or_else(|| PathBuf::from(format!("{}.sig", p.display())));
            let esp: Box<dyn slot::Esp> = match esp {
                Some(dir) => Box::new(slot::DirEsp(dir)),
                None => esp_for(&disk)?,
            };
            let update = slot::Update {
                payload: &p,
                signature: &sig,
                public_key: &key,
                slot: target.map(Into::into),
                booted: slot::booted_slot().ok(),
                tries,
                cmdline,
            };
            let flipped = slot::flip(&disk, esp.as_ref(), &update)?;
            println!(
                "herd image flip: {} {} written to {}; next boot tries it {tries} times",
                flipped.version,
                flipped.slot.label(),
                disk.display()
            );
            Ok(())
        }
        ImageCommand::MarkGood { disk, slot: s } => {
            let marked = match (disk, s) {
                (Some(d), Some(s)) => {
                    slot::mark_good_on(esp_for(&d)?.as_ref(), s.into())?;
                    s.into()
                }
                (None, None) => slot::mark_good()?,
                _ => bail!("--disk and --slot go together"),
            };
            println!("herd image mark-good: {} is good", marked.label());
            Ok(())
        }
        ImageCommand::GrowState { disk, partition } => {
            match crate::grow::grow_last(&disk, &partition)? {
                crate::grow::Grown::Already { size } => println!(
                    "herd image grow-state: {partition} already fills {} ({} MiB)",
                    disk.display(),
                    size >> 20
                ),
                crate::grow::Grown::Grown { index, from, to } => println!(
                    "herd image grow-state: {partition} (partition {index}) grown from {} to {} MiB",
                    from >> 20,
                    to >> 20
                ),
            }
            Ok(())
        }
        ImageCommand::Slots { disk } => {
            let esp: Box<dyn slot::Esp> = match disk {
                Some(d) => esp_for(&d)?,
                None => Box::new(slot::DirEsp("/boot".into())),
            };
            for e in slot::entries(esp.as_ref())? {
                let state = match e.tries {
                    None => "good".to_string(),
                    Some((left, done)) => format!("trying: {left} left, {done} done"),
                };
                println!("{}\t{}\t{}", e.slot.label(), e.file, state);
            }
            Ok(())
        }
    }
}

fn print_summary(s: &build::Summary) {
    println!(
        "herd OS {} (kernel {}) in {}:",
        s.manifest.version,
        s.manifest.kernel,
        s.out.display()
    );
    for (name, a) in &s.manifest.artifacts {
        println!("  {:<20} {:>12} bytes  sha256 {}", name, a.size, a.sha256);
    }
    let built: Vec<_> = s
        .stages
        .iter()
        .filter(|r| !r.cached)
        .map(|r| r.name)
        .collect();
    println!(
        "stages rebuilt: {}; total {:.1} s",
        if built.is_empty() {
            "none".into()
        } else {
            built.join(", ")
        },
        s.elapsed.as_secs_f64()
    );
    if let Some(k) = &s.generated_key {
        println!(
            "note: signed with the development key {} (pass --signing-key for real updates)",
            k.display()
        );
    }
}

pub async fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Image { dir, herd_bin } => {
            tokio::task::spawn_blocking(move || bench(dir, herd_bin))
                .await
                .context("bench task panicked")?
        }
    }
}

fn bench(dir: PathBuf, herd_bin: Option<PathBuf>) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let bin = match herd_bin {
        Some(b) => b,
        None => std::env::current_exe()?,
    };
    let copy = dir.join("herd");
    std::fs::copy(&bin, &copy)?;
    let mut spec = Spec::default_spec();
    spec.herd = HerdSpec::Path { path: copy.clone() };
    let opts = BuildOptions {
        spec,
        out: dir.join("out"),
        signing_key: None,
        cache: dir.join("cache"),
        progress: false,
    };
    let full = build::build(&opts)?;
    // Change only the herd binary (one appended byte) and rebuild with the warm cache.
    let mut bytes = std::fs::read(&copy)?;
    bytes.push(0);
    std::fs::write(&copy, bytes)?;
    let again = build::build(&opts)?;
    let size = |n: &str| {
        full.manifest
            .artifacts
            .get(n)
            .map(|a| a.size as f64 / 1e6)
            .unwrap_or(0.0)
    };
    println!("| figure | herd | anchor |");
    println!("|---|---|---|");
    println!(
        "| update payload | {:.1} MB | Flatcar ~380 MB |",
        size("update.payload")
    );
    println!("| usr.img | {:.1} MB | |", size("usr.img"));
    println!("| netboot initramfs | {:.1} MB | |", size("initramfs"));
    println!("| disk.img | {:.1} MB | |", size("disk.img"));
    println!(
        "| full build (cold cache) | {:.1} s | |",
        full.elapsed.as_secs_f64()
    );
    let out = dir.join("out");
    let netboot = boot_time(
        &dir,
        &[
            "-kernel",
            &path(&out.join("vmlinuz")),
            "-initrd",
            &path(&out.join("initramfs")),
            "-append",
            "console=ttyS0",
        ],
    )?;
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", dir.join("vars.fd"))
        .context("OVMF vars (apt-get install ovmf)")?;
    let disk = boot_time(
        &dir,
        &[
            "-machine",
            "q35",
            "-drive",
            "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
            "-drive",
            &format!("if=pflash,format=raw,file={}", path(&dir.join("vars.fd"))),
            "-drive",
            &format!(
                "if=none,id=d0,format=raw,file={}",
                path(&out.join("disk.img"))
            ),
            "-device",
            "virtio-blk-pci,drive=d0,bootindex=0",
        ],
    )?;
    println!(
        "| QEMU (TCG) start to `herd-init: starting herd`, netboot | {netboot:.1} s | goal < 20 s |"
    );
    println!("| same, disk via OVMF + systemd-boot | {disk:.1} s | |");
    let rebuilt: Vec<_> = again
        .stages
        .iter()
        .filter(|r| !r.cached)
        .map(|r| r.name)
        .collect();
    println!(
        "| rebuild after a herd change | {:.1} s (rebuilt: {}) | goal < 60 s |",
        again.elapsed.as_secs_f64(),
        rebuilt.join(", ")
    );
    Ok(())
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// Seconds from starting QEMU with `args` until the init's start marker is on the serial console.
fn boot_time(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<f64> {
    let log = dir.join("serial.log");
    let _ = std::fs::remove_file(&log);
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "768",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
        ])
        .arg(format!("file:{}", log.display()))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let result = loop {
        let text = std::fs::read(&log).unwrap_or_default();
        if String::from_utf8_lossy(&text).contains("herd-init: starting herd") {
            break Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > std::time::Duration::from_secs(180) {
            break Err(anyhow::anyhow!(
                "no start marker after 180 s; see {}",
                log.display()
            ));
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!(
                "QEMU exited ({status}) before the marker; see {}",
                log.display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}
