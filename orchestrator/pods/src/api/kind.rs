//! What the API machinery knows about each kind: its names (resource,
//! kind, short names), group and version, scope, where it lives in the
//! store, its subresources — and the [`ApiObject`] trait that lets the
//! registry, the server and the controllers handle every kind the same way.

use std::fmt::Debug;

use herd_client::keys::Prefix;
use herd_client::kit::Resource;
use schemars::JsonSchema;

use super::cluster::{Event, Namespace, Node};
use super::meta::ObjectMeta;
use super::pod::Pod;
use super::service::{Endpoints, Service};
use super::status::{Cause, What};
use super::workloads::{Deployment, ReplicaSet, ReplicationController};

/// A column of a kind's table (`kubectl get`).
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer` or `date`.
    pub kind: &'static str,
    /// 0: always shown; 1: with `-o wide`.
    pub priority: u8,
    pub description: &'static str,
}

/// The static facts of a kind.
#[derive(Debug)]
pub struct KindInfo {
    /// `""` for the core group, `apps`.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Plural resource name used in URLs (`pods`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Where the objects live: `<prefix><namespace>/<name>` or `<prefix><name>`.
    pub prefix: Prefix,
    /// Has a `status` subresource (status is kept apart from spec updates).
    pub status: bool,
    /// Has a `scale` subresource.
    pub scale: bool,
    /// Counts spec changes in `metadata.generation`.
    pub generation: bool,
    pub categories: &'static [&'static str],
    /// Field selectors beyond `metadata.name` and `metadata.namespace`.
    pub fields: &'static [&'static str],
    pub columns: &'static [Column],
}

impl PartialEq for KindInfo {
    fn eq(&self, other: &Self) -> bool {
        (self.group, self.version, self.kind) == (other.group, other.version, other.kind)
    }
}

impl Eq for KindInfo {}

impl KindInfo {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn what(&self) -> What<'static> {
        What {
            group: self.group,
            resource: self.plural,
            kind: self.kind,
        }
    }

    /// The store key of `name` in `namespace`.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        self.prefix.key(&self.store_name(namespace, name))
    }

    /// The name under the prefix: `namespace/name` or `name`.
    pub fn store_name(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("{namespace}/{name}")
        } else {
            name.to_owned()
        }
    }

    /// The key prefix of one namespace (or of every object).
    pub fn scope_prefix(&self, namespace: Option<&str>) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => self.prefix.key(&format!("{ns}/")),
            None => self.prefix.as_str().to_owned(),
        }
    }

    /// The URL path of the collection (for `selfLink`-like needs).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let root = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{root}/namespaces/{ns}/{}", self.plural),
            None => format!("{root}/{}", self.plural),
        }
    }
}

/// A kind the API serves: typed, validated at the edge, kept as JSON
/// under [`KindInfo::prefix`]. The hooks follow Kubernetes' strategies:
/// defaulting, validation on create and update, and the status that the
/// server (not the client) decides on create.
pub trait ApiObject: Resource + JsonSchema + Default + Debug + PartialEq {
    const INFO: &'static KindInfo;

    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    /// Sets `apiVersion` and `kind`.
    fn set_type_meta(&mut self);
    /// Fills what Kubernetes fills when a field is left out.
    fn apply_defaults(&mut self) {}
    /// Field errors of the object on its own.
    fn validate(&self, config: &ApiConfig) -> Vec<Cause>;
    /// Field errors of an update (immutable fields).
    fn validate_update(&self, _old: &Self) -> Vec<Cause> {
        Vec::new()
    }
    /// The status a new object starts with (clients do not set it).
    fn reset_status(&mut self) {}
    /// The cells of its table row, in [`KindInfo::columns`] order after NAME.
    fn row(&self) -> Vec<serde_json::Value>;

    /// `namespace/name` or `name`: its name under the prefix.
    fn store_name(&self) -> String {
        Self::INFO.store_name(&self.meta().namespace, &self.meta().name)
    }

    /// Its resourceVersion as the store's mod revision.
    fn revision(&self) -> i64 {
        self.meta().resource_version.parse().unwrap_or(0)
    }
}

/// What validation needs to know about the cluster.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The range cluster IPs are allocated from.
    pub service_cidr: (std::net::Ipv4Addr, u8),
    /// The range node ports are allocated from.
    pub node_ports: std::ops::RangeInclusive<i32>,
    /// Largest object stored, encoded.
    pub max_object_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            service_cidr: (std::net::Ipv4Addr::new(10, 0, 0, 0), 16),
            node_ports: 30000..=32767,
            max_object_bytes: 1 << 20,
        }
    }
}

/// Every kind the API serves, in discovery order.
pub fn all() -> &'static [&'static KindInfo] {
    &[
        Pod::INFO,
        ReplicationController::INFO,
        Service::INFO,
        Endpoints::INFO,
        Namespace::INFO,
        Node::INFO,
        Event::INFO,
        ReplicaSet::INFO,
        Deployment::INFO,
    ]
}

/// The kind a name refers to, as kubectl resolves it: plural, singular,
/// short name or kind, case-insensitively (`po`, `pod`, `Pods`,
/// `deploy`, `deployments.apps`).
pub fn lookup(name: &str) -> Option<&'static KindInfo> {
    let name = name.to_ascii_lowercase();
    let (name, group) = match name.split_once('.') {
        Some((n, g)) => (n.to_owned(), Some(g.to_owned())),
        None => (name, None),
    };
    all().iter().copied().find(|k| {
        group.as_deref().is_none_or(|g| g == k.group)
            && (k.plural == name
                || k.singular == name
                || k.kind.eq_ignore_ascii_case(&name)
                || k.short_names.contains(&name.as_str()))
    })
}

/// The kind served at `group`/`version` under `plural`.
pub fn by_resource(group: &str, version: &str, plural: &str) -> Option<&'static KindInfo> {
    all()
        .iter()
        .copied()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// Implements the boilerplate of [`ApiObject`] and the kit's
/// [`Resource`] for a kind with `metadata`.
macro_rules! kind_basics {
    ($t:ty) => {
        impl herd_client::kit::Resource for $t {
            const PREFIX: herd_client::keys::Prefix = <$t as $crate::api::ApiObject>::INFO.prefix;
            const KIND: &'static str = <$t as $crate::api::ApiObject>::INFO.kind;
        }
    };
}
pub(crate) use kind_basics;

/// The `meta`/`meta_mut`/`set_type_meta` methods of a kind.
macro_rules! meta_methods {
    () => {
        fn meta(&self) -> &$crate::api::ObjectMeta {
            &self.metadata
        }
        fn meta_mut(&mut self) -> &mut $crate::api::ObjectMeta {
            &mut self.metadata
        }
        fn set_type_meta(&mut self) {
            self.api_version = Self::INFO.api_version();
            self.kind = Self::INFO.kind.to_owned();
        }
    };
}
pub(crate) use meta_methods;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_names_resolve() {
        assert_eq!(lookup("po").unwrap().kind, "Pod");
        assert_eq!(lookup("rc").unwrap().kind, "ReplicationController");
        assert_eq!(lookup("deploy").unwrap().kind, "Deployment");
        assert_eq!(lookup("deployments.apps").unwrap().kind, "Deployment");
        assert_eq!(lookup("Service").unwrap().plural, "services");
        assert_eq!(lookup("ep").unwrap().plural, "endpoints");
        assert!(lookup("deployments.batch").is_none());
        assert!(lookup("cronjobs").is_none());
    }

    #[test]
    fn keys_follow_kubernetes_etcd_layout() {
        assert_eq!(
            Pod::INFO.key("default", "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(Node::INFO.key("", "n1"), "/registry/minions/n1");
        assert_eq!(
            Service::INFO.key("default", "db"),
            "/registry/services/specs/default/db"
        );
        assert_eq!(
            Endpoints::INFO.key("default", "db"),
            "/registry/services/endpoints/default/db"
        );
        assert_eq!(
            ReplicationController::INFO.key("x", "rc"),
            "/registry/controllers/x/rc"
        );
    }
}
