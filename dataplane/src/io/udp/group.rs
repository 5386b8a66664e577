//! The receive side of `--workers`: one UDP socket per worker on the VXLAN port, in one `SO_REUSEPORT` group,
//! so the kernel spreads incoming datagrams over the workers by a hash of their 4-tuple (each flow stays on
//! one socket; peers vary their outer source port per inner flow, see [`super::SenderSet`]).
//!
//! Must never: join a group someone else holds. `SO_REUSEPORT` lets any socket of the same user with the
//! option set share the port, so a second overlayd (or anything else) bound there with it would silently take
//! a share of our traffic. Before binding the group, the port is bound once *without* the option: that fails
//! with `EADDRINUSE` if anything holds the port, reuseport group or not, and the daemon refuses to start as it
//! does with one worker. (Between that check and the group's bind is a window of a few syscalls.)

use std::net::SocketAddr;

use super::socket::{UdpError, UdpOptions, UdpSocket};

/// `n` (at least 1) sockets bound to `addr`. One socket is bound plainly, as before workers existed; more
/// share the port with `SO_REUSEPORT` after the check above. `opts.reuse_port` is ignored.
pub fn bind_group(addr: SocketAddr, n: usize, opts: &UdpOptions) -> Result<Vec<UdpSocket>, UdpError> {
    if n <= 1 {
        let plain = UdpOptions {
            reuse_port: false,
            ..opts.clone()
        };
        return Ok(vec![UdpSocket::bind(addr, &plain)?]);
    }
    // The free-port check: no buffers, no GRO, closed right away.
    let probe = UdpOptions {
        reuse_port: false,
        buffer_bytes: 0,
        gro: false,
    };
    drop(UdpSocket::bind(addr, &probe)?);
    let shared = UdpOptions {
        reuse_port: true,
        ..opts.clone()
    };
    (0..n).map(|_| UdpSocket::bind(addr, &shared)).collect()
}
