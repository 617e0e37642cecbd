//! How far a VM's boot has got, read from its serial console log: the
//! firmware's and kernel's own lines, plus the agent's startup line.

use std::fmt;

use herd_client::stage::AgentStage;
use serde::Serialize;

/// Boot stages in the order a netbooting machine passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// QEMU runs; nothing on the console yet.
    PoweredOn,
    /// iPXE is running (its banner is on the console).
    Firmware,
    /// iPXE got a DHCP lease.
    Dhcp,
    /// iPXE fetched its boot script and started loading the kernel.
    Script,
    /// The Linux kernel is booting.
    Kernel,
    /// `herd agent` started.
    Agent,
    /// The machine is a member of the store cluster (known from the cluster,
    /// never from the console).
    Joined,
}

impl Stage {
    /// Stages visible on the console, each with the line fragments that
    /// mark it (any one is enough). iPXE prints `Configuring (net0 …)... ok`
    /// once DHCP succeeds and `…/boot.ipxe... ok` once it has its script;
    /// the kernel's x86 setup code prints `Probing EDD` as it starts (the
    /// `Linux version` banner is hidden at loglevel 4). The agent's own
    /// stages are typed lines (`herd_client::stage::AgentStage`), not text.
    pub const CONSOLE_MARKERS: [(Stage, &'static [&'static str]); 4] = [
        (Stage::Firmware, &["iPXE"]),
        (Stage::Dhcp, &["Configuring (net0"]),
        (Stage::Script, &["boot.ipxe... ok"]),
        (Stage::Kernel, &["Probing EDD", "Linux version"]),
    ];

    /// The furthest stage the console log shows.
    pub fn from_console(log: &str) -> Stage {
        if !AgentStage::all_in(log).is_empty() {
            return Stage::Agent;
        }
        Stage::CONSOLE_MARKERS
            .iter()
            .rev()
            .find(|(stage, markers)| {
                markers.iter().any(|marker| match stage {
                    // "Configuring (net0 …)" is printed before the lease; the
                    // stage is reached when the line ends with "ok".
                    Stage::Dhcp => log
                        .lines()
                        .any(|l| l.contains(marker) && l.trim_end().ends_with("ok")),
                    _ => log.contains(marker),
                })
            })
            .map(|(stage, _)| *stage)
            .unwrap_or(Stage::PoweredOn)
    }

    /// Every stage in boot order.
    pub const ALL: [Stage; 7] = [
        Stage::PoweredOn,
        Stage::Firmware,
        Stage::Dhcp,
        Stage::Script,
        Stage::Kernel,
        Stage::Agent,
        Stage::Joined,
    ];
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::PoweredOn => "powered-on",
            Stage::Firmware => "firmware",
            Stage::Dhcp => "dhcp",
            Stage::Script => "ipxe-script",
            Stage::Kernel => "kernel",
            Stage::Agent => "agent",
            Stage::Joined => "joined",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_follow_an_ipxe_netboot_console() {
        let mut log = String::new();
        assert_eq!(Stage::from_console(&log), Stage::PoweredOn);
        log += "SeaBIOS (version 1.16.2-debian-1.16.2-1)\niPXE (https://ipxe.org) 00:03.0 CA00 PCI2.10 PnP PMM\n";
        assert_eq!(Stage::from_console(&log), Stage::Firmware);
        log += "Configuring (net0 52:54:00:77:00:01)......";
        assert_eq!(Stage::from_console(&log), Stage::Firmware, "no lease yet");
        log += " ok\n";
        assert_eq!(Stage::from_console(&log), Stage::Dhcp);
        log += "Filename: http://10.77.0.1:8080/boot.ipxe\n";
        assert_eq!(Stage::from_console(&log), Stage::Dhcp, "not fetched yet");
        log += "http://10.77.0.1:8080/boot.ipxe... ok\n";
        assert_eq!(Stage::from_console(&log), Stage::Script);
        log += "Probing EDD (edd=off to disable)... ok\n";
        assert_eq!(Stage::from_console(&log), Stage::Kernel);
        log += &AgentStage::Starting {
            version: "0.1.0".into(),
            cloud_config: None,
        }
        .line();
        assert_eq!(Stage::from_console(&log), Stage::Agent);
    }
}
