//! TX scatter-gather: a TAP read is made straight into the send batch's spare area and sent from there. Each
//! segment's rebuilt headers go into a few bytes after the read ([`offload::segment_sg`]) and its payload
//! stays where the read put it, so a UDP GSO message is the iovec list `[hdr0, pay0, hdr1, pay1, …]` over the
//! batch's region (a frame without GSO is one iovec: the VXLAN header is written into the headroom right in
//! front of it). No payload byte is copied in userspace.
//!
//! Buffering: the read buffers *are* the batch's data region, so they stay untouched until the batch is
//! flushed, and nothing is allocated per packet. Before each read the caller makes sure a whole read plus
//! its headers fits ([`must_flush_before_read`]); a frame that still does not fit (tiny MSS, a flood to very
//! many VTEPs) flushes the batch and is moved to the front of the region, once.
//!
//! Kernel limits honoured by the plan ([`messages`]): at most [`MAX_GSO_SEGMENTS`] segments and
//! [`MAX_GSO_PAYLOAD`] bytes per UDP GSO send, all segments but the last of equal size, and at most
//! `UIO_MAXIOV` (1024) iovecs per message (2 per segment: 128).

use std::net::SocketAddr;
use std::ops::Range;

use crate::io::SendBatch;
use crate::offload::{self, OffloadError, SgLayout, VirtioNetHdr};
use crate::stats::{Counters, DropReason};
use crate::wire::VXLAN_HEADER_LEN;

/// Bytes reserved in front of each TAP read: the VXLAN header of a frame sent whole goes there.
pub(super) const HEADROOM: usize = VXLAN_HEADER_LEN;
/// UDP GSO carries at most this many segments in one send (kernel UDP_MAX_SEGMENTS).
pub(super) const MAX_GSO_SEGMENTS: usize = crate::io::GSO_MAX_SEGMENTS;
/// One GSO send is one IP datagram before segmentation: 65535 - 20 (IPv4) - 8 (UDP). A 64 KiB TCP superframe
/// grows by the per-segment headers when re-encapsulated, so it often needs two sends.
pub(super) const MAX_GSO_PAYLOAD: usize = 65_507;
/// Header room kept free after a read: 64 KiB at MSS 1398 needs 47 × 74 bytes; this covers MSS down to ~600
/// without the flush-and-move path.
const HDR_RESERVE: usize = 16 * 1024;
/// Message and piece table room kept free before a read (a superframe to one VTEP: 2 messages, 94 pieces).
const MSG_RESERVE: usize = 64;
const PIECE_RESERVE: usize = 256;
/// Reads start on a cache line.
const ALIGN: usize = 64;

/// Whether `send` must be flushed before a TAP read of up to `read_max` bytes goes into its spare area.
pub(super) fn must_flush_before_read(send: &SendBatch, read_max: usize) -> bool {
    send.remaining() < HEADROOM + read_max + HDR_RESERVE
        || send.msgs_free() < MSG_RESERVE
        || send.pieces_free() < PIECE_RESERVE
}

/// Segments per UDP message for segments of `stride` wire bytes.
pub(super) fn segments_per_message(stride: usize, udp_gso: bool) -> usize {
    if udp_gso {
        (MAX_GSO_PAYLOAD / stride.max(1)).clamp(1, MAX_GSO_SEGMENTS)
    } else {
        1
    }
}

/// The UDP messages that carry `count` segments of `stride` bytes (the last may be shorter), at most
/// `per_msg` segments each: `(segment indices, gso_size)`, with `gso_size` 0 for a message of one segment
/// (no `UDP_SEGMENT` needed). Pure send planning, tested without sockets.
pub(super) fn messages(
    count: usize,
    stride: usize,
    per_msg: usize,
) -> impl Iterator<Item = (Range<usize>, u16)> {
    let per_msg = per_msg.max(1);
    let gso_size = u16::try_from(stride).unwrap_or(0);
    (0..count).step_by(per_msg).map(move |start| {
        let end = (start + per_msg).min(count);
        (start..end, if end - start > 1 { gso_size } else { 0 })
    })
}

/// The piece-table entries of segments `segs` when segment `i`'s header and payload are pieces
/// `first + 2i` and `first + 2i + 1` (only the last segment may lack a payload piece: `end` bounds it).
pub(super) fn pieces_of(segs: Range<usize>, first: usize, end: usize) -> Range<usize> {
    let start = first + 2 * segs.start;
    start.min(end)..(first + 2 * segs.end).min(end)
}

