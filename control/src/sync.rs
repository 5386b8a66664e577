//! FDB distribution state: per owner (node id, generation) a table (VNI, MAC) → signed entry (IPs, seq,
//! mobility, present), the resolution of each (VNI, MAC) to one owner across the cluster, the per-VNI
//! flood sets (members advertising at least one MAC on the VNI) and anti-entropy digests. "MAC" below
//! means the (VNI, MAC) key: the same MAC on two VNIs is two independent entries.
//!
//! Ordering rules (why): an owner's newer generation replaces all its older state (a restart forgets its
//! MACs). Within an owner, the higher `seq` wins per MAC; seqs count the owner's own changes in one
//! generation. Across owners a MAC goes to the live claim with the highest (mobility, generation, node id):
//! `mobility` is EVPN's MAC-mobility sequence (RFC 7432 §15), one more than the highest claim on that MAC
//! the owner had seen, so a MAC that moved to node B after B heard A's claim is ordered after it regardless
//! of which daemon started last; generation and node id break the remaining ties deterministically.
//!
//! Bounds (why): values come from members, one of which may be compromised. Per (owner, generation) a seq
//! may not jump more than [`MAX_JUMP`] past the highest seq held for that table, and a mobility not more
//! than [`MAX_JUMP`] past the highest held for that MAC; anything further is refused and counted. The
//! number is per MAC (unlike the earlier cluster-wide Lamport clock), so a claim with `u64::MAX` can
//! neither wrap a counter (all arithmetic saturates) nor freeze every later move: it is refused, and at
//! most one MAC's counter is pushed 2^20 further per accepted claim.
//!
//! Only owners the membership layer reports as active ("eligible") are held; an owner that dies, leaves,
//! is revoked or is superseded by a newer generation is dropped whole, which withdraws its MACs.
//! Signatures are checked by the caller ([`crate::node`]) between [`FdbSync::admit`] and
//! [`FdbSync::apply_entry`], so only entries that would change state cost a verification.
//! Must never: do I/O, or install an entry for a MAC this node owns itself.
//!
//! Layout: this file holds the state, its admission and merge rules; `owner` one owner's table,
//! `resolve` the winners, installs and flood sets, `digest` anti-entropy (digests, buckets, what
//! differs from a peer, a table from a position on).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use crate::attest::Signer;
use crate::identity::NodeId;
use crate::messages::{FdbAdvert, FdbEntry};
use crate::{MacAddr, Output, Vni};

mod digest;
mod owner;
mod resolve;
pub use digest::{bucket_count, bucket_of, MAX_BUCKETS};
pub(crate) use owner::Fnv;
use owner::OwnerState;

/// The key of an entry: (VNI, MAC).
pub type Key = (Vni, MacAddr);

/// The key of a received entry; None if its VNI is out of range.
pub fn key_of(e: &FdbEntry) -> Option<Key> {
    Some((Vni::new(e.vni).ok()?, MacAddr(e.mac)))
}

/// A position in an owner table's (seq, key) order (see [`FdbSync::entries_from`]).
pub type SeqPos = (u64, Key);

/// Where [`FdbSync::entries_from`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pos {
    /// The first entry whose seq is at least this (`FromSeq(0)`: the whole table).
    FromSeq(u64),
    /// The first entry after this position (where the previous piece stopped).
    After(SeqPos),
}

/// Largest accepted jump of a seq (per owner table) or mobility (per MAC) over the highest value held.
pub const MAX_JUMP: u64 = 1 << 20;

/// Default cap on the MACs any one owner may hold present in this node's tables (the data plane's
/// default `--max-local-macs`): a flooding or compromised member cannot grow everyone's FDB.
pub const DEFAULT_MAX_PER_OWNER: usize = 4096;

