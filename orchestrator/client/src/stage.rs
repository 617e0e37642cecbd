//! The stages an agent reports while it comes up, as typed events.
//!
//! A booting machine has no API yet, and its console is often all anyone
//! can read, so the agent writes each stage as one line on stderr (a
//! machine's serial console): `herd-stage: ` and the stage as JSON.
//! Readers (the lab's progress view, tests) parse lines back with
//! [`AgentStage::from_line`] — both sides use this type, no text matching.

use serde::{Deserialize, Serialize};

/// What starts every stage line.
pub const MARKER: &str = "herd-stage: ";

/// One stage of an agent's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "kebab-case")]
pub enum AgentStage {
    /// The agent runs; its settings come from `cloud_config` when set.
    Starting {
        version: String,
        cloud_config: Option<String>,
    },
    /// Its store member runs: `resumed` from its data dir (a disk boot or a
    /// restart), or founded/joined anew.
    StoreStarted { member: String, resumed: bool },
    /// The machine is registered in the store (a write the cluster
    /// accepted: this member is part of a working quorum).
    Registered { machine_id: String },
    /// After a healthy disk boot the booted slot was marked good.
    SlotMarkedGood { slot: String },
    /// Marking the booted slot good failed; the boot loader keeps counting
    /// tries and falls back by itself.
    SlotNotMarked { reason: String },
    /// A step of an OS update (`download-started`, `slot-written`,
    /// `lock-acquired`, `activated`, `gate-started`, `marked-good`,
    /// `gate-failed`, `rolled-back`, `failed`, …) about `version`.
    Update {
        step: String,
        version: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// The agent stopped cleanly.
    Stopped,
}

impl AgentStage {
    /// The console line for this stage.
    pub fn line(&self) -> String {
        format!(
            "{MARKER}{}",
            serde_json::to_string(self).expect("a stage serializes")
        )
    }

    /// The stage a console line reports, if it is a stage line (anything
    /// before the marker, such as a timestamp, is ignored).
    pub fn from_line(line: &str) -> Option<AgentStage> {
        let (_, json) = line.split_once(MARKER)?;
        serde_json::from_str(json.trim_end()).ok()
    }

    /// Every stage a console log reports, in order.
    pub fn all_in(log: &str) -> Vec<AgentStage> {
        log.lines().filter_map(AgentStage::from_line).collect()
    }

    /// Writes the stage line to stderr.
    pub fn report(&self) {
        eprintln!("{}", self.line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_survives_the_console() {
        let stages = [
            AgentStage::Starting {
                version: "0.1.0".into(),
                cloud_config: Some("http://10.77.0.1:8080/cloud-config?mac=x".into()),
            },
            AgentStage::StoreStarted {
                member: "m1".into(),
                resumed: true,
            },
            AgentStage::SlotMarkedGood { slot: "A".into() },
        ];
        let log: String = stages
            .iter()
            .map(|s| format!("[   12.5] {}\r\n", s.line()))
            .chain(["some other line\n".to_owned()])
            .collect();
        assert_eq!(AgentStage::all_in(&log), stages);
        assert_eq!(
            AgentStage::from_line("herd-stage: {\"stage\":\"nonsense\"}"),
            None
        );
    }
}
