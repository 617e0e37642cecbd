//! Host ports (`ports[].hostPort`): a pod's port published on the node's
//! addresses, the way kubenet's hostport manager and the CNI `portmap`
//! plugin do it. The kubelet binds each host port on the node and holds
//! the socket for the pod's life, so nothing else on the machine can take
//! the port meanwhile and a port something else already holds is named
//! at once; one nftables table, `ip herd-hostports`, DNATs the node's
//! addresses' port to the pod's address and container port.
//!
//! The sockets are bound, never listened on, and without `SO_REUSEADDR`:
//! a bound socket reserves the port against every later `bind`, while a
//! connection to `localhost:PORT` (which the DNAT leaves alone: the
//! kernel drops loopback-sourced packets routed to a pod) is refused at
//! once instead of hanging in a backlog nobody accepts from.
//!
//! The table is rewritten whole, in one `nft -f` transaction, whenever the
//! claims change; DNAT is stateless here and established connections keep
//! their conntrack entries. After an agent restart it is left as the last
//! agent wrote it until every running pod with host ports has claimed
//! them again (see [`HostPorts::hold_until`]).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, socket};

use super::Kubelet;
use crate::api::Pod;
use crate::proxy::nft::{Nft, NftError};

/// The table the kubelet owns (and no other).
pub const TABLE: &str = "herd-hostports";

/// A transport a host port can be published for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
    fn api(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

/// One published port of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mapping {
    pub proto: Proto,
    pub host_port: u16,
    /// Only this node address (`hostIP`); every local address when `None`.
    pub host_ip: Option<Ipv4Addr>,
    pub container_port: u16,
}

impl std::fmt::Display for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(f, "{}/{}", self.host_port, self.proto.api())
    }
}

/// Why a pod cannot have its host ports.
#[derive(Debug, thiserror::Error)]
pub enum HostPortError {
    /// Another pod on this node holds it: the pod is rejected, as
    /// Kubernetes' kubelet rejects it (its scheduler would not have put it here).
    #[error("host port {port} is taken by pod {by}")]
    Taken { port: Mapping, by: String },
    /// Something else on the machine has it open: the pod waits and the
    /// kubelet tries again.
    #[error("cannot open host port {port}: {source}")]
    InUse {
        port: Mapping,
        #[source]
        source: nix::Error,
    },
    /// A port the spec allows but the node cannot publish.
    #[error("host port {0}: {1}")]
    Unsupported(String, &'static str),
}

/// The host ports of `pod`, parsed (validation already checked ranges).
pub fn mappings(pod: &Pod) -> Result<Vec<Mapping>, HostPortError> {
    let mut out = Vec::new();
    for p in pod.spec.containers.iter().flat_map(|c| &c.ports) {
        let Some(hp) = p.host_port.filter(|hp| *hp > 0) else {
            continue;
        };
        let what = format!("{hp}/{}", p.protocol);
        let proto = match p.protocol.as_str() {
            "" | "TCP" => Proto::Tcp,
            "UDP" => Proto::Udp,
            _ => return Err(HostPortError::Unsupported(what, "only TCP and UDP")),
        };
        let host_ip = match p.host_ip.as_str() {
            "" | "0.0.0.0" => None,
            ip => match ip.parse::<Ipv4Addr>() {
                Ok(ip) => Some(ip),
                Err(_) => return Err(HostPortError::Unsupported(what, "hostIP is not IPv4")),
            },
        };
        let (Ok(host_port), Ok(container_port)) =
            (u16::try_from(hp), u16::try_from(p.container_port))
        else {
            return Err(HostPortError::Unsupported(what, "port out of range"));
        };
        out.push(Mapping {
            proto,
            host_port,
            host_ip,
            container_port,
        });
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// What one pod holds.
struct Claim {
    /// `namespace/name`, for the message another pod gets.
    pod: String,
    mappings: Vec<Mapping>,
    /// Where the DNAT goes; `None` until the sandbox has its address (and
    /// for host-network pods, whose app binds the port itself).
    target: Option<Ipv4Addr>,
    _sockets: Vec<OwnedFd>,
}

/// The node's host-port claims and the table made from them.
#[derive(Default)]
pub struct HostPorts {
    claims: Mutex<BTreeMap<String, Claim>>,
    /// Pods (by uid) still to claim before the table may be rewritten.
    held: Mutex<Option<HashSet<String>>>,
    /// The last transaction applied, so an unchanged table is not re-sent.
    applied: tokio::sync::Mutex<Option<String>>,
    nft: Nft,
}

/// Binds `m` the way a server on the node would, without `SO_REUSEADDR`.
fn reserve(m: &Mapping) -> Result<OwnedFd, nix::Error> {
    let ty = match m.proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None)?;
    let addr = SocketAddrV4::new(m.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), m.host_port);
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(addr),
    )?;
    Ok(fd)
}

