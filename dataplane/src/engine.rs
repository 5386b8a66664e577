//! The sans-IO forwarding engine: a frame or datagram plus `now` in, a verdict out. It never touches a socket
//! or a clock; the worker (or a test, or the simulator) does the I/O. One `Engine` per worker; all shared state
//! (FDB, peer set) sits behind `Arc`s, so several workers forward for one network concurrently.
//!
//! Semantics follow Linux vxlan + bridge:
//! - TAP → underlay: known unicast goes to the owning VTEP; broadcast, multicast and unknown unicast are
//!   head-end replicated to every peer VTEP; the source MAC is recorded as living behind our bridge (up to
//!   `--max-local-macs`, see [`crate::fdb`]). Broadcast and multicast are rate-limited per source MAC
//!   (`--bum-pps`, [`bum`]), drops counted as `bum_rate_limited`. Frames from the bridge's own MAC are dropped
//!   (`bridge_mac`) before anything is learned from them; ARP requests and neighbour solicitations are
//!   answered from the network's neighbour table when the binding is known ([`suppress`], [`TxVerdict`]).
//! - underlay → TAP: RFC 7348 validation, the outer source must be a member (cluster mode) or a configured
//!   peer (static mode, unless `learn_any_source`), a datagram whose inner source MAC lives behind our own
//!   bridge is dropped (`spoofed_src`) before it can reach the bridge and steal that MAC from its container,
//!   then the inner source MAC is learned against the outer source address. A datagram is only ever delivered to the TAP, never re-sent to another VTEP (split horizon: with
//!   full-mesh head-end replication every VTEP already got its own copy).

pub mod bum;
pub mod suppress;
pub mod too_big;

use crate::activity::PeerActivity;
use crate::fdb::{Fdb, Learn, Origin};
use crate::network::{Network, NetworkTable};
use crate::stats::{Counters, DropReason};
use crate::wire::ethernet::{ETHERTYPE_QINQ, ETHERTYPE_VLAN};
use crate::wire::probe::ProbeRepr;
use crate::wire::MacAddr;
use crate::wire::{vxlan, EthernetFrame, Vni, VxlanPacket, ETHERNET_HEADER_LEN, VXLAN_HEADER_LEN};
use bum::BumLimiter;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Static configuration of an engine (all networks alike).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The network of a single-network engine ([`Engine::new`]); unused by [`Engine::serving`].
    pub vni: Vni,
    /// Destination UDP port on peer VTEPs.
    pub port: u16,
    /// Our own VTEP address.
    pub local: IpAddr,
    /// Accept datagrams only from addresses in the peer set: cluster members, or the static `--peer`s. Off
    /// only for `--learn-any-source` (kernel-style flood-and-learn from any source).
    pub require_member: bool,
    /// Accept 802.1Q-tagged inner frames (RFC 7348 §6.1 says discard unless configured).
    pub allow_vlan: bool,
    /// Broadcast/multicast frames per second per source MAC from the TAP (`--bum-pps`); 0 = unlimited.
    pub bum_pps: u32,
}

impl EngineConfig {
    pub fn new(vni: Vni, local: IpAddr) -> Self {
        EngineConfig {
            vni,
            port: vxlan::VXLAN_PORT,
            local,
            require_member: true,
            allow_vlan: false,
            bum_pps: bum::DEFAULT_BUM_PPS,
        }
    }
}

/// The remote VTEPs of a network: static peers and/or alive cluster members. Swapped as a whole; engines notice
/// through a version counter (one relaxed load per frame) and refresh their private copy.
#[derive(Debug, Default)]
pub struct PeerSet {
    list: RwLock<Arc<[IpAddr]>>,
    version: AtomicU64,
}

