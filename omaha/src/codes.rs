//! The numbers Omaha events carry: event types and results (update_engine's
//! and Nebraska's), and herd's error codes, each naming a cause.

use std::fmt;

/// `eventtype`: the three update_engine sends on an update, and any other
/// (kept, not acted on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventType {
    /// 3: the update finished (result 1: installed, reboot pending; 2: the
    /// new version runs and is healthy; 0: it failed).
    UpdateComplete,
    /// 13: the payload download started.
    DownloadStarted,
    /// 14: the payload was downloaded (and checked against the manifest).
    DownloadFinished,
    /// Any other type (update_engine's 800 "installed", …).
    Other(u32),
}

impl EventType {
    pub fn code(self) -> u32 {
        match self {
            EventType::UpdateComplete => 3,
            EventType::DownloadStarted => 13,
            EventType::DownloadFinished => 14,
            EventType::Other(n) => n,
        }
    }

    pub fn from_code(n: u32) -> EventType {
        match n {
            3 => EventType::UpdateComplete,
            13 => EventType::DownloadStarted,
            14 => EventType::DownloadFinished,
            n => EventType::Other(n),
        }
    }
}

/// `eventresult`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventResult {
    /// 0.
    Error,
    /// 1.
    Success,
    /// 2: with [`EventType::UpdateComplete`], the update is done (Nebraska
    /// counts it toward the rollout).
    SuccessReboot,
}

impl EventResult {
    pub fn code(self) -> u32 {
        match self {
            EventResult::Error => 0,
            EventResult::Success => 1,
            EventResult::SuccessReboot => 2,
        }
    }

    pub fn from_code(n: u32) -> Option<EventResult> {
        match n {
            0 => Some(EventResult::Error),
            1 => Some(EventResult::Success),
            2 => Some(EventResult::SuccessReboot),
            _ => None,
        }
    }
}

/// Why an update failed: the `errorcode` of a failure event. herd's codes
/// start at 3001, clear of update_engine's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// 3001: the payload could not be downloaded.
    Download,
    /// 3002: the payload's size or SHA-256 is not the manifest's.
    HashMismatch,
    /// 3003: the payload's signature does not verify with the machine's key.
    BadSignature,
    /// 3004: the offered version is older than the running one.
    Downgrade,
    /// 3005: the server's answer was not a valid Omaha response.
    MalformedResponse,
    /// 3006: the passive slot could not be written.
    SlotWrite,
    /// 3007: the new version booted but never passed its health gate; the
    /// machine went back to the old slot.
    HealthGate,
    /// 3008: the new version never came up far enough to judge (crashes,
    /// hangs); the boot loader's try counter ran out and the old slot booted.
    BootFailed,
    /// 3009: the payload is not a herd payload (truncated, wrong format).
    BadPayload,
    /// 3010: the server stopped waiting for the machine (update timeout).
    Timeout,
}

impl Cause {
    pub const ALL: [Cause; 10] = [
        Cause::Download,
        Cause::HashMismatch,
        Cause::BadSignature,
        Cause::Downgrade,
        Cause::MalformedResponse,
        Cause::SlotWrite,
        Cause::HealthGate,
        Cause::BootFailed,
        Cause::BadPayload,
        Cause::Timeout,
    ];

    pub fn code(self) -> i32 {
        3001 + Cause::ALL
            .iter()
            .position(|c| *c == self)
            .expect("every cause is listed") as i32
    }

    pub fn from_code(n: i32) -> Option<Cause> {
        usize::try_from(n - 3001)
            .ok()
            .and_then(|i| Cause::ALL.get(i).copied())
    }

    /// Whether the machine went back to its old slot by itself.
    pub fn is_rollback(self) -> bool {
        matches!(self, Cause::HealthGate | Cause::BootFailed)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Cause::Download => "the payload could not be downloaded",
            Cause::HashMismatch => "the payload does not match the manifest's size or sha256",
            Cause::BadSignature => "the payload's signature does not verify with the machine's key",
            Cause::Downgrade => "the offered version is older than the running one",
            Cause::MalformedResponse => "the server's answer was not a valid Omaha response",
            Cause::SlotWrite => "the passive slot could not be written",
            Cause::HealthGate => {
                "the new version never passed its health gate; rolled back to the old slot"
            }
            Cause::BootFailed => {
                "the new version never came up; the boot counter ran out and the old slot booted"
            }
            Cause::BadPayload => "the payload is not a valid herd payload",
            Cause::Timeout => "the machine did not finish within the group's update timeout",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (errorcode {})", self.describe(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in Cause::ALL {
            assert_eq!(Cause::from_code(c.code()), Some(c));
        }
        assert_eq!(Cause::from_code(0), None);
        assert_eq!(Cause::from_code(3000), None);
        assert_eq!(Cause::HealthGate.code(), 3007);
        for n in [3, 13, 14, 800] {
            assert_eq!(EventType::from_code(n).code(), n);
        }
        assert_eq!(EventResult::from_code(3), None);
    }
}
