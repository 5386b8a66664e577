//! The FDB tables of [`ControlNode`]: local MAC changes and their batched adverts, the anti-entropy
//! exchange (summaries, bucket digests, digests, and what travels beside the tables), admitting
//! adverts and relayed owner tables, and the FDB queries. Must never: apply an entry whose
//! signature does not verify against its owner's key.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::ControlNode;
use crate::messages::{self, FdbAdvert, FdbEntry, OwnerDump, SyncMessage};
use crate::sync::{self, Admit, Key};
use crate::{ControlError, MacAddr, NodeId, Output, Timer, TimerKind, Vni};

/// Bound on adverts parked because their owner is not (yet) a known member; anti-entropy repairs the rest.
const MAX_PENDING: usize = 4096;

impl ControlNode {
    /// The (VNI, MAC, IPs) currently behind this node's bridges (the full set, not a delta). Differences
    /// from the previous call (a new or gone MAC, or a changed IP list) become adverts with increasing
    /// sequence numbers. IPs are sorted and deduplicated; more than
    /// [`crate::messages::MAX_IPS_PER_ENTRY`] for one MAC is an error (nothing is changed). A MAC listed
    /// twice for one VNI has its IP lists merged.
    pub fn set_local(
        &mut self,
        now: Instant,
        entries: &[(Vni, MacAddr, Vec<IpAddr>)],
    ) -> Result<(), ControlError> {
        self.check_not_left()?;
        let mut want: BTreeMap<Key, Vec<IpAddr>> = BTreeMap::new();
        for (vni, mac, ips) in entries {
            if !mac.is_learnable() || vni.get() == 0 {
                continue;
            }
            let e = want.entry((*vni, *mac)).or_default();
            e.extend(ips.iter().copied());
            e.sort_unstable();
            e.dedup();
            if e.len() > messages::MAX_IPS_PER_ENTRY {
                return Err(ControlError::TooManyIps {
                    vni: *vni,
                    mac: *mac,
                    got: e.len(),
                    max: messages::MAX_IPS_PER_ENTRY,
                });
            }
        }
        let have: BTreeMap<Key, Vec<IpAddr>> = self
            .sync
            .local_entries()
            .map(|(k, ips)| (k, ips.to_vec()))
            .collect();
        // Members refuse more than `max_entries_per_owner` of ours; advertising them anyway would
        // keep our table's digest different from theirs forever (anti-entropy resending it). Those
        // already advertised keep their place.
        let cap = self.config.max_entries_per_owner;
        self.stats.local_over_cap = want.len().saturating_sub(cap) as u64;
        if want.len() > cap {
            let mut keep: BTreeSet<Key> = want
                .keys()
                .filter(|k| have.contains_key(*k))
                .take(cap)
                .copied()
                .collect();
            for k in want.keys() {
                if keep.len() >= cap {
                    break;
                }
                keep.insert(*k);
            }
            want.retain(|k, _| keep.contains(k));
        }
        // Withdrawals first: members apply our entries in seq order, and an addition ordered before
        // the withdrawal that makes room for it would meet their per-owner cap and be refused.
        let mut changes: Vec<(Key, Vec<IpAddr>, bool)> = have
            .keys()
            .filter(|k| !want.contains_key(*k))
            .map(|k| (*k, Vec::new(), false))
            .collect();
        changes.extend(
            want.iter()
                .filter(|(k, ips)| have.get(*k) != Some(*ips))
                .map(|(k, ips)| (*k, ips.clone(), true)),
        );
        if changes.is_empty() {
            return Ok(());
        }
        for (key, ips, present) in changes {
            // Each entry is signed on its own (not the batch): members relay single entries of our
            // table in anti-entropy pieces, and each must stay verifiable against our key there.
            if self
                .sync
                .local_change(key, ips, present, &self.trust.signer)
                .is_some()
            {
                self.sync.refresh(key, &mut self.out);
            }
        }
        // Adverts are batched: the changes of the next `advert_batch_window` leave together, as
        // pieces of our table (`States` messages) pushed straight to every member within the
        // gossip budget, not piggybacked one by one on membership packets. Anti-entropy repairs
        // what a member missed.
        // Leading edge: a change after a quiet window leaves at once (the daemon already waited a
        // short settle for its burst); changes within a window after a batch wait for its end.
        let window = self.config.advert_batch_window;
        let due = self.last_flush.map_or(now, |t| t + window);
        if window.is_zero() || (self.flush_at.is_none() && due <= now) {
            self.flush_adverts(now);
            self.last_flush = Some(now);
        } else if self.flush_at.is_none() {
            self.flush_at = Some(due);
            self.out.push_back(Output::ScheduleTimer {
                at: due,
                timer: Timer(TimerKind::FlushAdverts),
            });
        }
        self.release(now);
        Ok(())
    }

