//! The RX direction: [`run_rx`] / [`RxLoop`] (underlay socket → TAPs, `recvmmsg` batches), and after each
//! `recvmmsg`: every datagram of one receive batch (each slot may be a GRO train) → probe answer, drop,
//! or TAP write. Coalesced TCP superframes are written without copying their payload
//! ([`crate::offload::Coalescer`]): the TAP write gathers the payload straight from `batch`, so everything pending
//! is flushed before this returns and before `batch` is refilled.

use super::busy::{BusyPoll, Dir};
use super::{
    poll_nudged, pollfd, LoopArm, GRO_FLOWS, POLL_MS, RECV_BATCHES_PER_WAKEUP, RECV_SLOTS, RECV_SLOT_SIZE,
};
use crate::engine::Engine;
use crate::io::{RecvBatch, SendBatch, TapQueue, UdpSocket, Waker};
use crate::network::Network;
use crate::offload::{self, Coalescer, VIRTIO_NET_HDR_LEN};
use crate::stats::{Counters, DropReason};
use crate::wire::probe::{self, ProbeKind, ProbeRepr};
use crate::wire::{ETHERNET_HEADER_LEN, VXLAN_HEADER_LEN};
use std::cell::Cell;
use std::io::IoSlice;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The byte ranges of the datagrams in a slot of `len` bytes starting at `base`, split at `stride` (a GRO
/// train); an empty slot is one empty datagram (it still counts, and drops as `short`).
pub(super) fn datagram_ranges(base: usize, len: usize, stride: usize) -> impl Iterator<Item = Range<usize>> {
    let stride = stride.max(1);
    let count = len.div_ceil(stride).max(1);
    (0..count).map(move |k| {
        let start = base + k * stride;
        start..(start + stride).min(base + len)
    })
}

/// What the RX loop keeps across batches.
pub(super) struct RxState {
    pub gro: Coalescer,
    pub coalesce: bool,
    /// Without a virtio header, a received superframe is cut into frames here.
    pub seg_buf: Vec<u8>,
    pub replies: SendBatch,
}

/// Per-batch inputs: the network table and the network whose TAP `write` (and the coalescer's pending
/// frames) go to.
struct Nets<'n> {
    nets: &'n [Arc<Network>],
    cur: &'n Cell<usize>,
}

/// Handle slots `0..n` of `batch`; every coalesced superframe is written before returning.
pub(super) fn rx_batch(
    engine: &mut Engine,
    st: &mut RxState,
    nets: &[Arc<Network>],
    cur: &Cell<usize>,
    batch: &mut RecvBatch,
    n: usize,
    write: &TapWrite<'_>,
) {
    let now = Instant::now();
    let nets = Nets { nets, cur };
    let unattributed = engine.unattributed().clone();
    for i in 0..n {
        let (src, len, stride) = {
            let (meta, _) = batch.get(i);
            (meta.src, meta.len, meta.stride.max(1))
        };
        unattributed
            .gro_segments
            .observe(len.div_ceil(stride).max(1) as u64);
        for dg in datagram_ranges(batch.slot_start(i), len, stride) {
            rx_datagram(engine, st, &nets, batch, src, dg, now, write);
        }
    }
    st.gro.flush(batch.region(), write);
    // Every push and flush above used this batch's epoch, so nothing can have been dropped as stale.
    debug_assert_eq!(st.gro.stale_drops(), 0);
}

