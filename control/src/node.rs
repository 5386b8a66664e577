//! [`ControlNode`]: the sans-IO control-plane state machine the daemon (or the simulator) drives.
//!
//! It composes foca (SWIM membership and failure detection) with [`FdbSync`] (per-owner MAC tables
//! and their resolution). Local MAC changes are batched (`advert_batch_window`) and pushed to every
//! member as pieces of this node's table; a periodic push-pull anti-entropy exchange repairs whatever
//! was lost (healed partitions, loss, late joiners). Each round starts with a root hash over all owner
//! tables (`SyncMessage::Summary`); bucket hashes, then the owner digests of differing buckets, follow
//! only where the roots differ, so an idle round costs the same at any cluster size. When two nodes
//! learn of each other, each pushes its own table and pulls the other's bucket. All of that FDB sync
//! traffic leaves within the per-node gossip budget (`node/outbox.rs`); membership traffic never waits for it.
//!
//! The network catalog and IPAM blocks (signed records and CA-signed grants, gossiped the same way and
//! part of the same anti-entropy exchange) are handled in `node/networks.rs`.
//!
//! Inputs carry `now`; outputs are queued and drained with [`ControlNode::poll_output`]. Must never: read
//! a clock, sleep, touch a socket, or panic on anything received.
//!
//! Submodules: `config`, `types`, `membership`, `tables`, `timers`, `revoke`, `direct`, `relay`, `networks`, `outbox`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use foca::{Foca, Member, OwnedNotification};

use crate::catalog::Catalog;
use crate::identity::{Verifier, VerifyingCodec};
use crate::ipam::Grants;
use crate::membership::{BroadcastShared, FdbBroadcasts, NodeId, NodeIdentity, XorShift};
use crate::messages::{self, Broadcast, FdbAdvert, LeaveNotice, OwnerDump, Packet, SyncMessage};
use crate::revocation::{Revocation, RevocationList};
use crate::sync::{self, FdbSync};
use crate::{ControlError, Output, PeerAddr, Timer, TimerKind};

mod config;
mod direct;
mod membership;
mod networks;
mod outbox;
mod relay;
mod revoke;
mod tables;
#[cfg(test)]
mod tests;
mod timers;
mod types;
pub use config::{ControlConfig, Trust, DEFAULT_GOSSIP_BUDGET};
pub use networks::{BlockOutcome, NetworkInfo};
use outbox::Outbox;
pub use types::{ControlStats, MemberInfo, MemberState, RevokeOutcome};
/// The relay and budget bounds, for the simulator tests that check them.
#[cfg(any(test, feature = "testing"))]
pub use {
    outbox::PIECE_BYTES,
    relay::{dump_size, RELAY_DUMP_BYTES},
};

type SwimCore = Foca<NodeIdentity, VerifyingCodec, XorShift, FdbBroadcasts>;