    /// End of the batch window: our changes since the last flush are released to every member.
    pub(super) fn flush_adverts(&mut self, now: Instant) {
        self.flush_at = None;
        let from = self.outbox.own_released.saturating_add(1);
        let upto = self.sync.own_max_seq();
        let me = self.identity.id;
        let Some(generation) = self.sync.held_generation(me) else {
            return;
        };
        if upto < from {
            return;
        }
        self.outbox.own_released = upto;
        self.stats.advert_batches += 1;
        // Our first batch (the MACs we start with) does not go to members introduced to us by a member
        // that relays between us, until we hear from them (`node/relay.rs`): that member forwards it.
        // Later batches go straight to every member, within our budget.
        let first = from == 1;
        let peers: Vec<SocketAddr> = self
            .foca
            .iter_members()
            .map(|m| m.id().addr)
            .filter(|a| !(first && self.relayed_to(now, a)))
            .collect();
        for to in peers {
            self.outbox.want_table(to, me, generation, from);
        }
    }

    /// Digest over all owner tables held; equal on nodes with identical FDB state.
    pub fn fdb_digest(&self) -> u64 {
        self.sync.fdb_digest()
    }

    /// (VNI, MAC) → winning owner, for every key with a live claim (own MACs included).
    pub fn resolved_fdb(&self) -> BTreeMap<Key, NodeId> {
        self.sync.resolved()
    }

    /// Remote entries this node has told the data plane to install: (VNI, MAC) → (VTEP, IPs).
    pub fn installed_fdb(&self) -> &BTreeMap<Key, (IpAddr, Vec<IpAddr>)> {
        self.sync.installed()
    }

    /// The current control entries of one VNI, (MAC, VTEP, IPs) (what the FdbInstall outputs said):
    /// for a network that appears locally after its entries arrived.
    pub fn installed(&self, vni: Vni) -> Vec<(MacAddr, IpAddr, Vec<IpAddr>)> {
        self.sync
            .installed()
            .range((vni, MacAddr([0; 6]))..=(vni, MacAddr([0xff; 6])))
            .map(|((_, mac), (vtep, ips))| (*mac, *vtep, ips.clone()))
            .collect()
    }

    /// The flood set of `vni` as last reported by [`Output::FloodSet`].
    pub fn flood_set(&self, vni: Vni) -> Vec<IpAddr> {
        self.sync.flood_set(vni)
    }

    pub(super) fn digest_message(&self, reply: bool) -> SyncMessage {
        SyncMessage::Digest {
            reply,
            owners: self.sync.digest(),
            revoked: self.revocations.digest(),
            catalog: self.catalog.digest(),
            grants: self.grants.digest(),
        }
    }

    /// An anti-entropy summary; `with_buckets`: also the bucket hashes (an answer to a differing root).
    pub(super) fn summary_message(&self, reply: bool, with_buckets: bool) -> SyncMessage {
        SyncMessage::Summary {
            reply,
            root: self.sync.fdb_digest(),
            buckets: if with_buckets {
                self.sync
                    .bucket_hashes(sync::bucket_count(self.sync.owner_count()))
            } else {
                Vec::new()
            },
            revoked: self.revocations.digest(),
            catalog: self.catalog.digest(),
            grants: self.grants.digest(),
        }
    }

    pub(super) fn send_bucket_digest(
        &mut self,
        to: SocketAddr,
        reply: bool,
        k: usize,
        which: BTreeSet<usize>,
    ) -> Result<(), ControlError> {
        let owners = self.sync.digest_in(k, &which);
        let msg = SyncMessage::BucketDigest {
            reply,
            k: k as u32,
            which: which.into_iter().map(|b| b as u32).collect(),
            owners,
        };
        self.send_sync(to, &msg)
    }

    /// Anti-entropy of what travels beside the FDB tables, from a peer's digests of it (`Digest` and `Summary`
    /// alike): our revocations if theirs differ, the catalog and grants they lack, and IPAM counts as synced
    /// once the grants agree.
    pub(super) fn sync_beside_fdb(
        &mut self,
        from: SocketAddr,
        revoked: u64,
        catalog: u64,
        grants: u64,
    ) -> Result<(), ControlError> {
        if revoked != self.revocations.digest() && !self.revocations.is_empty() {
            let list = self.revocations.iter().cloned().collect();
            self.send_sync(from, &SyncMessage::Revocations { list })?;
        }
        self.ship_catalog(from, catalog, grants)?;
        if grants == self.grants.digest() {
            self.ipam_synced = true;
        }
        Ok(())
    }

