//! RX: coalesce decapsulated inner TCP segments into superframes before writing them to the TAP, so the
//! kernel takes one large skb through the bridge instead of ~45 small ones (what kernel GRO does for a NIC).
//!
//! Merge rules follow the kernel's `tcp_gro_receive`/`inet_gro_receive` and wireguard-go's `tcpGRO`:
//! same Ethernet header; IPv4 without options or fragments, same TOS/flags/TTL, IDs consecutive (or both 0);
//! or IPv6 without extension headers, same version/traffic class/flow label/hop limit; same addresses and
//! ports; same ACK number and window; flags exactly ACK (ACK|PSH allowed on the final segment, which closes
//! the superframe); identical TCP option bytes; contiguous sequence numbers; every segment but the last
//! exactly MSS long (the MSS is the first segment's payload length); IP length <= 65535; and both the IPv4
//! header checksum and the TCP checksum verified — a corrupted segment reaches the kernel unchanged, so the
//! kernel drops and counts it.
//!
//! **Partial checksums** (see [`super::partial`]): a segment whose TCP checksum field holds exactly the
//! pseudo-header sum comes from a kernel sender that left it to a device; there is nothing to verify, and the
//! kernel itself trusts such a segment. It is coalesced like a verified one (the superframe goes out with
//! `NEEDS_CSUM` anyway), a lone one is flushed with `NEEDS_CSUM` instead of `DATA_VALID`, and every frame passed
//! through unchanged (pure ACKs, SYNs, UDP...) gets `NEEDS_CSUM` when its checksum is partial.
//!
//! **Ordering guarantee:** within one flow (addresses + ports), frames reach the TAP in arrival order. The
//! API makes this hard to break: [`Coalescer::push`] takes the output sink itself, and before it hands a
//! non-coalescible frame of a flow to the sink it first emits that flow's pending superframe. IPv4 fragments
//! and IPv6 frames with extension headers, whose ports we cannot see, first emit *every* pending superframe.
//! Other frames (non-IP, UDP, ICMP, malformed) are emitted at once: they are not part of a TCP flow, or
//! the kernel drops them anyway.
//!
//! **No payload copy** ([`gather`]): a pending superframe is the first segment's headers (copied, at most
//! [`MAX_HDRS`] bytes) plus the ranges of every segment's payload in the receive buffer, passed in as a
//! [`Region`]. The sink gets the superframe as iovecs `[virtio header, headers, payload...]` for one `writev`, so
//! the payload is copied once, by the kernel, from the receive buffer. Pending superframes refer to the
//! receive buffer: flush before refilling it (the worker flushes after every `recvmmsg` batch); a push or flush
//! under another [`Region::epoch`] drops what is pending instead of writing refilled bytes (counted by
//! [`Coalescer::stale_drops`]). At most [`MAX_SEGMENTS`] segments go into one superframe.
//!
//! **Checksums:** every segment's IPv4 header and TCP checksum are still verified here, one read pass over the
//! payload (no write). The superframe goes to the TAP with `NEEDS_CSUM`, which the kernel trusts without looking
//! (`CHECKSUM_PARTIAL`), so this check is the only one the payload gets: the outer UDP checksum may be zero
//! (Linux's VXLAN default over IPv4) and a UDP socket does not say whether it was, so the wire guarantees
//! nothing. `DATA_VALID` on a lone segment is a no-op for a TAP write on Linux 6.18 (`tun` does not read it; a
//! bad checksum written with it was still dropped by the kernel, measured), so it is set only on frames that
//! verified and never replaces verification.
//!
//! The slot pool (`max_flows` slots of headers and a range table) is allocated in [`Coalescer::new`]; `push` and
//! `flush` never allocate. When the pool is full, the oldest pending superframe is emitted to make room.
//!
//! What the kernel requires of a TAP write with `gso_type` TCPV4/TCPV6 (`tun_get_user` →
//! `virtio_net_hdr_to_skb`, then `ip_rcv`), all of which [`Coalescer::flush`] provides:
//! - `NEEDS_CSUM` with `csum_start` at the TCP header counted from the Ethernet header (TAP, not TUN) and
//!   `csum_offset` = 16; `csum_start + csum_offset + 2 <= hdr_len <= frame length` (`hdr_len` is what tun
//!   copies into the linear area, so it is set to the full Ethernet + IP + TCP header length);
//! - the TCP checksum field holding the folded pseudo-header sum over the *whole* TCP length (not
//!   complemented), as for any `CHECKSUM_PARTIAL` skb;
//! - a correct IPv4 total length and header checksum, or IPv6 payload length (`ip_rcv` validates them);
//! - `gso_size` > 0 and smaller than the payload, or the kernel silently treats the frame as non-GSO — which
//!   is why a one-segment superframe is written with `GSO_NONE` instead.

