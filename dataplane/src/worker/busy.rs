//! Adaptive busy-polling: the wait step of the forwarding loops (`--busy-poll-us`).
//!
//! After a loop has handled packets it keeps polling its fds without sleeping (`poll` with timeout 0) for up
//! to a budget of microseconds since the last packet, then goes back to a blocking `poll`. This is NAPI
//! busy-poll / DPDK and VPP "adaptive" mode on a small scale: an idle daemon costs nothing, a loop carrying
//! traffic keeps its vCPU out of the idle state, so the next packet of a round trip does not pay a vCPU
//! wake-up (measured: the bulk of overlayd's extra ping RTT on the project's VMs; README "Latency").
//!
//! A loop also spins while another loop has *armed* it ([`Armed`], `worker/arm.rs`): the next packet of a
//! round trip lands on the other loop of the host, so the loop that forwarded a packet arms the loop where the
//! answer will arrive, waking it if it sleeps. Such a wake-up runs while the packet is on its way.
//!
//! [`BusyPoll`] is the pure state machine (fed `now`, unit-tested); [`BusyPoll::wait`] drives it with a poll
//! function, a clock and the loop's arming given by the caller. Between empty polls it hints the CPU
//! (`spin_loop`) and yields (`sched_yield`), so on a 2-vCPU machine a spinning loop hands its CPU to any other
//! runnable thread (the other loop, the application) instead of starving it until the budget runs out.

use crate::stats::Counters;
use std::io;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// What the wait step needs of the loops' shared arming (`worker/arm.rs`; a fake in the tests).
pub trait Armed {
    /// Until when another loop asked this loop to spin (`None`: never).
    fn armed_until(&self) -> Option<Instant>;
    /// The loop is about to block in `poll` (`true`) or has returned from it (`false`). After `true`, `wait`
    /// reads [`Armed::armed_until`] again before blocking, so an arming racing with the sleep is never lost.
    fn sleeping(&self, yes: bool);
}

/// A loop that is never armed.
#[cfg(test)]
pub struct NotArmed;

#[cfg(test)]
impl Armed for NotArmed {
    fn armed_until(&self) -> Option<Instant> {
        None
    }
    fn sleeping(&self, _: bool) {}
}

/// One `poll` as the wait step sees it: fds with events (the nudge left out) and whether the loop's nudge
/// eventfd (written by an arming loop) fired; the caller drains it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Polled {
    pub events: usize,
    pub nudged: bool,
}

/// Which loop a [`BusyPoll`] belongs to (for the armed-hit counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Tx,
    Rx,
}

/// Busy-poll state of one loop.
#[derive(Debug, Clone)]
pub struct BusyPoll {
    budget: Duration,
    /// When the loop last handled packets.
    last_work: Option<Instant>,
    dir: Dir,
}

impl BusyPoll {
    /// A loop that spins for `budget_us` µs after its last packet; 0 turns busy-polling off.
    pub fn new(budget_us: u32, dir: Dir) -> Self {
        BusyPoll {
            budget: Duration::from_micros(u64::from(budget_us)),
            last_work: None,
            dir,
        }
    }

    /// The loop handled packets at `now`: the budget starts again from here.
    pub fn worked(&mut self, now: Instant) {
        if !self.budget.is_zero() {
            self.last_work = Some(now);
        }
    }

    /// Whether the loop should poll without sleeping at `now`: less than the budget since the last packet.
    pub fn spinning(&self, now: Instant) -> bool {
        self.last_work
            .is_some_and(|t| now.saturating_duration_since(t) < self.budget)
    }

