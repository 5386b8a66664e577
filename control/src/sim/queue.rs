//! The simulator's event queue and virtual clock: message deliveries and timers ordered by (virtual
//! time, insertion order), processed one at a time ([`Sim::step`]) or up to a time ([`Sim::run_for`],
//! [`Sim::run_until`]). A delivery is checked once more against partitions and cuts on arrival; a timer
//! of a node's earlier run (before a kill or restart) is dropped. Must never: read the real clock.

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Sim;
use crate::Timer;

/// An entry of the event queue, ordered by (virtual time, insertion order) only; the event itself
/// waits in [`Sim::slots`] (a small heap entry keeps the heap operations cache-friendly).
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) at: Instant,
    seq: u64,
    slot: u32,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Debug)]
pub(super) enum Event {
    Deliver {
        to: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
        instance: u64,
        timer: Timer,
    },
}

impl Sim {
    pub(super) fn push(&mut self, at: Instant, ev: Event) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(ev);
                s
            }
            None => {
                self.slots.push(Some(ev));
                u32::try_from(self.slots.len() - 1).unwrap_or_else(|_| panic!("over 2^32 queued events"))
            }
        };
        self.queue.push(Reverse(Queued { at, seq, slot }));
    }

    /// Process the next event; false if the queue is empty.
    pub fn step(&mut self) -> bool {
        let Some(Reverse(Queued { at, slot, .. })) = self.queue.pop() else {
            return false;
        };
        self.free.push(slot);
        self.events += 1;
        let Some(ev) = self.slots[slot as usize].take() else {
            return true;
        };
        self.now = at;
        match ev {
            Event::Deliver { to, from, bytes } => {
                // A partition raised while the message was in flight also cuts it.
                let from_at = self.by_addr.get(&from).copied();
                let from_group = from_at.map(|f| self.nodes[f].group);
                let cut = from_at.is_some_and(|f| self.cut.contains(&(f.min(to), f.max(to))));
                if from_group != Some(self.nodes[to].group) || cut {
                    self.dropped += 1;
                    return true;
                }
                let now = self.now;
                self.with_node(to, |node| node.handle_message(now, from, &bytes));
            }
            Event::Timer {
                node,
                instance,
                timer,
            } => {
                if matches!(timer.0, crate::TimerKind::Pace) {
                    self.pace_timers += 1;
                }
                if self.nodes[node].instance == instance {
                    let now = self.now;
                    self.with_node(node, |n| n.handle_timer(now, timer));
                }
            }
        }
        true
    }

    /// Advance virtual time by `d`, processing every event due.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some(Reverse(q)) = self.queue.peek() {
            if q.at > until {
                break;
            }
            self.step();
        }
        self.now = until;
    }

    /// Run until `pred` holds (checked every `tick` of virtual time) or `limit` passes. Returns the
    /// virtual time it took, or None on timeout.
    pub fn run_until<F>(&mut self, limit: Duration, tick: Duration, mut pred: F) -> Option<Duration>
    where
        F: FnMut(&Sim) -> bool,
    {
        let t0 = self.now;
        loop {
            if pred(self) {
                return Some(self.now - t0);
            }
            if self.now - t0 >= limit {
                return None;
            }
            self.run_for(tick);
        }
    }
}
