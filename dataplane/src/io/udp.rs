//! Underlay UDP sockets: `recvmmsg` with UDP GRO, `sendmmsg` with per-message UDP GSO, DF on every outer
//! packet (RFC 7348 §4.3), and the [`SenderSet`] of per-port send sockets that gives flow entropy. Owns the
//! sockets and the cmsg ABI; never interprets payloads.
//!
//! Batches own every buffer the syscalls need (data, sockaddrs, iovecs, cmsg space, mmsghdrs), allocated
//! once by their constructors, so `recv_batch`/`send_batch` never allocate. The mmsghdr pointers are
//! rebuilt on each call from the batch's own vectors, so moving a batch between calls is fine.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

use super::poll::wait_fd;

/// `SOL_UDP` (linux/udp.h); equal to `IPPROTO_UDP`.
const SOL_UDP: libc::c_int = 17;
/// Per-socket option or per-send cmsg carrying the GSO segment size (u16). Linux >= 4.18.
const UDP_SEGMENT: libc::c_int = 103;
/// Enable receive coalescing; the segment size comes back in a cmsg of this type (int). Linux >= 5.0.
const UDP_GRO: libc::c_int = 104;

/// Segments per GSO send that every kernel with `UDP_SEGMENT` accepts (`UDP_MAX_SEGMENTS` was 64; Linux
/// 6.18 measured here accepts 128 and rejects 129 with `EINVAL`). Build trains of at most this many.
pub const GSO_MAX_SEGMENTS: usize = 64;

/// Longest time `send_batch` waits in total for the socket to become writable again.
const SEND_WAIT_BUDGET: Duration = Duration::from_millis(100);

/// Control space per message, in u64 words so `cmsghdr` is properly aligned. Receive: room for the GRO
/// cmsg and a few we did not ask for; send: one UDP_SEGMENT cmsg (CMSG_SPACE(2) = 24 on 64-bit).
const RECV_CTRL_WORDS: usize = 8;
const SEND_CTRL_WORDS: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpOptions {
    /// `SO_REUSEPORT`, so one socket per worker can share the port (kernel spreads flows by hash).
    pub reuse_port: bool,
    /// Send and receive buffer size; 0 keeps the kernel default.
    pub buffer_bytes: usize,
    /// Ask for UDP GRO (coalesced receive). See [`UdpSocket::gro_enabled`] for whether the kernel agreed.
    pub gro: bool,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            reuse_port: false,
            buffer_bytes: 4 << 20,
            gro: true,
        }
    }
}

#[derive(Debug, Error)]
pub enum UdpError {
    #[error(
        "UDP port {port} on {ip} is already in use (kernel VXLAN device or another overlayd?): \
         stop it or choose --port"
    )]
    AddrInUse { ip: IpAddr, port: u16 },
    #[error(
        "cannot bind UDP {addr}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    )]
    Permission { addr: SocketAddr },
    #[error(
        "cannot bind UDP {addr}: {ip} is not an address of this host (check the configured local address with `ip addr`)",
        ip = addr.ip()
    )]
    AddrNotAvailable { addr: SocketAddr },
    #[error("UDP socket {addr}: {op} failed: {source}")]
    Io {
        addr: SocketAddr,
        op: &'static str,
        source: io::Error,
    },
}

/// A non-blocking, close-on-exec UDP socket for VXLAN traffic.
#[derive(Debug)]
pub struct UdpSocket {
    sock: Socket,
    v6: bool,
    gro: bool,
    gso: bool,
}

fn setsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int, val: libc::c_int) -> io::Result<()> {
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

fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are live locals; the kernel writes at most `len` bytes into `val`.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&mut val as *mut libc::c_int).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(val)
}

