//! Cross-loop arming for `--busy-poll-us`: a loop that forwarded packets makes the loops where the answer
//! will arrive spin too, waking them if they sleep.
//!
//! Why: a round trip through overlayd (a ping, a request/response) crosses four loops, each asleep in `poll`
//! between round trips: host A's TX loop (the request from the TAP), host B's RX loop (UDP → TAP), host B's
//! TX loop (the reply from the TAP), host A's RX loop. Each wake-up of a sleeping thread on an idle vCPU costs
//! a vCPU wake-up through the hypervisor (README "Latency and busy-poll"). A loop spinning after its *own*
//! packet does not help: the next packet of the round trip always lands on the *other* loop of that host.
//! So when a loop has forwarded packets it arms its "answer" loops: they poll without sleeping until
//! `now + budget`, and one asleep in `poll` is woken through its own eventfd (the *nudge*). On host A the RX
//! loop then wakes while the request crosses host B, on host B the TX loop while the container answers: the
//! wake-ups overlap the trip instead of adding to it.
//!
//! Which loops are armed (loop `2w` is worker `w`'s TX loop, `2w + 1` its RX loop):
//! - **TX → every RX loop.** The answer comes back as a datagram on one socket of the `SO_REUSEPORT` group,
//!   chosen by the kernel's hash of the *peer's* outer 4-tuple (its source port is the peer's flow hash),
//!   which this host cannot predict.
//! - **RX → the TX loop of the same worker.** The RX loop of worker `w` writes to queue `w` of the TAP; the
//!   multiqueue TAP records the flow's (symmetric) hash for the queue a frame was written on and steers
//!   frames of that flow coming back from the kernel to the same queue (`tun_flow_update` /
//!   `tun_automq_select_queue`), so the reply is read by TX loop `w`.
//!
//! When: as a batch starts, before the frames are sent (TX) or written to the TAP (RX). A ping's reply is
//! queued on the TAP during the RX loop's write itself, and the peer's RX loop is woken during the TX loop's
//! send; arming first lets the armed loop's vCPU start waking before that, at the price of one eventfd write
//! ahead of the frame when (and only when) the armed loop sleeps.
//!
//! Cost: the busy path pays no syscall per batch. The arming loop writes a target's deadline only when it
//! would move it by more than half the budget (so a busy loop writes each shared cache line at most once per
//! half budget), and writes a target's eventfd only if that loop marked itself asleep. Sleep and arm race
//! safely: the sleeper stores `sleeping` and then re-reads the deadline, the armer stores the deadline and
//! then reads `sleeping` (both `SeqCst`), so at least one of them sees the other. With `--busy-poll-us 0`
//! there are no slots: nothing is armed, no eventfd exists and no loop ever spins.

use super::busy::Armed;
use super::keeper::{self, Keepers};
use crate::io::Waker;
use crate::stats::Counters;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

/// Who spins for `--busy-poll-us`: the forwarding loops themselves (own spin + cross-loop arming), the
/// `SCHED_IDLE` keepers (`worker/keeper.rs`; the loops then block in `poll` as without busy-poll), or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spin {
    Loops,
    Keepers,
    Both,
}

impl Spin {
    fn loops(self) -> bool {
        self != Spin::Keepers
    }

    fn keepers(self) -> bool {
        self != Spin::Loops
    }
}

/// The arming state shared by all forwarding loops of one daemon.
#[derive(Debug)]
pub struct Arming {
    epoch: Instant,
    budget_ns: u64,
    workers: usize,
    spin: Spin,
    /// Loop `2w` is worker `w`'s TX loop, `2w + 1` its RX loop; empty when busy-polling is off or only the
    /// keepers spin.
    slots: Box<[Slot]>,
    keepers: Keepers,
    /// The CPU each keeper is pinned to.
    keeper_cpus: Vec<Option<usize>>,
}

/// One loop's shared state, on its own cache line so loops never bounce each other's lines.
#[derive(Debug)]
#[repr(align(64))]
struct Slot {
    /// Nanoseconds since [`Arming::epoch`] until which the loop spins (0: never armed).
    until_ns: AtomicU64,
    /// The loop is in (or about to enter) a blocking `poll`.
    sleeping: AtomicBool,
    nudge: Waker,
}

impl Arming {
    /// The arming of `workers` workers' loops with a budget of `budget_us` µs (`--busy-poll-us`; 0 turns it
    /// off: no eventfds are created) and `spin` saying who spins (`--busy-poll-spin`). Fails only if an
    /// eventfd cannot be created.
    pub fn new(workers: usize, budget_us: u32, spin: Spin) -> io::Result<Arming> {
        let cpus = match budget_us != 0 && spin.keepers() {
            true => keeper::placement(2 * workers),
            false => Vec::new(),
        };
        Self::with(workers, budget_us, spin, cpus)
    }

