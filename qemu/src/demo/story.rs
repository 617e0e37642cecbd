//! The seed talk's demo, step by step: each step runs the commands a
//! person would, then checks what it claims and says what it proved.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use super::shell::{self, until};
use super::traffic::{self, Recorder, Reply};
use super::{Demo, DemoError, files};
use crate::layout::MachineId;

/// Pulling Postgres's image (~80 MB) and starting it on an emulated machine.
const FIRST_POD: Duration = Duration::from_secs(15 * 60);
/// A pod whose image is already on its machine, or a small one.
const POD: Duration = Duration::from_secs(10 * 60);
const POLL: Duration = Duration::from_secs(3);
/// How often the background client asks while pods are replaced.
const CLIENT_EVERY: Duration = Duration::from_millis(250);

const STABLE: &str = "name=pgview,track=stable";
const CANARY: &str = "name=pgview,track=canary";
pub const V2_IMAGE: &str = "demo/pgview:2";

impl Demo<'_> {
    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    async fn pods(&self, selector: &str) -> Result<Vec<Value>, String> {
        self.sh
            .seen(&["get", "pods", "-l", selector])
            .await
            .map(|v| shell::items(&v))
    }

    /// Waits for exactly `n` ready pods matching `selector` (none other
    /// left), none on `avoid`.
    async fn ready_pods(
        &self,
        selector: &str,
        n: usize,
        avoid: Option<&str>,
        within: Duration,
    ) -> Result<Vec<Value>, DemoError> {
        let expected = format!("{n} ready pods with labels {selector}");
        until(&expected, within, POLL, || async move {
            let pods = self.pods(selector).await?;
            let good = pods.len() == n
                && pods.iter().all(shell::ready)
                && avoid.is_none_or(|a| pods.iter().all(|p| shell::node(p) != a));
            if good {
                Ok(pods)
            } else {
                Err(shell::describe(&pods))
            }
        })
        .await
    }

    /// A service's cluster IP.
    async fn vip(&self, service: &str) -> Result<String, DemoError> {
        let svc = self.sh.json(&["get", "service", service]).await?;
        svc["spec"]["clusterIP"]
            .as_str()
            .filter(|ip| !ip.is_empty() && *ip != "None")
            .map(str::to_owned)
            .ok_or_else(|| DemoError::Unexpected {
                expected: format!("service {service} to have a cluster IP"),
                got: svc["spec"].to_string(),
            })
    }

    /// Asks `vip` every half second until an answer satisfies `want`
    /// (three minutes at most).
    async fn ask_until(
        &self,
        vip: &str,
        expected: &str,
        want: impl FnMut(&Reply) -> bool,
    ) -> Result<Reply, DemoError> {
        let want = &std::cell::RefCell::new(want);
        until(
            expected,
            Duration::from_secs(180),
            Duration::from_millis(500),
            || async move {
                let r = traffic::ask(&self.http, vip).await?;
                if (want.borrow_mut())(&r) {
                    Ok(r)
                } else {
                    Err(format!("pgview v{} from {}", r.version, r.pod))
                }
            },
        )
        .await
    }

    /// Step 1.
    pub async fn postgres(&self) -> Result<String, DemoError> {
        self.sh
            .run(&["apply", "-f", &self.file(files::POSTGRES)])
            .await?;
        let pg = self.ready_pods("name=postgres", 1, None, FIRST_POD).await?;
        let pg_node = shell::node(&pg[0]);
        let vip = self.vip("postgres").await?;
        self.sh
            .run(&["apply", "-f", &self.file(files::PSQL)])
            .await?;
        let psql = until("pod psql to finish", FIRST_POD, POLL, || async move {
            let pods = self.sh.seen(&["get", "pod", "psql"]).await?;
            match pods["status"]["phase"].as_str() {
                Some("Succeeded" | "Failed") => Ok(pods),
                other => Err(format!("phase {}", other.unwrap_or("Pending"))),
            }
        })
        .await?;
        let logs = self.sh.run(&["logs", "psql"]).await?;
        let psql_node = shell::node(&psql);
        let version = logs.lines().find(|l| l.starts_with("PostgreSQL 15"));
        let via = format!("via {vip}:5432");
        let proved = match version {
            Some(v)
                if psql["status"]["phase"] == "Succeeded"
                    && logs.contains(&via)
                    && psql_node != pg_node =>
            {
                format!(
                    "psql on {psql_node} reached postgres on {pg_node} {via}: {}",
                    short(v)
                )
            }
            _ => {
                return Err(DemoError::Unexpected {
                    expected: format!(
                        "psql, on another machine than postgres ({pg_node}), to print the server's version {via}"
                    ),
                    got: format!("phase {} on {psql_node}: {logs}", psql["status"]["phase"]),
                });
            }
        };
        self.sh.run(&["delete", "pod", "psql"]).await?;
        Ok(proved)
    }

    /// Step 2.
    pub async fn pgview(&self) -> Result<String, DemoError> {
        self.sh
            .run(&["apply", "-f", &self.file(files::PGVIEW_RC)])
            .await?;
        self.sh
            .run(&["apply", "-f", &self.file(files::PGVIEW_SERVICE)])
            .await?;
        let pods = self.ready_pods(STABLE, 1, None, FIRST_POD).await?;
        let vip = self.vip("pgview").await?;
        self.sh
            .announce(&format!("herd lab exec -- curl http://{vip}/"));
        let first = self
            .ask_until(&vip, "an answer from pgview v1", |r| r.version == 1)
            .await?;
        print_reply(self, &first);
        let again = self
            .ask_until(&vip, "pgview's second answer from its memcache", |r| {
                r.cached
            })
            .await?;
        print_reply(self, &again);
        let pod = shell::name(&pods[0]);
        if first.pod != pod {
            return Err(DemoError::Unexpected {
                expected: format!("the answer from the RC's pod {pod}"),
                got: first.pod,
            });
        }
        let features = first
            .text
            .lines()
            .find(|l| l.starts_with("sql features"))
            .unwrap_or_default()
            .to_owned();
        Ok(format!(
            "http://{vip}/ answered by {pod} on {} (v1, {features}); the second answer came from its memcache",
            shell::node(&pods[0])
        ))
    }

    /// Step 3.
    pub async fn scale(&self) -> Result<String, DemoError> {
        self.sh
            .run(&["scale", "rc", "pgview", "--replicas=3"])
            .await?;
        let pods = self.ready_pods(STABLE, 3, None, POD).await?;
        let nodes: BTreeSet<String> = pods.iter().map(shell::node).collect();
        if nodes.len() != 3 {
            return Err(DemoError::Unexpected {
                expected: "the three pods spread over three machines".into(),
                got: shell::describe(&pods),
            });
        }
        let names: BTreeSet<String> = pods.iter().map(shell::name).collect();
        let vip = self.vip("pgview").await?;
        let mut seen = BTreeSet::new();
        self.ask_until(&vip, "answers from all three pods", |r| {
            seen.insert(r.pod.clone());
            names.is_subset(&seen)
        })
        .await?;
        Ok(format!(
            "pods on {}; all three answered through {vip}",
            nodes.into_iter().collect::<Vec<_>>().join(", ")
        ))
    }

    /// Step 4.
    pub async fn canary(&self) -> Result<String, DemoError> {
        self.sh
            .run(&["apply", "-f", &self.file(files::PGVIEW_CANARY)])
            .await?;
        let canary = self.ready_pods(CANARY, 1, None, FIRST_POD).await?;
        let vip = self.vip("pgview").await?;
        let (mut v1, mut v2) = (0, 0);
        self.ask_until(
            &vip,
            "both v1 and v2 answers through the pgview service",
            |r| {
                if r.version == 1 {
                    v1 += 1;
                } else {
                    v2 += 1;
                }
                v1 > 0 && v2 > 0
            },
        )
        .await?;
        let canary_vip = self.vip("pgview-canary").await?;
        self.sh
            .announce(&format!("herd lab exec -- curl http://{canary_vip}/"));
        let mut answers = Vec::new();
        for _ in 0..5 {
            let reply =
                traffic::ask(&self.http, &canary_vip)
                    .await
                    .map_err(|e| DemoError::Unexpected {
                        expected: format!("the canary service {canary_vip} to answer"),
                        got: e,
                    })?;
            answers.push(reply);
        }
        print_reply(self, &answers[0]);
        let canary_pod = shell::name(&canary[0]);
        if let Some(bad) = answers
            .iter()
            .find(|r| r.version != 2 || r.pod != canary_pod)
        {
            return Err(DemoError::Unexpected {
                expected: format!("only the canary {canary_pod} (v2) behind pgview-canary"),
                got: format!("v{} from {}", bad.version, bad.pod),
            });
        }
        Ok(format!(
            "canary {canary_pod} on {}: pgview answered {v1}× v1 and {v2}× v2; pgview-canary ({canary_vip}) 5× v2",
            shell::node(&canary[0])
        ))
    }

    /// Step 5.
    pub async fn rolling_update(&self) -> Result<String, DemoError> {
        let vip = self.vip("pgview").await?;
        let image = format!("{}/{V2_IMAGE}", crate::registry::address());
        let client = Recorder::start(&self.netns, &vip, CLIENT_EVERY);
        self.sh.say(&format!(
            "(a client asks http://{vip}/ every {CLIENT_EVERY:?} meanwhile)"
        ));
        let update = self
            .sh
            .run(&[
                "rolling-update",
                "pgview",
                "--image",
                &image,
                "--container",
                "pgview",
                "--update-period",
                "5s",
                "--timeout",
                "10m",
            ])
            .await;
        let pods = match update {
            Ok(_) => self.ready_pods(STABLE, 3, None, POD).await,
            Err(e) => Err(e),
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        let answers = client.stop().await;
        let pods = pods?;
        if let Some(old) = pods.iter().find(|p| !image_of(p).ends_with(V2_IMAGE)) {
            return Err(DemoError::Unexpected {
                expected: format!("every stable pod on {image}"),
                got: format!("{} runs {}", shell::name(old), image_of(old)),
            });
        }
        let failed = traffic::failures(&answers);
        if !failed.is_empty() {
            return Err(DemoError::Unexpected {
                expected: format!("every one of {} requests answered", answers.len()),
                got: format!("{} unanswered: {}", failed.len(), first_few(&failed)),
            });
        }
        let replies: Vec<(Duration, &Reply)> = answers
            .iter()
            .filter_map(|a| a.result.as_ref().ok().map(|r| (a.at, r)))
            .collect();
        let last_v1 = replies
            .iter()
            .rev()
            .find(|(_, r)| r.version == 1)
            .map(|(at, _)| *at);
        let tail = &replies[replies.len().saturating_sub(10)..];
        if last_v1.is_none() || tail.iter().any(|(_, r)| r.version != 2) {
            return Err(DemoError::Unexpected {
                expected: "answers moving from v1 to v2 only".into(),
                got: format!(
                    "last v1 answer {last_v1:?}; the last ten: {:?}",
                    tail.iter().map(|(_, r)| r.version).collect::<Vec<_>>()
                ),
            });
        }
        Ok(format!(
            "{} requests during the update, every one answered; the last v1 answer at +{:.0}s, v2 only after",
            answers.len(),
            last_v1.unwrap_or_default().as_secs_f64()
        ))
    }

    /// Step 6.
    pub async fn replace_pod(&self) -> Result<String, DemoError> {
        let vip = self.vip("pgview").await?;
        let before = self.ready_pods(STABLE, 3, None, POD).await?;
        let victim = &shell::name(&before[0]);
        let client = Recorder::start(&self.netns, &vip, CLIENT_EVERY);
        let result = async {
            self.sh.run(&["delete", "pod", victim]).await?;
            until(
                "a new pod in its place, three ready",
                POD,
                POLL,
                || async move {
                    let pods = self.pods(STABLE).await?;
                    let fresh = pods.len() == 3
                        && pods.iter().all(shell::ready)
                        && pods.iter().all(|p| shell::name(p) != *victim);
                    if fresh {
                        Ok(pods)
                    } else {
                        Err(shell::describe(&pods))
                    }
                },
            )
            .await
        }
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let answers = client.stop().await;
        let after = result?;
        let new: Vec<String> = after
            .iter()
            .filter(|p| !before.iter().any(|b| shell::name(b) == shell::name(p)))
            .map(|p| format!("{} on {}", shell::name(p), shell::node(p)))
            .collect();
        let failed = traffic::failures(&answers);
        if !failed.is_empty() {
            return Err(DemoError::Unexpected {
                expected: format!("the service to answer all {} requests", answers.len()),
                got: format!("{} unanswered: {}", failed.len(), first_few(&failed)),
            });
        }
        Ok(format!(
            "{victim} deleted, replaced by {}; {} requests meanwhile, all answered",
            new.join(", "),
            answers.len()
        ))
    }

    /// Step 7.
    pub async fn power_off(&self) -> Result<String, DemoError> {
        let stable = self.ready_pods(STABLE, 3, None, POD).await?;
        let canary = self.ready_pods(CANARY, 1, None, POD).await?;
        let all: Vec<&Value> = stable.iter().chain(&canary).collect();
        // Not m1: Postgres's data lives there, and the demo's API too.
        let victim = all
            .iter()
            .map(|p| shell::node(p))
            .filter(|n| n != "m1")
            .max()
            .ok_or_else(|| DemoError::Unexpected {
                expected: "a pgview pod on a machine other than m1".into(),
                got: shell::describe(&stable),
            })?;
        let id: MachineId = victim.parse().map_err(|e| DemoError::Unexpected {
            expected: "a lab machine name as node name".into(),
            got: format!("{victim}: {e}"),
        })?;
        let lost: Vec<String> = all
            .iter()
            .filter(|p| shell::node(p) == victim)
            .map(|p| shell::name(p))
            .collect();
        self.sh.announce(&format!("herd lab kill {victim}"));
        self.lab.kill(&[id]).await?;
        self.sh.say(&format!(
            "  {victim} powered off (it ran {})",
            lost.join(", ")
        ));
        self.sh.say("  (its node goes NotReady when its lease expires; its pods are evicted after the grace period)");
        let started = tokio::time::Instant::now();
        let stable = self.ready_pods(STABLE, 3, Some(&victim), POD).await?;
        let canary = self.ready_pods(CANARY, 1, Some(&victim), POD).await?;
        let took = started.elapsed();
        let vip = self.vip("pgview").await?;
        let reply = self
            .ask_until(&vip, "the service to answer", |_| true)
            .await?;
        print_reply(self, &reply);
        let nodes: BTreeSet<String> = stable.iter().chain(&canary).map(shell::node).collect();
        Ok(format!(
            "{victim} off: its pods ({}) replaced on {} within {:.0} s; the service answers",
            lost.join(", "),
            nodes.into_iter().collect::<Vec<_>>().join(", "),
            took.as_secs_f64()
        ))
    }
}

fn print_reply(demo: &Demo<'_>, reply: &Reply) {
    for line in reply.text.lines() {
        demo.sh.say(&format!("  {line}"));
    }
}

/// The first image of a pod's `pgview` container.
fn image_of(pod: &Value) -> String {
    pod["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "pgview"))
        .and_then(|c| c["image"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn short(version: &str) -> String {
    version.split(" on ").next().unwrap_or(version).to_owned()
}

fn first_few(items: &[String]) -> String {
    let mut out = items.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
    if items.len() > 5 {
        out.push_str(&format!("; … {} more", items.len() - 5));
    }
    out
}