use super::checksum::{fold, sum};
use super::headers::{be16, be32, byte, parse, put, Headers, Ip, ETH_HLEN, IPPROTO_TCP};
use super::partial::partial_hdr;
use super::virtio::{
    VirtioNetHdr, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_LEN,
};
use super::OffloadError;
use std::io::IoSlice;
use std::ops::Range;

mod gather;
use gather::{finish_headers, gather};
pub use gather::{Region, MAX_HDRS, MAX_IOVECS, MAX_SEGMENTS};

/// Largest frame one superframe write carries: Ethernet header + the largest IP packet a 16-bit length field
/// describes.
pub const MAX_SUPERFRAME_LEN: usize = ETH_HLEN + u16::MAX as usize;

const TCP_FLAG_PSH: u8 = 0x08;
const TCP_FLAG_ACK: u8 = 0x10;
/// virtio header for frames written as they came: no offload, the kernel verifies the checksum itself.
const PLAIN_HDR: [u8; VIRTIO_NET_HDR_LEN] = [0; VIRTIO_NET_HDR_LEN];

/// What [`Coalescer::push`] did with a frame (for per-reason counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Appended to the flow's pending superframe.
    Merged,
    /// Started a new pending superframe (possibly after emitting the flow's previous one or evicting another).
    Started,
    /// Not coalescible: emitted right away through the sink, unchanged, with a plain virtio header (or
    /// `NEEDS_CSUM` when its checksum is partial).
    PassedThrough(Bypass),
}

/// Why a frame was passed through instead of coalesced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Not an untagged IPv4/IPv6 TCP frame we can parse (ARP, UDP, fragments, VLAN, malformed...), or a
    /// frame range outside the region.
    NotTcp,
    /// IPv4 options: legal but never coalesced.
    IpOptions,
    /// SYN, FIN, RST, URG, ECE or CWR set, or ACK missing.
    Flags,
    /// No TCP payload (pure ACK).
    NoPayload,
    /// IPv4 header or TCP checksum does not verify (and is not partial): the kernel must see it and drop it.
    BadChecksum,
    /// The coalescer was built with no flow slots.
    NoSlots,
}

/// A TCP flow in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FlowKey {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
}

impl FlowKey {
    fn of(frame: &[u8], h: &Headers) -> Self {
        let mut k = FlowKey {
            v6: h.ip == Ip::V6,
            sport: be16(frame, h.l4_off),
            dport: be16(frame, h.l4_off + 2),
            ..FlowKey::default()
        };
        let (at, n) = if k.v6 {
            (ETH_HLEN + 8, 16)
        } else {
            (ETH_HLEN + 12, 4)
        };
        if let (Some(s), Some(d), Some(ks), Some(kd)) = (
            frame.get(at..at + n),
            frame.get(at + n..at + 2 * n),
            k.src.get_mut(..n),
            k.dst.get_mut(..n),
        ) {
            ks.copy_from_slice(s);
            kd.copy_from_slice(d);
        }
        k
    }
}

/// One pending superframe: the first segment's headers and the payload ranges. `segs == 0` means free.
#[derive(Debug)]
struct Slot {
    hdr: [u8; MAX_HDRS],
    /// Header bytes in `hdr` (Ethernet + IP + TCP).
    hdrs: usize,
    payloads: [Range<usize>; MAX_SEGMENTS],
    segs: usize,
    payload_len: usize,
    key: FlowKey,
    ip: Ip,
    l4_off: usize,
    mss: usize,
    next_seq: u32,
    last_id: u16,
    /// PSH seen or a short segment appended: nothing may follow.
    closed: bool,
    /// Some segment came with a partial checksum: a lone segment must go out with `NEEDS_CSUM`.
    partial: bool,
    stamp: u64,
}

/// TCP receive coalescer with a fixed pool of slots. See the module docs for rules, the ordering guarantee
/// and the receive buffer's lifetime.
#[derive(Debug)]
pub struct Coalescer {
    slots: Vec<Slot>,
    clock: u64,
    /// Epoch of the region the pending ranges point into (meaningful while something is pending).
    epoch: u64,
    stale: u64,
}

