//! The forwarding database: MAC → VTEP, bounded, shared between workers, the control plane and the admin API.
//!
//! Time is explicit: every call takes `now` and nothing here reads a clock, so tests drive ageing directly.
//! Learned and local entries age out after `ageing` (kernel default 300 s); a lookup treats an aged entry as
//! absent even before [`Fdb::expire`] removes it. Control entries never age: the control plane withdraws them.
//!
//! Precedence (STYLE §5, issue 8 "Trust"):
//! - `static` beats everything and is never overridden.
//! - `local` (the MAC sits on a non-TAP port of our bridge) beats `control` and `learned`: a datagram from
//!   elsewhere never takes a local MAC away (the engine drops it as `spoofed_src`), and a control claim for it
//!   is kept aside until the MAC leaves our bridge ([`Fdb::sync_bridge`]), then it wins.
//! - `control` beats `learned`; a learned sighting never overwrites a control or local entry.
//! - Every change of owner of a remote claim (learned or control) is subject to dampening ([`Damping`], RFC 7432
//!   §15); refused moves are counted as `mac_flaps`.
//!
//! Floods (issue 9 §4):
//! - At most `max_local` entries are `local` ([`Fdb::with_max_local`], `--max-local-macs`): a new local MAC
//!   beyond that is neither learned nor (in cluster mode) advertised, and is counted as `local_mac_cap`.
//! - A full table makes room for a new entry by evicting a `learned` one, least recently seen first
//!   (approximately: see `evict.rs`); `local`, `control` and `static` entries are never evicted. Only when no
//!   learned entry is left is learning refused (`fdb_full`).
//!
//! Concurrency: a sharded map (dashmap). The hot path takes one shard read lock per lookup; refreshing an
//! entry is an atomic store under that read lock, so steady-state traffic never takes a write lock. Moves,
//! installs and withdrawals take the shard's write lock.

mod claims;
mod damping;
mod evict;
mod hash;
pub use damping::Damping;
use damping::Moves;
use evict::Hints;
pub use hash::{MacHashBuilder, MacHasher};

use crate::stats::Counters;
use crate::wire::MacAddr;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Seen as a source MAC on our own TAP: lives behind our bridge.
    Local,
    /// Learned from the outer source address of a received datagram.
    Learned,
    /// Installed by the control plane.
    Control,
    /// Configured by the operator.
    Static,
}

impl Origin {
    fn ages(self) -> bool {
        matches!(self, Origin::Local | Origin::Learned)
    }
}

#[derive(Debug)]
struct Slot {
    vtep: IpAddr,
    origin: Origin,
    /// Nanoseconds since the FDB epoch when the entry was last confirmed.
    seen: AtomicU64,
    /// The control plane's latest claim for this MAC that could not be applied yet: the MAC is local here,
    /// or dampening froze it. Applied when the MAC leaves our bridge or the dampening window closes.
    claim: Option<IpAddr>,
    moves: Moves,
}

impl Slot {
    fn new(vtep: IpAddr, origin: Origin, t: u64) -> Slot {
        Slot {
            vtep,
            origin,
            seen: AtomicU64::new(t),
            claim: None,
            moves: Moves::default(),
        }
    }
}

/// A lookup result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dest {
    pub vtep: IpAddr,
    pub origin: Origin,
}

/// What a learning call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learn {
    /// New entry.
    New,
    /// Same place as before; timestamp refreshed.
    Refreshed,
    /// The MAC moved from another VTEP (or from/to our own bridge).
    Moved { from: IpAddr },
    /// A control or static entry owns this MAC; learning does not override it.
    Ignored,
    /// A remote sighting of a MAC that lives behind our own bridge: refused (the engine drops the datagram as
    /// `spoofed_src`).
    OwnedLocally,
    /// The MAC moved too often (dampening): frozen at its current owner, the move was refused and counted.
    Dampened,
    /// The table is at capacity and holds no learned entry to evict; nothing learned.
    Full,
    /// A new local MAC while `max_local` MACs are already local: not learned (counted as `local_mac_cap`).
    LocalCap,
}

/// One row of `overlayctl fdb`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FdbRow {
    pub mac: MacAddr,
    pub vtep: IpAddr,
    pub origin: Origin,
    pub age_s: u64,
}

