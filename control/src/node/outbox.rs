//! The gossip byte budget of [`super::ControlNode`]: FDB sync traffic (advert batches, anti-entropy
//! table pieces, catalog/grant repair, digests) leaves only as fast as a token bucket refilled at
//! `ControlConfig::gossip_budget` bytes per second allows; membership (foca's probes, acks, indirect
//! probes and gossip, leave notices) never passes through here and is never held back.
//!
//! Why here and not in the transport: the node is sans-IO and driven by `now`, so the budget is
//! deterministic in the simulator and the same code paces the daemon; and only the node knows what a
//! message is, so instead of queueing bytes it keeps one cursor per (peer, owner table) and builds the
//! next piece of a table only when the budget lets it leave. A table larger than the budget allows
//! is therefore sent in pieces over successive ticks, a pass resumes where it stopped (a new
//! anti-entropy round does not restart it), and whatever changed meanwhile is shipped in its newest
//! version only (entries are ordered by seq, a change moves an entry to the end). Nothing grows with
//! the backlog except the bounded queue of small control messages.
//!
//! Order of what leaves: control messages (FIFO) first, then table pieces, round-robin over the
//! (peer, owner) cursors. Must never: read a clock, block, or hold back a membership message.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Bound;
use std::time::{Duration, Instant};

use crate::identity::NodeId;
use crate::messages::{self, FdbEntry, OwnerDump, SyncMessage};
use crate::sync::{FdbSync, Pos};
use crate::Output;

use super::ControlNode;

/// Target size of one table piece (a `States` message): also the bucket's burst, so over any window
/// of T seconds sync traffic stays within `budget × T` plus one message.
pub const PIECE_BYTES: usize = 16 * 1024;

/// Bound on queued control messages (digests, repairs, requests); beyond it new ones are dropped
/// (counted in `sync_dropped`) and anti-entropy sends them again later.
const MAX_CONTROL_BYTES: usize = 1 << 20;

/// A token bucket in exact integer arithmetic (nanobytes), so the simulator replays bit for bit and
/// a timer set for the instant the bucket refills always finds it refilled.
#[derive(Debug, Clone)]
struct Bucket {
    /// Bytes per second; 0 = no limit.
    rate: u64,
    /// Most tokens held (bytes × 1e9).
    burst: i128,
    tokens: i128,
    at: Instant,
}

const NANO: i128 = 1_000_000_000;

impl Bucket {
    fn new(now: Instant, rate: u64, burst: usize) -> Self {
        let burst = burst as i128 * NANO;
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if now > self.at {
            let dt = now.duration_since(self.at).as_nanos() as i128;
            self.tokens = (self.tokens + dt * self.rate as i128).min(self.burst);
            self.at = now;
        }
    }

    /// What must be held to send `len` bytes: all of it, or a full bucket for a message larger than
    /// the burst (which then leaves the bucket in debt).
    fn need(&self, len: usize) -> i128 {
        (len as i128 * NANO).min(self.burst)
    }

    /// Take `len` bytes if the budget allows now.
    fn take(&mut self, now: Instant, len: usize) -> bool {
        if self.rate == 0 {
            return true;
        }
        self.refill(now);
        if self.tokens < self.need(len) {
            return false;
        }
        self.tokens -= len as i128 * NANO;
        true
    }

    /// When `len` bytes will be allowed (after a failed [`Self::take`] at `self.at`).
    fn ready_at(&self, len: usize) -> Instant {
        let deficit = (self.need(len) - self.tokens).max(0);
        let rate = self.rate.max(1) as i128;
        let nanos = (deficit + rate - 1) / rate;
        self.at + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// One table pass towards one peer: the owner's generation and where the next piece starts.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    generation: u64,
    pos: Pos,
}

/// Counters of the budget (folded into `ControlStats`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct OutboxStats {
    pub sync_bytes_sent: u64,
    pub sync_messages_sent: u64,
    pub sync_deferred: u64,
    pub sync_dropped: u64,
}

/// Budgeted sync traffic of one node.
#[derive(Debug)]
pub(crate) struct Outbox {
    bucket: Bucket,
    control: VecDeque<(SocketAddr, Vec<u8>)>,
    control_bytes: usize,
    /// Whether the control message at the front already counted as deferred.
    front_deferred: bool,
    /// The (peer, owner) cursors, by peer then owner: served in (peer, owner) order. Nested, so a
    /// cursor does not repeat its peer's address (a forming cluster holds up to members² of them)
    /// and [`Self::retain_peers`] asks once per peer. No peer's map is left empty.
    cursors: BTreeMap<SocketAddr, BTreeMap<NodeId, Cursor>>,
    /// Number of cursors (over all peers).
    n_cursors: usize,
    /// The cursor served last (round-robin).
    last: Option<(SocketAddr, NodeId)>,
    /// A table piece built but not yet allowed out (already counted as deferred).
    staged: Option<(SocketAddr, Vec<u8>)>,
    /// This node's own entries with a higher seq are held back until the advert batch is flushed.
    pub own_released: u64,
    pub stats: OutboxStats,
}

