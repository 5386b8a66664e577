//! The forwarding loops: move batches between the I/O layer and the engine. Safe code only; every syscall is in
//! [`crate::io`]. Worker `w` (`--workers`, [`Engine::worker`]) is one TX loop polling queue `w` of every
//! network's TAP (TAP → underlay) and one RX loop on its own UDP socket writing each datagram to queue `w` of
//! its network's TAP (underlay → TAP), so the two directions of a TCP connection run on different cores and
//! flows spread over workers. All take a new snapshot of the network table when its version changes.
//!
//! Per wakeup a loop handles a bounded batch (STYLE §4): up to [`TAP_READS_PER_WAKEUP`] TAP reads, each of which
//! may be a TSO superframe, or [`RECV_BATCHES_PER_WAKEUP`] `recvmmsg` batches of which each datagram may be a GRO
//! train. Sends go out as one `sendmmsg` per send socket and batch, a superframe to one VTEP as one UDP GSO
//! message (or a few), sent scatter-gather from the TAP read itself (`tx_sg`). The inner flow's hash picks the
//! send socket, i.e. the outer source port ([`crate::flow`]). Nothing here allocates after start-up and nothing
//! logs per packet.
//!
//! With `--busy-poll-us` a loop spins after its own packets (`busy`) and arms the loops where the answer will
//! arrive (`arm`: TX arms the RX loops, RX its worker's TX loop), so a round trip's wake-ups overlap the trip,
//! and/or `SCHED_IDLE` keeper threads keep the CPUs busy around traffic (`keeper`; [`Spin`] says which).

