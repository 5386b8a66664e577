//! The network catalog, IPAM and membership messages: round trips, truncations, bit flips and
//! property tests (never a panic, whatever decodes still validates).

use super::*;
use crate::attest::Attestation;
use crate::catalog::{NetworkDef, NetworkRecord};
use crate::identity::tests::signer;
use crate::ipam::BlockGrant;

fn samples() -> Vec<Vec<u8>> {
    let ca = signer();
    let k = signer();
    let att = Attestation::issue(
        &ca,
        NodeId(3),
        vec![std::net::IpAddr::from([10, 0, 0, 3])],
        false,
        k.public_key(),
    )
    .unwrap();
    let d = NetworkDef::new(
        "blue",
        100,
        "10.20.0.0/16".parse().unwrap(),
        Some(1450),
        true,
        None,
    )
    .unwrap();
    let identity = NodeIdentity::signed(
        std::net::SocketAddr::from(([10, 0, 0, 3], 7948)),
        std::net::IpAddr::from([10, 0, 0, 3]),
        7,
        att.clone(),
        &k,
    )
    .unwrap();
    let r = NetworkRecord::sign(&k, att, "blue", 100, 1, Some(d)).unwrap();
    let g = BlockGrant::issue(
        &ca,
        "blue",
        "10.20.0.0/26".parse().unwrap(),
        NodeId(3),
        1,
        false,
        NodeId(1),
    )
    .unwrap();
    vec![
        encode_sync(&SyncMessage::Catalog {
            records: vec![r.clone()],
        })
        .unwrap(),
        encode_sync(&SyncMessage::Grants {
            list: vec![g.clone()],
        })
        .unwrap(),
        encode_sync(&SyncMessage::BlockRequest {
            network: "blue".into(),
            requester: NodeId(3),
            want: 2,
            sig: vec![1; 64],
        })
        .unwrap(),
        encode_sync(&SyncMessage::Digest {
            reply: true,
            owners: vec![],
            revoked: 1,
            catalog: 2,
            grants: 3,
        })
        .unwrap(),
        encode_sync(&SyncMessage::Summary {
            reply: false,
            root: u64::MAX,
            buckets: vec![1, 2, 3],
            revoked: 1,
            catalog: 2,
            grants: 3,
        })
        .unwrap(),
        encode_sync(&SyncMessage::BucketDigest {
            reply: true,
            k: 8,
            which: vec![0, 7],
            owners: vec![OwnerDigest {
                owner: NodeId(5),
                generation: 1,
                hash: 9,
                max_seq: 3,
            }],
        })
        .unwrap(),
        encode_broadcast(&Broadcast::Network(r)).unwrap(),
        encode_broadcast(&Broadcast::Grant(g)).unwrap(),
        encode_sync(&SyncMessage::Hello {
            identity: identity.clone(),
        })
        .unwrap(),
        encode_sync(&SyncMessage::Down {
            identity: identity.clone(),
        })
        .unwrap(),
        encode_sync(&SyncMessage::Introduce {
            identity,
            listed: true,
        })
        .unwrap(),
    ]
}

/// The new messages round-trip; every truncation and single-bit flip decodes to Ok or Err (never a
/// panic), and whatever decodes still validates without panicking.
#[test]
fn new_messages_roundtrip_and_never_panic() {
    for b in samples() {
        let ok = decode(&b).is_ok() || decode_broadcast(&b).is_ok();
        assert!(ok);
        for n in 0..b.len() {
            let _ = decode(&b[..n]);
            let _ = decode_broadcast(&b[..n]);
        }
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                check(&c);
            }
        }
    }
}

fn check(bytes: &[u8]) {
    if let Ok(Packet::Sync(
        SyncMessage::Hello { identity }
        | SyncMessage::Down { identity }
        | SyncMessage::Introduce { identity, .. },
    )) = decode(bytes)
    {
        let _ = crate::identity::Verifier::new(vec![4; 65]).check(&identity);
    }
    if let Ok(Packet::Sync(SyncMessage::Catalog { records })) = decode(bytes) {
        for r in records {
            let _ = r.verify(&[4; 65]);
        }
    }
    if let Ok(Packet::Sync(SyncMessage::Grants { list })) = decode(bytes) {
        for g in list {
            let _ = g.verify(&[4; 65]);
        }
    }
    match decode_broadcast(bytes) {
        Ok(Broadcast::Network(r)) => {
            let _ = r.well_formed();
        }
        Ok(Broadcast::Grant(g)) => {
            let _ = g.well_formed();
        }
        Ok(Broadcast::Fdb(a)) => {
            let _ = a.entry.well_formed();
        }
        _ => {}
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bodies behind a valid envelope, and arbitrary broadcasts, never panic.
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut b = vec![WIRE_VERSION, KIND_SYNC];
            b.extend_from_slice(&body);
            check(&b);
            check(&body);
        }

        /// Small-variant-index prefixes (Catalog = 5, Grants = 6, BlockRequest = 7, Hello = 10,
        /// Down = 11, Introduce = 12; Network = 3,
        /// Grant = 4) with random tails reach the new decoders.
        #[test]
        fn new_variants_with_random_tails(kind in 3u8..13, tail in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut b = vec![WIRE_VERSION, KIND_SYNC, kind];
            b.extend_from_slice(&tail);
            check(&b);
            let mut c = vec![kind];
            c.extend_from_slice(&tail);
            check(&c);
        }
    }
}
