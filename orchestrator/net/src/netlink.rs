//! The kernel's side of the network, over rtnetlink (no `ip` commands):
//! links (the pod bridge, the VXLAN device), addresses, routes tagged as
//! herd's, neighbour and FDB entries, and IP forwarding.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourFlags, NeighbourState};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkBridge, LinkVxlan, RouteMessageBuilder};
use tokio::task::JoinHandle;

use crate::cidr::Ipv4Net;

/// The routing protocol number herd's routes carry (`ip route` shows
/// `proto 104`): how herd tells its routes from anyone else's.
pub const ROUTE_PROTOCOL: u8 = 104;

const EEXIST: i32 = -libc::EEXIST;
const ENOENT: i32 = -libc::ENOENT;
const ESRCH: i32 = -libc::ESRCH;

/// Why a kernel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("opening a netlink socket: {0}")]
    Open(std::io::Error),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no network interface named {0}")]
    NoLink(String),
    #[error("{path}: {source}")]
    Sysctl {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let what = what.into();
    move |source| KernelError::Netlink { what, source }
}

fn code(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code()),
        _ => None,
    }
}

/// A link's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mtu: u32,
    pub mac: Vec<u8>,
}

/// A route in the main table to a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub protocol: RouteProtocol,
}

impl Route {
    pub fn is_herds(&self) -> bool {
        self.protocol == RouteProtocol::Other(ROUTE_PROTOCOL)
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev #{oif}")?;
        }
        write!(f, " proto {:?}", self.protocol)
    }
}

/// What adding a route did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Created,
    /// A route to that network already existed (whose: ask [`Kernel::routes_to`]).
    Existed,
}

/// A netlink connection; its socket task stops when this drops.
pub struct Kernel {
    handle: Handle,
    connection: JoinHandle<()>,
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn link_of(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        mtu: 1500,
        mac: Vec::new(),
    };
    for a in msg.attributes {
        match a {
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::Address(mac) => link.mac = mac,
            _ => {}
        }
    }
    link
}

fn route_of(msg: &RouteMessage) -> Option<Route> {
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    Some(Route {
        dst: Ipv4Net::containing(dst, msg.header.destination_prefix_length),
        gateway,
        oif,
        protocol: msg.header.protocol,
    })
}

impl Kernel {
    /// A connection in the calling thread's network namespace.
    pub fn new() -> Result<Kernel, KernelError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(KernelError::Open)?;
        Ok(Kernel {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    /// The link named `name`, if it exists.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, KernelError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(l) => Ok(l.map(link_of)),
            Err(e) if matches!(code(&e), Some(c) if c == -libc::ENODEV) => Ok(None),
            Err(e) => Err(nl(format!("looking up link {name}"))(e)),
        }
    }

    async fn must_link(&self, name: &str) -> Result<Link, KernelError> {
        self.link(name)
            .await?
            .ok_or_else(|| KernelError::NoLink(name.to_owned()))
    }

    /// The IPv4 addresses on link `index`, with their prefix lengths.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, KernelError> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing addresses"))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.index == index)
            .flat_map(|m| {
                m.attributes.iter().filter_map(move |a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip))
                    | AddressAttribute::Address(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect())
    }

    /// Makes `addr/len` the only IPv4 address of link `index`; returns the
    /// addresses it removed.
    pub async fn set_only_address(
        &self,
        index: u32,
        addr: Ipv4Addr,
        len: u8,
    ) -> Result<Vec<(Ipv4Addr, u8)>, KernelError> {
        let have = self.addresses(index).await?;
        let mut removed = Vec::new();
        for (a, l) in &have {
            if (*a, *l) != (addr, len) {
                let msgs: Vec<_> = self
                    .handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .set_address_filter(IpAddr::V4(*a))
                    .execute()
                    .try_collect()
                    .await
                    .map_err(nl("listing addresses"))?;
                for m in msgs {
                    self.handle
                        .address()
                        .del(m)
                        .execute()
                        .await
                        .map_err(nl(format!("removing {a}/{l}")))?;
                }
                removed.push((*a, *l));
            }
        }
        if !have.contains(&(addr, len)) {
            match self
                .handle
                .address()
                .add(index, IpAddr::V4(addr), len)
                .execute()
                .await
            {
                Err(e) if code(&e) != Some(EEXIST) => {
                    return Err(nl(format!("adding {addr}/{len}"))(e));
                }
                _ => {}
            }
        }
        Ok(removed)
    }

