//! The sending side of the overlayd probe (`dataplane::wire::probe`): one request to a peer's VXLAN port from
//! an ephemeral socket on our VTEP address, with DF set, and the wait for its reply. Used every
//! [`PROBE_INTERVAL`] towards every peer (liveness for `overlayctl peers`, the RTT histogram of `/metrics`) and
//! by `overlayctl diag` (reachability of the VXLAN port, a full-size don't-fragment probe, clock skew).
//! Blocking: call from `spawn_blocking`. Must never use the data plane's socket (its replies would go to the
//! RX worker, which does not hand them back).

use dataplane::io::{poll::wait_fd, RecvBatch, SendBatch, UdpOptions, UdpSocket};
use dataplane::wire::probe::{ProbeKind, ProbeRepr};
use dataplane::wire::{Vni, VxlanPacket, VXLAN_HEADER_LEN};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often every peer is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// A static peer from which nothing arrived for this long is `silent`.
pub const SILENT_AFTER: Duration = Duration::from_secs(30);

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    pub rtt: Duration,
    /// Peer's clock minus ours at the moment it replied (estimated at half the round trip), milliseconds.
    pub clock_offset_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot open a probe socket on {0}: {1}")]
    Socket(IpAddr, String),
    #[error("a {0}-byte datagram does not fit the local path MTU (EMSGSIZE): {1}")]
    TooBig(usize, String),
    #[error("cannot send the probe: {0}")]
    Send(String),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

fn unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Probe `peer` (its VXLAN address) with an inner frame of `frame_len` bytes; `tries` requests, each waiting
/// `wait` for its reply.
pub fn probe(
    local: IpAddr,
    peer: SocketAddr,
    vni: Vni,
    frame_len: usize,
    tries: u32,
    wait: Duration,
) -> Result<ProbeResult, ProbeError> {
    let sock = UdpSocket::bind(
        SocketAddr::new(local, 0),
        &UdpOptions {
            reuse_port: false,
            buffer_bytes: 256 * 1024,
            gro: false,
        },
    )
    .map_err(|e| ProbeError::Socket(local, e.to_string()))?;
    let mut send = SendBatch::new(VXLAN_HEADER_LEN + frame_len.max(64) + 64, 1);
    let mut recv = RecvBatch::new(8, 2048);
    let nonce_base = unix_ns() as u64 ^ u64::from(std::process::id()) << 32;
    for attempt in 0..u64::from(tries.max(1)) {
        let nonce = nonce_base.wrapping_add(attempt);
        send.clear();
        let spare = send.spare();
        spare[..VXLAN_HEADER_LEN].copy_from_slice(&dataplane::wire::vxlan::header(vni));
        let req = ProbeRepr {
            kind: ProbeKind::Request,
            nonce,
            clock_ns: 0,
        };
        let Some(n) = req.emit(&mut spare[VXLAN_HEADER_LEN..], frame_len) else {
            return Err(ProbeError::Send("probe larger than its buffer".into()));
        };
        let range = send.commit(VXLAN_HEADER_LEN + n);
        send.push(peer, range, 0);
        let sent_at = Instant::now();
        let sent_ns = unix_ns();
        let report = sock.send_batch(&mut send);
        if report.failed > 0 {
            let e = report.last_error.map(|e| (e.raw_os_error(), e.to_string()));
            return Err(match e {
                Some((Some(libc::EMSGSIZE), s)) => ProbeError::TooBig(VXLAN_HEADER_LEN + n, s),
                Some((_, s)) => ProbeError::Send(s),
                None => ProbeError::Send("not sent".into()),
            });
        }
        let deadline = sent_at + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
            if !wait_fd(sock.as_raw_fd(), libc::POLLIN, ms).unwrap_or(false) {
                continue;
            }
            let Ok(k) = sock.recv_batch(&mut recv) else {
                continue;
            };
            for i in 0..k {
                let (meta, data) = recv.get(i);
                if meta.src.ip() != peer.ip() {
                    continue;
                }
                let Ok(pkt) = VxlanPacket::new_checked(data) else {
                    continue;
                };
                let Ok(rep) = ProbeRepr::parse(pkt.payload()) else {
                    continue;
                };
                if rep.kind != ProbeKind::Reply || rep.nonce != nonce || pkt.vni() != vni {
                    continue;
                }
                let rtt = sent_at.elapsed();
                let mid = sent_ns + rtt.as_nanos() as i128 / 2;
                let offset = (i128::from(rep.clock_ns) - mid) / 1_000_000;
                return Ok(ProbeResult {
                    rtt,
                    clock_offset_ms: i64::try_from(offset).unwrap_or(i64::MAX),
                });
            }
        }
    }
    Err(ProbeError::Timeout(wait * tries.max(1)))
}