impl UdpSocket {
    pub fn bind(addr: SocketAddr, opts: &UdpOptions) -> Result<UdpSocket, UdpError> {
        let io_err = |op: &'static str| move |source: io::Error| UdpError::Io { addr, op, source };
        let sock = Socket::new(
            Domain::for_address(addr),
            Type::DGRAM.nonblocking().cloexec(),
            Some(Protocol::UDP),
        )
        .map_err(io_err("socket"))?;
        let fd = sock.as_raw_fd();
        let v6 = addr.is_ipv6();
        if opts.reuse_port {
            sock.set_reuse_port(true).map_err(io_err("SO_REUSEPORT"))?;
        }
        if opts.buffer_bytes > 0 {
            let size = opts.buffer_bytes.min(i32::MAX as usize / 2) as libc::c_int;
            // The *FORCE variants (CAP_NET_ADMIN) ignore net.core.{r,w}mem_max; without the capability
            // fall back to the plain ones, which the kernel silently clamps.
            if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
                sock.set_recv_buffer_size(size as usize)
                    .map_err(io_err("SO_RCVBUF"))?;
            }
            if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size).is_err() {
                sock.set_send_buffer_size(size as usize)
                    .map_err(io_err("SO_SNDBUF"))?;
            }
        }
        // RFC 7348 §4.3: never fragment the outer packet. PMTUDISC_DO sets DF and makes oversized sends
        // fail with EMSGSIZE instead of fragmenting locally.
        if v6 {
            setsockopt_int(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_DO,
            )
            .map_err(io_err("IPV6_MTU_DISCOVER"))?;
            // Dual-stack socket: IPv4-mapped destinations use the IPv4 option. Best effort: fails on
            // IPV6_V6ONLY sockets, where it does not matter.
            let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO);
        } else {
            setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO)
                .map_err(io_err("IP_MTU_DISCOVER"))?;
        }
        if let Err(e) = sock.bind(&addr.into()) {
            return Err(match e.raw_os_error() {
                Some(libc::EADDRINUSE) => UdpError::AddrInUse {
                    ip: addr.ip(),
                    port: addr.port(),
                },
                Some(libc::EACCES) | Some(libc::EPERM) => UdpError::Permission { addr },
                Some(libc::EADDRNOTAVAIL) => UdpError::AddrNotAvailable { addr },
                _ => UdpError::Io {
                    addr,
                    op: "bind",
                    source: e,
                },
            });
        }
        let gro = opts.gro && setsockopt_int(fd, SOL_UDP, UDP_GRO, 1).is_ok();
        let gso = getsockopt_int(fd, SOL_UDP, UDP_SEGMENT).is_ok();
        Ok(UdpSocket { sock, v6, gro, gso })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("UDP socket has a non-IP local address"))
    }

    /// Whether the kernel accepts `UDP_SEGMENT` (GSO send). Without it, push one message per datagram.
    pub fn gso_supported(&self) -> bool {
        self.gso
    }

    /// Whether `UDP_GRO` was requested and accepted; then received slots may hold several datagrams.
    pub fn gro_enabled(&self) -> bool {
        self.gro
    }

    /// Receive up to `batch.capacity()` datagrams without blocking (`recvmmsg`). Returns how many slots
    /// were filled (also [`RecvBatch::len`]); `ErrorKind::WouldBlock` when nothing is queued.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.len = 0;
        let slots = batch.metas.len();
        let slot_size = batch.slot_size;
        let data = batch.data.as_mut_ptr();
        // Pointers are taken once per vector (no `&mut v[i]` afterwards) so none is invalidated by a
        // later mutable borrow of the same vector before the syscall uses it.
        let names = batch.names.as_mut_ptr();
        let iovs = batch.iovs.as_mut_ptr();
        let ctrl = batch.ctrl.as_mut_ptr();
        for (i, hdr) in batch.hdrs.iter_mut().enumerate() {
            // SAFETY: i < slots == names/iovs/ctrl/hdrs length and i * slot_size + slot_size <= data.len()
            // by construction in RecvBatch::new, so every pointer stays inside its allocation; `iovs.add(i)`
            // is written through before the kernel reads it.
            unsafe {
                iovs.add(i).write(libc::iovec {
                    iov_base: data.add(i * slot_size).cast(),
                    iov_len: slot_size,
                });
                hdr.msg_hdr.msg_name = names.add(i).cast();
                hdr.msg_hdr.msg_iov = iovs.add(i);
                hdr.msg_hdr.msg_control = ctrl.add(i).cast();
            }
            hdr.msg_len = 0;
            hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_controllen = RECV_CTRL_WORDS * 8;
            hdr.msg_hdr.msg_flags = 0;
        }
        let n = loop {
            // SAFETY: `hdrs` holds `slots` initialised mmsghdrs whose name/iov/control pointers point into
            // this batch's own vectors (set just above, sized as declared), all exclusively borrowed for
            // the call. A null timeout is allowed.
            let rc = unsafe {
                libc::recvmmsg(
                    self.sock.as_raw_fd(),
                    batch.hdrs.as_mut_ptr(),
                    slots as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        };
        for i in 0..n {
            let hdr = &batch.hdrs[i];
            let len = (hdr.msg_len as usize).min(slot_size);
            let mut stride = len;
            // SAFETY: msg_control/msg_controllen were set above to this slot's control buffer and updated by
            // the kernel to the bytes it wrote; CMSG_FIRSTHDR/NXTHDR never step past msg_controllen.
            let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr.msg_hdr) };
            while !cmsg.is_null() {
                // SAFETY: non-null cmsg returned by CMSG_FIRSTHDR/NXTHDR points at a complete cmsghdr
                // inside the control buffer.
                let c = unsafe { &*cmsg };
                if c.cmsg_level == SOL_UDP && c.cmsg_type == UDP_GRO {
                    // SAFETY: the kernel writes an int payload for UDP_GRO (put_cmsg(..., sizeof(int))),
                    // which lies inside the control buffer; read_unaligned tolerates any alignment.
                    let seg =
                        unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) };
                    if seg > 0 {
                        stride = seg as usize;
                    }
                }
                // SAFETY: as above; `cmsg` is a valid header of this msghdr.
                cmsg = unsafe { libc::CMSG_NXTHDR(&hdr.msg_hdr, cmsg) };
            }
            let mut len = len;
            if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                batch.truncated += 1;
                // Keep only whole segments; a single truncated datagram is unusable.
                len = if stride < len { len - len % stride } else { 0 };
            }
            let src = sockaddr_to_std(&batch.names[i]).unwrap_or(UNSPEC_ADDR);
            batch.metas[i] = RecvMeta {
                src,
                len,
                stride: stride.min(len),
            };
        }
        batch.len = n;
        Ok(n)
    }

    /// Send every message of `batch` through this socket (`sendmmsg`, with a `UDP_SEGMENT` cmsg when
    /// `segment_size != 0`), in order and whatever socket index it was pushed with, then clear the batch.
    /// Waits for `POLLOUT` when the socket buffer is full, at most ~100 ms in total; a message the kernel
    /// rejects (EMSGSIZE, EINVAL, ENETUNREACH, EIO…) is skipped and counted.
    pub fn send_batch(&self, batch: &mut SendBatch) -> SendReport {
        send_batch_on(std::slice::from_ref(self), batch, true)
    }

    /// `sendmmsg` the prepared headers `hdrs` until all are sent or failed; `wait_started` carries the
    /// `POLLOUT` wait budget across calls of one batch.
    fn sendmmsg_all(
        &self,
        hdrs: &mut [libc::mmsghdr],
        report: &mut SendReport,
        wait_started: &mut Option<Instant>,
    ) {
        let total = hdrs.len();
        let mut start = 0;
        while start < total {
            // SAFETY: hdrs[start..total] were initialised by send_batch_on with pointers into the batch's
            // vectors, which are not touched until the batch is cleared; `total - start` is their count.
            let rc = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    hdrs.as_mut_ptr().add(start),
                    (total - start) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                report.sent += rc as usize;
                start += rc as usize;
                continue;
            }
            let err = if rc == 0 {
                io::Error::from(io::ErrorKind::WriteZero)
            } else {
                io::Error::last_os_error()
            };
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    let started = *wait_started.get_or_insert_with(Instant::now);
                    let left = SEND_WAIT_BUDGET.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        report.failed += total - start;
                        report.last_error = Some(io::Error::from(io::ErrorKind::TimedOut));
                        break;
                    }
                    let ms = left.as_millis().max(1) as i32;
                    if let Err(e) = wait_fd(self.sock.as_raw_fd(), libc::POLLOUT, ms) {
                        report.failed += total - start;
                        report.last_error = Some(e);
                        break;
                    }
                }
                _ => {
                    // sendmmsg reports an error only for the first message it could not send: skip it.
                    report.failed += 1;
                    report.last_error = Some(err);
                    start += 1;
                }
            }
        }
    }
}

