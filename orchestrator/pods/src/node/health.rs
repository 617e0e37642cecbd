//! Whether this machine's node is healthy, as the update role's health
//! gate asks after a reboot into a new slot: its Node is Ready (dockerd
//! answers, the pod network is up) and every pod bound to it that is
//! still meant to run is Running and Ready. A release that breaks Docker
//! or the pod network is not marked good, and rolls back.

use herd_client::Client;

use crate::api::{ApiObject, Node, Pod};
use crate::registry::{decode, txn};

/// Reads the Node `node` and the pods and judges them.
pub async fn node_and_pods(client: &Client, node: &str) -> Result<(), String> {
    let (kv, _) = txn::get(client, &Node::INFO.key("", node))
        .await
        .map_err(|e| format!("reading node {node}: {}", e.message))?;
    let node_object = match kv {
        Some(kv) => Some(decode::<Node>(&kv).map_err(|e| format!("node {node}: {}", e.message))?),
        None => None,
    };
    let (kvs, _) = txn::range(client, &Pod::INFO.scope_prefix(None))
        .await
        .map_err(|e| format!("reading the pods: {}", e.message))?;
    let pods = kvs
        .iter()
        .map(decode::<Pod>)
        .filter(|p| p.as_ref().map_or(true, |p| p.spec.node_name == node))
        .collect::<Result<Vec<Pod>, _>>()
        .map_err(|e| format!("reading the pods: {}", e.message))?;
    judge(node, node_object.as_ref(), &pods)
}

/// Healthy when the Node is Ready and each of its pods that should run
/// (not finished, not being deleted) is Running with its Ready condition.
pub fn judge(node: &str, node_object: Option<&Node>, pods: &[Pod]) -> Result<(), String> {
    let Some(n) = node_object else {
        return Err(format!("node {node} is not registered yet"));
    };
    let ready = n
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.kind == "Ready");
    match ready {
        Some(c) if c.status == "True" => {}
        Some(c) => {
            return Err(format!(
                "node {node} is not Ready: {} {}",
                c.reason, c.message
            ));
        }
        None => return Err(format!("node {node} reports no Ready condition yet")),
    }
    let waiting: Vec<String> = pods
        .iter()
        .filter(|p| p.spec.node_name == node && p.is_active())
        .filter(|p| {
            let ready = p
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .any(|c| c.kind == "Ready" && c.status == "True");
            p.phase() != "Running" || !ready
        })
        .map(|p| {
            let reason = p.status.as_ref().map_or("", |s| s.reason.as_str());
            format!(
                "{}/{} ({}{})",
                p.metadata.namespace,
                p.metadata.name,
                p.phase(),
                match reason.is_empty() {
                    true => String::new(),
                    false => format!(": {reason}"),
                }
            )
        })
        .collect();
    match waiting.is_empty() {
        true => Ok(()),
        false => Err(format!("pods not ready on {node}: {}", waiting.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(ready: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "m1"},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletNotReady", "message": "dockerd does not answer"}]}
        }))
        .unwrap()
    }

    fn pod(name: &str, node: &str, phase: &str, ready: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_ready_node_with_ready_pods_is_healthy() {
        let pods = [
            pod("a", "m1", "Running", "True"),
            // Finished pods and other nodes' pods do not count.
            pod("b", "m1", "Succeeded", "False"),
            pod("c", "m2", "Pending", "False"),
        ];
        assert_eq!(judge("m1", Some(&node("True")), &pods), Ok(()));
    }

    #[test]
    fn a_node_not_ready_or_a_pod_not_ready_holds_the_gate() {
        let e = judge("m1", Some(&node("False")), &[]).unwrap_err();
        assert!(e.contains("dockerd does not answer"), "{e}");
        assert!(
            judge("m1", None, &[])
                .unwrap_err()
                .contains("not registered")
        );
        let pods = [
            pod("a", "m1", "Running", "False"),
            pod("b", "m1", "Pending", "False"),
        ];
        let e = judge("m1", Some(&node("True")), &pods).unwrap_err();
        assert!(
            e.contains("default/a (Running)") && e.contains("default/b (Pending)"),
            "{e}"
        );
    }
}
