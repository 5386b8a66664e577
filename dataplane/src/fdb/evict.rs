//! Making room in a full FDB (issue 9 §4): the least recently seen `learned` entry goes, approximately.
//!
//! The map cannot be sampled at random (dashmap offers no safe way to reach a random bucket), so the FDB keeps
//! a queue of *hints*: the MAC of every entry when it becomes `learned`, oldest first. To evict, up to
//! [`SAMPLE`] hints that still name a learned entry are taken from the front; the one seen least recently
//! goes, the others return to the back. A hint whose entry is gone or no longer learned (aged out, taken
//! over by the control plane or our bridge) is dropped when met. With at most [`SAMPLE`] learned entries the
//! choice is exact LRU; beyond that it is LRU among the oldest-learned — an entry in use survives (it is
//! younger than the rest of its sample), a flood's one-off MACs go first.
//!
//! Must never: evict a `local`, `control` or `static` entry, allocate after set-up, or take the hint lock
//! while holding one of the map's shard locks (the order is always hints, then shard).
//!
//! Cost: eviction happens only when the table is full; it looks at most [`MAX_LOOK`] hints, each a shard read
//! lock. Noting a hint is one uncontended mutex on a new learned entry, never on a refresh.

use super::{Fdb, Origin};
use crate::stats::Counters;
use crate::wire::MacAddr;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, MutexGuard};

/// Live candidates compared per eviction.
pub(super) const SAMPLE: usize = 8;
/// Hints looked at per eviction or per compaction, live or stale.
const MAX_LOOK: usize = 64;

#[derive(Debug)]
pub(super) struct Hints {
    queue: Mutex<VecDeque<MacAddr>>,
    /// Most hints kept: twice the FDB's capacity, so at least half of a full queue is stale (the table holds
    /// at most `capacity` learned entries) and compaction makes progress.
    bound: usize,
}

impl Hints {
    pub(super) fn new(capacity: usize) -> Hints {
        let bound = capacity.saturating_mul(2).max(SAMPLE);
        Hints {
            // Allocated once here; `push_back` never grows it past `bound`.
            queue: Mutex::new(VecDeque::with_capacity(bound)),
            bound,
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<MacAddr>> {
        // A panic while holding it leaves a valid queue (every operation is a push or pop).
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Fdb {
    /// When `mac` is a learned entry, when it was last seen.
    fn learned_seen(&self, mac: &MacAddr) -> Option<u64> {
        self.map
            .get(mac)
            .filter(|s| s.origin == Origin::Learned)
            .map(|s| s.seen.load(Relaxed))
    }

    /// `mac` just became a learned entry: note it as an eviction candidate. Call with no shard lock held.
    pub(super) fn hint_learned(&self, mac: MacAddr) {
        let mut q = self.hints.lock();
        if q.len() >= self.hints.bound {
            // Compact a little: stale hints at the front are dropped, live ones go to the back.
            for _ in 0..MAX_LOOK.min(q.len()) {
                let Some(m) = q.pop_front() else { break };
                if self.learned_seen(&m).is_some() {
                    q.push_back(m);
                } else if q.len() < self.hints.bound {
                    break;
                }
            }
            if q.len() >= self.hints.bound {
                // Only live hints met: the entry goes without a hint and leaves by ageing. (Cannot happen
                // while the map holds at most `capacity` entries; kept as a bound, not relied upon.)
                return;
            }
        }
        q.push_back(mac);
    }

    /// Removes the least recently seen learned entry among up to [`SAMPLE`] of the oldest hints. Returns
    /// false when no learned entry was found (the table holds only local, control and static entries).
    pub(super) fn evict_one(&self) -> bool {
        let mut q = self.hints.lock();
        let mut cand = [(MacAddr::ZERO, 0u64); SAMPLE];
        let mut n = 0;
        for _ in 0..MAX_LOOK {
            if n == SAMPLE {
                break;
            }
            let Some(m) = q.pop_front() else { break };
            if let Some(seen) = self.learned_seen(&m) {
                cand[n] = (m, seen);
                n += 1;
            }
        }
        // The first of equally old candidates (the oldest hint) goes.
        let Some(victim) = (0..n).min_by_key(|&i| cand[i].1) else {
            return false;
        };
        for (i, (m, _)) in cand[..n].iter().enumerate() {
            if i != victim {
                q.push_back(*m);
            }
        }
        // Removed only if still learned: the control plane or our bridge may have claimed it meanwhile.
        let removed = self
            .map
            .remove_if(&cand[victim].0, |_, s| s.origin == Origin::Learned)
            .is_some();
        if removed {
            Counters::add(&self.counters.fdb_evictions, 1);
            self.changed();
        }
        removed
    }
}
