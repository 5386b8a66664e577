//! The gossip wire envelope: `[version u8][kind u8][body]`.
//!
//! - kind 0: a foca (SWIM) packet, passed through untouched (foca encodes it with postcard itself).
//! - kind 1: a [`SyncMessage`] (anti-entropy digest/state, leave), postcard-encoded.
//!
//! Leave notices, revocations, network records and grants travel inside foca packets as custom
//! broadcasts, postcard-encoded [`Broadcast`]s. FDB adverts do not: they leave as `States` pieces
//! within the gossip budget.
//! postcard was chosen over bincode: varint integers make these messages small, it is the codec foca
//! already puts on the wire, and its decoder returns `Err` (never panics) on truncated or garbage input.
//! Owns: byte layout and versioning. Must never: panic on input, or allocate unboundedly from a length
//! field (serde caps preallocation from a declared length at 1 MiB and decoding fails as soon as the
//! input runs out; the transport bounds a message to `transport::MAX_MESSAGE`).

use serde::{Deserialize, Serialize};

use crate::attest::Signer;
use crate::catalog::NetworkRecord;
use crate::identity::{NodeId, NodeIdentity};
use crate::ipam::BlockGrant;
use crate::revocation::Revocation;

/// Bump when the envelope or any body changes incompatibly; receivers drop other versions.
/// 2: signed identities, adverts, dump entries and leaves; revocations.
/// 3: adverts keyed by (vni, mac) with IP bindings; network catalog and IPAM grants.
/// 4: owner digests carry the highest seq held (anti-entropy ships only the missing tail).
/// 5: anti-entropy rounds start with a root hash (`Summary`, `BucketDigest`); a version-4 node could not decode
///    them and would silently stop converging, so it is refused by version instead.
/// 6: `Hello` (a node introduces its signed identity to a member it has just learnt of) and `Down` (a
///    member declared down is announced straight to every member); a version-5 node would drop them
///    as undecodable and learn joiners and deaths only by gossip, so it is refused by version.
/// 7: `Introduce` (the member that answered a join introduces the joiner to every member it holds,
///    and relays tables both ways over the connections it has); a version-6 node would never hear of
///    a joiner that no longer dials it first, so it is refused by version.
/// 8: `Introduce` says whether the join answer listed every member (`listed`): then the joiner and the
///    members put off their direct exchange while the answerer relays; a version-7 node would drop
///    every introduction as undecodable, so it is refused by version.
pub const WIRE_VERSION: u8 = 8;
const KIND_SWIM: u8 = 0;
const KIND_SYNC: u8 = 1;

/// Domain strings of a node's signatures over its own claims.
pub const DOMAIN_FDB: &[u8] = b"overlayd-fdb/1";
pub const DOMAIN_LEAVE: &[u8] = b"overlayd-leave/1";
pub const DOMAIN_REVOKE_REQUEST: &[u8] = b"overlayd-revoke-request/1";
pub const DOMAIN_BLOCK_REQUEST: &[u8] = b"overlayd-block-request/1";

/// Most IP bindings one advert may carry (more: the advert is refused; the local side truncates).
pub const MAX_IPS_PER_ENTRY: usize = 8;

/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// Why a received buffer is not a valid gossip message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty or truncated envelope (need version and kind bytes)")]
    Truncated,
    #[error("wire version {0} not supported (this node speaks {WIRE_VERSION}); upgrade the older overlayd")]
    Version(u8),
    #[error("unknown message kind {0}; the sender runs a newer overlayd or is not overlayd")]
    Kind(u8),
    #[error("malformed message body: {0}")]
    Body(String),
    #[error("signature of node {0} does not verify")]
    Signature(NodeId),
}

/// A decoded envelope.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Swim(&'a [u8]),
    Sync(SyncMessage),
}

/// One owner's claim on one MAC of one VNI, with the IP addresses bound to it (ARP/ND suppression),
/// signed by the owner (see [`FdbEntry::signed_bytes`]).
/// `present == false` is a withdrawal (tombstone) so that removals propagate and order against re-adds.
/// `seq` counts the owner's changes within its generation; `mobility` orders claims on the same MAC
/// across owners (EVPN MAC mobility, RFC 7432 §15: one more than the highest claim the owner had seen).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    pub vni: u32,
    pub mac: [u8; 6],
    /// At most [`MAX_IPS_PER_ENTRY`], sorted and deduplicated by the owner.
    pub ips: Vec<std::net::IpAddr>,
    pub seq: u64,
    pub mobility: u64,
    pub present: bool,
    pub sig: Vec<u8>,
}

