//! Events controllers report about objects (`kubectl describe` shows
//! them): v1 Events in the object's namespace, kept for an hour by their
//! lease. Reporting never fails a reconcile: a lost event is logged.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::api::cluster::{EventSource, ObjectReference};
use crate::api::meta::now;
use crate::api::{ApiObject, Event, ObjectMeta};
use crate::registry::Registry;

/// Writes events as one component.
#[derive(Clone)]
pub struct Recorder {
    registry: Registry,
    component: &'static str,
    instance: String,
}

impl Recorder {
    pub fn new(registry: Registry, component: &'static str, instance: &str) -> Recorder {
        Recorder {
            registry,
            component,
            instance: instance.to_owned(),
        }
    }

    pub async fn normal<T: ApiObject>(&self, object: &T, reason: &str, message: impl Into<String>) {
        self.record(object, "Normal", reason, message.into()).await;
    }

    pub async fn warning<T: ApiObject>(
        &self,
        object: &T,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.record(object, "Warning", reason, message.into()).await;
    }

    async fn record<T: ApiObject>(&self, object: &T, kind: &str, reason: &str, message: String) {
        let m = object.meta();
        let namespace = if m.namespace.is_empty() {
            "default"
        } else {
            m.namespace.as_str()
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let at = now();
        let event = Event {
            metadata: ObjectMeta {
                name: format!("{}.{nanos:x}", m.name),
                namespace: namespace.to_owned(),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: T::INFO.kind.into(),
                namespace: m.namespace.clone(),
                name: m.name.clone(),
                uid: m.uid.clone(),
                api_version: T::INFO.api_version(),
                resource_version: m.resource_version.clone(),
                field_path: String::new(),
            },
            reason: reason.into(),
            message,
            source: Some(EventSource {
                component: self.component.into(),
                host: String::new(),
            }),
            first_timestamp: Some(at.clone()),
            last_timestamp: Some(at),
            count: Some(1),
            kind_of_event: kind.into(),
            reporting_component: self.component.into(),
            reporting_instance: self.instance.clone(),
            ..Default::default()
        };
        if let Err(e) = self.registry.create(event, false).await {
            tracing::debug!(error = %e, reason, "event not recorded");
        }
    }
}
