//! Deterministic cluster simulator: N [`ControlNode`]s wired together in memory with a virtual clock.
//!
//! An event queue ordered by (virtual time, insertion order) delivers messages and timers; a seeded
//! xorshift decides latency jitter and loss, so a given seed always replays the same run. Nodes can be
//! killed (SIGKILL: they vanish, nothing more is delivered to or from them), restarted (new generation),
//! partitioned into groups and healed. Each node's data-plane FDB is modelled by applying its
//! FdbInstall/FdbRemove outputs to a map. Every node has a real credential: a P-256 key and a CA-signed
//! attestation (node 0 is the admitter and holds the CA key; [`SimConfig::admitters`] makes more), and a persisted revocation list that
//! survives restarts like the state dir does. Any node can also act as a rogue: [`Sim::inject`] delivers
//! arbitrary bytes from its address, and [`swim_packet`] builds SWIM packets with chosen identities,
//! updates and broadcasts. Must never: read the real clock for decisions, or use unseeded randomness
//! (keys are random, but no decision depends on their bytes).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use foca::{Codec, Header, PostcardCodec};
/// foca's packet types, for tests that build SWIM packets by hand (rogue members).
pub use foca::{Member, Message, State};

use crate::attest::{Attestation, Signer};
use crate::membership::{NodeId, NodeIdentity, XorShift};
use crate::messages;
use crate::node::{ControlConfig, ControlNode, MemberState, Trust};
use crate::revocation::RevocationList;
use crate::{IpNet, MacAddr, NetworkDef, Output, Timer, Vni};

/// The VNI [`Sim::set_macs`] advertises on (and that [`SimNode::fdb`] mirrors).
pub const SIM_VNI: u32 = 1;

/// [`SIM_VNI`] as a data-plane VNI.
pub fn sim_vni() -> Vni {
    vni(SIM_VNI)
}

/// A data-plane VNI for tests (panics if out of range).
pub fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap_or_else(|e| panic!("vni {v}: {e}"))
}

/// Network and protocol parameters of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub latency: Duration,
    /// Extra uniform random delay in [0, jitter).
    pub jitter: Duration,
    /// Probability in [0, 1] that a message is dropped.
    pub loss: f64,
    pub seed: u64,
    pub control: ControlConfig,
    /// Nodes 0..admitters are attested as admitters and hold the CA key.
    pub admitters: usize,
    /// Each node's uplink in bytes per second (0: unlimited). Everything a node sends queues on it
    /// in order (FIFO, like a NIC queue or a congested path): a message leaves once the ones before
    /// it have, after `len / uplink`. This is what makes unbudgeted sync traffic delay probes.
    pub uplink: u64,
    /// What opening a connection costs (a QUIC handshake on a loaded host): the first message
    /// between two running nodes, either way, opens their connection, and nothing passes between
    /// them before `connect` has elapsed; later messages use it. A restarted node's connections are
    /// gone. Zero (the default): no connection cost.
    pub connect: Duration,
    /// Keep a copy of every sync (non-SWIM) message each node sends, in [`SimNode::sync_sent`].
    pub record_sync: bool,
    /// Log every sync message's (time, length) in [`SimNode::sync_log`] (on by default; the scale
    /// scenario turns it off: at 1000 nodes the log alone would take gigabytes).
    pub log_sync: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency: Duration::from_millis(2),
            jitter: Duration::from_millis(3),
            loss: 0.0,
            seed: 1,
            control: ControlConfig::default(),
            admitters: 1,
            uplink: 0,
            connect: Duration::ZERO,
            record_sync: false,
            log_sync: true,
        }
    }
}

/// An entry of the event queue, ordered by (virtual time, insertion order) only; the event itself
/// waits in [`Sim::slots`] (a small heap entry keeps the heap operations cache-friendly).
#[derive(Debug)]
struct Queued {
    at: Instant,
    seq: u64,
    slot: u32,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
        instance: u64,
        timer: Timer,
    },
}

