//! The gossip endpoint's UDP socket and its enlarged receive buffer.

use std::net::SocketAddr;

/// Receive buffer asked for on the gossip socket. While a cluster forms, every member handshakes with every
/// other at once (Initials padded to 1200 bytes, certificate flights) and the daemon's two runtime threads
/// share the CPU with that TLS work: with the kernel's default (`net.core.rmem_default`, 208 KiB, about 90
/// such datagrams) the socket overflowed on a fifth of the hosts of a 32-node test cluster, and every lost
/// handshake packet costs QUIC a retransmission timeout. The plain SO_RCVBUF is silently capped at
/// `net.core.rmem_max` (208 KiB on a stock kernel), so the daemon uses SO_RCVBUFFORCE (CAP_NET_ADMIN, which
/// it keeps); the kernel doubles the size for its bookkeeping. Memory is only used while datagrams wait.
pub(super) const GOSSIP_RCVBUF: usize = 4 << 20;

/// The gossip endpoint's UDP socket, bound to `addr` with a [`GOSSIP_RCVBUF`] receive buffer: forced past
/// `net.core.rmem_max` with CAP_NET_ADMIN, else the plain option (which the kernel caps). A smaller buffer
/// is not an error, but it is read back and logged once as a warning.
pub(super) fn bind_gossip_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let granted = force_recv_buffer(&s, GOSSIP_RCVBUF);
    if granted < GOSSIP_RCVBUF {
        tracing::warn!(
            granted,
            wanted = GOSSIP_RCVBUF,
            "gossip socket receive buffer is smaller than wanted (no CAP_NET_ADMIN, so capped by \
             net.core.rmem_max): handshakes may be dropped while a large cluster forms; raise \
             net.core.rmem_max or keep CAP_NET_ADMIN"
        );
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Ask for a `size`-byte receive buffer on `s` (`dataplane::io::udp::force_recv_buffer`, as the data plane's
/// sockets do); returns the size the kernel granted.
pub(super) fn force_recv_buffer(s: &socket2::Socket, size: usize) -> usize {
    if let Err(e) = dataplane::io::udp::force_recv_buffer(s, size) {
        tracing::debug!(error = %e, "cannot enlarge the gossip socket's receive buffer");
    }
    // The kernel reports double the size it granted.
    s.recv_buffer_size().map(|b| b / 2).unwrap_or(0)
}