impl Outbox {
    pub fn new(now: Instant, budget: u64) -> Self {
        Outbox {
            bucket: Bucket::new(now, budget, PIECE_BYTES),
            control: VecDeque::new(),
            control_bytes: 0,
            front_deferred: false,
            cursors: BTreeMap::new(),
            n_cursors: 0,
            last: None,
            staged: None,
            own_released: 0,
            stats: OutboxStats::default(),
        }
    }

    /// Queue a small sync message (digest, repair, request); sent before any table piece.
    pub fn queue_control(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        if self.control_bytes + bytes.len() > MAX_CONTROL_BYTES {
            self.stats.sync_dropped += 1;
            return;
        }
        self.control_bytes += bytes.len();
        self.control.push_back((to, bytes));
    }

    /// Ship `owner`'s table (at `generation`) to `to`, from seq `from` on. A pass already under way
    /// for that peer and owner continues where it is (it reaches newer entries anyway), skipping
    /// ahead to `from` if the peer already holds more.
    pub fn want_table(&mut self, to: SocketAddr, owner: NodeId, generation: u64, from: u64) {
        let fresh = Cursor {
            generation,
            pos: Pos::FromSeq(from),
        };
        let c = self
            .cursors
            .entry(to)
            .or_default()
            .entry(owner)
            .or_insert_with(|| {
                self.n_cursors += 1;
                fresh
            });
        let behind = match c.pos {
            Pos::FromSeq(s) => s < from,
            Pos::After((s, _)) => s < from.saturating_sub(1),
        };
        if c.generation != generation || behind {
            *c = fresh;
        }
    }

    /// Ship `owner`'s table (at `generation`) to `to` from seq `from` on, unless a pass is already
    /// under way (it reaches the newer entries anyway; unlike [`Self::want_table`] it never skips
    /// ahead: the peer may lack what lies before `from`).
    pub fn extend_table(&mut self, to: SocketAddr, owner: NodeId, generation: u64, from: u64) {
        let under_way = self
            .cursors
            .get(&to)
            .and_then(|o| o.get(&owner))
            .is_some_and(|c| c.generation == generation);
        if !under_way {
            self.want_table(to, owner, generation, from);
        }
    }

    /// Forget passes towards peers that are no longer members.
    pub fn retain_peers(&mut self, keep: impl Fn(&SocketAddr) -> bool) {
        // Called on every membership change: once per peer, not once per (peer, owner) cursor (up
        // to members² of them while a cluster forms: this was the hottest path of a 256-node
        // simulation).
        let n_cursors = &mut self.n_cursors;
        self.cursors.retain(|to, owners| {
            let k = keep(to);
            if !k {
                *n_cursors -= owners.len();
            }
            k
        });
        if self.staged.as_ref().is_some_and(|(to, _)| !keep(to)) {
            self.staged = None;
        }
    }

    /// Table passes in progress.
    pub fn pending_tables(&self) -> usize {
        self.n_cursors + usize::from(self.staged.is_some())
    }

    /// Send what the budget allows at `now` into `out`. Returns when to call again if something is
    /// left waiting for the budget.
    pub fn release(
        &mut self,
        now: Instant,
        sync: &FdbSync,
        me: NodeId,
        out: &mut VecDeque<Output>,
    ) -> Option<Instant> {
        loop {
            if let Some((_, bytes)) = self.control.front() {
                let len = bytes.len();
                if !self.bucket.take(now, len) {
                    if !self.front_deferred {
                        self.front_deferred = true;
                        self.stats.sync_deferred += 1;
                    }
                    return Some(self.bucket.ready_at(len));
                }
                self.front_deferred = false;
                if let Some((to, bytes)) = self.control.pop_front() {
                    self.control_bytes -= bytes.len();
                    self.emit(to, bytes, out);
                }
                continue;
            }
            let piece = match self.staged.take() {
                Some(p) => Some((p, true)),
                None => self.next_piece(sync, me).map(|p| (p, false)),
            };
            // Nothing left: no wake-up needed.
            let ((to, bytes), was_deferred) = piece?;
            if !self.bucket.take(now, bytes.len()) {
                if !was_deferred {
                    self.stats.sync_deferred += 1;
                }
                let at = self.bucket.ready_at(bytes.len());
                self.staged = Some((to, bytes));
                return Some(at);
            }
            self.emit(to, bytes, out);
        }
    }

