//! FDB distribution state: per owner (node id, generation) a table MAC → (seq, present), the resolution
//! of each MAC to one owner across the cluster, and anti-entropy digests.
//!
//! Ordering rules (why): an owner's newer generation replaces all its older state (a restart forgets its
//! MACs). Within an owner, the higher seq wins per MAC. Across owners a MAC goes to the claim with the
//! highest (seq, generation, node id): seqs are Lamport clocks (a node bumps its counter past every seq it
//! has seen before advertising), so a MAC that moved to node B after B heard A's claim is ordered after
//! it regardless of which daemon started last; generation and then node id break the remaining ties
//! deterministically so every node picks the same winner.
//!
//! Only owners the membership layer reports as active ("eligible") are held; an owner that dies, leaves
//! or is superseded by a newer generation is dropped whole, which withdraws its MACs.
//! Must never: do I/O, or install an entry for a MAC this node owns itself.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use crate::membership::NodeId;
use crate::messages::{FdbAdvert, OwnerDigest, OwnerDump};
use crate::{MacAddr, Output};

/// One owner's claim on one MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacVersion {
    pub seq: u64,
    pub present: bool,
}

#[derive(Debug, Clone)]
struct OwnerState {
    generation: u64,
    vtep: IpAddr,
    entries: BTreeMap<MacAddr, MacVersion>,
}

impl OwnerState {
    fn hash(&self, owner: NodeId) -> u64 {
        let mut h = Fnv::new();
        h.write(&owner.0.to_le_bytes());
        h.write(&self.generation.to_le_bytes());
        for (mac, v) in &self.entries {
            h.write(&mac.0);
            h.write(&v.seq.to_le_bytes());
            h.write(&[v.present as u8]);
        }
        h.0
    }
}

/// FNV-1a 64: stable across builds and platforms (std's hasher is not guaranteed to be), cheap.
struct Fnv(u64);
impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The replicated FDB state of one node.
#[derive(Debug)]
pub struct FdbSync {
    me: NodeId,
    owners: BTreeMap<NodeId, OwnerState>,
    /// Remote entries currently pushed to the data plane (what the last FdbInstall said).
    installed: BTreeMap<MacAddr, IpAddr>,
    /// Lamport clock: highest seq seen anywhere.
    clock: u64,
}

impl FdbSync {
    pub fn new(me: NodeId, generation: u64, vtep: IpAddr) -> Self {
        let mut owners = BTreeMap::new();
        owners.insert(
            me,
            OwnerState {
                generation,
                vtep,
                entries: BTreeMap::new(),
            },
        );
        FdbSync {
            me,
            owners,
            installed: BTreeMap::new(),
            clock: 0,
        }
    }

    /// Record a change of this node's own MAC set; returns the advert to disseminate.
    pub fn local_change(&mut self, mac: MacAddr, present: bool) -> Option<FdbAdvert> {
        self.clock += 1;
        let seq = self.clock;
        let me = self.me;
        let own = self.owners.get_mut(&me)?;
        own.entries.insert(mac, MacVersion { seq, present });
        let generation = own.generation;
        Some(FdbAdvert {
            owner: me,
            generation,
            seq,
            mac: mac.0,
            present,
        })
    }

