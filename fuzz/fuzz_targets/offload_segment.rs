//! Any TAP read (virtio-net header + frame) through TSO segmentation: `offload::segment` never panics, never
//! reports more output than the buffer holds, and its layout is self-consistent (equal strides, a shorter last
//! segment at most). Input: byte 0 picks the output buffer size (so `OutputTooSmall` paths run too), bytes 1..11
//! are the virtio header, the rest is the frame.
//!
//! Differential: the scatter-gather `offload::segment_sg` (headers in a small buffer, payload left in the frame)
//! must accept exactly what `segment` accepts when both have room, and rebuild the same bytes.
#![no_main]
use dataplane::offload::{segment, segment_sg, VirtioNetHdr, VIRTIO_NET_HDR_LEN};
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
    let mut sg_frame = frame.clone();
    let out_len = match size_sel % 4 {
        0 => 64,
        1 => 2_048,
        2 => 16_384,
        _ => 2 * 65_536 + 4_096,
    };
    let mut out = vec![0u8; out_len];
    let copied = segment(&hdr, &mut frame, &PREFIX, &mut out);
    let mut hdr_out = vec![0u8; 64 * 256];
    let sg = segment_sg(&hdr, &mut sg_frame, &PREFIX, &mut hdr_out);
    if let (Ok(c), Ok(l)) = (&copied, &sg) {
        // Same segments, byte for byte: headers from `hdr_out`, payload from the (possibly fixed-up) frame.
        assert_eq!(c.count, l.count, "{c:?} vs {l:?}");
        for i in 0..l.count {
            let (h, p) = (&hdr_out[l.headers(i)], &sg_frame[l.payload(i)]);
            let seg = &out[i * c.stride..(i * c.stride + h.len() + p.len()).min(c.total_len)];
            assert_eq!(&seg[..h.len()], h, "segment {i} headers");
            assert_eq!(&seg[h.len()..], p, "segment {i} payload");
        }
    }
    if let (Ok(c), Err(e)) = (&copied, &sg) {
        // Only a lack of header room may refuse what the copying path took.
        assert!(matches!(e, dataplane::offload::OffloadError::OutputTooSmall { .. }), "{c:?} but {e:?}");
    }
    if let Ok(s) = copied {
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
