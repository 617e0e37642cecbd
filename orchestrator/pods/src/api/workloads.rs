//! Controllers of pods: `v1` ReplicationController (the seed's),
//! `apps/v1` ReplicaSet and Deployment, and the `autoscaling/v1` Scale
//! their `scale` subresource speaks.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{IntOrString, LabelSelector, ObjectMeta};
use super::pod::PodTemplateSpec;

/// Keeps a number of pods running (the seed's controller).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ReplicationController")]
pub struct ReplicationController {
    /// API version of this representation (v1).
    #[serde(default)]
    pub api_version: String,
    /// Kind of this representation (ReplicationController).
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired behaviour.
    #[serde(default)]
    pub spec: ReplicationControllerSpec,
    /// Observed state, written by the replication manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ReplicaStatus>,
}

/// What a replication controller keeps running.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ReplicationControllerSpec")]
pub struct ReplicationControllerSpec {
    /// Number of pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Seconds a pod must be ready to count as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// Labels of the pods it controls (default: the template's labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The pods it creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PodTemplateSpec>,
}

/// What a replication controller or replica set observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ReplicationControllerStatus")]
pub struct ReplicaStatus {
    /// Pods it has.
    #[serde(default)]
    pub replicas: i32,
    /// Pods whose labels match the template's.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub fully_labeled_replicas: i32,
    /// Pods that are ready.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub ready_replicas: i32,
    /// Pods ready for at least minReadySeconds.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub available_replicas: i32,
    /// The generation this status is about.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub observed_generation: i64,
}

fn is_zero32(n: &i32) -> bool {
    *n == 0
}

fn is_zero64(n: &i64) -> bool {
    *n == 0
}

/// Keeps a number of pods running (the apps/v1 successor of ReplicationController).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.apps.v1.ReplicaSet")]
pub struct ReplicaSet {
    /// API version of this representation (apps/v1).
    #[serde(default)]
    pub api_version: String,
    /// Kind of this representation (ReplicaSet).
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired behaviour.
    #[serde(default)]
    pub spec: ReplicaSetSpec,
    /// Observed state, written by the replication manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ReplicaSetStatus>,
}

/// What a replica set keeps running.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.apps.v1.ReplicaSetSpec")]
pub struct ReplicaSetSpec {
    /// Number of pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Seconds a pod must be ready to count as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// Pods it controls; must match the template's labels.
    pub selector: LabelSelector,
    /// The pods it creates.
    #[serde(default)]
    pub template: PodTemplateSpec,
}

/// What a replica set observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.apps.v1.ReplicaSetStatus")]
pub struct ReplicaSetStatus {
    /// Pods it has.
    #[serde(default)]
    pub replicas: i32,
    /// Pods whose labels match the template's.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub fully_labeled_replicas: i32,
    /// Pods that are ready.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub ready_replicas: i32,
    /// Pods ready for at least minReadySeconds.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub available_replicas: i32,
    /// The generation this status is about.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub observed_generation: i64,
}

impl From<ReplicaStatus> for ReplicaSetStatus {
    fn from(s: ReplicaStatus) -> Self {
        ReplicaSetStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas,
            ready_replicas: s.ready_replicas,
            available_replicas: s.available_replicas,
            observed_generation: s.observed_generation,
        }
    }
}

impl From<ReplicaSetStatus> for ReplicaStatus {
    fn from(s: ReplicaSetStatus) -> Self {
        ReplicaStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas,
            ready_replicas: s.ready_replicas,
            available_replicas: s.available_replicas,
            observed_generation: s.observed_generation,
        }
    }
}

/// Declarative updates of pods through replica sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.apps.v1.Deployment")]
pub struct Deployment {
    /// API version of this representation (apps/v1).
    #[serde(default)]
    pub api_version: String,
    /// Kind of this representation (Deployment).
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired behaviour.
    #[serde(default)]
    pub spec: DeploymentSpec,
    /// Observed state, written by the deployment controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeploymentStatus>,
}

/// What a deployment rolls out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.apps.v1.DeploymentSpec")]
pub struct DeploymentSpec {
    /// Number of pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods it manages; must match the template's labels.
    pub selector: LabelSelector,
    /// The pods it rolls out.
    #[serde(default)]
    pub template: PodTemplateSpec,
    /// How old pods are replaced by new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-patch-strategy" = "retainKeys"))]
    pub strategy: Option<DeploymentStrategy>,
    /// Seconds a pod must be ready to count as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// Old replica sets kept for rollback (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    /// Whether rollouts are paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Seconds a rollout may make no progress before it is reported failed (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,
}

/// Recreate, or RollingUpdate with its limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.apps.v1.DeploymentStrategy")]
pub struct DeploymentStrategy {
    /// Recreate or RollingUpdate (default).
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "type")]
    pub kind: String,
    /// Limits of a rolling update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdateDeployment>,
}

/// How far a rolling update may go above and below the desired count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.apps.v1.RollingUpdateDeployment")]
pub struct RollingUpdateDeployment {
    /// Pods that may be unavailable during the update (count or percentage, default 25%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Pods that may exist above the desired count (count or percentage, default 25%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
}

/// What a deployment observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.apps.v1.DeploymentStatus")]
pub struct DeploymentStatus {
    /// The generation this status is about.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub observed_generation: i64,
    /// Pods of all its replica sets.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub replicas: i32,
    /// Pods of the current template.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub updated_replicas: i32,
    /// Pods that are ready.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub ready_replicas: i32,
    /// Pods ready for at least minReadySeconds.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub available_replicas: i32,
    /// Pods still needed for the desired count to be available.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub unavailable_replicas: i32,
    /// Available and Progressing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "type", "x-kubernetes-patch-strategy" = "merge"))]
    pub conditions: Vec<DeploymentCondition>,
    /// Hash collisions seen when naming replica sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
}

/// A condition of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.apps.v1.DeploymentCondition")]
pub struct DeploymentCondition {
    /// Available or Progressing.
    #[serde(rename = "type")]
    pub kind: String,
    /// True, False or Unknown.
    pub status: String,
    /// Last time it was updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    /// Last time the status changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Details for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The `scale` subresource (autoscaling/v1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.autoscaling.v1.Scale")]
pub struct Scale {
    /// autoscaling/v1.
    #[serde(default)]
    pub api_version: String,
    /// Scale.
    #[serde(default)]
    pub kind: String,
    /// Metadata of the scaled object.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The desired count.
    #[serde(default)]
    pub spec: ScaleSpec,
    /// The observed count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ScaleStatus>,
}

/// Desired count of a scaled object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.autoscaling.v1.ScaleSpec")]
pub struct ScaleSpec {
    /// Desired number of pods.
    #[serde(default)]
    pub replicas: i32,
}

/// Observed count of a scaled object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.autoscaling.v1.ScaleStatus")]
pub struct ScaleStatus {
    /// Observed number of pods.
    #[serde(default)]
    pub replicas: i32,
    /// Label query of the pods, in query syntax.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
}

impl DeploymentStatus {
    pub fn condition(&self, kind: &str) -> Option<&DeploymentCondition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
}
