//! Requests to a service's cluster IP from the lab network, through the
//! route to the service range the demo adds (the seed's trick for
//! reaching services from outside): one answer, or a client that keeps
//! asking in the background and records every answer.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long one request may take before it counts as unanswered. A
/// dropped request fails at once (refused, reset); this only bounds a
/// slow one, and emulated machines sharing two cores with a test suite
/// answer in seconds at worst.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What pgview answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 1 or 2.
    pub version: u8,
    /// The pod that answered (its hostname).
    pub pod: String,
    /// Whether the answer came from the pod's memcache.
    pub cached: bool,
    pub text: String,
}

/// Reads pgview's answer: `pgview v1 from POD` (v2: `== pgview v2 from
/// POD ==`), the Postgres lines, `(answered from memcache|postgres)`.
pub fn parse(text: &str) -> Result<Reply, String> {
    let first = text.lines().next().unwrap_or_default();
    let rest = first
        .split_once("pgview v")
        .map(|(_, r)| r)
        .ok_or_else(|| format!("not a pgview answer: {first:?}"))?;
    let (version, pod) = rest
        .split_once(" from ")
        .ok_or_else(|| format!("no pod in {first:?}"))?;
    let version: u8 = version
        .parse()
        .map_err(|_| format!("bad version in {first:?}"))?;
    Ok(Reply {
        version,
        pod: pod.trim_end_matches(['=', ' ']).to_owned(),
        cached: text.contains("(answered from memcache)"),
        text: text.to_owned(),
    })
}

/// The lab network's HTTP client for the demo's requests.
pub fn client(netns: &str) -> herd_http::Client {
    crate::nsnet::http(netns, REQUEST_TIMEOUT)
}

/// `GET http://VIP/`: pgview's answer, or why there was none.
pub async fn ask(http: &herd_http::Client, vip: &str) -> Result<Reply, String> {
    let resp = http
        .fetch(herd_http::Request::get(format!("http://{vip}/")))
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status.is_success() {
        return Err(format!("{}: {}", resp.status, resp.text().trim()));
    }
    parse(&resp.text())
}

/// One request of a [`Recorder`], `at` from its start.
#[derive(Debug, Clone)]
pub struct Answer {
    pub at: Duration,
    pub result: Result<Reply, String>,
}

/// A client asking `vip` every `every` until stopped.
pub struct Recorder {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<Answer>>,
}

impl Recorder {
    pub fn start(netns: &str, vip: &str, every: Duration) -> Recorder {
        let (stop, mut stopped) = oneshot::channel();
        let http = client(netns);
        let url = vip.to_owned();
        let task = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut answers = Vec::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => return answers,
                    _ = tick.tick() => {}
                }
                let at = start.elapsed();
                let result = ask(&http, &url).await;
                answers.push(Answer { at, result });
            }
        });
        Recorder { stop, task }
    }

    /// Stops asking; every answer, in order.
    pub async fn stop(self) -> Vec<Answer> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// The unanswered requests of `answers`: `+12.3s: why`.
pub fn failures(answers: &[Answer]) -> Vec<String> {
    answers
        .iter()
        .filter_map(|a| {
            a.result
                .as_ref()
                .err()
                .map(|e| format!("+{:.1}s: {e}", a.at.as_secs_f64()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_parse() {
        let v1 = parse(
            "pgview v1 from pgview-abcde\npostgres: PostgreSQL 15\n(answered from memcache)\n",
        )
        .unwrap();
        assert_eq!(
            (v1.version, v1.pod.as_str(), v1.cached),
            (1, "pgview-abcde", true)
        );
        let v2 = parse("== pgview v2 from pgview-x1 ==\n(answered from postgres)\n").unwrap();
        assert_eq!(
            (v2.version, v2.pod.as_str(), v2.cached),
            (2, "pgview-x1", false)
        );
        assert!(parse("<html>").is_err());
        assert!(parse("pgview vX from a").is_err());
    }
}
