//! Preallocated batches for `recvmmsg`/`sendmmsg`: the data, and the sockaddr, iovec, cmsg and mmsghdr
//! arrays the syscalls point into. Filled and drained by [`super::socket`]; never reallocated after `new`.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;

use super::sys::{
    empty_iovecs, zeroed_mmsghdrs, zeroed_storage, RECV_CTRL_WORDS, SEND_CTRL_WORDS, UNSPEC_ADDR,
};

/// Result of [`super::UdpSocket::send_batch`].
#[derive(Debug)]
pub struct SendReport {
    /// Messages (not segments) the kernel accepted.
    pub sent: usize,
    /// Messages dropped: rejected by the kernel, or still queued when the wait budget ran out.
    pub failed: usize,
    /// Of `failed`, messages rejected with `EMSGSIZE`: larger than the kernel's path MTU (the path shrank).
    pub too_big: usize,
    /// The most recent error (`TimedOut` when the socket stayed full).
    pub last_error: Option<io::Error>,
}

/// Metadata of one received slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    pub src: SocketAddr,
    /// Bytes in the slot (several datagrams when GRO coalesced them).
    pub len: usize,
    /// Size of each datagram in the slot (GRO segment size; the last one may be shorter); `== len` when
    /// not coalesced. 0 only for an empty (or dropped truncated) slot.
    pub stride: usize,
}

