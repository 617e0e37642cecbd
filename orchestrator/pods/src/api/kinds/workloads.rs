//! The controllers' kinds: v1 ReplicationController, apps/v1 ReplicaSet
//! and Deployment (selectors from templates, immutable selectors, rollout
//! strategy bounds).

use herd_client::keys::Prefix;

use super::pod::default_pod_spec;
use super::{AGE, NAME, col};
use crate::api::kind::{ApiConfig, ApiObject, KindInfo, kind_basics, meta_methods};
use crate::api::meta::{IntOrString, LabelSelector, map_selects};
use crate::api::printers;
use crate::api::status::Cause;
use crate::api::validation as v;
use crate::api::workloads::{
    Deployment, DeploymentStrategy, ReplicaSet, ReplicaSetStatus, ReplicaStatus,
    ReplicationController, RollingUpdateDeployment,
};

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

fn immutable_selector(new: &LabelSelector, old: &LabelSelector) -> Vec<Cause> {
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