/// The control-plane state machine of one node.
pub struct ControlNode {
    identity: NodeIdentity,
    trust: Trust,
    verifier: Arc<Mutex<Verifier>>,
    revocations: RevocationList,
    config: ControlConfig,
    foca: SwimCore,
    shared: Arc<Mutex<BroadcastShared>>,
    sync: FdbSync,
    rng: XorShift,
    out: VecDeque<Output>,
    notes: Vec<OwnedNotification<NodeIdentity>>,
    /// Members that announced a graceful leave, by gossip address.
    left: HashMap<SocketAddr, NodeIdentity>,
    pending: Vec<FdbAdvert>,
    pending_revocations: Vec<Revocation>,
    /// Gossip addresses of revoked nodes: their sync messages are dropped (the transport refuses their
    /// connections anyway; this keeps the state machine closed on its own, e.g. in the simulator).
    revoked_addrs: HashSet<SocketAddr>,
    /// Addresses given to `join`, re-announced to while we know no member.
    seeds: Vec<SocketAddr>,
    /// Seeds foca has held as a member: from then on a seed's `Introduce` counts only while it is an
    /// active member (`node/relay.rs`), also once foca has forgotten it (`remove_down_after`).
    held_seeds: HashSet<SocketAddr>,
    has_left: bool,
    stats: ControlStats,
    /// When a message from each member's gossip address last passed its checks: a suspect that is
    /// still talking to us is not declared down (pruned to foca's member table on each change).
    last_heard: HashMap<SocketAddr, Instant>,
    /// Local health (0 = healthy) and when it next decays by one.
    health: u32,
    health_decay_at: Instant,
    /// Network definitions and tombstones.
    catalog: Catalog,
    /// IPAM grant records (all networks, all holders).
    grants: Grants,
    /// Blocks reported to the caller as ours (BlockGranted not yet followed by BlockReleased).
    my_blocks: BTreeSet<(String, crate::IpNet)>,
    /// Block requests not yet satisfied: network → number of blocks we want to hold.
    pending_blocks: BTreeMap<String, u32>,
    /// Admitters: since when each holder of a block has not been an active member.
    absent_since: HashMap<NodeId, Instant>,
    /// Admitters: since when each granted block has had no network (removed or redefined).
    orphan_since: BTreeMap<(String, crate::IpNet), Instant>,
    /// Admitters: the grant table has matched a peer's at least once since start (see `ipam_ready`).
    ipam_synced: bool,
    /// Budgeted sync traffic (see `node/outbox.rs`).
    outbox: Outbox,
    /// A pacing timer is pending for this instant.
    pace_at: Option<Instant>,
    /// The current advert batch is flushed at this instant.
    flush_at: Option<Instant>,
    /// When the last advert batch left: a change after a quiet `advert_batch_window` leaves at once.
    last_flush: Option<Instant>,
    /// Table pieces whose owner is not a member yet, and their entry count (`node/direct.rs`).
    parked: VecDeque<OwnerDump>,
    parked_entries: usize,
    /// While handling a message from this address: it knows us, so a MemberUp it causes needs no Hello.
    knows_us: Option<SocketAddr>,
    /// While handling this address's own SWIM Announce (its join): a MemberUp of it means we answer
    /// its join, and introduce it (`node/relay.rs`).
    announced_by: Option<SocketAddr>,
    /// Joins we answered whose first-hand table pieces we forward (`node/relay.rs`).
    relays: relay::Relays,
    /// foca's connection state and the re-announces while it is lost (`node/membership.rs`).
    reconnect: membership::Reconnect,
    /// Pairs introduced by a relaying member, whose direct exchange is put off (`node/relay.rs`).
    put_off: relay::PutOff,
    /// When a valid message from each address was first heard (pruned like `last_heard`): a probe of a
    /// member we had not heard from needed a new connection, so its failure is no sign of our health.
    first_heard: HashMap<SocketAddr, Instant>,
    /// Suspicions whose down timer was deferred (silence window) and whose probe had found the member
    /// not yet heard from: still "unmet" if refuted at a later firing (`node/timers.rs`).
    unmet_deferred: HashSet<(NodeIdentity, foca::Incarnation)>,
    /// Which queued outputs the budget let out (testing builds: see [`Self::polled_budgeted`]).
    #[cfg(any(test, feature = "testing"))]
    budget_marks: outbox::BudgetMarks,
}

