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
//!
//! Layout: this file holds the envelope (version, kind, encode/decode); `fdb` the FDB entries, adverts
//! and owner tables; `kinds` the [`SyncMessage`] and [`Broadcast`] bodies and the leave notice.

use crate::identity::{NodeId, NodeIdentity};

mod fdb;
mod kinds;
#[cfg(test)]
mod network_tests;
#[cfg(test)]
mod signed_tests;
#[cfg(test)]
mod tests;
pub use fdb::{FdbAdvert, FdbEntry, OwnerDigest, OwnerDump, MAX_IPS_PER_ENTRY, MAX_VNI};
pub use kinds::{block_request_bytes, revoke_request_bytes, Broadcast, LeaveNotice, SyncMessage};

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

pub fn encode_broadcast(b: &Broadcast) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(b)
}

pub fn decode_broadcast(bytes: &[u8]) -> Result<Broadcast, DecodeError> {
    postcard::from_bytes(bytes).map_err(|e| DecodeError::Body(e.to_string()))
}
