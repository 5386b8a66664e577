//! Any sequence of decapsulated inner frames through the RX coalescer: `Coalescer::push`/`flush` never panic,
//! every emitted write starts with a decodable virtio header, uses at most `2 + MAX_SEGMENTS` iovecs and fits a
//! TAP write (≤ MAX_SUPERFRAME_LEN), and no frame is lost or invented: the payload bytes emitted equal the bytes
//! pushed minus the headers merged away. The frames are ranges of the input itself, which plays the receive
//! buffer the coalescer gathers payloads from without copying.
//! Input: byte 0 picks the number of flow slots (0..=8), then frames as (u16 LE length, bytes)*.
#![no_main]
use dataplane::offload::{Coalescer, PushOutcome, Region, VirtioNetHdr, MAX_SEGMENTS, MAX_SUPERFRAME_LEN};
use libfuzzer_sys::fuzz_target;
use std::io::IoSlice;

fuzz_target!(|data: &[u8]| {
    let Some((&flows, _)) = data.split_first() else { return };
    let region = Region::new(data, 1);
    let mut gro = Coalescer::new(usize::from(flows % 9));
    let mut pushed = 0usize;
    let mut emitted = 0usize;
    let mut frames_out = 0usize;
    let mut check = |iov: &[IoSlice<'_>]| {
        assert!(iov.len() >= 2 && iov.len() <= 2 + MAX_SEGMENTS, "{} iovecs", iov.len());
        assert!(VirtioNetHdr::decode(&iov[0]).is_ok());
        let len: usize = iov[1..].iter().map(|s| s.len()).sum();
        assert!(len <= MAX_SUPERFRAME_LEN, "emitted {len} bytes");
        emitted += len;
        frames_out += 1;
    };
    let mut frames_in = 0usize;
    let mut at = 1;
    while at + 2 <= data.len() {
        let len = usize::from(u16::from_le_bytes([data[at], data[at + 1]]));
        let start = at + 2;
        let end = (start + len).min(data.len());
        at = end;
        pushed += end - start;
        frames_in += 1;
        let outcome = gro.push(region, start..end, &mut check);
        if let PushOutcome::PassedThrough(_) = outcome {
            // emitted right away, unchanged
        }
    }
    gro.flush(region, &mut check);
    assert_eq!(gro.pending(), 0);
    assert_eq!(gro.stale_drops(), 0);
    // Merging only removes repeated headers; it never adds bytes or frames.
    assert!(emitted <= pushed, "emitted {emitted} > pushed {pushed}");
    assert!(frames_out <= frames_in, "emitted {frames_out} frames from {frames_in}");
});