/// Send `batch` through `socks`: each message through the socket it was pushed for (or all through
/// `socks[0]` with `all_via_first`), one `sendmmsg` run per socket, then clear the batch. With several
/// sockets the messages are first ordered by socket, keeping push order within each socket (so within each
/// flow, since a flow always maps to one socket).
fn send_batch_on(socks: &[UdpSocket], batch: &mut SendBatch, all_via_first: bool) -> SendReport {
    let mut report = SendReport {
        sent: 0,
        failed: 0,
        last_error: None,
    };
    let Some(first) = socks.first() else {
        report.failed = batch.msgs.len();
        report.last_error = Some(io::Error::from(io::ErrorKind::NotConnected));
        batch.clear();
        return report;
    };
    if !all_via_first && socks.len() > 1 {
        // (socket, push index) is unique, so the unstable (allocation-free) sort is stable here.
        batch.msgs.sort_unstable_by_key(|m| (m.sock, m.seq));
    }
    let sock_of = |m: &SendMsg| if all_via_first { 0 } else { usize::from(m.sock) };
    let total = batch.msgs.len();
    let data = batch.data.as_ptr();
    // As in recv_batch: one base pointer per vector, elements reached with `add`.
    let names = batch.names.as_mut_ptr();
    let iovs = batch.iovs.as_mut_ptr();
    let ctrl = batch.ctrl.as_mut_ptr();
    for (j, (m, hdr)) in batch.msgs.iter().zip(batch.hdrs.iter_mut()).enumerate() {
        let v6 = socks.get(sock_of(m)).unwrap_or(first).v6;
        // SAFETY: j < msgs.len() <= max_msgs == names/iovs/ctrl length, so `add(j)` stays in bounds and
        // the element is exclusively ours; push() only accepts ranges inside the committed part of
        // `data`, so the iovec describes readable bytes of the allocation (the kernel only reads them).
        let namelen = unsafe {
            let namelen = encode_sockaddr(m.dst, v6, &mut *names.add(j));
            iovs.add(j).write(libc::iovec {
                iov_base: data.add(m.range.start) as *mut libc::c_void,
                iov_len: m.range.len(),
            });
            hdr.msg_hdr.msg_name = names.add(j).cast();
            hdr.msg_hdr.msg_iov = iovs.add(j);
            namelen
        };
        hdr.msg_len = 0;
        hdr.msg_hdr.msg_namelen = namelen;
        hdr.msg_hdr.msg_iovlen = 1;
        hdr.msg_hdr.msg_flags = 0;
        if m.segment_size != 0 {
            // SAFETY: `ctrl.add(j)` is this message's u64-aligned control buffer of SEND_CTRL_WORDS*8 =
            // 32 bytes >= CMSG_SPACE(2) = 24; we write one cmsghdr and its u16 payload inside it.
            unsafe {
                let c = ctrl.add(j).cast::<libc::cmsghdr>();
                (*c).cmsg_level = SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), m.segment_size);
                hdr.msg_hdr.msg_control = c.cast();
                hdr.msg_hdr.msg_controllen = libc::CMSG_SPACE(2) as usize;
            }
        } else {
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
        }
    }

    let mut wait_started: Option<Instant> = None;
    let mut start = 0;
    while start < total {
        let s = batch.msgs.get(start).map_or(0, sock_of);
        let end = batch
            .msgs
            .get(start..total)
            .and_then(|rest| rest.iter().position(|m| sock_of(m) != s))
            .map_or(total, |k| start + k);
        match (socks.get(s), batch.hdrs.get_mut(start..end)) {
            (Some(sock), Some(hdrs)) => sock.sendmmsg_all(hdrs, &mut report, &mut wait_started),
            _ => {
                report.failed += end - start;
                // A socket index outside the set (a caller bug); no allocation even here.
                report.last_error = Some(io::Error::from(io::ErrorKind::InvalidInput));
            }
        }
        start = end;
    }
    batch.clear();
    report
}

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

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