impl Coalescer {
    /// Preallocate `max_flows` slots. 8–16 is plenty for one worker's batch.
    pub fn new(max_flows: usize) -> Self {
        let slots = (0..max_flows)
            .map(|_| Slot {
                hdr: [0; MAX_HDRS],
                hdrs: 0,
                payloads: std::array::from_fn(|_| 0..0),
                segs: 0,
                payload_len: 0,
                key: FlowKey::default(),
                ip: Ip::V4,
                l4_off: 0,
                mss: 0,
                next_seq: 0,
                last_id: 0,
                closed: false,
                partial: false,
                stamp: 0,
            })
            .collect();
        Coalescer {
            slots,
            clock: 0,
            epoch: 0,
            stale: 0,
        }
    }

    /// Number of pending superframes.
    pub fn pending(&self) -> usize {
        self.slots.iter().filter(|s| s.segs != 0).count()
    }

    /// Segments dropped because a push or flush came with another region epoch than the one they were
    /// recorded under (a caller bug: the receive buffer was refilled before the flush). Never written.
    pub fn stale_drops(&self) -> u64 {
        self.stale
    }

    /// Drop whatever is pending if `region` is not the one it was recorded in.
    fn check_epoch(&mut self, region: &Region<'_>) {
        if region.epoch == self.epoch {
            return;
        }
        for s in self.slots.iter_mut().filter(|s| s.segs != 0) {
            self.stale += s.segs as u64;
            s.segs = 0;
        }
        self.epoch = region.epoch;
    }

    /// Offer the inner Ethernet frame at `frame` in `region`. It is either recorded into a pending superframe
    /// (emitted later by [`flush`](Self::flush), or earlier by a later `push` of the same flow that cannot join
    /// it), or written to `emit` right away — after the flow's pending superframe, so the flow's order is kept.
    /// `emit` receives the iovecs of one TAP write: the 10-byte virtio header first, then the frame's bytes.
    pub fn push(
        &mut self,
        region: Region<'_>,
        frame: Range<usize>,
        mut emit: impl FnMut(&[IoSlice<'_>]),
    ) -> PushOutcome {
        self.check_epoch(&region);
        let Some(f) = region.bytes.get(frame.clone()) else {
            return PushOutcome::PassedThrough(Bypass::NotTcp);
        };
        let h = match parse(f) {
            Ok(h) if h.proto == IPPROTO_TCP => h,
            Err(OffloadError::Fragment(_) | OffloadError::Ipv6ExtensionHeader(_)) => {
                // Well-formed IP whose flow we cannot see (ports in a later fragment or behind extension
                // headers): it may belong to a pending flow, so emit everything pending first. Rare.
                self.flush(region, &mut emit);
                emit_one(&mut emit, &PLAIN_HDR, f);
                return PushOutcome::PassedThrough(Bypass::NotTcp);
            }
            Ok(h) => {
                // UDP and other IP: written as it is, completed by the kernel if partial.
                emit_one(&mut emit, &pass_hdr(f, &h), f);
                return PushOutcome::PassedThrough(Bypass::NotTcp);
            }
            Err(_) => {
                emit_one(&mut emit, &PLAIN_HDR, f);
                return PushOutcome::PassedThrough(Bypass::NotTcp);
            }
        };
        let key = FlowKey::of(f, &h);
        let existing = self.slots.iter().position(|s| s.segs != 0 && s.key == key);

        let partial = match coalescible(f, &h) {
            Ok(p) => p,
            Err(why) => {
                if let Some(slot) = existing.and_then(|i| self.slots.get_mut(i)) {
                    slot.flush(region.bytes, &mut emit);
                }
                let hdr = if why == Bypass::BadChecksum {
                    PLAIN_HDR
                } else {
                    pass_hdr(f, &h)
                };
                emit_one(&mut emit, &hdr, f);
                return PushOutcome::PassedThrough(why);
            }
        };
        let payload = frame.start + h.payload_off..frame.start + h.ip_end;

        if let Some(slot) = existing.and_then(|i| self.slots.get_mut(i)) {
            if slot.can_merge(f, &h) {
                slot.append(f, &h, payload);
                slot.partial |= partial;
                return PushOutcome::Merged;
            }
            slot.flush(region.bytes, &mut emit);
        }
        let idx = existing
            .or_else(|| self.slots.iter().position(|s| s.segs == 0))
            .or_else(|| {
                // Pool full: evict the oldest pending superframe.
                self.slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.stamp)
                    .map(|(i, _)| i)
            });
        self.clock += 1;
        match idx.and_then(|i| self.slots.get_mut(i)) {
            Some(slot) => {
                if slot.segs != 0 {
                    slot.flush(region.bytes, &mut emit);
                }
                slot.start(f, &h, payload, key, self.clock);
                slot.partial = partial;
                PushOutcome::Started
            }
            None => {
                emit_one(&mut emit, &pass_hdr(f, &h), f);
                PushOutcome::PassedThrough(Bypass::NoSlots)
            }
        }
    }

    /// Emit every pending superframe and reset. A superframe of one segment goes out unchanged with
    /// `GSO_NONE` + `DATA_VALID` (its checksum was verified), or `NEEDS_CSUM` if its checksum is partial;
    /// merged ones with `NEEDS_CSUM`, `gso_type` TCPV4/TCPV6, `gso_size` = MSS, `csum_start` = TCP header
    /// offset (from the Ethernet header, as on a TAP), `csum_offset` = 16 and the TCP checksum field holding
    /// the pseudo-header sum. `region` must be the one the frames were pushed with.
    pub fn flush(&mut self, region: Region<'_>, mut emit: impl FnMut(&[IoSlice<'_>])) {
        self.check_epoch(&region);
        for slot in self.slots.iter_mut().filter(|s| s.segs != 0) {
            slot.flush(region.bytes, &mut emit);
        }
    }
}