impl PeerSet {
    pub fn new(peers: impl IntoIterator<Item = IpAddr>) -> Self {
        let s = PeerSet::default();
        s.set(peers);
        s
    }
    /// Replace the set (sorted, deduplicated).
    pub fn set(&self, peers: impl IntoIterator<Item = IpAddr>) {
        let mut v: Vec<IpAddr> = peers.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        if let Ok(mut l) = self.list.write() {
            *l = v.into();
        }
        self.version.fetch_add(1, Ordering::Release);
    }
    pub fn snapshot(&self) -> Arc<[IpAddr]> {
        match self.list.read() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

/// Where the engine wants a frame from the TAP sent. Caller-owned and reused: `dests` keeps its capacity and
/// `reply` is allocated once with it, so the TX path allocates nothing per frame.
#[derive(Debug)]
pub struct TxAction {
    /// Hash of the inner flow ([`crate::flow::flow_hash`]): picks the outer UDP source port.
    pub flow_hash: u64,
    /// Destination VTEPs: one for known unicast, every peer of the network's flood set for flooding.
    pub dests: Vec<SocketAddr>,
    /// An ARP reply / neighbour advertisement to write back into the TAP: `reply[..n]` for
    /// [`TxVerdict::Reply`]`(n)`.
    pub reply: [u8; suppress::REPLY_BUF_LEN],
}

impl Default for TxAction {
    fn default() -> Self {
        TxAction {
            flow_hash: 0,
            dests: Vec::new(),
            reply: [0; suppress::REPLY_BUF_LEN],
        }
    }
}

impl TxAction {
    /// The reply of a [`TxVerdict::Reply`]`(n)`.
    pub fn reply(&self, n: usize) -> &[u8] {
        self.reply.get(..n).unwrap_or(&[])
    }
}

/// What to do with a frame from the TAP that is not dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxVerdict {
    /// Send it to [`TxAction::dests`] (prepend [`Engine::header_of`]).
    Send,
    /// Do not send it; write [`TxAction::reply`]`(n)` into the same network's TAP: an answer to an ARP request
    /// or neighbour solicitation for another host's container (counted as `arp_suppressed`).
    Reply(usize),
    /// Do not send it, and it is no drop: a request the local bridge answers (the gateway, a container on our
    /// own bridge), already counted as `arp_suppressed`.
    Consumed,
}

/// Which loop an engine serves: picks the network's counters ([`Network::tx`] or [`Network::rx`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Tx,
    Rx,
}

/// A datagram accepted for network `net` (an index into [`Engine::networks`]): `frame` is the range of the
/// datagram holding the inner Ethernet frame, to be written to that network's TAP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub net: usize,
    pub frame: Range<usize>,
}

/// A dropped datagram, with the network it was for when the VNI named one we serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxDrop {
    pub net: Option<usize>,
    pub reason: DropReason,
}

/// The engine's private state of one network, rebuilt when the table changes.
#[derive(Debug)]
struct Slot {
    net: Arc<Network>,
    header: [u8; VXLAN_HEADER_LEN],
    flood_version: u64,
    flood: Vec<SocketAddr>,
}

#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    side: Side,
    /// The worker this engine serves: picks its counters in each network ([`Network::tx`]/[`Network::rx`])
    /// and, for the loops, its TAP queue ([`Network::queue_of`]).
    worker: usize,
    table: Arc<NetworkTable>,
    table_version: u64,
    nets: Arc<[Arc<Network>]>,
    slots: Vec<Slot>,
    /// Who may send us datagrams (cluster members or static peers), one set for all networks.
    members_set: Arc<PeerSet>,
    seen_version: u64,
    members: Arc<[IpAddr]>,
    /// Last datagram per static peer (`overlayctl peers`), if tracked.
    activity: Option<Arc<PeerActivity>>,
}

impl Engine {
    /// An engine for one network (`cfg.vni`) whose flood set is also the member set, counting into
    /// `counters` (both sides). Tests, benches and the simulator use it; the daemon uses [`Engine::serving`].
    pub fn new(cfg: EngineConfig, fdb: Arc<Fdb>, peers: Arc<PeerSet>, counters: Arc<Counters>) -> Self {
        let mut net = Network::new("default", cfg.vni, fdb, peers.clone());
        net.tx = crate::network::WorkerCounters::shared(counters.clone());
        net.rx = crate::network::WorkerCounters::shared(counters);
        let table = Arc::new(NetworkTable::default());
        // A fresh table has no name or VNI to collide with.
        let _ = table.insert(Arc::new(net));
        Engine::serving(cfg, Side::Tx, table, peers)
    }

