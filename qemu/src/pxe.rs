//! The lab's provisioning server: `herd pxe serve` on the lab bridge with a
//! lab profile (static reservations by MAC, the cloud-config template with
//! the join token and the first machine as the bootstrap peer).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lab::{LabError, spawn_detached};
use crate::layout::{self, MachineId};
use crate::nsnet;
use crate::state::LabState;
use herd_pki::ClusterCa;

/// The provisioning server's state directory, which also identifies its
/// process (`--state-dir` is its last argument).
pub fn state_dir(lab_dir: &Path) -> PathBuf {
    lab_dir.join("pxe")
}

/// What identifies this lab's provisioning server in `/proc/PID/cmdline`.
pub fn tag(lab_dir: &Path) -> String {
    state_dir(lab_dir).display().to_string()
}

/// The provisioning server's HTTP address on the lab bridge.
pub fn http_addr() -> SocketAddr {
    SocketAddr::from((layout::HOST_ADDR, layout::PXE_HTTP_PORT))
}

/// The kernel command line of lab machines: console on the serial port
/// (the lab's progress view reads it) and where the agent finds its
/// cloud-config (filled in per machine by the provisioning server).
pub const KERNEL_CMDLINE: &str =
    "console=ttyS0 loglevel=4 herd.config={{ server_url }}/cloud-config?mac={{ mac }}";

/// Added to the command line of machines that install to disk: where the
/// firstboot installer gets `disk.img` (its `manifest.json`, with the hash,
/// sits beside it) and whom it tells that the install is done.
pub const INSTALL_CMDLINE: &str = " herd.install=/dev/vda herd.image={{ server_url }}/assets/lab/files/disk.img herd.installed={{ server_url }}/api/machines/{{ mac }}/installed";

/// Raft timing for the lab's emulated machines (see the template).
pub const LAB_HEARTBEAT_MS: u64 = 500;
pub const LAB_ELECTION_MS: u64 = 5000;

/// The machines' cloud-config template. Per-machine values come from each
/// machine's group (`metadata.name`, `metadata.ip`); the founder and peer
/// list are the first machines of the lab. The founder's (`ca`: given)
/// carries the cluster CA, which the others get by joining.
fn cloud_config_template(state: &LabState, founders: u32, ca: Option<&ClusterCa>) -> String {
    let first = MachineId::new(1).expect("machine 1 exists");
    let peers: Vec<String> = (1..=founders)
        .filter_map(|n| MachineId::new(n as u8))
        .map(|m| m.ip().to_string())
        .collect();
    let mut t = format!(
        "hostname: {{{{ metadata.name }}}}\nherd:\n  token: {{{{ token }}}}\n  advertise: {{{{ metadata.ip }}}}\n  bootstrap: {first}\n  peers: [{peers}]\n  roles: [store]\n  network: {{}}\n",
        first = first.ip(),
        peers = peers.join(", "),
    );
    if state.docker {
        // dockerd pulled the pause image from the lab registry at boot
        // (`herd.pull`), under the registry's name.
        t.push_str(&format!(
            "  kubelet:\n    pod_infra_image: {}/{}\n",
            crate::registry::address(),
            herd_image::container::PAUSE_IMAGE
        ));
    }
    if state.install {
        t.push_str("  install_disk: /dev/vda\n");
        // Machines on disk follow the lab's update group: publish a release
        // with `herd lab exec -- herd pxe publish …` and they roll to it.
        // Short intervals and gate timeout: the lab runs under TCG and its
        // tests wait for whole rollouts.
        t.push_str(UPDATE_SECTION);
    }
    // Emulated (TCG) machines sharing two cores take hundreds of
    // milliseconds for a replication round trip with fsync; at the default
    // 100 ms heartbeat every append would time out and be resent.
    t.push_str(&format!(
        "  heartbeat_interval_ms: {LAB_HEARTBEAT_MS}\n  election_timeout_ms: {LAB_ELECTION_MS}\n"
    ));
    if let Some(ca) = ca {
        let quote = |s: &str| serde_json::to_string(s).expect("strings serialise");
        t.push_str(&format!(
            "  ca:\n    cert: {}\n    key: {}\n",
            quote(&ca.pair.cert_pem),
            quote(&ca.pair.key_pem)
        ));
    }
    t
}

