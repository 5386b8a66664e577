//! The kernel ABI under the UDP sockets: option numbers, control-message sizes, `setsockopt`/`getsockopt` on
//! ints, and `sockaddr` conversion. No policy.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// `SOL_UDP` (linux/udp.h); equal to `IPPROTO_UDP`.
pub(super) const SOL_UDP: libc::c_int = 17;
/// Per-socket option or per-send cmsg carrying the GSO segment size (u16). Linux >= 4.18.
pub(super) const UDP_SEGMENT: libc::c_int = 103;
/// Enable receive coalescing; the segment size comes back in a cmsg of this type (int). Linux >= 5.0.
pub(super) const UDP_GRO: libc::c_int = 104;

/// Control space per message, in u64 words so `cmsghdr` is properly aligned. Receive: room for the GRO
/// cmsg and a few we did not ask for; send: one UDP_SEGMENT cmsg (CMSG_SPACE(2) = 24 on 64-bit).
pub(super) const RECV_CTRL_WORDS: usize = 8;
pub(super) const SEND_CTRL_WORDS: usize = 4;

pub(super) fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live local c_int and its exact size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are live locals; the kernel writes at most `len` bytes into `val`.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&mut val as *mut libc::c_int).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(val)
}

pub(super) const UNSPEC_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// Decode a kernel-written sockaddr; IPv4-mapped IPv6 sources come back as IPv4.
pub(super) fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: family AF_INET means the storage holds a sockaddr_in, which is smaller than and
            // less aligned than sockaddr_storage.
            let sin = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: family AF_INET6 means the storage holds a sockaddr_in6 (fits, alignment ok).
            let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

/// Encode `addr` for a socket of the given family (IPv4 destinations become IPv4-mapped on IPv6 sockets).
pub(super) fn encode_sockaddr(
    addr: SocketAddr,
    v6_socket: bool,
    out: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    let addr = match addr {
        SocketAddr::V4(a) if v6_socket => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        other => other,
    };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in fits in (and is less aligned than) sockaddr_storage; we own `out`.
            let sin = unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            *sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_in6 fits in (and is less aligned than) sockaddr_storage; we own `out`.
            let sin6 = unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            *sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

pub(super) fn zeroed_mmsghdrs(n: usize) -> Vec<libc::mmsghdr> {
    // SAFETY: mmsghdr is plain old data (integers and raw pointers); all-zero is a valid value.
    vec![unsafe { std::mem::zeroed::<libc::mmsghdr>() }; n]
}

pub(super) fn zeroed_storage(n: usize) -> Vec<libc::sockaddr_storage> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    vec![unsafe { std::mem::zeroed::<libc::sockaddr_storage>() }; n]
}

pub(super) fn empty_iovecs(n: usize) -> Vec<libc::iovec> {
    vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0
        };
        n
    ]
}