#[allow(clippy::too_many_arguments)]
fn rx_datagram(
    engine: &mut Engine,
    st: &mut RxState,
    nets: &Nets<'_>,
    batch: &mut RecvBatch,
    src: std::net::SocketAddr,
    dg: Range<usize>,
    now: Instant,
    write: &TapWrite<'_>,
) {
    let region = batch.region();
    let Some(dgram) = region.bytes.get(dg.clone()) else {
        return;
    };
    // A valid overlayd probe is answered (requests) and consumed, outside the traffic counters; anything else
    // that looks like one takes the normal path and its checks.
    if dgram.get(VXLAN_HEADER_LEN..).is_some_and(probe::is_probe_frame) {
        if let Some((p, ni)) = engine.on_probe_for(now, src, dgram) {
            if p.kind == ProbeKind::Request {
                queue_probe_reply(&mut st.replies, engine.header_of(ni), p.nonce, src);
            }
            return;
        }
    }
    let d = match engine.on_underlay(now, src, dgram) {
        Ok(d) => d,
        Err(d) => {
            let c = engine.counters_of(d.net.unwrap_or(usize::MAX));
            Counters::add(&c.rx_datagrams, 1);
            c.count_drop(d.reason, 1);
            return;
        }
    };
    let Some(net) = nets.nets.get(d.net) else { return };
    let w = engine.worker();
    let counters = net.rx.of(w);
    Counters::add(&counters.rx_datagrams, 1);
    let frange = dg.start + d.frame.start..dg.start + d.frame.end;
    let Some(flen) = region.bytes.get(frange.clone()).map(<[u8]>::len) else {
        return;
    };
    if nets.cur.get() != d.net {
        // Frames pending for another network's TAP go out first.
        st.gro.flush(batch.region(), write);
        nets.cur.set(d.net);
    }
    let vnet = net.queue_of(w).is_some_and(TapQueue::vnet_hdr);
    let tap_mtu = net.tap_mtu;
    // A kernel sender's UDP-tunnel GSO packet arrives whole (offload::tunnel): one TSO superframe to the TAP,
    // after any pending coalesced frames (flow order); without a virtio header, cut into MTU-sized frames here.
    if flen > ETHERNET_HEADER_LEN + usize::from(tap_mtu) {
        let sf = batch
            .region_mut(frange.clone())
            .and_then(|f| offload::superframe_hdr(f, tap_mtu));
        if let Some(h) = sf {
            Counters::add(&counters.tx_bytes, flen as u64);
            if vnet {
                let payload = flen.saturating_sub(usize::from(h.hdr_len));
                let segs = payload.div_ceil(usize::from(h.gso_size).max(1));
                Counters::add(&counters.tx_frames, segs as u64);
                let region = batch.region();
                st.gro.flush(region, write);
                let frame = region.bytes.get(frange).unwrap_or(&[]);
                write(&[IoSlice::new(&h.to_bytes()), IoSlice::new(frame)]);
            } else {
                let frame = batch.region_mut(frange).unwrap_or(&mut []);
                match offload::segment(&h, frame, &[], &mut st.seg_buf) {
                    Ok(s) if s.stride > 0 => {
                        Counters::add(&counters.tx_frames, s.count as u64);
                        for f in st.seg_buf.get(..s.total_len).unwrap_or(&[]).chunks(s.stride) {
                            write(&[IoSlice::new(&[0; VIRTIO_NET_HDR_LEN]), IoSlice::new(f)]);
                        }
                    }
                    _ => counters.count_drop(DropReason::BadOffload, 1),
                }
            }
            return;
        }
    }
    Counters::add(&counters.tx_frames, 1);
    Counters::add(&counters.tx_bytes, flen as u64);
    // Inner checksums a kernel sender left partial (offload::partial): NEEDS_CSUM through the virtio header,
    // or completed here when the TAP has none.
    if st.coalesce && vnet {
        st.gro.push(batch.region(), frange, write);
    } else if vnet {
        let frame = batch.region().bytes.get(frange).unwrap_or(&[]);
        write(&[IoSlice::new(&offload::rx_header(frame)), IoSlice::new(frame)]);
    } else {
        let frame = batch.region_mut(frange).unwrap_or(&mut []);
        offload::fill_partial(frame);
        write(&[IoSlice::new(&[0; VIRTIO_NET_HDR_LEN]), IoSlice::new(frame)]);
    }
}

/// One TAP write of the RX loop, as iovecs: the virtio header first, then the frame's bytes (one slice, or a
/// coalesced superframe's headers and payloads).
pub(crate) type TapWrite<'a> = dyn Fn(&[IoSlice<'_>]) + 'a;

/// Underlay → TAP, for every network of the engine's table: each accepted datagram goes to the engine's
/// worker's queue of the TAP of the network its VNI names (the table is re-read once per wakeup). `arm` is
/// this loop's handle of the daemon's [`Arming`] (`arming.rx(worker)`).
pub fn run_rx(
    engine: Engine,
    udp: &UdpSocket,
    coalesce: bool,
    stop: &AtomicBool,
    waker: &Waker,
    arm: LoopArm<'_>,
) {
    let mut fds = [
        pollfd(udp.as_raw_fd()),
        pollfd(waker.as_raw_fd()),
        pollfd(arm.nudge_fd().unwrap_or(-1)),
    ];
    let mut rx = RxLoop::new(engine, udp, coalesce);
    let mut busy = BusyPoll::new(arm.own_spin_us(rx.engine.config().busy_poll_us), Dir::Rx);
    while !stop.load(Ordering::Relaxed) {
        let r = busy.wait(POLL_MS, &rx.unattributed, Instant::now, &arm, |t| {
            poll_nudged(&mut fds, &arm, t)
        });
        if r.is_err() || fds[1].revents != 0 {
            waker.drain();
            continue;
        }
        rx.forward(&arm, &mut busy);
    }
}

/// The RX direction's state (what [`run_rx`] keeps across wakeups; a combined worker holds one too).
pub(super) struct RxLoop<'a> {
    engine: Engine,
    udp: &'a UdpSocket,
    batch: RecvBatch,
    st: RxState,
    nets: std::sync::Arc<[std::sync::Arc<crate::network::Network>]>,
    pub(super) unattributed: std::sync::Arc<Counters>,
}