/// The cloud-config's `update:` section for installed lab machines.
pub const UPDATE_SECTION: &str = "  update:\n    server: \"{{ server_url }}\"\n    group: stable\n    interval: 10s\n    jitter: 5s\n    health_timeout: 90s\n    reboot_lock_ttl: 5m\n    drain_grace: 2s\n";

/// The provisioning server's admin token (publishing releases needs it).
pub fn api_token_file(lab_dir: &Path) -> PathBuf {
    state_dir(lab_dir).join("api.token")
}

/// The provisioning server's HTTPS admin address, where releases are
/// published.
pub fn admin_url() -> String {
    format!("https://{}:{}", layout::HOST_ADDR, layout::PXE_ADMIN_PORT)
}

/// The CA the admin listener's certificate chains to (where `herd pxe
/// serve` makes it; `tests/profile_contract.rs` holds the two together).
pub fn admin_ca_file(lab_dir: &Path) -> PathBuf {
    state_dir(lab_dir).join("admin").join("ca.crt")
}

/// The provisioning server's config: the lab's two profiles (the
/// founder's, whose cloud-config carries `ca`, and everyone else's), and
/// one group per reserved machine (matched by MAC) carrying its name and
/// address.
pub fn profile(state: &LabState, founders: u32, reserved: u32, ca: &ClusterCa) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("strings serialise");
    let mut out = String::from("# Written by `herd lab up`; rewritten on every `up`.\n");
    out.push_str(&format!("token: {}\n", quote(&state.token)));
    out.push_str("profiles:\n");
    let mut cmdline = KERNEL_CMDLINE.to_owned();
    if state.install {
        cmdline.push_str(INSTALL_CMDLINE);
    }
    for (id, ca) in [(FOUNDER_PROFILE, Some(ca)), (PROFILE, None)] {
        out.push_str(&format!(
            "  - id: {id}\n    kernel: {}\n    initrd: [{}]\n    cmdline: {}\n    install_to_disk: {}\n",
            quote(&state.image_dir.join("vmlinuz").display().to_string()),
            quote(&state.image_dir.join("initramfs").display().to_string()),
            quote(&cmdline),
            state.install,
        ));
        if state.install {
            out.push_str("    files:\n");
            for f in ["disk.img", "manifest.json"] {
                out.push_str(&format!(
                    "      {f}: {}\n",
                    quote(&state.image_dir.join(f).display().to_string())
                ));
            }
        }
        out.push_str(&format!(
            "    cloud_config:\n      inline: {}\n",
            quote(&cloud_config_template(state, founders, ca))
        ));
    }
    out.push_str("groups:\n");
    for n in 1..=reserved {
        let Some(id) = MachineId::new(n as u8) else {
            break;
        };
        let profile = if n == 1 { FOUNDER_PROFILE } else { PROFILE };
        out.push_str(&format!(
            "  - id: {id}\n    profile: {profile}\n    selector: {{ mac: \"{}\" }}\n    metadata: {{ name: {id}, ip: \"{}\" }}\n",
            id.mac(),
            id.ip()
        ));
    }
    out
}

const FOUNDER_PROFILE: &str = "lab-founder";
const PROFILE: &str = "lab";