    /// Wait for events: `poll(timeout)` (the caller's `poll_fds` over its fd set) with timeout 0 while
    /// spinning — within the budget since the loop's own last packet, or while `arm` says another loop armed
    /// it — yielding the CPU between empty polls, then a blocking `poll(idle_ms)`. A blocking poll that only
    /// the nudge ended (an arming loop woke us) goes back to spinning and counts `busy_poll_wakes`; one that
    /// the nudge and a packet ended returns the packet as an armed hit (the wake-up overlapped its trip). Returns
    /// the first poll result with events, an error, or the blocking poll's result. A blocking poll's `Ok(0)`
    /// keeps meaning "a quiet interval" for the caller; a spinning poll never returns `Ok(0)`.
    /// The zero-timeout polls of each spell are added to `counters.busy_polls` once (not per poll, so two
    /// spinning loops never bounce a shared cache line), the spells that found events to `busy_poll_hits`,
    /// and those of them that spun only because another loop armed this one (its own budget spent) to
    /// `busy_poll_armed_hits_tx`/`_rx`.
    pub fn wait(
        &mut self,
        idle_ms: i32,
        counters: &Counters,
        mut clock: impl FnMut() -> Instant,
        arm: &impl Armed,
        mut poll: impl FnMut(i32) -> io::Result<Polled>,
    ) -> io::Result<usize> {
        let mut spins = 0u64;
        let armed = |now: Instant| arm.armed_until().is_some_and(|t| now < t);
        let r = loop {
            let now = clock();
            let own = self.spinning(now);
            let by_arm = !own && armed(now);
            if !own && !by_arm {
                arm.sleeping(true);
                // An arming loop that did not see us asleep has stored its deadline: see it now.
                if armed(now) {
                    arm.sleeping(false);
                    continue;
                }
                let r = poll(idle_ms);
                arm.sleeping(false);
                match r {
                    Ok(p) if p.nudged => {
                        Counters::add(&counters.busy_poll_wakes, 1);
                        if p.events == 0 {
                            continue;
                        }
                        // Woken by the arming, and the packet it anticipated arrived while we were waking.
                        Counters::add(&counters.busy_poll_hits, 1);
                        Counters::add(self.armed_hits(counters), 1);
                        break Ok(p.events);
                    }
                    r => break r.map(|p| p.events),
                }
            }
            spins += 1;
            match poll(0) {
                Ok(p) if p.events == 0 => relax(),
                Ok(p) => {
                    Counters::add(&counters.busy_poll_hits, 1);
                    if by_arm {
                        Counters::add(self.armed_hits(counters), 1);
                    }
                    break Ok(p.events);
                }
                Err(e) => break Err(e),
            }
        };
        if spins > 0 {
            Counters::add(&counters.busy_polls, spins);
        }
        r
    }

    fn armed_hits<'c>(&self, counters: &'c Counters) -> &'c AtomicU64 {
        match self.dir {
            Dir::Tx => &counters.busy_poll_armed_hits_tx,
            Dir::Rx => &counters.busy_poll_armed_hits_rx,
        }
    }
}

