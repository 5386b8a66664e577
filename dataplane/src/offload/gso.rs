//! TX: split one TAP read (a TSO/USO superframe, or a frame needing its checksum finished) into wire-sized
//! Ethernet frames laid out back to back, each behind the caller's VXLAN header, ready for one UDP GSO
//! `sendmsg` (`UDP_SEGMENT` = `stride`).
//!
//! This is what the kernel's `tcp_gso_segment` / `skb_checksum_help` would have done had the TAP not
//! advertised TSO: per segment it fixes IPv4 total length, ID and header checksum (or the IPv6 payload
//! length), TCP sequence number and flags (FIN/PSH only on the last segment, CWR only on the first) and
//! computes the full L4 checksum. It never trusts `hdr_len`, `csum_start` or `csum_offset` for GSO frames:
//! the header lengths come from parsing.
//!
//! The kernel limits one UDP GSO send to `UDP_MAX_SEGMENTS` (64 before Linux 6.?, 128 after); with a small
//! MSS a 64 KiB superframe can exceed that, so the I/O layer sends `out[..total_len]` in chunks of at most
//! that many strides. Every chunk boundary is a segment boundary because all strides are equal.

use super::checksum;
use super::headers::{be16, be32, byte, parse, put, Headers, Ip, ETH_HLEN, IPPROTO_TCP, IPPROTO_UDP};
use super::virtio::{
    VirtioNetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4,
};
use super::OffloadError;

const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_PSH: u8 = 0x08;
const TCP_FLAG_CWR: u8 = 0x80;

/// Layout of [`segment`]'s output: `count` segments of `stride` bytes (prefix included), the last one
/// possibly shorter, `total_len` bytes in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub count: usize,
    pub stride: usize,
    pub total_len: usize,
}

/// Segment a TAP read (`hdr` already decoded, `frame` = the Ethernet frame after the virtio header) into
/// Ethernet frames written back to back into `out`, each preceded by a copy of `prefix` (the VXLAN header),
/// so that `out[..total_len]` is exactly what one UDP GSO `sendmsg` with segment size `stride` carries.
///
/// - `GSO_NONE`: finish a `NEEDS_CSUM` checksum (`csum_start`/`csum_offset`, bounds-checked) and emit one
///   segment; the frame is otherwise passed through untouched (any ethertype).
/// - `GSO_TCPV4`/`GSO_TCPV6` (ECN bit allowed): cut the payload every `gso_size` bytes and fix each segment.
/// - `GSO_UDP_L4`: the same for UDP (length and checksum).
/// - `GSO_UDP` (UFO, needs IP fragmentation) and unknown types: `Err(Unsupported)`.
///
/// `frame` is modified: the checksum fields of the template headers are zeroed (and, for `GSO_NONE`, the
/// finished checksum is stored in place). Ethernet padding after the IP packet is dropped for GSO frames.
pub fn segment(
    hdr: &VirtioNetHdr,
    frame: &mut [u8],
    prefix: &[u8],
    out: &mut [u8],
) -> Result<Segments, OffloadError> {
    match hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_NONE => single(hdr, frame, prefix, out),
        VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_UDP_L4 => {
            split(hdr, frame, prefix, out)
        }
        _ => Err(unsupported(hdr.gso_type)),
    }
}

/// The refusal of a `gso_type` neither segmenter handles: UFO (`GSO_UDP`) and unknown types.
pub(super) fn unsupported(gso_type: u8) -> OffloadError {
    if gso_type & !VIRTIO_NET_HDR_GSO_ECN == VIRTIO_NET_HDR_GSO_UDP {
        OffloadError::Unsupported(gso_type, "UFO needs IP fragmentation; do not enable TUN_F_UFO")
    } else {
        OffloadError::Unsupported(gso_type, "unknown gso_type")
    }
}

/// `hdr` for segmenting `frame` so that every segment's IP packet fits `inner_mtu` bytes (the path MTU to the
/// VTEP minus the VXLAN overhead): a TCP superframe gets its `gso_size` (MSS) lowered if needed, as the kernel
/// does when it segments for a smaller path (`tcp_gso_segment` after `skb_gso_validate_network_len` fails).
/// `GSO_NONE` frames are returned unchanged (the caller compares their length). A UDP GSO superframe whose
/// datagrams do not fit cannot be re-cut (datagram boundaries belong to the application): `Unsupported`.
pub fn fit_mss(hdr: &VirtioNetHdr, frame: &[u8], inner_mtu: usize) -> Result<VirtioNetHdr, OffloadError> {
    let gso = hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN;
    if gso == VIRTIO_NET_HDR_GSO_NONE {
        return Ok(*hdr);
    }
    let h = parse(frame)?;
    let room = inner_mtu.saturating_sub(h.payload_off - ETH_HLEN);
    if usize::from(hdr.gso_size) <= room {
        return Ok(*hdr);
    }
    if gso != VIRTIO_NET_HDR_GSO_TCPV4 && gso != VIRTIO_NET_HDR_GSO_TCPV6 {
        return Err(OffloadError::Unsupported(
            hdr.gso_type,
            "UDP GSO datagrams larger than the path MTU cannot be re-cut",
        ));
    }
    let mss = u16::try_from(room).map_err(|_| OffloadError::SegmentTooLarge(room))?;
    if mss == 0 {
        return Err(OffloadError::ZeroGsoSize);
    }
    Ok(VirtioNetHdr {
        gso_size: mss,
        ..*hdr
    })
}

