//! FDB sync bodies: one owner's signed claim on a MAC ([`FdbEntry`]), an advert of one change
//! ([`FdbAdvert`]), and the anti-entropy summaries and copies of owner tables ([`OwnerDigest`],
//! [`OwnerDump`]); with the bounds every receiver enforces on an entry. Must never: let an entry verify
//! under another owner, generation or field value than the one signed.

use serde::{Deserialize, Serialize};

use super::DOMAIN_FDB;
use crate::attest::Signer;
use crate::identity::{NodeId, NodeIdentity};

/// Most IP bindings one advert may carry (more: the advert is refused; the local side truncates).
pub const MAX_IPS_PER_ENTRY: usize = 8;

/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

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