const UNSPEC_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// Decode a kernel-written sockaddr; IPv4-mapped IPv6 sources come back as IPv4.
fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
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
fn encode_sockaddr(addr: SocketAddr, v6_socket: bool, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
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

fn zeroed_mmsghdrs(n: usize) -> Vec<libc::mmsghdr> {
    // SAFETY: mmsghdr is plain old data (integers and raw pointers); all-zero is a valid value.
    vec![unsafe { std::mem::zeroed::<libc::mmsghdr>() }; n]
}

fn zeroed_storage(n: usize) -> Vec<libc::sockaddr_storage> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    vec![unsafe { std::mem::zeroed::<libc::sockaddr_storage>() }; n]
}

fn empty_iovecs(n: usize) -> Vec<libc::iovec> {
    vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0
        };
        n
    ]
}

/// Result of [`UdpSocket::send_batch`].
#[derive(Debug)]
pub struct SendReport {
    /// Messages (not segments) the kernel accepted.
    pub sent: usize,
    /// Messages dropped: rejected by the kernel, or still queued when the wait budget ran out.
    pub failed: usize,
    /// The most recent error (`TimedOut` when the socket stayed full).
    pub last_error: Option<io::Error>,
}

/// Metadata of one received slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    pub src: SocketAddr,
    /// Bytes in the slot (several datagrams when GRO coalesced them).
    pub len: usize,
    /// Size of each datagram in the slot (GRO segment size; the last one may be shorter); `== len` when
    /// not coalesced. 0 only for an empty (or dropped truncated) slot.
    pub stride: usize,
}