    /// [`Arming::new`] with who spins and the keepers' CPUs (one keeper each) given.
    pub fn with(
        workers: usize,
        budget_us: u32,
        spin: Spin,
        keeper_cpus: Vec<Option<usize>>,
    ) -> io::Result<Arming> {
        let epoch = Instant::now();
        let keeper_cpus = if budget_us == 0 || !spin.keepers() {
            Vec::new()
        } else {
            keeper_cpus
        };
        let slots = if budget_us == 0 || !spin.loops() {
            Vec::new()
        } else {
            (0..2 * workers)
                .map(|_| {
                    Ok(Slot {
                        until_ns: AtomicU64::new(0),
                        sleeping: AtomicBool::new(false),
                        nudge: Waker::new()?,
                    })
                })
                .collect::<io::Result<Vec<_>>>()?
        };
        Ok(Arming {
            epoch,
            budget_ns: u64::from(budget_us) * 1000,
            workers,
            spin,
            slots: slots.into_boxed_slice(),
            keepers: Keepers::new(keeper_cpus.len(), epoch)?,
            keeper_cpus,
        })
    }

    /// How many keeper threads to start ([`Arming::run_keeper`] `0..n`); 0 when busy-polling is off or only
    /// the loops spin.
    pub fn keepers(&self) -> usize {
        self.keepers.count()
    }

    /// Keeper `k`'s thread (see `worker/keeper.rs`); returns when `stop` is set and
    /// [`Arming::wake_keepers`] called. Fails only if the thread cannot be made `SCHED_IDLE`.
    pub fn run_keeper(&self, k: usize, stop: &AtomicBool, counters: &Counters) -> io::Result<()> {
        let cpu = self.keeper_cpus.get(k).copied().flatten();
        self.keepers.run(k, cpu, stop, counters)
    }

    /// Wake the sleeping keepers (after setting `stop`).
    pub fn wake_keepers(&self) {
        self.keepers.wake_all();
    }

    /// The budget of a loop's own spin after its packets: `budget_us`, or 0 when only the keepers spin.
    pub fn own_spin_us(&self, budget_us: u32) -> u32 {
        if self.spin.loops() {
            budget_us
        } else {
            0
        }
    }

    /// Worker `w`'s TX loop's handle.
    pub fn tx(&self, w: usize) -> LoopArm<'_> {
        LoopArm {
            arming: self,
            me: 2 * w,
        }
    }

    /// Worker `w`'s RX loop's handle.
    pub fn rx(&self, w: usize) -> LoopArm<'_> {
        LoopArm {
            arming: self,
            me: 2 * w + 1,
        }
    }

    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The loops that loop `me`'s packets arm (see the module doc): a TX loop arms every RX loop, an RX loop the
/// TX loop of its own worker.
pub fn targets(me: usize, workers: usize) -> impl Iterator<Item = usize> {
    let tx = me % 2 == 0;
    let (from, to, step) = if tx { (1, 2 * workers, 2) } else { (me - 1, me, 1) };
    (from..to).step_by(step)
}

/// One loop's view of the [`Arming`].
#[derive(Debug, Clone, Copy)]
pub struct LoopArm<'a> {
    arming: &'a Arming,
    me: usize,
}

impl LoopArm<'_> {
    fn slot(&self) -> Option<&Slot> {
        self.arming.slots.get(self.me)
    }

    /// The eventfd to add to the loop's poll set (`None` when busy-polling is off).
    pub fn nudge_fd(&self) -> Option<RawFd> {
        self.slot().map(|s| s.nudge.as_raw_fd())
    }

    /// Reset the nudge after `poll` reported it.
    pub fn drain(&self) {
        if let Some(s) = self.slot() {
            s.nudge.drain();
        }
    }

    /// The budget of this loop's own spin: see [`Arming::own_spin_us`].
    pub fn own_spin_us(&self, budget_us: u32) -> u32 {
        self.arming.own_spin_us(budget_us)
    }

    /// Whether arming is on (`--busy-poll-us` > 0): the loops skip even the clock read when it is off.
    pub fn on(&self) -> bool {
        self.arming.budget_ns != 0
    }

    /// This loop forwarded packets at `now`: arm its answer loops until `now + budget`, waking those asleep.
    /// Returns how many were woken. No syscall unless a target sleeps; no shared write unless a target's
    /// deadline moves by more than half the budget.
    pub fn arm_peers(&self, now: Instant) -> usize {
        if !self.on() {
            return 0;
        }
        let a = self.arming;
        let until = a.ns(now).saturating_add(a.budget_ns);
        let mut woken = a.keepers.keep(until, a.budget_ns / 2);
        for t in targets(self.me, a.workers) {
            let Some(s) = a.slots.get(t) else { continue };
            if s.until_ns.load(Relaxed).saturating_add(a.budget_ns / 2) >= until {
                continue;
            }
            s.until_ns.fetch_max(until, SeqCst);
            if s.sleeping.load(SeqCst) {
                s.nudge.wake();
                woken += 1;
            }
        }
        woken
    }
}

