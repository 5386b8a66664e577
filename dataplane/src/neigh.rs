//! The neighbour table of one network: IP → MAC bindings that let the TAP path answer ARP requests and IPv6
//! neighbour solicitations itself ([`crate::engine::suppress`]) instead of flooding them over the underlay.
//!
//! Two origins:
//! - `local`: the address answers on our own bridge. Learned from ARP/NS/NA senders read from the TAP (the
//!   suppressor returns the binding, the caller calls [`NeighTable::learn`]) or put there by `attach`. The
//!   cluster glue advertises them with the MAC ([`NeighTable::local_bindings`], [`NeighTable::local_version`]).
//! - `control`: installed from another host's advert ([`NeighTable::install`]); withdrawn by the control plane
//!   ([`NeighTable::remove_control`]). Never ages.
//!
//! Precedence, as in the FDB: `local` beats `control`. A local sighting replaces a control binding for the
//! same address (the container is here now). A control install for an address bound locally is refused
//! ([`Insert::OwnedLocally`]) while the local binding was seen within `stale_after` (default 300 s, the FDB's
//! ageing); after that the remote claim wins (the container moved away and went quiet here). A refused or
//! overridden control claim is kept aside with the local binding (the latest one per address, as in the FDB):
//! when the MAC leaves our bridge ([`NeighTable::remove_mac`], called by the caller when the FDB forgets a
//! local MAC) the address falls back to that claim instead of being forgotten, since the control plane does
//! not re-send an advert it already sent.
//!
//! Bounded (STYLE §5): at most `capacity` addresses (default 4096). A new address in a full table first
//! sweeps out every `local` binding not seen for `stale_after` (one with a control claim kept aside falls
//! back to it instead; stale local bindings are the only ones that may be evicted: a
//! container that still speaks keeps refreshing its binding, and `control` bindings are the control plane's
//! to withdraw). If nothing is stale the new binding is refused ([`Insert::Full`]) — fail closed: its
//! requests are then flooded, as without suppression. A refused sweep remembers the earliest time any
//! binding can become stale and does not scan again before then, so a flood of new addresses into a full
//! table costs one map-length read each, never a scan. So a flood of spoofed senders can neither push out a
//! binding in use nor a control one; it only fills free room (and `local` room is also what the cap on local
//! MACs in the FDB bounds). The bound is exact up to concurrent inserts racing past the length check (at most
//! one extra entry per concurrent writer).
//!
//! Concurrency: a sharded map (dashmap) behind an `Arc`, read by every TX worker. A lookup is one shard read
//! lock; refreshing a local binding is an atomic store under that read lock. Only new, changed or removed
//! bindings take a shard write lock. Time is explicit: every call takes `now`; nothing reads a clock.
//!
//! Must never: evict a control binding or a fresh local one, allocate on a lookup or a refresh, or hold a
//! shard guard while taking another (length reads and sweeps happen with no guard held).

use crate::wire::MacAddr;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Where a binding came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NeighOrigin {
    /// On our own bridge (seen on the TAP, or attached here).
    Local,
    /// Another host's, from its advert.
    Control,
}

/// An IP → MAC binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Binding {
    pub ip: IpAddr,
    pub mac: MacAddr,
}

impl Binding {
    /// A binding worth keeping: a unicast, learnable MAC and a unicast address that is neither unspecified,
    /// loopback, multicast nor the IPv4 limited broadcast.
    pub fn is_valid(&self) -> bool {
        let ip_ok = match self.ip {
            IpAddr::V4(a) => !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast()),
            IpAddr::V6(a) => !(a.is_unspecified() || a.is_loopback() || a.is_multicast()),
        };
        ip_ok && self.mac.is_learnable()
    }
}

/// What an insert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// A new address.
    New,
    /// Same MAC and origin as before (a local binding's timestamp refreshed).
    Refreshed,
    /// The address changed MAC or origin; `from` is the previous MAC.
    Changed { from: MacAddr, origin: NeighOrigin },
    /// A control install for an address bound on our own bridge (seen within `stale_after`): refused.
    OwnedLocally,
    /// The table is full and holds no stale local binding: refused.
    Full,
    /// Not a valid binding ([`Binding::is_valid`]): refused.
    Invalid,
}

/// One row of a neighbour listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NeighRow {
    pub ip: IpAddr,
    pub mac: MacAddr,
    pub origin: NeighOrigin,
    /// Seconds since a local binding was last seen, or a control one installed.
    pub age_s: u64,
}

#[derive(Debug)]
struct Slot {
    mac: MacAddr,
    origin: NeighOrigin,
    /// Nanoseconds since the table's epoch when last seen (local) or installed (control).
    seen: AtomicU64,
    /// Local bindings only: the control plane's latest claim for this address, applied when the local
    /// binding goes ([`NeighTable::remove_mac`]).
    claim: Option<MacAddr>,
}