/// Between two empty polls: tell the CPU we spin (a pause on x86, cheaper for a hyperthread sibling) and give
/// the CPU to any other runnable thread. Without the yield, a loop spinning on a 2-vCPU VM delays the very
/// thread (the other loop, the application) whose packet it waits for.
fn relax() {
    std::hint::spin_loop();
    std::thread::yield_now();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::cell::RefCell;
    use std::sync::atomic::Ordering::Relaxed;

    fn none() -> Polled {
        Polled::default()
    }

    fn events(n: usize) -> Polled {
        Polled {
            events: n,
            nudged: false,
        }
    }

    /// A fake arming: a deadline set by the test, and a log of the loop's sleeping marks.
    #[derive(Default)]
    struct FakeArm {
        until: Cell<Option<Instant>>,
        marks: RefCell<Vec<bool>>,
    }

    impl Armed for FakeArm {
        fn armed_until(&self) -> Option<Instant> {
            self.until.get()
        }
        fn sleeping(&self, yes: bool) {
            self.marks.borrow_mut().push(yes);
        }
    }

    /// A loop whose own budget is spent (it handled nothing) spins while another loop armed it; a hit then
    /// counts as an armed hit of its direction, and the loop never marked itself asleep.
    #[test]
    fn armed_loop_spins_and_counts_armed_hits() {
        let t0 = Instant::now();
        let arm = FakeArm::default();
        arm.until.set(Some(t0 + Duration::from_micros(50)));
        let c = Counters::default();
        for (dir, hits) in [
            (Dir::Rx, &c.busy_poll_armed_hits_rx),
            (Dir::Tx, &c.busy_poll_armed_hits_tx),
        ] {
            let mut b = BusyPoll::new(100, dir);
            let mut polls = 0;
            let r = b.wait(
                500,
                &c,
                || t0 + Duration::from_micros(10),
                &arm,
                |t| {
                    assert_eq!(t, 0, "armed: never blocks");
                    polls += 1;
                    Ok(events(usize::from(polls == 2)))
                },
            );
            assert_eq!(r.unwrap(), 1);
            assert_eq!(hits.load(Relaxed), 1);
        }
        assert_eq!(c.busy_poll_hits.load(Relaxed), 2);
        assert_eq!(c.busy_polls.load(Relaxed), 4);
        assert!(arm.marks.borrow().is_empty());
        // Spinning within its own budget is not an armed hit, even while armed.
        let mut b = BusyPoll::new(100, Dir::Rx);
        b.worked(t0);
        let _ = b.wait(500, &c, || t0, &arm, |_| Ok(events(1)));
        assert_eq!(c.busy_poll_armed_hits_rx.load(Relaxed), 1);
        assert_eq!(c.busy_poll_hits.load(Relaxed), 3);
    }

    /// Past the armed deadline the loop blocks; a nudge (an arming loop wrote our eventfd) that ends the
    /// blocking poll with no other event sends it back to spinning until the new deadline.
    #[test]
    fn nudge_wakes_a_sleeping_loop_into_spinning() {
        let t0 = Instant::now();
        let arm = FakeArm::default();
        let c = Counters::default();
        let mut b = BusyPoll::new(100, Dir::Tx);
        let ticks = Cell::new(0u64);
        let clock = || {
            ticks.set(ticks.get() + 1);
            t0 + Duration::from_micros(10 * ticks.get())
        };
        let mut timeouts = Vec::new();
        let r = b.wait(500, &c, clock, &arm, |t| {
            timeouts.push(t);
            match (t, timeouts.iter().filter(|&&t| t == 500).count()) {
                // First sleep: another loop arms us until 40 µs and nudges.
                (500, 1) => {
                    arm.until.set(Some(t0 + Duration::from_micros(40)));
                    Ok(Polled {
                        events: 0,
                        nudged: true,
                    })
                }
                // Second sleep: a packet.
                (500, _) => Ok(events(1)),
                _ => Ok(none()),
            }
        });
        assert_eq!(r.unwrap(), 1);
        // Blocked at 10 µs, woken, spun at 20 and 30 µs, blocked again at 40 µs (the armed deadline).
        assert_eq!(timeouts, [500, 0, 0, 500]);
        assert_eq!(c.busy_poll_wakes.load(Relaxed), 1);
        assert_eq!(c.busy_polls.load(Relaxed), 2);
        assert_eq!(c.busy_poll_hits.load(Relaxed), 0);
        assert_eq!(*arm.marks.borrow(), [true, false, true, false]);

        // Nudged, and the packet is already there when the loop runs: an armed hit straight from the sleep.
        let r = b.wait(
            500,
            &c,
            || t0 + Duration::from_millis(1),
            &arm,
            |t| {
                assert_eq!(t, 500);
                Ok(Polled {
                    events: 1,
                    nudged: true,
                })
            },
        );
        assert_eq!(r.unwrap(), 1);
        assert_eq!(c.busy_poll_wakes.load(Relaxed), 2);
        assert_eq!(c.busy_poll_hits.load(Relaxed), 1);
        assert_eq!(c.busy_poll_armed_hits_tx.load(Relaxed), 1);
    }

    /// The race with an arming loop: armed after the loop's last check but before it marked itself asleep,
    /// the loop sees the deadline on its second look and spins instead of blocking.
    #[test]
    fn arming_racing_with_sleep_is_not_lost() {
        let t0 = Instant::now();
        let c = Counters::default();
        struct Racy<'a>(&'a FakeArm, Instant);
        impl Armed for Racy<'_> {
            fn armed_until(&self) -> Option<Instant> {
                self.0.armed_until()
            }
            fn sleeping(&self, yes: bool) {
                if yes {
                    self.0.until.set(Some(self.1 + Duration::from_micros(50)));
                }
                self.0.sleeping(yes);
            }
        }
        let fake = FakeArm::default();
        let arm = Racy(&fake, t0);
        let mut b = BusyPoll::new(100, Dir::Rx);
        let mut timeouts = Vec::new();
        let r = b.wait(
            500,
            &c,
            || t0,
            &arm,
            |t| {
                timeouts.push(t);
                Ok(events(1))
            },
        );
        assert_eq!(r.unwrap(), 1);
        assert_eq!(timeouts, [0], "spun instead of blocking");
        assert_eq!(*fake.marks.borrow(), [true, false]);
        assert_eq!(c.busy_poll_armed_hits_rx.load(Relaxed), 1);
    }

    #[test]
    fn off_never_spins() {
        let t0 = Instant::now();
        let mut b = BusyPoll::new(0, Dir::Tx);
        b.worked(t0);
        assert!(!b.spinning(t0));
    }

    #[test]
    fn spins_for_the_budget_after_the_last_packet() {
        let t0 = Instant::now();
        let mut b = BusyPoll::new(200, Dir::Tx);
        // Nothing handled yet: block.
        assert!(!b.spinning(t0));
        b.worked(t0);
        assert!(b.spinning(t0));
        assert!(b.spinning(t0 + Duration::from_micros(199)));
        assert!(!b.spinning(t0 + Duration::from_micros(200)));
        // A new packet restarts the budget.
        b.worked(t0 + Duration::from_micros(150));
        assert!(b.spinning(t0 + Duration::from_micros(349)));
        assert!(!b.spinning(t0 + Duration::from_micros(350)));
        // A clock that goes backwards (another thread's `now`) still spins, never panics.
        assert!(b.spinning(t0));
    }

    /// A fake clock advancing 10 µs per reading and a poll that finds nothing: `wait` spins with timeout 0
    /// until the budget is spent, then blocks once with the idle timeout; the spell is counted.
    #[test]
    fn wait_spins_then_blocks() {
        let t0 = Instant::now();
        let ticks = Cell::new(0u64);
        let clock = || {
            ticks.set(ticks.get() + 1);
            t0 + Duration::from_micros(10 * ticks.get())
        };
        let mut b = BusyPoll::new(100, Dir::Tx);
        b.worked(t0);
        let c = Counters::default();
        let mut timeouts = Vec::new();
        let r = b.wait(500, &c, clock, &NotArmed, |t| {
            timeouts.push(t);
            Ok(none())
        });
        assert_eq!(r.unwrap(), 0);
        // Readings at 10..=90 µs spin (9 polls), the one at 100 µs blocks.
        assert_eq!(timeouts.len(), 10);
        assert!(timeouts[..9].iter().all(|&t| t == 0));
        assert_eq!(timeouts[9], 500);
        assert_eq!(c.busy_polls.load(Relaxed), 9);
        assert_eq!(c.busy_poll_hits.load(Relaxed), 0);
    }

    #[test]
    fn wait_returns_events_found_while_spinning() {
        let t0 = Instant::now();
        let mut b = BusyPoll::new(1000, Dir::Tx);
        b.worked(t0);
        let c = Counters::default();
        let mut polls = 0;
        let r = b.wait(
            500,
            &c,
            || t0,
            &NotArmed,
            |t| {
                assert_eq!(t, 0);
                polls += 1;
                Ok(events(if polls == 3 { 1 } else { 0 }))
            },
        );
        assert_eq!(r.unwrap(), 1);
        assert_eq!(c.busy_polls.load(Relaxed), 3);
        assert_eq!(c.busy_poll_hits.load(Relaxed), 1);
        // Errors come back as they are.
        let e = b.wait(
            500,
            &c,
            || t0,
            &NotArmed,
            |_| Err(io::Error::from(io::ErrorKind::Other)),
        );
        assert!(e.is_err());
    }

    #[test]
    fn off_blocks_at_once_and_counts_nothing() {
        let mut b = BusyPoll::new(0, Dir::Tx);
        let t0 = Instant::now();
        b.worked(t0);
        let c = Counters::default();
        let mut timeouts = Vec::new();
        let _ = b.wait(500, &c, Instant::now, &NotArmed, |t| {
            timeouts.push(t);
            Ok(none())
        });
        assert_eq!(timeouts, [500]);
        assert_eq!(c.busy_polls.load(Relaxed), 0);
    }
}
