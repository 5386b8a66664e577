//! Counters: count, don't log, on the hot path (STYLE §7).
//!
//! Each worker owns one [`Counters`] (relaxed atomics on its own cache lines, so workers never contend); the
//! admin endpoint sums them with [`Snapshot::sum`]. Directions are named from the overlay's point of view:
//! `rx_frames` are frames read from the TAP (sent by local containers), `tx_frames` frames written to the TAP,
//! `rx_datagrams`/`tx_datagrams` VXLAN datagrams received from / sent to the underlay. A TSO superframe counts
//! as the number of segments it carries on the wire. Valid overlayd probes (`wire::probe`) are control traffic:
//! answered and consumed by the RX loop, they are not counted as datagrams.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a frame or datagram was dropped. The snake_case names are the keys of `drops` in `overlayctl stats`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DropReason {
    /// Datagram shorter than VXLAN header + Ethernet header.
    Short,
    /// VXLAN I flag missing, or a flag that changes the payload type (VXLAN-GPE).
    BadFlags,
    /// VXLAN VNI other than ours.
    UnknownVni,
    /// Inner source MAC multicast, broadcast or zero.
    BadSrcMac,
    /// Outer source is not a cluster member or a static `--peer` (static mode: unless `--learn-any-source`).
    NonMember,
    /// Inner source MAC lives behind our own bridge: a remote VTEP cannot speak for it (spoofing).
    SpoofedSrc,
    /// Inner frame carries an 802.1Q/802.1ad tag (RFC 7348 §6.1).
    VlanTagged,
    /// Frame from the TAP addressed to a MAC that lives behind our own bridge (hairpin).
    LocalDst,
    /// No peer VTEP to send to.
    NoPeers,
    /// Frame from the TAP shorter than an Ethernet header, or larger than the send path accepts.
    BadFrame,
    /// Malformed virtio-net header or superframe from the TAP (offload path).
    BadOffload,
    /// sendmsg to the underlay failed.
    SendError,
    /// write to the TAP failed (link down, queue full).
    TapWriteError,
    /// Broadcast or multicast frame from the TAP over its source MAC's `--bum-pps` budget.
    BumRateLimited,
    /// Frame from the TAP too big for the path MTU to its VTEP (minus VXLAN overhead); the sender got ICMP
    /// "fragmentation needed" / ICMPv6 "packet too big" when one is due (`engine::too_big`).
    TooBig,
    /// Frame from the TAP whose source is the network bridge's own MAC (`engine::suppress`): the bridge's own
    /// traffic (anycast gateway ARP/ND and the like) never enters the tunnel.
    BridgeMac,
}