    /// The bridge `name` (created if missing), up, with MTU `mtu`.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<Link, KernelError> {
        if self.link(name).await?.is_none() {
            match self
                .handle
                .link()
                .add(LinkBridge::new(name).mtu(mtu).build())
                .execute()
                .await
            {
                Err(e) if code(&e) != Some(EEXIST) => {
                    return Err(nl(format!("creating bridge {name}"))(e));
                }
                _ => {}
            }
        }
        let link = self.must_link(name).await?;
        self.set_up(link.index, Some(mtu), name).await?;
        self.must_link(name).await
    }

    async fn set_up(&self, index: u32, mtu: Option<u32>, name: &str) -> Result<(), KernelError> {
        let mut msg = rtnetlink::LinkUnspec::new_with_index(index).up();
        if let Some(mtu) = mtu {
            msg = msg.mtu(mtu);
        }
        self.handle
            .link()
            .set(msg.build())
            .execute()
            .await
            .map_err(nl(format!("bringing {name} up")))
    }

    /// The VXLAN device `name` (created if missing): `vni`, UDP `port`,
    /// sending from `local` on link `dev`, no learning (herd writes every
    /// FDB entry), up, with MTU `mtu`.
    pub async fn ensure_vxlan(
        &self,
        name: &str,
        vni: u32,
        port: u16,
        local: Ipv4Addr,
        dev: u32,
        mtu: u32,
    ) -> Result<Link, KernelError> {
        if self.link(name).await?.is_none() {
            let msg = LinkVxlan::new(name, vni)
                .dev(dev)
                .port(port)
                .local(local)
                .learning(false)
                .mtu(mtu)
                .build();
            match self.handle.link().add(msg).execute().await {
                Err(e) if code(&e) != Some(EEXIST) => {
                    return Err(nl(format!(
                        "creating VXLAN device {name} (VNI {vni}, port {port})"
                    ))(e));
                }
                _ => {}
            }
        }
        let link = self.must_link(name).await?;
        self.set_up(link.index, Some(mtu), name).await?;
        self.must_link(name).await
    }

    /// Deletes link `name` if it exists.
    pub async fn delete_link(&self, name: &str) -> Result<(), KernelError> {
        if let Some(l) = self.link(name).await? {
            self.handle
                .link()
                .del(l.index)
                .execute()
                .await
                .map_err(nl(format!("deleting {name}")))?;
        }
        Ok(())
    }

    fn route(dst: Ipv4Net, gateway: Ipv4Addr, oif: u32, onlink: bool) -> RouteMessage {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .gateway(gateway)
            .output_interface(oif)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .scope(RouteScope::Universe);
        if onlink {
            b = b.onlink();
        }
        b.build()
    }

    /// Adds herd's route to `dst` via `gateway` on link `oif`, unless a
    /// route to `dst` exists already.
    pub async fn add_route(
        &self,
        dst: Ipv4Net,
        gateway: Ipv4Addr,
        oif: u32,
        onlink: bool,
    ) -> Result<Added, KernelError> {
        match self
            .handle
            .route()
            .add(Self::route(dst, gateway, oif, onlink))
            .execute()
            .await
        {
            Ok(()) => Ok(Added::Created),
            Err(e) if code(&e) == Some(EEXIST) => Ok(Added::Existed),
            Err(e) => Err(nl(format!("adding route {dst} via {gateway}"))(e)),
        }
    }

    /// Replaces whatever route to `dst` by herd's.
    pub async fn replace_route(
        &self,
        dst: Ipv4Net,
        gateway: Ipv4Addr,
        oif: u32,
        onlink: bool,
    ) -> Result<(), KernelError> {
        self.handle
            .route()
            .add(Self::route(dst, gateway, oif, onlink))
            .replace()
            .execute()
            .await
            .map_err(nl(format!("replacing route {dst} via {gateway}")))
    }

    /// Every IPv4 route of the main table.
    pub async fn routes(&self) -> Result<Vec<Route>, KernelError> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing routes"))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.table == 254)
            .filter_map(route_of)
            .collect())
    }

    /// The routes to exactly `dst`.
    pub async fn routes_to(&self, dst: Ipv4Net) -> Result<Vec<Route>, KernelError> {
        Ok(self
            .routes()
            .await?
            .into_iter()
            .filter(|r| r.dst == dst)
            .collect())
    }

    /// Deletes `route`; one already gone is fine.
    pub async fn delete_route(&self, route: &Route) -> Result<(), KernelError> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.dst.addr(), route.dst.prefix_len())
            .protocol(route.protocol);
        if let Some(gw) = route.gateway {
            b = b.gateway(gw);
        }
        if let Some(oif) = route.oif {
            b = b.output_interface(oif);
        }
        match self.handle.route().del(b.build()).execute().await {
            Err(e) if !matches!(code(&e), Some(ESRCH) | Some(ENOENT)) => {
                Err(nl(format!("deleting route {route}"))(e))
            }
            _ => Ok(()),
        }
    }

    /// A permanent neighbour entry `ip` → `mac` on link `dev` (replaced).
    pub async fn set_neighbour(
        &self,
        dev: u32,
        ip: Ipv4Addr,
        mac: &[u8],
    ) -> Result<(), KernelError> {
        self.handle
            .neighbours()
            .add(dev, IpAddr::V4(ip))
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("setting neighbour {ip}")))
    }

    /// A permanent FDB entry on VXLAN link `dev`: frames for `mac` go to
    /// `remote` (replaced).
    pub async fn set_fdb(&self, dev: u32, mac: &[u8], remote: Ipv4Addr) -> Result<(), KernelError> {
        self.handle
            .neighbours()
            .add_bridge(dev, mac)
            .destination(IpAddr::V4(remote))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("setting FDB entry to {remote}")))
    }

    /// Removes the neighbour entry of `ip` and the FDB entry of `mac` on
    /// link `dev`; entries already gone are fine.
    pub async fn delete_vxlan_peer(
        &self,
        dev: u32,
        ip: Ipv4Addr,
        mac: &[u8],
        remote: Ipv4Addr,
    ) -> Result<(), KernelError> {
        let mut neigh = rtnetlink::packet_route::neighbour::NeighbourMessage::default();
        neigh.header.family = rtnetlink::packet_route::AddressFamily::Inet;
        neigh.header.ifindex = dev;
        neigh.attributes.push(
            rtnetlink::packet_route::neighbour::NeighbourAttribute::Destination(
                rtnetlink::packet_route::neighbour::NeighbourAddress::Inet(ip),
            ),
        );
        let mut fdb = rtnetlink::packet_route::neighbour::NeighbourMessage::default();
        fdb.header.family = rtnetlink::packet_route::AddressFamily::Bridge;
        fdb.header.ifindex = dev;
        fdb.header.flags = NeighbourFlags::Own;
        fdb.attributes.push(
            rtnetlink::packet_route::neighbour::NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
        );
        fdb.attributes.push(
            rtnetlink::packet_route::neighbour::NeighbourAttribute::Destination(
                rtnetlink::packet_route::neighbour::NeighbourAddress::Inet(remote),
            ),
        );
        for (what, msg) in [("neighbour", neigh), ("FDB entry", fdb)] {
            match self.handle.neighbours().del(msg).execute().await {
                Err(e) if !matches!(code(&e), Some(ENOENT) | Some(ESRCH)) => {
                    return Err(nl(format!("deleting {what} of {ip}"))(e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Turns IPv4 forwarding on (this network namespace).
pub async fn enable_forwarding() -> Result<(), KernelError> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    tokio::fs::write(path, b"1\n")
        .await
        .map_err(|source| KernelError::Sysctl {
            path: path.into(),
            source,
        })
}

/// Formats a MAC as `aa:bb:…`.
pub fn mac_string(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:…` (six bytes).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    parts.try_into().ok()
}

impl Kernel {
    /// The name of the link carrying IPv4 address `ip`.
    pub async fn link_with_address(&self, ip: Ipv4Addr) -> Result<Option<String>, KernelError> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_address_filter(IpAddr::V4(ip))
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing addresses"))?;
        let Some(index) = msgs
            .iter()
            .find(|m| {
                m.attributes.iter().any(|a| {
                    matches!(a, AddressAttribute::Local(IpAddr::V4(a)) | AddressAttribute::Address(IpAddr::V4(a)) if *a == ip)
                })
            })
            .map(|m| m.header.index)
        else {
            return Ok(None);
        };
        let mut links = self.handle.link().get().match_index(index).execute();
        let msg = links
            .try_next()
            .await
            .map_err(nl(format!("looking up link #{index}")))?;
        Ok(msg.and_then(|m| {
            m.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n),
                _ => None,
            })
        }))
    }
}

impl Kernel {
    /// Brings link `name` up.
    pub async fn link_up(&self, name: &str) -> Result<Link, KernelError> {
        let link = self.must_link(name).await?;
        self.set_up(link.index, None, name).await?;
        Ok(link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip() {
        let mac = [0x52, 0x54, 0, 0x77, 0, 0x0a];
        assert_eq!(mac_string(&mac), "52:54:00:77:00:0a");
        assert_eq!(parse_mac("52:54:00:77:00:0a"), Some(mac));
        assert_eq!(parse_mac("52:54:00:77:00"), None);
        assert_eq!(parse_mac("zz:54:00:77:00:0a"), None);
    }
}
