//! The sans-IO forwarding engine: a frame or datagram plus `now` in, a verdict out. It never touches a socket
//! or a clock; the worker (or a test, or the simulator) does the I/O. One `Engine` per worker; all shared state
//! (FDB, peer set) sits behind `Arc`s, so several workers forward for one network concurrently.
//!
//! Semantics follow Linux vxlan + bridge:
//! - TAP → underlay: known unicast goes to the owning VTEP; broadcast, multicast and unknown unicast are
//!   head-end replicated to every peer VTEP; the source MAC is recorded as living behind our bridge.
//! - underlay → TAP: RFC 7348 validation, the outer source must be a member (cluster mode) or a configured
//!   peer (static mode, unless `learn_any_source`), a datagram whose inner source MAC lives behind our own
//!   bridge is dropped (`spoofed_src`) before it can reach the bridge and steal that MAC from its container,
//!   then the inner source MAC is learned against the outer source address. A datagram is only ever delivered to the TAP, never re-sent to another VTEP (split horizon: with
//!   full-mesh head-end replication every VTEP already got its own copy).

use crate::fdb::{Fdb, Learn, Origin};
use crate::stats::{Counters, DropReason};
use crate::wire::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN};
use crate::wire::{vxlan, EthernetFrame, Vni, VxlanPacket, ETHERNET_HEADER_LEN, VXLAN_HEADER_LEN};
use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};
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
    /// Outer UDP source port range for flow entropy (Linux uses the ephemeral range).
    pub src_ports: RangeInclusive<u16>,
    /// Accept datagrams only from addresses in the peer set: cluster members, or the static `--peer`s. Off
    /// only for `--learn-any-source` (kernel-style flood-and-learn from any source).
    pub require_member: bool,
    /// Accept 802.1Q-tagged inner frames (RFC 7348 §6.1 says discard unless configured).
    pub allow_vlan: bool,
}

impl EngineConfig {
    pub fn new(vni: Vni, local: IpAddr) -> Self {
        EngineConfig {
            vni,
            port: vxlan::VXLAN_PORT,
            local,
            src_ports: 32768..=60999,
            require_member: true,
            allow_vlan: false,
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
    /// Outer UDP source port (hash of the inner flow).
    pub src_port: u16,
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
}

impl Engine {
    pub fn new(cfg: EngineConfig, fdb: Arc<Fdb>, peers: Arc<PeerSet>, counters: Arc<Counters>) -> Self {
        let mut e = Engine {
            header: vxlan::header(cfg.vni),
            cfg,
            fdb,
            peers,
            counters,
            seen_version: u64::MAX,
            members: Arc::from(Vec::new()),
            flood: Vec::new(),
        };
        e.refresh_peers();
        e
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
            // Dampened moves are counted by the FDB itself (`mac_flaps`), control-plane installs included.
            Learn::Refreshed | Learn::Ignored | Learn::OwnedLocally | Learn::Dampened => {}
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
        out.src_port = flow_port(frame, &self.cfg.src_ports);
        let dst = eth.dst();
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

/// Outer source port from a hash of the inner flow (RFC 7348 §5): L3 addresses and L4 ports when the frame is
/// IPv4/IPv6 carrying TCP/UDP (so one TCP flow keeps one port and ECMP/RSS keep it in order), else the MACs.
pub fn flow_port(frame: &[u8], range: &RangeInclusive<u16>) -> u16 {
    let mut h = FlowHash::default();
    let ethertype = frame
        .get(12..14)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0);
    let l3 = frame.get(ETHERNET_HEADER_LEN..).unwrap_or(&[]);
    let l4 = match ethertype {
        ETHERTYPE_IPV4 if l3.len() >= 20 => {
            h.bytes(&l3[12..20]);
            h.word(u64::from(l3[9]));
            let frag = u16::from_be_bytes([l3[6], l3[7]]) & 0x3fff != 0;
            let ihl = usize::from(l3[0] & 0x0f) * 4;
            (!frag && matches!(l3[9], 6 | 17))
                .then(|| l3.get(ihl..ihl + 4))
                .flatten()
        }
        ETHERTYPE_IPV6 if l3.len() >= 40 => {
            h.bytes(&l3[8..40]);
            h.word(u64::from(l3[6]));
            matches!(l3[6], 6 | 17).then(|| l3.get(40..44)).flatten()
        }
        _ => {
            h.bytes(frame.get(..12).unwrap_or(frame));
            h.word(u64::from(ethertype));
            None
        }
    };
    if let Some(p) = l4 {
        h.bytes(p);
    }
    let (lo, hi) = (*range.start(), *range.end());
    let span = u64::from(hi.saturating_sub(lo)) + 1;
    // `span` ≤ 65536 so the remainder fits in a u16 offset from `lo`.
    lo.saturating_add(u16::try_from(h.finish() % span).unwrap_or(0))
}

/// A tiny multiply-rotate hash; quality is enough for port spreading, it is not keyed.
#[derive(Default)]
struct FlowHash(u64);

impl FlowHash {
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    fn bytes(&mut self, b: &[u8]) {
        for c in b.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
    }
    fn finish(&self) -> u64 {
        let z = self.0 ^ (self.0 >> 31);
        z.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (z >> 29)
    }
}

#[cfg(test)]
mod tests;
