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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foca::{Foca, Member, OwnedNotification, State};
use serde::Serialize;

use crate::attest::Signer;
use crate::catalog::Catalog;
use crate::identity::{Verifier, VerifyingCodec};
use crate::ipam::Grants;
use crate::membership::{BroadcastShared, FdbBroadcasts, NodeId, NodeIdentity, Rt, XorShift};
use crate::messages::{self, Broadcast, FdbAdvert, LeaveNotice, OwnerDump, Packet, SyncMessage};
use crate::revocation::{Revocation, RevocationList};
use crate::sync::{self, Admit, FdbSync, Key};
use crate::{ControlError, MacAddr, Output, PeerAddr, Timer, TimerKind, Vni};

mod direct;
mod networks;
mod outbox;
pub use networks::{BlockOutcome, NetworkInfo};
use outbox::Outbox;

/// Timings. The defaults withdraw a SIGKILLed node everywhere within 3 s on a LAN and survive 20 %
/// message loss without false deaths. Detection ≈ wait until some member probes the victim (each of
/// N members probes one per period, so usually ≤ 2 periods) + one probe period + suspicion (or the
/// suspect's silence towards the prober, whichever ends later) + one direct message: the member that
/// declares it down tells every member at once (`node/direct.rs`) ≈ 0.5 + 0.25 + 1.0 + 0.01 s.
/// Chosen by `tests/sim.rs::survey_timings` over 40 seeds × 32 nodes (worst withdrawal 2.5 s
/// virtual with 1.2 s suspicion and gossiped deaths, 0 false deaths under 20 % loss); suspicion cut to
/// 1.0 s once deaths were announced directly (`control/tests/sim_direct.rs::survey_withdrawal`:
/// no false death at 20 % loss; the silence window still guards small clusters, where the suspect
/// talks to the prober often). Under loss the
/// levers that matter are many indirect probes (a probe fails only if the direct and all 8 indirect
/// paths fail) and many piggyback transmissions (so a refutation reaches everyone who heard a
/// suspicion before their own suspicion timer fires); with 3 probes / 8 transmissions false deaths
/// were common.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub probe_period: Duration,
    /// Must be < probe_period; the direct-ack wait before indirect probes (a LAN p99 RTT, generously).
    pub probe_rtt: Duration,
    pub num_indirect_probes: usize,
    pub suspect_to_down_after: Duration,
    /// A suspect is declared down only once it has also been silent towards this node (no valid SWIM
    /// packet from its address) for this long, times the local health multiplier (1 + health, health
    /// in 0..=`max_local_health`). A crashed node is silent from the moment it died, so without loss
    /// this bounds detection (≈ death + this + dissemination), independently of probe timing.
    pub suspect_silence: Duration,
    /// Lifeguard-style local health: each suspicion this node raised that was refuted (its probe
    /// failed although the member was alive) raises it by one, up to this; it decays by one per
    /// `health_decay`. Under loss or overload this node's own probes fail, so it waits longer before
    /// believing them. 1 keeps crash detection under loss within ≈ 2 × `suspect_silence`.
    pub max_local_health: u32,
    pub health_decay: Duration,
    /// How often and to how many members foca gossips (membership updates, suspicions, leaves,
    /// revocations; FDB adverts are pushed directly). foca gossips only while it has updates to
    /// spread, so an idle cluster pays nothing for it. 100 ms × 4 was tried: in the simulator
    /// (`examples/converge`, N = 32, all starting at once) per-MAC formation p99 went from 420 to
    /// 270 ms, but on a 2-vCPU machine running all 32 daemons (`examples/cluster --nodes 32`) it was
    /// slower (more 16 KiB gossip messages to encrypt while 31 joins are under way), so 200 ms × 3 stays.
    pub gossip_interval: Duration,
    pub gossip_fanout: usize,
    /// How many times an update/advert is piggybacked before it is dropped from the backlog.
    pub max_transmissions: u8,
    /// Push-pull digest exchange with one random member.
    pub anti_entropy_interval: Duration,
    /// Periodic Announce to one member: learn members we have not heard of.
    pub announce_interval: Duration,
    /// Periodic Announce to members believed down: how a healed partition finds its other half.
    pub announce_down_interval: Duration,
    /// foca's packet budget. Each gossip message travels on its own QUIC stream, so this is not bound
    /// by the path MTU. Signed identities are 220 bytes on the wire (25 before attestations), and foca
    /// fills a packet with membership updates before custom broadcasts (FDB adverts, leaves,
    /// revocations): at 1200 bytes the header (src + dst) left room for two updates and, while a
    /// bootstrap's update backlog lasted, none for broadcasts (`sigterm_under_loss_withdraws` then
    /// failed: leave notices never left). 16 KiB carries ~70 updates plus broadcasts.
    pub max_packet_size: usize,
    /// Present MACs accepted from any one owner (beyond: refused, counted in `over_cap`); the data
    /// plane's default `--max-local-macs`.
    pub max_entries_per_owner: usize,
    /// An IPAM block whose holder left (signed leave) or was revoked this long ago is released by an
    /// admitter. A holder that is merely silent (crashed, or behind a partition) keeps its blocks, and a
    /// restarted holder (same node id) too.
    pub block_grace: Duration,
    /// Bytes per second this node may spend on FDB sync traffic: advert batches, anti-entropy table
    /// pieces and digests, network catalog and IPAM grant repair (issue 9 §4, default 256 kB/s).
    /// Membership (SWIM probes, acks, indirect probes, foca's gossip) and leave notices are not
    /// counted against it and never wait for it. 0: no limit. See `node/outbox.rs`.
    pub gossip_budget: u64,
    /// Local MAC changes within this window after the first leave as one batch (one message per
    /// member per ~16 KiB of entries) instead of one advert per MAC. Zero: at once.
    pub advert_batch_window: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            probe_period: Duration::from_millis(250),
            probe_rtt: Duration::from_millis(100),
            num_indirect_probes: 8,
            suspect_to_down_after: Duration::from_millis(1000),
            suspect_silence: Duration::from_millis(1800),
            max_local_health: 1,
            health_decay: Duration::from_secs(10),
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            max_transmissions: 15,
            anti_entropy_interval: Duration::from_secs(1),
            announce_interval: Duration::from_secs(5),
            announce_down_interval: Duration::from_secs(3),
            max_packet_size: 16 * 1024,
            max_entries_per_owner: crate::sync::DEFAULT_MAX_PER_OWNER,
            block_grace: Duration::from_secs(60),
            gossip_budget: DEFAULT_GOSSIP_BUDGET,
            advert_batch_window: Duration::from_millis(50),
        }
    }
}

