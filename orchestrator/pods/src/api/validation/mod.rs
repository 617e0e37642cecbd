//! Validation as Kubernetes does it, for the fields herd implements:
//! names, labels, selectors and metadata here; pod specs, ports and
//! services in their own files. Every error is a [`Cause`] naming the
//! field path.

mod pod;
mod ports;
mod service;

pub use pod::{pod_spec, template};
pub use ports::port_name;
pub use service::{in_cidr, service_spec};

use std::collections::BTreeMap;

use super::meta::{LabelSelector, ObjectMeta};
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
}
