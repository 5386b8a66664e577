//! The sans-IO forwarding engine: a frame or datagram plus `now` in, a verdict out. It never touches a socket
//! or a clock; the worker (or a test, or the simulator) does the I/O. One `Engine` per worker; all shared state
//! (FDB, peer set) sits behind `Arc`s, so several workers forward for one network concurrently.
//!
//! Semantics follow Linux vxlan + bridge:
//! - TAP → underlay: known unicast goes to the owning VTEP; broadcast, multicast and unknown unicast are
//!   head-end replicated to every peer VTEP; the source MAC is recorded as living behind our bridge (up to
//!   `--max-local-macs`, see [`crate::fdb`]). Broadcast and multicast are rate-limited per source MAC
//!   (`--bum-pps`, [`bum`]), drops counted as `bum_rate_limited`.
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

/// Static configuration of one overlay network.
#[derive(Clone, Debug)]
pub struct EngineConfig {
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

/// Where the engine wants a frame from the TAP sent. Caller-owned and reused: `dests` keeps its capacity.
#[derive(Debug, Default)]
pub struct TxAction {
    /// Hash of the inner flow ([`crate::flow::flow_hash`]): picks the outer UDP source port.
    pub flow_hash: u64,
    /// Destination VTEPs: one for known unicast, every peer for flooding.
    pub dests: Vec<SocketAddr>,
}

#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    header: [u8; VXLAN_HEADER_LEN],
    fdb: Arc<Fdb>,
    peers: Arc<PeerSet>,
    counters: Arc<Counters>,
    seen_version: u64,
    members: Arc<[IpAddr]>,
    flood: Vec<SocketAddr>,
    /// Per-source budget for broadcast/multicast from the TAP; `None` when `bum_pps` is 0.
    bum: Option<BumLimiter>,
    /// Last datagram per static peer (`overlayctl peers`), if tracked.
    activity: Option<Arc<PeerActivity>>,
}

impl Engine {
    pub fn new(cfg: EngineConfig, fdb: Arc<Fdb>, peers: Arc<PeerSet>, counters: Arc<Counters>) -> Self {
        let mut e = Engine {
            bum: (cfg.bum_pps > 0).then(|| BumLimiter::new(cfg.bum_pps)),
            header: vxlan::header(cfg.vni),
            cfg,
            fdb,
            peers,
            counters,
            seen_version: u64::MAX,
            members: Arc::from(Vec::new()),
            flood: Vec::new(),
            activity: None,
        };
        e.refresh_peers();
        e
    }

    /// Record each accepted datagram's source in `activity`.
    pub fn with_activity(mut self, activity: Arc<PeerActivity>) -> Self {
        self.activity = Some(activity);
        self
    }

    /// A probe datagram (see [`crate::wire::probe`]) from `src`: checked like any datagram (VXLAN header,
    /// VNI, membership), recorded as activity, never learned from nor delivered. `None`: drop it.
    pub fn on_probe(&mut self, now: Instant, src: SocketAddr, dgram: &[u8]) -> Option<ProbeRepr> {
        let pkt = VxlanPacket::new_checked(dgram).ok()?;
        if pkt.vni() != self.cfg.vni {
            return None;
        }
        if self.cfg.require_member {
            self.refresh_peers();
            self.members.binary_search(&src.ip()).ok()?;
        }
        let p = ProbeRepr::parse(pkt.payload()).ok()?;
        if let Some(a) = &self.activity {
            a.saw(src.ip(), now);
        }
        Some(p)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }
    /// The VXLAN header every datagram we send starts with.
    pub fn header(&self) -> &[u8; VXLAN_HEADER_LEN] {
        &self.header
    }
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    #[inline]
    fn refresh_peers(&mut self) {
        let v = self.peers.version();
        if v == self.seen_version {
            return;
        }
        self.seen_version = v;
        self.members = self.peers.snapshot();
        self.flood.clear();
        let local = self.cfg.local;
        let port = self.cfg.port;
        self.flood.extend(
            self.members
                .iter()
                .filter(|p| **p != local)
                .map(|p| SocketAddr::new(*p, port)),
        );
    }