    /// A [`SyncMessage::Summary`] from `from` (see there for the exchange). `others`: its
    /// revocation, catalog and grant digests.
    pub(super) fn handle_summary(
        &mut self,
        from: SocketAddr,
        reply: bool,
        root: u64,
        buckets: &[u64],
        others: (u64, u64, u64),
    ) -> Result<(), ControlError> {
        let (revoked, catalog, grants) = others;
        if buckets.len() > sync::MAX_BUCKETS {
            self.stats.malformed += 1;
            return Ok(());
        }
        self.sync_beside_fdb(from, revoked, catalog, grants)?;
        if !reply {
            let roots_differ = root != self.sync.fdb_digest();
            let others_differ = (revoked, catalog, grants)
                != (
                    self.revocations.digest(),
                    self.catalog.digest(),
                    self.grants.digest(),
                );
            if roots_differ || others_differ {
                let answer = self.summary_message(true, roots_differ);
                self.send_sync(from, &answer)?;
            }
        } else if !buckets.is_empty() {
            let k = buckets.len();
            let which: BTreeSet<usize> = self
                .sync
                .bucket_hashes(k)
                .into_iter()
                .zip(buckets)
                .enumerate()
                .filter(|(_, (mine, theirs))| mine != *theirs)
                .map(|(b, _)| b)
                .collect();
            if !which.is_empty() {
                self.send_bucket_digest(from, false, k, which)?;
            }
        }
        Ok(())
    }

    /// `verified`: the broadcast handler already checked the signature against the held owner.
    pub(super) fn apply_advert(&mut self, a: FdbAdvert, verified: bool) {
        if a.owner == self.identity.id {
            return;
        }
        match self.sync.admit(a.owner, a.generation, &a.entry) {
            Admit::New => {
                if !verified {
                    let ok = self
                        .owner_identity(a.owner, a.generation)
                        .is_some_and(|o| a.entry.verify(&o, a.generation));
                    if !ok {
                        self.stats.bad_signatures += 1;
                        return;
                    }
                }
                self.sync
                    .apply_entry(a.owner, a.generation, a.entry, &mut self.out);
            }
            Admit::TooFar => self.stats.seq_refused += 1,
            Admit::OverCap => self.stats.over_cap += 1,
            Admit::Malformed => self.stats.malformed += 1,
            Admit::Stale => {}
            Admit::UnknownOwner => match self.sync.held_generation(a.owner) {
                // About an older generation of a node we already know: ignored for good.
                Some(g) if g > a.generation => {}
                _ if self.pending.len() < MAX_PENDING => self.pending.push(a),
                _ => {}
            },
        }
    }

    /// Merge a relayed owner table: entries in seq order, each admitted, verified, applied. A bad
    /// signature ends the dump (whoever relayed it is lying or corrupt). Returns the entries applied
    /// (verified and new here), which a join's answerer relays (`node/relay.rs`).
    pub(super) fn merge_dump(&mut self, mut dump: OwnerDump) -> Vec<FdbEntry> {
        let mut applied = Vec::new();
        if dump.owner == self.identity.id {
            return applied;
        }
        match self.sync.held_generation(dump.owner) {
            Some(g) if g == dump.generation => {}
            // About an older generation of a node we know: ignored for good.
            Some(g) if g > dump.generation => return applied,
            // Its owner is not a member here yet (its Hello may still be on its way): keep it.
            _ => {
                self.park_dump(dump);
                return applied;
            }
        }
        let Some(owner) = self.owner_identity(dump.owner, dump.generation) else {
            return applied;
        };
        dump.entries.sort_by_key(|e| e.seq);
        for e in dump.entries {
            match self.sync.admit(dump.owner, dump.generation, &e) {
                Admit::New if e.verify(&owner, dump.generation) => {
                    applied.push(e.clone());
                    self.sync
                        .apply_entry(dump.owner, dump.generation, e, &mut self.out);
                }
                Admit::New => {
                    self.stats.bad_signatures += 1;
                    return applied;
                }
                Admit::TooFar => self.stats.seq_refused += 1,
                Admit::OverCap => self.stats.over_cap += 1,
                Admit::Malformed => self.stats.malformed += 1,
                Admit::Stale | Admit::UnknownOwner => {}
            }
        }
        applied
    }
}
