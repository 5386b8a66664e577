//! Any datagram on the control channel: the envelope decoder and the broadcast decoder never panic, and whatever
//! decodes re-encodes to something that decodes to the same message.
#![no_main]
use control::messages::{decode, decode_broadcast, encode_broadcast, encode_sync, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Packet::Sync(msg)) = decode(data) {
        let bytes = encode_sync(&msg).expect("a decoded message re-encodes");
        assert_eq!(decode(&bytes), Ok(Packet::Sync(msg)));
    }
    if let Ok(b) = decode_broadcast(data) {
        let bytes = encode_broadcast(&b).expect("a decoded broadcast re-encodes");
        assert_eq!(decode_broadcast(&bytes), Ok(b));
    }
});
