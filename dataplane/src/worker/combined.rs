//! One thread per worker for both directions (`--worker-loops combined`): the worker's TX state (queue `w` of
//! every TAP → underlay) and RX state (its UDP socket → TAP) behind one `poll` over both fd sets.
//!
//! Why (README "Latency and busy-poll", traced): a ping through overlayd wakes four loops per round trip. On
//! the answering host the RX loop's TAP write runs the container's answer in its own softirq, so the reply is
//! queued on the TAP before the write returns, and with split loops that wakes the worker's TX loop: a
//! context switch, a `poll` return, and when the scheduler puts the TX loop on another (halted) vCPU an IPI
//! and a vCPU wake-up through the hypervisor (~60 µs in the trace). A combined worker instead finds the TAP
//! readable in its next `poll`, which returns at once: one wake-up fewer per round trip, no second thread.
//! The price: a worker's two directions no longer run in parallel on two cores.
//!
//! The loops' own busy-poll spin (`--busy-poll-spin loops|both`) is not used here (the worker blocks in
//! `poll`; the daemon's config refuses those with `--worker-loops combined`); the keepers are (a forwarded
//! batch arms them as in the split loops).

use super::busy::{BusyPoll, Dir};
use super::rx::RxLoop;
use super::{pollfd, LoopArm, TxLoop, TxOffloads, POLL_MS};
use crate::engine::Engine;
use crate::io::{poll_fds, SenderSet, UdpSocket, Waker};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The RX entries after the TX loop's poll set: the UDP socket, then the RX waker.
const RX_FDS: usize = 2;

/// The combined poll set: the TX loop's entries (TAPs, TX waker, TX nudge), then the RX entries.
fn combine(fds: &mut Vec<libc::pollfd>, tx: &[libc::pollfd], udp: &UdpSocket, rx_waker: &Waker) {
    fds.clear();
    fds.extend_from_slice(tx);
    fds.push(pollfd(udp.as_raw_fd()));
    fds.push(pollfd(rx_waker.as_raw_fd()));
}

/// Worker `tx_engine.worker()` as one thread: what [`super::run_tx`] and [`super::run_rx`] do for that worker,
/// with both wakers (either wakes it) and both arming handles (for the keepers).
#[allow(clippy::too_many_arguments)]
pub fn run_combined(
    tx_engine: Engine,
    rx_engine: Engine,
    senders: &SenderSet,
    udp: &UdpSocket,
    offloads: TxOffloads,
    coalesce: bool,
    stop: &AtomicBool,
    wakers: (&Waker, &Waker),
    arms: (LoopArm<'_>, LoopArm<'_>),
) {
    let (tx_waker, rx_waker) = wakers;
    let (tx_arm, rx_arm) = arms;
    let mut tx = TxLoop::new(tx_engine, senders, offloads, tx_waker, &tx_arm);
    let mut rx = RxLoop::new(rx_engine, udp, coalesce);
    let mut fds = Vec::new();
    combine(&mut fds, &tx.poll.fds, udp, rx_waker);
    // No own spin (see the module doc): `worked` is a no-op.
    let mut busy = BusyPoll::new(0, Dir::Rx);
    // Under steady RX traffic `poll` never times out: the quiet-interval rebuild (which re-enables a TAP set
    // aside as broken) is also done when POLL_MS has passed since the last one.
    let interval = Duration::from_millis(POLL_MS.unsigned_abs().into());
    let mut rebuilt = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let r = poll_fds(&mut fds, POLL_MS);
        let t = tx.poll.fds.len();
        for (mine, polled) in tx.poll.fds.iter_mut().zip(&fds) {
            mine.revents = polled.revents;
        }
        let (sock, rx_woken) = match fds.get(t..t + RX_FDS) {
            Some([s, w]) => (s.revents != 0, w.revents != 0),
            _ => (false, false),
        };
        if rx_woken {
            rx_waker.drain();
        }
        // The TX nudge (written only by loops that spin, never while we do not mark ourselves asleep).
        if tx.poll.fds.last().is_some_and(|f| f.revents != 0) {
            tx_arm.drain();
        }
        let woken = tx.poll.woken();
        if woken {
            tx_waker.drain();
        }
        // As in run_tx: a changed table, a wakeup or a quiet interval (or POLL_MS of traffic) rebuilds the TX
        // poll set. Events still pending are reported again by the next (level-triggered) poll.
        if tx.engine.sync() || woken || matches!(r, Ok(0)) || rebuilt.elapsed() >= interval {
            tx.rebuild(tx_waker, &tx_arm);
            rebuilt = Instant::now();
            combine(&mut fds, &tx.poll.fds, udp, rx_waker);
            continue;
        }
        if r.is_err() {
            continue;
        }
        // RX first: a reply the TAP writes produce (a ping's answer) is readable in the next poll, which then
        // returns at once, instead of waking a second thread.
        if sock {
            rx.forward(&rx_arm, &mut busy);
        }
        tx.forward(Instant::now(), &tx_arm);
        // A TAP the TX state set aside as broken (fd -1 until the device watcher wakes us) leaves the
        // combined set too, or its POLLERR would end every poll at once.
        for (polled, mine) in fds.iter_mut().zip(&tx.poll.fds) {
            polled.fd = mine.fd;
        }
    }
}
