//! The forwarding loops: move batches between the I/O layer and the engine. Safe code only; every syscall is in
//! [`crate::io`]. One TX loop per TAP queue (TAP → underlay) and one RX loop per UDP socket (underlay → TAP), so
//! the two directions of a TCP connection run on different cores.
//!
//! Per wakeup a loop handles a bounded batch (STYLE §4): up to [`TAP_READS_PER_WAKEUP`] TAP reads, each of which
//! may be a TSO superframe, or [`RECV_BATCHES_PER_WAKEUP`] `recvmmsg` batches of which each datagram may be a GRO
//! train. Sends go out as one `sendmmsg` per batch, a superframe to one VTEP as one UDP GSO message.
//! Nothing here allocates after start-up and nothing logs per packet.

use crate::engine::{Engine, TxAction};
use crate::io::{poll_fds, RecvBatch, SendBatch, TapQueue, UdpSocket, Waker};
use crate::offload::{self, Coalescer, VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use crate::stats::{Counters, DropReason};
use crate::wire::VXLAN_HEADER_LEN;
use std::io::{ErrorKind, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub const TAP_READS_PER_WAKEUP: usize = 64;
pub const RECV_BATCHES_PER_WAKEUP: usize = 8;
/// Largest TAP read: a 64 KiB superframe plus Ethernet and virtio headers.
const TAP_BUF: usize = 65_536 + 256;
/// Datagram slots per recvmmsg; each slot holds a full GRO train.
const RECV_SLOTS: usize = 32;
const RECV_SLOT_SIZE: usize = 65_536;
const SEND_DATA: usize = 2 * 1024 * 1024;
const SEND_MSGS: usize = 4096;
/// UDP GSO carries at most this many segments in one send (kernel UDP_MAX_SEGMENTS).
const MAX_GSO_SEGMENTS: usize = 64;
/// One GSO send is one IP datagram before segmentation: 65535 - 20 (IPv4) - 8 (UDP). A 64 KiB TCP superframe
/// grows by the per-segment headers when re-encapsulated, so it often needs two sends.
const MAX_GSO_PAYLOAD: usize = 65_507;
/// Worst-case per-segment header bytes (prefix + Ethernet + IPv6 + TCP with options).
const SEG_OVERHEAD: usize = VXLAN_HEADER_LEN + 14 + 40 + 60;
const POLL_MS: i32 = 500;
/// Pause after a TAP read error other than `EAGAIN` (the TAP was deleted or broke).
const TAP_BROKEN_BACKOFF_MS: i32 = 100;
/// TCP flows coalesced at once on RX (each holds a 64 KiB superframe buffer).
const GRO_FLOWS: usize = 8;

/// What the TX loop may use of the kernel's offloads.
#[derive(Clone, Copy, Debug, Default)]
pub struct TxOffloads {
    /// The UDP socket accepts `UDP_SEGMENT`.
    pub udp_gso: bool,
}

/// TAP → underlay.
pub fn run_tx(
    mut engine: Engine,
    tap: &TapQueue,
    udp: &UdpSocket,
    offloads: TxOffloads,
    stop: &AtomicBool,
    waker: &Waker,
) {
    let counters = engine.counters().clone();
    let mut buf = vec![0u8; TAP_BUF];
    let mut send = SendBatch::new(SEND_DATA, SEND_MSGS);
    let mut act = TxAction::default();
    let vnet = tap.vnet_hdr();
    let mut fds = [pollfd(tap.as_raw_fd()), pollfd(waker.as_raw_fd())];
    while !stop.load(Ordering::Relaxed) {
        if poll_fds(&mut fds, POLL_MS).is_err() || fds[1].revents != 0 {
            waker.drain();
            continue;
        }
        let now = Instant::now();
        let mut tap_broken = false;
        for _ in 0..TAP_READS_PER_WAKEUP {
            let n = match tap.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    tap_broken = true;
                    break;
                }
            };
            let Some(read) = buf.get_mut(..n) else { break };
            let (hdr, frame) = if vnet {
                let (h, f) = read.split_at_mut(VIRTIO_NET_HDR_LEN.min(n));
                match VirtioNetHdr::decode(h) {
                    Ok(h) => (h, f),
                    Err(_) => {
                        counters.count_drop(DropReason::BadOffload, 1);
                        continue;
                    }
                }
            } else {
                (VirtioNetHdr::default(), read)
            };
            let est_segs = match usize::from(hdr.gso_size) {
                0 => 1,
                g => frame.len() / g + 1,
            };
            if let Err(r) = engine.on_tap_frame(now, frame, &mut act) {
                counters.count_drop(r, est_segs as u64);
                continue;
            }
            let per_msg_est = if offloads.udp_gso {
                (MAX_GSO_PAYLOAD / (usize::from(hdr.gso_size) + SEG_OVERHEAD)).clamp(1, MAX_GSO_SEGMENTS)
            } else {
                1
            };
            let msgs_needed = act.dests.len() * est_segs.div_ceil(per_msg_est);
            if send.remaining() < frame.len() + est_segs * SEG_OVERHEAD || send.msgs_free() < msgs_needed {
                flush(udp, &mut send, &counters);
            }
            let segs = match offload::segment(&hdr, frame, engine.header(), send.spare()) {
                Ok(s) if s.count > 0 && s.stride > 0 => s,
                _ => {
                    counters.count_drop(DropReason::BadOffload, est_segs as u64);
                    continue;
                }
            };
            let range = send.commit(segs.total_len);
            let count = segs.count as u64;
            Counters::add(&counters.rx_frames, count);
            Counters::add(
                &counters.rx_bytes,
                (segs.total_len - segs.count * VXLAN_HEADER_LEN) as u64,
            );
            let per_msg = if offloads.udp_gso {
                (MAX_GSO_PAYLOAD / segs.stride).clamp(1, MAX_GSO_SEGMENTS)
            } else {
                1
            };
            let gso_size = u16::try_from(segs.stride).unwrap_or(0);
            for dst in &act.dests {
                let mut start = range.start;
                let mut pushed = true;
                while start < range.end {
                    let end = (start + per_msg * segs.stride).min(range.end);
                    let seg = if end - start > segs.stride { gso_size } else { 0 };
                    pushed &= send.push(*dst, start..end, seg);
                    start = end;
                }
                if pushed {
                    Counters::add(&counters.tx_datagrams, count);
                } else {
                    counters.count_drop(DropReason::SendError, count);
                }
            }
        }
        flush(udp, &mut send, &counters);
        if tap_broken {
            // A deleted TAP polls POLLERR and reads EBADFD forever: wait (on the waker only) until the
            // daemon's device watcher has recreated it behind the same fd, instead of spinning.
            let _ = poll_fds(&mut fds[1..], TAP_BROKEN_BACKOFF_MS);
        }
    }
}

