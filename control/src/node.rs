//! [`ControlNode`]: the sans-IO control-plane state machine the daemon (or the simulator) drives.
//!
//! It composes foca (SWIM membership and failure detection; FDB adverts ride on its piggybacked custom
//! broadcasts) with [`FdbSync`] (per-owner MAC tables and their resolution) and a periodic push-pull
//! anti-entropy exchange that repairs whatever gossip lost (healed partitions, loss, late joiners).
//!
//! Inputs carry `now`; outputs are queued and drained with [`ControlNode::poll_output`]. Must never: read
//! a clock, sleep, touch a socket, or panic on anything received.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foca::{Foca, Member, OwnedNotification, PostcardCodec, State};
use serde::Serialize;

use crate::membership::{BroadcastShared, FdbBroadcasts, NodeId, NodeIdentity, Rt, XorShift};
use crate::messages::{self, Broadcast, FdbAdvert, Packet, SyncMessage};
use crate::sync::FdbSync;
use crate::{ControlError, MacAddr, Output, PeerAddr, Timer, TimerKind};

/// Timings. The defaults withdraw a SIGKILLed node everywhere within 3 s on a LAN and survive 20 %
/// message loss without false deaths. Worst case detection ≈ wait until some member probes the victim
/// (each of N members probes one per period, so usually ≤ 2 periods) + one probe period + suspicion +
/// a few gossip rounds ≈ 0.5 + 0.25 + 1.2 + 0.3 s. Chosen by `tests/sim.rs::survey_timings` over 40
/// seeds × 32 nodes: worst withdrawal 2.5 s virtual, 0 false deaths under 20 % loss. Under loss the
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
    /// How often and to how many members foca gossips (this carries FDB adverts and suspicions).
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
    /// foca's packet budget; fits a QUIC datagram on a 1280-byte path.
    pub max_packet_size: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            probe_period: Duration::from_millis(250),
            probe_rtt: Duration::from_millis(100),
            num_indirect_probes: 8,
            suspect_to_down_after: Duration::from_millis(1200),
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            max_transmissions: 15,
            anti_entropy_interval: Duration::from_secs(1),
            announce_interval: Duration::from_secs(5),
            announce_down_interval: Duration::from_secs(3),
            max_packet_size: 1200,
        }
    }
}

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
    pub anti_entropy_rounds: u64,
    pub fdb_installs: u64,
    pub fdb_removes: u64,
}

/// Keeps one States message well under the transport's per-message limit (~20 bytes per entry).
const MAX_ENTRIES_PER_STATES: usize = 4096;

/// Bound on adverts parked because their owner is not (yet) a known member; anti-entropy repairs the rest.
const MAX_PENDING: usize = 4096;

type SwimCore = Foca<NodeIdentity, PostcardCodec, XorShift, FdbBroadcasts>;