#[derive(Debug)]
pub struct Fdb {
    map: DashMap<MacAddr, Slot, MacHashBuilder>,
    capacity: usize,
    ageing: Duration,
    damping: Damping,
    epoch: Instant,
    /// What the FDB itself counts (`mac_flaps`, `local_mac_cap`, `fdb_evictions`); served next to the
    /// workers' counters.
    counters: Arc<Counters>,
    /// Most entries with origin `local` at once.
    max_local: usize,
    /// Entries with origin `local` now (aged ones included until removed). Changed only under the entry's
    /// write lock, by [`Fdb::reserve_local`] and [`Fdb::unlocal`].
    locals: AtomicUsize,
    /// MACs of the bridge's table refused by the cap at the last [`Fdb::sync_bridge`] (sorted), so each
    /// refused MAC is counted once while it stays on the bridge.
    bridge_refused: Mutex<Vec<MacAddr>>,
    /// Eviction candidates (learned entries), see `evict.rs`.
    hints: Hints,
    /// Bumped whenever the set of local MACs changes (an entry becomes or stops being local).
    local_version: AtomicU64,
    /// Called after each such change (the cluster glue wakes up and re-advertises); set once.
    on_local_change: OnceLock<LocalNotifier>,
    /// Bumped whenever any entry appears, goes, or changes VTEP or origin (never on a refresh).
    version: AtomicU64,
    /// Called after each such change (`overlayctl fdb --watch` wakes up); set once.
    on_change: OnceLock<LocalNotifier>,
}

/// The callback of [`Fdb::notify_local_changes`].
struct LocalNotifier(Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for LocalNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalNotifier")
    }
}

impl Fdb {
    pub const DEFAULT_CAPACITY: usize = 65_536;
    pub const DEFAULT_AGEING: Duration = Duration::from_secs(300);
    /// Default `--max-local-macs`.
    pub const DEFAULT_MAX_LOCAL: usize = 4096;

    /// `epoch` is any instant not later than the first `now` passed in.
    pub fn new(capacity: usize, ageing: Duration, epoch: Instant) -> Fdb {
        Fdb {
            map: DashMap::with_capacity_and_hasher(capacity.min(4096), MacHashBuilder::new()),
            capacity,
            ageing,
            damping: Damping::default(),
            epoch,
            counters: Arc::default(),
            max_local: Fdb::DEFAULT_MAX_LOCAL,
            locals: AtomicUsize::new(0),
            bridge_refused: Mutex::new(Vec::new()),
            hints: Hints::new(capacity),
            local_version: AtomicU64::new(0),
            on_local_change: OnceLock::new(),
            version: AtomicU64::new(0),
            on_change: OnceLock::new(),
        }
    }

    /// Changes whenever the set of local MACs ([`Fdb::local_macs`]) changes: a MAC became local or stopped
    /// being local (left the bridge, aged out at [`Fdb::expire`], claimed elsewhere).
    pub fn local_version(&self) -> u64 {
        self.local_version.load(Relaxed)
    }

    /// Call `f` after every change of the local MAC set (from whichever thread made it, forwarding threads
    /// included: keep it cheap and non-blocking, e.g. `tokio::sync::Notify::notify_one`). Only the first call
    /// installs a callback; returns whether this one did.
    pub fn notify_local_changes(&self, f: impl Fn() + Send + Sync + 'static) -> bool {
        self.on_local_change.set(LocalNotifier(Box::new(f))).is_ok()
    }

    /// Changes whenever the rows ([`Fdb::rows`]) change other than by age: an entry appeared, went, or changed
    /// VTEP or origin (a refresh, the per-packet case, never changes it). An entry that ages out is seen as
    /// gone at the next [`Fdb::expire`] (or the next change).
    pub fn version(&self) -> u64 {
        // SeqCst with the bump below: the watch feed's proof that no change is missed relies on it.
        self.version.load(SeqCst)
    }

    /// Call `f` after every change counted by [`Fdb::version`] (from whichever thread made it, forwarding
    /// threads included, possibly under a shard's write lock: keep it cheap, non-blocking and off the FDB).
    /// Only the first call installs a callback; returns whether this one did. Spurious calls may happen.
    pub fn notify_changes(&self, f: impl Fn() + Send + Sync + 'static) -> bool {
        self.on_change.set(LocalNotifier(Box::new(f))).is_ok()
    }

    /// An entry appeared, went, or changed VTEP or origin. Only on paths that already took a write lock.
    fn changed(&self) {
        self.version.fetch_add(1, SeqCst);
        if let Some(n) = self.on_change.get() {
            (n.0)();
        }
    }

    fn local_changed(&self) {
        self.local_version.fetch_add(1, Relaxed);
        if let Some(n) = self.on_local_change.get() {
            (n.0)();
        }
    }

    /// At most `n` local MACs (`--max-local-macs`); beyond, new local MACs are refused and counted.
    pub fn with_max_local(mut self, n: usize) -> Fdb {
        self.max_local = n;
        self
    }