/// One frame written as it is: `[virtio header, frame]`.
fn emit_one(emit: &mut impl FnMut(&[IoSlice<'_>]), hdr: &[u8; VIRTIO_NET_HDR_LEN], frame: &[u8]) {
    emit(&[IoSlice::new(hdr), IoSlice::new(frame)]);
}

/// The virtio header for a frame written unchanged: `NEEDS_CSUM` if its checksum is partial, else plain.
fn pass_hdr(frame: &[u8], h: &Headers) -> [u8; VIRTIO_NET_HDR_LEN] {
    partial_hdr(frame, h).map_or(PLAIN_HDR, |p| p.to_bytes())
}

/// Can this frame be part of a superframe at all (independently of any pending one)? `Ok(true)` when its TCP
/// checksum is partial rather than verified.
fn coalescible(frame: &[u8], h: &Headers) -> Result<bool, Bypass> {
    if h.ip == Ip::V4 && h.ip_hlen() != 20 {
        return Err(Bypass::IpOptions);
    }
    if h.payload_off > MAX_HDRS {
        return Err(Bypass::NotTcp); // cannot happen after the IPv4 options check; kept for the slot's buffer
    }
    let flags = byte(frame, h.l4_off + 13);
    if flags != TCP_FLAG_ACK && flags != TCP_FLAG_ACK | TCP_FLAG_PSH {
        return Err(Bypass::Flags);
    }
    if h.payload_len() == 0 {
        return Err(Bypass::NoPayload);
    }
    if h.ip == Ip::V4 {
        let iph_ok = frame
            .get(ETH_HLEN..h.l4_off)
            .is_some_and(|iph| fold(sum(iph, 0)) == 0xffff);
        if !iph_ok {
            return Err(Bypass::BadChecksum);
        }
    }
    // A partial checksum is cheap to recognise (no pass over the payload), so look for it first.
    if partial_hdr(frame, h).is_some() {
        return Ok(true);
    }
    let l4_ok = frame
        .get(h.l4_off..h.ip_end)
        .is_some_and(|l4| fold(sum(l4, h.pseudo(frame, h.l4_len()))) == 0xffff);
    if !l4_ok {
        return Err(Bypass::BadChecksum);
    }
    Ok(false)
}

fn same(a: &[u8], b: &[u8], from: usize, to: usize) -> bool {
    match (a.get(from..to), b.get(from..to)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

impl Slot {
    fn start(&mut self, frame: &[u8], h: &Headers, payload: Range<usize>, key: FlowKey, stamp: u64) {
        let (Some(src), Some(dst), Some(p0)) = (
            frame.get(..h.payload_off),
            self.hdr.get_mut(..h.payload_off),
            self.payloads.first_mut(),
        ) else {
            return;
        };
        dst.copy_from_slice(src);
        *p0 = payload;
        self.hdrs = h.payload_off;
        self.segs = 1;
        self.payload_len = h.payload_len();
        self.key = key;
        self.ip = h.ip;
        self.l4_off = h.l4_off;
        self.mss = h.payload_len();
        self.next_seq = be32(frame, h.l4_off + 4).wrapping_add(self.mss as u32);
        self.last_id = be16(frame, ETH_HLEN + 4);
        self.closed = byte(frame, h.l4_off + 13) & TCP_FLAG_PSH != 0;
        self.stamp = stamp;
    }

    fn can_merge(&self, frame: &[u8], h: &Headers) -> bool {
        let buf = &self.hdr[..];
        let l4 = self.l4_off;
        let payload = h.payload_len();
        if self.closed || h.ip != self.ip || h.l4_off != l4 || h.payload_off != self.hdrs {
            return false;
        }
        if payload > self.mss
            || self.segs >= MAX_SEGMENTS
            || self.hdrs + self.payload_len + payload > MAX_SUPERFRAME_LEN
        {
            return false;
        }
        if be32(frame, l4 + 4) != self.next_seq {
            return false;
        }
        let ip_ok = match h.ip {
            Ip::V4 => {
                let id = be16(frame, ETH_HLEN + 4);
                let id_ok = id == self.last_id.wrapping_add(1) || (id == 0 && self.last_id == 0);
                // TOS (1), flags/fragment (6..8), TTL + protocol (8..10).
                id_ok
                    && same(frame, buf, ETH_HLEN + 1, ETH_HLEN + 2)
                    && same(frame, buf, ETH_HLEN + 6, ETH_HLEN + 10)
            }
            // Version, traffic class, flow label (0..4); next header + hop limit (6..8).
            Ip::V6 => {
                same(frame, buf, ETH_HLEN, ETH_HLEN + 4) && same(frame, buf, ETH_HLEN + 6, ETH_HLEN + 8)
            }
        };
        ip_ok
            && same(frame, buf, 0, ETH_HLEN)
            // ACK number (8..12), data offset (12), window (14..16), options (20..hdrs).
            && same(frame, buf, l4 + 8, l4 + 13)
            && same(frame, buf, l4 + 14, l4 + 16)
            && same(frame, buf, l4 + 20, self.hdrs)
    }

    fn append(&mut self, frame: &[u8], h: &Headers, payload: Range<usize>) {
        let len = payload.len();
        let Some(p) = self.payloads.get_mut(self.segs) else {
            return;
        };
        *p = payload;
        self.segs += 1;
        self.payload_len += len;
        self.next_seq = self.next_seq.wrapping_add(len as u32);
        self.last_id = be16(frame, ETH_HLEN + 4);
        if len < self.mss {
            self.closed = true;
        }
        if byte(frame, h.l4_off + 13) & TCP_FLAG_PSH != 0 {
            let flags = byte(&self.hdr, self.l4_off + 13) | TCP_FLAG_PSH;
            put(&mut self.hdr, self.l4_off + 13, &[flags]);
            self.closed = true;
        }
    }

    fn flush(&mut self, region: &[u8], emit: &mut impl FnMut(&[IoSlice<'_>])) {
        let segs = std::mem::take(&mut self.segs);
        if segs == 0 {
            return;
        }
        let hdr = if segs == 1 {
            let h = Headers {
                ip: self.ip,
                l4_off: self.l4_off,
                proto: IPPROTO_TCP,
                payload_off: self.hdrs,
                ip_end: self.hdrs + self.payload_len,
            };
            // partial_hdr only reads the headers (addresses and the checksum field).
            let partial = self.partial.then(|| partial_hdr(&self.hdr, &h)).flatten();
            partial.unwrap_or(VirtioNetHdr {
                flags: VIRTIO_NET_HDR_F_DATA_VALID,
                ..VirtioNetHdr::default()
            })
        } else {
            if finish_headers(&mut self.hdr, self.ip, self.l4_off, self.hdrs, self.payload_len).is_none() {
                return; // cannot happen: can_merge keeps the IP length within 16 bits
            }
            VirtioNetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: match self.ip {
                    Ip::V4 => VIRTIO_NET_HDR_GSO_TCPV4,
                    Ip::V6 => VIRTIO_NET_HDR_GSO_TCPV6,
                },
                hdr_len: self.hdrs as u16,
                gso_size: self.mss as u16,
                csum_start: self.l4_off as u16,
                csum_offset: 16,
            }
        };
        let vnet = hdr.to_bytes();
        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
        let (Some(headers), Some(payloads)) = (self.hdr.get(..self.hdrs), self.payloads.get(..segs)) else {
            return;
        };
        if let Some(n) = gather(&vnet, headers, region, payloads, &mut iov) {
            emit(iov.get(..n).unwrap_or(&[]));
        }
    }
}

#[cfg(test)]
mod tests;