impl HostPorts {
    /// Keeps the table as an earlier agent left it until each of `uids`
    /// has claimed or released its ports (or [`Self::release_hold`]).
    pub fn hold_until(&self, mut uids: HashSet<String>) {
        // Those that claimed before the hold began need not again.
        uids.retain(|u| {
            !self
                .claims
                .lock()
                .expect("host port claims")
                .contains_key(u)
        });
        *self.held.lock().expect("host port hold") = (!uids.is_empty()).then_some(uids);
    }

    /// Ends the hold whatever is left of it.
    pub fn release_hold(&self) {
        self.held.lock().expect("host port hold").take();
    }

    fn settled(&self, uid: &str) {
        let mut held = self.held.lock().expect("host port hold");
        if let Some(set) = held.as_mut() {
            set.remove(uid);
            if set.is_empty() {
                *held = None;
            }
        }
    }

    /// Reserves `mappings` for pod `uid` (nothing to do when it holds them
    /// already). `bind` is false for host-network pods: their app binds the
    /// port itself, the claim only keeps other pods off it.
    pub fn claim(
        &self,
        uid: &str,
        pod: &str,
        mappings: &[Mapping],
        bind: bool,
    ) -> Result<(), HostPortError> {
        let mut claims = self.claims.lock().expect("host port claims");
        if claims.get(uid).is_some_and(|c| c.mappings == mappings) {
            drop(claims);
            self.settled(uid);
            return Ok(());
        }
        claims.remove(uid);
        for m in mappings {
            let clash = claims.values().find(|c| {
                c.mappings.iter().any(|o| {
                    o.proto == m.proto
                        && o.host_port == m.host_port
                        && (o.host_ip.is_none() || m.host_ip.is_none() || o.host_ip == m.host_ip)
                })
            });
            if let Some(c) = clash {
                return Err(HostPortError::Taken {
                    port: *m,
                    by: c.pod.clone(),
                });
            }
        }
        let mut sockets = Vec::new();
        if bind {
            for m in mappings {
                sockets
                    .push(reserve(m).map_err(|source| HostPortError::InUse { port: *m, source })?);
            }
        }
        claims.insert(
            uid.to_owned(),
            Claim {
                pod: pod.to_owned(),
                mappings: mappings.to_vec(),
                target: None,
                _sockets: sockets,
            },
        );
        drop(claims);
        self.settled(uid);
        Ok(())
    }

    /// Points pod `uid`'s ports at its address; whether that changed.
    pub fn target(&self, uid: &str, ip: Ipv4Addr) -> bool {
        let mut claims = self.claims.lock().expect("host port claims");
        match claims.get_mut(uid) {
            Some(c) if c.target != Some(ip) => {
                c.target = Some(ip);
                true
            }
            _ => false,
        }
    }

    /// Gives up what pod `uid` held; whether it held anything.
    pub fn release(&self, uid: &str) -> bool {
        self.settled(uid);
        self.claims
            .lock()
            .expect("host port claims")
            .remove(uid)
            .is_some()
    }

    /// Releases every pod's claim but those `keep` names; whether any went.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> bool {
        let mut claims = self.claims.lock().expect("host port claims");
        let before = claims.len();
        claims.retain(|uid, _| keep(uid));
        before != claims.len()
    }

    /// Makes the kernel's table match the claims (`force`: even when the
    /// last transaction was the same, to repair rules deleted by hand).
    /// Nothing while a hold lasts.
    pub async fn apply(&self, force: bool) -> Result<(), NftError> {
        if self.held.lock().expect("host port hold").is_some() {
            return Ok(());
        }
        let text = {
            let claims = self.claims.lock().expect("host port claims");
            render(
                claims
                    .values()
                    .filter_map(|c| Some((c.target?, &c.mappings[..]))),
            )
        };
        let mut applied = self.applied.lock().await;
        // Repairing a table that should not exist would only delete it again.
        let publishes = text.contains('{');
        if applied.as_deref() == Some(text.as_str()) && (!force || !publishes) {
            return Ok(());
        }
        self.nft.apply(&text).await?;
        *applied = Some(text);
        Ok(())
    }
}