/// Writes the lab profile and starts `herd pxe serve` inside the namespace.
pub async fn start(
    lab_dir: &Path,
    herd: &Path,
    state: &LabState,
    machines: u32,
    ca: &ClusterCa,
) -> Result<u32, LabError> {
    let config = lab_dir.join("pxe-profile.yaml");
    // Reservations cover room for machines added later.
    let reserved = (machines + 16).min(u32::from(layout::MAX_MACHINE));
    // It carries the CA key and the join token: owner only.
    herd_pki::files::write_atomic(
        &config,
        profile(state, machines, reserved, ca).as_bytes(),
        0o600,
    )
    .map_err(|e| LabError::Pxe(format!("writing {}: {e}", config.display())))?;
    let dir = state_dir(lab_dir);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|source| LabError::Io {
            what: "creating",
            path: dir.clone(),
            source,
        })?;
    let range = format!("{}-{}", layout::DYNAMIC_RANGE.0, layout::DYNAMIC_RANGE.1);
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &state.netns])
        .arg(herd)
        .args(["pxe", "serve", "--interface", layout::BRIDGE, "--address"])
        .arg(layout::HOST_ADDR.to_string())
        .args(["--range", &range, "--config"])
        .arg(&config);
    for n in 1..=reserved {
        if let Some(id) = MachineId::new(n as u8) {
            cmd.arg("--reserve")
                .arg(format!("{}={}", id.mac(), id.ip()));
        }
    }
    cmd.arg("--state-dir").arg(&dir);
    spawn_detached(&mut cmd, &lab_dir.join("pxe.log"))
}

/// Waits until the provisioning server answers HTTP on the bridge.
pub async fn wait_ready(netns: &str, timeout: Duration) -> Result<(), LabError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match nsnet::connect(netns, http_addr(), Duration::from_secs(1)).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(LabError::Pxe(format!(
                    "not answering on http://{} after {timeout:?} ({e}); see pxe.log in the lab directory",
                    http_addr()
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One machine as the provisioning server's inventory saw it.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct InventoryEntry {
    pub mac: String,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub last_stage: Option<String>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// `GET /api/machines` from the provisioning server.
pub async fn inventory(netns: &str) -> Result<Vec<InventoryEntry>, LabError> {
    nsnet::http(netns, Duration::from_secs(3))
        .get_json(&format!("http://{}/api/machines", http_addr()))
        .await
        .map_err(|e| LabError::Pxe(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_is_yaml_with_one_group_per_machine() {
        let state = LabState::new("herd-lab".into(), "t0k3n".into(), "/img".into(), true);
        let ca = ClusterCa::generate("test").unwrap();
        let text = profile(&state, 3, 5, &ca);
        // Parse it back as YAML-compatible JSON values where possible: the
        // quoted scalars are JSON strings, so the template survives intact.
        assert!(text.contains("token: \"t0k3n\""), "{text}");
        assert!(text.contains("kernel: \"/img/vmlinuz\""), "{text}");
        assert!(
            text.contains("{{ server_url }}/cloud-config?mac={{ mac }}"),
            "{text}"
        );
        assert!(
            text.contains("selector: { mac: \"52:54:00:77:00:05\" }"),
            "{text}"
        );
        // (Not just "m6": the CA's base64 may contain that.)
        assert!(!text.contains("id: m6"), "{text}");
        // Only machine 1 gets the founder's profile, with the CA.
        assert!(
            text.contains("  - id: m1\n    profile: lab-founder\n"),
            "{text}"
        );
        assert!(text.contains("  - id: m2\n    profile: lab\n"), "{text}");
        assert_eq!(text.matches("BEGIN PRIVATE KEY").count(), 1, "{text}");
        let template = cloud_config_template(&state, 3, None);
        assert!(!template.contains("ca:"), "{template}");
        assert!(template.contains("bootstrap: 10.77.0.11"), "{template}");
        assert!(
            template.contains("peers: [10.77.0.11, 10.77.0.12, 10.77.0.13]"),
            "{template}"
        );
        assert!(template.contains("install_disk: /dev/vda"), "{template}");
        // Rendered for one machine, it is a cloud-config the agent takes,
        // with the cluster network role on.
        let rendered = template
            .replace("{{ metadata.name }}", "m2")
            .replace("{{ token }}", "t0k3n")
            .replace("{{ metadata.ip }}", "10.77.0.12")
            .replace("{{ server_url }}", "http://10.77.0.1:8080");
        let boot = herd_agent::cloud_config::parse(&rendered).unwrap();
        assert!(boot.network.is_some(), "{rendered}");
        assert!(template.contains("group: stable"), "{template}");
    }
}
