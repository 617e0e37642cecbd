//! Pod specs and controllers' pod templates: containers, volumes,
//! probes, restart policy.

use std::collections::{BTreeMap, HashSet};

use super::ports::port_name;
use super::ports::{int_or_port_name, port_number, protocol};
use super::{dns1123_label, dns1123_subdomain, labels};
use crate::api::pod::{Container, PodSpec, PodTemplateSpec, Probe};
use crate::api::status::Cause;

fn probe(path: &str, p: &Probe, errs: &mut Vec<Cause>) {
    let handlers = [
        p.exec.is_some(),
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
    ]
    .iter()
    .filter(|h| **h)
    .count();
    if handlers != 1 {
        errs.push(Cause::required(format!(
            "{path}: must specify exactly one of exec, httpGet, tcpSocket"
        )));
    }
    if let Some(h) = &p.http_get {
        int_or_port_name(&format!("{path}.httpGet.port"), &h.port, errs);
        if !h.scheme.is_empty() && h.scheme != "HTTP" {
            errs.push(Cause::not_supported(
                format!("{path}.httpGet.scheme"),
                &h.scheme,
                &["HTTP"],
            ));
        }
    }
    if let Some(t) = &p.tcp_socket {
        int_or_port_name(&format!("{path}.tcpSocket.port"), &t.port, errs);
    }
    for (field, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        if let Some(v) = v
            && v < 0
        {
            errs.push(Cause::invalid(
                format!("{path}.{field}"),
                v,
                "must be greater than or equal to 0",
            ));
        }
    }
}

