//! `herd bench lab`: how long blank machines take to become a cluster.
//! Brings a lab up from nothing (image prebuilt, so the build is timed
//! apart), times `up` to a healthy cluster, then racks one more machine and
//! times its power-on to membership, each broken down by boot stage.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use crate::lab::{Lab, LabError, UpOptions};
use crate::layout::MachineId;
use crate::stage::Stage;
use crate::state::now_ms;
use crate::watch::{self, Tracker};

/// What one bench run measured.
#[derive(Debug)]
pub struct LabBench {
    pub image_build: Duration,
    /// `herd lab up` started → every machine joined.
    pub up_to_healthy: Duration,
    /// Per initial machine: time in each stage from its power-on.
    pub initial: Vec<(MachineId, Vec<(Stage, Duration)>)>,
    /// The added machine: power-on → joined, and its stages.
    pub added: (MachineId, Duration, Vec<(Stage, Duration)>),
}

/// Errors of the bench.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("{what} did not finish within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
}

fn offset(start_ms: u64, at_ms: Option<u64>) -> Duration {
    Duration::from_millis(at_ms.unwrap_or(start_ms).saturating_sub(start_ms))
}

/// Runs the bench in `lab` (which must hold no running lab) and takes it
/// down afterwards, also on failure.
pub async fn run(
    lab: &Lab,
    machines: u32,
    image: Option<PathBuf>,
    netns: String,
    timeout: Duration,
) -> Result<LabBench, BenchError> {
    let result = measure(lab, machines, image, netns, timeout).await;
    if let Err(e) = lab.down().await {
        tracing::warn!(error = %e, "taking the bench lab down");
    }
    result
}

async fn measure(
    lab: &Lab,
    machines: u32,
    image: Option<PathBuf>,
    netns: String,
    timeout: Duration,
) -> Result<LabBench, BenchError> {
    let build_start = Instant::now();
    let image = match image {
        Some(dir) => dir,
        None => {
            tokio::fs::create_dir_all(&lab.dir)
                .await
                .map_err(|source| LabError::Io {
                    what: "creating",
                    path: lab.dir.clone(),
                    source,
                })?;
            lab.build_image(false).await?
        }
    };
    let image_build = build_start.elapsed();

    let start = Instant::now();
    let start_ms = now_ms();
    let state = lab
        .up(&UpOptions {
            machines,
            install: false,
            docker: false,
            image: Some(image),
            netns: netns.clone(),
        })
        .await?;
    let ids: Vec<MachineId> = state.machines.iter().map(|m| m.id()).collect();
    let mut tracker = Tracker::new(start, &ids);
    for m in &state.machines {
        tracker.powered_on_at(m.id(), offset(start_ms, m.powered_on_ms));
    }
    if !watch::until_joined(lab, &netns, &mut tracker, timeout, |_| {}).await? {
        return Err(BenchError::Timeout {
            what: format!("{machines} machines joining"),
            timeout,
        });
    }
    let up_to_healthy = tracker.elapsed();
    let initial = ids
        .iter()
        .filter_map(|id| tracker.breakdown(*id).map(|b| (*id, b)))
        .collect();

    let add_start = Instant::now();
    let added = lab.add().await?;
    let mut tracker = Tracker::new(add_start, &[added]);
    if !watch::until_joined(lab, &netns, &mut tracker, timeout, |_| {}).await? {
        return Err(BenchError::Timeout {
            what: format!("added machine {added} joining"),
            timeout,
        });
    }
    let joined = tracker.at(added, Stage::Joined).expect("joined");
    let breakdown = tracker.breakdown(added).expect("joined");
    Ok(LabBench {
        image_build,
        up_to_healthy,
        initial,
        added: (added, joined, breakdown),
    })
}
