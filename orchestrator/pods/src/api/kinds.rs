//! The facts ([`KindInfo`]) and strategies ([`ApiObject`]) of each kind:
//! where it lives, its defaults, its validation and the status a new
//! object starts with.

use herd_client::keys::Prefix;

use super::cluster::{Event, Namespace, NamespaceSpec, NamespaceStatus, Node};
use super::kind::{ApiConfig, ApiObject, Column, KindInfo, kind_basics, meta_methods};
use super::meta::{IntOrString, map_selects};
use super::pod::{Pod, PodSpec, PodStatus};
use super::printers;
use super::service::{Endpoints, Service, ServiceStatus};
use super::status::Cause;
use super::validation as v;
use super::workloads::{
    Deployment, DeploymentStrategy, ReplicaSet, ReplicaSetStatus, ReplicaStatus,
    ReplicationController, RollingUpdateDeployment,
};

const fn col(
    name: &'static str,
    kind: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        priority,
        description,
    }
}

const NAME: Column = col(
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
);
const AGE: Column = col(
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

/// Defaults of a pod spec (also in templates).
fn default_pod_spec(spec: &mut PodSpec) {
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

/// Defaults shared by the v1 replication controller: the selector and
/// labels come from the template when left out.
impl ApiObject for ReplicationController {
    const INFO: &'static KindInfo = &KindInfo {
        group: "",
        version: "v1",
        kind: "ReplicationController",
        plural: "replicationcontrollers",
        singular: "replicationcontroller",
        short_names: &["rc"],
        namespaced: true,
        prefix: Prefix::new("/registry/controllers/"),
        status: true,
        scale: true,
        generation: true,
        categories: &["all"],
        fields: &["status.replicas"],
        columns: &[
            NAME,
            col("Desired", "integer", 0, "Number of desired pods."),
            col("Current", "integer", 0, "Number of actual pods."),
            col("Ready", "integer", 0, "Number of ready pods."),
            AGE,
            col(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            col("Selector", "string", 1, "Label selector for pods."),
        ],
    };
    meta_methods!();

    fn apply_defaults(&mut self) {
        if let Some(t) = &mut self.spec.template {
            if self.spec.selector.is_empty() {
                self.spec.selector = t.metadata.labels.clone();
            }
            if self.metadata.labels.is_empty() {
                self.metadata.labels = t.metadata.labels.clone();
            }
            default_pod_spec(&mut t.spec);
        }
        self.spec.replicas.get_or_insert(1);
    }

    fn validate(&self, _: &ApiConfig) -> Vec<Cause> {
        let mut errs = v::meta(&self.metadata, true, v::dns1123_subdomain);
        errs.extend(v::replicas("spec.replicas", self.spec.replicas));
        errs.extend(v::labels("spec.selector", &self.spec.selector));
        if self.spec.selector.is_empty() {
            errs.push(Cause::required("spec.selector"));
        }
        match &self.spec.template {
            Some(t) => errs.extend(v::template("spec.template", t, |l| {
                map_selects(&self.spec.selector, l)
            })),
            None => errs.push(Cause::required("spec.template")),
        }
        errs
    }

    fn reset_status(&mut self) {
        self.status = Some(ReplicaStatus::default());
    }

    fn row(&self) -> Vec<serde_json::Value> {
        printers::replication_controller(self)
    }
}
kind_basics!(ReplicationController);

impl ApiObject for ReplicaSet {
    const INFO: &'static KindInfo = &KindInfo {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        short_names: &["rs"],
        namespaced: true,
        prefix: Prefix::new("/registry/replicasets/"),
        status: true,
        scale: true,
        generation: true,
        categories: &["all"],
        fields: &["status.replicas"],
        columns: ReplicationController::INFO.columns,
    };
    meta_methods!();

    fn apply_defaults(&mut self) {
        self.spec.replicas.get_or_insert(1);
        default_pod_spec(&mut self.spec.template.spec);
    }

    fn validate(&self, _: &ApiConfig) -> Vec<Cause> {
        let mut errs = v::meta(&self.metadata, true, v::dns1123_subdomain);
        errs.extend(v::replicas("spec.replicas", self.spec.replicas));
        errs.extend(v::label_selector("spec.selector", &self.spec.selector));
        errs.extend(v::template("spec.template", &self.spec.template, |l| {
            self.spec.selector.matches(l)
        }));
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        immutable_selector(&self.spec.selector, &old.spec.selector)
    }

    fn reset_status(&mut self) {
        self.status = Some(ReplicaSetStatus::default());
    }

    fn row(&self) -> Vec<serde_json::Value> {
        printers::replica_set(self)
    }
}
kind_basics!(ReplicaSet);

fn immutable_selector(
    new: &super::meta::LabelSelector,
    old: &super::meta::LabelSelector,
) -> Vec<Cause> {
    if new != old {
        return vec![Cause::invalid(
            "spec.selector",
            new.to_query(),
            "field is immutable",
        )];
    }
    Vec::new()
}

impl ApiObject for Deployment {
    const INFO: &'static KindInfo = &KindInfo {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        namespaced: true,
        prefix: Prefix::new("/registry/deployments/"),
        status: true,
        scale: true,
        generation: true,
        categories: &["all"],
        fields: &[],
        columns: &[
            NAME,
            col("Ready", "string", 0, "Number of the pod with ready state."),
            col(
                "Up-to-date",
                "string",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            col(
                "Available",
                "string",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
            col(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            col("Selector", "string", 1, "Label selector for pods."),
        ],
    };
    meta_methods!();

    fn apply_defaults(&mut self) {
        let s = &mut self.spec;
        s.replicas.get_or_insert(1);
        s.revision_history_limit.get_or_insert(10);
        s.progress_deadline_seconds.get_or_insert(600);
        let strategy = s.strategy.get_or_insert_with(DeploymentStrategy::default);
        if strategy.kind.is_empty() {
            strategy.kind = "RollingUpdate".into();
        }
        if strategy.kind == "RollingUpdate" {
            let ru = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDeployment::default);
            ru.max_surge
                .get_or_insert_with(|| IntOrString::String("25%".into()));
            ru.max_unavailable
                .get_or_insert_with(|| IntOrString::String("25%".into()));
        }
        default_pod_spec(&mut s.template.spec);
    }

    fn validate(&self, _: &ApiConfig) -> Vec<Cause> {
        let s = &self.spec;
        let mut errs = v::meta(&self.metadata, true, v::dns1123_subdomain);
        errs.extend(v::replicas("spec.replicas", s.replicas));
        errs.extend(v::label_selector("spec.selector", &s.selector));
        errs.extend(v::template("spec.template", &s.template, |l| {
            s.selector.matches(l)
        }));
        if let Some(st) = &s.strategy {
            match (st.kind.as_str(), &st.rolling_update) {
                ("Recreate", Some(_)) => errs.push(Cause::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                )),
                ("RollingUpdate", Some(ru)) => {
                    let replicas = s.replicas.unwrap_or(1).max(1);
                    let mut scaled = |field: &str, value: &Option<IntOrString>| {
                        value.as_ref().map(|x| match x.scaled(100, true) {
                            Ok(n) if n < 0 => {
                                errs.push(Cause::invalid(
                                    format!("spec.strategy.rollingUpdate.{field}"),
                                    x,
                                    "must be greater than or equal to 0",
                                ));
                                0
                            }
                            Ok(_) => x.scaled(replicas, field == "maxSurge").unwrap_or(0),
                            Err(why) => {
                                errs.push(Cause::invalid(
                                    format!("spec.strategy.rollingUpdate.{field}"),
                                    x,
                                    &why,
                                ));
                                0
                            }
                        })
                    };
                    let surge = scaled("maxSurge", &ru.max_surge);
                    let unavailable = scaled("maxUnavailable", &ru.max_unavailable);
                    if surge == Some(0) && unavailable == Some(0) {
                        errs.push(Cause::invalid(
                            "spec.strategy.rollingUpdate.maxUnavailable",
                            0,
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
                }
                ("Recreate" | "RollingUpdate" | "", _) => {}
                (other, _) => errs.push(Cause::not_supported(
                    "spec.strategy.type",
                    other,
                    &["Recreate", "RollingUpdate"],
                )),
            }
        }
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        immutable_selector(&self.spec.selector, &old.spec.selector)
    }

    fn reset_status(&mut self) {
        self.status = None;
    }

    fn row(&self) -> Vec<serde_json::Value> {
        printers::deployment(self)
    }
}
kind_basics!(Deployment);

impl ApiObject for Service {
    const INFO: &'static KindInfo = &KindInfo {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        namespaced: true,
        prefix: Prefix::new("/registry/services/specs/"),
        status: true,
        scale: false,
        generation: false,
        categories: &["all"],
        fields: &["spec.clusterIP", "spec.type"],
        columns: &[
            NAME,
            col("Type", "string", 0, "The type of the service."),
            col("Cluster-IP", "string", 0, "The IP address of the service."),
            col(
                "External-IP",
                "string",
                0,
                "The external IPs of the service.",
            ),
            col("Port(s)", "string", 0, "The ports of the service."),
            AGE,
            col(
                "Selector",
                "string",
                1,
                "The label selector of the service.",
            ),
        ],
    };
    meta_methods!();

    fn apply_defaults(&mut self) {
        let s = &mut self.spec;
        if s.kind.is_empty() {
            s.kind = "ClusterIP".into();
        }
        if s.session_affinity.is_empty() {
            s.session_affinity = "None".into();
        }
        if s.session_affinity == "ClientIP" {
            s.session_affinity_config
                .get_or_insert_with(Default::default)
                .client_ip
                .get_or_insert_with(Default::default)
                .timeout_seconds
                .get_or_insert(super::service::DEFAULT_AFFINITY_TIMEOUT);
        }
        for p in &mut s.ports {
            if p.protocol.is_empty() {
                p.protocol = "TCP".into();
            }
            if p.target_port.is_none() {
                p.target_port = Some(IntOrString::Int(p.port));
            }
        }
    }

    fn validate(&self, config: &ApiConfig) -> Vec<Cause> {
        let mut errs = v::meta(&self.metadata, true, v::dns1035_label);
        errs.extend(v::service_spec(&self.spec, config));
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        let (new_ip, old_ip) = (&self.spec.cluster_ip, &old.spec.cluster_ip);
        if !new_ip.is_empty() && new_ip != old_ip {
            return vec![Cause::invalid(
                "spec.clusterIP",
                new_ip,
                "field is immutable",
            )];
        }
        Vec::new()
    }

    fn reset_status(&mut self) {
        self.status = Some(ServiceStatus::default());
    }

    fn row(&self) -> Vec<serde_json::Value> {
        printers::service(self)
    }
}
kind_basics!(Service);

impl ApiObject for Endpoints {
    const INFO: &'static KindInfo = &KindInfo {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
        namespaced: true,
        prefix: Prefix::new("/registry/services/endpoints/"),
        status: false,
        scale: false,
        generation: false,
        categories: &[],
        fields: &[],
        columns: &[
            NAME,
            col("Endpoints", "string", 0, "Endpoints of the service."),
            AGE,
        ],
    };
    meta_methods!();

    fn validate(&self, _: &ApiConfig) -> Vec<Cause> {
        let mut errs = v::meta(&self.metadata, true, v::dns1123_subdomain);
        for (i, s) in self.subsets.iter().enumerate() {
            for (j, a) in s.addresses.iter().chain(&s.not_ready_addresses).enumerate() {
                if a.ip.parse::<std::net::IpAddr>().is_err() {
                    errs.push(Cause::invalid(
                        format!("subsets[{i}].addresses[{j}].ip"),
                        &a.ip,
                        "must be a valid IP address",
                    ));
                }
            }
            for (j, p) in s.ports.iter().enumerate() {
                if !(1..=65535).contains(&p.port) {
                    errs.push(Cause::invalid(
                        format!("subsets[{i}].ports[{j}].port"),
                        p.port,
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
        errs
    }

    fn row(&self) -> Vec<serde_json::Value> {
        printers::endpoints(self)
    }
}
kind_basics!(Endpoints);

impl ApiObject for Namespace {
    const INFO: &'static KindInfo = &KindInfo {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        namespaced: false,
        prefix: Prefix::new("/registry/namespaces/"),
        status: true,
        scale: false,
        generation: false,
        categories: &[],
        fields: &["status.phase"],
        columns: &[
            NAME,
            col("Status", "string", 0, "The status of the namespace."),
            AGE,
        ],
    };
    meta_methods!();

    fn apply_defaults(&mut self) {
        self.spec.get_or_insert_with(|| NamespaceSpec {
            finalizers: vec!["kubernetes".into()],
        });
    }

    fn validate(&self, _: &ApiConfig) -> Vec<Cause> {
        v::meta(&self.metadata, false, v::dns1123_label)
    }

    fn reset_status(&mut self) {
        self.status = Some(NamespaceStatus {
            phase: "Active".into(),
        });
    }

    fn row(&self) -> Vec<serde_json::Value> {
        printers::namespace(self)
    }
}
kind_basics!(Namespace);

impl ApiObject for Node {
    const INFO: &'static KindInfo = &KindInfo {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        namespaced: false,
        prefix: Prefix::new("/registry/minions/"),
        status: true,
        scale: false,
        generation: false,
        categories: &[],
        fields: &["spec.unschedulable"],
        columns: &[
            NAME,
            col("Status", "string", 0, "The status of the node."),
            col("Roles", "string", 0, "The roles of the node."),
            AGE,
            col(
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
            ),
            col("Internal-IP", "string", 1, "List of internal IPs."),
            col("External-IP", "string", 1, "List of external IPs."),
            col("OS-Image", "string", 1, "OS image reported by the node."),
            col(
                "Kernel-Version",
                "string",
                1,
                "Kernel version reported by the node.",
            ),
            col(
                "Container-Runtime",
                "string",
                1,
                "Container runtime reported by the node.",
            ),
        ],
    };
    meta_methods!();

    fn validate(&self, _: &ApiConfig) -> Vec<Cause> {
        let mut errs = v::meta(&self.metadata, false, v::dns1123_subdomain);
        for (list, field) in self
            .status
            .iter()
            .flat_map(|s| [(&s.capacity, "capacity"), (&s.allocatable, "allocatable")])
        {
            for (k, q) in list {
                if q.millis().is_none_or(|m| m < 0) {
                    errs.push(Cause::invalid(
                        format!("status.{field}[{k}]"),
                        &q.0,
                        "must be a non-negative quantity",
                    ));
                }
            }
        }
        errs
    }

    fn row(&self) -> Vec<serde_json::Value> {
        printers::node(self)
    }
}
kind_basics!(Node);

impl ApiObject for Event {
    const INFO: &'static KindInfo = &KindInfo {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        namespaced: true,
        prefix: Prefix::new("/registry/events/"),
        status: false,
        scale: false,
        generation: false,
        categories: &[],
        fields: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        columns: &[
            col(
                "Last Seen",
                "string",
                0,
                "Time since the event was last seen.",
            ),
            col("Type", "string", 0, "Normal or Warning."),
            col("Reason", "string", 0, "Why the event happened."),
            col("Object", "string", 0, "The object the event is about."),
            col("Subobject", "string", 1, "The part of the object."),
            col("Source", "string", 1, "Who reported it."),
            col("Message", "string", 0, "What happened."),
            col(
                "First Seen",
                "string",
                1,
                "Time since the event was first seen.",
            ),
            col("Count", "string", 1, "How many times it was seen."),
            col("Name", "string", 1, "The event's name."),
        ],
    };
    meta_methods!();

    fn validate(&self, _: &ApiConfig) -> Vec<Cause> {
        let mut errs = v::meta(&self.metadata, true, v::dns1123_subdomain);
        if !self.involved_object.namespace.is_empty()
            && self.involved_object.namespace != self.metadata.namespace
        {
            errs.push(Cause::invalid(
                "involvedObject.namespace",
                &self.involved_object.namespace,
                "does not match event.namespace",
            ));
        }
        if !self.kind_of_event.is_empty()
            && !matches!(self.kind_of_event.as_str(), "Normal" | "Warning")
        {
            errs.push(Cause::not_supported(
                "type",
                &self.kind_of_event,
                &["Normal", "Warning"],
            ));
        }
        errs
    }

    fn row(&self) -> Vec<serde_json::Value> {
        printers::event(self)
    }
}
kind_basics!(Event);