impl<'a> RxLoop<'a> {
    pub(super) fn new(mut engine: Engine, udp: &'a UdpSocket, coalesce: bool) -> Self {
        engine.sync();
        RxLoop {
            udp,
            batch: RecvBatch::new(RECV_SLOTS, RECV_SLOT_SIZE),
            st: RxState {
                // Coalescing needs the virtio header; a TAP without one is written frame by frame.
                gro: Coalescer::new(if coalesce { GRO_FLOWS } else { 0 }),
                coalesce,
                // Without a virtio header, a received superframe is cut into frames here (a 64 KiB superframe
                // plus the headers of each segment).
                seg_buf: vec![0u8; 2 * RECV_SLOT_SIZE],
                // Probe replies: small, rare (a few per peer and minute), sent once per receive batch.
                replies: SendBatch::new(PROBE_REPLY_LEN * RECV_SLOTS, RECV_SLOTS),
            },
            nets: engine.networks().clone(),
            unattributed: engine.unattributed().clone(),
            engine,
        }
    }

    /// Up to [`RECV_BATCHES_PER_WAKEUP`] `recvmmsg` batches from the socket, each datagram written to its
    /// network's TAP (the table is re-read first).
    pub(super) fn forward(&mut self, arm: &LoopArm<'_>, busy: &mut BusyPoll) {
        if self.engine.sync() {
            self.nets = self.engine.networks().clone();
        }
        let w = self.engine.worker();
        let nets = &self.nets;
        // The network whose TAP the coalescer's pending frames go to.
        let cur = Cell::new(usize::MAX);
        // One TAP write per frame or coalesced superframe (gathered from the receive buffer); a full or down
        // TAP drops (counted), never blocks. Without a virtio header the first iovec (the header) is left out.
        let write = |iov: &[IoSlice<'_>]| {
            let Some(n) = nets.get(cur.get()) else { return };
            let Some(tap) = n.queue_of(w) else { return };
            let r = if tap.vnet_hdr() {
                tap.write_vectored(iov)
            } else {
                tap.write_vectored(iov.get(1..).unwrap_or(&[]))
            };
            if r.is_err() {
                n.rx.of(w).count_drop(DropReason::TapWriteError, 1);
            }
        };
        for _ in 0..RECV_BATCHES_PER_WAKEUP {
            let n = match self.udp.recv_batch(&mut self.batch) {
                Ok(n) => n,
                Err(_) => break,
            };
            if n > 0 && arm.on() {
                // Before the TAP writes: the answer comes back on this worker's TX loop (see `arm`), and a
                // local reply (ping) may be queued on the TAP before the write returns.
                arm.arm_peers(Instant::now());
            }
            rx_batch(
                &mut self.engine,
                &mut self.st,
                nets,
                &cur,
                &mut self.batch,
                n,
                &write,
            );
            if n > 0 {
                busy.worked(Instant::now());
            }
            if !self.st.replies.is_empty() {
                let _ = self.udp.send_batch(&mut self.st.replies);
                self.st.replies.clear();
            }
            if n < self.batch.capacity() {
                break;
            }
        }
    }
}

/// A probe reply: VXLAN header + minimal probe frame.
const PROBE_REPLY_LEN: usize = VXLAN_HEADER_LEN + probe::PROBE_FRAME_MIN;

/// Answer a probe request from `to` with our wall clock (for `overlayctl diag`'s clock-skew check).
fn queue_probe_reply(
    replies: &mut SendBatch,
    header: &[u8; VXLAN_HEADER_LEN],
    nonce: u64,
    to: std::net::SocketAddr,
) {
    let clock_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let reply = ProbeRepr {
        kind: ProbeKind::Reply,
        nonce,
        clock_ns,
    };
    let spare = replies.spare();
    if spare.len() < PROBE_REPLY_LEN {
        return;
    }
    spare[..VXLAN_HEADER_LEN].copy_from_slice(header);
    if let Some(n) = reply.emit(&mut spare[VXLAN_HEADER_LEN..], 0) {
        let range = replies.commit(VXLAN_HEADER_LEN + n);
        let _ = replies.push(to, range, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::datagram_ranges;

    #[test]
    fn datagram_ranges_split_a_train() {
        let r: Vec<_> = datagram_ranges(1000, 250, 100).collect();
        assert_eq!(r, vec![1000..1100, 1100..1200, 1200..1250]);
        let r: Vec<_> = datagram_ranges(0, 300, 100).collect();
        assert_eq!(r, vec![0..100, 100..200, 200..300]);
        // Not coalesced: one datagram; an empty slot is one empty datagram.
        assert_eq!(datagram_ranges(64, 80, 80).collect::<Vec<_>>(), vec![64..144]);
        assert_eq!(datagram_ranges(64, 0, 0).collect::<Vec<_>>(), vec![64..64]);
        assert_eq!(datagram_ranges(7, 5, 0).count(), 5, "stride 0 taken as 1");
    }
}