/// The transaction that replaces the table by one publishing `targets`
/// (no table at all when there is nothing to publish).
pub fn render<'a>(targets: impl Iterator<Item = (Ipv4Addr, &'a [Mapping])>) -> String {
    let mut dnat = String::new();
    let mut hairpin = String::new();
    for (ip, mappings) in targets {
        for m in mappings {
            let p = m.proto.nft();
            let to = m.container_port;
            let only = m
                .host_ip
                .map(|h| format!("ip daddr {h} "))
                .unwrap_or_default();
            let _ = writeln!(
                dnat,
                "    {only}{p} dport {} dnat to {ip}:{to}",
                m.host_port
            );
            // A pod reaching its own host port: without the masquerade its
            // replies would go to itself directly and never be un-NATed.
            let _ = writeln!(
                hairpin,
                "    ip saddr {ip} ip daddr {ip} {p} dport {to} masquerade"
            );
        }
    }
    let mut out = format!("add table ip {TABLE}\ndelete table ip {TABLE}\n");
    if dnat.is_empty() {
        return out;
    }
    let _ = write!(
        out,
        "table ip {TABLE} {{\n\
         \x20 chain prerouting {{\n\
         \x20   type nat hook prerouting priority dstnat; policy accept;\n\
         \x20   fib daddr type local jump ports\n\
         \x20 }}\n\
         \x20 chain output {{\n\
         \x20   type nat hook output priority -100; policy accept;\n\
         \x20   ip daddr != 127.0.0.0/8 fib daddr type local jump ports\n\
         \x20 }}\n\
         \x20 chain ports {{\n{dnat}\x20 }}\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         {hairpin}\x20 }}\n\
         }}\n"
    );
    out
}

/// What a pod's sync does about its host ports.
pub(super) enum Admission {
    /// Held (or none asked for): go on.
    Admitted,
    /// Held by something outside the kubelet: wait, try again.
    Wait(String),
    /// The pod cannot run here: it fails, as Kubernetes' kubelet fails it.
    Reject {
        reason: &'static str,
        message: String,
    },
}

impl Kubelet {
    /// Claims `pod`'s host ports before its sandbox starts, or again for a
    /// pod adopted after an agent restart (`running`: then a port lost
    /// meanwhile is logged and the pod left running).
    pub(super) fn admit_host_ports(&self, pod: &Pod, running: bool) -> Admission {
        let uid = &pod.metadata.uid;
        let name = format!("{}/{}", pod.metadata.namespace, pod.metadata.name);
        let bind = pod.spec.host_network != Some(true);
        let claimed = mappings(pod).and_then(|m| {
            if m.is_empty() {
                return Ok(());
            }
            self.host_ports.claim(uid, &name, &m, bind)
        });
        match claimed {
            Ok(()) => Admission::Admitted,
            Err(e) if running => {
                tracing::warn!(pod = %name, "a running pod's host port: {e}");
                Admission::Admitted
            }
            Err(e @ HostPortError::InUse { .. }) => Admission::Wait(e.to_string()),
            Err(e @ HostPortError::Taken { .. }) => Admission::Reject {
                reason: "NodePorts",
                message: format!("node(s) didn't have free ports for the requested pod ports: {e}"),
            },
            Err(e @ HostPortError::Unsupported(..)) => Admission::Reject {
                reason: "UnsupportedHostPort",
                message: e.to_string(),
            },
        }
    }

    /// Points pod `uid`'s host ports (if any) at its address.
    pub(super) async fn publish_host_ports(&self, uid: &str, ip: Ipv4Addr) {
        if self.host_ports.target(uid, ip) {
            self.apply_host_ports(false).await;
        }
    }

