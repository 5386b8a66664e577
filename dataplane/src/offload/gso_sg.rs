//! TX scatter-gather segmentation: the headers of every segment of a TAP read (a TSO/USO superframe, or one
//! frame needing its checksum finished) are written back to back into a small header buffer, while the
//! payloads stay where the TAP read put them. Segment `i` on the wire is `headers(i)` of the header buffer
//! followed by `payload(i)` of the frame; a UDP GSO `sendmsg` with iovecs `[hdr0, pay0, hdr1, pay1, …]` and
//! `UDP_SEGMENT = stride` carries them, so the payload is never copied in userspace (the kernel copies it
//! once into its skb, as before).
//!
//! The per-segment header rewrite is the copying [`super::segment`]'s ([`Template::fix`]); each segment's L4
//! checksum sums its payload in place. The same `hdr`, `frame` and `prefix` give byte-for-byte the segments
//! [`super::segment`] lays out (a property test checks it).
//!
//! Never mutates `frame` before every check passed, so a caller may retry with a bigger header buffer after
//! [`OffloadError::OutputTooSmall`].

use std::ops::Range;

use super::checksum;
use super::gso::{finish_partial_checksum, unsupported, Template};
use super::virtio::{
    VirtioNetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4,
};
use super::OffloadError;

/// Where [`segment_sg`] put segment `i`: its headers at [`SgLayout::headers`] of the header buffer and its
/// payload at [`SgLayout::payload`] of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SgLayout {
    pub count: usize,
    /// Header bytes per segment: the prefix, then Ethernet + IP + L4 headers (just the prefix for a whole
    /// frame).
    pub hdr_len: usize,
    /// Offset of segment 0's payload in the frame (0 for a whole frame).
    pub payload_off: usize,
    /// Payload bytes of every segment but the last.
    pub mss: usize,
    /// Payload bytes of the last segment.
    pub last_chunk: usize,
}

impl SgLayout {
    /// Segment `i`'s headers in the header buffer.
    pub fn headers(&self, i: usize) -> Range<usize> {
        i * self.hdr_len..(i + 1) * self.hdr_len
    }

    /// Segment `i`'s payload in the frame.
    pub fn payload(&self, i: usize) -> Range<usize> {
        let start = self.payload_off + i * self.mss;
        let len = if i + 1 == self.count {
            self.last_chunk
        } else {
            self.mss
        };
        start..start + len
    }

    /// Bytes of header buffer used.
    pub fn headers_len(&self) -> usize {
        self.count * self.hdr_len
    }

    /// Wire size of every segment but the last (the UDP GSO segment size).
    pub fn stride(&self) -> usize {
        self.hdr_len + if self.count > 1 { self.mss } else { self.last_chunk }
    }

    /// Bytes of all segments together (prefixes included).
    pub fn total_len(&self) -> usize {
        self.headers_len() + (self.count - 1) * self.mss + self.last_chunk
    }

    /// One segment that is the prefix and the whole frame (`GSO_NONE`): the caller may place the prefix
    /// right in front of the frame instead and send one contiguous buffer.
    pub fn is_whole_frame(&self) -> bool {
        self.count == 1 && self.payload_off == 0
    }
}

/// Segment a TAP read (`hdr` already decoded, `frame` = the Ethernet frame after the virtio header), writing
/// each segment's headers (a copy of `prefix`, then the rebuilt Ethernet/IP/L4 headers) back to back into
/// `hdr_out`. Frame types and checks as [`super::segment`]: `GSO_NONE` finishes a `NEEDS_CSUM` checksum in
/// place and gives one segment; TCPv4/TCPv6/UDP_L4 superframes are cut every `gso_size` bytes; UFO and
/// unknown types are `Unsupported`. `frame` is modified only on success (checksum fields).
pub fn segment_sg(
    hdr: &VirtioNetHdr,
    frame: &mut [u8],
    prefix: &[u8],
    hdr_out: &mut [u8],
) -> Result<SgLayout, OffloadError> {
    match hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_NONE => {
            let have = hdr_out.len();
            let out = hdr_out
                .get_mut(..prefix.len())
                .ok_or(too_small(prefix.len(), have))?;
            if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
                finish_partial_checksum(hdr, frame)?;
            }
            out.copy_from_slice(prefix);
            Ok(SgLayout {
                count: 1,
                hdr_len: prefix.len(),
                payload_off: 0,
                mss: frame.len(),
                last_chunk: frame.len(),
            })
        }
        VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_UDP_L4 => {
            split(hdr, frame, prefix, hdr_out)
        }
        _ => Err(unsupported(hdr.gso_type)),
    }
}

fn too_small(need: usize, have: usize) -> OffloadError {
    OffloadError::OutputTooSmall { need, have }
}

fn split(
    hdr: &VirtioNetHdr,
    frame: &mut [u8],
    prefix: &[u8],
    hdr_out: &mut [u8],
) -> Result<SgLayout, OffloadError> {
    let t = Template::prepare(hdr, frame)?;
    let hdrs = t.h.payload_off;
    let layout = SgLayout {
        count: t.count,
        hdr_len: prefix.len() + hdrs,
        payload_off: hdrs,
        mss: t.mss,
        last_chunk: t.last_chunk,
    };
    let need = layout.headers_len();
    if hdr_out.len() < need {
        return Err(too_small(need, hdr_out.len()));
    }
    // parse() bounded the IP packet by the frame, and the payload ends where the IP packet does.
    let end = layout.payload(t.count - 1).end;
    if end > frame.len() {
        return Err(too_small(end, frame.len()));
    }
    t.zero_checksums(frame);
    let template = frame.get(..hdrs).ok_or(too_small(hdrs, frame.len()))?;
    for (i, out) in hdr_out.chunks_exact_mut(layout.hdr_len).take(t.count).enumerate() {
        let (p, seg_hdrs) = out.split_at_mut(prefix.len());
        p.copy_from_slice(prefix);
        seg_hdrs.copy_from_slice(template);
        let data = frame.get(layout.payload(i)).unwrap_or(&[]);
        t.fix(seg_hdrs, i, checksum::sum(data, 0));
    }
    Ok(layout)
}

#[cfg(test)]
mod tests;