    /// An engine for every network of `table` (`cfg.vni` is unused), accepting datagrams from `members`.
    pub fn serving(cfg: EngineConfig, side: Side, table: Arc<NetworkTable>, members: Arc<PeerSet>) -> Self {
        let mut e = Engine {
            cfg,
            side,
            worker: 0,
            table,
            table_version: u64::MAX,
            nets: Arc::from(Vec::new()),
            slots: Vec::new(),
            members_set: members,
            seen_version: u64::MAX,
            members: Arc::from(Vec::new()),
            activity: None,
        };
        e.sync();
        e.refresh_members();
        e
    }

    /// Serve worker `worker` (0 by default): count into its counters, loops use its TAP queues.
    pub fn for_worker(mut self, worker: usize) -> Self {
        self.worker = worker;
        self
    }

    /// The worker this engine serves.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Record each accepted datagram's source in `activity`.
    pub fn with_activity(mut self, activity: Arc<PeerActivity>) -> Self {
        self.activity = Some(activity);
        self
    }

    /// Take the network table's current set if it changed since the last call (one relaxed load otherwise);
    /// returns whether it did. Network indices (in [`Engine::networks`], [`Delivery`], [`Engine::on_tap`])
    /// change only here. The rate-limiter state lives in the network ([`Network::bum`]), so it survives.
    pub fn sync(&mut self) -> bool {
        let v = self.table.version();
        if v == self.table_version {
            return false;
        }
        self.table_version = v;
        self.nets = self.table.snapshot();
        self.slots.clear();
        for n in self.nets.iter() {
            if self.cfg.bum_pps > 0 {
                n.bum
                    .get_or_init(|| std::sync::Mutex::new(BumLimiter::new(self.cfg.bum_pps)));
            }
            self.slots.push(Slot {
                net: n.clone(),
                header: vxlan::header(n.vni),
                flood_version: u64::MAX,
                flood: Vec::new(),
            });
        }
        true
    }

    /// The networks served, in the order the indices refer to.
    pub fn networks(&self) -> &Arc<[Arc<Network>]> {
        &self.nets
    }

    /// The index of the network with `vni`.
    #[inline]
    pub fn index_of(&self, vni: Vni) -> Option<usize> {
        self.slots
            .binary_search_by_key(&vni.get(), |s| s.net.vni.get())
            .ok()
    }

    /// A probe datagram (see [`crate::wire::probe`]) from `src`: checked like any datagram (VXLAN header,
    /// VNI, membership), recorded as activity, never learned from nor delivered. `None`: drop it.
    pub fn on_probe(&mut self, now: Instant, src: SocketAddr, dgram: &[u8]) -> Option<ProbeRepr> {
        self.on_probe_for(now, src, dgram).map(|(p, _)| p)
    }

    /// [`Engine::on_probe`], also naming the network the probe was sent on (answer with its header).
    pub fn on_probe_for(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dgram: &[u8],
    ) -> Option<(ProbeRepr, usize)> {
        let pkt = VxlanPacket::new_checked(dgram).ok()?;
        let net = self.index_of(pkt.vni())?;
        if self.cfg.require_member {
            self.refresh_members();
            self.members.binary_search(&src.ip()).ok()?;
        }
        let p = ProbeRepr::parse(pkt.payload()).ok()?;
        if let Some(a) = &self.activity {
            a.saw(src.ip(), now);
        }
        Some((p, net))
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }
    /// The VXLAN header every datagram of the first network starts with (single-network engines).
    pub fn header(&self) -> &[u8; VXLAN_HEADER_LEN] {
        self.slots.first().map_or(&[0; VXLAN_HEADER_LEN], |s| &s.header)
    }
    /// The VXLAN header every datagram of network `net` starts with.
    pub fn header_of(&self, net: usize) -> &[u8; VXLAN_HEADER_LEN] {
        self.slots.get(net).map_or(&[0; VXLAN_HEADER_LEN], |s| &s.header)
    }
    /// This side's counters of the first network (single-network engines).
    pub fn counters(&self) -> &Arc<Counters> {
        self.counters_of(0)
    }
    /// This side's counters of network `net`; drops without a network go to the table's unattributed ones.
    pub fn counters_of(&self, net: usize) -> &Arc<Counters> {
        match (self.slots.get(net), self.side) {
            (Some(s), Side::Tx) => s.net.tx.of(self.worker),
            (Some(s), Side::Rx) => s.net.rx.of(self.worker),
            (None, _) => self.table.unattributed_all().of(self.worker),
        }
    }
    /// Where drops that belong to no network are counted.
    pub fn unattributed(&self) -> &Arc<Counters> {
        self.table.unattributed_all().of(self.worker)
    }

