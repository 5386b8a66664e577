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

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::ops::Bound;

use crate::attest::Signer;
use crate::identity::NodeId;
use crate::messages::{FdbAdvert, FdbEntry, OwnerDigest, OwnerDump};
use crate::{MacAddr, Output, Vni};

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

#[derive(Debug, Clone)]
struct OwnerState {
    generation: u64,
    vtep: IpAddr,
    /// Highest seq held in this table.
    max_seq: u64,
    /// Entries with `present` (the rest are tombstones).
    present: usize,
    entries: BTreeMap<Key, FdbEntry>,
    /// The same entries ordered by (seq, key): what anti-entropy and adverts ship, in the order the
    /// owner made them, so a table sent in pieces can resume where it stopped.
    by_seq: BTreeSet<(u64, Key)>,
    /// Present entries per VNI (flood-set membership).
    per_vni: BTreeMap<Vni, usize>,
    /// [`OwnerState::hash`] of the current entries (None after a change): digests are asked for on
    /// every anti-entropy round and a table holds thousands of entries.
    hash: Cell<Option<u64>>,
}

impl OwnerState {
    fn new(generation: u64, vtep: IpAddr) -> Self {
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
    fn put(&mut self, key: Key, entry: FdbEntry) -> bool {
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

    fn hash(&self, owner: NodeId) -> u64 {
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

/// Most anti-entropy buckets (see [`FdbSync::bucket_hashes`]); more in a message is malformed.
pub const MAX_BUCKETS: usize = 1024;

/// How many buckets a node holding `owners` tables uses: about 8 owners per bucket, a power of two.
pub fn bucket_count(owners: usize) -> usize {
    (owners / 8).next_power_of_two().clamp(1, 256)
}

/// The digest of one held owner table (what anti-entropy compares).
fn owner_digest(owner: NodeId, st: &OwnerState) -> OwnerDigest {
    OwnerDigest {
        owner,
        generation: st.generation,
        hash: st.hash(owner),
        max_seq: st.max_seq,
    }
}

/// The bucket (of `k`) of `owner`: a mix of its id, so consecutive ids spread.
pub fn bucket_of(owner: NodeId, k: usize) -> usize {
    let mut x = owner.0 ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % k.max(1) as u64) as usize
}

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

    /// Digest of every held owner (self included).
    pub fn digest(&self) -> Vec<OwnerDigest> {
        self.owners.iter().map(|(id, st)| owner_digest(*id, st)).collect()
    }

    /// Anti-entropy buckets: owners are spread over `k` buckets by id, so two nodes whose root
    /// ([`Self::fdb_digest`]) differs compare `k` bucket hashes and then the owner digests of the
    /// differing buckets only, instead of every owner's digest each round.
    pub fn bucket_hashes(&self, k: usize) -> Vec<u64> {
        let mut v = vec![Fnv::new(); k.max(1)];
        for d in self.digest() {
            let h = &mut v[bucket_of(d.owner, k)];
            h.write(&d.owner.0.to_le_bytes());
            h.write(&d.generation.to_le_bytes());
            h.write(&d.hash.to_le_bytes());
        }
        v.into_iter().map(|h| h.0).collect()
    }

    /// The owner digests of the held owners that fall in `buckets` (of `k`).
    pub fn digest_in(&self, k: usize, buckets: &BTreeSet<usize>) -> Vec<OwnerDigest> {
        // Filter before hashing: an owner table outside the buckets is not hashed at all.
        self.owners
            .iter()
            .filter(|(id, _)| buckets.contains(&bucket_of(**id, k)))
            .map(|(id, st)| owner_digest(*id, st))
            .collect()
    }

    /// [`Self::differing`] restricted to the held owners in `buckets` (of `k`): `theirs` lists
    /// the peer's owners of those buckets only.
    pub fn differing_in(
        &self,
        theirs: &[OwnerDigest],
        k: usize,
        buckets: &BTreeSet<usize>,
    ) -> Vec<(NodeId, u64, u64)> {
        self.differing_where(theirs, |owner| buckets.contains(&bucket_of(owner, k)))
    }

    /// Number of held owner tables (this node's own included).
    pub fn owner_count(&self) -> usize {
        self.owners.len()
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
                entries: st.entries.values().cloned().collect(),
            })
            .collect()
    }

    /// The held owners that a peer whose digest is `theirs` lacks or holds differently, as
    /// (owner, generation, first seq to ship): what anti-entropy ships to it (see
    /// [`Self::entries_from`]). Tables mostly arrive in seq order, so: a peer that holds the table up
    /// to a lower seq gets the entries after it; one that holds a higher seq is ahead of us (it
    /// ships to us instead); one that holds the same seq but another hash missed something in
    /// between and gets the whole table.
    pub fn differing(&self, theirs: &[OwnerDigest]) -> Vec<(NodeId, u64, u64)> {
        self.differing_where(theirs, |_| true)
    }