impl std::fmt::Debug for ControlNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlNode")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ControlNode {
    /// A node that is a cluster of one until it [`join`](Self::join)s or is joined. `seed` feeds member
    /// selection (any value; distinct per node and per start is best).
    /// `identity` must be signed with `trust.signer` ([`NodeIdentity::signed`]).
    pub fn new(now: Instant, identity: NodeIdentity, trust: Trust, config: ControlConfig, seed: u64) -> Self {
        let mut verifier = Verifier::new(trust.ca_key.clone());
        for r in trust.revoked.iter() {
            verifier.revoke(r.node);
        }
        let verifier = Arc::new(Mutex::new(verifier));
        let shared = Arc::new(Mutex::new(BroadcastShared {
            me: Some(identity.clone()),
            ca_key: trust.ca_key.clone(),
            revoked: trust.revoked.iter().map(|r| r.node).collect(),
            ..BroadcastShared::default()
        }));
        let handler = FdbBroadcasts {
            shared: Arc::clone(&shared),
            verifier: Arc::clone(&verifier),
        };
        let foca = Foca::with_custom_broadcast(
            identity.clone(),
            config.to_foca(),
            XorShift::new(seed ^ 0x5157_494d),
            VerifyingCodec {
                verifier: Arc::clone(&verifier),
            },
            handler,
        );
        let mut sync = FdbSync::new(identity.id, identity.generation, identity.vtep);
        sync.set_max_per_owner(config.max_entries_per_owner);
        let revocations = trust.revoked.clone();
        let outbox = Outbox::new(now, config.gossip_budget);
        let mut node = ControlNode {
            identity,
            trust,
            verifier,
            revocations,
            foca,
            shared,
            sync,
            rng: XorShift::new(seed),
            out: VecDeque::new(),
            notes: Vec::new(),
            left: HashMap::new(),
            pending: Vec::new(),
            pending_revocations: Vec::new(),
            revoked_addrs: HashSet::new(),
            seeds: Vec::new(),
            held_seeds: HashSet::new(),
            has_left: false,
            stats: ControlStats::default(),
            last_heard: HashMap::new(),
            health: 0,
            health_decay_at: now,
            config,
            catalog: Catalog::default(),
            grants: Grants::default(),
            my_blocks: BTreeSet::new(),
            pending_blocks: BTreeMap::new(),
            absent_since: HashMap::new(),
            orphan_since: BTreeMap::new(),
            ipam_synced: false,
            outbox,
            pace_at: None,
            flush_at: None,
            last_flush: None,
            parked: VecDeque::new(),
            parked_entries: 0,
            knows_us: None,
            announced_by: None,
            relays: relay::Relays::new(),
            reconnect: membership::Reconnect::default(),
            put_off: relay::PutOff::default(),
            first_heard: HashMap::new(),
            unmet_deferred: HashSet::new(),
            #[cfg(any(test, feature = "testing"))]
            budget_marks: outbox::BudgetMarks::default(),
        };
        let at = now + node.config.anti_entropy_interval;
        node.out.push_back(Output::ScheduleTimer {
            at,
            timer: Timer(TimerKind::AntiEntropy),
        });
        node
    }

    /// This node's current identity (its `renewal` changes if it was wrongly declared down and rejoined).
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// Next action for the caller, in order. Drain after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        let mut out = self.take_output();
        // Nothing goes to a revoked node (foca still announces to members it holds as down), nor to
        // our own address (foca files an earlier run of ours as down once gossip mentions it, and
        // may pick it for its periodic announce to down members; `members` does not list it).
        while let Some(Output::Send { to, .. }) = &out {
            if !self.revoked_addrs.contains(to) && *to != self.identity.addr {
                break;
            }
            out = self.take_output();
        }
        match &mut out {
            Some(Output::Send { bytes, .. }) => self.stats.gossip_bytes_sent += bytes.len() as u64,
            Some(Output::FdbInstall { .. }) => self.stats.fdb_installs += 1,
            Some(Output::FdbRemove { .. }) => self.stats.fdb_removes += 1,
            Some(Output::MembersChanged(rows)) => {
                // Several changes queued in one burst become one snapshot.
                while matches!(self.out.front(), Some(Output::MembersChanged(_))) {
                    self.take_output();
                }
                *rows = self.members();
            }
            _ => {}
        }
        out
    }

    /// Counters since start.
    pub fn stats(&self) -> ControlStats {
        let mut s = self.stats;
        {
            let v = self.verifier.lock().unwrap_or_else(|e| e.into_inner());
            s.identities_refused = v.refused;
            s.identity_verifications = v.verifications;
        }
        {
            let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            s.bad_signatures += shared.bad_signatures;
            s.seq_refused += shared.too_far;
        }
        s.revoked = self.revocations.len() as u64;
        let o = self.outbox.stats;
        s.sync_bytes_sent = o.sync_bytes_sent;
        s.sync_messages_sent = o.sync_messages_sent;
        s.sync_deferred = o.sync_deferred;
        s.sync_dropped = o.sync_dropped;
        s.sync_pending = self.outbox.pending_tables() as u64;
        s
    }

    /// The CA-signed revocations this node knows (persist them: [`Output::Revoked`] says when).
    pub fn revocations(&self) -> &RevocationList {
        &self.revocations
    }

    /// Ask the member at `addr` to let us in; it answers with (part of) the membership, the rest follows
    /// by gossip and periodic announces. Safe to call for several addresses.
    /// Until some member answers, the announce is repeated to every address given here on each
    /// anti-entropy tick, so a lost first packet or a member that is still starting does not strand us.
    pub fn join(&mut self, now: Instant, addr: PeerAddr) -> Result<(), ControlError> {
        self.check_not_left()?;
        if !self.seeds.contains(&addr) {
            self.seeds.push(addr);
        }
        let dst = NodeIdentity::placeholder(addr);
        self.put_off.awaiting_answer = true;
        let r = self.swim(now, |foca, rt| foca.announce(dst, rt));
        self.release(now);
        r
    }

    /// Graceful leave (SIGTERM): tell every member directly, then let foca gossip our departure.
    /// After this the node only drains; restart the daemon to rejoin.
    pub fn leave(&mut self, now: Instant) -> Result<(), ControlError> {
        self.check_not_left()?;
        let notice = LeaveNotice::sign(&self.identity, &self.trust.signer)
            .map_err(|e| ControlError::Encode(e.to_string()))?;
        let msg = SyncMessage::Leave {
            notice: notice.clone(),
        };
        let bytes = messages::encode_sync(&msg).map_err(|e| ControlError::Encode(e.to_string()))?;
        let peers: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for to in peers {
            self.out.push_back(Output::Send {
                to,
                bytes: bytes.clone(),
            });
        }
        // Also as a piggybacked broadcast, so members that missed the direct notice still label us "left".
        let notice = messages::encode_broadcast(&Broadcast::Leave(notice))
            .map_err(|e| ControlError::Encode(e.to_string()))?;
        self.foca
            .add_broadcast(&notice)
            .map_err(|e| ControlError::Swim(e.to_string()))?;
        self.drain_inbox();
        let r = self.swim(now, |foca, rt| foca.leave_cluster(rt));
        self.has_left = true;
        r
    }
    /// Let out the sync traffic the budget allows now; wake up when the rest may go.
    fn release(&mut self, now: Instant) {
        if self.has_left {
            return;
        }
        let me = self.identity.id;
        #[cfg(any(test, feature = "testing"))]
        let queued = self.out.len();
        let wake = self.outbox.release(now, &self.sync, me, &mut self.out);
        #[cfg(any(test, feature = "testing"))]
        self.budget_marks.queued(queued, self.out.len());
        if let Some(at) = wake {
            if !matches!(self.pace_at, Some(p) if p <= at) {
                self.pace_at = Some(at);
                self.out.push_back(Output::ScheduleTimer {
                    at,
                    timer: Timer(TimerKind::Pace),
                });
            }
        }
    }

    /// A datagram/stream payload received from `from`'s gossip endpoint.
    pub fn handle_message(&mut self, now: Instant, from: PeerAddr, bytes: &[u8]) -> Result<(), ControlError> {
        let r = self.handle_message_inner(now, from, bytes);
        self.release(now);
        r
    }

    fn handle_message_inner(
        &mut self,
        now: Instant,
        from: PeerAddr,
        bytes: &[u8],
    ) -> Result<(), ControlError> {
        if self.has_left {
            return Ok(());
        }
        self.stats.messages_in += 1;
        self.put_off.heard_from(from);
        let packet = messages::decode(bytes).inspect_err(|_| self.stats.decode_errors += 1)?;
        if self.revoked_addrs.contains(&from) && matches!(packet, Packet::Sync(_)) {
            self.stats.rejected += 1;
            return Ok(());
        }
        match packet {
            Packet::Swim(body) => {
                // The sender addressed us (or announced itself to our address): it needs no Hello.
                self.knows_us = Some(from);
                match swim_message(body) {
                    Some((foca::Message::Announce, src)) if src == from => self.announced_by = Some(from),
                    // The answer to our join: the members it lists are introduced to us by its sender.
                    // Only the first answer to our join (not one to a renewal's re-announce after a
                    // partition, nor an unsolicited Feed: nobody relays for those).
                    Some((foca::Message::Feed, _))
                        if self.seeds.contains(&from) && self.put_off.awaiting_answer =>
                    {
                        self.put_off.awaiting_answer = false;
                        self.put_off.answer_from = Some(from);
                    }
                    _ => {}
                }
                let r = self.swim(now, |foca, rt| foca.handle_data(body, rt));
                self.knows_us = None;
                self.announced_by = None;
                self.put_off.answer_from = None;
                if r.is_err() {
                    self.stats.swim_errors += 1;
                } else if self.foca.iter_membership_state().any(|m| m.id().addr == from) {
                    // Only addresses foca holds (pruned with its table): not any certified sender.
                    self.last_heard.insert(from, now);
                    self.first_heard.entry(from).or_insert(now);
                }
                self.apply_pending_revocations(now)?;
                r
            }
            Packet::Sync(SyncMessage::Digest {
                reply,
                owners,
                revoked,
                catalog,
                grants,
            }) => {
                self.sync_beside_fdb(from, revoked, catalog, grants)?;
                // The tables that differ leave in pieces as the budget allows (a pass already
                // under way towards this peer continues where it is).
                for (owner, generation, from_seq) in self.sync.differing(&owners) {
                    self.outbox.want_table(from, owner, generation, from_seq);
                }
                if !reply {
                    let digest = self.digest_message(true);
                    self.send_sync(from, &digest)?;
                }
                Ok(())
            }
            Packet::Sync(SyncMessage::States { owners }) => {
                for dump in owners {
                    let (owner, generation) = (dump.owner, dump.generation);
                    let applied = self.merge_dump(dump);
                    self.relay_first_hand(now, from, owner, generation, applied)?;
                }
                Ok(())
            }
            Packet::Sync(SyncMessage::Summary {
                reply,
                root,
                buckets,
                revoked,
                catalog,
                grants,
            }) => self.handle_summary(from, reply, root, &buckets, (revoked, catalog, grants)),
            Packet::Sync(SyncMessage::BucketDigest {
                reply,
                k,
                which,
                owners,
            }) => {
                let k = k as usize;
                if k == 0 || k > sync::MAX_BUCKETS || which.iter().any(|b| *b as usize >= k) {
                    self.stats.malformed += 1;
                    return Ok(());
                }
                let which: BTreeSet<usize> = which.into_iter().map(|b| b as usize).collect();
                for (owner, generation, from_seq) in self.sync.differing_in(&owners, k, &which) {
                    self.outbox.want_table(from, owner, generation, from_seq);
                }
                if !reply {
                    self.send_bucket_digest(from, true, k, which)?;
                }
                Ok(())
            }
            Packet::Sync(SyncMessage::Hello { identity }) => self.handle_hello(now, from, identity),
            Packet::Sync(SyncMessage::Down { identity }) => self.handle_down(now, from, identity),
            Packet::Sync(SyncMessage::Introduce { identity, listed }) => {
                self.handle_introduce(now, from, identity, listed)
            }
            Packet::Sync(SyncMessage::Leave { notice }) => {
                let identity = notice.identity.clone();
                // Only a node may announce its own leave: signed by it, sent from its own address.
                let attested = self.verifier_check(&identity);
                if identity.addr == self.identity.addr || identity.addr != from || !attested {
                    self.stats.rejected += 1;
                    return Ok(());
                }
                if !notice.verify_sig() {
                    self.stats.bad_signatures += 1;
                    return Ok(());
                }
                self.left.insert(identity.addr, identity.clone());
                self.swim(now, |foca, rt| {
                    foca.apply_many(std::iter::once(Member::down(identity)), true, rt)
                })?;
                self.out.push_back(Output::MembersChanged(Vec::new()));
                Ok(())
            }
            Packet::Sync(SyncMessage::Catalog { records }) => {
                for r in records {
                    self.apply_network_record(r, false);
                }
                self.report_networks();
                Ok(())
            }
            Packet::Sync(SyncMessage::Grants { list }) => {
                for g in list {
                    self.apply_grant(g, false);
                }
                self.report_blocks();
                Ok(())
            }
            Packet::Sync(SyncMessage::BlockRequest {
                network,
                requester,
                want,
                sig,
            }) => self.handle_block_request(now, from, &network, requester, want, &sig),
            Packet::Sync(SyncMessage::Revocations { list }) => {
                // Bounded by the message size; each entry costs one verification only if new.
                for r in list {
                    self.apply_revocation(now, r)?;
                }
                Ok(())
            }
            Packet::Sync(SyncMessage::RevokeRequest {
                target,
                requester,
                sig,
            }) => {
                let Some(ca) = self.trust.ca_signer.clone() else {
                    self.stats.rejected += 1;
                    return Ok(());
                };
                let Some(req) = self.active_identity(requester) else {
                    self.stats.rejected += 1;
                    return Ok(());
                };
                let msg = messages::revoke_request_bytes(target, requester);
                if req.addr != from || !req.verify_own(messages::DOMAIN_REVOKE_REQUEST, &msg, &sig) {
                    self.stats.bad_signatures += 1;
                    return Ok(());
                }
                // An admitter is revoked only by an admitter acting itself, never on a relayed request.
                let target_is_admitter = self
                    .active_identity(target)
                    .and_then(|t| t.attestation().map(|a| a.admitter))
                    .unwrap_or(false);
                if target == self.identity.id || target_is_admitter {
                    self.stats.rejected += 1;
                    return Ok(());
                }
                tracing::warn!(%target, %requester, "revoking node on a member's request");
                let r = Revocation::issue(&ca, target).map_err(|e| ControlError::Encode(e.to_string()))?;
                self.apply_revocation(now, r)
            }
        }
    }

    /// A timer previously requested through [`Output::ScheduleTimer`] is due.
    pub fn handle_timer(&mut self, now: Instant, timer: Timer) -> Result<(), ControlError> {
        let r = self.handle_timer_inner(now, timer);
        self.release(now);
        r
    }
    fn check_not_left(&self) -> Result<(), ControlError> {
        if self.has_left {
            Err(ControlError::Left)
        } else {
            Ok(())
        }
    }

    /// Sync traffic: queued behind the gossip budget (see `node/outbox.rs`).
    fn send_sync(&mut self, to: SocketAddr, msg: &SyncMessage) -> Result<(), ControlError> {
        let bytes = messages::encode_sync(msg).map_err(|e| ControlError::Encode(e.to_string()))?;
        self.outbox.queue_control(to, bytes);
        Ok(())
    }

    /// A message that must not wait for the budget (revoke requests, Hellos, a joiner's relayed tables).
    fn send_now(&mut self, to: SocketAddr, msg: &SyncMessage) -> Result<(), ControlError> {
        let bytes = messages::encode_sync(msg).map_err(|e| ControlError::Encode(e.to_string()))?;
        self.out.push_back(Output::Send { to, bytes });
        Ok(())
    }
}

/// The message kind and sender address of a SWIM packet's header, without verifying it (foca
/// verifies it when it handles the packet; this only tells a join and a join answer apart).
fn swim_message(body: &[u8]) -> Option<(foca::Message<NodeIdentity>, SocketAddr)> {
    use foca::Codec;
    let header: foca::Header<NodeIdentity> = foca::PostcardCodec.decode_header(body).ok()?;
    Some((header.message, header.src.addr))
}