    #[inline]
    fn refresh_members(&mut self) {
        let v = self.members_set.version();
        if v == self.seen_version {
            return;
        }
        self.seen_version = v;
        self.members = self.members_set.snapshot();
    }

    #[inline]
    fn refresh_flood(&mut self, net: usize) {
        let (local, port) = (self.cfg.local, self.cfg.port);
        let Some(s) = self.slots.get_mut(net) else { return };
        let v = s.net.peers.version();
        if v == s.flood_version {
            return;
        }
        s.flood_version = v;
        s.flood.clear();
        s.flood.extend(
            s.net
                .peers
                .snapshot()
                .iter()
                .filter(|p| **p != local)
                .map(|p| SocketAddr::new(*p, port)),
        );
    }

    fn count_learn(counters: &Counters, l: Learn) {
        match l {
            Learn::New => Counters::add(&counters.learned, 1),
            Learn::Moved { .. } => {
                Counters::add(&counters.learned, 1);
                Counters::add(&counters.moves, 1);
            }
            Learn::Full => Counters::add(&counters.fdb_full, 1),
            // Dampened moves (`mac_flaps`) and refusals at the local cap (`local_mac_cap`) are counted by the
            // FDB itself, control-plane installs and bridge syncs included.
            Learn::Refreshed | Learn::Ignored | Learn::OwnedLocally | Learn::Dampened | Learn::LocalCap => {}
        }
    }

    /// [`Engine::on_tap`] for the first network (single-network engines).
    pub fn on_tap_frame(
        &mut self,
        now: Instant,
        frame: &[u8],
        out: &mut TxAction,
    ) -> Result<TxVerdict, DropReason> {
        self.on_tap(now, 0, frame, out)
    }