    /// How many entries are `local` now.
    pub fn local_count(&self) -> usize {
        self.locals.load(Relaxed)
    }

    /// Takes one of the `max_local` places for an entry about to become local; false if none is left.
    fn reserve_local(&self) -> bool {
        let ok = self
            .locals
            .fetch_update(Relaxed, Relaxed, |n| (n < self.max_local).then_some(n + 1))
            .is_ok();
        if ok {
            self.local_changed();
        }
        ok
    }

    /// An entry stops being local (changes origin or is removed).
    fn unlocal(&self) {
        let _ = self
            .locals
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
        self.local_changed();
    }

    /// Replace the default dampening thresholds (RFC 7432's 5 moves in 180 s).
    pub fn with_damping(mut self, damping: Damping) -> Fdb {
        self.damping = damping;
        self
    }

    /// The FDB's own counters (`mac_flaps`); add them to the ones `overlayctl stats` sums.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    fn ts(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn fresh(&self, s: &Slot, now: u64) -> bool {
        !s.origin.ages() || now.saturating_sub(s.seen.load(Relaxed)) < self.ageing.as_nanos() as u64
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Where frames for `mac` go, if anywhere known.
    #[inline]
    pub fn lookup(&self, mac: &MacAddr, now: Instant) -> Option<Dest> {
        let s = self.map.get(mac)?;
        self.fresh(&s, self.ts(now)).then_some(Dest {
            vtep: s.vtep,
            origin: s.origin,
        })
    }