    fn emit(&mut self, to: SocketAddr, bytes: Vec<u8>, out: &mut VecDeque<Output>) {
        self.stats.sync_bytes_sent += bytes.len() as u64;
        self.stats.sync_messages_sent += 1;
        out.push_back(Output::Send { to, bytes });
    }

    fn remove_cursor(&mut self, (to, owner): (SocketAddr, NodeId)) {
        if let Some(owners) = self.cursors.get_mut(&to) {
            if owners.remove(&owner).is_some() {
                self.n_cursors -= 1;
            }
            if owners.is_empty() {
                self.cursors.remove(&to);
            }
        }
    }

    /// The cursor after `after` in (peer, owner) order, wrapping around (the first one if `after` is
    /// None).
    fn cursor_after(&self, after: Option<(SocketAddr, NodeId)>) -> Option<((SocketAddr, NodeId), Cursor)> {
        let first = |(to, owners): (&SocketAddr, &BTreeMap<NodeId, Cursor>)| {
            owners.iter().next().map(|(owner, c)| ((*to, *owner), *c))
        };
        let next = match after {
            Some((to, owner)) => self
                .cursors
                .get(&to)
                .and_then(|owners| {
                    owners
                        .range((Bound::Excluded(owner), Bound::Unbounded))
                        .next()
                        .map(|(o, c)| ((to, *o), *c))
                })
                .or_else(|| {
                    self.cursors
                        .range((Bound::Excluded(to), Bound::Unbounded))
                        .next()
                        .and_then(first)
                }),
            None => None,
        };
        next.or_else(|| self.cursors.iter().next().and_then(first))
    }

    /// The next table piece, round-robin over the cursors; finished passes are dropped. Each cursor
    /// is looked up in the map (not the whole key list copied per piece: with a cursor per member
    /// that made every release O(members²)).
    fn next_piece(&mut self, sync: &FdbSync, me: NodeId) -> Option<(SocketAddr, Vec<u8>)> {
        // Every cursor is visited at most once: each visit either returns a piece or removes it.
        let mut prev = self.last;
        for _ in 0..self.n_cursors {
            let Some((key, cursor)) = self.cursor_after(prev) else {
                break;
            };
            prev = Some(key);
            let (to, owner) = key;
            let limit = if owner == me { self.own_released } else { u64::MAX };
            let mut entries: Vec<FdbEntry> = Vec::new();
            let mut size = 0;
            let mut end = None;
            for (pos, e) in sync.entries_from(owner, cursor.generation, cursor.pos) {
                if pos.0 > limit || size >= PIECE_BYTES {
                    break;
                }
                size += entry_size(e);
                entries.push(e.clone());
                end = Some(pos);
            }
            let Some(end) = end else {
                // Pass complete (or the owner is gone): later changes start a new one.
                self.remove_cursor(key);
                continue;
            };
            if let Some(c) = self.cursors.get_mut(&to).and_then(|o| o.get_mut(&owner)) {
                c.pos = Pos::After(end);
            }
            self.last = Some(key);
            let msg = SyncMessage::States {
                owners: vec![OwnerDump {
                    owner,
                    generation: cursor.generation,
                    entries,
                }],
            };
            match messages::encode_sync(&msg) {
                Ok(bytes) => return Some((to, bytes)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode a table piece (this is a bug)");
                    self.remove_cursor(key);
                }
            }
        }
        None
    }
}

impl ControlNode {
    /// The next queued output (testing builds also follow which of them the budget let out).
    pub(super) fn take_output(&mut self) -> Option<Output> {
        let out = self.out.pop_front();
        #[cfg(any(test, feature = "testing"))]
        if out.is_some() {
            self.budget_marks.took();
        }
        out
    }

    /// Testing builds: whether the output [`Self::poll_output`] returned last left through the
    /// gossip budget, not beside it.
    #[cfg(any(test, feature = "testing"))]
    pub fn polled_budgeted(&self) -> bool {
        self.budget_marks.last
    }
}

/// Testing builds only: which of the node's queued outputs this budget let out, so the simulator can
/// tell budgeted sync traffic from what a node sends beside the budget (membership, Hellos, a
/// joiner's relayed tables). Positions are counted from the first output ever queued; outputs
/// leave the queue in order (`ControlNode::poll_output`).
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub(crate) struct BudgetMarks {
    /// Outputs taken off the queue so far.
    taken: u64,
    /// [start, end) positions of the budget's sends, oldest first.
    ranges: VecDeque<(u64, u64)>,
    /// Whether the output taken last was one of them.
    pub last: bool,
}