impl DropReason {
    pub const ALL: [DropReason; 16] = [
        DropReason::Short,
        DropReason::BadFlags,
        DropReason::UnknownVni,
        DropReason::BadSrcMac,
        DropReason::NonMember,
        DropReason::SpoofedSrc,
        DropReason::VlanTagged,
        DropReason::LocalDst,
        DropReason::NoPeers,
        DropReason::BadFrame,
        DropReason::BadOffload,
        DropReason::SendError,
        DropReason::TapWriteError,
        DropReason::BumRateLimited,
        DropReason::TooBig,
        DropReason::BridgeMac,
    ];
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Short => "short",
            DropReason::BadFlags => "bad_flags",
            DropReason::UnknownVni => "unknown_vni",
            DropReason::BadSrcMac => "bad_src_mac",
            DropReason::NonMember => "non_member",
            DropReason::SpoofedSrc => "spoofed_src",
            DropReason::VlanTagged => "vlan_tagged",
            DropReason::LocalDst => "local_dst",
            DropReason::NoPeers => "no_peers",
            DropReason::BadFrame => "bad_frame",
            DropReason::BadOffload => "bad_offload",
            DropReason::SendError => "send_error",
            DropReason::TapWriteError => "tap_write_error",
            DropReason::BumRateLimited => "bum_rate_limited",
            DropReason::TooBig => "too_big",
            DropReason::BridgeMac => "bridge_mac",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// One worker's counters, padded to its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_datagrams: AtomicU64,
    pub tx_datagrams: AtomicU64,
    /// Source MACs learned or refreshed into a new VTEP (new entries and moves).
    pub learned: AtomicU64,
    /// Learned entries that moved to another VTEP.
    pub moves: AtomicU64,
    /// Learning skipped because the FDB was full and held no learned entry to evict.
    pub fdb_full: AtomicU64,
    /// Learned entries evicted (least recently seen first) to make room in a full FDB.
    pub fdb_evictions: AtomicU64,
    /// MACs on our bridge refused as local because `--max-local-macs` were already local; each counted once
    /// while it stays in the bridge's table (counted by the once-a-second bridge sync).
    pub local_mac_cap: AtomicU64,
    /// MAC moves refused by dampening (RFC 7432 §15), learned or from the control plane.
    pub mac_flaps: AtomicU64,
    /// ARP requests and IPv6 neighbour solicitations from the TAP that did not cross the underlay: answered
    /// from the neighbour table, or addressed to the gateway or to a binding on our own bridge
    /// (`engine::suppress`).
    pub arp_suppressed: AtomicU64,
    /// ARP requests and neighbour solicitations from the TAP passed on to be flooded: unknown target,
    /// gratuitous, probe / duplicate address detection.
    pub arp_flooded: AtomicU64,
    /// Zero-timeout polls of the forwarding loops while busy-polling after traffic (`--busy-poll-us`).
    pub busy_polls: AtomicU64,
    /// Busy-poll spells that found the next packet (or wakeup) before their budget ran out.
    pub busy_poll_hits: AtomicU64,
    /// Forwarding loops woken from their blocking poll by another loop's arming (`worker/arm.rs`).
    pub busy_poll_wakes: AtomicU64,
    /// Busy-poll spells of TX loops that ran only because an RX loop armed them (their own budget spent) and
    /// found the next packet.
    pub busy_poll_armed_hits_tx: AtomicU64,
    /// The same for RX loops armed by a TX loop.
    pub busy_poll_armed_hits_rx: AtomicU64,
    /// Spells of the `SCHED_IDLE` busy-poll keepers (`worker/keeper.rs`): started, ended, and their
    /// wall-clock length in µs (added at each spell's end; not CPU time: a preempted keeper keeps counting).
    pub busy_poll_keeper_spells: AtomicU64,
    pub busy_poll_keeper_rests: AtomicU64,
    pub busy_poll_keeper_us: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    /// Segments per UDP send (a GSO message carries several; 1 without GSO).
    pub gso_segments: BatchHistogram,
    /// Datagrams per UDP receive (a GRO train carries several; 1 without GRO).
    pub gro_segments: BatchHistogram,
}

impl Counters {
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    #[inline]
    pub fn count_drop(&self, r: DropReason, n: u64) {
        self.drops[r.index()].fetch_add(n, Relaxed);
    }
    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r.index()].load(Relaxed)
    }
}

/// Upper bounds of the [`BatchHistogram`] buckets (segments per batch); 64 is the kernel's UDP_MAX_SEGMENTS.
pub const BATCH_BOUNDS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];

/// A histogram of batch sizes fed once per batch (never per packet) by one worker: one relaxed atomic add per
/// observation into a fixed bucket, no lock. The last bucket counts batches above 64.
#[derive(Debug, Default)]
pub struct BatchHistogram {
    buckets: [AtomicU64; BATCH_BOUNDS.len() + 1],
    sum: AtomicU64,
}

impl BatchHistogram {
    #[inline]
    pub fn observe(&self, n: u64) {
        let i = BATCH_BOUNDS
            .iter()
            .position(|&b| n <= b)
            .unwrap_or(BATCH_BOUNDS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(n, Relaxed);
    }
    /// Per-bucket counts (not cumulative) and the sum of all observations.
    pub fn read(&self) -> ([u64; BATCH_BOUNDS.len() + 1], u64) {
        (
            self.buckets.each_ref().map(|b| b.load(Relaxed)),
            self.sum.load(Relaxed),
        )
    }
}

/// A point-in-time sum over workers, as served to `overlayctl stats`.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub rx_datagrams: u64,
    pub tx_datagrams: u64,
    pub learned: u64,
    pub moves: u64,
    pub fdb_full: u64,
    pub fdb_evictions: u64,
    pub local_mac_cap: u64,
    pub mac_flaps: u64,
    pub arp_suppressed: u64,
    pub arp_flooded: u64,
    pub busy_polls: u64,
    pub busy_poll_hits: u64,
    pub busy_poll_wakes: u64,
    pub busy_poll_armed_hits_tx: u64,
    pub busy_poll_armed_hits_rx: u64,
    pub busy_poll_keeper_spells: u64,
    pub busy_poll_keeper_rests: u64,
    pub busy_poll_keeper_us: u64,
    pub drops: BTreeMap<&'static str, u64>,
}

