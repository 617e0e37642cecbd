//! IPv6 router advertisements on the lab bridge. iPXE waits about 13 s for
//! IPv6 autoconfiguration on a link where no router answers; one RA (router
//! lifetime 0: "I am not your default router", no prefixes) ends that wait
//! at once (DHCP-to-script 18.5 s → 5.4 s, notes/boot-lab.md).

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Errors of the RA sender.
#[derive(Debug, thiserror::Error)]
pub enum RaError {
    #[error("interface {0:?} not found")]
    NoInterface(String),
    #[error("opening a raw ICMPv6 socket (needs root / CAP_NET_RAW): {0}")]
    Socket(std::io::Error),
}

/// ICMPv6 type of a router advertisement (RFC 4861 §4.2).
const ROUTER_ADVERTISEMENT: u8 = 134;

/// A router advertisement with router lifetime 0 and no options. The kernel
/// fills in the ICMPv6 checksum for raw ICMPv6 sockets.
pub fn advertisement() -> [u8; 16] {
    let mut ra = [0u8; 16];
    ra[0] = ROUTER_ADVERTISEMENT;
    ra[4] = 64; // current hop limit hint
    ra
}

fn if_index(name: &str) -> Result<u32, RaError> {
    let c = std::ffi::CString::new(name).map_err(|_| RaError::NoInterface(name.to_owned()))?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(RaError::NoInterface(name.to_owned()));
    }
    Ok(index)
}

/// Sends an RA to all-nodes on `interface` every `every`, forever. Sends
/// that fail while the bridge's link-local address is still tentative are
/// retried on the next tick.
pub async fn run(interface: &str, every: Duration) -> Result<(), RaError> {
    let index = if_index(interface)?;
    let socket =
        Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).map_err(RaError::Socket)?;
    // RFC 4861: receivers drop an RA whose hop limit is not 255.
    socket.set_multicast_hops_v6(255).map_err(RaError::Socket)?;
    socket.set_multicast_if_v6(index).map_err(RaError::Socket)?;
    socket.set_nonblocking(true).map_err(RaError::Socket)?;
    let all_nodes = SockAddr::from(SocketAddrV6::new(
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
        0,
        0,
        index,
    ));
    let ra = advertisement();
    let mut ticker = tokio::time::interval(every);
    let mut warned = false;
    loop {
        ticker.tick().await;
        match socket.send_to(&ra, &all_nodes) {
            Ok(_) => warned = false,
            Err(e) if !warned => {
                tracing::debug!(%interface, error = %e, "router advertisement not sent yet");
                warned = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisement_is_a_non_default_router_ra() {
        let ra = advertisement();
        assert_eq!(ra[0], 134);
        assert_eq!(ra[1], 0, "code");
        assert_eq!(&ra[6..8], &[0, 0], "router lifetime 0");
    }

    #[test]
    fn unknown_interface_is_named() {
        let e = if_index("nosuchif0").unwrap_err().to_string();
        assert!(e.contains("nosuchif0"), "{e}");
    }
}
