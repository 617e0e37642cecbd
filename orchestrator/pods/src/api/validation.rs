//! Validation as Kubernetes does it, for the fields herd implements:
//! names, labels, selectors, pod specs, services, controllers. Every
//! error is a [`Cause`] naming the field path.

use std::collections::{BTreeMap, HashSet};

use super::kind::ApiConfig;
use super::meta::{IntOrString, LabelSelector, ObjectMeta};
use super::pod::{Container, PodSpec, PodTemplateSpec, Probe};
use super::status::Cause;

fn is_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Why `s` is not a DNS-1123 label (63 chars of `[a-z0-9-]`, alphanumeric
/// at both ends), if it is not.
pub fn dns1123_label(s: &str) -> Option<String> {
    if s.is_empty() || s.len() > 63 {
        return Some("must be no more than 63 characters and not empty".into());
    }
    let ok = s.chars().all(|c| is_alnum(c) || c == '-')
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum);
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into()
    })
}

/// Why `s` is not a DNS-1123 subdomain (253 chars, dot-separated labels).
pub fn dns1123_subdomain(s: &str) -> Option<String> {
    if s.is_empty() || s.len() > 253 {
        return Some("must be no more than 253 characters and not empty".into());
    }
    let ok = s.chars().all(|c| is_alnum(c) || c == '-' || c == '.')
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum);
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into()
    })
}

/// Why `s` is not a DNS-1035 label (a DNS-1123 label starting with a letter).
pub fn dns1035_label(s: &str) -> Option<String> {
    dns1123_label(s).or_else(|| {
        (!s.starts_with(|c: char| c.is_ascii_lowercase())).then(|| {
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".into()
        })
    })
}

fn qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Why `key` is not a qualified name (`[prefix/]name`), as label and
/// annotation keys must be.
pub fn qualified_name(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && dns1123_subdomain(p).is_some()
    {
        return Some("prefix part must be a lowercase RFC 1123 subdomain".into());
    }
    (!qualified_name_part(name)).then(|| {
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into()
    })
}

/// Why `value` is not a label value (empty, or 63 chars of a qualified name part).
pub fn label_value(value: &str) -> Option<String> {
    (!(value.is_empty() || qualified_name_part(value))).then(|| {
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into()
    })
}

/// Errors of a label map at `path`.
pub fn labels(path: &str, labels: &BTreeMap<String, String>) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        if let Some(why) = qualified_name(k) {
            errs.push(Cause::invalid(path, k, &why));
        }
        if let Some(why) = label_value(v) {
            errs.push(Cause::invalid(path, v, &why));
        }
    }
    errs
}