#[cfg(any(test, feature = "testing"))]
impl BudgetMarks {
    /// The budget appended the outputs at `from..to` of the queue as it is now.
    pub fn queued(&mut self, from: usize, to: usize) {
        if from < to {
            self.ranges
                .push_back((self.taken + from as u64, self.taken + to as u64));
        }
    }

    /// The output at the front of the queue was taken off.
    pub fn took(&mut self) {
        let at = self.taken;
        self.taken += 1;
        while self.ranges.front().is_some_and(|r| r.1 <= at) {
            self.ranges.pop_front();
        }
        self.last = self.ranges.front().is_some_and(|r| r.0 <= at);
    }
}

/// An upper bound of an entry's encoded size (postcard varints at their widest).
pub(super) fn entry_size(e: &FdbEntry) -> usize {
    4 + 6 + 1 + e.ips.len() * 17 + 10 + 10 + 1 + 2 + e.sig.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nested cursors are visited in (peer, owner) order, wrapping around, and `retain_peers`
    /// drops exactly the cursors of the peers it is told to drop.
    #[test]
    fn cursors_in_peer_owner_order() {
        let t0 = Instant::now();
        let mut o = Outbox::new(t0, 0);
        let a = |i: u8| SocketAddr::from(([10, 0, 0, i], 7946));
        let keys = [(a(2), 5), (a(1), 9), (a(3), 1), (a(1), 3), (a(2), 4)];
        for (to, owner) in keys {
            o.want_table(to, NodeId(owner), 1, 0);
        }
        o.want_table(a(1), NodeId(3), 1, 0);
        assert_eq!(o.pending_tables(), 5);
        let mut sorted: Vec<(SocketAddr, NodeId)> = keys.iter().map(|(t, n)| (*t, NodeId(*n))).collect();
        sorted.sort();
        let mut seen = Vec::new();
        let mut at = None;
        for _ in 0..6 {
            let (k, _) = o.cursor_after(at).unwrap();
            seen.push(k);
            at = Some(k);
        }
        assert_eq!(&seen[..5], &sorted[..]);
        assert_eq!(seen[5], sorted[0]);
        // After a key that is gone, the next one still follows it.
        o.remove_cursor((a(2), NodeId(4)));
        assert_eq!(
            o.cursor_after(Some((a(2), NodeId(4)))).unwrap().0,
            (a(2), NodeId(5))
        );
        o.remove_cursor((a(2), NodeId(5)));
        assert_eq!(
            o.cursor_after(Some((a(1), NodeId(9)))).unwrap().0,
            (a(3), NodeId(1))
        );
        assert_eq!(o.pending_tables(), 3);
        o.retain_peers(|p| *p != a(1));
        assert_eq!(o.pending_tables(), 1);
        assert_eq!(o.cursor_after(None).unwrap().0, (a(3), NodeId(1)));
        o.retain_peers(|_| false);
        assert_eq!(o.pending_tables(), 0);
        assert!(o.cursor_after(None).is_none());
    }

    /// The bucket lets `rate` bytes per second through plus at most one burst, and a timer set to
    /// `ready_at` always finds the tokens there.
    #[test]
    fn bucket_paces_exactly() {
        let t0 = Instant::now();
        let mut b = Bucket::new(t0, 1000, 500);
        assert!(b.take(t0, 500));
        assert!(!b.take(t0, 100));
        let at = b.ready_at(100);
        assert_eq!(at - t0, Duration::from_millis(100));
        assert!(b.take(at, 100));
        // Over 10 s of 100-byte messages sent as soon as allowed: 10 × 1000 + the initial 500.
        let mut now = at;
        let mut sent = 600;
        while now - t0 < Duration::from_secs(10) {
            if b.take(now, 100) {
                sent += 100;
            } else {
                now = b.ready_at(100);
            }
        }
        assert!(sent <= 10_000 + 500 + 100, "{sent}");
        // A message larger than the burst waits for a full bucket, then leaves it in debt.
        let mut b = Bucket::new(t0, 1000, 500);
        assert!(b.take(t0, 2000));
        assert!(!b.take(t0 + Duration::from_millis(1400), 1));
        assert!(b.take(t0 + Duration::from_millis(1501), 1));
        // Unlimited.
        let mut b = Bucket::new(t0, 0, 500);
        assert!(b.take(t0, usize::MAX / 2));
    }
}