fn too_small(need: usize, have: usize) -> OffloadError {
    OffloadError::OutputTooSmall { need, have }
}

/// Finish the checksum the way the kernel's `skb_checksum_help` does: sum from `csum_start` to the end of
/// the frame (the field already holds the pseudo-header sum), store the folded complement, 0 → 0xffff.
pub(super) fn finish_partial_checksum(hdr: &VirtioNetHdr, frame: &mut [u8]) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    let offset = usize::from(hdr.csum_offset);
    let at = start + offset;
    let bad = OffloadError::ChecksumOffset {
        start,
        offset,
        len: frame.len(),
    };
    if at + 2 > frame.len() {
        return Err(bad);
    }
    let data = frame.get(start..).ok_or(bad)?;
    let c = checksum::checksum(data, 0);
    // CSUM_MANGLED_0: a computed 0 is sent as 0xffff (equivalent for TCP, required for UDP).
    let c = if c == 0 { 0xffff } else { c };
    put(frame, at, &c.to_be_bytes());
    Ok(())
}

fn single(
    hdr: &VirtioNetHdr,
    frame: &mut [u8],
    prefix: &[u8],
    out: &mut [u8],
) -> Result<Segments, OffloadError> {
    if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        finish_partial_checksum(hdr, frame)?;
    }
    let total = prefix.len() + frame.len();
    let have = out.len();
    let dst = out.get_mut(..total).ok_or(too_small(total, have))?;
    let (p, f) = dst.split_at_mut(prefix.len());
    p.copy_from_slice(prefix);
    f.copy_from_slice(frame);
    Ok(Segments {
        count: 1,
        stride: total,
        total_len: total,
    })
}

fn split(
    hdr: &VirtioNetHdr,
    frame: &mut [u8],
    prefix: &[u8],
    out: &mut [u8],
) -> Result<Segments, OffloadError> {
    let t = Template::prepare(hdr, frame)?;
    t.zero_checksums(frame);
    let hdrs = t.h.payload_off;
    let stride = prefix.len() + hdrs + t.first_chunk();
    let total = (t.count - 1) * stride + prefix.len() + hdrs + t.last_chunk;
    if out.len() < total {
        return Err(too_small(total, out.len()));
    }
    let template = frame.get(..hdrs).ok_or(too_small(hdrs, frame.len()))?;
    for i in 0..t.count {
        let chunk = t.chunk(i);
        let data_at = hdrs + i * t.mss;
        let data = frame
            .get(data_at..data_at + chunk)
            .ok_or(too_small(data_at + chunk, frame.len()))?;
        let seg_start = i * stride;
        let seg_end = seg_start + prefix.len() + hdrs + chunk;
        let seg_out = out.get_mut(seg_start..seg_end).ok_or(too_small(seg_end, total))?;
        let (p, seg) = seg_out.split_at_mut(prefix.len());
        p.copy_from_slice(prefix);
        let (seg_hdrs, seg_data) = seg.split_at_mut(hdrs);
        seg_hdrs.copy_from_slice(template);
        seg_data.copy_from_slice(data);
        t.fix(seg_hdrs, i, checksum::sum(data, 0));
    }
    Ok(Segments {
        count: t.count,
        stride,
        total_len: total,
    })
}

/// A GSO superframe checked and prepared for cutting: its parsed headers (whose checksum fields are zeroed in
/// the frame, so each segment's sums start from a clean header), the segment size and count, and the fields
/// that change per segment. Shared by the copying [`segment`] and the scatter-gather [`super::gso_sg`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Template {
    pub h: Headers,
    pub mss: usize,
    pub count: usize,
    pub last_chunk: usize,
    ip_id: u16,
    seq0: u32,
    flags0: u8,
}