/// Errors of an object's metadata: its name (checked by `name_check`),
/// namespace, labels, annotations and owner references.
pub fn meta(
    meta: &ObjectMeta,
    namespaced: bool,
    name_check: fn(&str) -> Option<String>,
) -> Vec<Cause> {
    let mut errs = Vec::new();
    if meta.name.is_empty() {
        errs.push(Cause::required("metadata.name"));
    } else if let Some(why) = name_check(&meta.name) {
        errs.push(Cause::invalid("metadata.name", &meta.name, &why));
    }
    if namespaced {
        if let Some(why) = dns1123_label(&meta.namespace) {
            errs.push(Cause::invalid("metadata.namespace", &meta.namespace, &why));
        }
    } else if !meta.namespace.is_empty() {
        errs.push(Cause::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    errs.extend(labels("metadata.labels", &meta.labels));
    let mut size = 0;
    for (k, v) in &meta.annotations {
        size += k.len() + v.len();
        if let Some(why) = qualified_name(&k.to_ascii_lowercase()) {
            errs.push(Cause::invalid("metadata.annotations", k, &why));
        }
    }
    if size > 256 * 1024 {
        errs.push(Cause::invalid(
            "metadata.annotations",
            size,
            "must have at most 262144 bytes",
        ));
    }
    for (i, r) in meta.owner_references.iter().enumerate() {
        let p = format!("metadata.ownerReferences[{i}]");
        for (field, value) in [
            ("apiVersion", &r.api_version),
            ("kind", &r.kind),
            ("name", &r.name),
            ("uid", &r.uid),
        ] {
            if value.is_empty() {
                errs.push(Cause::required(format!("{p}.{field}")));
            }
        }
    }
    if meta
        .owner_references
        .iter()
        .filter(|r| r.is_controller())
        .count()
        > 1
    {
        errs.push(Cause::invalid(
            "metadata.ownerReferences",
            "controller",
            "Only one reference can have Controller set to true",
        ));
    }
    errs
}

fn port_number(path: &str, port: i32, errs: &mut Vec<Cause>) {
    if !(1..=65535).contains(&port) {
        errs.push(Cause::invalid(
            path,
            port,
            "must be between 1 and 65535, inclusive",
        ));
    }
}

fn protocol(path: &str, proto: &str, errs: &mut Vec<Cause>) {
    if !proto.is_empty() && !matches!(proto, "TCP" | "UDP" | "SCTP") {
        errs.push(Cause::not_supported(path, proto, &["SCTP", "TCP", "UDP"]));
    }
}

/// Why `name` is not an IANA service name (a port name), if it is not.
pub fn port_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.chars().all(|c| is_alnum(c) || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    (!ok).then(|| {
        "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-), at most 15 characters, at least one letter, no hyphen at either end or next to another".into()
    })
}

fn int_or_port_name(path: &str, port: &IntOrString, errs: &mut Vec<Cause>) {
    match port {
        IntOrString::Int(n) => port_number(path, *n, errs),
        IntOrString::String(s) => {
            if let Some(why) = port_name(s) {
                errs.push(Cause::invalid(path, s, &why));
            }
        }
    }
}

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
            super::meta::map_query(&template.metadata.labels),
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

/// Errors of an apps/v1 label selector.
pub fn label_selector(path: &str, sel: &LabelSelector) -> Vec<Cause> {
    let mut errs = labels(&format!("{path}.matchLabels"), &sel.match_labels);
    if sel.is_empty() {
        errs.push(Cause::invalid(
            path,
            "{}",
            "empty selector is invalid for deployment and replica set",
        ));
    }
    for (i, r) in sel.match_expressions.iter().enumerate() {
        let rp = format!("{path}.matchExpressions[{i}]");
        if let Some(why) = qualified_name(&r.key) {
            errs.push(Cause::invalid(format!("{rp}.key"), &r.key, &why));
        }
        match r.operator.as_str() {
            "In" | "NotIn" if r.values.is_empty() => errs.push(Cause::required(format!(
                "{rp}.values: must be specified when `operator` is 'In' or 'NotIn'"
            ))),
            "Exists" | "DoesNotExist" if !r.values.is_empty() => errs.push(Cause::forbidden(
                format!("{rp}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errs.push(Cause::not_supported(
                format!("{rp}.operator"),
                other,
                &["In", "NotIn", "Exists", "DoesNotExist"],
            )),
        }
    }
    errs
}

/// Errors of a replica count.
pub fn replicas(path: &str, n: Option<i32>) -> Vec<Cause> {
    match n {
        Some(n) if n < 0 => vec![Cause::invalid(
            path,
            n,
            "must be greater than or equal to 0",
        )],
        _ => Vec::new(),
    }
}

/// Whether `ip` is inside the service range.
pub fn in_cidr(ip: std::net::Ipv4Addr, (net, bits): (std::net::Ipv4Addr, u8)) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(bits))
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// Errors of a service spec.
pub fn service_spec(spec: &super::service::ServiceSpec, config: &ApiConfig) -> Vec<Cause> {
    let mut errs = Vec::new();
    let kind = if spec.kind.is_empty() {
        "ClusterIP"
    } else {
        spec.kind.as_str()
    };
    if !matches!(kind, "ClusterIP" | "NodePort" | "LoadBalancer") {
        errs.push(Cause::not_supported(
            "spec.type",
            kind,
            &["ClusterIP", "NodePort", "LoadBalancer"],
        ));
    }
    let headless = spec.cluster_ip == "None";
    if spec.ports.is_empty() && !headless {
        errs.push(Cause::required("spec.ports"));
    }
    let mut names = HashSet::new();
    let mut seen = HashSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        if spec.ports.len() > 1 && p.name.is_empty() {
            errs.push(Cause::required(format!("{pp}.name")));
        }
        if !p.name.is_empty() {
            if let Some(why) = dns1123_label(&p.name) {
                errs.push(Cause::invalid(format!("{pp}.name"), &p.name, &why));
            } else if !names.insert(p.name.as_str()) {
                errs.push(Cause::duplicate(format!("{pp}.name"), &p.name));
            }
        }
        port_number(&format!("{pp}.port"), p.port, &mut errs);
        protocol(&format!("{pp}.protocol"), &p.protocol, &mut errs);
        let proto = if p.protocol.is_empty() {
            "TCP"
        } else {
            p.protocol.as_str()
        };
        if !seen.insert((p.port, proto.to_owned())) {
            errs.push(Cause::duplicate(
                pp.to_string(),
                &format!("{}/{proto}", p.port),
            ));
        }
        if let Some(t) = &p.target_port {
            int_or_port_name(&format!("{pp}.targetPort"), t, &mut errs);
        }
        if let Some(np) = p.node_port
            && np != 0
        {
            if kind == "ClusterIP" {
                errs.push(Cause::forbidden(
                    format!("{pp}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !config.node_ports.contains(&np) {
                errs.push(Cause::invalid(
                    format!("{pp}.nodePort"),
                    np,
                    &format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        config.node_ports.start(),
                        config.node_ports.end()
                    ),
                ));
            }
        }
    }
    if !spec.cluster_ip.is_empty() && !headless {
        match spec.cluster_ip.parse::<std::net::Ipv4Addr>() {
            Err(_) => errs.push(Cause::invalid(
                "spec.clusterIP",
                &spec.cluster_ip,
                "must be empty, 'None', or a valid IP address",
            )),
            Ok(ip) if !in_cidr(ip, config.service_cidr) => errs.push(Cause::invalid(
                "spec.clusterIP",
                &spec.cluster_ip,
                &format!(
                    "provided IP is not in the valid range. The range of valid IPs is {}/{}",
                    config.service_cidr.0, config.service_cidr.1
                ),
            )),
            Ok(_) => {}
        }
    }
    if headless && kind != "ClusterIP" {
        errs.push(Cause::invalid(
            "spec.clusterIP",
            "None",
            "may not be set to 'None' for LoadBalancer or NodePort services",
        ));
    }
    if !spec.session_affinity.is_empty()
        && !matches!(spec.session_affinity.as_str(), "None" | "ClientIP")
    {
        errs.push(Cause::not_supported(
            "spec.sessionAffinity",
            &spec.session_affinity,
            &["ClientIP", "None"],
        ));
    }
    let timeout = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    if let Some(t) = timeout {
        if spec.session_affinity != "ClientIP" {
            errs.push(Cause::invalid(
                "spec.sessionAffinityConfig",
                t,
                "must not be set when `sessionAffinity` is None",
            ));
        } else if !(1..=super::service::MAX_AFFINITY_TIMEOUT).contains(&t) {
            errs.push(Cause::invalid(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                t,
                "must be greater than 0 and less than 86400",
            ));
        }
    }
    for (i, ip) in spec.external_ips.iter().enumerate() {
        if ip.parse::<std::net::IpAddr>().is_err() {
            errs.push(Cause::invalid(
                format!("spec.externalIPs[{i}]"),
                ip,
                "must be a valid IP address",
            ));
        }
    }
    errs.extend(labels("spec.selector", &spec.selector));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123() {
        assert!(dns1123_label("redis-master").is_none());
        assert!(dns1123_label("Redis").is_some());
        assert!(dns1123_label("-a").is_some());
        assert!(dns1123_label(&"a".repeat(64)).is_some());
        assert!(dns1123_subdomain("a.b-c.d").is_none());
        assert!(dns1035_label("1abc").is_some());
        assert!(dns1035_label("abc1").is_none());
    }

    #[test]
    fn label_keys_and_values() {
        assert!(qualified_name("app").is_none());
        assert!(qualified_name("kubernetes.io/app-name").is_none());
        assert!(qualified_name("bad key").is_some());
        assert!(qualified_name("Bad_Prefix/x").is_some());
        assert!(label_value("").is_none());
        assert!(label_value("v1.2_x").is_none());
        assert!(label_value("-x").is_some());
    }

    #[test]
    fn affinity_timeouts_need_client_ip_and_a_range() {
        use super::super::service::{
            ClientIpConfig, ServicePort, ServiceSpec, SessionAffinityConfig,
        };
        let config = ApiConfig::default();
        let with = |affinity: &str, t: i32| ServiceSpec {
            ports: vec![ServicePort {
                port: 80,
                ..Default::default()
            }],
            session_affinity: affinity.into(),
            session_affinity_config: Some(SessionAffinityConfig {
                client_ip: Some(ClientIpConfig {
                    timeout_seconds: Some(t),
                }),
            }),
            ..Default::default()
        };
        assert!(service_spec(&with("ClientIP", 600), &config).is_empty());
        let errs = service_spec(&with("ClientIP", 0), &config);
        assert_eq!(
            errs[0].field,
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
        );
        let errs = service_spec(&with("None", 600), &config);
        assert_eq!(errs[0].field, "spec.sessionAffinityConfig");
    }

    #[test]
    fn cluster_ips_must_be_in_the_range() {
        let config = ApiConfig::default();
        let mut spec = super::super::service::ServiceSpec {
            ports: vec![super::super::service::ServicePort {
                port: 80,
                ..Default::default()
            }],
            cluster_ip: "10.0.3.4".into(),
            ..Default::default()
        };
        assert!(service_spec(&spec, &config).is_empty());
        spec.cluster_ip = "192.168.1.1".into();
        let errs = service_spec(&spec, &config);
        assert_eq!(errs[0].field, "spec.clusterIP");
        assert!(
            errs[0].message.contains("not in the valid range"),
            "{errs:?}"
        );
    }
}