fn container(path: &str, c: &Container, volumes: &HashSet<&str>, errs: &mut Vec<Cause>) {
    if c.name.is_empty() {
        errs.push(Cause::required(format!("{path}.name")));
    } else if let Some(why) = dns1123_label(&c.name) {
        errs.push(Cause::invalid(format!("{path}.name"), &c.name, &why));
    }
    if c.image.trim().is_empty() {
        errs.push(Cause::required(format!("{path}.image")));
    }
    let mut port_names = HashSet::new();
    for (i, p) in c.ports.iter().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        port_number(&format!("{pp}.containerPort"), p.container_port, errs);
        if let Some(hp) = p.host_port
            && hp != 0
        {
            port_number(&format!("{pp}.hostPort"), hp, errs);
        }
        protocol(&format!("{pp}.protocol"), &p.protocol, errs);
        if !p.name.is_empty() {
            if let Some(why) = port_name(&p.name) {
                errs.push(Cause::invalid(format!("{pp}.name"), &p.name, &why));
            } else if !port_names.insert(p.name.as_str()) {
                errs.push(Cause::duplicate(format!("{pp}.name"), &p.name));
            }
        }
        if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
            errs.push(Cause::invalid(
                format!("{pp}.hostIP"),
                &p.host_ip,
                "must be a valid IP address",
            ));
        }
    }
    for (i, e) in c.env.iter().enumerate() {
        let ep = format!("{path}.env[{i}]");
        let ok = !e.name.is_empty()
            && !e.name.starts_with(|c: char| c.is_ascii_digit())
            && e.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            errs.push(Cause::invalid(
                format!("{ep}.name"),
                &e.name,
                "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit",
            ));
        }
        if e.value.is_some() && e.value_from.is_some() {
            errs.push(Cause::invalid(
                format!("{ep}.valueFrom"),
                "",
                "may not be specified when `value` is not empty",
            ));
        }
        if let Some(from) = &e.value_from {
            const FIELDS: &[&str] = &[
                "metadata.name",
                "metadata.namespace",
                "metadata.uid",
                "spec.nodeName",
                "spec.serviceAccountName",
                "status.hostIP",
                "status.podIP",
                "status.podIPs",
            ];
            let fp = &from.field_ref.field_path;
            let labelish =
                fp.starts_with("metadata.labels['") || fp.starts_with("metadata.annotations['");
            if !FIELDS.contains(&fp.as_str()) && !labelish {
                errs.push(Cause::not_supported(
                    format!("{ep}.valueFrom.fieldRef.fieldPath"),
                    fp,
                    FIELDS,
                ));
            }
        }
    }
    for (list, field) in [
        (&c.resources.limits, "limits"),
        (&c.resources.requests, "requests"),
    ] {
        for (k, q) in list {
            if q.millis().is_none_or(|m| m < 0) {
                errs.push(Cause::invalid(
                    format!("{path}.resources.{field}[{k}]"),
                    &q.0,
                    "must be a non-negative quantity (e.g. 100m, 1, 128Mi)",
                ));
            }
        }
    }
    for (k, req) in &c.resources.requests {
        if let (Some(r), Some(l)) = (
            req.millis(),
            c.resources.limits.get(k).and_then(|l| l.millis()),
        ) && r > l
        {
            errs.push(Cause::invalid(
                format!("{path}.resources.requests"),
                &req.0,
                &format!(
                    "must be less than or equal to {k} limit of {}",
                    c.resources.limits[k].0
                ),
            ));
        }
    }
    let mut mounts = HashSet::new();
    for (i, m) in c.volume_mounts.iter().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        if !volumes.contains(m.name.as_str()) {
            errs.push(Cause::new_not_found(format!("{mp}.name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(Cause::required(format!("{mp}.mountPath")));
        } else if !mounts.insert(m.mount_path.as_str()) {
            errs.push(Cause::invalid(
                format!("{mp}.mountPath"),
                &m.mount_path,
                "must be unique",
            ));
        }
    }
    if !c.image_pull_policy.is_empty()
        && !matches!(
            c.image_pull_policy.as_str(),
            "Always" | "IfNotPresent" | "Never"
        )
    {
        errs.push(Cause::not_supported(
            format!("{path}.imagePullPolicy"),
            &c.image_pull_policy,
            &["Always", "IfNotPresent", "Never"],
        ));
    }
    if let Some(p) = &c.liveness_probe {
        probe(&format!("{path}.livenessProbe"), p, errs);
    }
    if let Some(p) = &c.readiness_probe {
        probe(&format!("{path}.readinessProbe"), p, errs);
    }
}

impl Cause {
    fn new_not_found(field: String, value: &str) -> Cause {
        Cause {
            reason: "FieldValueNotFound".into(),
            message: format!("Not found: {value:?}"),
            field,
        }
    }
}

/// Errors of a pod spec at `path` (`spec` or `spec.template.spec`).
pub fn pod_spec(path: &str, spec: &PodSpec) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut volumes = HashSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let vp = format!("{path}.volumes[{i}]");
        if let Some(why) = dns1123_label(&v.name) {
            errs.push(Cause::invalid(format!("{vp}.name"), &v.name, &why));
        } else if !volumes.insert(v.name.as_str()) {
            errs.push(Cause::duplicate(format!("{vp}.name"), &v.name));
        }
        match (&v.empty_dir, &v.host_path) {
            (Some(_), Some(_)) => errs.push(Cause::forbidden(
                format!("{vp}.hostPath"),
                "may not specify more than 1 volume type",
            )),
            (None, None) => errs.push(Cause::required(format!(
                "{vp}: must specify a volume type (emptyDir or hostPath)"
            ))),
            (None, Some(h)) if !h.path.starts_with('/') => errs.push(Cause::invalid(
                format!("{vp}.hostPath.path"),
                &h.path,
                "must be an absolute path",
            )),
            _ => {}
        }
    }
    if spec.containers.is_empty() {
        errs.push(Cause::required(format!("{path}.containers")));
    }
    let mut names = HashSet::new();
    for (list, field) in [
        (&spec.init_containers, "initContainers"),
        (&spec.containers, "containers"),
    ] {
        for (i, c) in list.iter().enumerate() {
            let cp = format!("{path}.{field}[{i}]");
            container(&cp, c, &volumes, &mut errs);
            if !c.name.is_empty() && !names.insert(c.name.as_str()) {
                errs.push(Cause::duplicate(format!("{cp}.name"), &c.name));
            }
        }
    }
    if !spec.restart_policy.is_empty()
        && !matches!(
            spec.restart_policy.as_str(),
            "Always" | "OnFailure" | "Never"
        )
    {
        errs.push(Cause::not_supported(
            format!("{path}.restartPolicy"),
            &spec.restart_policy,
            &["Always", "OnFailure", "Never"],
        ));
    }
    if !spec.dns_policy.is_empty()
        && !matches!(
            spec.dns_policy.as_str(),
            "ClusterFirst" | "ClusterFirstWithHostNet" | "Default" | "None"
        )
    {
        errs.push(Cause::not_supported(
            format!("{path}.dnsPolicy"),
            &spec.dns_policy,
            &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        ));
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        errs.push(Cause::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            g,
            "must be greater than or equal to 0",
        ));
    }
    if !spec.node_name.is_empty()
        && let Some(why) = dns1123_subdomain(&spec.node_name)
    {
        errs.push(Cause::invalid(
            format!("{path}.nodeName"),
            &spec.node_name,
            &why,
        ));
    }
    errs.extend(labels(&format!("{path}.nodeSelector"), &spec.node_selector));
    if !spec.hostname.is_empty()
        && let Some(why) = dns1123_label(&spec.hostname)
    {
        errs.push(Cause::invalid(
            format!("{path}.hostname"),
            &spec.hostname,
            &why,
        ));
    }
    errs
}

/// Errors of a controller's pod template: labels, a pod spec that
/// restarts (controllers keep pods running), and a selector that selects
/// the template's own labels.
pub fn template(
    path: &str,
    template: &PodTemplateSpec,
    selects: impl Fn(&BTreeMap<String, String>) -> bool,
) -> Vec<Cause> {
    let mut errs = labels(
        &format!("{path}.metadata.labels"),
        &template.metadata.labels,
    );
    if !selects(&template.metadata.labels) {
        errs.push(Cause::invalid(
            format!("{path}.metadata.labels"),
            crate::api::meta::map_query(&template.metadata.labels),
            "`selector` does not match template `labels`",
        ));
    }
    errs.extend(pod_spec(&format!("{path}.spec"), &template.spec));
    if !template.spec.restart_policy.is_empty() && template.spec.restart_policy != "Always" {
        errs.push(Cause::not_supported(
            format!("{path}.spec.restartPolicy"),
            &template.spec.restart_policy,
            &["Always"],
        ));
    }
    errs
}
