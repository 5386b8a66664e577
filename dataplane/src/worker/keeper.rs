//! Busy-poll keepers (`--busy-poll-us`): `SCHED_IDLE` threads, one per CPU the daemon may use (at most one
//! per forwarding loop), that keep their CPU busy for the budget after the last packet and sleep otherwise.
//!
//! Why (README "Latency and busy-poll"): on the project's VMs a ping through overlayd was not slow because of
//! vCPU halts alone (with PM QoS 0, no halts at all, p50 was still ~0.22 ms against the kernel's ~0.06) but
//! because each of the round trip's four loop wake-ups went to another, idle, CPU: with two `nice -n 19`
//! busy loops running (no CPU ever idle) the woken loop runs at once where its waker is, preempting the
//! low-weight spinner, and p50 fell to ~0.15 ms. A keeper reproduces that spinner, but only around traffic:
//! the kernel sees a CPU running only `SCHED_IDLE` threads as idle when it places a woken thread
//! (`sched_idle_cpu`), and a woken normal thread preempts a `SCHED_IDLE` one at once, while the vCPU never
//! halts and never needs a hypervisor wake-up.
//!
//! When: every arming of a loop (a batch starting, [`super::Arming`]) moves the keepers' shared deadline to
//! `now + budget` (a shared write at most once per half budget) and wakes the keepers asleep (one eventfd
//! write each, only when asleep). A keeper spins (`spin_loop`, reading the clock every few hundred
//! iterations) until that deadline, then sleeps on its eventfd again. Sleep and wake race safely the way the
//! loops' arming does: the sleeper stores `sleeping` then re-reads the deadline, the waker stores the deadline
//! then reads `sleeping` (both `SeqCst`).
//!
//! Counted: `busy_poll_keeper_spells` (spells started), `busy_poll_keeper_rests` (spells ended: equal to the
//! spells once traffic has stopped and the budget passed), `busy_poll_keeper_us` (µs spent spinning, added at
//! each spell's end).

use crate::io::poll::wait_fd;
use crate::io::{sched, Waker};
use crate::stats::Counters;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::time::Instant;

/// Spin iterations between two clock reads.
const SPINS_PER_CHECK: u32 = 256;
/// A sleeping keeper's poll timeout (it re-checks `stop`).
const SLEEP_MS: i32 = 500;