#[derive(Serialize)]
struct SignedEntryFields<'a> {
    owner: NodeId,
    generation: u64,
    vni: u32,
    mac: [u8; 6],
    ips: &'a [std::net::IpAddr],
    seq: u64,
    mobility: u64,
    present: bool,
}

impl FdbEntry {
    /// What the owner signs: the entry together with its owner and generation, so an entry cannot be
    /// moved to another owner's table or generation.
    pub fn signed_bytes(&self, owner: NodeId, generation: u64) -> Vec<u8> {
        postcard::to_allocvec(&SignedEntryFields {
            owner,
            generation,
            vni: self.vni,
            mac: self.mac,
            ips: &self.ips,
            seq: self.seq,
            mobility: self.mobility,
            present: self.present,
        })
        .unwrap_or_default()
    }

    /// A new entry of ours, signed. `key` is (vni, mac).
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        signer: &Signer,
        owner: NodeId,
        generation: u64,
        key: (u32, [u8; 6]),
        ips: Vec<std::net::IpAddr>,
        seq: u64,
        mobility: u64,
        present: bool,
    ) -> Self {
        let mut e = FdbEntry {
            vni: key.0,
            mac: key.1,
            ips,
            seq,
            mobility,
            present,
            sig: Vec::new(),
        };
        // Signing fails only without OS randomness; an unsigned entry is then refused by everyone,
        // and anti-entropy re-ships it once re-signed on the next change.
        e.sig = signer
            .sign(DOMAIN_FDB, &e.signed_bytes(owner, generation))
            .unwrap_or_default();
        e
    }

    /// Within the bounds every receiver enforces: a 24-bit VNI, at most [`MAX_IPS_PER_ENTRY`] IPs.
    pub fn well_formed(&self) -> bool {
        self.vni >= 1 && self.vni <= MAX_VNI && self.ips.len() <= MAX_IPS_PER_ENTRY
    }

    pub fn verify(&self, owner: &NodeIdentity, generation: u64) -> bool {
        owner.verify_own(DOMAIN_FDB, &self.signed_bytes(owner.id, generation), &self.sig)
    }
}

/// One MAC change by its owner, as disseminated by gossip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbAdvert {
    pub owner: NodeId,
    pub generation: u64,
    pub entry: FdbEntry,
}

/// Summary of one owner's table: equal (owner, generation, hash) mean equal tables (FNV-1a over the
/// sorted entries). `max_seq` is the highest seq held: a peer holding more of the table ships only
/// the entries after it (tables mostly arrive in seq order); if the hashes still differ once the
/// seqs are equal, the whole table is shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerDigest {
    pub owner: NodeId,
    pub generation: u64,
    pub hash: u64,
    pub max_seq: u64,
}

/// A full copy of one owner's table (including tombstones), shipped when digests differ. Every entry
/// carries its owner's signature, so a relayed table is as verifiable as the owner's own adverts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerDump {
    pub owner: NodeId,
    pub generation: u64,
    pub entries: Vec<FdbEntry>,
}

/// "This run of mine leaves", signed by the leaving node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveNotice {
    pub identity: NodeIdentity,
    pub sig: Vec<u8>,
}

impl LeaveNotice {
    fn bytes(i: &NodeIdentity) -> Vec<u8> {
        postcard::to_allocvec(&(i.id, i.addr, i.generation)).unwrap_or_default()
    }

    pub fn sign(identity: &NodeIdentity, signer: &Signer) -> Result<Self, crate::attest::AttestError> {
        Ok(LeaveNotice {
            sig: signer.sign(DOMAIN_LEAVE, &Self::bytes(identity))?,
            identity: identity.clone(),
        })
    }

    /// The leave signature only; the identity itself is checked by the caller's verifier.
    pub fn verify_sig(&self) -> bool {
        self.identity
            .verify_own(DOMAIN_LEAVE, &Self::bytes(&self.identity), &self.sig)
    }
}