    /// [`Self::differing`] over the held owners that `keep` selects (filtered before any hashing).
    fn differing_where(
        &self,
        theirs: &[OwnerDigest],
        keep: impl Fn(NodeId) -> bool,
    ) -> Vec<(NodeId, u64, u64)> {
        let theirs: BTreeMap<NodeId, &OwnerDigest> = theirs.iter().map(|d| (d.owner, d)).collect();
        self.owners
            .iter()
            .filter(|(id, _)| keep(**id))
            .filter_map(|(id, st)| match theirs.get(id) {
                Some(d) if d.generation != st.generation => Some((*id, st.generation, 0)),
                Some(d) if d.max_seq > st.max_seq || d.hash == st.hash(*id) => None,
                Some(d) if d.max_seq < st.max_seq => Some((*id, st.generation, d.max_seq.saturating_add(1))),
                _ => Some((*id, st.generation, 0)),
            })
            .collect()
    }

    /// `owner`'s entries (at `generation`) in (seq, key) order, from `pos` on. Empty if the owner or
    /// that generation is not held. A table shipped in pieces resumes here; entries changed meanwhile
    /// move to the end (their seq grew), so a pass that runs to the end ships every current entry.
    pub fn entries_from(
        &self,
        owner: NodeId,
        generation: u64,
        pos: Pos,
    ) -> impl Iterator<Item = (SeqPos, &FdbEntry)> + '_ {
        let st = self.owners.get(&owner).filter(|o| o.generation == generation);
        st.into_iter().flat_map(move |st| {
            let lower = match pos {
                Pos::After(p) => Bound::Excluded(p),
                Pos::FromSeq(seq) => match Vni::new(0) {
                    Ok(v) => Bound::Included((seq, (v, MacAddr([0; 6])))),
                    Err(_) => Bound::Unbounded,
                },
            };
            st.by_seq
                .range((lower, Bound::Unbounded))
                .filter_map(move |&(seq, key)| st.entries.get(&key).map(|e| ((seq, key), e)))
        })
    }

    /// Highest seq of this node's own table (the last local change).
    pub fn own_max_seq(&self) -> u64 {
        self.owners.get(&self.me).map(|o| o.max_seq).unwrap_or(0)
    }

    /// The winning owner of `key` across all held owners, with its VTEP and the IPs it binds.
    fn winner(&self, key: Key) -> Option<(NodeId, IpAddr, &[IpAddr])> {
        self.owners
            .iter()
            .filter_map(|(id, st)| {
                st.entries
                    .get(&key)
                    .filter(|v| v.present)
                    .map(|v| ((v.mobility, st.generation, *id), st.vtep, v.ips.as_slice()))
            })
            .max_by_key(|(k, _, _)| *k)
            .map(|((_, _, id), vtep, ips)| (id, vtep, ips))
    }

    fn resolve(&mut self, key: Key, out: &mut VecDeque<Output>) {
        let want = match self.winner(key) {
            Some((id, vtep, ips)) if id != self.me => Some((vtep, ips.to_vec())),
            _ => None,
        };
        let have = self.installed.get(&key);
        if want.as_ref() == have {
            return;
        }
        let (vni, mac) = key;
        match want {
            Some((vtep, ips)) => {
                self.installed.insert(key, (vtep, ips.clone()));
                out.push_back(Output::FdbInstall { vni, mac, vtep, ips });
            }
            None => {
                self.installed.remove(&key);
                out.push_back(Output::FdbRemove { vni, mac });
            }
        }
    }

    /// Recompute the per-VNI flood sets (VTEPs of other held owners with ≥ 1 present entry on the
    /// VNI) and report the ones that changed.
    fn update_flood(&mut self, out: &mut VecDeque<Output>) {
        let mut now: BTreeMap<Vni, BTreeSet<IpAddr>> = BTreeMap::new();
        for (id, st) in &self.owners {
            if *id == self.me {
                continue;
            }
            for v in st.per_vni.keys() {
                now.entry(*v).or_default().insert(st.vtep);
            }
        }
        if now == self.flood {
            return;
        }
        for (v, old) in &self.flood {
            if !now.contains_key(v) && !old.is_empty() {
                out.push_back(Output::FloodSet {
                    vni: *v,
                    vteps: Vec::new(),
                });
            }
        }
        for (v, set) in &now {
            if self.flood.get(v) != Some(set) {
                out.push_back(Output::FloodSet {
                    vni: *v,
                    vteps: set.iter().copied().collect(),
                });
            }
        }
        self.flood = now;
    }

    /// The flood set of `vni` as last reported.
    pub fn flood_set(&self, vni: Vni) -> Vec<IpAddr> {
        self.flood
            .get(&vni)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Re-resolve one key (after a local change, the winner may switch between us and a remote).
    pub fn refresh(&mut self, key: Key, out: &mut VecDeque<Output>) {
        self.resolve(key, out);
    }

    /// Every key with a live claim → its winning owner (self included). Identical on all converged nodes.
    pub fn resolved(&self) -> BTreeMap<Key, NodeId> {
        let mut macs: Vec<Key> = self
            .owners
            .values()
            .flat_map(|o| o.entries.keys().copied())
            .collect();
        macs.sort_unstable();
        macs.dedup();
        macs.into_iter()
            .filter_map(|m| self.winner(m).map(|(id, _, _)| (m, id)))
            .collect()
    }

    /// Remote entries this node has installed in the data plane: (VNI, MAC) → (VTEP, IPs).
    pub fn installed(&self) -> &BTreeMap<Key, (IpAddr, Vec<IpAddr>)> {
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
mod tests;
