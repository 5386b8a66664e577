//! One VXLAN UDP socket: bind with the options the data path needs (buffers, DF, GRO), receive a batch with
//! `recvmmsg`, send a batch with `sendmmsg` (per-message `UDP_SEGMENT`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

use super::batch::{RecvBatch, RecvMeta, SendBatch, SendMsg, SendReport};
use super::sys::{
    encode_sockaddr, getsockopt_int, setsockopt_int, sockaddr_to_std, RECV_CTRL_WORDS, SOL_UDP, UDP_GRO,
    UDP_SEGMENT, UNSPEC_ADDR,
};
use crate::io::poll::wait_fd;

/// Segments per GSO send that every kernel with `UDP_SEGMENT` accepts (`UDP_MAX_SEGMENTS` was 64; Linux
/// 6.18 measured here accepts 128 and rejects 129 with `EINVAL`). Build trains of at most this many.
pub const GSO_MAX_SEGMENTS: usize = 64;

/// Longest time `send_batch` waits in total for the socket to become writable again.
const SEND_WAIT_BUDGET: Duration = Duration::from_millis(100);

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

/// A socket buffer size as the kernel's `int` option takes it (it doubles the value it stores).
fn clamp_buffer(size: usize) -> libc::c_int {
    size.min(i32::MAX as usize / 2) as libc::c_int
}

/// Ask for a `size`-byte receive buffer on `sock`. The FORCE variant (CAP_NET_ADMIN) ignores
/// `net.core.rmem_max`; without the capability fall back to the plain option, which the kernel silently
/// clamps. The error is the plain option's. (The send buffer in [`UdpSocket::bind`] works the same way.)
pub fn force_recv_buffer(sock: &Socket, size: usize) -> io::Result<()> {
    let size = clamp_buffer(size);
    if setsockopt_int(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
        sock.set_recv_buffer_size(size as usize)?;
    }
    Ok(())
}

/// A non-blocking, close-on-exec UDP socket for VXLAN traffic.
#[derive(Debug)]
pub struct UdpSocket {
    sock: Socket,
    pub(super) v6: bool,
    gro: bool,
    gso: bool,
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
            force_recv_buffer(&sock, opts.buffer_bytes).map_err(io_err("SO_RCVBUF"))?;
            let size = clamp_buffer(opts.buffer_bytes);
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
        batch.epoch = batch.epoch.wrapping_add(1);
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
                    if err.raw_os_error() == Some(libc::EMSGSIZE) {
                        report.too_big += 1;
                    }
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
pub(super) fn send_batch_on(socks: &[UdpSocket], batch: &mut SendBatch, all_via_first: bool) -> SendReport {
    let mut report = SendReport {
        sent: 0,
        failed: 0,
        too_big: 0,
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
    let n_pieces = batch.pieces.len().min(batch.iovs.len());
    for (k, p) in batch.pieces.iter().take(n_pieces).enumerate() {
        // SAFETY: k < n_pieces <= iovs.len(), so `add(k)` stays in bounds; piece() only accepts ranges
        // inside the committed part of `data`, so the iovec describes readable bytes of the allocation (the
        // kernel only reads them).
        unsafe {
            iovs.add(k).write(libc::iovec {
                iov_base: data.add(p.start) as *mut libc::c_void,
                iov_len: p.len(),
            });
        }
    }
    for (j, (m, hdr)) in batch.msgs.iter().zip(batch.hdrs.iter_mut()).enumerate() {
        let v6 = socks.get(sock_of(m)).unwrap_or(first).v6;
        // push_pieces() only accepts non-empty runs inside the piece table; clamp anyway so the iovec
        // pointer and count always stay inside `iovs`.
        let first_piece = m.pieces.start.min(n_pieces);
        let n_iov = m.pieces.end.min(n_pieces) - first_piece;
        // SAFETY: j < msgs.len() <= max_msgs == names/ctrl length, so `add(j)` stays in bounds and the
        // element is exclusively ours; first_piece + n_iov <= n_pieces <= iovs.len(), and those iovecs were
        // written above.
        let namelen = unsafe {
            let namelen = encode_sockaddr(m.dst, v6, &mut *names.add(j));
            hdr.msg_hdr.msg_name = names.add(j).cast();
            hdr.msg_hdr.msg_iov = iovs.add(first_piece);
            namelen
        };
        hdr.msg_len = 0;
        hdr.msg_hdr.msg_namelen = namelen;
        hdr.msg_hdr.msg_iovlen = n_iov;
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