/// Default [`ControlConfig::gossip_budget`]: 256 kB/s.
pub const DEFAULT_GOSSIP_BUDGET: u64 = 256_000;

impl ControlConfig {
    fn to_foca(&self) -> foca::Config {
        let nz = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        let mut c = foca::Config::simple();
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt.min(self.probe_period / 2);
        c.num_indirect_probes = nz(self.num_indirect_probes);
        c.max_transmissions = NonZeroU8::new(self.max_transmissions).unwrap_or(NonZeroU8::MIN);
        c.suspect_to_down_after = self.suspect_to_down_after;
        c.max_packet_size = nz(self.max_packet_size.max(512));
        c.notify_down_members = true;
        c.remove_down_after = Some(Duration::from_secs(24 * 3600));
        c.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.gossip_interval,
            num_members: nz(self.gossip_fanout),
        });
        c.periodic_announce = Some(foca::PeriodicParams {
            frequency: self.announce_interval,
            num_members: nz(1),
        });
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.announce_down_interval,
            num_members: nz(2),
        });
        c
    }
}

/// A member's state as exported by `overlayctl peers --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
    Left,
}

/// One row of `overlayctl peers --json`: {"id","addr","state","generation"} (+ vtep).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    pub id: String,
    pub addr: SocketAddr,
    pub vtep: IpAddr,
    pub state: MemberState,
    pub generation: u64,
    /// Bumped each time this run of the node was declared down and rejoined (a false death shows here).
    pub renewal: u32,
}

/// Per-reason counters (exported by `overlayctl stats`); counted, not logged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ControlStats {
    pub messages_in: u64,
    /// Envelope/body that did not decode (wrong version, garbage).
    pub decode_errors: u64,
    /// Packets foca refused (malformed SWIM, from ourselves, too big, ...).
    pub swim_errors: u64,
    /// Well-formed messages refused by policy (e.g. a leave announced on someone else's behalf).
    pub rejected: u64,
    /// Claims (adverts, dump entries, leaves, revocations, revoke requests) whose signature did not verify.
    pub bad_signatures: u64,
    /// FDB entries refused because their seq or mobility jumped more than `sync::MAX_JUMP`.
    pub seq_refused: u64,
    /// Identities refused by the verifier (forged, unattested, revoked) and full verifications done.
    pub identities_refused: u64,
    pub identity_verifications: u64,
    /// Revocations known (CA-signed).
    pub revoked: u64,
    pub anti_entropy_rounds: u64,
    pub fdb_installs: u64,
    pub fdb_removes: u64,
    /// Times this node learnt it had been declared down and rejoined with a renewed identity.
    pub rejoins: u64,
    /// Suspicion timeouts that did not declare the member down because it was heard from directly
    /// within the last `suspect_to_down_after` (see [`ControlNode::handle_timer`]).
    pub suspicions_deferred: u64,
    /// Suspect-to-down timers dropped because the suspicion had been refuted meanwhile.
    pub stale_down_timers: u64,
    /// FDB entries refused because their owner already holds `max_entries_per_owner` present MACs.
    pub over_cap: u64,
    /// FDB entries, network records or grants refused as malformed (VNI range, too many IPs, bad name...).
    pub malformed: u64,
    /// IPAM grants this admitter signed, and releases.
    pub blocks_granted: u64,
    pub blocks_released: u64,
    /// Every byte handed to the transport (membership and sync).
    pub gossip_bytes_sent: u64,
    /// Bytes and messages of FDB sync traffic (adverts, anti-entropy, catalog/grant repair): what
    /// `gossip_budget` limits.
    pub sync_bytes_sent: u64,
    pub sync_messages_sent: u64,
    /// Sync messages that had to wait for the budget (sent later, in order).
    pub sync_deferred: u64,
    /// Small sync messages dropped because too many were waiting (anti-entropy repeats them).
    pub sync_dropped: u64,
    /// Now: table transfers (one owner's table to one member) in progress or waiting for the budget.
    pub sync_pending: u64,
    /// Batches of local MAC changes flushed (each leaves as one message per member per ~16 KiB).
    pub advert_batches: u64,
    /// Local MACs not advertised because this node already advertises `max_entries_per_owner`
    /// (members would refuse them anyway).
    pub local_over_cap: u64,
    /// Hellos (our signed identity, sent straight to a member we just learnt of) sent, and those
    /// received that verified and named a member not held here yet, handed to foca (which still ignores
    /// an identity it holds as down; see `node/direct.rs`).
    pub hellos_sent: u64,
    pub hellos_accepted: u64,
    /// Members this node declared down and announced straight to every member, and such
    /// announcements applied here.
    pub downs_announced: u64,
    pub downs_applied: u64,
    /// Table pieces of owners not yet known that were dropped instead of parked (bound reached, or
    /// the owner is revoked); anti-entropy repairs them.
    pub parked_dropped: u64,
}

/// Bound on adverts parked because their owner is not (yet) a known member; anti-entropy repairs the rest.
const MAX_PENDING: usize = 4096;

type SwimCore = Foca<NodeIdentity, VerifyingCodec, XorShift, FdbBroadcasts>;

/// What a node needs to sign its own claims and check everyone else's.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The cluster CA's public key (uncompressed P-256), see [`crate::attest::certificate_public_key`].
    pub ca_key: Vec<u8>,
    /// This node's own key (the key of its certificate and attestation).
    pub signer: Arc<Signer>,
    /// The CA key, on admitters only: signs revocations.
    pub ca_signer: Option<Arc<Signer>>,
    /// Revocations known at start (persisted in the state dir).
    pub revoked: RevocationList,
}