    /// Frees pod `uid`'s host ports (if any) and unpublishes them.
    pub(super) async fn release_host_ports(&self, uid: &str) {
        if self.host_ports.release(uid) {
            self.apply_host_ports(false).await;
        }
    }

    /// Applies the table; a failure is logged and the next change or the
    /// periodic repair tries again.
    pub(super) async fn apply_host_ports(&self, force: bool) {
        if let Err(e) = self.host_ports.apply(force).await {
            tracing::warn!("publishing host ports: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(port: u16, ip: Option<Ipv4Addr>) -> Mapping {
        Mapping {
            proto: Proto::Tcp,
            host_port: port,
            host_ip: ip,
            container_port: 80,
        }
    }

    /// A port no one holds on this machine right now.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn a_port_another_pod_holds_is_refused_with_its_name() {
        let hp = HostPorts::default();
        let port = free_port();
        hp.claim("u1", "default/a", &[m(port, None)], true).unwrap();
        // Again for the same pod: already held, nothing to do.
        hp.claim("u1", "default/a", &[m(port, None)], true).unwrap();
        let e = hp
            .claim(
                "u2",
                "default/b",
                &[m(port, Some(Ipv4Addr::LOCALHOST))],
                true,
            )
            .unwrap_err();
        assert!(
            matches!(&e, HostPortError::Taken { by, .. } if by == "default/a"),
            "{e}"
        );
        assert!(
            e.to_string().contains(&format!("127.0.0.1:{port}/TCP")),
            "{e}"
        );
        assert!(hp.release("u1"));
        hp.claim("u2", "default/b", &[m(port, None)], true).unwrap();
    }

    #[test]
    fn a_port_held_outside_the_kubelet_is_named_and_a_claim_holds_it() {
        let outside = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = outside.local_addr().unwrap().port();
        let hp = HostPorts::default();
        let e = hp
            .claim("u1", "default/a", &[m(port, None)], true)
            .unwrap_err();
        assert!(matches!(e, HostPortError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("in use"), "{e}");
        drop(outside);
        hp.claim("u1", "default/a", &[m(port, None)], true).unwrap();
        // Now a server on the machine cannot have it, SO_REUSEADDR or not.
        assert!(std::net::TcpListener::bind(("0.0.0.0", port)).is_err());
        hp.release("u1");
        std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    }

    #[test]
    fn the_table_dnats_each_port_and_masquerades_hairpins() {
        let ip: Ipv4Addr = "10.244.1.5".parse().unwrap();
        let maps = [
            m(8080, None),
            Mapping {
                proto: Proto::Udp,
                host_port: 5353,
                host_ip: Some("192.168.1.2".parse().unwrap()),
                container_port: 53,
            },
        ];
        let t = render([(ip, &maps[..])].into_iter());
        assert!(t.starts_with("add table ip herd-hostports\ndelete table ip herd-hostports\n"));
        assert!(t.contains("tcp dport 8080 dnat to 10.244.1.5:80\n"), "{t}");
        assert!(
            t.contains("ip daddr 192.168.1.2 udp dport 5353 dnat to 10.244.1.5:53\n"),
            "{t}"
        );
        assert!(t.contains("ip saddr 10.244.1.5 ip daddr 10.244.1.5 tcp dport 80 masquerade"));
        assert_eq!(
            render(std::iter::empty()),
            "add table ip herd-hostports\ndelete table ip herd-hostports\n"
        );
    }

    #[test]
    fn a_hold_keeps_the_table_until_every_pod_claimed() {
        let hp = HostPorts::default();
        // u0 claimed before the hold began: not waited for.
        hp.claim("u0", "default/z", &[m(free_port(), None)], false)
            .unwrap();
        hp.hold_until(HashSet::from([
            "u0".to_owned(),
            "u1".to_owned(),
            "u2".to_owned(),
        ]));
        // Claiming again what it holds counts as claiming.
        let port = free_port();
        hp.claim("u1", "default/a", &[m(port, None)], false)
            .unwrap();
        hp.claim("u1", "default/a", &[m(port, None)], false)
            .unwrap();
        assert!(hp.held.lock().unwrap().is_some());
        hp.release("u2");
        assert!(hp.held.lock().unwrap().is_none());
    }
}
