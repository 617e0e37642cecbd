//! A group's rollout policy (Nebraska's group policy): whether updates
//! are on, how many machines may start one per period, how many canaries
//! must succeed before the rest are offered a release, whether a failure
//! halts the rollout (safe mode), how long a machine may take, and the
//! office hours (UTC) in which updates start.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A group's policy. Defaults are the cautious ones: one canary, safe mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub updates_enabled: bool,
    /// Machines that must report success before any other is offered the
    /// release (0: no canary).
    pub canary: u32,
    /// A failed or timed-out update halts the group until resumed.
    pub safe_mode: bool,
    /// Updates that may start per `period` (0: no limit).
    pub max_updates_per_period: u32,
    #[serde(with = "seconds")]
    pub period: Duration,
    /// How long a machine may take from being offered a release to
    /// reporting it healthy; longer counts as a failure.
    #[serde(with = "seconds")]
    pub update_timeout: Duration,
    /// Updates start only inside this window (UTC); `None`: any time.
    pub office_hours: Option<OfficeHours>,
    /// Offer a release older than what a machine runs.
    pub allow_downgrade: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            updates_enabled: true,
            canary: 1,
            safe_mode: true,
            max_updates_per_period: 0,
            period: Duration::from_secs(3600),
            update_timeout: Duration::from_secs(3600),
            office_hours: None,
            allow_downgrade: false,
        }
    }
}

/// A change to a policy: the fields given replace the policy's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updates_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_mode: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_updates_per_period: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_seconds")]
    pub period: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_seconds")]
    pub update_timeout: Option<Duration>,
    /// `Some(None)` removes the office hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office_hours: Option<Option<OfficeHours>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_downgrade: Option<bool>,
}

impl Policy {
    /// The policy with `patch` applied, checked.
    pub fn patched(&self, patch: &PolicyPatch) -> Result<Policy, String> {
        let mut p = self.clone();
        if let Some(v) = patch.updates_enabled {
            p.updates_enabled = v;
        }
        if let Some(v) = patch.canary {
            p.canary = v;
        }
        if let Some(v) = patch.safe_mode {
            p.safe_mode = v;
        }
        if let Some(v) = patch.max_updates_per_period {
            p.max_updates_per_period = v;
        }
        if let Some(v) = patch.period {
            p.period = v;
        }
        if let Some(v) = patch.update_timeout {
            p.update_timeout = v;
        }
        if let Some(v) = patch.office_hours {
            p.office_hours = v;
        }
        if let Some(v) = patch.allow_downgrade {
            p.allow_downgrade = v;
        }
        if p.period.is_zero() {
            return Err("period must be longer than 0s".into());
        }
        if p.update_timeout < Duration::from_secs(60) {
            return Err("update_timeout must be at least 60s: a machine has to reboot".into());
        }
        Ok(p)
    }
}

/// A daily window `HH:MM-HH:MM` in UTC; a window that ends before it
/// starts spans midnight (`22:00-06:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfficeHours {
    start: u16,
    end: u16,
}

impl OfficeHours {
    /// Whether the unix time `now` (seconds) falls inside the window.
    pub fn contains(&self, now: u64) -> bool {
        let minute = ((now / 60) % (24 * 60)) as u16;
        if self.start <= self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl FromStr for OfficeHours {
    type Err = String;

    fn from_str(s: &str) -> Result<OfficeHours, String> {
        let bad = || format!("office hours {s:?}: expected HH:MM-HH:MM (UTC), e.g. 09:00-17:00");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let minute = |t: &str| -> Result<u16, String> {
            let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            Ok(h * 60 + m)
        };
        let (start, end) = (minute(a)?, minute(b)?);
        if start == end {
            return Err(format!("office hours {s:?}: the window is empty"));
        }
        Ok(OfficeHours { start, end })
    }
}

impl fmt::Display for OfficeHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

impl Serialize for OfficeHours {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OfficeHours {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<OfficeHours, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

mod opt_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn office_hours_parse_and_contain() {
        let day: OfficeHours = "09:00-17:00".parse().unwrap();
        let at = |h: u64, m: u64| 19_000 * 86_400 + h * 3600 + m * 60;
        assert!(day.contains(at(9, 0)) && day.contains(at(16, 59)));
        assert!(!day.contains(at(17, 0)) && !day.contains(at(8, 59)));
        let night: OfficeHours = "22:00-06:00".parse().unwrap();
        assert!(night.contains(at(23, 0)) && night.contains(at(5, 0)));
        assert!(!night.contains(at(12, 0)));
        assert_eq!(night.to_string(), "22:00-06:00");
        for bad in ["9-17", "25:00-01:00", "09:00-09:00", "09:60-10:00", "x"] {
            assert!(bad.parse::<OfficeHours>().is_err(), "{bad}");
        }
    }

    #[test]
    fn patches_replace_given_fields_and_are_checked() {
        let p = Policy::default();
        let q = p
            .patched(&PolicyPatch {
                canary: Some(2),
                office_hours: Some(Some("01:00-02:00".parse().unwrap())),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(q.canary, 2);
        assert!(q.safe_mode);
        assert!(q.office_hours.is_some());
        let r = q
            .patched(&PolicyPatch {
                office_hours: Some(None),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.office_hours, None);
        assert!(
            p.patched(&PolicyPatch {
                update_timeout: Some(Duration::from_secs(5)),
                ..Default::default()
            })
            .unwrap_err()
            .contains("update_timeout")
        );
        let json = serde_json::to_string(&q).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), q);
        assert!(serde_json::from_str::<PolicyPatch>(r#"{"canery": 1}"#).is_err());
    }
}
