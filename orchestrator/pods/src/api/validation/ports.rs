//! Port numbers, protocols and IANA port names (containers' and
//! services' ports alike).

use super::is_alnum;
use crate::api::meta::IntOrString;
use crate::api::status::Cause;

pub(super) fn port_number(path: &str, port: i32, errs: &mut Vec<Cause>) {
    if !(1..=65535).contains(&port) {
        errs.push(Cause::invalid(
            path,
            port,
            "must be between 1 and 65535, inclusive",
        ));
    }
}

pub(super) fn protocol(path: &str, proto: &str, errs: &mut Vec<Cause>) {
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

pub(super) fn int_or_port_name(path: &str, port: &IntOrString, errs: &mut Vec<Cause>) {
    match port {
        IntOrString::Int(n) => port_number(path, *n, errs),
        IntOrString::String(s) => {
            if let Some(why) = port_name(s) {
                errs.push(Cause::invalid(path, s, &why));
            }
        }
    }
}
