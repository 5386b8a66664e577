//! Revocations: the CA's signed statement "node X is no longer a member". A revocation counts only with
//! a valid CA signature (made by an admitter, the only holder of the CA key), so any member may relay
//! one but none can forge one. The list is the set of such statements: gossiped (piggybacked and by
//! anti-entropy), persisted in the state dir, and enforced by the identity verifier (gossip), the node
//! (FDB, membership) and the transport (connections). Must never: accept an unsigned revocation, or
//! grow without bound from the network (each entry must verify, one per node id).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::attest::{self, AttestError, Signer};
use crate::identity::NodeId;

/// Domain string of revocations (signed by the CA key).
pub const DOMAIN_REVOCATION: &[u8] = b"overlayd-revocation/1";

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Revocation {
    pub node: NodeId,
    pub ca_sig: Vec<u8>,
}

impl Revocation {
    fn bytes(node: NodeId) -> [u8; 8] {
        node.0.to_le_bytes()
    }

    /// Sign a revocation of `node` with the CA key (admitters only).
    pub fn issue(ca: &Signer, node: NodeId) -> Result<Self, AttestError> {
        Ok(Revocation {
            node,
            ca_sig: ca.sign(DOMAIN_REVOCATION, &Self::bytes(node))?,
        })
    }

    pub fn verify(&self, ca_public_key: &[u8]) -> bool {
        attest::verify(
            ca_public_key,
            DOMAIN_REVOCATION,
            &Self::bytes(self.node),
            &self.ca_sig,
        )
    }
}

/// The verified revocations this node knows, one per node id.
#[derive(Debug, Default, Clone)]
pub struct RevocationList {
    by_node: BTreeMap<NodeId, Revocation>,
}

impl RevocationList {
    pub fn contains(&self, node: NodeId) -> bool {
        self.by_node.contains_key(&node)
    }

    /// Add `r` if its CA signature verifies and it is new. Returns true if it was added.
    pub fn insert_verified(&mut self, r: Revocation, ca_public_key: &[u8]) -> bool {
        if self.by_node.contains_key(&r.node) || !r.verify(ca_public_key) {
            return false;
        }
        self.by_node.insert(r.node, r);
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = &Revocation> + '_ {
        self.by_node.values()
    }

    pub fn len(&self) -> usize {
        self.by_node.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }

    /// Summary for anti-entropy: equal lists give equal values (FNV-1a over the sorted node ids).
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for id in self.by_node.keys() {
            for b in id.0.to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    /// Persisted form (postcard).
    pub fn to_bytes(&self) -> Vec<u8> {
        let v: Vec<&Revocation> = self.by_node.values().collect();
        postcard::to_allocvec(&v).unwrap_or_default()
    }

    /// Parse a persisted list, keeping only entries that verify under `ca_public_key`.
    pub fn from_bytes(bytes: &[u8], ca_public_key: &[u8]) -> Result<Self, postcard::Error> {
        let v: Vec<Revocation> = postcard::from_bytes(bytes)?;
        let mut list = RevocationList::default();
        for r in v {
            list.insert_verified(r, ca_public_key);
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::signer;

    #[test]
    fn only_ca_signed_revocations_count() {
        let ca = signer();
        let rogue = signer();
        let mut l = RevocationList::default();
        let r = Revocation::issue(&ca, NodeId(5)).unwrap();
        assert!(!l.insert_verified(Revocation::issue(&rogue, NodeId(6)).unwrap(), &ca.public_key()));
        let mut forged = r.clone();
        forged.node = NodeId(6);
        assert!(!l.insert_verified(forged, &ca.public_key()));
        assert!(l.insert_verified(r.clone(), &ca.public_key()));
        assert!(!l.insert_verified(r, &ca.public_key()), "duplicates are not new");
        assert!(l.contains(NodeId(5)) && !l.contains(NodeId(6)));
        let back = RevocationList::from_bytes(&l.to_bytes(), &ca.public_key()).unwrap();
        assert_eq!(back.digest(), l.digest());
        assert!(RevocationList::from_bytes(&l.to_bytes(), &rogue.public_key())
            .unwrap()
            .is_empty());
        let b = l.to_bytes();
        for n in 0..b.len() {
            let _ = RevocationList::from_bytes(&b[..n], &ca.public_key());
        }
    }
}
