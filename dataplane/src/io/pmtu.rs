//! The kernel's path MTU towards an underlay address (`IP_MTU` / `IPV6_MTU` on a connected UDP socket: the
//! route's MTU, lowered by any PMTU the kernel learned from ICMP). Admin path only (`overlayctl trace`).

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Path MTU (outer, IP) from `local` to `dst`.
pub fn path_mtu(local: IpAddr, dst: IpAddr) -> io::Result<u32> {
    let s = UdpSocket::bind(SocketAddr::new(local, 0))?;
    // Connecting a UDP socket sends nothing; it only selects the route.
    s.connect(SocketAddr::new(dst, 9))?;
    let (level, name) = match dst {
        IpAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU),
        IpAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU),
    };
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `s` is an open socket for the whole call; `val` and `len` are live locals and the kernel writes
    // at most `len` bytes into `val`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(val).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative MTU"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_a_path_mtu() {
        let lo = std::net::IpAddr::from([127, 0, 0, 1]);
        assert!(super::path_mtu(lo, lo).unwrap() >= 1280);
    }
}