    /// A frame (or TSO superframe: only its headers are read) from the TAP of network `net`. On
    /// [`TxVerdict::Send`] `out` holds the destinations; the caller prepends [`Engine::header_of`]`(net)` and
    /// sends. On [`TxVerdict::Reply`] the caller writes the reply into that network's TAP and sends nothing.
    pub fn on_tap(
        &mut self,
        now: Instant,
        net: usize,
        frame: &[u8],
        out: &mut TxAction,
    ) -> Result<TxVerdict, DropReason> {
        out.dests.clear();
        let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::BadFrame)?;
        if !self.cfg.allow_vlan && is_vlan(eth.ethertype()) {
            return Err(DropReason::VlanTagged);
        }
        let src = eth.src();
        if !src.is_learnable() {
            return Err(DropReason::BadSrcMac);
        }
        self.refresh_flood(net);
        let (local, port, side, worker) = (self.cfg.local, self.cfg.port, self.side, self.worker);
        let bum_on = self.cfg.bum_pps > 0;
        let Some(s) = self.slots.get_mut(net) else {
            return Err(DropReason::UnknownVni);
        };
        // On a network with the anycast gateway (egress), the bridge's own frames (the gateway's ARP/ND above
        // all) never enter the tunnel: every host's bridge holds the same gateway address, so its answers
        // would make the address move between hosts. Without a gateway the host may talk over its bridge, as
        // with Linux VXLAN.
        let from_bridge = suppress::from_bridge(frame, s.net.bridge_mac.get());
        if from_bridge && s.net.gateway.is_some() {
            return Err(DropReason::BridgeMac);
        }
        let counters = if side == Side::Tx {
            s.net.tx.of(worker)
        } else {
            s.net.rx.of(worker)
        };
        // The bridge's MAC is never a container: not learned as local (it would take a `--max-local-macs`
        // slot and be a local entry nobody advertises); remote hosts learn it from its frames.
        let l = if from_bridge {
            Learn::Ignored
        } else {
            s.net.fdb.learn(src, local, Origin::Local, now)
        };
        Engine::count_learn(counters, l);
        let dst = eth.dst();
        if dst.is_multicast() {
            if let Some(b) = s.net.bum.get().filter(|_| bum_on) {
                // Sources refused as local (beyond --max-local-macs) share one budget, so a flood of new
                // source MACs cannot buy a fresh burst with each.
                let key = if l == Learn::LocalCap { MacAddr::ZERO } else { src };
                let allowed = b.lock().unwrap_or_else(|p| p.into_inner()).allow(key, now);
                if !allowed {
                    return Err(DropReason::BumRateLimited);
                }
            }
        }
        // ARP/ND suppression (after the rate limit, so a flood of requests is limited before the table).
        let view = suppress::NetView {
            neigh: &s.net.neigh,
            gateway: s.net.gateway,
            // The bridge's own requests are only held back where it holds the anycast gateway (see above).
            bridge_mac: s.net.gateway.and(s.net.bridge_mac.get()),
        };
        let d = suppress::suppress(frame, &view, counters, &mut out.reply);
        if let Some(b) = d.learn {
            s.net.neigh.learn(b, now);
        }
        match d.verdict {
            suppress::Verdict::Forward => {}
            suppress::Verdict::Reply(n) => return Ok(TxVerdict::Reply(n)),
            suppress::Verdict::Drop(why) => {
                return match why.reason() {
                    Some(r) => Err(r),
                    None => Ok(TxVerdict::Consumed),
                }
            }
        }
        out.flow_hash = crate::flow::flow_hash(frame);
        if !dst.is_multicast() {
            match s.net.fdb.lookup(&dst, now) {
                Some(d) if d.origin == Origin::Local || d.vtep == local => return Err(DropReason::LocalDst),
                Some(d) => {
                    out.dests.push(SocketAddr::new(d.vtep, port));
                    return Ok(TxVerdict::Send);
                }
                None => {}
            }
        }
        if s.flood.is_empty() {
            return Err(DropReason::NoPeers);
        }
        out.dests.extend_from_slice(&s.flood);
        Ok(TxVerdict::Send)
    }

    /// [`Engine::on_underlay`] without the network index (single-network engines).
    pub fn on_underlay_datagram(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dgram: &[u8],
    ) -> Result<Range<usize>, DropReason> {
        self.on_underlay(now, src, dgram)
            .map(|d| d.frame)
            .map_err(|d| d.reason)
    }

    /// A UDP datagram received on the VXLAN port from `src`. On success names the network (by its VNI) and
    /// the range of `dgram` holding the inner Ethernet frame, to be written to that network's TAP. A VNI we
    /// do not serve is dropped as `unknown_vni`.
    pub fn on_underlay(&mut self, now: Instant, src: SocketAddr, dgram: &[u8]) -> Result<Delivery, RxDrop> {
        let drop = |net, reason| RxDrop { net, reason };
        if dgram.len() < VXLAN_HEADER_LEN + ETHERNET_HEADER_LEN {
            return Err(drop(None, DropReason::Short));
        }
        let pkt = VxlanPacket::new_checked(dgram).map_err(|_| drop(None, DropReason::BadFlags))?;
        let Some(net) = self.index_of(pkt.vni()) else {
            return Err(drop(None, DropReason::UnknownVni));
        };
        let n = Some(net);
        if self.cfg.require_member {
            self.refresh_members();
            if self.members.binary_search(&src.ip()).is_err() {
                return Err(drop(n, DropReason::NonMember));
            }
        }
        let eth = EthernetFrame::new_checked(pkt.payload()).map_err(|_| drop(n, DropReason::Short))?;
        let mac = eth.src();
        if !mac.is_learnable() {
            return Err(drop(n, DropReason::BadSrcMac));
        }
        if !self.cfg.allow_vlan && is_vlan(eth.ethertype()) {
            return Err(drop(n, DropReason::VlanTagged));
        }
        if let Some(a) = &self.activity {
            a.saw(src.ip(), now);
        }
        let Some(s) = self.slots.get(net) else {
            return Err(drop(None, DropReason::UnknownVni));
        };
        let l = s.net.fdb.learn(mac, src.ip(), Origin::Learned, now);
        if l == Learn::OwnedLocally {
            return Err(drop(n, DropReason::SpoofedSrc));
        }
        Engine::count_learn(
            if self.side == Side::Tx {
                s.net.tx.of(self.worker)
            } else {
                s.net.rx.of(self.worker)
            },
            l,
        );
        Ok(Delivery {
            net,
            frame: VXLAN_HEADER_LEN..dgram.len(),
        })
    }
}

fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ
}

#[cfg(test)]
mod arp_tests;
#[cfg(test)]
mod network_tests;
#[cfg(test)]
mod tests;