/// The control-plane state machine of one node.
pub struct ControlNode {
    identity: NodeIdentity,
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
    /// Addresses given to `join`, re-announced to while we know no member.
    seeds: Vec<SocketAddr>,
    has_left: bool,
    stats: ControlStats,
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
    pub fn new(now: Instant, identity: NodeIdentity, config: ControlConfig, seed: u64) -> Self {
        let shared = Arc::new(Mutex::new(BroadcastShared::default()));
        let handler = FdbBroadcasts {
            shared: Arc::clone(&shared),
        };
        let foca = Foca::with_custom_broadcast(
            identity.clone(),
            config.to_foca(),
            XorShift::new(seed ^ 0x5157_494d),
            PostcardCodec,
            handler,
        );
        let sync = FdbSync::new(identity.id, identity.generation, identity.vtep);
        let mut node = ControlNode {
            identity,
            foca,
            shared,
            sync,
            rng: XorShift::new(seed),
            out: VecDeque::new(),
            notes: Vec::new(),
            left: HashMap::new(),
            pending: Vec::new(),
            seeds: Vec::new(),
            has_left: false,
            stats: ControlStats::default(),
            config,
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
        let out = self.out.pop_front();
        match out {
            Some(Output::FdbInstall { .. }) => self.stats.fdb_installs += 1,
            Some(Output::FdbRemove { .. }) => self.stats.fdb_removes += 1,
            _ => {}
        }
        out
    }

    /// Counters since start.
    pub fn stats(&self) -> ControlStats {
        self.stats
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
        self.swim(now, |foca, rt| foca.announce(dst, rt))
    }

    /// Graceful leave (SIGTERM): tell every member directly, then let foca gossip our departure.
    /// After this the node only drains; restart the daemon to rejoin.
    pub fn leave(&mut self, now: Instant) -> Result<(), ControlError> {
        self.check_not_left()?;
        let msg = SyncMessage::Leave {
            identity: self.identity.clone(),
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
        let notice = messages::encode_broadcast(&Broadcast::Leave(self.identity.clone()))
            .map_err(|e| ControlError::Encode(e.to_string()))?;
        self.foca
            .add_broadcast(&notice)
            .map_err(|e| ControlError::Swim(e.to_string()))?;
        self.drain_inbox();
        let r = self.swim(now, |foca, rt| foca.leave_cluster(rt));
        self.has_left = true;
        r
    }

    /// The MACs currently behind this node's bridge (the full set, not a delta). Differences from the
    /// previous call become adverts (adds and withdrawals) with increasing sequence numbers.
    pub fn set_local_macs(&mut self, now: Instant, macs: &[MacAddr]) -> Result<(), ControlError> {
        self.check_not_left()?;
        let want: BTreeSet<MacAddr> = macs.iter().copied().filter(|m| m.is_learnable()).collect();
        let have: BTreeSet<MacAddr> = self.sync.local_macs().collect();
        let changes: Vec<(MacAddr, bool)> = want
            .difference(&have)
            .map(|m| (*m, true))
            .chain(have.difference(&want).map(|m| (*m, false)))
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        for (mac, present) in changes {
            let Some(advert) = self.sync.local_change(mac, present) else {
                continue;
            };
            self.sync.refresh(mac, &mut self.out);
            let data = messages::encode_broadcast(&Broadcast::Fdb(advert))
                .map_err(|e| ControlError::Encode(e.to_string()))?;
            self.foca
                .add_broadcast(&data)
                .map_err(|e| ControlError::Swim(e.to_string()))?;
        }
        // Our own adverts went through the handler too; nothing to apply, just clear them.
        self.drain_inbox();
        // Push now instead of waiting for the next gossip tick.
        self.swim(now, |foca, rt| foca.broadcast(rt))
    }

    /// A datagram/stream payload received from `from`'s gossip endpoint.
    pub fn handle_message(&mut self, now: Instant, from: PeerAddr, bytes: &[u8]) -> Result<(), ControlError> {
        if self.has_left {
            return Ok(());
        }
        self.stats.messages_in += 1;
        let packet = messages::decode(bytes).inspect_err(|_| self.stats.decode_errors += 1)?;
        match packet {
            Packet::Swim(body) => {
                let r = self.swim(now, |foca, rt| foca.handle_data(body, rt));
                if r.is_err() {
                    self.stats.swim_errors += 1;
                }
                r
            }
            Packet::Sync(SyncMessage::Digest { reply, owners }) => {
                // Several States messages of bounded size rather than one unbounded one.
                let mut batch = Vec::new();
                let mut entries = 0;
                for dump in self.sync.dumps_for(&owners) {
                    entries += dump.entries.len() + 1;
                    batch.push(dump);
                    if entries >= MAX_ENTRIES_PER_STATES {
                        self.send_sync(
                            from,
                            &SyncMessage::States {
                                owners: std::mem::take(&mut batch),
                            },
                        )?;
                        entries = 0;
                    }
                }
                if !batch.is_empty() {
                    self.send_sync(from, &SyncMessage::States { owners: batch })?;
                }
                if !reply {
                    self.send_sync(
                        from,
                        &SyncMessage::Digest {
                            reply: true,
                            owners: self.sync.digest(),
                        },
                    )?;
                }
                Ok(())
            }
            Packet::Sync(SyncMessage::States { owners }) => {
                for dump in &owners {
                    self.sync.merge_dump(dump, &mut self.out);
                }
                Ok(())
            }
            Packet::Sync(SyncMessage::Leave { identity }) => {
                // Only a node may announce its own leave (the transport authenticates `from`).
                if identity.addr == self.identity.addr || identity.addr != from {
                    self.stats.rejected += 1;
                    return Ok(());
                }
                self.left.insert(identity.addr, identity.clone());
                self.swim(now, |foca, rt| {
                    foca.apply_many(std::iter::once(Member::down(identity)), true, rt)
                })?;
                self.out.push_back(Output::MembersChanged);
                Ok(())
            }
        }
    }

    /// A timer previously requested through [`Output::ScheduleTimer`] is due.
    pub fn handle_timer(&mut self, now: Instant, timer: Timer) -> Result<(), ControlError> {
        if self.has_left {
            return Ok(());
        }
        match timer.0 {
            TimerKind::Swim(t) => self.swim(now, |foca, rt| foca.handle_timer(t, rt)),
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
                self.send_sync(
                    to,
                    &SyncMessage::Digest {
                        reply: false,
                        owners: self.sync.digest(),
                    },
                )
            }
        }
    }

    /// Every member this node knows, itself included.
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut v = vec![MemberInfo {
            id: self.identity.id.to_string(),
            addr: self.identity.addr,
            vtep: self.identity.vtep,
            state: if self.has_left {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            generation: self.identity.generation,
        }];
        for m in self.foca.iter_membership_state() {
            let id = m.id();
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
                id: id.id.to_string(),
                addr: id.addr,
                vtep: id.vtep,
                state,
                generation: id.generation,
            });
        }
        v
    }

    /// Number of active (alive or suspect) members besides this node.
    pub fn active_members(&self) -> usize {
        self.foca.num_members()
    }

    /// Digest over all owner tables held; equal on nodes with identical FDB state.
    pub fn fdb_digest(&self) -> u64 {
        self.sync.fdb_digest()
    }

    /// MAC → winning owner, for every MAC with a live claim (own MACs included).
    pub fn resolved_fdb(&self) -> BTreeMap<MacAddr, NodeId> {
        self.sync.resolved()
    }

    /// Remote entries this node has told the data plane to install.
    pub fn installed_fdb(&self) -> &BTreeMap<MacAddr, IpAddr> {
        self.sync.installed()
    }

    fn check_not_left(&self) -> Result<(), ControlError> {
        if self.has_left {
            Err(ControlError::Left)
        } else {
            Ok(())
        }
    }

    fn send_sync(&mut self, to: SocketAddr, msg: &SyncMessage) -> Result<(), ControlError> {
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
                    // Push-pull straight away: a new member (or a restarted one) gets the FDB in one RTT.
                    let digest = SyncMessage::Digest {
                        reply: false,
                        owners: self.sync.digest(),
                    };
                    self.send_sync(id.addr, &digest)?;
                }
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(identity = ?id, "declared down by the cluster; rejoined with a renewed identity");
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

    /// Align the FDB owners with foca's active members (newest generation per node id).
    fn reconcile_membership(&mut self) {
        let mut eligible: BTreeMap<NodeId, (u64, IpAddr)> = BTreeMap::new();
        for m in self.foca.iter_membership_state() {
            if matches!(m.state(), State::Down) {
                continue;
            }
            let id = m.id();
            let e = eligible.entry(id.id).or_insert((id.generation, id.vtep));
            if id.generation > e.0 {
                *e = (id.generation, id.vtep);
            }
        }
        eligible.remove(&self.identity.id);
        self.sync.set_eligible(&eligible, &mut self.out);
        self.out.push_back(Output::MembersChanged);
        // Adverts that arrived before their owner became known.
        let pending = std::mem::take(&mut self.pending);
        for a in pending {
            self.apply_advert(a);
        }
    }

    fn drain_inbox(&mut self) {
        let inbox = {
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut shared.inbox)
        };
        for item in inbox {
            match item {
                Broadcast::Fdb(a) => self.apply_advert(a),
                // Label only (see `Broadcast::Leave`): the authenticated direct notice or SWIM takes it down.
                Broadcast::Leave(id) if id.addr != self.identity.addr => {
                    self.left.insert(id.addr, id);
                    self.out.push_back(Output::MembersChanged);
                }
                Broadcast::Leave(_) => {}
            }
        }
    }

    fn apply_advert(&mut self, a: FdbAdvert) {
        if a.owner == self.identity.id {
            return;
        }
        match self.sync.held_generation(a.owner) {
            Some(g) if g == a.generation => {
                self.sync.apply(&a, &mut self.out);
            }
            // About an older generation of a node we already know: ignored for good.
            Some(g) if g > a.generation => {}
            _ if self.pending.len() < MAX_PENDING => self.pending.push(a),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{encode_swim, WIRE_VERSION};

    fn node(i: u8) -> ControlNode {
        let id = NodeIdentity {
            id: NodeId(i as u64),
            addr: SocketAddr::from(([127, 0, 0, i], 7948)),
            vtep: IpAddr::from([10, 0, 0, i]),
            generation: 1,
            renewal: 0,
        };
        ControlNode::new(Instant::now(), id, ControlConfig::default(), i as u64)
    }

    /// Garbage of every shape (random bytes, random bodies behind valid envelopes) is rejected or
    /// ignored without panicking and without changing membership or the FDB.
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
                !matches!(o, Output::FdbInstall { .. } | Output::MembersChanged),
                "{o:?}"
            );
        }
        let s = n.stats();
        assert_eq!(s.messages_in, 20_000);
        assert!(s.decode_errors + s.swim_errors > 10_000, "{s:?}");
    }

    /// A member cannot announce another member's leave.
    #[test]
    fn leave_on_behalf_of_another_is_rejected() {
        let mut n = node(1);
        let victim = node(3).identity().clone();
        let msg = messages::encode_sync(&SyncMessage::Leave { identity: victim }).unwrap();
        n.handle_message(Instant::now(), SocketAddr::from(([127, 0, 0, 2], 7948)), &msg)
            .unwrap();
        assert_eq!(n.stats().rejected, 1);
        assert!(n.members().iter().all(|m| m.state != MemberState::Left));
    }
}