/// One simulated host.
#[derive(Debug)]
pub struct SimNode {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub vtep: IpAddr,
    pub generation: u64,
    /// None while killed.
    pub node: Option<ControlNode>,
    /// The data plane's control-origin FDB of [`SIM_VNI`] as driven by FdbInstall/FdbRemove.
    pub fdb: BTreeMap<MacAddr, IpAddr>,
    /// Every VNI's control entries: (VNI, MAC) → (VTEP, IPs).
    pub entries: BTreeMap<(Vni, MacAddr), (IpAddr, Vec<IpAddr>)>,
    /// Flood sets as reported by FloodSet (empty sets removed).
    pub flood: BTreeMap<Vni, Vec<IpAddr>>,
    /// Networks as reported by NetworkUpsert/NetworkRemoved.
    pub networks: BTreeMap<String, NetworkDef>,
    /// Blocks as reported by BlockGranted/BlockReleased.
    pub blocks: BTreeSet<(String, IpNet)>,
    /// MACs advertised on [`SIM_VNI`] (kept across restarts, like the bridge's contents).
    pub macs: Vec<MacAddr>,
    /// Entries on other VNIs / with IPs (kept across restarts); advertised together with `macs`.
    pub local: Vec<(Vni, MacAddr, Vec<IpAddr>)>,
    /// The node's own key and its CA attestation (VTEP and gossip address).
    pub signer: Arc<Signer>,
    pub attestation: Attestation,
    /// What the node's state dir would hold: the revocation list, kept across restarts.
    pub revoked: RevocationList,
    /// Bytes this node has handed to the network (all gossip: membership, adverts, anti-entropy).
    pub sent_bytes: u64,
    /// Sync (non-SWIM) messages sent.
    pub sync_messages: u64,
    /// With [`SimConfig::log_sync`]: every sync message sent, (virtual time since start, length).
    pub sync_log: Vec<(Duration, usize)>,
    /// With [`SimConfig::record_sync`]: the sync messages themselves, (virtual time, bytes).
    pub sync_sent: Vec<(Duration, Vec<u8>)>,
    /// Longest time a SWIM packet of this node waited behind other traffic on its uplink.
    pub max_swim_wait: Duration,
    /// When this node's uplink is free again.
    link_free_at: Instant,
    instance: u64,
    group: usize,
}

/// A fresh P-256 signer (test keys).
pub fn new_signer() -> Signer {
    let kp = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("keygen: {e}"));
    Signer::from_pkcs8(&kp.serialize_der()).unwrap_or_else(|e| panic!("key: {e}"))
}

/// A SWIM packet (with envelope) as foca would send it: header, membership updates, custom broadcasts.
pub fn swim_packet(
    src: &NodeIdentity,
    dst: &NodeIdentity,
    message: Message<NodeIdentity>,
    updates: &[Member<NodeIdentity>],
    broadcasts: &[messages::Broadcast],
) -> Vec<u8> {
    let mut buf = Vec::new();
    let header = Header {
        src: src.clone(),
        src_incarnation: 0,
        dst: dst.clone(),
        message,
    };
    let announce = matches!(header.message, Message::Announce);
    let _ = PostcardCodec.encode_header(&header, &mut buf);
    if announce {
        // foca's Announce is the header alone.
        return messages::encode_swim(&buf);
    }
    buf.extend_from_slice(&(updates.len() as u16).to_be_bytes());
    for m in updates {
        let _ = PostcardCodec.encode_member(m, &mut buf);
    }
    for b in broadcasts {
        let item = messages::encode_broadcast(b).unwrap_or_default();
        buf.extend_from_slice(&(item.len() as u16).to_be_bytes());
        buf.extend_from_slice(&item);
    }
    messages::encode_swim(&buf)
}

/// A death (or leave) some node reported: (observer index, subject node id, subject generation, state).
pub type DeathReport = (usize, NodeId, u64, MemberState);

/// The simulated cluster.
#[derive(Debug)]
pub struct Sim {
    start: Instant,
    now: Instant,
    queue: BinaryHeap<Reverse<Queued>>,
    /// Queued events by slot; freed slots are reused.
    slots: Vec<Option<Event>>,
    free: Vec<u32>,
    next_seq: u64,
    pub nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    rng: XorShift,
    pub cfg: SimConfig,
    /// Every dead/left state any node has ever reported, deduplicated.
    pub deaths: BTreeSet<DeathReport>,
    pub sent: u64,
    pub dropped: u64,
    /// Events processed (message deliveries and timers): the simulation's own work.
    pub events: u64,
    /// Gossip-budget (Pace) timers that fired, over all nodes.
    pub pace_timers: u64,
    /// Errors returned by nodes on inputs (malformed packets etc.); expected to stay empty.
    pub errors: Vec<String>,
    /// The cluster CA (node 0, the admitter, holds it).
    pub ca: Arc<Signer>,
    /// Open connections (with [`SimConfig::connect`]): (lower, higher) node index → when usable.
    conns: HashMap<(usize, usize), Instant>,
    /// Connections opened so far (with [`SimConfig::connect`]).
    pub connections: u64,
    /// Pairs of nodes that cannot reach each other (see [`Sim::cut`]).
    cut: BTreeSet<(usize, usize)>,
}

fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from((
        [10, 0, (i / 250) as u8, (i % 250 + 1) as u8],
        crate::DEFAULT_GOSSIP_PORT,
    ))
}

impl Sim {
    /// `n` nodes; node 0 starts the cluster, every other node joins it at t≈0.
    pub fn new(n: usize, cfg: SimConfig) -> Self {
        crate::attest::memo::enable();
        let start = Instant::now();
        let mut sim = Sim {
            start,
            now: start,
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
            nodes: Vec::with_capacity(n),
            by_addr: HashMap::new(),
            rng: XorShift::new(cfg.seed),
            cfg,
            deaths: BTreeSet::new(),
            sent: 0,
            dropped: 0,
            events: 0,
            pace_timers: 0,
            errors: Vec::new(),
            ca: Arc::new(new_signer()),
            conns: HashMap::new(),
            connections: 0,
            cut: BTreeSet::new(),
        };
        for i in 0..n {
            let addr = addr_of(i);
            let id = NodeId(0x1000 + i as u64);
            let vtep = IpAddr::from([192, 168, (i / 250) as u8, (i % 250 + 1) as u8]);
            let signer = Arc::new(new_signer());
            let attestation = Attestation::issue(
                &sim.ca,
                id,
                vec![vtep, addr.ip()],
                i < sim.cfg.admitters,
                signer.public_key(),
            )
            .unwrap_or_else(|e| panic!("attest: {e}"));
            sim.by_addr.insert(addr, i);
            sim.nodes.push(SimNode {
                id,
                addr,
                vtep,
                generation: 0,
                node: None,
                fdb: BTreeMap::new(),
                entries: BTreeMap::new(),
                flood: BTreeMap::new(),
                networks: BTreeMap::new(),
                blocks: BTreeSet::new(),
                macs: Vec::new(),
                local: Vec::new(),
                signer,
                attestation,
                revoked: RevocationList::default(),
                sent_bytes: 0,
                sync_messages: 0,
                sync_log: Vec::new(),
                sync_sent: Vec::new(),
                max_swim_wait: Duration::ZERO,
                link_free_at: start,
                instance: 0,
                group: 0,
            });
        }
        for i in 0..n {
            sim.boot(i);
        }
        sim
    }

