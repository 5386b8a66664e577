//! Any decapsulated inner frame through the receive-side checksum and superframe handling
//! (`offload::partial`, `offload::tunnel`): nothing panics, a `NEEDS_CSUM` header always points inside the
//! frame, a completed partial checksum is no longer partial unless the complete value equals the pseudo-header
//! sum, and a superframe header always yields a frame `offload::segment` can cut.
//! Input: bytes 0..2 the TAP MTU (u16 LE, at least 576 as `--mtu` allows), then the frame.
#![no_main]
use dataplane::offload::{fill_partial, partial_checksum, segment, superframe_hdr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mtu, frame)) = data.split_first_chunk::<2>() else { return };
    let mtu = u16::from_le_bytes(*mtu).max(576);
    let mut f = frame.to_vec();
    if let Some(h) = partial_checksum(&f) {
        assert!(usize::from(h.csum_start) + usize::from(h.csum_offset) + 2 <= f.len());
        let at = usize::from(h.csum_start) + usize::from(h.csum_offset);
        let before = [f[at], f[at + 1]];
        assert!(fill_partial(&mut f));
        if partial_checksum(&f).is_some() {
            assert_eq!([f[at], f[at + 1]], before, "still partial only if the value did not change");
        }
    } else {
        let copy = f.clone();
        assert!(!fill_partial(&mut f));
        assert_eq!(f, copy, "a frame without a partial checksum is untouched");
    }
    let mut g = frame.to_vec();
    if let Some(h) = superframe_hdr(&mut g, mtu) {
        // The size of the worker's buffer for this (dataplane::worker, run_rx).
        let mut out = vec![0u8; 2 * 65_536];
        assert!(segment(&h, &mut g, &[], &mut out).is_ok(), "{h:?}");
    }
});
