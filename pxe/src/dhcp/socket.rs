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

/// `ATF_COM` from `<net/if_arp.h>`: a complete entry (the hardware address
/// is known), which the libc crate lacks.
const ATF_COM: libc::c_int = 0x02;

/// Adds (or replaces) the neighbour entry `ip` → `mac` on `interface`
/// (SIOCSARP), so a reply can be unicast to a client that has no address
/// yet and so cannot answer ARP. The entry ages out like a learnt one.
/// `fd` is any IPv4 socket; the call does not block.
pub fn add_neighbour(
    fd: std::os::fd::RawFd,
    interface: &str,
    ip: Ipv4Addr,
    mac: [u8; 6],
) -> std::io::Result<()> {
    // SAFETY: arpreq is plain old data; all-zero is a valid value.
    let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
    let pa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in sockaddr (both 16 bytes) and is what the
    // kernel reads arp_pa as for AF_INET.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&raw const pa).cast::<u8>(),
            (&raw mut req.arp_pa).cast::<u8>(),
            std::mem::size_of::<libc::sockaddr_in>(),
        );
    }
    req.arp_ha.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in req.arp_ha.sa_data.iter_mut().zip(mac) {
        *d = s as libc::c_char;
    }
    req.arp_flags = ATF_COM;
    let name = interface.as_bytes();
    if name.len() >= req.arp_dev.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("interface name {interface:?} is too long"),
        ));
    }
    for (d, s) in req.arp_dev.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCSARP reads one arpreq from the pointer, which is valid
    // for the duration of the call.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCSARP, &raw const req) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
