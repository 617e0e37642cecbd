//! The proxy's nftables table as data (chains with their rules, maps with
//! their elements, affinity sets), rendered from the service plans, and
//! the one `nft -f` transaction that turns what the kernel has into it.
//!
//! The shape is kube-proxy's nftables mode: a verdict map from
//! `VIP . protocol . port` to a chain per service port, which picks an
//! endpoint with `numgen random mod N` (after any ClientIP affinity hit)
//! and jumps to a chain per endpoint that DNATs to it. Services without
//! ready endpoints are in a second map that filter chains (prerouting,
//! output) use to reject new connections (so clients fail at once instead of timing out).
//!
//! The table is never deleted and recreated on a sync: chains are flushed
//! and refilled, gone ones deleted, sets added only when missing — so the
//! affinity sets keep their entries and established connections keep
//! their conntrack entries through every update.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::plan::{PlanError, PortPlan, ServicePlan};

/// The table the proxy owns (and no other).
pub const TABLE: &str = "herd-proxy";
/// The packet mark bit that asks the postrouting chain to masquerade.
pub const MASQ_MARK: u32 = 0x4000;
/// Element statements are split so no single line gets huge.
const ELEMENTS_PER_LINE: usize = 500;

/// One chain: its base-chain spec (hook, priority) if any, and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub spec: Option<&'static str>,
    pub rules: Vec<String>,
}

/// The whole table as the proxy wants it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: BTreeMap<String, Chain>,
    /// Named sets and maps: name → (declaration body, elements).
    pub sets: BTreeMap<String, (String, Vec<String>)>,
    /// Sets whose elements the kernel keeps (affinity): declared, never
    /// flushed.
    pub dynamic: BTreeSet<String>,
}

/// What is in the kernel's table, by name (from `nft -j list table`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
}

/// Where the proxy runs: the pod bridge's name and this machine's pod
/// subnet on it (when the cluster network runs here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub bridge: String,
    pub pod_subnet: Option<(Ipv4Addr, u8)>,
}

impl Host {
    fn on_bridge(&self, ip: Ipv4Addr) -> bool {
        self.pod_subnet
            .is_some_and(|net| crate::api::validation::in_cidr(ip, net))
    }
}

const BASE_CHAINS: &[(&str, &str, &str)] = &[
    (
        "nat-prerouting",
        "type nat hook prerouting priority dstnat; policy accept;",
        "jump services",
    ),
    (
        "nat-output",
        // `dstnat` names -100 only for prerouting.
        "type nat hook output priority -100; policy accept;",
        "jump services",
    ),
    // Rejected before routing (priority -90: after DNAT, so what is left
    // has no endpoint): a machine without a route to the service range
    // would otherwise answer "no route to host", or forward the packet
    // out of its default route.
    (
        "filter-prerouting",
        "type filter hook prerouting priority -90; policy accept;",
        "ct state new jump reject-check",
    ),
    (
        "filter-output",
        "type filter hook output priority -10; policy accept;",
        "ct state new jump reject-check",
    ),
];

fn chain_id(plan: &ServicePlan, port: &PortPlan) -> String {
    format!("{}/{}/{}", plan.id, port.proto.nft(), port.port)
}

fn ep_id(plan: &ServicePlan, port: &PortPlan, ep: SocketAddrV4) -> String {
    format!("{}/{}/{}", chain_id(plan, port), ep.ip(), ep.port())
}

