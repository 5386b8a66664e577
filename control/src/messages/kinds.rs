//! The message bodies: [`SyncMessage`] (envelope kind 1, sent straight to one member) and
//! [`Broadcast`] (piggybacked on foca's packets), the signed [`LeaveNotice`] they carry, and the bytes a
//! requester signs for a revoke or block request.

use serde::{Deserialize, Serialize};

use super::{FdbAdvert, OwnerDigest, OwnerDump, DOMAIN_LEAVE};
use crate::attest::Signer;
use crate::catalog::NetworkRecord;
use crate::identity::{NodeId, NodeIdentity};
use crate::ipam::BlockGrant;
use crate::revocation::Revocation;

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
