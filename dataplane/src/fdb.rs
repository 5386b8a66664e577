//! The forwarding database: MAC → VTEP, bounded, shared between workers, the control plane and the admin API.
//!
//! Time is explicit: every call takes `now` and nothing here reads a clock, so tests drive ageing directly.
//! Precedence (STYLE §5, kernel vxlan semantics): `static` > `control` > `learned`/`local`. Learned and local
//! entries age out after `ageing` (kernel default 300 s); a lookup treats an aged entry as absent even before
//! [`Fdb::expire`] removes it. Control entries never age: the control plane withdraws them.
//!
//! Concurrency: a sharded map (dashmap). The hot path takes one shard read lock per lookup; refreshing a learned
//! entry is an atomic store under that read lock, so steady-state traffic never takes a write lock.

use crate::wire::MacAddr;
use dashmap::DashMap;
use serde::Serialize;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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
    /// The table is at capacity; nothing learned.
    Full,
}

/// One row of `overlayctl fdb`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FdbRow {
    pub mac: MacAddr,
    pub vtep: IpAddr,
    pub origin: Origin,
    pub age_s: u64,
}

/// A keyed hasher for MAC keys: much cheaper than SipHash, and keyed per table so a flood of chosen MACs cannot
/// aim at one shard/bucket without knowing the key.
#[derive(Clone, Debug)]
pub struct MacHashBuilder {
    key: u64,
}

impl MacHashBuilder {
    fn new() -> Self {
        // RandomState is the std source of per-process randomness; we only borrow its key.
        let key = std::collections::hash_map::RandomState::new().hash_one(0x6f76_6c61_7964u64);
        MacHashBuilder { key: key | 1 }
    }
}

#[derive(Debug)]
pub struct MacHasher {
    key: u64,
    acc: u64,
}

