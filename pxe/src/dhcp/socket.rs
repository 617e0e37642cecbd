//! UDP sockets bound to one interface only, able to broadcast.

use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// Binds `0.0.0.0:port` restricted to `interface` (SO_BINDTODEVICE), so a
/// multi-NIC host answers only on the provisioning network, and enables
/// broadcast for replies to clients without an address. Must run inside a
/// tokio runtime.
pub fn bind(interface: &str, port: u16) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    // Bursts from many clients (or perfdhcp) queue here while a batch fsyncs.
    if let Err(e) = socket.set_recv_buffer_size(8 << 20) {
        tracing::debug!(error = %e, "could not enlarge DHCP receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    UdpSocket::from_std(socket.into())
}
