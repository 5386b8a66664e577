//! Adaptive busy-polling: the wait step of the forwarding loops (`--busy-poll-us`).
//!
//! After a loop has handled packets it keeps polling its fds without sleeping (`poll` with timeout 0) for up
//! to a budget of microseconds since the last packet, then goes back to a blocking `poll`. This is NAPI
//! busy-poll / DPDK and VPP "adaptive" mode on a small scale: an idle daemon costs nothing, a loop carrying
//! traffic keeps its vCPU out of the idle state, so the next packet of a round trip does not pay a vCPU
//! wake-up (measured: the bulk of overlayd's extra ping RTT on the project's VMs; README "Latency").
//!
//! [`BusyPoll`] is the pure state machine (fed `now`, unit-tested); [`BusyPoll::wait`] drives it with a poll
//! function and a clock given by the caller. Between empty polls it hints the CPU (`spin_loop`) and yields
//! (`sched_yield`), so on a 2-vCPU machine a spinning loop hands its CPU to any other runnable thread (the
//! other loop, the application) instead of starving it until the budget runs out.

use crate::stats::Counters;
use std::io;
use std::time::{Duration, Instant};

/// Busy-poll state of one loop.
#[derive(Debug, Clone)]
pub struct BusyPoll {
    budget: Duration,
    /// When the loop last handled packets.
    last_work: Option<Instant>,
}

impl BusyPoll {
    /// A loop that spins for `budget_us` µs after its last packet; 0 turns busy-polling off.
    pub fn new(budget_us: u32) -> Self {
        BusyPoll {
            budget: Duration::from_micros(u64::from(budget_us)),
            last_work: None,
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
    /// spinning, yielding the CPU between empty polls, then one blocking `poll(idle_ms)` once the budget is
    /// spent. Returns the first poll result with events, an error, or the blocking poll's result. A blocking
    /// poll's `Ok(0)` keeps meaning "a quiet interval" for the caller; a spinning poll never returns `Ok(0)`.
    /// The zero-timeout polls of each spell are added to `counters.busy_polls` once (not per poll, so two
    /// spinning loops never bounce a shared cache line), the spells that found events to `busy_poll_hits`.
    pub fn wait(
        &mut self,
        idle_ms: i32,
        counters: &Counters,
        mut clock: impl FnMut() -> Instant,
        mut poll: impl FnMut(i32) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut spins = 0u64;
        let r = loop {
            if !self.spinning(clock()) {
                break poll(idle_ms);
            }
            spins += 1;
            match poll(0) {
                Ok(0) => relax(),
                Ok(n) => {
                    Counters::add(&counters.busy_poll_hits, 1);
                    break Ok(n);
                }
                Err(e) => break Err(e),
            }
        };
        if spins > 0 {
            Counters::add(&counters.busy_polls, spins);
        }
        r
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
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn off_never_spins() {
        let t0 = Instant::now();
        let mut b = BusyPoll::new(0);
        b.worked(t0);
        assert!(!b.spinning(t0));
    }

    #[test]
    fn spins_for_the_budget_after_the_last_packet() {
        let t0 = Instant::now();
        let mut b = BusyPoll::new(200);
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
        let mut b = BusyPoll::new(100);
        b.worked(t0);
        let c = Counters::default();
        let mut timeouts = Vec::new();
        let r = b.wait(500, &c, clock, |t| {
            timeouts.push(t);
            Ok(0)
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
        let mut b = BusyPoll::new(1000);
        b.worked(t0);
        let c = Counters::default();
        let mut polls = 0;
        let r = b.wait(
            500,
            &c,
            || t0,
            |t| {
                assert_eq!(t, 0);
                polls += 1;
                Ok(if polls == 3 { 1 } else { 0 })
            },
        );
        assert_eq!(r.unwrap(), 1);
        assert_eq!(c.busy_polls.load(Relaxed), 3);
        assert_eq!(c.busy_poll_hits.load(Relaxed), 1);
        // Errors come back as they are.
        let e = b.wait(500, &c, || t0, |_| Err(io::Error::from(io::ErrorKind::Other)));
        assert!(e.is_err());
    }

    #[test]
    fn off_blocks_at_once_and_counts_nothing() {
        let mut b = BusyPoll::new(0);
        let t0 = Instant::now();
        b.worked(t0);
        let c = Counters::default();
        let mut timeouts = Vec::new();
        let _ = b.wait(500, &c, Instant::now, |t| {
            timeouts.push(t);
            Ok(0)
        });
        assert_eq!(timeouts, [500]);
        assert_eq!(c.busy_polls.load(Relaxed), 0);
    }
}
