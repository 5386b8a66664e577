//! Envelope tests: byte vectors, round trips, truncations and bit flips of the first message kinds.

use super::*;

fn entry(m: u8, seq: u64, present: bool) -> FdbEntry {
    FdbEntry {
        vni: 42,
        mac: [2, 0, 0, 0, 0, m],
        ips: vec![std::net::IpAddr::from([10, 20, 0, m])],
        seq,
        mobility: seq,
        present,
        sig: vec![7; 64],
    }
}

fn sample() -> SyncMessage {
    SyncMessage::States {
        owners: vec![OwnerDump {
            owner: NodeId(7),
            generation: 3,
            entries: vec![entry(1, 5, true), entry(2, 6, false)],
        }],
    }
}

#[test]
fn roundtrip_sync() {
    let m = sample();
    let b = encode_sync(&m).unwrap();
    assert_eq!(b[0], WIRE_VERSION);
    assert_eq!(decode(&b).unwrap(), Packet::Sync(m));
}

#[test]
fn swim_passthrough() {
    let b = encode_swim(&[9, 8, 7]);
    assert_eq!(b, vec![WIRE_VERSION, KIND_SWIM, 9, 8, 7]);
    assert_eq!(decode(&b).unwrap(), Packet::Swim(&[9, 8, 7]));
}

#[test]
fn rejects_bad_envelopes() {
    assert_eq!(decode(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode(&[WIRE_VERSION]), Err(DecodeError::Truncated));
    assert_eq!(decode(&[1, 0]), Err(DecodeError::Version(1)));
    assert_eq!(decode(&[WIRE_VERSION, 9]), Err(DecodeError::Kind(9)));
}

/// Every truncation and every single-byte corruption of a valid message decodes to Ok or Err,
/// never a panic (postcard bounds lengths by the remaining input).
#[test]
fn truncate_and_flip_never_panic() {
    let b = encode_sync(&sample()).unwrap();
    for n in 0..b.len() {
        let _ = decode(&b[..n]);
    }
    for i in 0..b.len() {
        for bit in 0..8 {
            let mut c = b.clone();
            c[i] ^= 1 << bit;
            let _ = decode(&c);
        }
    }
    let a = encode_broadcast(&Broadcast::Fdb(FdbAdvert {
        owner: NodeId(1),
        generation: 2,
        entry: entry(9, 3, true),
    }))
    .unwrap();
    for n in 0..a.len() {
        assert!(decode_broadcast(&a[..n]).is_err());
    }
    // A huge declared length fails cleanly (serde caps the preallocation, input runs out).
    assert!(decode(&[WIRE_VERSION, KIND_SYNC, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
}
