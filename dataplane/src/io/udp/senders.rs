//! Flow entropy on the send side: a set of sockets, each on its own source port.

use std::net::{IpAddr, SocketAddr};

use super::batch::{SendBatch, SendReport};
use super::socket::{send_batch_on, UdpError, UdpOptions, UdpSocket};

/// The sockets VXLAN datagrams are sent from, for flow entropy (RFC 7348 §5): `n` sockets bound to
/// `local:0`, so the kernel gives each its own port from its ephemeral range (`net.ipv4.ip_local_port_range`,
/// 32768–60999 by default — the range Linux vxlan draws its source ports from). The inner flow's hash picks
/// one ([`crate::flow::pick`]), so each flow keeps one outer 4-tuple and different flows spread over ECMP
/// paths and receive queues. Nothing is received on them; the VXLAN port's own socket receives.
#[derive(Debug)]
pub struct SenderSet {
    socks: Vec<UdpSocket>,
}

impl SenderSet {
    /// Bind `n` (at least 1) send sockets on `local`.
    pub fn bind(local: IpAddr, n: usize, opts: &UdpOptions) -> Result<SenderSet, UdpError> {
        let opts = UdpOptions {
            reuse_port: false,
            gro: false,
            ..opts.clone()
        };
        let socks = (0..n.max(1))
            .map(|_| UdpSocket::bind(SocketAddr::new(local, 0), &opts))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SenderSet { socks })
    }

    pub fn len(&self) -> usize {
        self.socks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    pub fn sockets(&self) -> &[UdpSocket] {
        &self.socks
    }

    /// The source ports, in socket-index order.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.socks
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .map(|a| a.port())
    }

    /// Whether every socket accepts `UDP_SEGMENT` (GSO send).
    pub fn gso_supported(&self) -> bool {
        self.socks.iter().all(UdpSocket::gso_supported)
    }

    /// Send every message of `batch` through the socket it was pushed for ([`SendBatch::push_from`]), one
    /// `sendmmsg` run per socket; errors and waiting as in [`UdpSocket::send_batch`]. A message naming a
    /// socket index outside the set fails (counted).
    pub fn send_batch(&self, batch: &mut SendBatch) -> SendReport {
        send_batch_on(&self.socks, batch, false)
    }
}