/// Preallocated receive slots for [`super::UdpSocket::recv_batch`].
pub struct RecvBatch {
    pub(super) slot_size: usize,
    pub(super) data: Vec<u8>,
    pub(super) metas: Vec<RecvMeta>,
    pub(super) len: usize,
    pub(super) truncated: u64,
    pub(super) names: Vec<libc::sockaddr_storage>,
    pub(super) iovs: Vec<libc::iovec>,
    pub(super) ctrl: Vec<[u64; RECV_CTRL_WORDS]>,
    pub(super) hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iovs`/`hdrs` only ever point into this batch's own heap buffers, are
// rewritten right before each syscall, and are never dereferenced by Rust code; moving the batch to
// another thread moves those buffers with it.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.metas.len())
            .field("slot_size", &self.slot_size)
            .field("len", &self.len)
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl RecvBatch {
    /// `slots` datagram buffers of `slot_size` bytes. With GRO on, use 65535-byte slots: smaller ones
    /// make the kernel truncate coalesced datagrams (whole segments are kept, see [`RecvBatch::truncated`]).
    pub fn new(slots: usize, slot_size: usize) -> Self {
        let slots = slots.max(1);
        let slot_size = slot_size.max(1);
        RecvBatch {
            slot_size,
            data: vec![0; slots * slot_size],
            metas: vec![
                RecvMeta {
                    src: UNSPEC_ADDR,
                    len: 0,
                    stride: 0
                };
                slots
            ],
            len: 0,
            truncated: 0,
            names: zeroed_storage(slots),
            iovs: empty_iovecs(slots),
            ctrl: vec![[0u64; RECV_CTRL_WORDS]; slots],
            hdrs: zeroed_mmsghdrs(slots),
        }
    }

    /// Slot `i` (`i < len()`) of the last receive. Panics if `i >= capacity()`.
    pub fn get(&self, i: usize) -> (&RecvMeta, &[u8]) {
        let meta = &self.metas[i];
        let start = i * self.slot_size;
        (meta, &self.data[start..start + meta.len])
    }

    /// [`RecvBatch::get`] with the bytes writable (e.g. to complete a checksum in place).
    pub fn get_mut(&mut self, i: usize) -> (&RecvMeta, &mut [u8]) {
        let meta = &self.metas[i];
        let start = i * self.slot_size;
        (meta, &mut self.data[start..start + meta.len])
    }

    /// The datagrams of slot `i`: its bytes split at `stride` (one item when not coalesced).
    pub fn datagrams(&self, i: usize) -> std::slice::Chunks<'_, u8> {
        let (meta, bytes) = self.get(i);
        bytes.chunks(meta.stride.max(1))
    }

    pub fn capacity(&self) -> usize {
        self.metas.len()
    }

    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Slots filled by the last `recv_batch`.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Datagrams that did not fit their slot since creation (a count for the stats, not an error).
    pub fn truncated(&self) -> u64 {
        self.truncated
    }
}

#[derive(Debug, Clone)]
pub(super) struct SendMsg {
    pub(super) dst: SocketAddr,
    /// The message's bytes: these entries of the piece table, in order (one iovec each).
    pub(super) pieces: Range<usize>,
    pub(super) segment_size: u16,
    /// Index of the send socket ([`super::SenderSet`]) this message leaves through.
    pub(super) sock: u16,
    /// Push order, to keep it when messages are grouped by socket.
    pub(super) seq: u32,
}

/// Most iovecs one `sendmsg` takes (the kernel's `UIO_MAXIOV`); longer piece lists are refused.
pub const MAX_PIECES_PER_MSG: usize = 1024;

/// Outgoing datagrams: one contiguous data region (never reallocated), a table of pieces (ranges of committed
/// data, one iovec each) and a table of messages, each a run of pieces. A message of one piece is a plain
/// datagram or GSO train ([`SendBatch::push`]); a message of several is sent scatter-gather
/// ([`SendBatch::push_pieces`]), e.g. each segment's headers and its payload from elsewhere in the region.
/// Several messages may share pieces (flooding without copies).
pub struct SendBatch {
    pub(super) data: Vec<u8>,
    pub(super) used: usize,
    pub(super) msgs: Vec<SendMsg>,
    pub(super) max_msgs: usize,
    pub(super) pieces: Vec<Range<usize>>,
    pub(super) max_pieces: usize,
    pub(super) names: Vec<libc::sockaddr_storage>,
    /// One per piece (not per message).
    pub(super) iovs: Vec<libc::iovec>,
    pub(super) ctrl: Vec<[u64; SEND_CTRL_WORDS]>,
    pub(super) hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: as for RecvBatch: the raw pointers only point into this batch's own heap buffers, are rebuilt
// before each syscall and never dereferenced by Rust code.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("data_bytes", &self.data.len())
            .field("used", &self.used)
            .field("msgs", &self.msgs)
            .field("max_msgs", &self.max_msgs)
            .field("pieces", &self.pieces.len())
            .field("max_pieces", &self.max_pieces)
            .finish()
    }
}

impl SendBatch {
    /// A batch of `data_bytes` and up to `max_msgs` messages of one piece each.
    pub fn new(data_bytes: usize, max_msgs: usize) -> Self {
        Self::with_pieces(data_bytes, max_msgs, max_msgs)
    }

    /// A batch of `data_bytes`, up to `max_msgs` messages and `max_pieces` pieces (iovecs) in all.
    pub fn with_pieces(data_bytes: usize, max_msgs: usize, max_pieces: usize) -> Self {
        let max_msgs = max_msgs.max(1);
        let max_pieces = max_pieces.max(1);
        SendBatch {
            data: vec![0; data_bytes],
            used: 0,
            msgs: Vec::with_capacity(max_msgs),
            max_msgs,
            pieces: Vec::with_capacity(max_pieces),
            max_pieces,
            names: zeroed_storage(max_msgs),
            iovs: empty_iovecs(max_pieces),
            ctrl: vec![[0u64; SEND_CTRL_WORDS]; max_msgs],
            hdrs: zeroed_mmsghdrs(max_msgs),
        }
    }

    /// The unused tail of the data region: write a datagram (or a GSO train) here, then [`commit`].
    ///
    /// [`commit`]: SendBatch::commit
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.data[self.used..]
    }

    /// Mark the first `len` bytes of [`SendBatch::spare`] as used and return their range in the region.
    /// `len` is clamped to [`SendBatch::remaining`].
    pub fn commit(&mut self, len: usize) -> Range<usize> {
        let len = len.min(self.remaining());
        let start = self.used;
        self.used += len;
        start..self.used
    }

    /// Bytes committed so far (the start of [`SendBatch::spare`] in the region).
    pub fn used(&self) -> usize {
        self.used
    }

    /// Move the bytes `range` of the region to the start of the spare area, e.g. a TAP read written into the
    /// spare area before a send cleared the batch, so its offsets relative to [`SendBatch::spare`] stay the
    /// same. `range` must lie in the spare area (committed bytes are never overwritten); returns false (and
    /// moves nothing) otherwise.
    pub fn move_to_spare(&mut self, range: Range<usize>) -> bool {
        if range.start < self.used || range.start > range.end || range.end > self.data.len() {
            return false;
        }
        self.data.copy_within(range, self.used);
        true
    }

    /// Queue `range` (from [`SendBatch::commit`]) for `dst`; with `segment_size != 0` the kernel splits
    /// it into datagrams of that size (GSO; the last may be shorter). Returns false when the message
    /// table is full or the range is not committed data.
    pub fn push(&mut self, dst: SocketAddr, range: Range<usize>, segment_size: u16) -> bool {
        self.push_from(0, dst, range, segment_size)
    }

    /// [`SendBatch::push`] for send socket `sock` of a [`super::SenderSet`].
    pub fn push_from(&mut self, sock: u16, dst: SocketAddr, range: Range<usize>, segment_size: u16) -> bool {
        if self.msgs.len() >= self.max_msgs {
            return false;
        }
        let Some(p) = self.piece(range) else {
            return false;
        };
        self.push_pieces(sock, dst, p..p + 1, segment_size)
    }

    /// Add `range` (committed data) to the piece table for [`SendBatch::push_pieces`]; its index, or `None`
    /// when the table is full or the range is not committed data.
    pub fn piece(&mut self, range: Range<usize>) -> Option<usize> {
        if self.pieces.len() >= self.max_pieces || range.start > range.end || range.end > self.used {
            return None;
        }
        self.pieces.push(range);
        Some(self.pieces.len() - 1)
    }

    /// Queue the message made of pieces `pieces` (indices from [`SendBatch::piece`], sent in order, one iovec
    /// each) for `dst` through send socket `sock`, with `segment_size` as in [`SendBatch::push`]. Messages
    /// may share pieces. Returns false when the message table is full or the pieces are not in the table
    /// (or empty, or more than [`MAX_PIECES_PER_MSG`]).
    pub fn push_pieces(
        &mut self,
        sock: u16,
        dst: SocketAddr,
        pieces: Range<usize>,
        segment_size: u16,
    ) -> bool {
        if self.msgs.len() >= self.max_msgs
            || pieces.start >= pieces.end
            || pieces.end > self.pieces.len()
            || pieces.len() > MAX_PIECES_PER_MSG
        {
            return false;
        }
        let seq = u32::try_from(self.msgs.len()).unwrap_or(u32::MAX);
        self.msgs.push(SendMsg {
            dst,
            pieces,
            segment_size,
            sock,
            seq,
        });
        true
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    pub fn clear(&mut self) {
        self.msgs.clear();
        self.pieces.clear();
        self.used = 0;
    }

    /// Bytes left in the data region.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.used
    }

    /// Free entries in the message table.
    pub fn msgs_free(&self) -> usize {
        self.max_msgs - self.msgs.len()
    }

    /// Entries in the piece table (the index the next [`SendBatch::piece`] gets).
    pub fn pieces_len(&self) -> usize {
        self.pieces.len()
    }

    /// Free entries in the piece table.
    pub fn pieces_free(&self) -> usize {
        self.max_pieces - self.pieces.len()
    }

    /// The committed bytes of `range` (for inspection and tests).
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.data[range.start.min(self.used)..range.end.min(self.used)]
    }

    /// Queued message `i` as (socket, destination, its bytes concatenated, segment size), for tests.
    #[cfg(test)]
    pub(crate) fn message(&self, i: usize) -> (u16, SocketAddr, Vec<u8>, u16) {
        let m = &self.msgs[i];
        let bytes = self.pieces[m.pieces.clone()]
            .iter()
            .flat_map(|r| self.bytes(r.clone()).iter().copied())
            .collect();
        (m.sock, m.dst, bytes, m.segment_size)
    }

    /// Split the region into the committed bytes `range` (writable) and the spare area after them, e.g. to
    /// build headers for a frame read earlier into the batch. `None` if `range` is not committed data.
    pub fn committed_and_spare(&mut self, range: Range<usize>) -> Option<(&mut [u8], &mut [u8])> {
        let (done, spare) = self.data.split_at_mut(self.used);
        Some((done.get_mut(range)?, spare))
    }
}
