//! Anti-entropy over the held owner tables: owner digests, the buckets owners are spread over, the
//! root hash a round starts with ([`FdbSync::fdb_digest`]), which tables differ from a peer's, and
//! an owner's entries from a position on (what a table shipped in pieces resumes from).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::owner::{Fnv, OwnerState};
use super::{FdbSync, Pos, SeqPos};
use crate::identity::NodeId;
use crate::messages::{FdbEntry, OwnerDigest, OwnerDump};
use crate::{MacAddr, Vni};

/// Most anti-entropy buckets (see [`FdbSync::bucket_hashes`]); more in a message is malformed.
pub const MAX_BUCKETS: usize = 1024;

/// How many buckets a node holding `owners` tables uses: about 8 owners per bucket, a power of two.
pub fn bucket_count(owners: usize) -> usize {
    (owners / 8).next_power_of_two().clamp(1, 256)
}

/// The digest of one held owner table (what anti-entropy compares).
pub(super) fn owner_digest(owner: NodeId, st: &OwnerState) -> OwnerDigest {
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

impl FdbSync {
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