/// What [`FdbSync::admit`] thinks of a received entry (before its signature is checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Newer than what is held: verify the signature, then apply.
    New,
    /// Not newer (duplicate, older, or a tie that loses): ignore.
    Stale,
    /// Owner or generation not held: park or ignore.
    UnknownOwner,
    /// seq or mobility jumps more than [`MAX_JUMP`]: refuse and count.
    TooFar,
    /// A MAC the owner does not hold present yet while it already holds the cap: refuse and count.
    OverCap,
    /// VNI out of range or too many IPs: refuse and count.
    Malformed,
}

/// The replicated FDB state of one node.
#[derive(Debug)]
pub struct FdbSync {
    me: NodeId,
    owners: BTreeMap<NodeId, OwnerState>,
    /// Remote entries currently pushed to the data plane (what the last FdbInstall said).
    installed: BTreeMap<Key, (IpAddr, Vec<IpAddr>)>,
    /// Flood sets last reported per VNI (empty sets are dropped after being reported).
    flood: BTreeMap<Vni, BTreeSet<IpAddr>>,
    max_per_owner: usize,
}

/// An honest owner never reuses a seq; should two entries still share one, the withdrawal (then the
/// higher mobility) wins so the outcome does not depend on arrival order.
fn rank(e: &FdbEntry) -> (u64, bool, u64) {
    (e.seq, !e.present, e.mobility)
}

impl FdbSync {
    pub fn new(me: NodeId, generation: u64, vtep: IpAddr) -> Self {
        let mut owners = BTreeMap::new();
        owners.insert(me, OwnerState::new(generation, vtep));
        FdbSync {
            me,
            owners,
            installed: BTreeMap::new(),
            flood: BTreeMap::new(),
            max_per_owner: DEFAULT_MAX_PER_OWNER,
        }
    }

    /// Cap on present MACs per remote owner (see [`DEFAULT_MAX_PER_OWNER`]).
    pub fn set_max_per_owner(&mut self, max: usize) {
        self.max_per_owner = max;
    }

    /// Highest mobility held for `key` across all owners (tombstones included).
    fn max_mobility(&self, key: Key) -> u64 {
        self.owners
            .values()
            .filter_map(|o| o.entries.get(&key).map(|e| e.mobility))
            .max()
            .unwrap_or(0)
    }

    /// Record a change of this node's own entry set, signed with `signer`; returns the advert to
    /// disseminate. `ips` are bound to the MAC (ignored for a withdrawal).
    pub fn local_change(
        &mut self,
        key: Key,
        ips: Vec<IpAddr>,
        present: bool,
        signer: &Signer,
    ) -> Option<FdbAdvert> {
        let mobility = self.max_mobility(key).saturating_add(1);
        let me = self.me;
        let own = self.owners.get_mut(&me)?;
        let seq = own.max_seq.saturating_add(1);
        own.max_seq = seq;
        let generation = own.generation;
        let ips = if present { ips } else { Vec::new() };
        let entry = FdbEntry::sign(
            signer,
            me,
            generation,
            (key.0.get(), key.1 .0),
            ips,
            seq,
            mobility,
            present,
        );
        own.put(key, entry.clone());
        Some(FdbAdvert {
            owner: me,
            generation,
            entry,
        })
    }

