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
//!
//! Layout: this file holds the cluster, its nodes and their lifecycle (boot, kill, restart, terminate);
//! `queue` the event queue and virtual clock, `network` the simulated links and the faults raised on
//! them, `outputs` what a node's outputs do, `checks` the convergence predicates, `fixtures` test keys,
//! addresses, MACs and hand-built SWIM packets, `scale` the scale scenario.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// foca's packet types, for tests that build SWIM packets by hand (rogue members).
pub use foca::{Member, Message, State};

use crate::attest::{Attestation, Signer};
use crate::membership::{NodeId, NodeIdentity, XorShift};
use crate::node::{ControlConfig, ControlNode, MemberState, Trust};
use crate::revocation::RevocationList;
use crate::{IpNet, MacAddr, NetworkDef, Vni};

mod checks;
mod fixtures;
mod network;
mod outputs;
mod queue;
mod scale;
use fixtures::addr_of;
pub use fixtures::{mac, new_signer, sim_vni, swim_packet, vni, SIM_VNI};
use queue::{Event, Queued};
pub use scale::{scale_run, ScaleReport};

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
    /// With [`SimConfig::record_sync`]: the sync messages themselves, (virtual time, destination,
    /// bytes, whether it left through the node's gossip budget or beside it).
    pub sync_sent: Vec<(Duration, SocketAddr, Vec<u8>, bool)>,
    /// Longest time a SWIM packet of this node waited behind other traffic on its uplink.
    pub max_swim_wait: Duration,
    /// When this node's uplink is free again.
    link_free_at: Instant,
    instance: u64,
    group: usize,
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

    /// SIGKILL: the node disappears; in-flight messages to it are lost, it sends nothing more.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].node = None;
        self.nodes[i].instance += 1;
        self.conns.retain(|(a, b), _| *a != i && *b != i);
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
}
