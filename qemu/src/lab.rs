//! The lab's lifecycle: `up`, `add`, `kill`, `boot` and `down`. Every
//! process and interface is recorded in the state file before (or right
//! after) it is created, so `down` finds everything after any crash.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::layout::{self, MachineId};
use crate::net::{self, NetError};
use crate::pki;
use crate::prereq::{self, Missing};
use crate::process;
use crate::pxe;
use crate::registry;
use crate::state::{LabState, MachineIdRepr, MachineState, StateError, now_ms};
use crate::vm::{self, VmError};

/// Everything that can stop a lab command.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab cannot start:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Prerequisites(Vec<Missing>),
    #[error(
        "a lab is already up in {dir} (namespace {netns}, {machines} machines): see `herd lab status`, add machines with `herd lab add`, or remove it with `herd lab down`"
    )]
    AlreadyUp {
        dir: PathBuf,
        netns: String,
        machines: usize,
    },
    #[error(
        "namespace {0} exists but belongs to no lab in this directory: remove it (`ip netns del {0}`) or pick another with --netns"
    )]
    ForeignNamespace(String),
    #[error("no lab in {0}: start one with `herd lab up`")]
    NotUp(PathBuf),
    #[error("processes of the lab would not stop: {0:?}")]
    Leftover(Vec<u32>),
    #[error("{machine} is not in the lab (machines: {known})")]
    UnknownMachine { machine: MachineId, known: String },
    #[error("{0} is already powered on")]
    AlreadyOn(MachineId),
    #[error("the lab is full: no machine number left")]
    Full,
    #[error("--machines must be between 1 and {max}, not {0}", max = layout::MAX_MACHINE)]
    MachineCount(u32),
    #[error("building the image: {0}")]
    Image(String),
    #[error("the provisioning server: {0}")]
    Pxe(String),
    #[error("the lab registry: {0}")]
    Registry(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Pki(#[from] pki::LabPkiError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// One lab directory and the `herd` binary that runs its servers.
#[derive(Debug, Clone)]
pub struct Lab {
    pub dir: PathBuf,
    pub herd: PathBuf,
}

/// Options of `herd lab up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub machines: u32,
    pub install: bool,
    /// A prebuilt image directory (`vmlinuz`, `initramfs`); built if `None`.
    pub image: Option<PathBuf>,
    /// The machines' OS carries Docker (`docker.io`), pulling from the lab
    /// registry; implies `install` (Docker's ~300 MB live on the disk's USR
    /// slot, not in a netbooted machine's RAM).
    pub docker: bool,
    pub netns: String,
}

/// What `down` removed.
#[derive(Debug, Default)]
pub struct DownReport {
    pub vms_stopped: usize,
    pub servers_stopped: usize,
    pub namespace_removed: bool,
}

impl Lab {
    /// A lab in `dir`. The directory is made absolute: it identifies the
    /// lab's processes, whatever the working directory of later commands.
    pub fn new(dir: PathBuf, herd: PathBuf) -> Lab {
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Lab { dir, herd }
    }

    /// The recorded state, or `NotUp`.
    pub fn state(&self) -> Result<LabState, LabError> {
        LabState::load(&self.dir)?.ok_or_else(|| LabError::NotUp(self.dir.clone()))
    }

    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LabError {
        let path = path.to_path_buf();
        move |source| LabError::Io { what, path, source }
    }

    /// QEMU's PID for machine `m` if it runs: the recorded PID, or the PID
    /// file (a crash between QEMU's start and the state update leaves only
    /// the latter).
    pub fn vm_pid(&self, m: &MachineState) -> Option<u32> {
        let id = m.id();
        let from_file = || process::read_pidfile(&vm::VmFiles::new(&self.dir, id).pidfile());
        [m.pid, from_file()]
            .into_iter()
            .flatten()
            .find(|pid| vm::is_running(&self.dir, id, *pid))
    }

    /// Whether anything recorded in `state` still runs or exists.
    pub fn is_alive(&self, state: &LabState) -> bool {
        net::exists(&state.netns)
            || state.machines.iter().any(|m| {
                m.pid
                    .is_some_and(|pid| vm::is_running(&self.dir, m.id(), pid))
            })
            || state
                .pxe_pid
                .is_some_and(|pid| process::is_ours(pid, &pxe::tag(&self.dir)))
    }

    /// Brings the lab up: network, RA sender, provisioning server, VMs.
    /// Returns once every VM is powered on (see `progress` for the rest).
    pub async fn up(&self, options: &UpOptions) -> Result<LabState, LabError> {
        if options.machines == 0 || options.machines > u32::from(layout::MAX_MACHINE) {
            return Err(LabError::MachineCount(options.machines));
        }
        let mut missing = prereq::check_host();
        let install = options.install || options.docker;
        if install {
            missing.extend(prereq::check_ovmf());
        }
        if !missing.is_empty() {
            return Err(LabError::Prerequisites(missing));
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(Self::io("creating lab directory", &self.dir))?;
        if let Some(old) = LabState::load(&self.dir)? {
            if self.is_alive(&old) {
                return Err(LabError::AlreadyUp {
                    dir: self.dir.clone(),
                    netns: old.netns,
                    machines: old.machines.len(),
                });
            }
            // A lab that crashed and left nothing running: clear its leftovers.
            self.down().await?;
        }
        if net::exists(&options.netns) {
            return Err(LabError::ForeignNamespace(options.netns.clone()));
        }

        let image_dir = match &options.image {
            Some(dir) => dir.clone(),
            None => self.build_image(options.docker).await?,
        };
        let mut missing = prereq::check_image(&image_dir);
        if install {
            missing.extend(prereq::check_disk_image(&image_dir));
        }
        if !missing.is_empty() {
            return Err(LabError::Prerequisites(missing));
        }

        let endpoints: Vec<String> = (1..=options.machines)
            .filter_map(|n| MachineId::new(n as u8))
            .map(|m| m.client_endpoint())
            .collect();
        let front = MachineId::new(1).expect("machine 1 exists");
        let api_server = format!("https://{}:6443", front.ip());
        let lab_pki = pki::create(&self.dir, &endpoints, &api_server)?;
        let mut state = LabState::new(
            options.netns.clone(),
            lab_pki.token.reveal(),
            image_dir,
            install,
        );
        state.docker = options.docker;
        // Recorded before the namespace exists: `down` must find it.
        state.save(&self.dir)?;
        net::create(&state.netns).await?;

        state.ra_pid = Some(self.spawn_ra(&state.netns)?);
        state.save(&self.dir)?;

        let pxe_pid =
            pxe::start(&self.dir, &self.herd, &state, options.machines, &lab_pki.ca).await?;
        state.pxe_pid = Some(pxe_pid);
        state.save(&self.dir)?;
        pxe::wait_ready(&state.netns, Duration::from_secs(30)).await?;

        state.registry_pid = Some(registry::start(&self.dir, &state.netns)?);
        state.save(&self.dir)?;
        registry::wait_ready(&state.netns, Duration::from_secs(30)).await?;
        if options.docker {
            registry::push_pause(&self.dir, &self.herd, &state.netns).await?;
        }

        for n in 1..=options.machines {
            let id = MachineId::new(n as u8).expect("count checked above");
            self.power_on_new(&mut state, id).await?;
        }
        Ok(state)
    }

    /// Builds (or reuses) the lab's image in `LAB/image` (or, with Docker,
    /// `LAB/image-docker` from [`docker_spec`]) with `herd image build`,
    /// which caches by content itself.
    pub async fn build_image(&self, docker: bool) -> Result<PathBuf, LabError> {
        let out_dir = self.dir.join(if docker { "image-docker" } else { "image" });
        if prereq::check_image(&out_dir).is_empty() {
            return Ok(out_dir);
        }
        let mut spec_args = Vec::new();
        if docker {
            let path = self.dir.join("docker-spec.yaml");
            let text = serde_saphyr::to_string(&docker_spec())
                .map_err(|e| LabError::Image(format!("rendering the Docker spec: {e}")))?;
            std::fs::write(&path, text).map_err(Self::io("writing", &path))?;
            spec_args.push("--spec".into());
            spec_args.push(path.into_os_string());
        }
        let log = self.dir.join("image-build.log");
        let log_file = std::fs::File::create(&log).map_err(Self::io("creating", &log))?;
        let status = tokio::process::Command::new(&self.herd)
            .args(["image", "build", "--out"])
            .arg(&out_dir)
            .args(&spec_args)
            // The machines run the very herd that runs the lab.
            .arg("--herd-bin")
            .arg(&self.herd)
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone().map_err(Self::io("opening", &log))?)
            .stderr(log_file)
            .kill_on_drop(true)
            .status()
            .await
            .map_err(Self::io("running herd image build for", &out_dir))?;
        if !status.success() {
            return Err(LabError::Image(format!(
                "`herd image build --out {}` failed ({status}); its output is in {}",
                out_dir.display(),
                log.display()
            )));
        }
        Ok(out_dir)
    }

    /// The RA sender: `herd lab ra` inside the namespace, detached.
    fn spawn_ra(&self, netns: &str) -> Result<u32, LabError> {
        let log = self.dir.join("ra.log");
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", netns])
            .arg(&self.herd)
            .args(["lab", "ra", "--interface", layout::BRIDGE, "--lab-dir"])
            .arg(&self.dir);
        spawn_detached(&mut cmd, &log)
    }

    /// Racks machine `id`: its directory and empty disk, its tap, and power.
    /// The machine is recorded in the state file before QEMU starts.
    pub async fn power_on_new(&self, state: &mut LabState, id: MachineId) -> Result<(), LabError> {
        let files = vm::prepare(&self.dir, id, Self::firmware(state)).await?;
        state.machines.push(MachineState {
            id: MachineIdRepr(id.number()),
            mac: id.mac(),
            ip: id.ip(),
            tap: id.tap(),
            disk: files.disk(),
            pid: None,
            powered_on_ms: None,
        });
        state.save(&self.dir)?;
        self.power_on(state, id).await
    }

    async fn power_on(&self, state: &mut LabState, id: MachineId) -> Result<(), LabError> {
        let files = vm::VmFiles::new(&self.dir, id);
        let sercon = vm::write_sercon_port(&self.dir)
            .map_err(Self::io("writing", &self.dir.join("sercon-port")))?;
        net::add_tap(&state.netns, &id.tap()).await?;
        let started = now_ms();
        let pid = vm::power_on(
            &self.dir,
            &state.netns,
            id,
            &files,
            &sercon,
            Self::firmware(state),
            Self::memory_mb(state),
        )
        .await?;
        let machine = state
            .machine_mut(id)
            .expect("machine recorded before power-on");
        machine.pid = Some(pid);
        machine.powered_on_ms = Some(started);
        state.save(&self.dir)?;
        Ok(())
    }

    fn memory_mb(state: &LabState) -> u32 {
        if state.docker {
            vm::DOCKER_MEMORY_MB
        } else {
            vm::MEMORY_MB
        }
    }

    fn firmware(state: &LabState) -> vm::Firmware {
        if state.install {
            vm::Firmware::Uefi
        } else {
            vm::Firmware::Bios
        }
    }

    fn known(state: &LabState) -> String {
        state
            .machines
            .iter()
            .map(|m| m.id().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Racks one more machine (the next number) and powers it on.
    pub async fn add(&self) -> Result<MachineId, LabError> {
        let mut state = self.state()?;
        let id = state.next_id().ok_or(LabError::Full)?;
        self.power_on_new(&mut state, id).await?;
        Ok(id)
    }

    /// Powers machine `id` off (pulls the plug: QEMU quits, the guest gets
    /// no shutdown). Returns whether it was running.
    pub async fn kill(&self, ids: &[MachineId]) -> Result<Vec<bool>, LabError> {
        let mut state = self.state()?;
        let known = Self::known(&state);
        let mut on = Vec::new();
        for &id in ids {
            let machine = state.machine(id).ok_or_else(|| LabError::UnknownMachine {
                machine: id,
                known: known.clone(),
            })?;
            if let Some(pid) = self.vm_pid(machine) {
                on.push((id, pid));
            }
        }
        let was_on = vm::power_off(&self.dir, &on).await;
        for &id in ids {
            state.machine_mut(id).expect("found above").pid = None;
        }
        state.save(&self.dir)?;
        Ok(ids
            .iter()
            .map(|id| on.iter().zip(&was_on).any(|((m, _), was)| m == id && *was))
            .collect())
    }

    /// Powers machine `id` on again (it netboots, or boots from its disk if
    /// it installed).
    pub async fn boot(&self, id: MachineId) -> Result<(), LabError> {
        let mut state = self.state()?;
        let known = Self::known(&state);
        let machine = state
            .machine(id)
            .ok_or(LabError::UnknownMachine { machine: id, known })?;
        if machine
            .pid
            .is_some_and(|pid| vm::is_running(&self.dir, id, pid))
        {
            return Err(LabError::AlreadyOn(id));
        }
        self.power_on(&mut state, id).await
    }

    /// Stops every VM and server and removes the namespace (with its bridge
    /// and taps). Idempotent; works from the state file alone, and also
    /// sweeps processes left in the namespace that the file missed (a crash
    /// between spawning and recording).
    pub async fn down(&self) -> Result<DownReport, LabError> {
        let mut report = DownReport::default();
        let Some(state) = LabState::load(&self.dir)? else {
            return Ok(report);
        };
        let on: Vec<(MachineId, u32)> = state
            .machines
            .iter()
            .filter_map(|m| Some((m.id(), self.vm_pid(m)?)))
            .collect();
        report.vms_stopped += vm::power_off(&self.dir, &on)
            .await
            .into_iter()
            .filter(|was_on| *was_on)
            .count();
        if let Some(pid) = state.pxe_pid
            && process::stop(pid, &pxe::tag(&self.dir), Duration::from_secs(5)).await
        {
            report.servers_stopped += 1;
        }
        if let Some(pid) = state.ra_pid
            && process::stop(pid, &ra_tag(&self.dir), Duration::from_secs(5)).await
        {
            report.servers_stopped += 1;
        }
        if let Some(pid) = state.registry_pid
            && process::stop(pid, &registry::tag(&self.dir), Duration::from_secs(5)).await
        {
            report.servers_stopped += 1;
        }
        if net::exists(&state.netns) {
            // Whatever still runs inside the namespace belongs to this lab
            // (e.g. a `herd lab exec` shell, or a server spawned just before
            // a crash and never recorded).
            for pid in net::pids(&state.netns).await {
                if process::stop_any(pid, Duration::from_secs(5)).await {
                    report.servers_stopped += 1;
                }
            }
            net::delete(&state.netns).await?;
            report.namespace_removed = true;
        }
        // Return only once everything this lab started is gone: any process
        // still carrying the lab's tag (a VM powered on while this ran, a
        // server whose PID was never recorded) is killed and waited for.
        let mut left = process::sweep(&ra_tag(&self.dir), Duration::from_secs(10)).await;
        left.extend(process::sweep(&pxe::tag(&self.dir), Duration::from_secs(5)).await);
        left.extend(process::sweep(&registry::tag(&self.dir), Duration::from_secs(5)).await);
        if !left.is_empty() {
            return Err(LabError::Leftover(left));
        }
        LabState::remove(&self.dir)?;
        Ok(report)
    }
}

/// The OS of a Docker lab: the default spec plus `docker.io`, a USR slot
/// big enough for it, AppArmor off (the Debian kernel enables it, and
/// dockerd then wants `apparmor_parser`), and dockerd allowed to pull from
/// the lab registry over plain HTTP. The kubelet plugs pods in with
/// iproute2's `ip` (busybox's cannot create a veth into a namespace).
pub fn docker_spec() -> herd_image::spec::Spec {
    let mut spec = herd_image::spec::Spec::default_spec();
    spec.packages.push("docker.io".into());
    spec.packages.push("iproute2".into());
    spec.partitions.usr_mib = 400;
    spec.cmdline = format!(
        "{} apparmor=0 herd.registry={} herd.pull={}/{}",
        spec.cmdline,
        registry::address(),
        registry::address(),
        herd_image::container::PAUSE_IMAGE
    );
    spec
}

/// What identifies the RA sender of a lab in `/proc/PID/cmdline`.
pub fn ra_tag(lab_dir: &Path) -> String {
    lab_dir.display().to_string()
}

/// Starts `cmd` in its own session, detached from the terminal, with output
/// to `log`; it outlives this process. Returns its PID.
pub fn spawn_detached(cmd: &mut std::process::Command, log: &Path) -> Result<u32, LabError> {
    use std::os::unix::process::CommandExt;
    let io = |what| {
        let path = log.to_path_buf();
        move |source| LabError::Io { what, path, source }
    };
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io("opening log"))?;
    let err = out.try_clone().map_err(io("opening log"))?;
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(io("starting the process logging to"))?;
    Ok(child.id())
}
