//! The units routes of a machine's agent API: a unit's status as this
//! machine's runner sees it (processes, cgroup, last journal lines) and
//! its journal, streamed when followed. `herd units status|journal` reach
//! them on whichever machine runs the unit, through the address the
//! machine advertises in its record.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::runner::Runner;

/// One process of a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub command: String,
}

/// `GET /v1/units/{unit}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    pub unit: String,
    pub machine: String,
    pub description: String,
    pub active: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_pid: Option<u32>,
    pub since: String,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The unit's cgroup and what the kernel says of it.
    pub cgroup: String,
    pub cgroup_files: Vec<(String, String)>,
    pub processes: Vec<Process>,
    /// The last lines of its journal.
    pub journal: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct JournalQuery {
    #[serde(default = "ten")]
    lines: usize,
    #[serde(default)]
    follow: bool,
}

fn ten() -> usize {
    10
}

/// The routes, for the agent to mount.
pub fn routes(runner: Arc<Runner>) -> Router {
    Router::new()
        .route("/v1/units/{unit}/status", get(status))
        .route("/v1/units/{unit}/journal", get(journal))
        .with_state(runner)
}

fn not_here(runner: &Runner, unit: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!("{unit} is not placed on machine {}\n", runner.machine_id()),
    )
        .into_response()
}

async fn status(State(runner): State<Arc<Runner>>, Path(unit): Path<String>) -> Response {
    let Some(local) = runner.status(&unit) else {
        return not_here(&runner, &unit);
    };
    let (cgroups, journals) = (runner.cgroups(), runner.journals());
    let u = unit.clone();
    let (cgroup, files, processes, journal) = tokio::task::spawn_blocking(move || {
        let Some(c) = cgroups else {
            return (String::new(), Vec::new(), Vec::new(), Vec::new());
        };
        let processes = c
            .procs(&u)
            .into_iter()
            .map(|pid| Process {
                pid,
                command: std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|b| {
                        String::from_utf8_lossy(&b)
                            .replace('\0', " ")
                            .trim()
                            .to_owned()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        let journal = journals.map(|j| j.tail(&u, 10)).unwrap_or_default();
        (
            c.group(&u).display().to_string(),
            c.describe(&u),
            processes,
            journal,
        )
    })
    .await
    .unwrap_or_default();
    let s = local.status;
    Json(UnitStatus {
        unit,
        machine: runner.machine_id().to_owned(),
        description: local.description,
        active: s.active.to_owned(),
        sub: s.sub.to_owned(),
        main_pid: s.main_pid,
        since: humantime::format_rfc3339_seconds(s.since).to_string(),
        restarts: s.restarts,
        message: s.message,
        cgroup,
        cgroup_files: files,
        processes,
        journal,
    })
    .into_response()
}

async fn journal(
    State(runner): State<Arc<Runner>>,
    Path(unit): Path<String>,
    Query(q): Query<JournalQuery>,
) -> Response {
    let Some(journals) = runner.journals() else {
        return (
            StatusCode::NOT_FOUND,
            "this machine keeps no journals (simulated)\n",
        )
            .into_response();
    };
    if runner.status(&unit).is_none() && !journals.dir.join(&unit).exists() {
        return not_here(&runner, &unit);
    }
    let (j, u, n) = (journals.clone(), unit.clone(), q.lines);
    let tail = tokio::task::spawn_blocking(move || j.tail(&u, n))
        .await
        .unwrap_or_default();
    let head = futures::stream::iter(
        tail.into_iter()
            .map(|l| Ok::<_, Infallible>(format!("{l}\n"))),
    );
    let body = if q.follow {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        // Ends when the client goes away (the channel closes).
        tokio::spawn(async move { journals.follow(&unit, tx).await });
        let rest = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|l| Ok::<_, Infallible>(format!("{l}\n")));
        Body::from_stream(head.chain(rest))
    } else {
        Body::from_stream(head)
    };
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}