use crate::engine::{too_big, Engine, TxAction, TxVerdict};
use crate::flow;
use crate::io::{pmtu::path_mtu, poll_fds, SendBatch, SenderSet, TapQueue, Waker};
use crate::offload::{self, VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use crate::pmtu::{inner_mtu, PathMtus, PMTU_CAPACITY};
use crate::stats::{Counters, DropReason};
pub use arm::{Arming, LoopArm, Spin};
use busy::{BusyPoll, Dir, Polled};
pub use combined::run_combined;
pub use rx::run_rx;
use std::io::{ErrorKind, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
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
/// iovecs per send batch: a superframe takes two per segment (headers, payload), shared by its destinations.
const SEND_PIECES: usize = 16_384;
const POLL_MS: i32 = 500;
/// TCP flows coalesced at once on RX (each holds a 64 KiB superframe buffer).
const GRO_FLOWS: usize = 8;

/// What the TX loop may use of the kernel's offloads.
#[derive(Clone, Copy, Debug, Default)]
pub struct TxOffloads {
    /// The UDP socket accepts `UDP_SEGMENT`.
    pub udp_gso: bool,
}

/// The UDP messages that carry `range` of a send buffer holding equal segments of `stride` bytes (the last may
/// be shorter), at most `per_msg` segments per message: `(range, gso_size)`, with `gso_size` 0 for a message of
/// one datagram (no `UDP_SEGMENT` needed). Pure send planning, so it is tested without sockets.
pub fn gso_messages(
    range: Range<usize>,
    stride: usize,
    per_msg: usize,
) -> impl Iterator<Item = (Range<usize>, u16)> {
    let stride = stride.max(1);
    let step = stride.saturating_mul(per_msg.max(1));
    let gso_size = u16::try_from(stride).unwrap_or(0);
    let end = range.end;
    (range.start..end).step_by(step).map(move |start| {
        let stop = start.saturating_add(step).min(end);
        let seg = if stop - start > stride { gso_size } else { 0 };
        (start..stop, seg)
    })
}

/// The TX loop's poll set: one entry per network with a TAP, then the waker, then the nudge.
struct TxPoll {
    fds: Vec<libc::pollfd>,
    /// Network index (in [`Engine::networks`]) of each TAP entry of `fds`.
    nets: Vec<usize>,
}

impl TxPoll {
    fn build(engine: &Engine, waker: &Waker, arm: &LoopArm<'_>) -> TxPoll {
        let mut p = TxPoll {
            fds: Vec::new(),
            nets: Vec::new(),
        };
        for (i, n) in engine.networks().iter().enumerate() {
            if let Some(q) = n.queue_of(engine.worker()) {
                p.fds.push(pollfd(q.as_raw_fd()));
                p.nets.push(i);
            }
        }
        p.fds.push(pollfd(waker.as_raw_fd()));
        p.fds.push(pollfd(arm.nudge_fd().unwrap_or(-1)));
        p
    }

    fn woken(&self) -> bool {
        self.fds.len() >= 2 && self.fds[self.fds.len() - 2].revents != 0
    }
}

/// `poll` over `fds` whose last entry is the loop's nudge eventfd (fd -1, ignored by `poll`, when busy-polling
/// is off): the nudge is drained and left out of the count.
fn poll_nudged(fds: &mut [libc::pollfd], arm: &LoopArm<'_>, timeout_ms: i32) -> std::io::Result<Polled> {
    let n = poll_fds(fds, timeout_ms)?;
    let nudged = fds.last().is_some_and(|f| f.revents != 0);
    if nudged {
        arm.drain();
    }
    Ok(Polled {
        events: n.saturating_sub(usize::from(nudged)),
        nudged,
    })
}

/// TAP → underlay, for every network of the engine's table: one poll over the engine's worker's queue of all
/// TAPs (rebuilt when the table changes; wake the loop through `waker` after changing it). Several TX loops
/// may share `udp` (each `sendmmsg` is one syscall). `arm` is this loop's handle of the daemon's [`Arming`]
/// (`arming.tx(worker)`).
pub fn run_tx(
    engine: Engine,
    udp: &SenderSet,
    offloads: TxOffloads,
    stop: &AtomicBool,
    waker: &Waker,
    arm: LoopArm<'_>,
) {
    let mut tx = TxLoop::new(engine, udp, offloads, waker, &arm);
    let mut busy = BusyPoll::new(arm.own_spin_us(tx.engine.config().busy_poll_us), Dir::Tx);
    while !stop.load(Ordering::Relaxed) {
        let r = busy.wait(POLL_MS, tx.engine.unattributed(), Instant::now, &arm, |t| {
            poll_nudged(&mut tx.poll.fds, &arm, t)
        });
        let woken = tx.poll.woken();
        if woken {
            waker.drain();
        }
        // A changed table, a wakeup (a TAP recreated) or a quiet interval: rebuild the poll set (which also
        // re-enables TAPs set aside as broken).
        if tx.engine.sync() || woken || matches!(r, Ok(0)) {
            tx.rebuild(waker, &arm);
            continue;
        }
        if r.is_err() {
            continue;
        }
        if tx.forward(Instant::now(), &arm) {
            busy.worked(Instant::now());
        }
    }
}

/// The TX direction's state (what [`run_tx`] keeps across wakeups; a combined worker holds one too).
struct TxLoop<'a> {
    engine: Engine,
    udp: &'a SenderSet,
    offloads: TxOffloads,
    // TAP reads land in the send batch and are sent from there (tx_sg): no separate read buffer.
    send: SendBatch,
    act: TxAction,
    pmtus: PathMtus,
    icmp: Vec<u8>,
    local: IpAddr,
    overhead: u32,
    nets: std::sync::Arc<[std::sync::Arc<crate::network::Network>]>,
    poll: TxPoll,
}

impl<'a> TxLoop<'a> {
    fn new(
        mut engine: Engine,
        udp: &'a SenderSet,
        offloads: TxOffloads,
        waker: &Waker,
        arm: &LoopArm<'_>,
    ) -> Self {
        let local = engine.config().local;
        engine.sync();
        let nets = engine.networks().clone();
        let poll = TxPoll::build(&engine, waker, arm);
        TxLoop {
            udp,
            offloads,
            send: SendBatch::with_pieces(SEND_DATA, SEND_MSGS, SEND_PIECES),
            act: TxAction::default(),
            pmtus: PathMtus::new(PMTU_CAPACITY),
            icmp: vec![0u8; too_big::MAX_REPLY_LEN],
            local,
            overhead: crate::wire::vxlan::vxlan_overhead(local),
            nets,
            poll,
            engine,
        }
    }

    /// Take the engine's current table and rebuild the poll set from it.
    fn rebuild(&mut self, waker: &Waker, arm: &LoopArm<'_>) {
        self.nets = self.engine.networks().clone();
        self.poll = TxPoll::build(&self.engine, waker, arm);
    }

    /// Read and send what the TAPs whose poll entry has events hold; returns whether any had.
    fn forward(&mut self, now: Instant, arm: &LoopArm<'_>) -> bool {
        let mut handled = false;
        for k in 0..self.poll.nets.len() {
            if self.poll.fds[k].revents == 0 {
                continue;
            }
            if !handled {
                // Before the send: a sleeping RX loop's vCPU starts waking while the frame crosses the peer
                // (arming one that is awake is a load and no syscall).
                arm.arm_peers(now);
                handled = true;
            }
            let ni = self.poll.nets[k];
            let Some(tap) = self.nets.get(ni).and_then(|n| n.queue_of(self.engine.worker())) else {
                continue;
            };
            if tx_tap(
                &mut self.engine,
                ni,
                tap,
                self.udp,
                self.offloads,
                &mut self.send,
                &mut self.act,
                &mut self.pmtus,
                &mut self.icmp,
                self.local,
                self.overhead,
                now,
            ) {
                // A deleted TAP polls POLLERR and reads EBADFD forever: leave it out of the poll set until
                // the daemon's device watcher has recreated it behind the same fd (and woken us), instead
                // of spinning.
                self.poll.fds[k].fd = -1;
            }
        }
        flush(
            self.udp,
            &mut self.send,
            self.engine.unattributed(),
            &mut self.pmtus,
        );
        handled
    }
}

/// Up to [`TAP_READS_PER_WAKEUP`] reads from network `ni`'s TAP, queued into `send`. Returns whether the TAP
/// is broken (a read error other than `EAGAIN`).
#[allow(clippy::too_many_arguments)]
fn tx_tap(
    engine: &mut Engine,
    ni: usize,
    tap: &TapQueue,
    udp: &SenderSet,
    offloads: TxOffloads,
    send: &mut SendBatch,
    act: &mut TxAction,
    pmtus: &mut PathMtus,
    icmp: &mut [u8],
    local: IpAddr,
    overhead: u32,
    now: Instant,
) -> bool {
    let counters = engine.counters_of(ni).clone();
    let vnet = tap.vnet_hdr();
    let lead = if vnet { VIRTIO_NET_HDR_LEN } else { 0 };
    for _ in 0..TAP_READS_PER_WAKEUP {
        // The read goes into the send batch (after room for a VXLAN header) and its payload is sent from
        // there, so the batch is flushed first when a whole read and its segment headers might not fit.
        if tx_sg::must_flush_before_read(send, TAP_BUF) {
            flush(udp, send, engine.unattributed(), pmtus);
        }
        let into = send
            .spare()
            .get_mut(tx_sg::HEADROOM..tx_sg::HEADROOM + TAP_BUF)
            .unwrap_or(&mut []);
        let n = match tap.read(into) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        };
        let Some(read) = send.spare().get_mut(tx_sg::HEADROOM..tx_sg::HEADROOM + n) else {
            break;
        };
        let (mut hdr, frame) = if vnet {
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
        // The frame's place in the spare area.
        let frame_at = tx_sg::HEADROOM + lead.min(n)..tx_sg::HEADROOM + n;
        let est_segs = match usize::from(hdr.gso_size) {
            0 => 1,
            g => frame.len() / g + 1,
        };
        match engine.on_tap(now, ni, frame, act) {
            Ok(TxVerdict::Send) => {}
            // ARP/ND suppression: the answer goes back into the TAP it came from; nothing is sent.
            Ok(TxVerdict::Reply(n)) => {
                write_tap(tap, vnet, act.reply(n), &counters);
                continue;
            }
            Ok(TxVerdict::Consumed) => continue,
            Err(r) => {
                counters.count_drop(r, est_segs as u64);
                continue;
            }
        }
        // Path MTU (issue 9 §3): a frame too big for the path to its VTEP(s) is answered with ICMP, a
        // TCP superframe is cut to fit.
        if let Some(limit) = path_inner_mtu(pmtus, local, overhead, &act.dests, now) {
            if hdr.gso_size == 0 || hdr.gso_type == offload::VIRTIO_NET_HDR_GSO_NONE {
                if too_big::exceeds(frame, limit as usize) {
                    if let Some(n) = too_big::reply(frame, limit, icmp) {
                        write_tap(tap, vnet, icmp.get(..n).unwrap_or(&[]), &counters);
                    }
                    counters.count_drop(DropReason::TooBig, 1);
                    continue;
                }
            } else {
                match offload::fit_mss(&hdr, frame, limit as usize) {
                    Ok(h) => hdr = h,
                    // UDP GSO datagrams over the path MTU cannot be re-cut.
                    Err(offload::OffloadError::Unsupported(..)) => {
                        counters.count_drop(DropReason::TooBig, est_segs as u64);
                        continue;
                    }
                    Err(_) => {
                        counters.count_drop(DropReason::BadOffload, est_segs as u64);
                        continue;
                    }
                }
            }
        }
        // The flow's socket: its outer source port. `udp.len()` fits u16 (the config caps it).
        let sock = u16::try_from(flow::pick(act.flow_hash, udp.len())).unwrap_or(0);
        let queued = tx_sg::queue_frame(
            send,
            frame_at,
            &hdr,
            engine.header_of(ni),
            &act.dests,
            sock,
            offloads.udp_gso,
            &counters,
            |s| flush(udp, s, engine.unattributed(), pmtus),
        );
        if queued.is_err() {
            let est_segs = match usize::from(hdr.gso_size) {
                0 => 1,
                g => n / g + 1,
            };
            counters.count_drop(DropReason::BadOffload, est_segs as u64);
        }
    }
    false
}

fn flush(udp: &SenderSet, send: &mut SendBatch, counters: &Counters, pmtus: &mut PathMtus) {
    if send.is_empty() {
        return;
    }
    let report = udp.send_batch(send);
    if report.failed > 0 {
        counters.count_drop(DropReason::SendError, report.failed as u64);
    }
    if report.too_big > 0 {
        // EMSGSIZE: a path shrank under us. Re-probe (IP_MTU) on the next frame to each VTEP.
        pmtus.forget_all();
    }
}

/// The inner MTU towards `dests` (the smallest path MTU among them minus the VXLAN overhead), probing the
/// kernel (`IP_MTU`) for VTEPs not in `pmtus` (a socket and a few syscalls, at most once per VTEP per
/// [`crate::pmtu::PMTU_TTL`] or after an `EMSGSIZE`). `None` when no path is known (the send reports).
fn path_inner_mtu(
    pmtus: &mut PathMtus,
    local: IpAddr,
    overhead: u32,
    dests: &[SocketAddr],
    now: Instant,
) -> Option<u32> {
    let mut min: Option<u32> = None;
    for d in dests {
        let m = match pmtus.get(d.ip(), now) {
            Some(m) => m,
            None => {
                // A failed probe is remembered as "no limit known" too, so it is not retried per frame.
                let m = path_mtu(local, d.ip()).unwrap_or(u32::MAX);
                pmtus.learn(d.ip(), m, now);
                m
            }
        };
        min = Some(min.map_or(m, |x| x.min(m)));
    }
    min.filter(|m| *m != u32::MAX).map(|m| inner_mtu(m, overhead))
}

/// Write one frame (no offload) to the TAP (an ICMP too-big or an ARP/ND reply); a failure is counted, never
/// waited for.
fn write_tap(tap: &TapQueue, vnet: bool, frame: &[u8], counters: &Counters) {
    let r = if vnet {
        tap.write_vectored(&[IoSlice::new(&[0; VIRTIO_NET_HDR_LEN]), IoSlice::new(frame)])
    } else {
        tap.write(frame)
    };
    if r.is_err() {
        counters.count_drop(DropReason::TapWriteError, 1);
    }
}

fn pollfd(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gso_messages_split_at_per_msg_segments() {
        // 10 segments of 100 bytes and a 30-byte tail, 4 per message.
        let m: Vec<_> = gso_messages(1000..2030, 100, 4).collect();
        assert_eq!(m, vec![(1000..1400, 100), (1400..1800, 100), (1800..2030, 100)]);
        // One message per datagram (no GSO): gso_size 0 everywhere.
        let m: Vec<_> = gso_messages(0..250, 100, 1).collect();
        assert_eq!(m, vec![(0..100, 0), (100..200, 0), (200..250, 0)]);
        // A lone tail segment needs no UDP_SEGMENT.
        let m: Vec<_> = gso_messages(0..430, 100, 4).collect();
        assert_eq!(m, vec![(0..400, 100), (400..430, 0)]);
        assert_eq!(gso_messages(5..5, 100, 4).count(), 0);
        // Degenerate inputs do not loop forever or panic.
        assert_eq!(gso_messages(0..3, 0, 0).count(), 3);
    }

    proptest::proptest! {
        #[test]
        fn gso_messages_cover_the_range(start in 0usize..5000, len in 0usize..200_000, stride in 1usize..2000,
                                        per_msg in 1usize..80) {
            let mut at = start;
            for (r, seg) in gso_messages(start..start + len, stride, per_msg) {
                proptest::prop_assert_eq!(r.start, at);
                proptest::prop_assert!(r.len() <= stride * per_msg && !r.is_empty());
                proptest::prop_assert_eq!(seg != 0, r.len() > stride);
                if seg != 0 {
                    proptest::prop_assert_eq!(usize::from(seg), stride);
                }
                at = r.end;
            }
            proptest::prop_assert_eq!(at, start + len);
        }
    }
}

mod arm;
mod busy;
mod combined;
mod keeper;
mod rx;

#[cfg(test)]
mod netns_tests;
mod tx_sg;
