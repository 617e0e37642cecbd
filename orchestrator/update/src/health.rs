//! The health gate: what must hold before a freshly booted slot is marked
//! good — every check healthy at once. Flatcar marks a slot good on a
//! 45 s timer; herd asks the cluster.
//!
//! Checks now:
//! - [`StoreMember`]: this machine's store member is in the cluster and
//!   caught up (a linearizable read through it succeeds, so it has
//!   applied everything the leader had committed), and the machine's
//!   registration carries this boot's id (a write the cluster accepted
//!   after the reboot).
//! - [`ImageChecks`]: the image's own checks, executables in
//!   `/usr/lib/herd/health.d/`, each must exit 0 (a release can ship what
//!   "healthy" means for it).
//!
//! The extension point is [`HealthCheck`]: the agent adds the units
//! role's "my units run" (`herd_units::health`) and, on a machine with a
//! kubelet, the pods role's "my node is Ready and my pods are ready"
//! (`herd_pods::node::health`), so a release that breaks a unit, Docker
//! or the pod network rolls back. A check answers from the store
//! or the machine, quickly, and is asked again until the gate's timeout.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use herd_client::Client;
use herd_client::keys::{MACHINES, MachineRecord};
use herd_client::proto::etcdserverpb::{MemberListRequest, RangeRequest, StatusRequest};

/// One check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Not (yet) healthy, and why.
    NotYet(String),
}

pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>;

/// Something that must hold for the machine to count as healthy.
pub trait HealthCheck: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn check(&self) -> CheckFuture<'_>;
}

/// The checks the gate asks, all of which must be healthy.
#[derive(Clone, Default)]
pub struct Gate {
    checks: Vec<Arc<dyn HealthCheck>>,
}

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    pub fn with(mut self, check: impl HealthCheck) -> Gate {
        self.checks.push(Arc::new(check));
        self
    }

    pub fn with_arc(mut self, check: Arc<dyn HealthCheck>) -> Gate {
        self.checks.push(check);
        self
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.checks.iter().map(|c| c.name()).collect()
    }

    /// Asks every check (each bounded by 30 s); `Ok` when all are healthy,
    /// else the reasons of those that are not.
    pub async fn evaluate(&self) -> Result<(), Vec<String>> {
        let answers = futures::future::join_all(self.checks.iter().map(|c| async move {
            match tokio::time::timeout(Duration::from_secs(30), c.check()).await {
                Ok(v) => (c.name(), v),
                Err(_) => (c.name(), Verdict::NotYet("no answer within 30 s".into())),
            }
        }))
        .await;
        let failing: Vec<String> = answers
            .into_iter()
            .filter_map(|(name, v)| match v {
                Verdict::Healthy => None,
                Verdict::NotYet(why) => Some(format!("{name}: {why}")),
            })
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(failing)
        }
    }
}

/// Back in the store: member, caught up, registered with this boot.
pub struct StoreMember {
    pub client: Client,
    pub machine_id: String,
    pub boot_id: String,
}

impl HealthCheck for StoreMember {
    fn name(&self) -> &'static str {
        "store-member"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let status = match self.client.maintenance().status(StatusRequest {}).await {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    return Verdict::NotYet(format!(
                        "the local member does not answer: {}",
                        e.message()
                    ));
                }
            };
            if status.leader == 0 {
                return Verdict::NotYet("the local member knows no leader".into());
            }
            let me = status.header.map_or(0, |h| h.member_id);
            match self
                .client
                .cluster()
                .member_list(MemberListRequest { linearizable: true })
                .await
            {
                Ok(l) if l.get_ref().members.iter().any(|m| m.id == me) => {}
                Ok(_) => {
                    return Verdict::NotYet(format!("member {me:x} is not in the member list"));
                }
                Err(e) => return Verdict::NotYet(format!("member list: {}", e.message())),
            }
            // Linearizable (the default): answered only once this member
            // has applied everything committed when the read began.
            let read = self
                .client
                .kv()
                .range(RangeRequest {
                    key: MACHINES.key(&self.machine_id).into_bytes(),
                    ..Default::default()
                })
                .await;
            let kvs = match read {
                Ok(r) => r.into_inner().kvs,
                Err(e) => return Verdict::NotYet(format!("not caught up: {}", e.message())),
            };
            match kvs
                .first()
                .map(|kv| serde_json::from_slice::<MachineRecord>(&kv.value))
            {
                Some(Ok(r)) if r.boot_id == self.boot_id => Verdict::Healthy,
                Some(Ok(_)) => Verdict::NotYet("registered, but not since this boot".into()),
                Some(Err(e)) => Verdict::NotYet(format!("the machine record does not decode: {e}")),
                None => Verdict::NotYet("the machine is not registered yet".into()),
            }
        })
    }
}