impl Armed for LoopArm<'_> {
    fn armed_until(&self) -> Option<Instant> {
        let ns = self.slot()?.until_ns.load(SeqCst);
        (ns != 0).then(|| self.arming.epoch + Duration::from_nanos(ns))
    }

    fn sleeping(&self, yes: bool) {
        if let Some(s) = self.slot() {
            s.sleeping.store(yes, SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::poll::wait_fd;

    #[test]
    fn tx_arms_every_rx_loop_and_rx_its_own_tx_loop() {
        let v = |me, w| targets(me, w).collect::<Vec<_>>();
        assert_eq!(v(0, 1), [1]);
        assert_eq!(v(1, 1), [0]);
        assert_eq!(v(0, 3), [1, 3, 5]);
        assert_eq!(v(4, 3), [1, 3, 5]);
        assert_eq!(v(3, 3), [2]);
        assert_eq!(v(5, 3), [4]);
    }

    fn nudged(l: &LoopArm<'_>) -> bool {
        wait_fd(l.nudge_fd().unwrap(), libc::POLLIN, 0).unwrap()
    }

    #[test]
    fn arming_sets_the_deadline_and_wakes_only_sleepers() {
        let a = Arming::with(2, 100, Spin::Loops, vec![]).unwrap();
        let (tx0, rx0, rx1, tx1) = (a.tx(0), a.rx(0), a.rx(1), a.tx(1));
        let t0 = Instant::now();
        assert_eq!(rx0.armed_until(), None);
        // rx1 sleeps, rx0 spins: only rx1's eventfd is written.
        rx1.sleeping(true);
        assert_eq!(tx0.arm_peers(t0), 1);
        assert!(nudged(&rx1) && !nudged(&rx0));
        let until = rx0.armed_until().unwrap();
        assert!(until >= t0 + Duration::from_micros(100) && until < t0 + Duration::from_micros(101));
        assert_eq!(rx1.armed_until(), Some(until));
        // TX loops were not armed by a TX loop.
        assert_eq!((tx0.armed_until(), tx1.armed_until()), (None, None));
        rx1.drain();
        assert!(!nudged(&rx1));
        // Within half a budget the deadline is not rewritten and nobody is woken again.
        assert_eq!(tx0.arm_peers(t0 + Duration::from_micros(40)), 0);
        assert_eq!(rx0.armed_until(), Some(until));
        assert!(!nudged(&rx1));
        // Past half a budget it moves (and a sleeper is woken again).
        assert_eq!(tx0.arm_peers(t0 + Duration::from_micros(60)), 1);
        assert_eq!(rx0.armed_until(), Some(t0 + Duration::from_micros(160)));
        // RX loop 1 arms TX loop 1 only.
        rx1.sleeping(false);
        tx1.sleeping(true);
        assert_eq!(rx1.arm_peers(t0), 1);
        assert!(tx1.armed_until().is_some() && tx0.armed_until().is_none());
        assert!(nudged(&tx1) && !nudged(&tx0));
    }

    /// Only the keepers spin: the loops get no own budget and no nudge, an arming keeps the keepers busy.
    #[test]
    fn keepers_only_arms_the_keepers() {
        let a = Arming::with(2, 100, Spin::Keepers, vec![None, None]).unwrap();
        let (tx0, rx1) = (a.tx(0), a.rx(1));
        assert_eq!((a.keepers(), a.own_spin_us(100)), (2, 0));
        assert!(tx0.on() && tx0.nudge_fd().is_none());
        let t0 = Instant::now();
        assert!(!a.keepers.keeping(t0));
        tx0.arm_peers(t0);
        assert!(a.keepers.keeping(t0 + Duration::from_micros(99)));
        assert!(!a.keepers.keeping(t0 + Duration::from_micros(100)));
        assert_eq!(rx1.armed_until(), None, "the loops are not armed");
        // Both: the loops spin and are armed, and the keepers are kept.
        let a = Arming::with(1, 100, Spin::Both, vec![Some(0)]).unwrap();
        assert_eq!((a.keepers(), a.own_spin_us(100)), (1, 100));
        a.tx(0).arm_peers(t0);
        assert!(a.rx(0).armed_until().is_some() && a.keepers.keeping(t0));
        // Loops: no keeper even if CPUs are given.
        let a = Arming::with(1, 100, Spin::Loops, vec![Some(0)]).unwrap();
        assert_eq!(a.keepers(), 0);
    }

    #[test]
    fn off_has_no_eventfds_and_never_arms() {
        let a = Arming::new(4, 0, Spin::Keepers).unwrap();
        assert_eq!(a.keepers(), 0);
        let tx = a.tx(0);
        tx.sleeping(true);
        assert_eq!(a.rx(0).arm_peers(Instant::now()), 0);
        assert_eq!((tx.nudge_fd(), tx.armed_until()), (None, None));
        tx.drain();
    }
}