    /// Record that `mac` sits behind `vtep` (learned from a datagram's outer source), or behind our own bridge
    /// (`origin` = [`Origin::Local`], `vtep` = our own address). See the module doc for what wins.
    ///
    /// A refusal at the local cap ([`Learn::LocalCap`]) is not counted here, per frame: [`Fdb::sync_bridge`]
    /// counts each refused MAC once.
    #[inline]
    pub fn learn(&self, mac: MacAddr, vtep: IpAddr, origin: Origin, now: Instant) -> Learn {
        debug_assert!(origin.ages());
        let t = self.ts(now);
        // Fast path under the shard read lock: a refresh, or a refusal that changes nothing.
        if let Some(s) = self.map.get(&mac) {
            if self.fresh(&s, t) {
                match (s.origin, origin) {
                    (o, n) if o == n && s.vtep == vtep => {
                        s.seen.store(t, Relaxed);
                        return Learn::Refreshed;
                    }
                    (Origin::Static, _) | (Origin::Control, Origin::Learned) => return Learn::Ignored,
                    (Origin::Local, Origin::Learned) => return Learn::OwnedLocally,
                    _ => {}
                }
            }
        }
        // At the local cap, refuse a MAC that is not local yet before any write lock (a flood of new source
        // MACs costs one read per frame).
        if origin == Origin::Local
            && self.locals.load(Relaxed) >= self.max_local
            && !self.map.get(&mac).is_some_and(|s| s.origin == Origin::Local)
        {
            return Learn::LocalCap;
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(&mac) && !self.evict_one() {
            return Learn::Full;
        }
        let (l, hint) = match self.map.entry(mac) {
            Entry::Vacant(v) => {
                if origin == Origin::Local && !self.reserve_local() {
                    return Learn::LocalCap;
                }
                v.insert(Slot::new(vtep, origin, t));
                self.changed();
                (Learn::New, origin == Origin::Learned)
            }
            Entry::Occupied(mut o) => self.relearn(o.get_mut(), vtep, origin, t),
        };
        // After the entry's lock is released: the hint queue is always locked before a shard, never after.
        if hint {
            self.hint_learned(mac);
        }
        l
    }

    /// [`Fdb::learn`] on an existing entry, under its shard's write lock. Also returns whether the entry just
    /// became `learned` (to be noted as an eviction candidate once the lock is released).
    fn relearn(&self, s: &mut Slot, vtep: IpAddr, origin: Origin, t: u64) -> (Learn, bool) {
        if !self.settle(s, t) {
            // Aged out: as good as absent, but its move history stays (an entry cannot dodge dampening by
            // going quiet for a while).
            let old = s.origin;
            match (old == Origin::Local, origin == Origin::Local) {
                (false, true) if !self.reserve_local() => return (Learn::LocalCap, false),
                (true, false) => self.unlocal(),
                // An aged local entry (already out of `local_macs`) is back.
                (true, true) => self.local_changed(),
                _ => {}
            }
            let moves = s.moves;
            *s = Slot::new(vtep, origin, t);
            s.moves = moves;
            self.changed();
            return (Learn::New, old != Origin::Learned && origin == Origin::Learned);
        }
        (self.relearn_fresh(s, vtep, origin, t), false)
    }

    /// [`Fdb::relearn`] on an entry that has not aged out.
    fn relearn_fresh(&self, s: &mut Slot, vtep: IpAddr, origin: Origin, t: u64) -> Learn {
        let from = s.vtep;
        match (s.origin, origin) {
            (Origin::Static, _) | (Origin::Control, Origin::Learned) => Learn::Ignored,
            (Origin::Local, Origin::Learned) => Learn::OwnedLocally,
            (o, n) if o == n && from == vtep => {
                s.seen.store(t, Relaxed);
                Learn::Refreshed
            }
            (old, Origin::Local) => {
                // Our bridge forwarded a frame from this MAC, so it is here whatever remote claims say. A
                // control claim is kept for when it leaves again. (`old` is control or learned here: a local
                // entry at our own address was refreshed above.)
                if !self.reserve_local() {
                    return Learn::LocalCap;
                }
                if old == Origin::Control {
                    s.claim = Some(from);
                }
                s.origin = Origin::Local;
                s.vtep = vtep;
                s.seen.store(t, Relaxed);
                self.changed();
                if from == vtep {
                    Learn::New
                } else {
                    s.moves.try_move(t, &self.damping, true);
                    Learn::Moved { from }
                }
            }
            _ => {
                // A learned entry seen at another VTEP.
                if s.moves.try_move(t, &self.damping, false) {
                    s.vtep = vtep;
                    s.seen.store(t, Relaxed);
                    self.changed();
                    Learn::Moved { from }
                } else {
                    Counters::add(&self.counters.mac_flaps, 1);
                    Learn::Dampened
                }
            }
        }
    }

    /// Bring an entry up to date at `t` (under its write lock): an aged local/learned entry gives way to a
    /// pending control claim, and a claim refused by dampening is applied once its window has closed. Returns
    /// false for an aged entry with nothing to fall back to (to be removed or overwritten).
    fn settle(&self, s: &mut Slot, t: u64) -> bool {
        if !self.fresh(s, t) {
            let Some(c) = s.claim.take() else {
                return false;
            };
            if c != s.vtep {
                s.moves.try_move(t, &self.damping, true);
            }
            if s.origin == Origin::Local {
                self.unlocal();
            }
            s.vtep = c;
            s.origin = Origin::Control;
            s.seen.store(t, Relaxed);
            self.changed();
            return true;
        }
        if let (Some(c), Origin::Control | Origin::Learned) = (s.claim, s.origin) {
            if c == s.vtep || s.moves.try_move(t, &self.damping, false) {
                s.vtep = c;
                s.origin = Origin::Control;
                s.claim = None;
                s.seen.store(t, Relaxed);
                self.changed();
            }
        }
        true
    }

    /// Remove aged learned and local entries (an aged local entry with a pending control claim becomes that
    /// control entry), and apply control claims whose dampening window has closed; returns how many were
    /// removed. Call it every second or so.
    pub fn expire(&self, now: Instant) -> usize {
        let t = self.ts(now);
        let before = self.map.len();
        self.map.retain(|_, s| {
            let keep = self.settle(s, t);
            if !keep && s.origin == Origin::Local {
                self.unlocal();
            }
            keep
        });
        let removed = before.saturating_sub(self.map.len());
        if removed > 0 {
            self.changed();
        }
        removed
    }

    /// MACs currently seen behind our own bridge.
    pub fn local_macs(&self, now: Instant) -> Vec<MacAddr> {
        let t = self.ts(now);
        let mut v: Vec<MacAddr> = self
            .map
            .iter()
            .filter(|e| e.origin == Origin::Local && self.fresh(e, t))
            .map(|e| *e.key())
            .collect();
        v.sort_unstable();
        v
    }

    /// All live entries, sorted by MAC.
    pub fn rows(&self, now: Instant) -> Vec<FdbRow> {
        let t = self.ts(now);
        let mut v: Vec<FdbRow> = self
            .map
            .iter()
            .filter(|e| self.fresh(e, t))
            .map(|e| FdbRow {
                mac: *e.key(),
                vtep: e.vtep,
                origin: e.origin,
                age_s: t.saturating_sub(e.seen.load(Relaxed)) / 1_000_000_000,
            })
            .collect();
        v.sort_by_key(|r| r.mac);
        v
    }
}

#[cfg(test)]
mod flood_tests;
#[cfg(test)]
mod trust_tests;

#[cfg(test)]
mod tests;