/// Drops the plans whose VIP:port or node port another (earlier by name)
/// service already has: one bad object must not make the whole
/// transaction fail. Returns what was dropped, as errors to report.
pub fn resolve_conflicts(plans: &mut Vec<ServicePlan>) -> Vec<PlanError> {
    plans.sort_by(|a, b| a.id.cmp(&b.id));
    let mut vips: HashMap<(Ipv4Addr, &'static str, u16), String> = HashMap::new();
    let mut node_ports: HashMap<(&'static str, u16), String> = HashMap::new();
    let mut errors = Vec::new();
    plans.retain(|p| {
        let clash = p.ports.iter().find_map(|port| {
            let proto = port.proto.nft();
            if let Some(other) = vips.get(&(p.vip, proto, port.port)) {
                return Some((format!("{}:{}/{proto}", p.vip, port.port), other.clone()));
            }
            let np = port.node_port?;
            node_ports
                .get(&(proto, np))
                .map(|other| (format!("node port {np}/{proto}"), other.clone()))
        });
        if let Some((what, other)) = clash {
            errors.push(PlanError::Conflict {
                id: p.id.clone(),
                what,
                other,
            });
            return false;
        }
        for port in &p.ports {
            let proto = port.proto.nft();
            vips.insert((p.vip, proto, port.port), p.id.clone());
            if let Some(np) = port.node_port {
                node_ports.insert((proto, np), p.id.clone());
            }
        }
        true
    });
    errors
}

/// The table for `plans` (conflict-free, see [`resolve_conflicts`]).
pub fn ruleset(plans: &[ServicePlan], host: &Host) -> Ruleset {
    let mut r = Ruleset::default();
    for (name, spec, rule) in BASE_CHAINS {
        r.chains.insert(
            (*name).into(),
            Chain {
                spec: Some(spec),
                rules: vec![(*rule).into()],
            },
        );
    }
    r.chains.insert(
        "nat-postrouting".into(),
        Chain {
            spec: Some("type nat hook postrouting priority srcnat; policy accept;"),
            rules: vec![
                format!("meta mark & {MASQ_MARK:#x} == 0 return"),
                format!("meta mark set meta mark ^ {MASQ_MARK:#x}"),
                "masquerade fully-random".into(),
            ],
        },
    );
    let plain = |rules: Vec<String>| Chain { spec: None, rules };
    r.chains.insert(
        "services".into(),
        plain(vec![
            "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports".into(),
        ]),
    );
    r.chains.insert(
        "reject-check".into(),
        plain(vec![
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into(),
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports".into(),
            // A service's address on a port it does not have.
            "ip daddr @cluster-ips reject".into(),
        ]),
    );
    r.chains
        .insert("reject-chain".into(), plain(vec!["reject".into()]));
    r.chains.insert(
        "mark-for-masquerade".into(),
        plain(vec![format!("meta mark set meta mark | {MASQ_MARK:#x}")]),
    );
    let vip_map = "type ipv4_addr . inet_proto . inet_service : verdict;";
    let port_map = "type inet_proto . inet_service : verdict;";
    let (mut service_ips, mut node_ports) = (Vec::new(), Vec::new());
    let (mut no_eps, mut no_ep_node_ports) = (Vec::new(), Vec::new());
    let mut cluster_ips = BTreeSet::new();
    for plan in plans {
        cluster_ips.insert(plan.vip);
        for port in &plan.ports {
            let id = chain_id(plan, port);
            let proto = port.proto.nft();
            let key = format!("{} . {proto} . {}", plan.vip, port.port);
            if port.endpoints.is_empty() {
                no_eps.push(format!("{key} : goto reject-chain"));
                if let Some(np) = port.node_port {
                    no_ep_node_ports.push(format!("{proto} . {np} : goto reject-chain"));
                }
                continue;
            }
            service_ips.push(format!("{key} : goto svc-{id}"));
            if let Some(np) = port.node_port {
                node_ports.push(format!("{proto} . {np} : goto np-{id}"));
                r.chains.insert(
                    format!("np-{id}"),
                    plain(vec![
                        "jump mark-for-masquerade".into(),
                        format!("goto svc-{id}"),
                    ]),
                );
            }
            // Clients that are not pods on this machine's bridge (other
            // machines, the outside world through a route to the service
            // range) are masqueraded, so replies come back through here.
            let mut rules = vec![format!(
                "iifname != \"{}\" jump mark-for-masquerade",
                host.bridge
            )];
            let mut picks = Vec::new();
            for (i, ep) in port.endpoints.iter().enumerate() {
                let eid = ep_id(plan, port, *ep);
                let mut ep_rules = Vec::new();
                if host.on_bridge(*ep.ip()) {
                    // A pod reaching a pod on the same bridge through the
                    // VIP: the reply would be bridged straight back,
                    // past the un-DNAT, so it leaves with the bridge's
                    // address.
                    ep_rules.push(format!(
                        "iifname \"{}\" jump mark-for-masquerade",
                        host.bridge
                    ));
                }
                if let Some(timeout) = plan.affinity {
                    let set = format!("aff{timeout}-{eid}");
                    rules.push(format!("ip saddr @{set} goto ep-{eid}"));
                    ep_rules.push(format!("update @{set} {{ ip saddr }}"));
                    r.sets.insert(
                        set.clone(),
                        (
                            format!("type ipv4_addr; flags dynamic,timeout; timeout {timeout}s;"),
                            Vec::new(),
                        ),
                    );
                    r.dynamic.insert(set);
                }
                ep_rules.push(format!("meta l4proto {proto} dnat to {ep}"));
                r.chains.insert(format!("ep-{eid}"), plain(ep_rules));
                picks.push(format!("{i} : goto ep-{eid}"));
            }
            rules.push(format!(
                "numgen random mod {} vmap {{ {} }}",
                picks.len(),
                picks.join(", ")
            ));
            r.chains.insert(format!("svc-{id}"), plain(rules));
        }
    }
    r.sets
        .insert("service-ips".into(), (vip_map.into(), service_ips));
    r.sets
        .insert("service-nodeports".into(), (port_map.into(), node_ports));
    r.sets
        .insert("no-endpoint-services".into(), (vip_map.into(), no_eps));
    r.sets.insert(
        "no-endpoint-nodeports".into(),
        (port_map.into(), no_ep_node_ports),
    );
    r.sets.insert(
        "cluster-ips".into(),
        (
            "type ipv4_addr;".into(),
            cluster_ips.iter().map(Ipv4Addr::to_string).collect(),
        ),
    );
    r
}

/// Whether a set's declaration makes it a verdict map.
fn is_map(decl: &str) -> bool {
    decl.contains(": verdict")
}

/// The transaction that turns the table from `before` (what the proxy
/// last applied; `None`: unknown, so everything is rewritten) with
/// `existing` in the kernel into `want`. Empty when nothing changes.
pub fn transaction(want: &Ruleset, before: Option<&Ruleset>, existing: &Existing) -> String {
    let mut t = String::new();
    let same_chain = |name: &str, c: &Chain| {
        before.is_some_and(|b| b.chains.get(name) == Some(c)) && existing.chains.contains(name)
    };
    let same_set = |name: &str, s: &(String, Vec<String>)| {
        before.is_some_and(|b| b.sets.get(name) == Some(s)) && existing.sets.contains(name)
    };
    let changed_chains: Vec<(&String, &Chain)> = want
        .chains
        .iter()
        .filter(|(n, c)| !same_chain(n, c))
        .collect();
    let changed_sets: Vec<(&String, &(String, Vec<String>))> = want
        .sets
        .iter()
        .filter(|(n, s)| !want.dynamic.contains(*n) && !same_set(n, s))
        .collect();
    let new_dynamic: Vec<&String> = want
        .dynamic
        .iter()
        .filter(|n| !existing.sets.contains(*n))
        .collect();
    let gone_chains: Vec<&String> = existing
        .chains
        .iter()
        .filter(|n| !want.chains.contains_key(*n))
        .collect();
    let gone_sets: Vec<&String> = existing
        .sets
        .iter()
        .filter(|n| !want.sets.contains_key(*n))
        .collect();
    if changed_chains.is_empty()
        && changed_sets.is_empty()
        && new_dynamic.is_empty()
        && gone_chains.is_empty()
        && gone_sets.is_empty()
    {
        return t;
    }
    let _ = writeln!(t, "add table ip {TABLE}");
    // Declarations first (`add` of an existing object is a no-op), so
    // every rule below finds what it refers to.
    for (name, (decl, _)) in &want.sets {
        let kind = if is_map(decl) { "map" } else { "set" };
        let _ = writeln!(t, "add {kind} ip {TABLE} {name} {{ {decl} }}");
    }
    for (name, chain) in &changed_chains {
        match chain.spec {
            Some(spec) => {
                let _ = writeln!(t, "add chain ip {TABLE} {name} {{ {spec} }}");
            }
            None => {
                let _ = writeln!(t, "add chain ip {TABLE} {name}");
            }
        }
    }
    // Empty what changes or goes, so nothing refers to what is deleted.
    for (name, _) in &changed_chains {
        let _ = writeln!(t, "flush chain ip {TABLE} {name}");
    }
    for name in &gone_chains {
        let _ = writeln!(t, "flush chain ip {TABLE} {name}");
    }
    for (name, (decl, _)) in &changed_sets {
        let kind = if is_map(decl) { "map" } else { "set" };
        let _ = writeln!(t, "flush {kind} ip {TABLE} {name}");
    }
    for name in &gone_chains {
        let _ = writeln!(t, "delete chain ip {TABLE} {name}");
    }
    for name in &gone_sets {
        let kind = match before.and_then(|b| b.sets.get(*name)) {
            Some((decl, _)) if is_map(decl) => "map",
            Some(_) => "set",
            // Unknown (a full sync after a restart): gone sets are
            // affinity sets or maps of an older layout.
            None if name.starts_with("aff") => "set",
            None => "map",
        };
        let _ = writeln!(t, "delete {kind} ip {TABLE} {name}");
    }
    for (name, chain) in &changed_chains {
        for rule in &chain.rules {
            let _ = writeln!(t, "add rule ip {TABLE} {name} {rule}");
        }
    }
    for (name, (_, elements)) in &changed_sets {
        for chunk in elements.chunks(ELEMENTS_PER_LINE) {
            let _ = writeln!(
                t,
                "add element ip {TABLE} {name} {{ {} }}",
                chunk.join(", ")
            );
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::plan::Proto;

    fn host() -> Host {
        Host {
            bridge: "herd0".into(),
            pod_subnet: Some((Ipv4Addr::new(10, 244, 1, 0), 24)),
        }
    }

    fn web(endpoints: &[&str], affinity: Option<u32>) -> ServicePlan {
        ServicePlan {
            id: "default/web".into(),
            vip: Ipv4Addr::new(10, 0, 0, 7),
            ports: vec![PortPlan {
                name: String::new(),
                proto: Proto::Tcp,
                port: 80,
                node_port: Some(30080),
                endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
            }],
            affinity,
        }
    }

    #[test]
    fn a_service_port_spreads_over_its_endpoints() {
        let r = ruleset(
            &[web(&["10.244.1.2:8080", "10.244.2.2:8080"], None)],
            &host(),
        );
        let svc = &r.chains["svc-default/web/tcp/80"].rules;
        assert_eq!(
            svc.last().unwrap(),
            "numgen random mod 2 vmap { 0 : goto ep-default/web/tcp/80/10.244.1.2/8080, 1 : goto ep-default/web/tcp/80/10.244.2.2/8080 }"
        );
        assert_eq!(svc[0], "iifname != \"herd0\" jump mark-for-masquerade");
        // The local endpoint masquerades same-bridge clients; the remote one does not.
        let local = &r.chains["ep-default/web/tcp/80/10.244.1.2/8080"].rules;
        assert_eq!(local[0], "iifname \"herd0\" jump mark-for-masquerade");
        assert_eq!(local[1], "meta l4proto tcp dnat to 10.244.1.2:8080");
        let remote = &r.chains["ep-default/web/tcp/80/10.244.2.2/8080"].rules;
        assert_eq!(
            remote,
            &vec!["meta l4proto tcp dnat to 10.244.2.2:8080".to_owned()]
        );
        assert_eq!(
            r.sets["service-ips"].1,
            vec!["10.0.0.7 . tcp . 80 : goto svc-default/web/tcp/80"]
        );
        assert_eq!(
            r.sets["service-nodeports"].1,
            vec!["tcp . 30080 : goto np-default/web/tcp/80"]
        );
        assert!(r.sets["no-endpoint-services"].1.is_empty());
    }

    #[test]
    fn without_ready_endpoints_a_service_rejects() {
        let r = ruleset(&[web(&[], None)], &host());
        assert!(!r.chains.contains_key("svc-default/web/tcp/80"));
        assert!(r.sets["service-ips"].1.is_empty());
        assert_eq!(
            r.sets["no-endpoint-services"].1,
            vec!["10.0.0.7 . tcp . 80 : goto reject-chain"]
        );
        assert_eq!(
            r.sets["no-endpoint-nodeports"].1,
            vec!["tcp . 30080 : goto reject-chain"]
        );
        assert_eq!(r.sets["cluster-ips"].1, vec!["10.0.0.7"]);
    }

    #[test]
    fn client_ip_affinity_remembers_sources_per_endpoint() {
        let r = ruleset(&[web(&["10.244.2.2:8080"], Some(60))], &host());
        let set = "aff60-default/web/tcp/80/10.244.2.2/8080";
        assert!(r.dynamic.contains(set));
        assert_eq!(
            r.sets[set].0,
            "type ipv4_addr; flags dynamic,timeout; timeout 60s;"
        );
        let svc = &r.chains["svc-default/web/tcp/80"].rules;
        assert!(svc.contains(&format!(
            "ip saddr @{set} goto ep-default/web/tcp/80/10.244.2.2/8080"
        )));
        let ep = &r.chains["ep-default/web/tcp/80/10.244.2.2/8080"].rules;
        assert_eq!(ep[0], format!("update @{set} {{ ip saddr }}"));
    }

    #[test]
    fn conflicting_services_keep_the_first_by_name() {
        let mut other = web(&["10.244.1.2:80"], None);
        other.id = "default/alpha".into();
        let mut plans = vec![web(&["10.244.1.3:80"], None), other];
        let errors = resolve_conflicts(&mut plans);
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].id, "default/alpha");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("default/web"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn transactions_rewrite_only_what_changed_and_delete_what_went() {
        let h = host();
        let one = ruleset(&[web(&["10.244.2.2:8080"], Some(60))], &h);
        let full = transaction(&one, None, &Existing::default());
        assert!(full.starts_with("add table ip herd-proxy\n"), "{full}");
        assert!(full.contains("add chain ip herd-proxy nat-prerouting { type nat hook prerouting priority dstnat; policy accept; }"));
        assert!(full.contains("add set ip herd-proxy aff60-default/web/tcp/80/10.244.2.2/8080 { type ipv4_addr; flags dynamic,timeout; timeout 60s; }"));
        assert!(
            !full.contains("flush set ip herd-proxy aff60"),
            "affinity sets keep their entries"
        );
        assert!(
            !full.contains("delete table"),
            "the table is never recreated"
        );
        let existing = Existing {
            chains: one.chains.keys().cloned().collect(),
            sets: one.sets.keys().cloned().collect(),
        };
        assert_eq!(
            transaction(&one, Some(&one), &existing),
            "",
            "nothing changed"
        );
        // Scaling to another endpoint rewrites the service chain and the
        // new endpoint's, and deletes the old endpoint's chain and set.
        let two = ruleset(&[web(&["10.244.2.3:8080"], Some(60))], &h);
        let t = transaction(&two, Some(&one), &existing);
        assert!(
            t.contains("flush chain ip herd-proxy svc-default/web/tcp/80\n"),
            "{t}"
        );
        assert!(
            t.contains("delete chain ip herd-proxy ep-default/web/tcp/80/10.244.2.2/8080\n"),
            "{t}"
        );
        assert!(
            t.contains("delete set ip herd-proxy aff60-default/web/tcp/80/10.244.2.2/8080\n"),
            "{t}"
        );
        assert!(
            !t.contains("flush chain ip herd-proxy nat-prerouting"),
            "{t}"
        );
        let flush = t
            .find("flush chain ip herd-proxy ep-default/web/tcp/80/10.244.2.2/8080")
            .unwrap();
        let delete = t
            .find("delete chain ip herd-proxy ep-default/web/tcp/80/10.244.2.2/8080")
            .unwrap();
        assert!(flush < delete, "a chain is emptied before it is deleted");
        // A chain deleted behind the proxy's back is put back.
        let mut missing = existing.clone();
        missing.chains.remove("services");
        let t = transaction(&one, Some(&one), &missing);
        assert!(t.contains("add rule ip herd-proxy services ip daddr . meta l4proto . th dport vmap @service-ips"), "{t}");
    }
}