    /// Entries this node currently advertises as present, with their IPs.
    pub fn local_entries(&self) -> impl Iterator<Item = (Key, &[IpAddr])> + '_ {
        self.owners.get(&self.me).into_iter().flat_map(|o| {
            o.entries
                .iter()
                .filter(|(_, v)| v.present)
                .map(|(k, v)| (*k, v.ips.as_slice()))
        })
    }

    /// Make the held owners match the membership layer's active set (`owner → (generation, vtep)`),
    /// dropping departed or superseded owners (withdrawing their MACs) and opening empty tables for new ones.
    pub fn set_eligible(&mut self, eligible: &BTreeMap<NodeId, (u64, IpAddr)>, out: &mut VecDeque<Output>) {
        let mut touched: Vec<Key> = Vec::new();
        let me = self.me;
        // Whether an owner left or moved its VTEP: only then can a flood set change here (a new
        // owner holds no entry yet). Recomputing them over every owner on each membership change
        // was O(members) per change for nothing while a cluster forms.
        let mut flood_may_change = false;
        self.owners.retain(|id, st| {
            if *id == me {
                return true;
            }
            let keep = matches!(eligible.get(id), Some(&(g, _)) if g == st.generation);
            if !keep {
                touched.extend(st.entries.keys().copied());
                flood_may_change = true;
            }
            keep
        });
        for (id, &(generation, vtep)) in eligible {
            if *id == me {
                continue;
            }
            match self.owners.get_mut(id) {
                Some(st) => {
                    if st.vtep != vtep {
                        st.vtep = vtep;
                        touched.extend(st.entries.keys().copied());
                        flood_may_change = true;
                    }
                }
                None => {
                    self.owners.insert(*id, OwnerState::new(generation, vtep));
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            self.resolve(key, out);
        }
        if flood_may_change {
            self.update_flood(out);
        }
    }

    /// The generation held for `owner`, if it is a known active member (or this node).
    pub fn held_generation(&self, owner: NodeId) -> Option<u64> {
        self.owners.get(&owner).map(|o| o.generation)
    }

    /// Would `entry` of `owner`'s table at `generation` change state, and is it within bounds?
    /// Entries about this node itself are never taken from others.
    pub fn admit(&self, owner: NodeId, generation: u64, entry: &FdbEntry) -> Admit {
        if owner == self.me {
            return Admit::Stale;
        }
        let Some(key) = key_of(entry).filter(|_| entry.well_formed()) else {
            return Admit::Malformed;
        };
        let Some(st) = self.owners.get(&owner).filter(|o| o.generation == generation) else {
            return Admit::UnknownOwner;
        };
        let old = st.entries.get(&key);
        if old.is_some_and(|old| rank(old) >= rank(entry)) {
            return Admit::Stale;
        }
        if entry.present && !old.is_some_and(|o| o.present) && st.present >= self.max_per_owner {
            return Admit::OverCap;
        }
        // A mobility within MAX_JUMP of 0 is within MAX_JUMP of any held one: skip the scan of
        // every owner's table (the common case, and O(members) per received entry otherwise).
        if entry.seq > st.max_seq.saturating_add(MAX_JUMP)
            || (entry.mobility > MAX_JUMP && entry.mobility > self.max_mobility(key).saturating_add(MAX_JUMP))
        {
            return Admit::TooFar;
        }
        Admit::New
    }

    /// Apply an entry that [`Self::admit`] called [`Admit::New`] and whose signature the caller checked.
    /// Returns false (no state change) if it is not admissible after all.
    pub fn apply_entry(
        &mut self,
        owner: NodeId,
        generation: u64,
        entry: FdbEntry,
        out: &mut VecDeque<Output>,
    ) -> bool {
        if self.admit(owner, generation, &entry) != Admit::New {
            return false;
        }
        let Some(key) = key_of(&entry) else {
            return false;
        };
        let Some(st) = self.owners.get_mut(&owner) else {
            return false;
        };
        st.max_seq = st.max_seq.max(entry.seq);
        let vtep = st.vtep;
        let vni_now = st.put(key, entry).then(|| st.per_vni.contains_key(&key.0));
        self.resolve(key, out);
        // The flood sets depend only on which VNIs each owner has present entries on (and VTEPs):
        // recomputing them over every owner per entry made a 1000-node simulation O(N²) per node.
        match vni_now {
            // The owner's first present entry on the VNI: its VTEP joins that flood set.
            Some(true) => {
                let set = self.flood.entry(key.0).or_default();
                if set.insert(vtep) {
                    out.push_back(Output::FloodSet {
                        vni: key.0,
                        vteps: set.iter().copied().collect(),
                    });
                }
            }
            // Its last one went: another owner may share the VTEP, so recompute (rare).
            Some(false) => self.update_flood(out),
            None => {}
        }
        true
    }
}

#[cfg(test)]
mod tests;