    /// Virtual time since the simulation started.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    fn boot(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.generation += 1;
        n.instance += 1;
        n.fdb.clear();
        n.entries.clear();
        n.flood.clear();
        n.networks.clear();
        n.blocks.clear();
        let identity = self.identity_of(i);
        let n = &mut self.nodes[i];
        let trust = Trust {
            ca_key: self.ca.public_key(),
            signer: Arc::clone(&n.signer),
            ca_signer: n.attestation.admitter.then(|| Arc::clone(&self.ca)),
            revoked: n.revoked.clone(),
        };
        let seed = self.cfg.seed.wrapping_mul(1_000_003) ^ ((i as u64) << 20) ^ n.instance;
        n.node = Some(ControlNode::new(
            self.now,
            identity,
            trust,
            self.cfg.control.clone(),
            seed,
        ));
        self.drain(i);
        // Join through the first other running node.
        if let Some(j) = (0..self.nodes.len()).find(|&j| j != i && self.nodes[j].node.is_some()) {
            let to = self.nodes[j].addr;
            let now = self.now;
            self.with_node(i, |node| node.join(now, to));
        }
        if !self.nodes[i].macs.is_empty() || !self.nodes[i].local.is_empty() {
            self.push_local(i);
        }
    }

    /// Hand node `i`'s `macs` (on [`SIM_VNI`]) and `local` entries to its state machine.
    fn push_local(&mut self, i: usize) {
        let mut all: Vec<(Vni, MacAddr, Vec<IpAddr>)> = self.nodes[i]
            .macs
            .iter()
            .map(|m| (sim_vni(), *m, Vec::new()))
            .collect();
        all.extend(self.nodes[i].local.iter().cloned());
        let now = self.now;
        self.with_node(i, |n| n.set_local(now, &all));
    }

    /// Report node `i`'s entries on other VNIs / with IPs (replacing earlier ones; `macs` stay).
    pub fn set_local(&mut self, i: usize, entries: Vec<(Vni, MacAddr, Vec<IpAddr>)>) {
        self.nodes[i].local = entries;
        self.push_local(i);
    }

    /// Run `f` on node `i`'s state machine (if running) and process its outputs.
    pub fn on<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut ControlNode, Instant) -> Result<T, crate::ControlError>,
    ) -> Result<T, crate::ControlError> {
        let now = self.now;
        let r = match self.nodes[i].node.as_mut() {
            Some(n) => f(n, now),
            None => Err(crate::ControlError::Left),
        };
        self.drain(i);
        r
    }

    /// Node `i`'s signed identity for its current generation (renewal 0).
    pub fn identity_of(&self, i: usize) -> NodeIdentity {
        let n = &self.nodes[i];
        NodeIdentity::signed(n.addr, n.vtep, n.generation, n.attestation.clone(), &n.signer)
            .unwrap_or_else(|e| panic!("sign identity: {e}"))
    }

    /// `overlayctl revoke` on node `on`.
    pub fn revoke(&mut self, on: usize, target: NodeId) -> Result<crate::RevokeOutcome, crate::ControlError> {
        let now = self.now;
        let r = match self.nodes[on].node.as_mut() {
            Some(n) => n.revoke(now, target),
            None => Err(crate::ControlError::Left),
        };
        self.drain(on);
        r
    }

    fn with_node<F>(&mut self, i: usize, f: F)
    where
        F: FnOnce(&mut ControlNode) -> Result<(), crate::ControlError>,
    {
        if let Some(node) = self.nodes[i].node.as_mut() {
            if let Err(e) = f(node) {
                self.errors.push(format!("node {i}: {e}"));
            }
        }
        self.drain(i);
    }

    fn push(&mut self, at: Instant, ev: Event) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(ev);
                s
            }
            None => {
                self.slots.push(Some(ev));
                u32::try_from(self.slots.len() - 1).unwrap_or_else(|_| panic!("over 2^32 queued events"))
            }
        };
        self.queue.push(Reverse(Queued { at, seq, slot }));
    }

    fn drain(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].node.as_mut().and_then(|n| n.poll_output()) {
            match out {
                Output::Send { to, bytes } => {
                    self.sent += 1;
                    let elapsed = self.now - self.start;
                    let swim = messages::is_swim(&bytes);
                    let n = &mut self.nodes[i];
                    n.sent_bytes += bytes.len() as u64;
                    if !swim {
                        n.sync_messages += 1;
                        if self.cfg.log_sync {
                            n.sync_log.push((elapsed, bytes.len()));
                        }
                        if self.cfg.record_sync {
                            n.sync_sent.push((elapsed, bytes.clone()));
                        }
                    }
                    // The uplink: FIFO, `uplink` bytes per second.
                    let depart = if self.cfg.uplink > 0 {
                        let start = n.link_free_at.max(self.now);
                        let nanos = bytes.len() as u128 * 1_000_000_000 / self.cfg.uplink as u128;
                        n.link_free_at = start + Duration::from_nanos(nanos as u64);
                        if swim {
                            n.max_swim_wait = n.max_swim_wait.max(start - self.now);
                        }
                        n.link_free_at
                    } else {
                        self.now
                    };
                    let Some(&j) = self.by_addr.get(&to) else {
                        self.dropped += 1;
                        continue;
                    };
                    let pair = (i.min(j), i.max(j));
                    if self.nodes[j].group != self.nodes[i].group
                        || self.cut.contains(&pair)
                        || self.rng.unit() < self.cfg.loss
                    {
                        self.dropped += 1;
                        continue;
                    }
                    let depart = if self.cfg.connect.is_zero() {
                        depart
                    } else {
                        let ready = *self.conns.entry(pair).or_insert_with(|| {
                            self.connections += 1;
                            self.now + self.cfg.connect
                        });
                        depart.max(ready)
                    };
                    let jitter = self.cfg.jitter.mul_f64(self.rng.unit());
                    let at = depart + self.cfg.latency + jitter;
                    let from = self.nodes[i].addr;
                    self.push(at, Event::Deliver { to: j, from, bytes });
                }
                Output::ScheduleTimer { at, timer } => {
                    let instance = self.nodes[i].instance;
                    self.push(
                        at.max(self.now),
                        Event::Timer {
                            node: i,
                            instance,
                            timer,
                        },
                    );
                }
                Output::FdbInstall { vni, mac, vtep, ips } => {
                    if vni.get() == SIM_VNI {
                        self.nodes[i].fdb.insert(mac, vtep);
                    }
                    self.nodes[i].entries.insert((vni, mac), (vtep, ips));
                }
                Output::FdbRemove { vni, mac } => {
                    if vni.get() == SIM_VNI {
                        self.nodes[i].fdb.remove(&mac);
                    }
                    self.nodes[i].entries.remove(&(vni, mac));
                }
                Output::FloodSet { vni, vteps } => {
                    if vteps.is_empty() {
                        self.nodes[i].flood.remove(&vni);
                    } else {
                        self.nodes[i].flood.insert(vni, vteps);
                    }
                }
                Output::NetworkUpsert(d) => {
                    self.nodes[i].networks.insert(d.name.clone(), d);
                }
                Output::NetworkRemoved { name, .. } => {
                    self.nodes[i].networks.remove(&name);
                }
                Output::BlockGranted { network, block } => {
                    if !self.nodes[i].blocks.insert((network.clone(), block)) {
                        self.errors
                            .push(format!("node {i}: block {network} {block} granted twice"));
                    }
                }
                Output::BlockReleased { network, block } => {
                    if !self.nodes[i].blocks.remove(&(network.clone(), block)) {
                        self.errors
                            .push(format!("node {i}: block {network} {block} released but not held"));
                    }
                }
                Output::Revoked { .. } => {
                    // Persist, as the transport does in the state dir.
                    if let Some(node) = self.nodes[i].node.as_ref() {
                        self.nodes[i].revoked = node.revocations().clone();
                    }
                }
                Output::MembersChanged(rows) => {
                    for m in rows {
                        if matches!(m.state, MemberState::Dead | MemberState::Left) {
                            let id = u64::from_str_radix(&m.id, 16).map(NodeId).unwrap_or_default();
                            self.deaths.insert((i, id, m.generation, m.state));
                        }
                    }
                }
            }
        }
    }

    /// Process the next event; false if the queue is empty.
    pub fn step(&mut self) -> bool {
        let Some(Reverse(Queued { at, slot, .. })) = self.queue.pop() else {
            return false;
        };
        self.free.push(slot);
        self.events += 1;
        let Some(ev) = self.slots[slot as usize].take() else {
            return true;
        };
        self.now = at;
        match ev {
            Event::Deliver { to, from, bytes } => {
                // A partition raised while the message was in flight also cuts it.
                let from_at = self.by_addr.get(&from).copied();
                let from_group = from_at.map(|f| self.nodes[f].group);
                let cut = from_at.is_some_and(|f| self.cut.contains(&(f.min(to), f.max(to))));
                if from_group != Some(self.nodes[to].group) || cut {
                    self.dropped += 1;
                    return true;
                }
                let now = self.now;
                self.with_node(to, |node| node.handle_message(now, from, &bytes));
            }
            Event::Timer {
                node,
                instance,
                timer,
            } => {
                if matches!(timer.0, crate::TimerKind::Pace) {
                    self.pace_timers += 1;
                }
                if self.nodes[node].instance == instance {
                    let now = self.now;
                    self.with_node(node, |n| n.handle_timer(now, timer));
                }
            }
        }
        true
    }

    /// Advance virtual time by `d`, processing every event due.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some(Reverse(q)) = self.queue.peek() {
            if q.at > until {
                break;
            }
            self.step();
        }
        self.now = until;
    }

    /// Run until `pred` holds (checked every `tick` of virtual time) or `limit` passes. Returns the
    /// virtual time it took, or None on timeout.
    pub fn run_until<F>(&mut self, limit: Duration, tick: Duration, mut pred: F) -> Option<Duration>
    where
        F: FnMut(&Sim) -> bool,
    {
        let t0 = self.now;
        loop {
            if pred(self) {
                return Some(self.now - t0);
            }
            if self.now - t0 >= limit {
                return None;
            }
            self.run_for(tick);
        }
    }

    /// SIGKILL: the node disappears; in-flight messages to it are lost, it sends nothing more.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].node = None;
        self.nodes[i].instance += 1;
        self.conns.retain(|(a, b), _| *a != i && *b != i);
    }

    /// Nodes `i` and `j` can no longer reach each other (both ways), whatever their groups.
    pub fn cut(&mut self, i: usize, j: usize) {
        self.cut.insert((i.min(j), i.max(j)));
    }

    /// Start a killed (or running) node again: a new generation that joins through another member.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.boot(i);
    }

    /// SIGTERM: graceful leave, then the process is gone.
    pub fn terminate(&mut self, i: usize) {
        let now = self.now;
        self.with_node(i, |n| n.leave(now));
        self.nodes[i].node = None;
    }

    /// Report the MACs behind node `i`'s bridge (on [`SIM_VNI`], no IPs; `local` entries stay).
    pub fn set_macs(&mut self, i: usize, macs: Vec<MacAddr>) {
        self.nodes[i].macs = macs;
        self.push_local(i);
    }

    /// Split the cluster: `groups[k]` lists the node indices that can talk to each other.
    /// Nodes not listed stay in group 0.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        for (g, members) in groups.iter().enumerate() {
            for &i in members {
                self.nodes[i].group = g;
            }
        }
    }

    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.group = 0;
        }
    }

    /// Deliver raw `bytes` to node `to` as if node `from` had sent them (for stale/forged message tests).
    pub fn inject(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let at = self.now + self.cfg.latency;
        let from = self.nodes[from].addr;
        self.push(at, Event::Deliver { to, from, bytes });
    }

    pub fn set_loss(&mut self, loss: f64) {
        self.cfg.loss = loss;
    }

    pub fn running(&self) -> impl Iterator<Item = (usize, &ControlNode)> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.node.as_ref().map(|c| (i, c)))
    }

    /// Every running node sees every other running node as alive, with the running generation.
    pub fn membership_converged(&self) -> bool {
        let live: BTreeMap<String, u64> = self
            .nodes
            .iter()
            .filter(|n| n.node.is_some())
            .map(|n| (n.id.to_string(), n.generation))
            .collect();
        self.running().all(|(_, c)| {
            // A necessary condition first, without building the member list (that formats every id:
            // O(N²) per check at N nodes, and the scale scenario checks every 5 ms): the alive
            // members besides itself are among foca's active ones.
            if 1 + c.active_members() < live.len() {
                return false;
            }
            let alive: BTreeMap<String, u64> = c
                .members()
                .into_iter()
                .filter(|m| m.state == MemberState::Alive)
                .map(|m| (m.id, m.generation))
                .collect();
            alive == live
        })
    }

    /// Every running node's data-plane FDB holds exactly the MACs of the other running nodes, each
    /// pointing at its owner's VTEP (assuming every MAC has exactly one owner).
    pub fn fdb_converged(&self) -> bool {
        let mut owner: BTreeMap<MacAddr, (usize, IpAddr)> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.node.is_some() {
                for m in &n.macs {
                    owner.insert(*m, (i, n.vtep));
                }
            }
        }
        self.running().all(|(i, _)| {
            let want: BTreeMap<MacAddr, IpAddr> = owner
                .iter()
                .filter(|(_, (o, _))| *o != i)
                .map(|(m, (_, v))| (*m, *v))
                .collect();
            self.nodes[i].fdb == want
        })
    }

    /// All running nodes report the same FDB digest.
    pub fn digests_equal(&self) -> bool {
        let mut it = self.running().map(|(_, c)| c.fdb_digest());
        match it.next() {
            Some(first) => it.all(|d| d == first),
            None => true,
        }
    }
}

/// A locally administered unicast MAC for node `i`, entry `k`.
pub fn mac(i: usize, k: u8) -> MacAddr {
    MacAddr([0x02, 0, (i >> 8) as u8, i as u8, 0, k])
}

mod scale;
pub use scale::{scale_run, ScaleReport};