/// Control messages that are not SWIM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMessage {
    /// Anti-entropy: "here is what I hold". `reply == false` asks the receiver to answer with its own
    /// digest (push-pull); each side then ships the owner tables (and revocations) that differ.
    Digest {
        reply: bool,
        owners: Vec<OwnerDigest>,
        revoked: u64,
        /// [`crate::catalog::Catalog::digest`] and [`crate::ipam::Grants::digest`]: when they differ
        /// the receiver ships its whole catalog / grant table (both small, merges idempotent).
        catalog: u64,
        grants: u64,
    },
    /// Owner tables the receiver's digest showed as different or missing.
    States { owners: Vec<OwnerDump> },
    /// Graceful leave (SIGTERM), sent directly to every member so withdrawal does not wait for gossip.
    Leave { notice: LeaveNotice },
    /// The sender's revocation list (each entry CA-signed).
    Revocations { list: Vec<Revocation> },
    /// "Please revoke `target`": a member without the CA key asks an admitter (signed by the requester).
    RevokeRequest {
        target: NodeId,
        requester: NodeId,
        sig: Vec<u8>,
    },
    /// Network definitions and tombstones (each signed by its author).
    Catalog { records: Vec<NetworkRecord> },
    /// IPAM block grants and releases (each CA-signed).
    Grants { list: Vec<BlockGrant> },
    /// "I want to hold `want` blocks of `network`": a member asks an admitter (signed by the
    /// requester; idempotent, so it is simply repeated until granted).
    BlockRequest {
        network: String,
        requester: NodeId,
        want: u32,
        sig: Vec<u8>,
    },
    /// Anti-entropy, compact (what a round starts with; [`Self::Digest`] is the full form, still
    /// understood): `root` is [`crate::sync::FdbSync::fdb_digest`]. Equal roots (and revocation,
    /// catalog and grant digests): nothing more is sent, so an idle round costs the same at any
    /// cluster size. `reply == false` asks for an answer if anything differs; the answer carries the
    /// hashes of `buckets.len()` owner buckets when the roots differ, and the asker then sends a
    /// [`Self::BucketDigest`] of the buckets that differ.
    Summary {
        reply: bool,
        root: u64,
        buckets: Vec<u64>,
        revoked: u64,
        catalog: u64,
        grants: u64,
    },
    /// The sender's owner digests of some buckets (`which`, each < `k`, of `k` buckets): the receiver
    /// ships the tables of those buckets that the sender lacks or holds older, and answers with its
    /// own digest of the same buckets if `reply == false`.
    BucketDigest {
        reply: bool,
        k: u32,
        which: Vec<u32>,
        owners: Vec<OwnerDigest>,
    },
    /// "This is me": the sender's own signed identity, sent straight to a member it has just learnt
    /// of, so that member knows the sender (and takes its table pieces) at once instead of after
    /// SWIM gossip rounds. Accepted only from the identity's own gossip address and only if it
    /// verifies like any gossiped identity (CA attestation, the node's signature, not revoked).
    Hello { identity: NodeIdentity },
    /// "I declared this member down" (its suspicion timed out at the sender): sent straight to every
    /// member so that a crashed node's MACs are withdrawn everywhere at once rather than after gossip
    /// rounds. Receivers apply it only for an identity they hold as active and only from an active
    /// member: the trust of a SWIM Down update, which any member may gossip (docs/SECURITY.md).
    Down { identity: NodeIdentity },
    /// "This node just joined through me": sent by the member that answered a join (foca's Announce
    /// from the joiner itself) to every member it holds, so they know the joiner without a
    /// connection to it. Receivers verify the identity exactly as a gossiped one (CA attestation,
    /// the node's signature, VTEP and address bound to the attestation, not revoked) and apply it
    /// as SWIM applies a gossiped join (foca's rules for down or older identities): the trust of SWIM
    /// gossip of that join, which any member may spread. `listed`: the join answer could list every
    /// member the sender holds (so the joiner knows the receiver, and the sender relays tables
    /// between them): the receiver puts off its Hello and table exchange with the joiner
    /// (`node/relay.rs`).
    Introduce { identity: NodeIdentity, listed: bool },
}

/// Bytes a requester signs for [`SyncMessage::BlockRequest`].
pub fn block_request_bytes(network: &str, requester: NodeId, want: u32) -> Vec<u8> {
    postcard::to_allocvec(&(network, requester, want)).unwrap_or_default()
}

/// Bytes a requester signs for [`SyncMessage::RevokeRequest`].
pub fn revoke_request_bytes(target: NodeId, requester: NodeId) -> Vec<u8> {
    let mut v = target.0.to_le_bytes().to_vec();
    v.extend_from_slice(&requester.0.to_le_bytes());
    v
}

pub fn encode_swim(foca_packet: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(foca_packet.len() + 2);
    v.push(WIRE_VERSION);
    v.push(KIND_SWIM);
    v.extend_from_slice(foca_packet);
    v
}

pub fn encode_sync(msg: &SyncMessage) -> Result<Vec<u8>, postcard::Error> {
    // Room for a typical message up front (growing from 2 bytes reallocated it several times: a
    // tenth of a simulated cluster's CPU).
    let mut v = Vec::with_capacity(256);
    v.extend_from_slice(&[WIRE_VERSION, KIND_SYNC]);
    postcard::to_io(msg, &mut v)?;
    Ok(v)
}

