//! Throwaway network namespaces with a bridge, veth pairs and taps.
//!
//! Names are unique per test process (`ht<pid>n<counter>`), so tests can run
//! in parallel. Everything is removed when the [`Netns`] drops, including on
//! panic; namespaces left behind by a test process that was SIGKILLed are
//! swept by the next [`Netns::new`].

use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);
const PREFIX: &str = "ht";

/// A network namespace owned by a test.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

/// Runs `ip` with `args`, failing the test with its stderr on error.
fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e} (apt-get install iproute2)"));
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

impl Netns {
    /// Creates a fresh namespace with its loopback up.
    pub fn new() -> Netns {
        crate::require::root();
        crate::require::tool("ip", "iproute2");
        sweep_stale();
        let name = format!(
            "{PREFIX}{}n{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A short unique interface name (Linux caps them at 15 bytes).
    pub fn ifname(&self, role: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{role}{n}");
        assert!(name.len() <= 15, "interface name {name} too long");
        name
    }

    /// Runs `ip` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A `Command` that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Creates a bridge with `cidr` (e.g. `10.99.0.1/24`) and brings it up.
    pub fn bridge(&self, name: &str, cidr: &str) {
        self.ip(&["link", "add", name, "type", "bridge"]);
        // No STP delay: VMs must get traffic through as soon as they start.
        self.ip(&[
            "link",
            "set",
            name,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ]);
        self.ip(&["addr", "add", cidr, "dev", name]);
        self.ip(&["link", "set", name, "up"]);
    }

    /// Creates a tap device attached to `bridge`, ready for QEMU
    /// (`-netdev tap,ifname=…,script=no,downscript=no` run inside this namespace).
    pub fn tap(&self, name: &str, bridge: &str) {
        self.ip(&["tuntap", "add", "dev", name, "mode", "tap"]);
        self.ip(&["link", "set", name, "master", bridge]);
        self.ip(&["link", "set", name, "up"]);
    }

    /// Plugs `host` into `bridge` like a second machine on the same switch:
    /// a veth pair whose outer end `outer` joins the bridge here and whose
    /// inner end `inner` moves into `host` with address `cidr`.
    pub fn veth_to(&self, bridge: &str, outer: &str, host: &Netns, inner: &str, cidr: &str) {
        self.ip(&["link", "add", outer, "type", "veth", "peer", "name", inner]);
        self.ip(&["link", "set", outer, "master", bridge]);
        self.ip(&["link", "set", outer, "up"]);
        // Moving an interface drops its configuration, so configure it after.
        self.ip(&["link", "set", inner, "netns", host.name()]);
        host.ip(&["addr", "add", cidr, "dev", inner]);
        host.ip(&["link", "set", inner, "up"]);
    }
}

/// An open handle on a namespace, for moving threads into it. It keeps the
/// namespace alive while held, so threads can still enter it after the
/// [`Netns`] was dropped (they then see an empty, unplugged namespace).
#[derive(Debug, Clone)]
pub struct Entry(Arc<std::fs::File>);

impl Entry {
    /// A handle on the namespace named `name` (`ip netns` style), made by
    /// someone else (e.g. a lab's namespace).
    pub fn named(name: &str) -> std::io::Result<Entry> {
        std::fs::File::open(format!("/var/run/netns/{name}")).map(|f| Entry(Arc::new(f)))
    }

    /// A multi-threaded tokio runtime whose worker threads live in the
    /// namespace. Connect only from tasks spawned on it: a future given to
    /// `block_on` runs on the calling thread, outside.
    pub fn runtime(&self) -> tokio::runtime::Runtime {
        let entry = self.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || {
                if let Err(e) = entry.enter_current_thread() {
                    panic!("entering the namespace: {e}");
                }
            })
            .build()
            .expect("runtime")
    }

    /// Moves the calling thread (only it, not the process) into the namespace:
    /// every socket it opens from now on lives there.
    pub fn enter_current_thread(&self) -> std::io::Result<()> {
        // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
        let rc = unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

impl Netns {
    /// A handle for moving threads into this namespace (see [`Entry`]).
    pub fn entry(&self) -> Entry {
        let path = format!("/var/run/netns/{}", self.name);
        let file =
            std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening namespace {path}: {e}"));
        Entry(Arc::new(file))
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove(&self.name);
    }
}

/// Kills every process in namespace `name` and deletes it (and with it every
/// interface inside, taps and bridges included).
fn remove(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<libc::pid_t>() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// Deletes namespaces left by test processes that no longer exist.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('n') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove(name);
        }
    }
}