impl Template {
    /// Validate a `GSO_TCPV4`/`GSO_TCPV6`/`GSO_UDP_L4` frame against its virtio header.
    pub fn prepare(hdr: &VirtioNetHdr, frame: &[u8]) -> Result<Template, OffloadError> {
        let gso = hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN;
        let h = parse(frame)?;
        let ok = match gso {
            VIRTIO_NET_HDR_GSO_TCPV4 => h.ip == Ip::V4 && h.proto == IPPROTO_TCP,
            VIRTIO_NET_HDR_GSO_TCPV6 => h.ip == Ip::V6 && h.proto == IPPROTO_TCP,
            VIRTIO_NET_HDR_GSO_UDP_L4 => h.proto == IPPROTO_UDP,
            _ => false,
        };
        if !ok {
            return Err(OffloadError::ProtocolMismatch {
                proto: h.proto,
                gso_type: hdr.gso_type,
            });
        }
        let mss = usize::from(hdr.gso_size);
        if mss == 0 {
            return Err(OffloadError::ZeroGsoSize);
        }
        let payload = h.payload_len();
        let count = payload.div_ceil(mss).max(1);
        let last_chunk = payload - (count - 1) * mss;
        let seg_ip_len = h.payload_off - ETH_HLEN + payload.min(mss);
        if seg_ip_len > usize::from(u16::MAX) {
            return Err(OffloadError::SegmentTooLarge(seg_ip_len));
        }
        Ok(Template {
            h,
            mss,
            count,
            last_chunk,
            ip_id: be16(frame, ETH_HLEN + 4),
            seq0: be32(frame, h.l4_off + 4),
            flags0: byte(frame, h.l4_off + 13),
        })
    }

    /// Zero the IPv4 header and L4 checksum fields of `frame` (the template every segment's headers are copied
    /// from), so each segment's sums start from a clean header. Idempotent.
    pub fn zero_checksums(&self, frame: &mut [u8]) {
        let h = &self.h;
        if h.ip == Ip::V4 {
            put(frame, ETH_HLEN + 10, &[0, 0]);
        }
        let csum_at = h.l4_off + if h.proto == IPPROTO_TCP { 16 } else { 6 };
        put(frame, csum_at, &[0, 0]);
    }

    /// Payload bytes of segment `i` (`mss`, the last one `last_chunk`).
    pub fn chunk(&self, i: usize) -> usize {
        if i + 1 == self.count {
            self.last_chunk
        } else {
            self.mss
        }
    }

    pub fn first_chunk(&self) -> usize {
        self.chunk(0)
    }

    /// Rewrite segment `i`'s headers `seg_hdrs` (a copy of the template's `payload_off` header bytes) for a
    /// payload of `chunk(i)` bytes whose ones'-complement sum is `payload_sum`: IPv4 total length, ID and
    /// header checksum (or the IPv6 payload length), TCP sequence number, flags and checksum (or the UDP length
    /// and checksum). The payload itself is not needed: the L4 header is an even number of bytes, so its sum
    /// composes with the payload's.
    pub fn fix(&self, seg_hdrs: &mut [u8], i: usize, payload_sum: u64) {
        let h = &self.h;
        let chunk = self.chunk(i);
        let l4_len = h.payload_off - h.l4_off + chunk;
        let ip_len = h.payload_off - ETH_HLEN + chunk;
        // ip_len <= seg_ip_len <= u16::MAX was checked by prepare; the casts below cannot truncate.
        match h.ip {
            Ip::V4 => {
                put(seg_hdrs, ETH_HLEN + 2, &(ip_len as u16).to_be_bytes());
                // Linux increments the ID per segment (tcp_gso_segment / inet_gso_segment) unless FIXEDID.
                put(
                    seg_hdrs,
                    ETH_HLEN + 4,
                    &self.ip_id.wrapping_add(i as u16).to_be_bytes(),
                );
                let ihl = h.ip_hlen();
                let c = seg_hdrs
                    .get(ETH_HLEN..ETH_HLEN + ihl)
                    .map_or(0, |iph| checksum::checksum(iph, 0));
                put(seg_hdrs, ETH_HLEN + 10, &c.to_be_bytes());
            }
            Ip::V6 => put(seg_hdrs, ETH_HLEN + 4, &((ip_len - 40) as u16).to_be_bytes()),
        }
        let pseudo = h.pseudo(seg_hdrs, l4_len);
        let initial = fold_add(pseudo, payload_sum);
        let l4 = h.l4_off..h.payload_off;
        if h.proto == IPPROTO_TCP {
            let seq = self.seq0.wrapping_add((i * self.mss) as u32);
            put(seg_hdrs, h.l4_off + 4, &seq.to_be_bytes());
            let mut flags = self.flags0;
            if i + 1 != self.count {
                flags &= !(TCP_FLAG_FIN | TCP_FLAG_PSH);
            }
            if i != 0 {
                flags &= !TCP_FLAG_CWR;
            }
            put(seg_hdrs, h.l4_off + 13, &[flags]);
            let c = seg_hdrs.get(l4).map_or(0, |l4| checksum::checksum(l4, initial));
            put(seg_hdrs, h.l4_off + 16, &c.to_be_bytes());
        } else {
            put(seg_hdrs, h.l4_off + 4, &(l4_len as u16).to_be_bytes());
            let c = seg_hdrs.get(l4).map_or(0, |l4| checksum::checksum(l4, initial));
            put(
                seg_hdrs,
                h.l4_off + 6,
                &(if c == 0 { 0xffff } else { c }).to_be_bytes(),
            );
        }
    }
}

/// Two running sums added without overflow (folded first: only the folded value matters).
fn fold_add(a: u64, b: u64) -> u64 {
    u64::from(checksum::fold(a)) + u64::from(checksum::fold(b))
}

#[cfg(test)]
mod tests;