/// What [`ControlNode::revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Signed here (this node is an admitter) and being disseminated.
    Revoked,
    /// Already revoked.
    AlreadyRevoked,
    /// Sent to the admitter with this id; it signs and disseminates the revocation.
    Forwarded(NodeId),
}

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
        let mut out = self.out.pop_front();
        // Nothing goes to a revoked node (foca still announces to members it holds as down), nor to
        // our own address (foca files an earlier run of ours as down once gossip mentions it, and
        // may pick it for its periodic announce to down members; `members` does not list it).
        while let Some(Output::Send { to, .. }) = &out {
            if !self.revoked_addrs.contains(to) && *to != self.identity.addr {
                break;
            }
            out = self.out.pop_front();
        }
        match &mut out {
            Some(Output::Send { bytes, .. }) => self.stats.gossip_bytes_sent += bytes.len() as u64,
            Some(Output::FdbInstall { .. }) => self.stats.fdb_installs += 1,
            Some(Output::FdbRemove { .. }) => self.stats.fdb_removes += 1,
            Some(Output::MembersChanged(rows)) => {
                // Several changes queued in one burst become one snapshot.
                while matches!(self.out.front(), Some(Output::MembersChanged(_))) {
                    self.out.pop_front();
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
            self.flush_adverts();
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
    fn flush_adverts(&mut self) {
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
        let peers: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for to in peers {
            self.outbox.want_table(to, me, generation, from);
        }
    }

    /// Let out the sync traffic the budget allows now; wake up when the rest may go.
    fn release(&mut self, now: Instant) {
        if self.has_left {
            return;
        }
        let me = self.identity.id;
        if let Some(at) = self.outbox.release(now, &self.sync, me, &mut self.out) {
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
        let packet = messages::decode(bytes).inspect_err(|_| self.stats.decode_errors += 1)?;
        if self.revoked_addrs.contains(&from) && matches!(packet, Packet::Sync(_)) {
            self.stats.rejected += 1;
            return Ok(());
        }
        match packet {
            Packet::Swim(body) => {
                // The sender addressed us (or announced itself to our address): it needs no Hello.
                self.knows_us = Some(from);
                let r = self.swim(now, |foca, rt| foca.handle_data(body, rt));
                self.knows_us = None;
                if r.is_err() {
                    self.stats.swim_errors += 1;
                } else {
                    self.last_heard.insert(from, now);
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
                    self.merge_dump(dump);
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

    fn handle_timer_inner(&mut self, now: Instant, timer: Timer) -> Result<(), ControlError> {
        if self.has_left {
            return Ok(());
        }
        // Lifeguard-style guard against false deaths: foca declares a suspect down after a fixed
        // timeout, but a member whose own packets still reach us is alive (the probes that failed
        // were lost, not unanswered). Wait until it has been silent for the silence window; a
        // refutation (new incarnation) usually arrives meanwhile and voids the timer. A crashed
        // member is silent from the moment it died, so crash detection is bounded by the window.
        if let TimerKind::Swim(foca::Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        }) = &timer.0
        {
            if !self.still_suspect(member_id, *incarnation) {
                // Refuted (or renamed, or already down). foca 2.0 would do nothing here except send
                // the member a TurnUndead "as a courtesy", which makes a perfectly alive member that
                // merely refuted a suspicion rejoin with a renewed identity: under loss every node
                // did, again and again. Drop the stale timer instead.
                // Our own probe failed although the member was alive: Lifeguard's signal that this
                // node's view is degraded (loss, overload), so it gets more patient for a while.
                self.stats.stale_down_timers += 1;
                self.decay_health(now);
                self.health = (self.health + 1).min(self.config.max_local_health);
                self.health_decay_at = now + self.config.health_decay;
                return Ok(());
            }
            self.decay_health(now);
            if let Some(at) = self.silent_until(member_id.addr).filter(|at| *at > now) {
                self.stats.suspicions_deferred += 1;
                self.out.push_back(Output::ScheduleTimer { at, timer });
                return Ok(());
            }
        }
        match timer.0 {
            TimerKind::Swim(t) => {
                // Our own suspicion timed out (still suspect, silent long enough): foca declares the
                // member down now; every member hears it from us directly, not after gossip rounds.
                let victim = match &t {
                    foca::Timer::ChangeSuspectToDown { member_id, .. } => Some(member_id.clone()),
                    _ => None,
                };
                self.swim(now, |foca, rt| foca.handle_timer(t, rt))?;
                match victim {
                    Some(v) => self.announce_down(&v),
                    None => Ok(()),
                }
            }
            TimerKind::Pace => {
                // A Pace timer superseded by an earlier one (pace_at moved earlier, then on) still
                // fires; it must not forget the one pending, or every such firing schedules one
                // more and the timers multiply (quadratically with the members in the simulator).
                if self.pace_at.is_some_and(|p| p <= now) {
                    self.pace_at = None;
                }
                Ok(())
            }
            TimerKind::FlushAdverts => {
                self.flush_adverts();
                self.last_flush = Some(now);
                Ok(())
            }
            TimerKind::AntiEntropy => {
                let at = now + self.config.anti_entropy_interval;
                self.out.push_back(Output::ScheduleTimer {
                    at,
                    timer: Timer(TimerKind::AntiEntropy),
                });
                let peers: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
                if peers.is_empty() {
                    // Alone: keep knocking on the join addresses (no-op for the first node of a cluster).
                    for addr in self.seeds.clone() {
                        let dst = NodeIdentity::placeholder(addr);
                        self.swim(now, |foca, rt| foca.announce(dst, rt))?;
                    }
                    return Ok(());
                }
                let to = peers[self.rng.below(peers.len())];
                self.stats.anti_entropy_rounds += 1;
                let summary = self.summary_message(false, false);
                self.send_sync(to, &summary)?;
                self.ipam_tick(now)
            }
        }
    }

    /// Every member this node knows, itself included.
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut v = vec![MemberInfo {
            id: hex_id(self.identity.id),
            addr: self.identity.addr,
            vtep: self.identity.vtep,
            state: if self.has_left {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            generation: self.identity.generation,
            renewal: self.identity.renewal,
        }];
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            if self.revocations.contains(id.id) || self.is_own_past_identity(id) {
                continue;
            }
            let state = match m.state() {
                State::Alive => MemberState::Alive,
                State::Suspect => MemberState::Suspect,
                State::Down
                    if self
                        .left
                        .get(&id.addr)
                        .is_some_and(|l| l.generation == id.generation) =>
                {
                    MemberState::Left
                }
                State::Down => MemberState::Dead,
            };
            v.push(MemberInfo {
                id: hex_id(id.id),
                addr: id.addr,
                vtep: id.vtep,
                state,
                generation: id.generation,
                renewal: id.renewal,
            });
        }
        v
    }

    /// An earlier renewal or run of this node. foca files any identity at our address other than our own
    /// as down (after a rejoin the cluster is still spreading the death that caused it) and keeps it for
    /// `remove_down_after` (a day), so that later copies of that death are stale and not spread again.
    /// It stays in foca's table, but is not a member: listing it showed this node twice, alive and dead.
    /// Another node id at our address (a former owner of the address) is listed as foca holds it.
    fn is_own_past_identity(&self, id: &NodeIdentity) -> bool {
        id.id == self.identity.id
            && id.addr == self.identity.addr
            && (id.generation, id.renewal) < (self.identity.generation, self.identity.renewal)
    }

    /// Gossip addresses of the active members whose attestation says admitter (where a joiner's
    /// request is best relayed), by node id.
    pub fn admitter_addrs(&self) -> Vec<SocketAddr> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(NodeId, SocketAddr)> = shared
            .members
            .values()
            .filter(|m| m.id != self.identity.id && !self.revocations.contains(m.id))
            .filter(|m| m.attestation().is_some_and(|a| a.admitter))
            .map(|m| (m.id, m.addr))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, a)| a).collect()
    }

    /// Number of active (alive or suspect) members besides this node.
    pub fn active_members(&self) -> usize {
        self.foca.num_members()
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

    /// Whether foca still holds `id` as suspect at `incarnation` (else its down timer is a no-op).
    fn still_suspect(&self, id: &NodeIdentity, incarnation: foca::Incarnation) -> bool {
        self.foca
            .iter_membership_state()
            .any(|m| m.id() == id && m.incarnation() == incarnation && m.state() == State::Suspect)
    }

    /// When `addr`'s silence will have lasted the (health-scaled) window; None if never heard from.
    fn silent_until(&self, addr: SocketAddr) -> Option<Instant> {
        let window = self.config.suspect_silence * (1 + self.health);
        Some(*self.last_heard.get(&addr)? + window)
    }

    fn decay_health(&mut self, now: Instant) {
        while self.health > 0 && now >= self.health_decay_at {
            self.health -= 1;
            self.health_decay_at += self.config.health_decay;
        }
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

    /// A small, rare message that must not wait for the budget (revoke requests).
    fn send_now(&mut self, to: SocketAddr, msg: &SyncMessage) -> Result<(), ControlError> {
        let bytes = messages::encode_sync(msg).map_err(|e| ControlError::Encode(e.to_string()))?;
        self.out.push_back(Output::Send { to, bytes });
        Ok(())
    }

    /// Run one foca call with a runtime writing into our queue, then react to what it noticed.
    fn swim<F>(&mut self, now: Instant, f: F) -> Result<(), ControlError>
    where
        F: FnOnce(&mut SwimCore, Rt<'_>) -> Result<(), foca::Error>,
    {
        let mut notes = std::mem::take(&mut self.notes);
        let r = f(
            &mut self.foca,
            Rt {
                now,
                out: &mut self.out,
                notes: &mut notes,
            },
        );
        let membership_changed = !notes.is_empty();
        for note in notes.drain(..) {
            match note {
                OwnedNotification::MemberUp(id) | OwnedNotification::Rename(_, id) => {
                    // It may not have heard of us yet (we may know it from a join answer's member
                    // list, or from gossip): introduce ourselves, so it takes our table now.
                    if self.knows_us != Some(id.addr) {
                        self.send_hello(id.addr)?;
                    }
                    // Straight away, not at the next anti-entropy round: push our own table to the
                    // new (or restarted) member, and pull its table (its bucket's digest makes it ship
                    // what we lack there). Each side does this when it learns of the other, so a
                    // joiner's MACs reach a member one round trip after either heard of the other,
                    // at the cost of two small messages per pair, not a digest of every owner.
                    // Anything else that differs is repaired by anti-entropy.
                    let me = self.identity.id;
                    if let Some(generation) = self.sync.held_generation(me) {
                        self.outbox.want_table(id.addr, me, generation, 0);
                    }
                    // The finest bucket (about one owner per bucket up to MAX_BUCKETS owners), not
                    // the anti-entropy bucket count: while a cluster forms a node holds few owners,
                    // so that count is 1 and the "bucket" was every table; every node then queued
                    // every table for every member it learnt of (N² pieces each) and its own table,
                    // pushed above, waited behind them in the budget for up to 0.75 s at N = 128
                    // (`control/tests/sim_formation.rs`).
                    let k = sync::MAX_BUCKETS;
                    let which = BTreeSet::from([sync::bucket_of(id.id, k)]);
                    self.send_bucket_digest(id.addr, false, k, which)?;
                    // Our revocation, catalog and grant digests, as an answer (no FDB exchange):
                    // it ships us what we lack of those; it sends its own when it learns of us.
                    let summary = self.summary_message(true, false);
                    self.send_sync(id.addr, &summary)?;
                    // An admitter came up: pending block requests need not wait for the next tick.
                    if id.attestation().is_some_and(|a| a.admitter) {
                        self.request_pending_blocks()?;
                    }
                }
                OwnedNotification::Rejoin(id) => {
                    self.stats.rejoins += 1;
                    tracing::info!(identity = ?id, "declared down by the cluster; rejoined with a renewed identity");
                    self.shared.lock().unwrap_or_else(|e| e.into_inner()).me = Some(id.clone());
                    self.identity = id;
                }
                _ => {}
            }
        }
        self.notes = notes;
        if membership_changed {
            self.reconcile_membership();
        }
        self.drain_inbox();
        r.map_err(|e| ControlError::Swim(e.to_string()))
    }

    /// Align the FDB owners with foca's active members (newest generation per node id, revoked excluded).
    fn reconcile_membership(&mut self) {
        let mut eligible: BTreeMap<NodeId, (u64, IpAddr)> = BTreeMap::new();
        let mut idents: HashMap<NodeId, NodeIdentity> = HashMap::new();
        for m in self.foca.iter_membership_state() {
            if matches!(m.state(), State::Down) {
                continue;
            }
            let id = m.id();
            if self.revocations.contains(id.id) || id.id == self.identity.id {
                continue;
            }
            let e = eligible.entry(id.id).or_insert((id.generation, id.vtep));
            if id.generation > e.0 {
                *e = (id.generation, id.vtep);
            }
            let newer = match idents.get(&id.id) {
                Some(x) => id.generation > x.generation,
                None => true,
            };
            if newer {
                idents.insert(id.id, id.clone());
            }
        }
        // An address reused by a (re-admitted) non-revoked node is no longer blocked.
        if !self.revoked_addrs.is_empty() {
            for i in idents.values() {
                self.revoked_addrs.remove(&i.addr);
            }
        }
        let known: HashSet<SocketAddr> = self.foca.iter_membership_state().map(|m| m.id().addr).collect();
        self.last_heard.retain(|a, _| known.contains(a));
        let active: HashSet<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        self.outbox.retain_peers(|a| active.contains(a));
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).members = idents;
        self.sync.set_eligible(&eligible, &mut self.out);
        self.out.push_back(Output::MembersChanged(Vec::new()));
        // Adverts and table pieces that arrived before their owner became known.
        let pending = std::mem::take(&mut self.pending);
        for a in pending {
            self.apply_advert(a, false);
        }
        self.retry_parked();
    }

    fn drain_inbox(&mut self) {
        let inbox = {
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut shared.inbox)
        };
        for item in inbox {
            match item {
                Broadcast::Fdb(a) => {
                    // The handler verified it iff it knew the owner (then held generation matches).
                    let verified = self.sync.held_generation(a.owner) == Some(a.generation);
                    self.apply_advert(a, verified);
                }
                // Label only (see `Broadcast::Leave`): the direct notice or SWIM takes it down. The
                // handler checked the identity and the leave signature.
                Broadcast::Leave(n) if n.identity.addr != self.identity.addr => {
                    self.left.insert(n.identity.addr, n.identity);
                    self.out.push_back(Output::MembersChanged(Vec::new()));
                }
                Broadcast::Leave(_) => {}
                Broadcast::Revoke(r) => self.pending_revocations.push(r),
                // The handler verified these (self-contained signatures).
                Broadcast::Network(r) => {
                    self.apply_network_record(r, true);
                    self.report_networks();
                }
                Broadcast::Grant(g) => {
                    self.apply_grant(g, true);
                    self.report_blocks();
                }
            }
        }
    }

    /// The newest active identity of `node` (verified when it entered foca's table).
    fn active_identity(&self, node: NodeId) -> Option<NodeIdentity> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.members.get(&node).cloned()
    }

    fn owner_identity(&self, owner: NodeId, generation: u64) -> Option<NodeIdentity> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.signer_of(owner, generation).cloned()
    }

    fn verifier_check(&self, ident: &NodeIdentity) -> bool {
        self.verifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(ident)
            .is_ok()
    }

    fn digest_message(&self, reply: bool) -> SyncMessage {
        SyncMessage::Digest {
            reply,
            owners: self.sync.digest(),
            revoked: self.revocations.digest(),
            catalog: self.catalog.digest(),
            grants: self.grants.digest(),
        }
    }

    /// An anti-entropy summary; `with_buckets`: also the bucket hashes (an answer to a differing root).
    fn summary_message(&self, reply: bool, with_buckets: bool) -> SyncMessage {
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

    fn send_bucket_digest(
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
    fn sync_beside_fdb(
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
    fn handle_summary(
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
    fn apply_advert(&mut self, a: FdbAdvert, verified: bool) {
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
    /// signature ends the dump (whoever relayed it is lying or corrupt).
    fn merge_dump(&mut self, mut dump: OwnerDump) {
        if dump.owner == self.identity.id {
            return;
        }
        match self.sync.held_generation(dump.owner) {
            Some(g) if g == dump.generation => {}
            // About an older generation of a node we know: ignored for good.
            Some(g) if g > dump.generation => return,
            // Its owner is not a member here yet (its Hello may still be on its way): keep it.
            _ => return self.park_dump(dump),
        }
        let Some(owner) = self.owner_identity(dump.owner, dump.generation) else {
            return;
        };
        dump.entries.sort_by_key(|e| e.seq);
        for e in dump.entries {
            match self.sync.admit(dump.owner, dump.generation, &e) {
                Admit::New if e.verify(&owner, dump.generation) => {
                    self.sync
                        .apply_entry(dump.owner, dump.generation, e, &mut self.out);
                }
                Admit::New => {
                    self.stats.bad_signatures += 1;
                    return;
                }
                Admit::TooFar => self.stats.seq_refused += 1,
                Admit::OverCap => self.stats.over_cap += 1,
                Admit::Malformed => self.stats.malformed += 1,
                Admit::Stale | Admit::UnknownOwner => {}
            }
        }
    }

    /// `overlayctl revoke NODE_ID`: sign the revocation here if this node is an admitter, otherwise ask
    /// an admitter (signed request). Static peers are not members and cannot be revoked.
    pub fn revoke(&mut self, now: Instant, target: NodeId) -> Result<RevokeOutcome, ControlError> {
        self.check_not_left()?;
        if target == self.identity.id {
            return Err(ControlError::RevokeSelf);
        }
        if self.revocations.contains(target) {
            return Ok(RevokeOutcome::AlreadyRevoked);
        }
        if let Some(ca) = self.trust.ca_signer.clone() {
            let r = Revocation::issue(&ca, target).map_err(|e| ControlError::Encode(e.to_string()))?;
            self.apply_revocation(now, r)?;
            return Ok(RevokeOutcome::Revoked);
        }
        let admitter = {
            let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            let mut admitters: Vec<&NodeIdentity> = shared
                .members
                .values()
                .filter(|m| m.id != target && m.attestation().is_some_and(|a| a.admitter))
                .collect();
            admitters.sort_by_key(|m| m.id);
            admitters.first().map(|m| (m.id, m.addr))
        };
        let Some((admitter, addr)) = admitter else {
            return Err(ControlError::NoAdmitter);
        };
        let msg = messages::revoke_request_bytes(target, self.identity.id);
        let sig = self
            .trust
            .signer
            .sign(messages::DOMAIN_REVOKE_REQUEST, &msg)
            .map_err(|e| ControlError::Encode(e.to_string()))?;
        self.send_now(
            addr,
            &SyncMessage::RevokeRequest {
                target,
                requester: self.identity.id,
                sig,
            },
        )?;
        Ok(RevokeOutcome::Forwarded(admitter))
    }

    /// Enforce a CA-signed revocation (no-op if invalid or known): the node leaves foca's table as down,
    /// its MACs are withdrawn, it vanishes from `members`, and the revocation is disseminated (direct
    /// to every member, piggybacked, and by anti-entropy).
    fn apply_revocation(&mut self, now: Instant, r: Revocation) -> Result<(), ControlError> {
        if self.revocations.contains(r.node) {
            return Ok(());
        }
        if !self.revocations.insert_verified(r.clone(), &self.trust.ca_key) {
            self.stats.bad_signatures += 1;
            return Ok(());
        }
        let node = r.node;
        tracing::warn!(%node, "node revoked");
        self.verifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .revoke(node);
        self.out.push_back(Output::Revoked { node });
        if node == self.identity.id {
            tracing::error!("this node was revoked by the cluster; it stops gossiping (re-admit it with a new token and an empty state dir)");
            self.has_left = true;
            return Ok(());
        }
        let bytes = messages::encode_sync(&SyncMessage::Revocations {
            list: vec![r.clone()],
        })
        .map_err(|e| ControlError::Encode(e.to_string()))?;
        let victims: Vec<NodeIdentity> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.id().id == node)
            .map(|m| m.id().clone())
            .collect();
        let peers: Vec<SocketAddr> = self
            .foca
            .iter_members()
            .filter(|m| m.id().id != node)
            .map(|m| m.id().addr)
            .collect();
        self.revoked_addrs.extend(victims.iter().map(|v| v.addr));
        for to in peers {
            self.out.push_back(Output::Send {
                to,
                bytes: bytes.clone(),
            });
        }
        let item = messages::encode_broadcast(&Broadcast::Revoke(r))
            .map_err(|e| ControlError::Encode(e.to_string()))?;
        // Through the handler first (it skips nodes it already marks revoked), then mark.
        self.foca
            .add_broadcast(&item)
            .map_err(|e| ControlError::Swim(e.to_string()))?;
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .revoked
            .insert(node);
        // Our own item comes back through the inbox as a pending revocation: a no-op when applied.
        self.drain_inbox();
        self.swim(now, |foca, rt| {
            foca.apply_many(victims.into_iter().map(Member::down), true, rt)
        })?;
        self.reconcile_membership();
        Ok(())
    }

    /// Revocations received by piggyback, applied after foca returned.
    fn apply_pending_revocations(&mut self, now: Instant) -> Result<(), ControlError> {
        while let Some(r) = self.pending_revocations.pop() {
            self.apply_revocation(now, r)?;
        }
        Ok(())
    }
}

/// A node id as its `Display` writes it (16 lower-case hex digits), without the formatter:
/// [`ControlNode::members`] runs on every membership change and writes every member's id (through
/// `format!` that was the costliest part of a simulated cluster's formation).
fn hex_id(id: NodeId) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..16)
        .rev()
        .map(|i| HEX[((id.0 >> (i * 4)) & 0xf) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{encode_swim, WIRE_VERSION};

    use crate::attest::Attestation;
    use crate::identity::tests::signer;

    /// One CA and node keys for the tests of this module.
    struct Keys {
        ca: Arc<Signer>,
        nodes: Vec<Arc<Signer>>,
    }

    fn keys() -> Keys {
        Keys {
            ca: Arc::new(signer()),
            nodes: (0..4).map(|_| Arc::new(signer())).collect(),
        }
    }

    fn identity(k: &Keys, i: u8, generation: u64) -> NodeIdentity {
        let addr = SocketAddr::from(([127, 0, 0, i], 7948));
        let vtep = IpAddr::from([10, 0, 0, i]);
        let a = Attestation::issue(
            &k.ca,
            NodeId(i as u64),
            vec![vtep, addr.ip()],
            i == 1,
            k.nodes[i as usize].public_key(),
        )
        .unwrap();
        NodeIdentity::signed(addr, vtep, generation, a, &k.nodes[i as usize]).unwrap()
    }

    fn node_with(k: &Keys, i: u8) -> ControlNode {
        let trust = Trust {
            ca_key: k.ca.public_key(),
            signer: Arc::clone(&k.nodes[i as usize]),
            ca_signer: (i == 1).then(|| Arc::clone(&k.ca)),
            revoked: RevocationList::default(),
        };
        ControlNode::new(
            Instant::now(),
            identity(k, i, 1),
            trust,
            ControlConfig::default(),
            i as u64,
        )
    }

    fn node(i: u8) -> ControlNode {
        node_with(&keys(), i)
    }

    /// Garbage of every shape (random bytes, random bodies behind valid envelopes) is rejected or
    /// ignored without panicking and without changing membership or the FDB.
    #[test]
    fn hex_id_is_display() {
        for v in [0, 1, 0x1000, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(hex_id(NodeId(v)), NodeId(v).to_string());
        }
    }

    #[test]
    fn garbage_never_panics_or_changes_state() {
        let mut n = node(1);
        let now = Instant::now();
        let from = SocketAddr::from(([127, 0, 0, 2], 7948));
        let mut rng = XorShift::new(42);
        for round in 0..20_000 {
            let len = rng.below(300);
            let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            match round % 3 {
                0 => {}
                1 => b = encode_swim(&b),
                _ => {
                    b.insert(0, 1);
                    b.insert(0, WIRE_VERSION);
                }
            }
            let _ = n.handle_message(now, from, &b);
        }
        assert_eq!(n.active_members(), 0);
        assert!(n.installed_fdb().is_empty());
        while let Some(o) = n.poll_output() {
            assert!(
                !matches!(o, Output::FdbInstall { .. } | Output::MembersChanged(_)),
                "{o:?}"
            );
        }
        let s = n.stats();
        assert_eq!(s.messages_in, 20_000);
        assert!(s.decode_errors + s.swim_errors > 10_000, "{s:?}");
    }

    /// `overlayctl stats` shows `ControlStats` as serialized: the gossip budget's counters appear
    /// under the names docs/RELIABILITY.md gives.
    #[test]
    fn budget_counters_are_exported() {
        let v = serde_json::to_value(ControlStats::default()).unwrap();
        for k in [
            "gossip_bytes_sent",
            "sync_bytes_sent",
            "sync_messages_sent",
            "sync_deferred",
            "sync_dropped",
            "sync_pending",
            "advert_batches",
            "local_over_cap",
            "hellos_sent",
            "hellos_accepted",
            "downs_announced",
            "downs_applied",
            "parked_dropped",
        ] {
            assert_eq!(v.get(k), Some(&serde_json::json!(0)), "{k}");
        }
    }

    /// A member cannot announce another member's leave: not from another address, and not with a
    /// signature made by another key even from the victim's address.
    #[test]
    fn leave_on_behalf_of_another_is_rejected() {
        let k = keys();
        let mut n = node_with(&k, 1);
        let victim = identity(&k, 3, 1);
        let forged = LeaveNotice {
            identity: victim.clone(),
            sig: LeaveNotice::sign(&identity(&k, 2, 1), &k.nodes[2]).unwrap().sig,
        };
        let msg = messages::encode_sync(&SyncMessage::Leave {
            notice: forged.clone(),
        })
        .unwrap();
        n.handle_message(Instant::now(), SocketAddr::from(([127, 0, 0, 2], 7948)), &msg)
            .unwrap();
        assert_eq!(n.stats().rejected, 1);
        n.handle_message(Instant::now(), victim.addr, &msg).unwrap();
        assert_eq!(n.stats().bad_signatures, 1);
        assert!(n.members().iter().all(|m| m.state != MemberState::Left));
        // Relayed as a piggybacked broadcast: refused by the handler too.
        let pkt = crate::sim::swim_packet(
            &identity(&k, 2, 1),
            n.identity(),
            foca::Message::Gossip,
            &[],
            &[Broadcast::Leave(forged)],
        );
        assert!(n
            .handle_message(Instant::now(), SocketAddr::from(([127, 0, 0, 2], 7948)), &pkt)
            .is_err());
        assert!(n.members().iter().all(|m| m.state != MemberState::Left));
    }

    /// A forged identity (wrong key, wrong VTEP, unattested, other CA) never enters the member table;
    /// a valid one does, and its verification is cached.
    #[test]
    fn forged_identities_never_reach_foca() {
        let k = keys();
        let mut n = node_with(&k, 1);
        let me = n.identity().clone();
        let from = SocketAddr::from(([127, 0, 0, 2], 7948));
        let good = identity(&k, 2, 1);
        let mut wrong_vtep = good.clone();
        wrong_vtep.vtep = IpAddr::from([10, 0, 0, 3]);
        let mut wrong_gen = good.clone();
        wrong_gen.generation = 99;
        let mut unattested = good.clone();
        unattested.proof = None;
        let foreign = {
            let other = Keys {
                ca: Arc::new(signer()),
                nodes: k.nodes.clone(),
            };
            identity(&other, 2, 1)
        };
        for (i, bad) in [wrong_vtep, wrong_gen, unattested, foreign]
            .into_iter()
            .enumerate()
        {
            // As the sender, and as a membership update from a valid sender.
            let p = crate::sim::swim_packet(&bad, &me, foca::Message::Announce, &[], &[]);
            assert!(n.handle_message(Instant::now(), from, &p).is_err(), "{i} as src");
            let p = crate::sim::swim_packet(
                &identity(&k, 3, 1),
                &me,
                foca::Message::Gossip,
                &[Member::alive(bad)],
                &[],
            );
            assert!(
                n.handle_message(Instant::now(), from, &p).is_err(),
                "{i} as update"
            );
        }
        assert_eq!(n.active_members(), 0);
        let p = crate::sim::swim_packet(&good, &me, foca::Message::Gossip, &[], &[]);
        n.handle_message(Instant::now(), from, &p).unwrap();
        let before = n.stats().identity_verifications;
        for _ in 0..10 {
            n.handle_message(Instant::now(), from, &p).unwrap();
        }
        assert_eq!(n.active_members(), 1);
        let s = n.stats();
        assert_eq!(s.identities_refused, 8, "{s:?}");
        assert_eq!(
            s.identity_verifications, before,
            "repeated identities are cache hits"
        );
    }

    /// An admitter that founded the cluster and is alone grants at once; one that (re)started by
    /// joining waits until its grant table matched a peer's (it could otherwise reuse held blocks).
    #[test]
    fn restarted_admitter_grants_only_after_sync() {
        let k = keys();
        let now = Instant::now();
        let def =
            crate::NetworkDef::new("blue", 5, "10.1.0.0/24".parse().unwrap(), None, false, None).unwrap();
        let mut founder = node_with(&k, 1);
        founder.create_network(now, def.clone()).unwrap();
        assert_eq!(
            founder.request_block(now, "blue").unwrap(),
            BlockOutcome::Granted("10.1.0.0/26".parse().unwrap())
        );
        let mut restarted = node_with(&k, 1);
        restarted
            .join(now, SocketAddr::from(([127, 0, 0, 2], 7948)))
            .unwrap();
        restarted.create_network(now, def).unwrap();
        assert_eq!(
            restarted.request_block(now, "blue").unwrap(),
            BlockOutcome::Pending
        );
        assert!(restarted.grants().is_empty());
        // A non-admitter with no admitter known: pending too.
        let mut plain = node_with(&k, 2);
        plain
            .create_network(
                now,
                crate::NetworkDef::new("red", 6, "10.2.0.0/24".parse().unwrap(), None, false, None).unwrap(),
            )
            .unwrap();
        assert_eq!(plain.request_block(now, "red").unwrap(), BlockOutcome::Pending);
        assert!(matches!(
            plain.request_block(now, "nope"),
            Err(ControlError::Network(crate::NetworkError::NoSuchNetwork(_)))
        ));
    }

    /// Only an admitter acts on a revoke request, only from a member, only with the member's signature,
    /// and never against an admitter; the revocation it signs is enforced locally at once.
    #[test]
    fn revoke_requests_are_checked() {
        let k = keys();
        let mut admitter = node_with(&k, 1);
        let me = admitter.identity().clone();
        let requester = identity(&k, 2, 1);
        let now = Instant::now();
        // Node 2 becomes a member of node 1's view.
        let p = crate::sim::swim_packet(&requester, &me, foca::Message::Gossip, &[], &[]);
        admitter.handle_message(now, requester.addr, &p).unwrap();
        admitter.reconcile_membership();
        let req = |target: u64, key: &Signer, requester: NodeId| {
            let msg = messages::revoke_request_bytes(NodeId(target), requester);
            messages::encode_sync(&SyncMessage::RevokeRequest {
                target: NodeId(target),
                requester,
                sig: key.sign(messages::DOMAIN_REVOKE_REQUEST, &msg).unwrap(),
            })
            .unwrap()
        };
        // Signed by another key, or from another address: refused.
        admitter
            .handle_message(now, requester.addr, &req(3, &k.nodes[3], NodeId(2)))
            .unwrap();
        let other = SocketAddr::from(([127, 0, 0, 9], 7948));
        admitter
            .handle_message(now, other, &req(3, &k.nodes[2], NodeId(2)))
            .unwrap();
        // Against the admitter itself: refused.
        admitter
            .handle_message(now, requester.addr, &req(1, &k.nodes[2], NodeId(2)))
            .unwrap();
        assert_eq!(admitter.stats().revoked, 0);
        assert_eq!(admitter.stats().bad_signatures, 2);
        // Valid: revoked and enforced here.
        admitter
            .handle_message(now, requester.addr, &req(3, &k.nodes[2], NodeId(2)))
            .unwrap();
        assert!(admitter.revocations().contains(NodeId(3)));
        let revoked_out =
            std::iter::from_fn(|| admitter.poll_output()).any(|o| o == Output::Revoked { node: NodeId(3) });
        assert!(revoked_out);
        // A non-admitter cannot sign: it forwards to the admitter it knows of.
        let mut plain = node_with(&k, 2);
        assert!(matches!(
            plain.revoke(now, NodeId(3)),
            Err(ControlError::NoAdmitter)
        ));
        let p = crate::sim::swim_packet(&me, plain.identity(), foca::Message::Gossip, &[], &[]);
        plain.handle_message(now, me.addr, &p).unwrap();
        assert_eq!(
            plain.revoke(now, NodeId(3)).unwrap(),
            RevokeOutcome::Forwarded(NodeId(1))
        );
        assert!(matches!(
            plain.revoke(now, NodeId(2)),
            Err(ControlError::RevokeSelf)
        ));
    }

    /// A node declared down rejoins with a renewed identity; gossip about its old identity still spreading
    /// afterwards must not make it list itself twice (alive, and dead at its own address); nor is a peer's
    /// superseded identity listed next to the peer's renewed one. `peers` lists each node once, newest
    /// identity. (The CI flake of `tests/resilience/partition.rs`: host 2 listed itself alive and dead.)
    #[test]
    fn old_identities_are_not_listed_after_a_renewal() {
        let k = keys();
        let mut n = node_with(&k, 1);
        let now = Instant::now();
        let old = n.identity().clone();
        let peer = identity(&k, 2, 1);
        // The cluster declared this node down: it rejoins with a renewed identity (a relayed copy of the
        // death in the same packet is already about its past identity).
        let death = [Member::down(old.clone()), Member::down(old.clone())];
        let p = crate::sim::swim_packet(&peer, &old, foca::Message::Gossip, &death, &[]);
        n.handle_message(now, peer.addr, &p).unwrap();
        assert_eq!(n.stats().rejoins, 1);
        let me = n.identity().clone();
        assert_eq!((me.addr, me.renewal), (old.addr, 1));
        assert_eq!(n.members().len(), 2, "{:?}", n.members());
        // The old death is still being gossiped (by every member that relays it): foca takes it as a
        // stale update about a past identity of ours, as it does with news of this node's previous run.
        // And the peer renewed too; its old identity's death arrives after its renewed identity.
        let peer_renewed = foca::Identity::renew(&peer).unwrap();
        let previous_run = identity(&k, 1, 0);
        for updates in [
            vec![Member::down(old.clone())],
            vec![Member::alive(peer_renewed.clone())],
            vec![Member::down(peer.clone()), Member::down(old.clone())],
            vec![Member::alive(previous_run)],
        ] {
            let p = crate::sim::swim_packet(&peer_renewed, &me, foca::Message::Gossip, &updates, &[]);
            n.handle_message(now, peer.addr, &p).unwrap();
        }
        let rows = n.members();
        let listed = |addr: SocketAddr| -> Vec<(MemberState, u32)> {
            rows.iter()
                .filter(|m| m.addr == addr)
                .map(|m| (m.state, m.renewal))
                .collect()
        };
        assert_eq!(listed(me.addr), vec![(MemberState::Alive, 1)], "{rows:?}");
        assert_eq!(listed(peer.addr), vec![(MemberState::Alive, 1)], "{rows:?}");
        assert_eq!(rows.len(), 2, "{rows:?}");
        // foca keeps the old death (until `remove_down_after`): a later copy of it is stale, not a fresh
        // insert that foca would broadcast again (this node re-spreading its own old death).
        let held = |n: &ControlNode| {
            n.foca
                .iter_membership_state()
                .any(|m| m.id() == &old && m.state() == State::Down)
        };
        assert!(held(&n));
        let p = crate::sim::swim_packet(
            &peer_renewed,
            &me,
            foca::Message::Gossip,
            &[Member::down(old.clone())],
            &[],
        );
        n.handle_message(now, peer.addr, &p).unwrap();
        assert!(held(&n));
        assert_eq!(n.members().len(), 2, "{:?}", n.members());
    }

    /// Only this node's own past identities are hidden: another node id that foca holds as down at our
    /// address (a former holder of the address) is listed, dead.
    #[test]
    fn another_node_down_at_our_address_is_listed() {
        let k = keys();
        let mut n = node_with(&k, 1);
        let now = Instant::now();
        let me = n.identity().clone();
        let peer = identity(&k, 2, 1);
        // Node 3, attested for our address, with a newer generation than ours.
        let vtep = IpAddr::from([10, 0, 0, 3]);
        let a = Attestation::issue(
            &k.ca,
            NodeId(3),
            vec![vtep, me.addr.ip()],
            false,
            k.nodes[3].public_key(),
        )
        .unwrap();
        let stranger = NodeIdentity::signed(me.addr, vtep, 5, a, &k.nodes[3]).unwrap();
        let p = crate::sim::swim_packet(
            &peer,
            &me,
            foca::Message::Gossip,
            &[Member::down(stranger.clone())],
            &[],
        );
        n.handle_message(now, peer.addr, &p).unwrap();
        let rows = n.members();
        let at_ours: Vec<(String, MemberState)> = rows
            .iter()
            .filter(|m| m.addr == me.addr)
            .map(|m| (m.id.clone(), m.state))
            .collect();
        assert_eq!(
            at_ours,
            vec![
                (hex_id(me.id), MemberState::Alive),
                (hex_id(NodeId(3)), MemberState::Dead)
            ],
            "{rows:?}"
        );
    }
}