/// The keepers' shared state.
#[derive(Debug)]
pub struct Keepers {
    epoch: Instant,
    /// Nanoseconds since `epoch` until which keepers spin.
    until_ns: Line,
    slots: Box<[Slot]>,
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct Line(AtomicU64);

#[derive(Debug)]
#[repr(align(64))]
struct Slot {
    sleeping: AtomicBool,
    nudge: Waker,
}

impl Keepers {
    /// `n` keepers (0: none, no eventfd) measuring time from `epoch`.
    pub fn new(n: usize, epoch: Instant) -> io::Result<Keepers> {
        let slots = (0..n)
            .map(|_| {
                Ok(Slot {
                    sleeping: AtomicBool::new(false),
                    nudge: Waker::new()?,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Keepers {
            epoch,
            until_ns: Line::default(),
            slots: slots.into_boxed_slice(),
        })
    }

    /// How many keeper threads to run.
    pub fn count(&self) -> usize {
        self.slots.len()
    }

    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Keep the CPUs busy until `until_ns` (since the epoch); `slack_ns`: a deadline already within that much
    /// of it is not rewritten (and nobody woken). Returns how many sleeping keepers were woken.
    pub fn keep(&self, until_ns: u64, slack_ns: u64) -> usize {
        if self.slots.is_empty() || self.until_ns.0.load(Relaxed).saturating_add(slack_ns) >= until_ns {
            return 0;
        }
        self.until_ns.0.fetch_max(until_ns, SeqCst);
        let mut woken = 0;
        for s in self.slots.iter() {
            if s.sleeping.load(SeqCst) {
                s.nudge.wake();
                woken += 1;
            }
        }
        woken
    }

    pub(super) fn keeping(&self, now: Instant) -> bool {
        self.ns(now) < self.until_ns.0.load(SeqCst)
    }

    /// Keeper `k`'s thread: `SCHED_IDLE`, pinned to `cpu` if given, spins while kept and sleeps otherwise,
    /// until `stop` (wake it with [`Keepers::wake_all`] after setting `stop`). Fails only if the policy cannot
    /// be set (a keeper at normal priority would compete with the loops).
    pub fn run(
        &self,
        k: usize,
        cpu: Option<usize>,
        stop: &AtomicBool,
        counters: &Counters,
    ) -> io::Result<()> {
        let Some(slot) = self.slots.get(k) else {
            return Ok(());
        };
        sched::set_idle_policy()?;
        if let Some(cpu) = cpu {
            // Not fatal: an unpinned keeper still keeps some CPU busy.
            let _ = sched::pin_to(cpu);
        }
        while !stop.load(Relaxed) {
            let start = Instant::now();
            if self.keeping(start) {
                Counters::add(&counters.busy_poll_keeper_spells, 1);
                let mut now = start;
                while self.keeping(now) && !stop.load(Relaxed) {
                    for _ in 0..SPINS_PER_CHECK {
                        std::hint::spin_loop();
                    }
                    now = Instant::now();
                }
                let us = now.saturating_duration_since(start).as_micros();
                Counters::add(
                    &counters.busy_poll_keeper_us,
                    u64::try_from(us).unwrap_or(u64::MAX),
                );
                Counters::add(&counters.busy_poll_keeper_rests, 1);
            }
            slot.sleeping.store(true, SeqCst);
            // A keep() that did not see us asleep has stored its deadline: see it now.
            if !self.keeping(Instant::now()) {
                let _ = wait_fd(slot.nudge.as_raw_fd(), libc::POLLIN, SLEEP_MS);
                slot.nudge.drain();
            }
            slot.sleeping.store(false, SeqCst);
        }
        Ok(())
    }

    /// Wake every keeper (after setting `stop`).
    pub fn wake_all(&self) {
        self.slots.iter().for_each(|s| s.nudge.wake());
    }
}

/// The keepers to run for `loops` forwarding loops: one per CPU the process may use, at most one per loop,
/// each with the CPU to pin it to (`None` if the CPUs cannot be read).
pub fn placement(loops: usize) -> Vec<Option<usize>> {
    match sched::allowed_cpus() {
        Ok(cpus) if !cpus.is_empty() => cpus.into_iter().take(loops).map(Some).collect(),
        _ => vec![None; loops.min(std::thread::available_parallelism().map_or(1, |n| n.get()))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    fn wait_until(mut f: impl FnMut() -> bool) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// A keeper sleeps until kept, spins (as `SCHED_IDLE`) until the deadline, then rests; it stops on `stop`.
    #[test]
    fn keeper_spins_while_kept_then_rests() {
        let epoch = Instant::now();
        let k = Keepers::new(1, epoch).unwrap();
        let c = Counters::default();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                k.run(0, None, &stop, &c).unwrap();
                sched::is_idle_policy()
            });
            assert!(wait_until(|| k.slots[0].sleeping.load(SeqCst)));
            assert_eq!(c.busy_poll_keeper_spells.load(Relaxed), 0);
            // Keep for 20 ms: the sleeping keeper is woken, spins, and rests after the deadline.
            let mut until = k.ns(Instant::now() + Duration::from_millis(20));
            assert_eq!(k.keep(until, 0), 1);
            // A SCHED_IDLE thread runs only when its CPU has nothing else to do: on a busy machine the
            // deadline may pass before it does, so keep it again until its first spell has started.
            assert!(wait_until(|| {
                if c.busy_poll_keeper_spells.load(Relaxed) > 0 {
                    return true;
                }
                until = k.ns(Instant::now() + Duration::from_millis(20));
                k.keep(until, 0);
                false
            }));
            assert!(wait_until(|| {
                c.busy_poll_keeper_rests.load(Relaxed) == c.busy_poll_keeper_spells.load(Relaxed)
                    && k.slots[0].sleeping.load(SeqCst)
            }));
            assert!(c.busy_poll_keeper_us.load(Relaxed) > 0);
            // A deadline within the slack is not rewritten and wakes nobody.
            assert_eq!(k.keep(until, 1_000_000_000), 0);
            stop.store(true, Relaxed);
            k.wake_all();
            assert!(h.join().unwrap(), "the keeper ran under SCHED_IDLE");
        });
        let spells = c.busy_poll_keeper_spells.load(Relaxed);
        assert!(spells >= 1);
        assert_eq!(c.busy_poll_keeper_rests.load(Relaxed), spells);
    }

    #[test]
    fn no_keepers_keep_nothing() {
        let k = Keepers::new(0, Instant::now()).unwrap();
        assert_eq!(k.count(), 0);
        assert_eq!(k.keep(u64::MAX, 0), 0);
        let stop = AtomicBool::new(false);
        k.run(0, None, &stop, &Counters::default()).unwrap();
    }

    #[test]
    fn placement_is_one_keeper_per_cpu_at_most_one_per_loop() {
        let cpus = sched::allowed_cpus().unwrap();
        let p = placement(64);
        assert_eq!(p.len(), cpus.len().min(64));
        assert_eq!(placement(1).len(), 1);
        assert_eq!(p.iter().flatten().copied().collect::<Vec<_>>(), cpus[..p.len()]);
    }
}
