//! Any TAP read (virtio-net header + frame) through TSO segmentation: `offload::segment` never panics, never
//! reports more output than the buffer holds, and its layout is self-consistent (equal strides, a shorter last
//! segment at most). Input: byte 0 picks the output buffer size (so `OutputTooSmall` paths run too), bytes 1..11
//! are the virtio header, the rest is the frame.
#![no_main]
use dataplane::offload::{segment, VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use libfuzzer_sys::fuzz_target;

const PREFIX: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 42, 0];

fuzz_target!(|data: &[u8]| {
    let Some((&size_sel, rest)) = data.split_first() else { return };
    if rest.len() < VIRTIO_NET_HDR_LEN {
        return;
    }
    let (h, frame) = rest.split_at(VIRTIO_NET_HDR_LEN);
    let Ok(hdr) = VirtioNetHdr::decode(h) else { return };
    let mut frame = frame.to_vec();
    let out_len = match size_sel % 4 {
        0 => 64,
        1 => 2_048,
        2 => 16_384,
        _ => 2 * 65_536 + 4_096,
    };
    let mut out = vec![0u8; out_len];
    if let Ok(s) = segment(&hdr, &mut frame, &PREFIX, &mut out) {
        assert!(s.total_len <= out.len(), "total_len {} > buffer {}", s.total_len, out.len());
        if s.count > 0 {
            assert!(s.stride > 0);
            assert!(s.total_len <= s.count * s.stride, "{s:?}");
            assert!(s.total_len > (s.count - 1) * s.stride, "{s:?}");
            // Every segment starts with the caller's prefix.
            for i in 0..s.count {
                let at = i * s.stride;
                assert_eq!(&out[at..at + PREFIX.len()], &PREFIX, "segment {i} of {s:?}");
            }
        }
    }
});
