//! One owner's table as this node holds it ([`OwnerState`]): its entries by key and by (seq, key),
//! the present counters per VNI, and its cached hash; and the FNV-1a hash that digests are made of.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::Key;
use crate::identity::NodeId;
use crate::messages::FdbEntry;
use crate::Vni;

#[derive(Debug, Clone)]
pub(super) struct OwnerState {
    pub(super) generation: u64,
    pub(super) vtep: IpAddr,
    /// Highest seq held in this table.
    pub(super) max_seq: u64,
    /// Entries with `present` (the rest are tombstones).
    pub(super) present: usize,
    pub(super) entries: BTreeMap<Key, FdbEntry>,
    /// The same entries ordered by (seq, key): what anti-entropy and adverts ship, in the order the
    /// owner made them, so a table sent in pieces can resume where it stopped.
    pub(super) by_seq: BTreeSet<(u64, Key)>,
    /// Present entries per VNI (flood-set membership).
    pub(super) per_vni: BTreeMap<Vni, usize>,
    /// [`OwnerState::hash`] of the current entries (None after a change): digests are asked for on
    /// every anti-entropy round and a table holds thousands of entries.
    pub(super) hash: Cell<Option<u64>>,
}

impl OwnerState {
    pub(super) fn new(generation: u64, vtep: IpAddr) -> Self {
        OwnerState {
            generation,
            vtep,
            max_seq: 0,
            present: 0,
            entries: BTreeMap::new(),
            by_seq: BTreeSet::new(),
            per_vni: BTreeMap::new(),
            hash: Cell::new(None),
        }
    }

    /// Replace the entry at `key`, keeping the present counters and the seq index right. Returns
    /// whether the set of VNIs with a present entry changed (only then can a flood set change).
    pub(super) fn put(&mut self, key: Key, entry: FdbEntry) -> bool {
        self.hash.set(None);
        self.by_seq.insert((entry.seq, key));
        let had_vni = self.per_vni.contains_key(&key.0);
        if entry.present {
            self.present += 1;
            *self.per_vni.entry(key.0).or_default() += 1;
        }
        let seq = entry.seq;
        if let Some(old) = self.entries.insert(key, entry) {
            if old.seq != seq {
                self.by_seq.remove(&(old.seq, key));
            }
            if old.present {
                self.present -= 1;
                if let Some(n) = self.per_vni.get_mut(&key.0) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_vni.remove(&key.0);
                    }
                }
            }
        }
        had_vni != self.per_vni.contains_key(&key.0)
    }

    pub(super) fn hash(&self, owner: NodeId) -> u64 {
        if let Some(h) = self.hash.get() {
            return h;
        }
        let h = self.compute_hash(owner);
        self.hash.set(Some(h));
        h
    }

    fn compute_hash(&self, owner: NodeId) -> u64 {
        let mut h = Fnv::new();
        h.write(&owner.0.to_le_bytes());
        h.write(&self.generation.to_le_bytes());
        for ((vni, mac), v) in &self.entries {
            h.write(&vni.get().to_le_bytes());
            h.write(&mac.0);
            h.write(&(v.ips.len() as u32).to_le_bytes());
            for ip in &v.ips {
                match ip {
                    IpAddr::V4(a) => h.write(&a.octets()),
                    IpAddr::V6(a) => h.write(&a.octets()),
                }
            }
            h.write(&v.seq.to_le_bytes());
            h.write(&v.mobility.to_le_bytes());
            h.write(&[v.present as u8]);
        }
        h.0
    }
}

/// FNV-1a 64: stable across builds and platforms (std's hasher is not guaranteed to be), cheap.
#[derive(Clone, Copy)]
pub(crate) struct Fnv(pub(crate) u64);
impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