    fn count_learn(&self, l: Learn) {
        match l {
            Learn::New => Counters::add(&self.counters.learned, 1),
            Learn::Moved { .. } => {
                Counters::add(&self.counters.learned, 1);
                Counters::add(&self.counters.moves, 1);
            }
            Learn::Full => Counters::add(&self.counters.fdb_full, 1),
            // Dampened moves (`mac_flaps`) and refusals at the local cap (`local_mac_cap`) are counted by the
            // FDB itself, control-plane installs and bridge syncs included.
            Learn::Refreshed | Learn::Ignored | Learn::OwnedLocally | Learn::Dampened | Learn::LocalCap => {}
        }
    }

    /// A frame (or TSO superframe: only its headers are read) from the TAP. On success `out` holds the
    /// destinations; the caller prepends [`Engine::header`] and sends.
    pub fn on_tap_frame(&mut self, now: Instant, frame: &[u8], out: &mut TxAction) -> Result<(), DropReason> {
        out.dests.clear();
        let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::BadFrame)?;
        if !self.cfg.allow_vlan && is_vlan(eth.ethertype()) {
            return Err(DropReason::VlanTagged);
        }
        let src = eth.src();
        if !src.is_learnable() {
            return Err(DropReason::BadSrcMac);
        }
        let l = self.fdb.learn(src, self.cfg.local, Origin::Local, now);
        self.count_learn(l);
        self.refresh_peers();
        let dst = eth.dst();
        if dst.is_multicast() {
            if let Some(b) = &mut self.bum {
                // Sources refused as local (beyond --max-local-macs) share one budget, so a flood of new
                // source MACs cannot buy a fresh burst with each.
                let key = if l == Learn::LocalCap { MacAddr::ZERO } else { src };
                if !b.allow(key, now) {
                    return Err(DropReason::BumRateLimited);
                }
            }
        }
        out.flow_hash = crate::flow::flow_hash(frame);
        if !dst.is_multicast() {
            match self.fdb.lookup(&dst, now) {
                Some(d) if d.origin == Origin::Local || d.vtep == self.cfg.local => {
                    return Err(DropReason::LocalDst)
                }
                Some(d) => {
                    out.dests.push(SocketAddr::new(d.vtep, self.cfg.port));
                    return Ok(());
                }
                None => {}
            }
        }
        if self.flood.is_empty() {
            return Err(DropReason::NoPeers);
        }
        out.dests.extend_from_slice(&self.flood);
        Ok(())
    }

    /// A UDP datagram received on the VXLAN port from `src`. On success returns the range of `dgram` holding
    /// the inner Ethernet frame, to be written to the TAP.
    pub fn on_underlay_datagram(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dgram: &[u8],
    ) -> Result<Range<usize>, DropReason> {
        if dgram.len() < VXLAN_HEADER_LEN + ETHERNET_HEADER_LEN {
            return Err(DropReason::Short);
        }
        let pkt = VxlanPacket::new_checked(dgram).map_err(|_| DropReason::BadFlags)?;
        if pkt.vni() != self.cfg.vni {
            return Err(DropReason::UnknownVni);
        }
        if self.cfg.require_member {
            self.refresh_peers();
            if self.members.binary_search(&src.ip()).is_err() {
                return Err(DropReason::NonMember);
            }
        }
        let eth = EthernetFrame::new_checked(pkt.payload()).map_err(|_| DropReason::Short)?;
        let mac = eth.src();
        if !mac.is_learnable() {
            return Err(DropReason::BadSrcMac);
        }
        if !self.cfg.allow_vlan && is_vlan(eth.ethertype()) {
            return Err(DropReason::VlanTagged);
        }
        if let Some(a) = &self.activity {
            a.saw(src.ip(), now);
        }
        let l = self.fdb.learn(mac, src.ip(), Origin::Learned, now);
        if l == Learn::OwnedLocally {
            return Err(DropReason::SpoofedSrc);
        }
        self.count_learn(l);
        Ok(VXLAN_HEADER_LEN..dgram.len())
    }
}

fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ
}

#[cfg(test)]
mod tests;
