//! The update role's settings: the `update:` section of a machine's
//! cloud-config, typed, with defaults for everything but the server.
//!
//! ```yaml
//! herd:
//!   update:
//!     server: http://10.77.0.1:8080   # the Omaha server (herd pxe serve)
//!     group: stable                   # Omaha track
//!     interval: 5m                    # between update checks …
//!     jitter: 1m                      # … plus up to this much, at random
//!     health_timeout: 10m             # a new slot must be healthy within this
//!     reboot_lock_ttl: 15m            # the lock outlives a holder that died this long
//!     drain_grace: 10s                # time roles get to move work off
//!     boot_tries: 3                   # boots a new slot gets before the old one
//!     allow_downgrade: false
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The `update:` section. Without a `server` the role only runs the
/// health gate after a disk boot (and never looks for updates).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSettings {
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default = "default_group")]
    pub group: String,
    #[serde(default = "minutes::<5>", deserialize_with = "duration")]
    pub interval: Duration,
    #[serde(default = "minutes::<1>", deserialize_with = "duration")]
    pub jitter: Duration,
    #[serde(default = "minutes::<10>", deserialize_with = "duration")]
    pub health_timeout: Duration,
    #[serde(default = "minutes::<15>", deserialize_with = "duration")]
    pub reboot_lock_ttl: Duration,
    #[serde(default = "seconds::<10>", deserialize_with = "duration")]
    pub drain_grace: Duration,
    #[serde(default = "default_tries")]
    pub boot_tries: u8,
    #[serde(default)]
    pub allow_downgrade: bool,
    /// Downloads and the role's own state (on STATE, kept across reboots).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

impl Default for UpdateSettings {
    fn default() -> UpdateSettings {
        UpdateSettings {
            server: None,
            group: default_group(),
            interval: minutes::<5>(),
            jitter: minutes::<1>(),
            health_timeout: minutes::<10>(),
            reboot_lock_ttl: minutes::<15>(),
            drain_grace: seconds::<10>(),
            boot_tries: default_tries(),
            allow_downgrade: false,
            data_dir: default_data_dir(),
        }
    }
}

impl UpdateSettings {
    /// Checks values serde cannot: a reason naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = &self.server
            && !s.starts_with("http://")
        {
            return Err(format!("update.server {s:?}: expected an http:// URL"));
        }
        if self.boot_tries == 0 {
            return Err("update.boot_tries: at least 1 (the new slot must boot once)".into());
        }
        if self.interval < Duration::from_secs(1) {
            return Err("update.interval: at least 1s".into());
        }
        if self.reboot_lock_ttl < Duration::from_secs(30) {
            return Err("update.reboot_lock_ttl: at least 30s (it must outlive a reboot)".into());
        }
        if self.group.is_empty() {
            return Err("update.group: empty".into());
        }
        Ok(())
    }
}

fn default_group() -> String {
    "stable".into()
}
fn default_tries() -> u8 {
    3
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/herd/update")
}
fn minutes<const N: u64>() -> Duration {
    Duration::from_secs(N * 60)
}
fn seconds<const N: u64>() -> Duration {
    Duration::from_secs(N)
}

/// `90s`, `5m`, `1h 30m`: humantime's syntax.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("{s:?} is not a duration like 90s or 5m: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_parses_with_defaults_and_refuses_unknown_fields() {
        let s: UpdateSettings =
            serde_saphyr::from_str("server: http://10.77.0.1:8080\ninterval: 20s\n").unwrap();
        assert_eq!(s.server.as_deref(), Some("http://10.77.0.1:8080"));
        assert_eq!(s.interval, Duration::from_secs(20));
        assert_eq!(s.health_timeout, Duration::from_secs(600));
        assert_eq!(s.group, "stable");
        s.validate().unwrap();
        assert!(serde_saphyr::from_str::<UpdateSettings>("intervall: 5m\n").is_err());
        let e = serde_saphyr::from_str::<UpdateSettings>("interval: soon\n").unwrap_err();
        assert!(e.to_string().contains("not a duration"), "{e}");
        let bad = UpdateSettings {
            boot_tries: 0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("boot_tries"));
    }
}