impl Snapshot {
    pub fn sum<'a>(counters: impl IntoIterator<Item = &'a Counters>) -> Snapshot {
        let mut s = Snapshot::default();
        for r in DropReason::ALL {
            s.drops.insert(r.name(), 0);
        }
        for c in counters {
            s.rx_frames += c.rx_frames.load(Relaxed);
            s.rx_bytes += c.rx_bytes.load(Relaxed);
            s.tx_frames += c.tx_frames.load(Relaxed);
            s.tx_bytes += c.tx_bytes.load(Relaxed);
            s.rx_datagrams += c.rx_datagrams.load(Relaxed);
            s.tx_datagrams += c.tx_datagrams.load(Relaxed);
            s.learned += c.learned.load(Relaxed);
            s.moves += c.moves.load(Relaxed);
            s.fdb_full += c.fdb_full.load(Relaxed);
            s.fdb_evictions += c.fdb_evictions.load(Relaxed);
            s.local_mac_cap += c.local_mac_cap.load(Relaxed);
            s.mac_flaps += c.mac_flaps.load(Relaxed);
            s.arp_suppressed += c.arp_suppressed.load(Relaxed);
            s.arp_flooded += c.arp_flooded.load(Relaxed);
            s.busy_polls += c.busy_polls.load(Relaxed);
            s.busy_poll_hits += c.busy_poll_hits.load(Relaxed);
            s.busy_poll_wakes += c.busy_poll_wakes.load(Relaxed);
            s.busy_poll_armed_hits_tx += c.busy_poll_armed_hits_tx.load(Relaxed);
            s.busy_poll_armed_hits_rx += c.busy_poll_armed_hits_rx.load(Relaxed);
            s.busy_poll_keeper_spells += c.busy_poll_keeper_spells.load(Relaxed);
            s.busy_poll_keeper_rests += c.busy_poll_keeper_rests.load(Relaxed);
            s.busy_poll_keeper_us += c.busy_poll_keeper_us.load(Relaxed);
            for r in DropReason::ALL {
                *s.drops.entry(r.name()).or_default() += c.drops(r);
            }
        }
        s
    }
    pub fn drops_total(&self) -> u64 {
        self.drops.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_and_indexed_in_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let names: std::collections::BTreeSet<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::ALL.len());
    }

    #[test]
    fn snapshot_sums_workers() {
        let a = Counters::default();
        let b = Counters::default();
        Counters::add(&a.rx_frames, 2);
        Counters::add(&b.rx_frames, 3);
        Counters::add(&a.arp_suppressed, 2);
        Counters::add(&b.arp_suppressed, 1);
        Counters::add(&b.arp_flooded, 7);
        a.count_drop(DropReason::Short, 1);
        b.count_drop(DropReason::Short, 4);
        b.count_drop(DropReason::UnknownVni, 1);
        let s = Snapshot::sum([&a, &b]);
        assert_eq!(s.rx_frames, 5);
        assert_eq!((s.arp_suppressed, s.arp_flooded), (3, 7));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            (v["arp_suppressed"].as_u64(), v["arp_flooded"].as_u64()),
            (Some(3), Some(7))
        );
        assert_eq!(v["drops"]["bridge_mac"].as_u64(), Some(0));
        assert_eq!(s.drops["short"], 5);
        assert_eq!(s.drops["unknown_vni"], 1);
        assert_eq!(s.drops_total(), 6);
    }

    #[test]
    fn batch_histogram_buckets() {
        let h = BatchHistogram::default();
        for n in [1, 2, 3, 64, 65, 1000] {
            h.observe(n);
        }
        let (b, sum) = h.read();
        assert_eq!(b, [1, 1, 1, 0, 0, 0, 1, 2]);
        assert_eq!(sum, 1 + 2 + 3 + 64 + 65 + 1000);
    }
}
