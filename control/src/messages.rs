//! The gossip wire envelope: `[version u8][kind u8][body]`.
//!
//! - kind 0: a foca (SWIM) packet, passed through untouched (foca encodes it with postcard itself).
//! - kind 1: a [`SyncMessage`] (anti-entropy digest/state, leave), postcard-encoded.
//!
//! FDB adverts and leave notices travel inside foca packets as custom broadcasts: postcard-encoded
//! [`Broadcast`]s.
//! postcard was chosen over bincode: varint integers make these messages small, it is the codec foca
//! already puts on the wire, and its decoder returns `Err` (never panics) on truncated or garbage input.
//! Owns: byte layout and versioning. Must never: panic on input, or allocate unboundedly from a length
//! field (serde caps preallocation from a declared length at 1 MiB and decoding fails as soon as the
//! input runs out; the transport bounds a message to `transport::MAX_MESSAGE`).

use serde::{Deserialize, Serialize};

use crate::membership::{NodeId, NodeIdentity};

/// Bump when the envelope or any body changes incompatibly; receivers drop other versions.
pub const WIRE_VERSION: u8 = 1;
const KIND_SWIM: u8 = 0;
const KIND_SYNC: u8 = 1;

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
}

/// A decoded envelope.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Swim(&'a [u8]),
    Sync(SyncMessage),
}

/// One MAC change by its owner. `present == false` is a withdrawal (tombstone) so that removals
/// propagate and order against re-adds like any other change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbAdvert {
    pub owner: NodeId,
    pub generation: u64,
    pub seq: u64,
    pub mac: [u8; 6],
    pub present: bool,
}

/// Summary of one owner's table: equal triples mean equal tables (FNV-1a over the sorted entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerDigest {
    pub owner: NodeId,
    pub generation: u64,
    pub hash: u64,
}

/// A full copy of one owner's table (including tombstones), shipped when digests differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerDump {
    pub owner: NodeId,
    pub generation: u64,
    /// (mac, seq, present)
    pub entries: Vec<([u8; 6], u64, bool)>,
}

/// Control messages that are not SWIM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMessage {
    /// Anti-entropy: "here is what I hold". `reply == false` asks the receiver to answer with its own
    /// digest (push-pull); each side then ships the owner tables that differ.
    Digest { reply: bool, owners: Vec<OwnerDigest> },
    /// Owner tables the receiver's digest showed as different or missing.
    States { owners: Vec<OwnerDump> },
    /// Graceful leave (SIGTERM), sent directly to every member so withdrawal does not wait for gossip.
    Leave { identity: NodeIdentity },
}

pub fn encode_swim(foca_packet: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(foca_packet.len() + 2);
    v.push(WIRE_VERSION);
    v.push(KIND_SWIM);
    v.extend_from_slice(foca_packet);
    v
}

pub fn encode_sync(msg: &SyncMessage) -> Result<Vec<u8>, postcard::Error> {
    let mut v = vec![WIRE_VERSION, KIND_SYNC];
    postcard::to_io(msg, &mut v)?;
    Ok(v)
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
    /// "This identity left gracefully". Relayed copies cannot be tied to their author, so receivers
    /// only use them to label a member that is (or becomes) down as "left", never to take it down.
    Leave(NodeIdentity),
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

    fn sample() -> SyncMessage {
        SyncMessage::States {
            owners: vec![OwnerDump {
                owner: NodeId(7),
                generation: 3,
                entries: vec![([2, 0, 0, 0, 0, 1], 5, true), ([2, 0, 0, 0, 0, 2], 6, false)],
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
        assert_eq!(decode(&[2, 0]), Err(DecodeError::Version(2)));
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
            seq: 3,
            mac: [2, 0, 0, 0, 0, 9],
            present: true,
        }))
        .unwrap();
        for n in 0..a.len() {
            assert!(decode_broadcast(&a[..n]).is_err());
        }
        // A huge declared length fails cleanly (serde caps the preallocation, input runs out).
        assert!(decode(&[WIRE_VERSION, KIND_SYNC, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