/// The image's own checks: every executable in `dir`, in name order.
pub struct ImageChecks {
    pub dir: PathBuf,
}

/// Where images put their health checks.
pub const IMAGE_CHECKS: &str = "/usr/lib/herd/health.d";

impl HealthCheck for ImageChecks {
    fn name(&self) -> &'static str {
        "image-checks"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let mut entries = match tokio::fs::read_dir(&self.dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Verdict::Healthy,
                Err(e) => return Verdict::NotYet(format!("{}: {e}", self.dir.display())),
            };
            let mut programs = Vec::new();
            while let Ok(Some(e)) = entries.next_entry().await {
                programs.push(e.path());
            }
            programs.sort();
            for p in programs {
                let run = tokio::process::Command::new(&p)
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .output();
                match tokio::time::timeout(Duration::from_secs(20), run).await {
                    Ok(Ok(out)) if out.status.success() => {}
                    Ok(Ok(out)) => {
                        let text = String::from_utf8_lossy(&out.stdout).into_owned()
                            + &String::from_utf8_lossy(&out.stderr);
                        let last = text.lines().last().unwrap_or("").trim().to_owned();
                        return Verdict::NotYet(format!("{} {}: {last}", p.display(), out.status));
                    }
                    Ok(Err(e)) => return Verdict::NotYet(format!("{}: {e}", p.display())),
                    Err(_) => {
                        return Verdict::NotYet(format!("{}: no answer in 20 s", p.display()));
                    }
                }
            }
            Verdict::Healthy
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, Verdict);

    impl HealthCheck for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn check(&self) -> CheckFuture<'_> {
            let v = self.1.clone();
            Box::pin(async move { v })
        }
    }

    #[tokio::test]
    async fn every_check_must_pass_and_failures_say_why() {
        let gate = Gate::new()
            .with(Fixed("a", Verdict::Healthy))
            .with(Fixed("b", Verdict::NotYet("no leader".into())));
        assert_eq!(gate.evaluate().await, Err(vec!["b: no leader".to_owned()]));
        assert!(
            Gate::new()
                .with(Fixed("a", Verdict::Healthy))
                .evaluate()
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn image_checks_run_each_program_and_report_the_failing_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let checks = ImageChecks {
            dir: dir.path().join("health.d"),
        };
        assert_eq!(
            checks.check().await,
            Verdict::Healthy,
            "no directory, no checks"
        );
        std::fs::create_dir(&checks.dir).unwrap();
        let write = |name: &str, body: &str| {
            let p = checks.dir.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        write("10-ok", "#!/bin/sh\nexit 0\n");
        assert_eq!(checks.check().await, Verdict::Healthy);
        write(
            "50-broken",
            "#!/bin/sh\necho this release is broken\nexit 3\n",
        );
        match checks.check().await {
            Verdict::NotYet(why) => {
                assert!(
                    why.contains("50-broken") && why.contains("this release is broken"),
                    "{why}"
                )
            }
            v => panic!("{v:?}"),
        }
    }
}
