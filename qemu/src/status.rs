//! The lab's view of itself: per machine its power state, boot stage (from
//! its console) and what the provisioning server's inventory saw.

use std::path::Path;

use serde::Serialize;

use crate::layout::MachineId;
use crate::pxe::{self, InventoryEntry};
use crate::stage::Stage;
use crate::state::LabState;
use crate::vm;

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
            }
        })
        .collect();
    (rows, inventory_error)
}
