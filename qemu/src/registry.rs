//! The lab's container registry: Debian's `docker-registry` on the lab
//! bridge (`10.77.0.1:5000`, plain HTTP), storing under `LAB/registry/`.
//! Images are pushed to it from the host (`herd lab exec -- herd image push
//! … 10.77.0.1:5000/NAME:TAG --insecure`) and every machine's dockerd pulls
//! from it (`--insecure-registry 10.77.0.1:5000`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lab::{LabError, spawn_detached};
use crate::layout;
use crate::nsnet;

/// The registry's port on the lab bridge.
pub const PORT: u16 = 5000;

/// `host:port` of the lab registry, as image references and dockerd's
/// `--insecure-registry` spell it.
pub fn address() -> String {
    SocketAddr::from((layout::HOST_ADDR, PORT)).to_string()
}

/// The registry's directory in the lab (config, storage); its path in the
/// process's command line identifies the process as this lab's.
pub fn dir(lab_dir: &Path) -> PathBuf {
    lab_dir.join("registry")
}

/// What identifies this lab's registry in `/proc/PID/cmdline`.
pub fn tag(lab_dir: &Path) -> String {
    dir(lab_dir).join("config.yml").display().to_string()
}

/// The registry's configuration: filesystem storage in the lab, listening
/// on the bridge address only, deletes allowed (a lab is for trying things).
pub fn config(storage: &Path) -> String {
    format!(
        "version: 0.1\nlog:\n  level: info\n  fields:\n    service: herd-lab-registry\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {}\n",
        storage.display(),
        address()
    )
}

/// Starts `docker-registry` inside the lab's namespace, detached; returns its PID.
pub fn start(lab_dir: &Path, netns: &str) -> Result<u32, LabError> {
    let dir = dir(lab_dir);
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage).map_err(|source| LabError::Io {
        what: "creating",
        path: storage.clone(),
        source,
    })?;
    let config_path = dir.join("config.yml");
    std::fs::write(&config_path, config(&storage)).map_err(|source| LabError::Io {
        what: "writing",
        path: config_path.clone(),
        source,
    })?;
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", netns, "docker-registry", "serve"])
        .arg(&config_path);
    spawn_detached(&mut cmd, &lab_dir.join("registry.log"))
}

/// Builds the pause image (`herd image container --pause`) and pushes it
/// to the lab registry from inside the lab's namespace, so every machine's
/// dockerd finds it (`herd.pull` on a Docker lab's command line).
pub async fn push_pause(lab_dir: &Path, herd: &Path, netns: &str) -> Result<(), LabError> {
    let out = lab_dir.join("pause-image");
    let reference = format!("{}/{}", address(), herd_image::container::PAUSE_IMAGE);
    let log = lab_dir.join("registry-push.log");
    let run = |mut cmd: tokio::process::Command, what: String| {
        let log = log.clone();
        async move {
            let output = cmd
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| LabError::Registry(format!("{what}: {e}")))?;
            let _ = std::fs::write(&log, [output.stdout.as_slice(), &output.stderr].concat());
            if output.status.success() {
                Ok(())
            } else {
                Err(LabError::Registry(format!(
                    "{what} failed ({}); see {}",
                    output.status,
                    log.display()
                )))
            }
        }
    };
    let mut build = tokio::process::Command::new(herd);
    build
        .args(["image", "container", "--pause", "--out"])
        .arg(&out);
    run(build, "herd image container --pause".into()).await?;
    let mut push = tokio::process::Command::new("ip");
    push.args(["netns", "exec", netns])
        .arg(herd)
        .args(["image", "push"])
        .arg(&out)
        .args([reference.as_str(), "--insecure"]);
    run(push, format!("herd image push {reference}")).await
}

/// Waits until the registry accepts connections on the bridge.
pub async fn wait_ready(netns: &str, timeout: Duration) -> Result<(), LabError> {
    let addr = SocketAddr::from((layout::HOST_ADDR, PORT));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match nsnet::connect(netns, addr, Duration::from_secs(1)).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(LabError::Registry(format!(
                    "not answering on {addr} after {timeout:?} ({e}); see registry.log in the lab directory"
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_listens_on_the_bridge_and_stores_in_the_lab() {
        let c = config(Path::new("/lab/registry/storage"));
        assert!(c.contains("addr: 10.77.0.1:5000"), "{c}");
        assert!(c.contains("rootdirectory: /lab/registry/storage"), "{c}");
        assert!(tag(Path::new("/lab")).ends_with("/lab/registry/config.yml"));
    }
}