/// Whether `bytes` is a SWIM (membership) packet, judged by its envelope only.
pub fn is_swim(bytes: &[u8]) -> bool {
    bytes.get(1) == Some(&KIND_SWIM)
}

/// Whether `bytes` is a SWIM Announce (foca's join message; also a renewed node's re-announce).
pub fn is_announce(bytes: &[u8]) -> bool {
    use foca::Codec;
    // The envelope first: a Sync message (a table piece, a dump) is never decoded here.
    if bytes.first() != Some(&WIRE_VERSION) || !is_swim(bytes) {
        return false;
    }
    let header: Result<foca::Header<NodeIdentity>, _> = foca::PostcardCodec.decode_header(&bytes[2..]);
    header.is_ok_and(|h| h.message == foca::Message::Announce)
}

pub fn decode(bytes: &[u8]) -> Result<Packet<'_>, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Truncated)?;
    if version != WIRE_VERSION {
        return Err(DecodeError::Version(version));
    }
    let (&kind, body) = rest.split_first().ok_or(DecodeError::Truncated)?;
    match kind {
        KIND_SWIM => Ok(Packet::Swim(body)),
        KIND_SYNC => {
            let (msg, tail) = postcard::take_from_bytes::<SyncMessage>(body)
                .map_err(|e| DecodeError::Body(e.to_string()))?;
            if !tail.is_empty() {
                return Err(DecodeError::Body(format!("{} trailing bytes", tail.len())));
            }
            Ok(Packet::Sync(msg))
        }
        k => Err(DecodeError::Kind(k)),
    }
}

/// What rides on foca's piggybacked custom broadcasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Broadcast {
    Fdb(FdbAdvert),
    /// "This identity left gracefully" (signed by it). Receivers use relayed copies only to label a
    /// member that is (or becomes) down as "left"; the direct notice or SWIM takes it down.
    Leave(LeaveNotice),
    /// A CA-signed revocation.
    Revoke(Revocation),
    /// A network definition or tombstone, signed by its author.
    Network(NetworkRecord),
    /// A CA-signed IPAM block grant or release.
    Grant(BlockGrant),
}

pub fn encode_broadcast(b: &Broadcast) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(b)
}

pub fn decode_broadcast(bytes: &[u8]) -> Result<Broadcast, DecodeError> {
    postcard::from_bytes(bytes).map_err(|e| DecodeError::Body(e.to_string()))
}

#[cfg(test)]
mod tests {
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
}

#[cfg(test)]
mod signed_tests {
    use super::*;
    use crate::identity::tests::{ident, signer};

    /// An entry verifies only under its owner's key, owner id and generation, and with its own fields.
    #[test]
    fn entries_and_leaves_are_bound_to_their_owner() {
        let ca = signer();
        let (ka, kb) = (signer(), signer());
        let a = ident(&ca, &ka, 1, 1, 5);
        let b = ident(&ca, &kb, 2, 2, 5);
        let ips = vec![std::net::IpAddr::from([10, 0, 0, 9])];
        let e = FdbEntry::sign(&ka, a.id, 5, (7, [2, 0, 0, 0, 0, 1]), ips.clone(), 3, 3, true);
        assert!(e.verify(&a, 5));
        assert!(!e.verify(&b, 5), "another owner's table");
        assert!(!e.verify(&a, 6), "another generation");
        for f in 0..6 {
            let mut x = e.clone();
            match f {
                0 => x.seq = u64::MAX,
                1 => x.mobility += 1,
                2 => x.present = false,
                3 => x.vni = 8,
                4 => x.ips.push(std::net::IpAddr::from([10, 0, 0, 10])),
                _ => x.mac[5] = 9,
            }
            assert!(!x.verify(&a, 5), "field {f}");
        }
        // A forger signing with its own key for another owner fails.
        let f = FdbEntry::sign(&kb, a.id, 5, (7, [2, 0, 0, 0, 0, 1]), ips, 4, 4, false);
        assert!(!f.verify(&a, 5));
        let l = LeaveNotice::sign(&a, &ka).unwrap();
        assert!(l.verify_sig());
        let forged = LeaveNotice {
            identity: a.clone(),
            sig: LeaveNotice::sign(&b, &kb).unwrap().sig,
        };
        assert!(!forged.verify_sig());
    }
}

#[cfg(test)]
mod network_tests {
    use super::*;
    use crate::attest::Attestation;
    use crate::catalog::NetworkDef;
    use crate::identity::tests::signer;

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
}
