//! Processes the lab starts and must find again after its own crash: QEMU,
//! the provisioning server and the RA sender. A recorded PID is only
//! trusted while `/proc/PID/cmdline` still names the lab directory, so a
//! recycled PID is never signalled.

use std::path::Path;
use std::time::Duration;

/// Whether `pid` is alive and one of its arguments ends with `needle`
/// (ends, so that lab `/x/lab` never claims the processes of `/x/lab2`).
pub fn is_ours(pid: u32, needle: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if is_zombie(pid) {
        return false;
    }
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg.ends_with(needle.as_bytes()))
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions; a stale PID only
    // yields ESRCH, and callers checked the PID is ours.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Stops `pid` if it is still ours: SIGTERM, then SIGKILL after `grace`.
/// Returns whether a process was stopped.
pub async fn stop(pid: u32, needle: &str, grace: Duration) -> bool {
    if !is_ours(pid, needle) {
        return false;
    }
    signal(pid, libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if !is_ours(pid, needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(pid, libc::SIGKILL);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while is_ours(pid, needle) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// SIGKILLs every process of `pids` that is still ours (pid, needle) in
/// one pass, then waits until they are gone: a power cut of several
/// machines at the same instant. Returns, per process, whether it was running.
pub async fn kill_at_once(pids: &[(u32, String)]) -> Vec<bool> {
    let alive: Vec<bool> = pids.iter().map(|(pid, tag)| is_ours(*pid, tag)).collect();
    for ((pid, _), alive) in pids.iter().zip(&alive) {
        if *alive {
            signal(*pid, libc::SIGKILL);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|(pid, tag)| is_ours(*pid, tag)) && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alive
}

/// Every process but this one with an argument ending in `needle`.
pub fn tagged(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && is_ours(pid, needle))
        .collect()
}

/// SIGKILLs every process tagged with `needle` (see [`tagged`]) and waits
/// until none is left; returns the ones that would not go.
pub async fn sweep(needle: &str, within: Duration) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = tagged(needle);
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return left;
        }
        for &pid in &left {
            signal(pid, libc::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops `pid` whatever it runs (for processes inside the lab's own
/// namespace, which are the lab's by construction).
pub async fn stop_any(pid: u32, grace: Duration) -> bool {
    stop(pid, "", grace).await
}

/// Reads a PID file as QEMU writes it.
pub fn read_pidfile(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