#[derive(Debug)]
pub struct NeighTable {
    map: DashMap<IpAddr, Slot>,
    capacity: usize,
    stale_after: Duration,
    epoch: Instant,
    /// Bumped whenever the set of local bindings changes (not on refreshes).
    local_version: AtomicU64,
    /// While the table is full: no local binding can be stale before this time (ns since epoch), so no
    /// sweep is tried before it. 0: unknown, sweep when full.
    no_room_until: AtomicU64,
}

impl NeighTable {
    pub const DEFAULT_CAPACITY: usize = 4096;
    pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(300);

    /// `epoch` is any instant not later than the first `now` passed in.
    pub fn new(capacity: usize, epoch: Instant) -> NeighTable {
        NeighTable {
            // Room for a full table up front: inserts then rarely grow a shard.
            map: DashMap::with_capacity(capacity.min(65_536)),
            capacity,
            stale_after: NeighTable::DEFAULT_STALE_AFTER,
            epoch,
            local_version: AtomicU64::new(0),
            no_room_until: AtomicU64::new(0),
        }
    }

    /// How long a local binding may go unseen before a full table may evict it and a control install may
    /// replace it.
    pub fn with_stale_after(mut self, d: Duration) -> NeighTable {
        self.stale_after = d;
        self
    }

    fn ts(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn stale_ns(&self) -> u64 {
        u64::try_from(self.stale_after.as_nanos()).unwrap_or(u64::MAX)
    }

    fn is_stale(&self, s: &Slot, t: u64) -> bool {
        s.origin == NeighOrigin::Local && t.saturating_sub(s.seen.load(Relaxed)) >= self.stale_ns()
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

    /// The binding of `ip`, if known. The hot-path read: one shard read lock, no allocation.
    #[inline]
    pub fn lookup(&self, ip: &IpAddr) -> Option<(MacAddr, NeighOrigin)> {
        self.map.get(ip).map(|s| (s.mac, s.origin))
    }

    /// Bumped whenever a local binding appears, changes or goes (not when one is merely refreshed): the
    /// cluster glue re-reads [`NeighTable::local_bindings`] when it moves.
    pub fn local_version(&self) -> u64 {
        self.local_version.load(Relaxed)
    }

    fn bump(&self) {
        self.local_version.fetch_add(1, Relaxed);
    }

    /// `b` was seen on our own bridge (an ARP/NS/NA sender read from the TAP, or an attach).
    #[inline]
    pub fn learn(&self, b: Binding, now: Instant) -> Insert {
        let t = self.ts(now);
        // Fast path under the shard read lock: a container re-announcing itself.
        if let Some(s) = self.map.get(&b.ip) {
            if s.origin == NeighOrigin::Local && s.mac == b.mac {
                s.seen.store(t, Relaxed);
                return Insert::Refreshed;
            }
        }
        self.upsert(b, NeighOrigin::Local, t)
    }

    /// `b` was advertised by another host.
    pub fn install(&self, b: Binding, now: Instant) -> Insert {
        self.upsert(b, NeighOrigin::Control, self.ts(now))
    }

    fn upsert(&self, b: Binding, origin: NeighOrigin, t: u64) -> Insert {
        if !b.is_valid() {
            return Insert::Invalid;
        }
        if !self.map.contains_key(&b.ip) && self.map.len() >= self.capacity && !self.make_room(t) {
            return Insert::Full;
        }
        let r = match self.map.entry(b.ip) {
            Entry::Vacant(v) => {
                v.insert(Slot {
                    mac: b.mac,
                    origin,
                    seen: AtomicU64::new(t),
                    claim: None,
                });
                Insert::New
            }
            Entry::Occupied(mut o) => {
                let s = o.get_mut();
                if s.origin == NeighOrigin::Local && origin == NeighOrigin::Control {
                    // Kept aside either way; applied below if the local binding went stale.
                    s.claim = Some(b.mac);
                }
                if s.origin == origin && s.mac == b.mac {
                    if origin == NeighOrigin::Local {
                        s.seen.store(t, Relaxed);
                    }
                    return Insert::Refreshed;
                }
                if origin == NeighOrigin::Control && s.origin == NeighOrigin::Local && !self.is_stale(s, t) {
                    return Insert::OwnedLocally;
                }
                let from = (s.mac, s.origin);
                // A local binding keeps the control claim it replaces (or the one it already held).
                let claim = match (origin, s.origin) {
                    (NeighOrigin::Local, NeighOrigin::Control) => Some(s.mac),
                    (NeighOrigin::Local, NeighOrigin::Local) => s.claim,
                    _ => None,
                };
                o.insert(Slot {
                    mac: b.mac,
                    origin,
                    seen: AtomicU64::new(t),
                    claim,
                });
                Insert::Changed {
                    from: from.0,
                    origin: from.1,
                }
            }
        };
        let was_local = matches!(
            r,
            Insert::Changed {
                origin: NeighOrigin::Local,
                ..
            }
        );
        if origin == NeighOrigin::Local || was_local {
            self.bump();
        }
        r
    }

    /// The table is full: evict every stale local binding. False if none was (then refuse for a while).
    fn make_room(&self, t: u64) -> bool {
        if t < self.no_room_until.load(Relaxed) {
            return false;
        }
        let stale = self.stale_ns();
        let mut removed = 0usize;
        let mut fell_back = 0usize;
        let mut oldest_local = u64::MAX;
        self.map.retain(|_, s| {
            if self.is_stale(s, t) {
                // A stale local binding with a control claim kept aside falls back to it (no room made).
                if let Some(c) = s.claim.take() {
                    s.mac = c;
                    s.origin = NeighOrigin::Control;
                    fell_back += 1;
                    return true;
                }
                removed += 1;
                return false;
            }
            if s.origin == NeighOrigin::Local {
                oldest_local = oldest_local.min(s.seen.load(Relaxed));
            }
            true
        });
        if removed + fell_back > 0 {
            self.bump();
        }
        if removed > 0 {
            self.no_room_until.store(0, Relaxed);
            return true;
        }
        // Bindings added from now on are seen at `t` or later, so none becomes stale before this.
        let until = oldest_local.min(t).saturating_add(stale);
        self.no_room_until.store(until, Relaxed);
        false
    }

    /// Withdraw the control binding of `ip` (an advert that dropped the address), or the claim kept aside
    /// with a local binding. A local binding itself is kept. True if a binding or claim was removed.
    pub fn remove_control(&self, ip: &IpAddr) -> bool {
        if let Some(mut s) = self.map.get_mut(ip) {
            if s.origin == NeighOrigin::Local {
                return s.claim.take().is_some();
            }
        }
        self.map
            .remove_if(ip, |_, s| s.origin == NeighOrigin::Control)
            .is_some()
    }

    /// Withdraw every control binding and kept-aside claim to `mac` (the control plane's `FdbRemove`: the
    /// MAC's advert was withdrawn). Returns how many bindings went.
    pub fn remove_control_mac(&self, mac: &MacAddr) -> usize {
        let mut n = 0;
        self.map.retain(|_, s| {
            if s.origin == NeighOrigin::Control {
                let drop = s.mac == *mac;
                n += usize::from(drop);
                return !drop;
            }
            if s.claim == Some(*mac) {
                s.claim = None;
            }
            true
        });
        n
    }

    /// `mac` left our bridge: forget its local bindings; an address with a control claim kept aside falls
    /// back to it. Returns how many local bindings went.
    pub fn remove_mac(&self, mac: &MacAddr) -> usize {
        let mut n = 0;
        self.map.retain(|_, s| {
            if s.origin != NeighOrigin::Local || s.mac != *mac {
                return true;
            }
            n += 1;
            match s.claim.take() {
                Some(c) => {
                    s.mac = c;
                    s.origin = NeighOrigin::Control;
                    true
                }
                None => false,
            }
        });
        if n > 0 {
            self.bump();
        }
        n
    }

    /// Remove one address whatever its origin (admin, detach). True if it was bound.
    pub fn remove(&self, ip: &IpAddr) -> bool {
        match self.map.remove(ip) {
            Some((_, s)) => {
                if s.origin == NeighOrigin::Local {
                    self.bump();
                }
                true
            }
            None => false,
        }
    }

    /// Local bindings, sorted by MAC then IP (for adverts: group by MAC).
    pub fn local_bindings(&self) -> Vec<Binding> {
        let mut v: Vec<Binding> = self
            .map
            .iter()
            .filter(|e| e.origin == NeighOrigin::Local)
            .map(|e| Binding {
                ip: *e.key(),
                mac: e.mac,
            })
            .collect();
        v.sort_unstable_by_key(|b| (b.mac, b.ip));
        v
    }

    /// Addresses bound to `mac` locally, sorted (at most `max`, for a bounded advert).
    pub fn local_ips_of(&self, mac: &MacAddr, max: usize) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .map
            .iter()
            .filter(|e| e.origin == NeighOrigin::Local && e.mac == *mac)
            .map(|e| *e.key())
            .collect();
        v.sort_unstable();
        v.truncate(max);
        v
    }

    /// Every binding, sorted by address.
    pub fn rows(&self, now: Instant) -> Vec<NeighRow> {
        let t = self.ts(now);
        let mut v: Vec<NeighRow> = self
            .map
            .iter()
            .map(|e| NeighRow {
                ip: *e.key(),
                mac: e.mac,
                origin: e.origin,
                age_s: t.saturating_sub(e.seen.load(Relaxed)) / 1_000_000_000,
            })
            .collect();
        v.sort_unstable_by_key(|r| r.ip);
        v
    }
}

#[cfg(test)]
mod tests;
