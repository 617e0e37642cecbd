//! The lab's view of itself: per machine its power state, boot stage (from
//! its console), what the provisioning server's inventory saw, its store
//! role, image and health — one typed document that `herd lab status`
//! prints as a table or as JSON/YAML, with the same facts in each.

use std::path::Path;

use serde::Serialize;

use crate::layout::MachineId;
use crate::pxe::{self, InventoryEntry};
use crate::stage::Stage;
use crate::state::LabState;
use crate::vm;

/// How a machine is doing, as `herd lab status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Its store member answers with a role.
    Healthy,
    /// Powered on, not (yet) serving.
    Starting,
    /// Powered off.
    Down,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Healthy => "healthy",
            Health::Starting => "starting",
            Health::Down => "down",
        })
    }
}

/// One row of `herd lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct MachineStatus {
    pub name: String,
    pub mac: String,
    pub ip: String,
    pub powered: bool,
    pub pid: Option<u32>,
    /// Furthest boot stage reached since the last power-on (`None`: off).
    pub stage: Option<Stage>,
    /// Milliseconds since power-on.
    pub uptime_ms: Option<u64>,
    /// The provisioning server's inventory entry for this MAC, if any.
    pub inventory: Option<InventoryEntry>,
    /// Its store member's role (`None`: it does not answer).
    pub store_role: Option<crate::cluster::StoreRole>,
    /// The image version its agent registered.
    pub image_version: Option<String>,
    /// Its pod subnet (the network role's lease).
    pub subnet: Option<String>,
    /// Its OS update as its agent reports it (`verifying 0.2.0`, …).
    pub update: Option<String>,
    pub health: Health,
}

/// The whole `herd lab status` document.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    pub lab_dir: std::path::PathBuf,
    pub netns: String,
    pub machines: Vec<MachineStatus>,
    pub inventory_error: Option<String>,
    pub cluster: crate::cluster::ClusterView,
    pub cluster_error: Option<String>,
}

impl LabStatus {
    /// Gathers the status: VMs, inventory, cluster. Best effort: a lab
    /// whose provisioning server or namespace is gone still reports its
    /// VMs, and says why the rest is empty.
    pub async fn gather(lab: &crate::lab::Lab, state: &LabState) -> LabStatus {
        let (mut rows, inventory_error) = machines(lab, state).await;
        let ids: Vec<MachineId> = state.machines.iter().map(|m| m.id()).collect();
        let (cluster, cluster_error) = match crate::cluster::view(&lab.dir, &state.netns, ids).await
        {
            Ok(view) => (view, None),
            Err(e) => (crate::cluster::ClusterView::default(), Some(e.to_string())),
        };
        for r in &mut rows {
            r.store_role = cluster
                .members
                .iter()
                .find(|m| m.machine == r.name)
                .and_then(|m| m.role);
            r.image_version = cluster
                .registered
                .iter()
                .find(|m| m.hostname == r.name)
                .map(|m| m.image_version.clone());
            r.subnet = cluster
                .registered
                .iter()
                .find(|m| m.hostname == r.name)
                .and_then(|m| {
                    cluster
                        .subnets
                        .iter()
                        .find(|s| s.machine_id == m.machine_id)
                })
                .map(|s| s.subnet.clone());
            r.update = cluster
                .updates
                .iter()
                .find(|u| u.hostname == r.name)
                .map(|u| match &u.target {
                    Some(t) => format!("{} {t}", u.phase),
                    None => u.phase.clone(),
                });
            r.health = match (r.store_role, r.powered) {
                (Some(_), _) => Health::Healthy,
                (None, true) => Health::Starting,
                (None, false) => Health::Down,
            };
        }
        LabStatus {
            lab_dir: lab.dir.clone(),
            netns: state.netns.clone(),
            machines: rows,
            inventory_error,
            cluster,
            cluster_error,
        }
    }

    /// The table people read.
    pub fn table(&self) -> String {
        let dash = || "-".to_owned();
        let mut t = herd_cli::Table::new([
            "NAME",
            "MAC",
            "IP",
            "POWER",
            "STAGE",
            "STORE",
            "IMAGE",
            "SUBNET",
            "UPDATE",
            "HEALTH",
            "INVENTORY",
        ]);
        for r in &self.machines {
            t.row([
                r.name.clone(),
                r.mac.clone(),
                r.ip.clone(),
                if r.powered { "on" } else { "off" }.to_owned(),
                r.stage.map_or_else(dash, |s| s.to_string()),
                r.store_role.map_or_else(dash, |s| s.to_string()),
                r.image_version.clone().unwrap_or_else(dash),
                r.subnet.clone().unwrap_or_else(dash),
                r.update.clone().unwrap_or_else(dash),
                r.health.to_string(),
                r.inventory
                    .as_ref()
                    .and_then(|i| i.last_stage.clone())
                    .unwrap_or_else(dash),
            ]);
        }
        let mut out = t.render();
        out.push_str(&format!(
            "members: {}; leader: {}\n",
            if self.cluster.member_names.is_empty() {
                "-".into()
            } else {
                self.cluster
                    .member_names
                    .iter()
                    .map(|n| match self.cluster.learners.contains(n) {
                        true => format!("{n} (learner)"),
                        false => n.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            self.cluster.leader().unwrap_or("none")
        ));
        if let Some(e) = &self.cluster_error {
            out.push_str(&format!("(cluster unreachable: {e})\n"));
        }
        if let Some(e) = &self.cluster.read_error {
            out.push_str(&format!("(cluster lists unreadable: {e})\n"));
        }
        if let Some(e) = &self.inventory_error {
            out.push_str(&format!("(provisioning inventory unavailable: {e})\n"));
        }
        out
    }
}

/// The console-derived stage of machine `id`.
pub fn console_stage(lab_dir: &Path, id: MachineId) -> Stage {
    let log = std::fs::read(vm::VmFiles::new(lab_dir, id).serial())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Stage::from_console(&log)
}

/// Status of every machine. The inventory is best effort: a lab whose
/// provisioning server is down still reports its VMs.
pub async fn machines(
    lab: &crate::lab::Lab,
    state: &LabState,
) -> (Vec<MachineStatus>, Option<String>) {
    let (inventory, inventory_error) = match pxe::inventory(&state.netns).await {
        Ok(entries) => (entries, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let now = crate::state::now_ms();
    let rows = state
        .machines
        .iter()
        .map(|m| {
            let id = m.id();
            let pid = lab.vm_pid(m);
            let powered = pid.is_some();
            MachineStatus {
                name: id.to_string(),
                mac: m.mac.clone(),
                ip: m.ip.to_string(),
                powered,
                pid,
                stage: powered.then(|| console_stage(&lab.dir, id)),
                uptime_ms: m
                    .powered_on_ms
                    .filter(|_| powered)
                    .map(|t| now.saturating_sub(t)),
                inventory: inventory
                    .iter()
                    .find(|e| e.mac.eq_ignore_ascii_case(&m.mac))
                    .cloned(),
                store_role: None,
                image_version: None,
                subnet: None,
                update: None,
                health: if powered {
                    Health::Starting
                } else {
                    Health::Down
                },
            }
        })
        .collect();
    (rows, inventory_error)
}