fn flush(udp: &UdpSocket, send: &mut SendBatch, counters: &Counters) {
    if send.is_empty() {
        return;
    }
    let report = udp.send_batch(send);
    if report.failed > 0 {
        counters.count_drop(DropReason::SendError, report.failed as u64);
    }
}

/// Underlay → TAP.
pub fn run_rx(
    mut engine: Engine,
    tap: &TapQueue,
    udp: &UdpSocket,
    coalesce: bool,
    stop: &AtomicBool,
    waker: &Waker,
) {
    let counters = engine.counters().clone();
    let mut batch = RecvBatch::new(RECV_SLOTS, RECV_SLOT_SIZE);
    let vnet = tap.vnet_hdr();
    let coalesce = coalesce && vnet;
    let mut gro = Coalescer::new(if coalesce { GRO_FLOWS } else { 0 });
    let plain_hdr = [0u8; VIRTIO_NET_HDR_LEN];
    // One TAP write per frame or coalesced superframe; a full or down TAP drops (counted), never blocks.
    let write = |hdr: &[u8; VIRTIO_NET_HDR_LEN], frame: &[u8]| {
        let r = if vnet {
            tap.write_vectored(&[IoSlice::new(hdr), IoSlice::new(frame)])
        } else {
            tap.write(frame)
        };
        if r.is_err() {
            counters.count_drop(DropReason::TapWriteError, 1);
        }
    };
    let mut fds = [pollfd(udp.as_raw_fd()), pollfd(waker.as_raw_fd())];
    while !stop.load(Ordering::Relaxed) {
        if poll_fds(&mut fds, POLL_MS).is_err() || fds[1].revents != 0 {
            waker.drain();
            continue;
        }
        for _ in 0..RECV_BATCHES_PER_WAKEUP {
            let n = match udp.recv_batch(&mut batch) {
                Ok(n) => n,
                Err(_) => break,
            };
            let now = Instant::now();
            for i in 0..n {
                let (meta, data) = batch.get(i);
                // A GRO train splits at `stride`; an empty datagram still counts (and drops as `short`).
                let empty = data.is_empty().then_some(data);
                for dgram in data.chunks(meta.stride.max(1)).chain(empty) {
                    Counters::add(&counters.rx_datagrams, 1);
                    let range = match engine.on_underlay_datagram(now, meta.src, dgram) {
                        Ok(r) => r,
                        Err(r) => {
                            counters.count_drop(r, 1);
                            continue;
                        }
                    };
                    let Some(frame) = dgram.get(range) else { continue };
                    Counters::add(&counters.tx_frames, 1);
                    Counters::add(&counters.tx_bytes, frame.len() as u64);
                    if coalesce {
                        gro.push(frame, write);
                    } else {
                        write(&plain_hdr, frame);
                    }
                }
            }
            gro.flush(write);
            if n < batch.capacity() {
                break;
            }
        }
    }
}

fn pollfd(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
