//! The ICMP "fragmentation needed" / "packet too big" builder (`dataplane::engine::too_big`) on hostile frames
//! from the TAP: it never panics, and a reply is a well-formed Ethernet frame back to the sender.
#![no_main]
use dataplane::engine::too_big::{reply, MAX_REPLY_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mtu, frame) = match data.split_first_chunk::<4>() {
        Some((m, f)) => (u32::from_be_bytes(*m), f),
        None => return,
    };
    let mut out = [0u8; MAX_REPLY_LEN];
    if let Some(n) = reply(frame, mtu, &mut out) {
        assert!((14 + 28..=MAX_REPLY_LEN).contains(&n));
        assert_eq!(&out[0..6], &frame[6..12]);
    }
});
