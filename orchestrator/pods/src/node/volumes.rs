//! A pod's volumes on the node, handed to each container as Docker binds:
//! `emptyDir` on disk under the pod's directory
//! (`DATA_DIR/kubelet/pods/<uid>/volumes/<name>`), `hostPath` as given,
//! and `emptyDir` with `medium: Memory` as a Docker volume of the local
//! driver backed by a tmpfs (sized by `sizeLimit`, else the kernel's
//! default of half the RAM). The volume, not a mount the agent makes, is
//! what every container of the pod shares: dockerd mounts it in its own
//! mount namespace, which need not be the agent's. The infra container
//! mounts it too, which keeps it mounted (and its files) for the pod's
//! life: dockerd unmounts a tmpfs volume no running container uses. Such volumes carry the
//! pod's labels and go with the pod (and with the garbage collector, for
//! pods that went while the agent was down).

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::models::VolumeCreateRequest;

use super::Kubelet;
use super::docker::{Docker, DockerError, call, label};
use super::sync::{SyncError, pod_dir};
use crate::api::Pod;
use crate::api::pod::{Container as Spec, EmptyDirVolumeSource};

/// The Docker volume of pod `uid`'s memory-backed emptyDir `name`.
pub fn volume_name(uid: &str, name: &str) -> String {
    format!("herd_{uid}_{name}")
}

/// The local driver's options for a tmpfs of `empty`'s size limit.
pub fn tmpfs_options(empty: &EmptyDirVolumeSource) -> HashMap<String, String> {
    let mut o = "mode=1777".to_owned();
    if let Some(bytes) = empty
        .size_limit
        .as_ref()
        .and_then(|q| q.millis())
        .map(|m| m / 1000)
        .filter(|b| *b > 0)
    {
        o.push_str(&format!(",size={bytes}"));
    }
    HashMap::from([
        ("type".to_owned(), "tmpfs".to_owned()),
        ("device".to_owned(), "tmpfs".to_owned()),
        ("o".to_owned(), o),
    ])
}

/// Makes pod `pod`'s memory-backed volume `name` (Docker answers with the
/// existing one when it is there already).
async fn memory_volume(
    docker: &Docker,
    pod: &Pod,
    node: &str,
    name: &str,
    empty: &EmptyDirVolumeSource,
) -> Result<String, DockerError> {
    let volume = volume_name(&pod.metadata.uid, name);
    let labels = HashMap::from([
        (label::NODE.to_owned(), node.to_owned()),
        (label::POD_UID.to_owned(), pod.metadata.uid.clone()),
    ]);
    docker
        .api()
        .create_volume(VolumeCreateRequest {
            name: Some(volume.clone()),
            driver: Some("local".into()),
            driver_opts: Some(tmpfs_options(empty)),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .map_err(call(format!("creating volume {volume}")))?;
    Ok(volume)
}

/// The volumes labelled `key=value`: each one's name and pod uid.
pub async fn labelled(
    docker: &Docker,
    key: &str,
    value: &str,
) -> Result<Vec<(String, String)>, DockerError> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{key}={value}")])]);
    let list = docker
        .api()
        .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(call("listing volumes"))?;
    Ok(list
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            let uid = v.labels.get(label::POD_UID).cloned().unwrap_or_default();
            (v.name, uid)
        })
        .collect())
}

/// Removes volume `name`; one already gone is fine.
pub async fn remove(docker: &Docker, name: &str) -> Result<(), DockerError> {
    match docker
        .api()
        .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await
    {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(call(format!("removing volume {name}"))(e)),
    }
}

/// Removes pod `uid`'s volumes (its containers are gone); one already
/// gone is fine.
pub async fn remove_pod_volumes(docker: &Docker, uid: &str) -> Result<(), DockerError> {
    for (name, _) in labelled(docker, label::POD_UID, uid).await? {
        remove(docker, &name).await?;
    }
    Ok(())
}

impl Kubelet {
    /// Binds that keep the pod's memory-backed volumes mounted for the
    /// sandbox's life: dockerd unmounts a tmpfs volume (losing its files)
    /// when no running container uses it, as between two init containers.
    pub(super) async fn sandbox_binds(
        &self,
        docker: &Docker,
        pod: &Pod,
    ) -> Result<Vec<String>, SyncError> {
        let mut binds = Vec::new();
        for v in &pod.spec.volumes {
            if let Some(empty) = v.empty_dir.as_ref().filter(|e| e.medium == "Memory") {
                let volume =
                    memory_volume(docker, pod, &self.settings.node_name, &v.name, empty).await?;
                binds.push(format!("{volume}:/.herd/volumes/{}", v.name));
            }
        }
        Ok(binds)
    }

    /// `source:container[:ro]` binds of the container's volume mounts, each
    /// volume made ready first.
    pub(super) async fn binds(
        &self,
        docker: &Docker,
        pod: &Pod,
        spec: &Spec,
    ) -> Result<Vec<String>, SyncError> {
        let mut binds = Vec::new();
        for m in &spec.volume_mounts {
            let Some(v) = pod.spec.volumes.iter().find(|v| v.name == m.name) else {
                continue;
            };
            let source = match (&v.empty_dir, &v.host_path) {
                (Some(empty), _) if empty.medium == "Memory" => {
                    memory_volume(docker, pod, &self.settings.node_name, &v.name, empty).await?
                }
                (Some(_), _) => {
                    let dir = pod_dir(self, &pod.metadata.uid)
                        .join("volumes")
                        .join(&v.name);
                    create_dir(&dir).await?;
                    dir.display().to_string()
                }
                (None, Some(hp)) => {
                    let dir = PathBuf::from(&hp.path);
                    if hp.kind == "DirectoryOrCreate" {
                        create_dir(&dir).await?;
                    }
                    hp.path.clone()
                }
                (None, None) => continue,
            };
            let ro = if m.read_only == Some(true) { ":ro" } else { "" };
            binds.push(format!("{source}:{}{ro}", m.mount_path));
        }
        Ok(binds)
    }
}

async fn create_dir(dir: &std::path::Path) -> Result<(), SyncError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|source| SyncError::Io {
            what: "creating volume directory",
            path: dir.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_medium_is_a_tmpfs_of_its_size_limit() {
        let sized: EmptyDirVolumeSource =
            serde_json::from_value(serde_json::json!({"medium": "Memory", "sizeLimit": "16Mi"}))
                .unwrap();
        let o = tmpfs_options(&sized);
        assert_eq!(o["type"], "tmpfs");
        assert_eq!(o["o"], "mode=1777,size=16777216");
        let whole: EmptyDirVolumeSource =
            serde_json::from_value(serde_json::json!({"medium": "Memory"})).unwrap();
        assert_eq!(tmpfs_options(&whole)["o"], "mode=1777");
        assert_eq!(volume_name("0a-1b", "cache"), "herd_0a-1b_cache");
    }
}