    /// MACs this node currently advertises as present.
    pub fn local_macs(&self) -> impl Iterator<Item = MacAddr> + '_ {
        self.owners
            .get(&self.me)
            .into_iter()
            .flat_map(|o| o.entries.iter().filter(|(_, v)| v.present).map(|(m, _)| *m))
    }

    /// Make the held owners match the membership layer's active set (`owner → (generation, vtep)`),
    /// dropping departed or superseded owners (withdrawing their MACs) and opening empty tables for new ones.
    pub fn set_eligible(&mut self, eligible: &BTreeMap<NodeId, (u64, IpAddr)>, out: &mut VecDeque<Output>) {
        let mut touched: Vec<MacAddr> = Vec::new();
        let me = self.me;
        self.owners.retain(|id, st| {
            if *id == me {
                return true;
            }
            let keep = matches!(eligible.get(id), Some(&(g, _)) if g == st.generation);
            if !keep {
                touched.extend(st.entries.keys().copied());
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
                    }
                }
                None => {
                    self.owners.insert(
                        *id,
                        OwnerState {
                            generation,
                            vtep,
                            entries: BTreeMap::new(),
                        },
                    );
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for mac in touched {
            self.resolve(mac, out);
        }
    }

    /// The generation held for `owner`, if it is a known active member (or this node).
    pub fn held_generation(&self, owner: NodeId) -> Option<u64> {
        self.owners.get(&owner).map(|o| o.generation)
    }

    /// Is (owner, generation) currently held, i.e. would data about it be accepted?
    pub fn accepts(&self, owner: NodeId, generation: u64) -> bool {
        self.owners
            .get(&owner)
            .is_some_and(|o| o.generation == generation)
    }

    /// Apply one advert. Returns false (no state change) if the owner/generation is not held or the
    /// advert is not newer than what is known. Adverts about this node itself are never taken from others.
    pub fn apply(&mut self, a: &FdbAdvert, out: &mut VecDeque<Output>) -> bool {
        if a.owner == self.me || !self.accepts(a.owner, a.generation) {
            return false;
        }
        let mac = MacAddr(a.mac);
        let changed = self.merge_entry(
            a.owner,
            mac,
            MacVersion {
                seq: a.seq,
                present: a.present,
            },
        );
        if changed {
            self.resolve(mac, out);
        }
        changed
    }

    fn merge_entry(&mut self, owner: NodeId, mac: MacAddr, v: MacVersion) -> bool {
        self.clock = self.clock.max(v.seq);
        let Some(st) = self.owners.get_mut(&owner) else {
            return false;
        };
        // An honest owner never reuses a seq; should two claims still share one, the withdrawal wins so
        // the outcome does not depend on arrival order.
        let rank = |x: &MacVersion| (x.seq, !x.present);
        match st.entries.get(&mac) {
            Some(old) if rank(old) >= rank(&v) => false,
            _ => {
                st.entries.insert(mac, v);
                true
            }
        }
    }

    /// Digest of every held owner (self included).
    pub fn digest(&self) -> Vec<OwnerDigest> {
        self.owners
            .iter()
            .map(|(id, st)| OwnerDigest {
                owner: *id,
                generation: st.generation,
                hash: st.hash(*id),
            })
            .collect()
    }

    /// Owner tables to ship to a peer whose digest is `theirs`: every held owner they lack or hold differently.
    /// Both sides do this, so differences are repaired in both directions (merge is idempotent).
    pub fn dumps_for(&self, theirs: &[OwnerDigest]) -> Vec<OwnerDump> {
        let theirs: BTreeMap<NodeId, &OwnerDigest> = theirs.iter().map(|d| (d.owner, d)).collect();
        self.owners
            .iter()
            .filter(|(id, st)| match theirs.get(id) {
                Some(d) => d.generation != st.generation || d.hash != st.hash(**id),
                None => true,
            })
            .map(|(id, st)| OwnerDump {
                owner: *id,
                generation: st.generation,
                entries: st.entries.iter().map(|(m, v)| (m.0, v.seq, v.present)).collect(),
            })
            .collect()
    }

    /// Merge a received owner table (only if that owner/generation is held here).
    pub fn merge_dump(&mut self, dump: &OwnerDump, out: &mut VecDeque<Output>) {
        if dump.owner == self.me || !self.accepts(dump.owner, dump.generation) {
            return;
        }
        for &(mac, seq, present) in &dump.entries {
            let mac = MacAddr(mac);
            if self.merge_entry(dump.owner, mac, MacVersion { seq, present }) {
                self.resolve(mac, out);
            }
        }
    }

    /// The winning owner of `mac` across all held owners.
    fn winner(&self, mac: MacAddr) -> Option<(NodeId, IpAddr)> {
        self.owners
            .iter()
            .filter_map(|(id, st)| {
                st.entries
                    .get(&mac)
                    .filter(|v| v.present)
                    .map(|v| ((v.seq, st.generation, *id), st.vtep))
            })
            .max_by_key(|(k, _)| *k)
            .map(|((_, _, id), vtep)| (id, vtep))
    }

    fn resolve(&mut self, mac: MacAddr, out: &mut VecDeque<Output>) {
        let want = match self.winner(mac) {
            Some((id, vtep)) if id != self.me => Some(vtep),
            _ => None,
        };
        let have = self.installed.get(&mac).copied();
        if want == have {
            return;
        }
        match want {
            Some(vtep) => {
                self.installed.insert(mac, vtep);
                out.push_back(Output::FdbInstall { mac, vtep });
            }
            None => {
                self.installed.remove(&mac);
                out.push_back(Output::FdbRemove { mac });
            }
        }
    }

    /// Re-resolve one MAC (after a local change, the winner may switch between us and a remote).
    pub fn refresh(&mut self, mac: MacAddr, out: &mut VecDeque<Output>) {
        self.resolve(mac, out);
    }

    /// Every MAC with a live claim → its winning owner (self included). Identical on all converged nodes.
    pub fn resolved(&self) -> BTreeMap<MacAddr, NodeId> {
        let mut macs: Vec<MacAddr> = self
            .owners
            .values()
            .flat_map(|o| o.entries.keys().copied())
            .collect();
        macs.sort_unstable();
        macs.dedup();
        macs.into_iter()
            .filter_map(|m| self.winner(m).map(|(id, _)| (m, id)))
            .collect()
    }

    /// Remote entries this node has installed in the data plane.
    pub fn installed(&self) -> &BTreeMap<MacAddr, IpAddr> {
        &self.installed
    }

    /// One number summarising all held owner tables; equal on nodes that hold identical state.
    pub fn fdb_digest(&self) -> u64 {
        let mut h = Fnv::new();
        for d in self.digest() {
            h.write(&d.owner.0.to_le_bytes());
            h.write(&d.generation.to_le_bytes());
            h.write(&d.hash.to_le_bytes());
        }
        h.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }
    const M: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    fn elig(list: &[(u64, u64, u8)]) -> BTreeMap<NodeId, (u64, IpAddr)> {
        list.iter().map(|&(id, g, v)| (NodeId(id), (g, ip(v)))).collect()
    }

    #[test]
    fn install_move_withdraw() {
        let mut out = VecDeque::new();
        let mut s = FdbSync::new(NodeId(1), 1, ip(1));
        s.set_eligible(&elig(&[(2, 5, 2), (3, 5, 3)]), &mut out);
        assert!(s.apply(
            &FdbAdvert {
                owner: NodeId(2),
                generation: 5,
                seq: 4,
                mac: M.0,
                present: true
            },
            &mut out
        ));
        assert_eq!(out.pop_front(), Some(Output::FdbInstall { mac: M, vtep: ip(2) }));
        // Move: node 3 claims with a later Lamport seq.
        assert!(s.apply(
            &FdbAdvert {
                owner: NodeId(3),
                generation: 5,
                seq: 5,
                mac: M.0,
                present: true
            },
            &mut out
        ));
        assert_eq!(out.pop_front(), Some(Output::FdbInstall { mac: M, vtep: ip(3) }));
        // Stale re-delivery of node 2's claim changes nothing.
        assert!(!s.apply(
            &FdbAdvert {
                owner: NodeId(2),
                generation: 5,
                seq: 4,
                mac: M.0,
                present: true
            },
            &mut out
        ));
        assert!(out.is_empty());
        // Node 3 dies: falls back to node 2's still-live claim.
        s.set_eligible(&elig(&[(2, 5, 2)]), &mut out);
        assert_eq!(out.pop_front(), Some(Output::FdbInstall { mac: M, vtep: ip(2) }));
        // Node 2 restarts (new generation): old claims vanish.
        s.set_eligible(&elig(&[(2, 6, 2)]), &mut out);
        assert_eq!(out.pop_front(), Some(Output::FdbRemove { mac: M }));
        // And adverts of the old generation are ignored.
        assert!(!s.apply(
            &FdbAdvert {
                owner: NodeId(2),
                generation: 5,
                seq: 9,
                mac: M.0,
                present: true
            },
            &mut out
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn anti_entropy_converges() {
        let mut out = VecDeque::new();
        let mut a = FdbSync::new(NodeId(1), 1, ip(1));
        let mut b = FdbSync::new(NodeId(2), 1, ip(2));
        a.set_eligible(&elig(&[(2, 1, 2)]), &mut out);
        b.set_eligible(&elig(&[(1, 1, 1)]), &mut out);
        a.local_change(M, true);
        b.local_change(MacAddr([2, 0, 0, 0, 0, 2]), true);
        assert_ne!(a.fdb_digest(), b.fdb_digest());
        for d in a.dumps_for(&b.digest()) {
            b.merge_dump(&d, &mut out);
        }
        for d in b.dumps_for(&a.digest()) {
            a.merge_dump(&d, &mut out);
        }
        assert_eq!(a.fdb_digest(), b.fdb_digest());
        assert_eq!(a.resolved(), b.resolved());
        assert_eq!(a.installed().get(&MacAddr([2, 0, 0, 0, 0, 2])), Some(&ip(2)));
        assert_eq!(b.installed().get(&M), Some(&ip(1)));
    }

    #[test]
    fn own_mac_is_never_installed() {
        let mut out = VecDeque::new();
        let mut s = FdbSync::new(NodeId(1), 1, ip(1));
        s.set_eligible(&elig(&[(2, 1, 2)]), &mut out);
        s.apply(
            &FdbAdvert {
                owner: NodeId(2),
                generation: 1,
                seq: 1,
                mac: M.0,
                present: true,
            },
            &mut out,
        );
        assert_eq!(out.pop_front(), Some(Output::FdbInstall { mac: M, vtep: ip(2) }));
        // The MAC shows up locally later (Lamport seq 2 > 1): we win, remote entry removed.
        s.local_change(M, true);
        s.refresh(M, &mut out);
        assert_eq!(out.pop_front(), Some(Output::FdbRemove { mac: M }));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn advert() -> impl Strategy<Value = FdbAdvert> {
            (2u64..5, 1u64..3, 1u64..30, 0u8..4, any::<bool>()).prop_map(
                |(owner, generation, seq, m, present)| FdbAdvert {
                    owner: NodeId(owner),
                    generation,
                    seq,
                    mac: [2, 0, 0, 0, 0, m],
                    present,
                },
            )
        }

        proptest! {
            /// Order-independence (the CRDT property anti-entropy relies on): the same adverts applied in
            /// any order, directly or via dumps, give the same resolution, FDB and digest.
            #[test]
            fn any_order_same_state(adverts in proptest::collection::vec(advert(), 0..60), rot in 0usize..60) {
                let elig = elig(&[(2, 1, 2), (3, 1, 3), (4, 2, 4)]);
                let mut out = VecDeque::new();
                let mut a = FdbSync::new(NodeId(1), 1, ip(1));
                let mut b = FdbSync::new(NodeId(1), 1, ip(1));
                let mut c = FdbSync::new(NodeId(1), 1, ip(1));
                for s in [&mut a, &mut b, &mut c] {
                    s.set_eligible(&elig, &mut out);
                }
                for x in &adverts {
                    a.apply(x, &mut out);
                }
                let mut shuffled = adverts.clone();
                shuffled.reverse();
                if !shuffled.is_empty() {
                    let k = rot % shuffled.len();
                    shuffled.rotate_left(k);
                }
                for x in &shuffled {
                    b.apply(x, &mut out);
                }
                for d in a.dumps_for(&c.digest()) {
                    c.merge_dump(&d, &mut out);
                }
                prop_assert_eq!(a.resolved(), b.resolved());
                prop_assert_eq!(a.installed(), b.installed());
                prop_assert_eq!(a.fdb_digest(), b.fdb_digest());
                prop_assert_eq!(a.installed(), c.installed());
                prop_assert_eq!(a.fdb_digest(), c.fdb_digest());
            }
        }
    }
}
