//! Pod: the defaults every pod spec (and template) gets, its validation,
//! a spec fixed at creation, and the QoS class its status starts with.

use herd_client::keys::Prefix;

use super::{AGE, NAME, col};
use crate::api::kind::{ApiConfig, ApiObject, KindInfo, kind_basics, meta_methods};
use crate::api::pod::{Pod, PodSpec, PodStatus};
use crate::api::printers;
use crate::api::status::Cause;
use crate::api::validation as v;

/// Defaults of a pod spec (also in templates).
pub(super) fn default_pod_spec(spec: &mut PodSpec) {
    if spec.restart_policy.is_empty() {
        spec.restart_policy = "Always".into();
    }
    if spec.termination_grace_period_seconds.is_none() {
        spec.termination_grace_period_seconds = Some(30);
    }
    if spec.dns_policy.is_empty() {
        spec.dns_policy = "ClusterFirst".into();
    }
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut())
    {
        if c.image_pull_policy.is_empty() {
            // Kubernetes: `latest` (or no tag) is pulled every time.
            let last = c.image.rsplit('/').next().unwrap_or("");
            let tag = last.split_once(':').map(|(_, t)| t);
            c.image_pull_policy = if tag.is_none_or(|t| t == "latest") && !last.contains('@') {
                "Always".into()
            } else {
                "IfNotPresent".into()
            };
        }
        for p in &mut c.ports {
            if p.protocol.is_empty() {
                p.protocol = "TCP".into();
            }
        }
        for probe in [&mut c.liveness_probe, &mut c.readiness_probe]
            .into_iter()
            .flatten()
        {
            probe.timeout_seconds.get_or_insert(1);
            probe.period_seconds.get_or_insert(10);
            probe.success_threshold.get_or_insert(1);
            probe.failure_threshold.get_or_insert(3);
            if let Some(h) = &mut probe.http_get {
                if h.path.is_empty() {
                    h.path = "/".into();
                }
                if h.scheme.is_empty() {
                    h.scheme = "HTTP".into();
                }
            }
        }
    }
}

/// Guaranteed, Burstable or BestEffort, as Kubernetes classes a pod.
fn qos_class(spec: &PodSpec) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in &spec.containers {
        let r = &c.resources;
        any |= !r.is_empty();
        for res in ["cpu", "memory"] {
            let limit = r.limits.get(res).and_then(|q| q.millis());
            let request = r.requests.get(res).and_then(|q| q.millis()).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

impl ApiObject for Pod {
    const INFO: &'static KindInfo = &KindInfo {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        namespaced: true,
        prefix: Prefix::new("/registry/pods/"),
        status: true,
        scale: false,
        generation: false,
        categories: &["all"],
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "status.phase",
            "status.podIP",
        ],
        columns: &[
            NAME,
            col(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted.",
            ),
            AGE,
            col("IP", "string", 1, "IP address allocated to the pod."),
            col("Node", "string", 1, "Name of the node the pod is bound to."),
            col(
                "Nominated Node",
                "string",
                1,
                "Node the pod is nominated to after a preemption.",
            ),
            col(
                "Readiness Gates",
                "string",
                1,
                "Readiness gates of the pod.",
            ),
        ],
    };
    meta_methods!();

    fn apply_defaults(&mut self) {
        default_pod_spec(&mut self.spec);
    }

    fn validate(&self, _: &ApiConfig) -> Vec<Cause> {
        let mut errs = v::meta(&self.metadata, true, v::dns1123_subdomain);
        errs.extend(v::pod_spec("spec", &self.spec));
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        // Like Kubernetes: a pod's spec is fixed once created, except the
        // images and the binding of an unbound pod.
        let mut new_spec = self.spec.clone();
        for (n, o) in new_spec.containers.iter_mut().zip(&old.spec.containers) {
            n.image = o.image.clone();
        }
        if old.spec.node_name.is_empty() {
            new_spec.node_name.clear();
        }
        if new_spec != old.spec {
            return vec![Cause::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image` and the binding of an unbound pod",
            )];
        }
        Vec::new()
    }

    fn reset_status(&mut self) {
        self.status = Some(PodStatus {
            phase: "Pending".into(),
            qos_class: qos_class(&self.spec).into(),
            ..Default::default()
        });
    }

    fn row(&self) -> Vec<serde_json::Value> {
        printers::pod(self)
    }
}
kind_basics!(Pod);