/// Segment the TAP read at `frame` (a range of `send`'s spare area, at least [`HEADROOM`] bytes in) and
/// queue it for every destination through send socket `sock`, counting as the copying path did (`rx_frames`,
/// `rx_bytes`, `gso_segments` per message, `tx_datagrams` or a `SendError` drop per destination). `flush`
/// sends and clears the batch; it is called at most once, when the frame does not fit what is left.
#[allow(clippy::too_many_arguments)]
pub(super) fn queue_frame(
    send: &mut SendBatch,
    frame: Range<usize>,
    hdr: &VirtioNetHdr,
    prefix: &[u8; VXLAN_HEADER_LEN],
    dests: &[SocketAddr],
    sock: u16,
    udp_gso: bool,
    counters: &Counters,
    mut flush: impl FnMut(&mut SendBatch),
) -> Result<(), OffloadError> {
    if frame.start < HEADROOM || frame.start > frame.end {
        return Err(OffloadError::OutputTooSmall {
            need: HEADROOM,
            have: frame.start,
        });
    }
    let mut moved = false;
    // Bytes of the spare area in use so far (headroom, virtio header, frame, then the segment headers).
    let layout = loop {
        let spare = send.spare();
        let end = frame.end.min(spare.len());
        let (head, hdr_out) = spare.split_at_mut(end);
        let f = head.get_mut(frame.clone()).ok_or(OffloadError::OutputTooSmall {
            need: frame.end,
            have: end,
        })?;
        match offload::segment_sg(hdr, f, prefix, hdr_out) {
            Ok(l) => break l,
            Err(OffloadError::OutputTooSmall { .. }) if !moved && send.used() > 0 => {
                flush_and_move(send, frame.end, &mut flush);
                moved = true;
            }
            Err(e) => return Err(e),
        }
    };
    let whole = layout.is_whole_frame();
    let count = layout.count;
    let last_empty = layout.payload(count - 1).is_empty();
    let n_pieces = if whole {
        1
    } else {
        2 * count - usize::from(last_empty)
    };
    let stride = layout.stride();
    let per_msg = segments_per_message(stride, udp_gso);
    let n_msgs = dests.len() * count.div_ceil(per_msg);
    let used_len = frame.end + if whole { 0 } else { layout.headers_len() };
    if (send.pieces_free() < n_pieces || send.msgs_free() < n_msgs) && !moved && send.used() > 0 {
        flush_and_move(send, used_len, &mut flush);
    }
    if whole {
        // The VXLAN header goes right in front of the frame (over the headroom or the decoded virtio header).
        if let Some(h) = send.spare().get_mut(frame.start - HEADROOM..frame.start) {
            h.copy_from_slice(prefix);
        }
    }
    let base = send.commit(used_len.next_multiple_of(ALIGN)).start;
    let first = send.pieces_len();
    if whole {
        let _ = send.piece(base + frame.start - HEADROOM..base + frame.end);
    } else {
        let hdrs = base + frame.end;
        for i in 0..count {
            let h = layout.headers(i);
            let _ = send.piece(hdrs + h.start..hdrs + h.end);
            let p = layout.payload(i);
            if !p.is_empty() {
                let _ = send.piece(base + frame.start + p.start..base + frame.start + p.end);
            }
        }
    }
    let end = send.pieces_len();
    count_queued(counters, &layout);
    if end - first != n_pieces || send.msgs_free() < n_msgs {
        // Even an empty batch cannot hold this frame (thousands of tiny segments, e.g. a hostile GSO frame
        // with gso_size ≤ 8): drop it whole rather than send some of its messages.
        counters.count_drop(DropReason::SendError, (count * dests.len()) as u64);
        return Ok(());
    }
    for dst in dests {
        let mut pushed = true;
        for (segs, gso) in messages(count, stride, per_msg) {
            counters.gso_segments.observe(segs.len() as u64);
            let pieces = if whole {
                first..end
            } else {
                pieces_of(segs, first, end)
            };
            pushed &= send.push_pieces(sock, *dst, pieces, gso);
        }
        if pushed {
            Counters::add(&counters.tx_datagrams, count as u64);
        } else {
            counters.count_drop(DropReason::SendError, count as u64);
        }
    }
    Ok(())
}

fn count_queued(counters: &Counters, l: &SgLayout) {
    Counters::add(&counters.rx_frames, l.count as u64);
    Counters::add(
        &counters.rx_bytes,
        (l.total_len() - l.count * VXLAN_HEADER_LEN) as u64,
    );
}

/// Send what is queued, then move the first `len` bytes of the spare area (the read being handled) to the
/// front of the now empty region, keeping their offsets relative to the spare area.
fn flush_and_move(send: &mut SendBatch, len: usize, flush: &mut impl FnMut(&mut SendBatch)) {
    let base = send.used();
    flush(send);
    // The flush clears the batch; make sure even when it had no messages (only committed bytes).
    send.clear();
    let _ = send.move_to_spare(base..base + len);
}

#[cfg(test)]
mod tests;
