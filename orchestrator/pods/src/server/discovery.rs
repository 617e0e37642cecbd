//! Discovery: `/api`, `/apis`, the resource lists of each group version
//! (with their subresources, short names and verbs, as `kubectl
//! api-resources` prints them) and `/version`. kubectl 1.32 asks first for
//! aggregated discovery; a plain `application/json` answer is its
//! documented fallback to these legacy documents.

use serde_json::{Value, json};

use crate::api::kind::{self, KindInfo};

/// The Kubernetes API level herd's API corresponds to.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "32";

pub fn version(herd_version: &str) -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0-herd"),
        "gitCommit": herd_version,
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn groups_of() -> Vec<&'static str> {
    let mut groups: Vec<&str> = kind::all()
        .iter()
        .map(|k| k.group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    groups
}

/// `/apis/<group>`.
pub fn group(name: &str) -> Value {
    let versions: Vec<Value> = {
        let mut v: Vec<&str> = kind::all()
            .iter()
            .filter(|k| k.group == name)
            .map(|k| k.version)
            .collect();
        v.dedup();
        v.iter()
            .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
            .collect()
    };
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn groups() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups_of().into_iter().map(group).collect::<Vec<_>>(),
    })
}

fn verbs(k: &KindInfo) -> Vec<&'static str> {
    vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ]
    .into_iter()
    .filter(|_| !k.plural.is_empty())
    .collect()
}

fn entries(k: &KindInfo) -> Vec<Value> {
    let mut out = vec![json!({
        "name": k.plural,
        "singularName": k.singular,
        "namespaced": k.namespaced,
        "kind": k.kind,
        "verbs": verbs(k),
        "shortNames": k.short_names,
        "categories": k.categories,
    })];
    if k.status {
        out.push(json!({
            "name": format!("{}/status", k.plural),
            "singularName": "",
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    if k.scale {
        out.push(json!({
            "name": format!("{}/scale", k.plural),
            "singularName": "",
            "namespaced": k.namespaced,
            "group": "autoscaling",
            "version": "v1",
            "kind": "Scale",
            "verbs": ["get", "patch", "update"],
        }));
    }
    if k.kind == "Pod" {
        out.push(json!({
            "name": "pods/binding",
            "singularName": "",
            "namespaced": true,
            "kind": "Binding",
            "verbs": ["create"],
        }));
        out.push(json!({
            "name": "pods/log",
            "singularName": "",
            "namespaced": true,
            "kind": "Pod",
            "verbs": ["get"],
        }));
        out.push(json!({
            "name": "pods/exec",
            "singularName": "",
            "namespaced": true,
            "kind": "PodExecOptions",
            "verbs": ["create", "get"],
        }));
    }
    out
}

/// `/api/v1`, `/apis/apps/v1`.
pub fn resources(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = kind::all()
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .flat_map(|k| entries(k))
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") },
        "resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_kinds_and_subresources() {
        let core = resources("", "v1");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        for n in [
            "pods",
            "pods/status",
            "pods/binding",
            "replicationcontrollers/scale",
            "services",
            "endpoints",
            "nodes",
            "namespaces",
            "events",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        let apps = resources("apps", "v1");
        assert_eq!(apps["groupVersion"], "apps/v1");
        let scale = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(groups()["groups"][0]["name"], "apps");
    }
}
