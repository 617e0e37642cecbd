//! The cluster's own kinds: Namespace, Node and Event.

use herd_client::keys::Prefix;

use super::{AGE, NAME, col};
use crate::api::cluster::{Event, Namespace, NamespaceSpec, NamespaceStatus, Node};
use crate::api::kind::{ApiConfig, ApiObject, KindInfo, kind_basics, meta_methods};
use crate::api::printers;
use crate::api::status::Cause;
use crate::api::validation as v;

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