/// Preallocated receive slots for [`UdpSocket::recv_batch`].
pub struct RecvBatch {
    slot_size: usize,
    data: Vec<u8>,
    metas: Vec<RecvMeta>,
    len: usize,
    truncated: u64,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    ctrl: Vec<[u64; RECV_CTRL_WORDS]>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` only ever point into this batch's own heap buffers, are
// rewritten right before each syscall, and are never dereferenced by Rust code; moving the batch to
// another thread moves those buffers with it.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.metas.len())
            .field("slot_size", &self.slot_size)
            .field("len", &self.len)
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl RecvBatch {
    /// `slots` datagram buffers of `slot_size` bytes. With GRO on, use 65535-byte slots: smaller ones
    /// make the kernel truncate coalesced datagrams (whole segments are kept, see [`RecvBatch::truncated`]).
    pub fn new(slots: usize, slot_size: usize) -> Self {
        let slots = slots.max(1);
        let slot_size = slot_size.max(1);
        RecvBatch {
            slot_size,
            data: vec![0; slots * slot_size],
            metas: vec![
                RecvMeta {
                    src: UNSPEC_ADDR,
                    len: 0,
                    stride: 0
                };
                slots
            ],
            len: 0,
            truncated: 0,
            names: zeroed_storage(slots),
            iovs: empty_iovecs(slots),
            ctrl: vec![[0u64; RECV_CTRL_WORDS]; slots],
            hdrs: zeroed_mmsghdrs(slots),
        }
    }

    /// Slot `i` (`i < len()`) of the last receive. Panics if `i >= capacity()`.
    pub fn get(&self, i: usize) -> (&RecvMeta, &[u8]) {
        let meta = &self.metas[i];
        let start = i * self.slot_size;
        (meta, &self.data[start..start + meta.len])
    }

    /// [`RecvBatch::get`] with the bytes writable (e.g. to complete a checksum in place).
    pub fn get_mut(&mut self, i: usize) -> (&RecvMeta, &mut [u8]) {
        let meta = &self.metas[i];
        let start = i * self.slot_size;
        (meta, &mut self.data[start..start + meta.len])
    }

    /// The datagrams of slot `i`: its bytes split at `stride` (one item when not coalesced).
    pub fn datagrams(&self, i: usize) -> std::slice::Chunks<'_, u8> {
        let (meta, bytes) = self.get(i);
        bytes.chunks(meta.stride.max(1))
    }

    pub fn capacity(&self) -> usize {
        self.metas.len()
    }

    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Slots filled by the last `recv_batch`.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Datagrams that did not fit their slot since creation (a count for the stats, not an error).
    pub fn truncated(&self) -> u64 {
        self.truncated
    }
}

#[derive(Debug, Clone)]
struct SendMsg {
    dst: SocketAddr,
    range: Range<usize>,
    segment_size: u16,
    /// Index of the send socket ([`SenderSet`]) this message leaves through.
    sock: u16,
    /// Push order, to keep it when messages are grouped by socket.
    seq: u32,
}

/// Outgoing datagrams: one contiguous data region (never reallocated) and a table of messages that
/// reference ranges of it. Several messages may share a range (flooding without copies).
pub struct SendBatch {
    data: Vec<u8>,
    used: usize,
    msgs: Vec<SendMsg>,
    max_msgs: usize,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    ctrl: Vec<[u64; SEND_CTRL_WORDS]>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: as for RecvBatch: the raw pointers only point into this batch's own heap buffers, are rebuilt
// before each syscall and never dereferenced by Rust code.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("data_bytes", &self.data.len())
            .field("used", &self.used)
            .field("msgs", &self.msgs)
            .field("max_msgs", &self.max_msgs)
            .finish()
    }
}

impl SendBatch {
    pub fn new(data_bytes: usize, max_msgs: usize) -> Self {
        let max_msgs = max_msgs.max(1);
        SendBatch {
            data: vec![0; data_bytes],
            used: 0,
            msgs: Vec::with_capacity(max_msgs),
            max_msgs,
            names: zeroed_storage(max_msgs),
            iovs: empty_iovecs(max_msgs),
            ctrl: vec![[0u64; SEND_CTRL_WORDS]; max_msgs],
            hdrs: zeroed_mmsghdrs(max_msgs),
        }
    }

    /// The unused tail of the data region: write a datagram (or a GSO train) here, then [`commit`].
    ///
    /// [`commit`]: SendBatch::commit
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.data[self.used..]
    }

    /// Mark the first `len` bytes of [`SendBatch::spare`] as used and return their range in the region.
    /// `len` is clamped to [`SendBatch::remaining`].
    pub fn commit(&mut self, len: usize) -> Range<usize> {
        let len = len.min(self.remaining());
        let start = self.used;
        self.used += len;
        start..self.used
    }

    /// Queue `range` (from [`SendBatch::commit`]) for `dst`; with `segment_size != 0` the kernel splits
    /// it into datagrams of that size (GSO; the last may be shorter). Returns false when the message
    /// table is full or the range is not committed data.
    pub fn push(&mut self, dst: SocketAddr, range: Range<usize>, segment_size: u16) -> bool {
        self.push_from(0, dst, range, segment_size)
    }

    /// [`SendBatch::push`] for send socket `sock` of a [`SenderSet`].
    pub fn push_from(&mut self, sock: u16, dst: SocketAddr, range: Range<usize>, segment_size: u16) -> bool {
        if self.msgs.len() >= self.max_msgs || range.start > range.end || range.end > self.used {
            return false;
        }
        let seq = u32::try_from(self.msgs.len()).unwrap_or(u32::MAX);
        self.msgs.push(SendMsg {
            dst,
            range,
            segment_size,
            sock,
            seq,
        });
        true
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    pub fn clear(&mut self) {
        self.msgs.clear();
        self.used = 0;
    }

    /// Bytes left in the data region.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.used
    }

    /// Free entries in the message table.
    pub fn msgs_free(&self) -> usize {
        self.max_msgs - self.msgs.len()
    }

    /// The committed bytes of `range` (for inspection and tests).
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.data[range.start.min(self.used)..range.end.min(self.used)]
    }
}

/// The local address the kernel would use to reach `dst` (UDP `connect` + `getsockname`; no packet is
/// sent). Use it as the VTEP source address when none is configured.
pub fn route_source(dst: IpAddr) -> io::Result<IpAddr> {
    let bind: SocketAddr = match dst {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = std::net::UdpSocket::bind(bind)?;
    sock.connect((dst, 4789))?;
    let ip = sock.local_addr()?.ip();
    if ip.is_unspecified() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("no source address routes to {dst}"),
        ));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::netlink;
    use crate::io::testns::in_netns;

    fn lo4() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn opts(gro: bool) -> UdpOptions {
        UdpOptions {
            reuse_port: false,
            buffer_bytes: 1 << 20,
            gro,
        }
    }

    /// Receive until `want` datagrams (after GRO splitting) arrived or 3 s passed.
    fn recv_datagrams(
        sock: &UdpSocket,
        want: usize,
        batch: &mut RecvBatch,
    ) -> Vec<(SocketAddr, usize, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut out = Vec::new();
        while out.len() < want && Instant::now() < deadline {
            if !wait_fd(sock.as_raw_fd(), libc::POLLIN, 100).unwrap() {
                continue;
            }
            let n = match sock.recv_batch(batch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("recv_batch: {e}"),
            };
            assert_eq!(n, batch.len());
            for i in 0..n {
                let (meta, bytes) = batch.get(i);
                assert_eq!(bytes.len(), meta.len);
                for d in batch.datagrams(i) {
                    out.push((meta.src, meta.stride, d.to_vec()));
                }
            }
        }
        out
    }

    #[test]
    fn batch_send_to_self_with_shared_range() {
        in_netns(|| {
            let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            let rx1 = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            let rx2 = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            let (a1, a2) = (rx1.local_addr().unwrap(), rx2.local_addr().unwrap());
            let mut b = SendBatch::new(4096, 8);
            assert_eq!(
                (b.remaining(), b.msgs_free(), b.len(), b.is_empty()),
                (4096, 8, 0, true)
            );
            for (payload, dsts) in [
                (&b"one"[..], vec![a1]),
                (b"two-two", vec![a1]),
                (b"flood", vec![a1, a2]),
            ] {
                b.spare()[..payload.len()].copy_from_slice(payload);
                let r = b.commit(payload.len());
                assert_eq!(b.bytes(r.clone()), payload);
                for d in dsts {
                    assert!(b.push(d, r.clone(), 0));
                }
            }
            assert_eq!(b.len(), 4);
            assert_eq!(b.msgs_free(), 4);
            assert!(!b.push(a1, 0..5000, 0), "uncommitted range is refused");
            let rep = tx.send_batch(&mut b);
            assert_eq!((rep.sent, rep.failed), (4, 0), "{:?}", rep.last_error);
            assert!(b.is_empty());
            assert_eq!(b.remaining(), 4096);

            let mut rb = RecvBatch::new(8, 2048);
            let got = recv_datagrams(&rx1, 3, &mut rb);
            let me = tx.local_addr().unwrap();
            let payloads: Vec<&[u8]> = got.iter().map(|(_, _, p)| &p[..]).collect();
            assert_eq!(payloads, vec![&b"one"[..], b"two-two", b"flood"]);
            assert!(got.iter().all(|(src, _, _)| *src == me));
            let got2 = recv_datagrams(&rx2, 1, &mut rb);
            assert_eq!(got2.len(), 1);
            assert_eq!(got2[0].2, b"flood");
            // Nothing else queued.
            assert_eq!(
                rx1.recv_batch(&mut rb).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
        });
    }

    #[test]
    fn sender_set_sends_each_message_from_its_socket_in_order() {
        in_netns(|| {
            let set = SenderSet::bind(IpAddr::V4(Ipv4Addr::LOCALHOST), 8, &opts(false)).unwrap();
            assert_eq!(set.len(), 8);
            assert!(set.gso_supported());
            let ports: Vec<u16> = set.ports().collect();
            let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
            assert_eq!(distinct.len(), 8, "one port per socket: {ports:?}");
            // A fresh namespace has the default ephemeral range, which Linux vxlan also uses.
            assert!(ports.iter().all(|p| (32768..=60999).contains(p)), "{ports:?}");
            for s in set.sockets() {
                let df = getsockopt_int(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_MTU_DISCOVER).unwrap();
                assert_eq!(df, libc::IP_PMTUDISC_DO, "DF on every send socket");
            }
            let rx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            let dst = rx.local_addr().unwrap();
            let mut b = SendBatch::new(4096, 64);
            // Interleave sockets 5, 2, 5, 7, 2, 5: each socket's messages must leave in push order.
            let plan = [5u16, 2, 5, 7, 2, 5];
            for (k, sock) in plan.iter().enumerate() {
                b.spare()[..2].copy_from_slice(&[*sock as u8, k as u8]);
                let r = b.commit(2);
                assert!(b.push_from(*sock, dst, r, 0));
            }
            b.spare()[0] = 0xee;
            let r = b.commit(1);
            assert!(
                b.push_from(8, dst, r, 0),
                "the batch does not know the set's size"
            );
            let rep = set.send_batch(&mut b);
            assert_eq!((rep.sent, rep.failed), (6, 1), "{:?}", rep.last_error);
            assert_eq!(
                rep.last_error.map(|e| e.kind()),
                Some(io::ErrorKind::InvalidInput)
            );
            let mut rb = RecvBatch::new(16, 64);
            let got = recv_datagrams(&rx, 6, &mut rb);
            assert_eq!(got.len(), 6);
            for (src, _, d) in &got {
                assert_eq!(
                    src.port(),
                    ports[usize::from(d[0])],
                    "message {d:?} left from its socket"
                );
            }
            for sock in [2u8, 5, 7] {
                let order: Vec<u8> = got.iter().filter(|g| g.2[0] == sock).map(|g| g.2[1]).collect();
                let want: Vec<u8> = (0..plan.len() as u8)
                    .filter(|k| plan[*k as usize] == u16::from(sock))
                    .collect();
                assert_eq!(order, want, "push order kept for socket {sock}");
            }
            // UdpSocket::send_batch ignores the index: everything leaves from that one socket.
            b.spare()[..2].copy_from_slice(b"zz");
            let r = b.commit(2);
            assert!(b.push_from(3, dst, r, 0));
            let one = &set.sockets()[0];
            assert_eq!(one.send_batch(&mut b).sent, 1);
            let got = recv_datagrams(&rx, 1, &mut rb);
            assert_eq!(got[0].0.port(), ports[0]);
        });
    }

    #[test]
    fn msg_table_full() {
        let mut b = SendBatch::new(100, 2);
        let r = b.commit(10);
        assert!(b.push(lo4(), r.clone(), 0));
        assert!(b.push(lo4(), r.clone(), 0));
        assert!(!b.push(lo4(), r, 0));
        assert_eq!(b.commit(1000), 10..100, "commit clamps to the region");
        assert_eq!(b.remaining(), 0);
        assert!(b.spare().is_empty());
    }

    fn gso_roundtrip(gro: bool) {
        in_netns(move || {
            let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            assert!(tx.gso_supported(), "UDP_SEGMENT expected on Linux >= 4.18");
            let rx = UdpSocket::bind(lo4(), &opts(gro)).unwrap();
            assert_eq!(rx.gro_enabled(), gro);
            let dst = rx.local_addr().unwrap();
            let mut b = SendBatch::new(65536, 4);
            let total = 10 * 1000 + 300;
            for (k, byte) in b.spare()[..total].iter_mut().enumerate() {
                *byte = (k / 1000) as u8; // segment index
            }
            let r = b.commit(total);
            assert!(b.push(dst, r, 1000));
            let rep = tx.send_batch(&mut b);
            assert_eq!((rep.sent, rep.failed), (1, 0), "{:?}", rep.last_error);

            let mut rb = RecvBatch::new(16, 65535);
            let got = recv_datagrams(&rx, 11, &mut rb);
            assert_eq!(got.len(), 11, "all segments arrive");
            for (k, (_, stride, d)) in got.iter().enumerate() {
                let want = if k == 10 { 300 } else { 1000 };
                assert_eq!(d.len(), want, "segment {k}");
                assert!(d.iter().all(|&x| x == k as u8), "segment {k} content");
                if gro {
                    // Coalesced or not, the stride is the segment size (or the lone last one).
                    assert!(*stride == 1000 || (k == 10 && *stride == 300), "stride {stride}");
                }
            }
            let coalesced = got.iter().any(|(_, s, _)| *s == 1000)
                && (0..rb.len()).any(|i| rb.get(i).0.len > rb.get(i).0.stride);
            eprintln!(
                "gro={gro}: last batch had {} slot(s), coalesced in last batch: {coalesced}",
                rb.len()
            );
            if !gro {
                assert!(!coalesced);
            }
        });
    }

    #[test]
    fn gso_send_received_as_datagrams() {
        gso_roundtrip(false);
    }

    #[test]
    fn gso_send_received_with_gro() {
        gso_roundtrip(true);
    }

    #[test]
    fn truncated_slots_keep_whole_datagrams_only() {
        in_netns(|| {
            let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            let plain = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            let gro = UdpSocket::bind(lo4(), &opts(true)).unwrap();
            let mut b = SendBatch::new(4096, 4);
            b.spare()[..500]
                .iter_mut()
                .enumerate()
                .for_each(|(k, x)| *x = (k / 100) as u8);
            let r = b.commit(500);
            assert!(b.push(plain.local_addr().unwrap(), 0..200, 0));
            assert!(b.push(gro.local_addr().unwrap(), r, 100));
            assert_eq!(tx.send_batch(&mut b).sent, 2);
            let mut rb = RecvBatch::new(4, 150);
            assert!(wait_fd(plain.as_raw_fd(), libc::POLLIN, 1000).unwrap());
            assert_eq!(plain.recv_batch(&mut rb).unwrap(), 1);
            assert_eq!(rb.get(0).0.len, 0, "a cut datagram is not delivered");
            assert_eq!(rb.truncated(), 1);
            assert!(wait_fd(gro.as_raw_fd(), libc::POLLIN, 1000).unwrap());
            let n = gro.recv_batch(&mut rb).unwrap();
            let (meta, bytes) = rb.get(0);
            eprintln!(
                "gro into 150-byte slot: {n} slot(s), first len {} stride {}",
                meta.len, meta.stride
            );
            assert_eq!(meta.len % 100, 0);
            assert!(meta.len <= 150 && meta.len > 0);
            assert!(bytes
                .chunks(100)
                .enumerate()
                .all(|(k, d)| d.iter().all(|&x| x == k as u8)));
        });
    }

    #[test]
    fn hard_error_is_skipped_and_counted() {
        in_netns(|| {
            let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            let rx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            let dst = rx.local_addr().unwrap();
            let mut b = SendBatch::new(80_000, 4);
            b.spare()[..5].copy_from_slice(b"first");
            let r1 = b.commit(5);
            let big = b.commit(70_000); // > 65507: EMSGSIZE without GSO
            b.spare()[..4].copy_from_slice(b"last");
            let r3 = b.commit(4);
            assert!(b.push(dst, r1, 0) && b.push(dst, big, 0) && b.push(dst, r3, 0));
            let rep = tx.send_batch(&mut b);
            assert_eq!((rep.sent, rep.failed), (2, 1));
            assert_eq!(
                rep.last_error.and_then(|e| e.raw_os_error()),
                Some(libc::EMSGSIZE)
            );
            let mut rb = RecvBatch::new(4, 2048);
            let got: Vec<Vec<u8>> = recv_datagrams(&rx, 2, &mut rb).into_iter().map(|g| g.2).collect();
            assert_eq!(got, vec![b"first".to_vec(), b"last".to_vec()]);
        });
    }

    #[test]
    fn gso_segment_limit() {
        in_netns(|| {
            let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            let rx = UdpSocket::bind(lo4(), &opts(true)).unwrap();
            let dst = rx.local_addr().unwrap();
            let mut b = SendBatch::new(65536, 4);
            let ok = b.commit(GSO_MAX_SEGMENTS * 100);
            let too_many = b.commit(300 * 100); // more segments than any kernel allows
            let tail = b.commit(100);
            assert!(b.push(dst, ok, 100) && b.push(dst, too_many, 100) && b.push(dst, tail, 100));
            let rep = tx.send_batch(&mut b);
            assert_eq!((rep.sent, rep.failed), (2, 1));
            assert_eq!(rep.last_error.and_then(|e| e.raw_os_error()), Some(libc::EINVAL));
            let mut rb = RecvBatch::new(8, 65535);
            let got = recv_datagrams(&rx, GSO_MAX_SEGMENTS + 1, &mut rb);
            assert_eq!(got.len(), GSO_MAX_SEGMENTS + 1);
            assert!(got.iter().all(|(_, _, d)| d.len() == 100));
        });
    }

    #[test]
    fn hot_path_does_not_allocate() {
        use crate::io::tap::{Tap, TapConfig};
        use crate::io::testns::alloc_count::allocations;
        in_netns(|| {
            let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            let set = SenderSet::bind(IpAddr::V4(Ipv4Addr::LOCALHOST), 4, &opts(false)).unwrap();
            let rx = UdpSocket::bind(lo4(), &opts(true)).unwrap();
            let dst = rx.local_addr().unwrap();
            let tap = Tap::create(&TapConfig {
                name: "ovlal0".into(),
                vnet_hdr: true,
                queues: 1,
            })
            .unwrap();
            netlink::set_up("ovlal0").unwrap();
            let q = &tap.queues()[0];
            let mut sb = SendBatch::new(65536, 8);
            let mut rb = RecvBatch::new(8, 65535);
            let mut frame = [0u8; 10 + 60];
            frame[10..16].copy_from_slice(&[0xff; 6]);
            frame[22..24].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
            let mut rbuf = [0u8; 2048];
            let probe = allocations();
            std::hint::black_box(vec![0u8; 16]);
            assert!(allocations() > probe, "allocation counter must see allocations");
            let before = allocations();
            let mut received = 0;
            for round in 0..50u8 {
                sb.spare()[..3000].fill(round);
                let r = sb.commit(3000);
                assert!(sb.push(dst, r.clone(), 1000));
                assert!(sb.push(dst, r, 0));
                let rep = tx.send_batch(&mut sb);
                assert_eq!(rep.failed, 0);
                // The same through a set of send sockets, messages out of socket order (sorted in place).
                let r = sb.commit(3000);
                assert!(sb.push_from(3, dst, r.clone(), 1000));
                assert!(sb.push_from(1, dst, r, 0));
                let rep = set.send_batch(&mut sb);
                assert_eq!((rep.sent, rep.failed), (2, 0));
                let _ = wait_fd(rx.as_raw_fd(), libc::POLLIN, 100);
                while let Ok(n) = rx.recv_batch(&mut rb) {
                    for i in 0..n {
                        received += rb.datagrams(i).count();
                    }
                }
                q.write(&frame).unwrap();
                let _ = q.write_vectored(&[
                    std::io::IoSlice::new(&frame[..10]),
                    std::io::IoSlice::new(&frame[10..]),
                ]);
                while q.read(&mut rbuf).is_ok() {}
            }
            let allocs = allocations() - before;
            assert_eq!(allocs, 0, "hot path allocated {allocs} times");
            assert!(received >= 50 * 8, "received {received}");
        });
    }

    #[test]
    fn df_set_no_local_fragmentation() {
        in_netns(|| {
            netlink::set_mtu("lo", 1500).unwrap();
            let tx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            assert_eq!(
                getsockopt_int(tx.as_raw_fd(), libc::IPPROTO_IP, libc::IP_MTU_DISCOVER).unwrap(),
                libc::IP_PMTUDISC_DO
            );
            let rx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            let mut b = SendBatch::new(4000, 2);
            let r = b.commit(2000); // 2000 + 28 > 1500: would need fragmentation
            assert!(b.push(rx.local_addr().unwrap(), r, 0));
            let rep = tx.send_batch(&mut b);
            assert_eq!((rep.sent, rep.failed), (0, 1));
            assert_eq!(
                rep.last_error.and_then(|e| e.raw_os_error()),
                Some(libc::EMSGSIZE)
            );
        });
    }

    #[test]
    fn addr_in_use_says_what_to_do() {
        in_netns(|| {
            let first = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            let addr = first.local_addr().unwrap();
            let e = UdpSocket::bind(addr, &opts(false)).unwrap_err();
            assert!(matches!(e, UdpError::AddrInUse { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!(
                    "UDP port {} on 127.0.0.1 is already in use",
                    addr.port()
                )),
                "{msg}"
            );
            assert!(msg.contains("choose --port"), "{msg}");
            // SO_REUSEPORT on both sides lets workers share the port.
            let ro = UdpOptions {
                reuse_port: true,
                ..opts(false)
            };
            let a = UdpSocket::bind(lo4(), &ro).unwrap();
            let _b = UdpSocket::bind(a.local_addr().unwrap(), &ro).unwrap();
            let e = UdpSocket::bind("192.0.2.1:4789".parse().unwrap(), &opts(false)).unwrap_err();
            assert!(matches!(e, UdpError::AddrNotAvailable { .. }), "{e:?}");
        });
    }

    #[test]
    fn privileged_port_permission() {
        in_netns(|| {
            crate::io::testns::drop_caps(&[crate::io::testns::CAP_NET_BIND_SERVICE]);
            let e = UdpSocket::bind("127.0.0.1:789".parse().unwrap(), &opts(false)).unwrap_err();
            assert!(matches!(e, UdpError::Permission { .. }), "{e:?}");
            assert!(e.to_string().contains("CAP_NET_BIND_SERVICE"), "{e}");
        });
    }

    #[test]
    fn dual_stack_socket_sends_to_ipv4() {
        in_netns(|| {
            let tx = UdpSocket::bind("[::]:0".parse().unwrap(), &opts(true)).unwrap();
            let rx = UdpSocket::bind(lo4(), &opts(false)).unwrap();
            let mut b = SendBatch::new(64, 1);
            b.spare()[..2].copy_from_slice(b"v4");
            let r = b.commit(2);
            assert!(b.push(rx.local_addr().unwrap(), r, 0));
            let rep = tx.send_batch(&mut b);
            assert_eq!((rep.sent, rep.failed), (1, 0), "{:?}", rep.last_error);
            let mut rb = RecvBatch::new(2, 64);
            let got = recv_datagrams(&rx, 1, &mut rb);
            assert_eq!(got[0].2, b"v4");
            assert_eq!(got[0].0.port(), tx.local_addr().unwrap().port());
        });
    }

    #[test]
    fn route_source_loopback() {
        assert_eq!(
            route_source(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        in_netns(|| {
            assert_eq!(
                route_source("127.0.0.1".parse().unwrap()).unwrap(),
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            );
            // No route at all in a fresh namespace.
            assert!(route_source("192.0.2.1".parse().unwrap()).is_err());
        });
    }
}