impl Hasher for MacHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.acc = self.acc.rotate_left(8) ^ u64::from(b);
        }
    }
    fn finish(&self) -> u64 {
        // splitmix64 finaliser over key-mixed input.
        let mut z = self.acc ^ self.key;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl BuildHasher for MacHashBuilder {
    type Hasher = MacHasher;
    fn build_hasher(&self) -> MacHasher {
        MacHasher {
            key: self.key,
            acc: 0,
        }
    }
}

#[derive(Debug)]
pub struct Fdb {
    map: DashMap<MacAddr, Slot, MacHashBuilder>,
    capacity: usize,
    ageing: Duration,
    epoch: Instant,
}

impl Fdb {
    pub const DEFAULT_CAPACITY: usize = 65_536;
    pub const DEFAULT_AGEING: Duration = Duration::from_secs(300);

    /// `epoch` is any instant not later than the first `now` passed in.
    pub fn new(capacity: usize, ageing: Duration, epoch: Instant) -> Fdb {
        Fdb {
            map: DashMap::with_capacity_and_hasher(capacity.min(4096), MacHashBuilder::new()),
            capacity,
            ageing,
            epoch,
        }
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
    /// (`origin` = [`Origin::Local`], `vtep` = our own address).
    #[inline]
    pub fn learn(&self, mac: MacAddr, vtep: IpAddr, origin: Origin, now: Instant) -> Learn {
        debug_assert!(origin.ages());
        let t = self.ts(now);
        if let Some(s) = self.map.get(&mac) {
            match s.origin {
                Origin::Static => return Learn::Ignored,
                // A control entry is authoritative for remote sightings; a local sighting means the MAC moved
                // here, which the control plane will learn from our advertisement.
                Origin::Control if origin == Origin::Learned => return Learn::Ignored,
                o if o == origin && s.vtep == vtep => {
                    s.seen.store(t, Relaxed);
                    return Learn::Refreshed;
                }
                _ => {}
            }
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(&mac) {
            return Learn::Full;
        }
        let new = Slot {
            vtep,
            origin,
            seen: AtomicU64::new(t),
        };
        match self.map.insert(mac, new) {
            None => Learn::New,
            Some(old) if old.vtep == vtep && old.origin == origin => Learn::Refreshed,
            Some(old) if !self.fresh(&old, t) => Learn::New,
            Some(old) => Learn::Moved { from: old.vtep },
        }
    }

    /// Install an entry owned by the control plane; it beats learned and local entries, not static ones.
    pub fn install_control(&self, mac: MacAddr, vtep: IpAddr, now: Instant) -> bool {
        if let Some(s) = self.map.get(&mac) {
            if s.origin == Origin::Static {
                return false;
            }
        }
        let t = self.ts(now);
        if self.map.len() >= self.capacity && !self.map.contains_key(&mac) {
            return false;
        }
        self.map.insert(
            mac,
            Slot {
                vtep,
                origin: Origin::Control,
                seen: AtomicU64::new(t),
            },
        );
        true
    }

    /// Withdraw a control entry (no-op for any other origin).
    pub fn remove_control(&self, mac: &MacAddr) -> bool {
        self.map
            .remove_if(mac, |_, s| s.origin == Origin::Control)
            .is_some()
    }

    /// Operator-configured entry; never ages, never overridden.
    pub fn insert_static(&self, mac: MacAddr, vtep: IpAddr, now: Instant) {
        let t = self.ts(now);
        self.map.insert(
            mac,
            Slot {
                vtep,
                origin: Origin::Static,
                seen: AtomicU64::new(t),
            },
        );
    }

    /// Remove aged learned and local entries; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let t = self.ts(now);
        let before = self.map.len();
        self.map.retain(|_, s| self.fresh(s, t));
        before.saturating_sub(self.map.len())
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
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }
    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn learn_refresh_move_and_age() {
        let t0 = Instant::now();
        let f = Fdb::new(16, Duration::from_secs(300), t0);
        assert_eq!(f.learn(mac(1), ip(2), Origin::Learned, t0), Learn::New);
        assert_eq!(
            f.learn(mac(1), ip(2), Origin::Learned, t0 + Duration::from_secs(200)),
            Learn::Refreshed
        );
        // Refresh pushed expiry out: still there 299 s after the refresh.
        let t = t0 + Duration::from_secs(499);
        assert_eq!(
            f.lookup(&mac(1), t),
            Some(Dest {
                vtep: ip(2),
                origin: Origin::Learned
            })
        );
        assert_eq!(
            f.learn(mac(1), ip(3), Origin::Learned, t),
            Learn::Moved { from: ip(2) }
        );
        assert_eq!(f.lookup(&mac(1), t).map(|d| d.vtep), Some(ip(3)));
        let later = t + Duration::from_secs(300);
        assert_eq!(
            f.lookup(&mac(1), later),
            None,
            "aged entry is invisible before expire()"
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f.expire(later), 1);
        assert!(f.is_empty());
    }

    #[test]
    fn precedence_static_control_learned() {
        let t0 = Instant::now();
        let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0);
        assert!(f.install_control(mac(1), ip(5), t0));
        assert_eq!(f.learn(mac(1), ip(6), Origin::Learned, t0), Learn::Ignored);
        assert_eq!(
            f.lookup(&mac(1), t0 + Duration::from_secs(10_000))
                .map(|d| d.vtep),
            Some(ip(5))
        );
        // A local sighting beats control: the MAC moved behind our bridge.
        assert_eq!(
            f.learn(mac(1), ip(1), Origin::Local, t0),
            Learn::Moved { from: ip(5) }
        );
        assert!(!f.remove_control(&mac(1)), "only control entries are withdrawn");
        f.insert_static(mac(2), ip(9), t0);
        assert!(!f.install_control(mac(2), ip(5), t0));
        assert_eq!(f.learn(mac(2), ip(6), Origin::Learned, t0), Learn::Ignored);
        assert_eq!(f.lookup(&mac(2), t0).map(|d| d.origin), Some(Origin::Static));
        assert!(f.install_control(mac(3), ip(5), t0));
        assert!(f.remove_control(&mac(3)));
        assert_eq!(f.lookup(&mac(3), t0), None);
    }

    #[test]
    fn bounded() {
        let t0 = Instant::now();
        let f = Fdb::new(2, Fdb::DEFAULT_AGEING, t0);
        assert_eq!(f.learn(mac(1), ip(2), Origin::Learned, t0), Learn::New);
        assert_eq!(f.learn(mac(2), ip(2), Origin::Learned, t0), Learn::New);
        assert_eq!(f.learn(mac(3), ip(2), Origin::Learned, t0), Learn::Full);
        // Existing entries can still move when full.
        assert_eq!(
            f.learn(mac(2), ip(3), Origin::Learned, t0),
            Learn::Moved { from: ip(2) }
        );
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn rows_and_local_macs() {
        let t0 = Instant::now();
        let f = Fdb::new(16, Fdb::DEFAULT_AGEING, t0);
        f.learn(mac(3), ip(1), Origin::Local, t0);
        f.learn(mac(2), ip(4), Origin::Learned, t0);
        let rows = f.rows(t0 + Duration::from_secs(7));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].mac, mac(2));
        assert_eq!(rows[0].age_s, 7);
        assert_eq!(f.local_macs(t0), vec![mac(3)]);
        let json = serde_json::to_string(&rows[1]).unwrap();
        assert_eq!(
            json,
            r#"{"mac":"02:00:00:00:00:03","vtep":"10.0.0.1","origin":"local","age_s":7}"#
        );
    }
}
