//! Facts a machine tells the cluster about itself: the MAC of the
//! interface carrying its address (its machine id), its boot id, the image
//! version it runs, and whether it booted from its disk.

use std::net::IpAddr;

use herd_client::keys::{MachineRecord, Role, machine_id_for_mac};

/// Why facts about this machine could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("no network interface carries {0}")]
    NoInterface(IpAddr),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("listing network interfaces: {0}")]
    Interfaces(std::io::Error),
}

/// The interface carrying `ip` and its MAC, from the kernel.
pub fn mac_for_ip(ip: IpAddr) -> Result<(String, String), MachineError> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `addrs` with a list we free below.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return Err(MachineError::Interfaces(std::io::Error::last_os_error()));
    }
    let mut found = None;
    let mut cursor = addrs;
    while !cursor.is_null() {
        // SAFETY: `cursor` walks the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family says its type.
        let addr = unsafe {
            match i32::from((*entry.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(entry.ifa_addr as *const libc::sockaddr_in);
                    Some(IpAddr::from(
                        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                    ))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            }
        };
        if addr == Some(ip) {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
            found = Some(name.to_string_lossy().into_owned());
            break;
        }
    }
    // SAFETY: `addrs` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(addrs) };
    let name = found.ok_or(MachineError::NoInterface(ip))?;
    let path = format!("/sys/class/net/{name}/address");
    let mac = std::fs::read_to_string(&path)
        .map_err(|source| MachineError::Read { path, source })?
        .trim()
        .to_owned();
    Ok((name, mac))
}

/// `VERSION_ID` from an os-release file's text.
pub fn os_release_version(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// Gathers this machine's record. Runs blocking file reads: call from
/// `spawn_blocking`.
pub fn describe(
    hostname: &str,
    ip: IpAddr,
    roles: &[Role],
    agent_version: &str,
) -> Result<MachineRecord, MachineError> {
    let (_, mac) = mac_for_ip(ip)?;
    let boot_path = "/proc/sys/kernel/random/boot_id";
    let boot_id = std::fs::read_to_string(boot_path)
        .map_err(|source| MachineError::Read {
            path: boot_path.into(),
            source,
        })?
        .trim()
        .to_owned();
    let image_version = std::fs::read_to_string("/etc/os-release")
        .ok()
        .filter(|t| t.contains("ID=herd"))
        .and_then(|t| os_release_version(&t))
        .unwrap_or_else(|| "none (not a herd image)".into());
    Ok(MachineRecord {
        machine_id: machine_id_for_mac(&mac),
        hostname: hostname.to_owned(),
        mac,
        ip,
        boot_id,
        image_version,
        roles: roles.to_vec(),
        agent_version: agent_version.to_owned(),
        metadata: Default::default(),
        api_url: None,
    })
}

/// Gathers the record of an agent started with plain flags: like
/// [`describe`], but an address no interface carries (a wildcard) is not
/// an error — the machine then has no MAC in its record. Blocking.
pub fn describe_plain(
    hostname: &str,
    ip: IpAddr,
    roles: &[Role],
    agent_version: &str,
) -> Result<MachineRecord, MachineError> {
    match describe(hostname, ip, roles, agent_version) {
        Err(MachineError::NoInterface(_)) => {
            let boot_path = "/proc/sys/kernel/random/boot_id";
            let boot_id = std::fs::read_to_string(boot_path)
                .map_err(|source| MachineError::Read {
                    path: boot_path.into(),
                    source,
                })?
                .trim()
                .to_owned();
            Ok(MachineRecord {
                machine_id: String::new(),
                hostname: hostname.to_owned(),
                mac: String::new(),
                ip,
                boot_id,
                image_version: "none (not a herd image)".into(),
                roles: roles.to_vec(),
                agent_version: agent_version.to_owned(),
                metadata: Default::default(),
                api_url: None,
            })
        }
        r => r,
    }
}

/// Whether this kernel was booted from an installed disk (the boot entry
/// names the USR slot) rather than netbooted.
pub fn booted_from_disk(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|a| a.starts_with("herd.usr="))
}
