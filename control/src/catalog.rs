//! The cluster-wide network catalog: [`NetworkDef`]s created by any member, signed by it, gossiped
//! (custom broadcasts) and repaired by anti-entropy (a digest in every exchange, the whole catalog when
//! digests differ).
//!
//! One [`NetworkRecord`] per name: a definition or a tombstone (`network rm`), with a `stamp` that the
//! author sets one above the highest it held for that name, so a removal is never resurrected by an
//! older definition and a later re-create wins over the tombstone. Equal stamps (concurrent edits on
//! two members) are ordered by (tombstone first, author id, signed bytes): every node picks the same.
//! Two live names claiming one VNI (created concurrently) are resolved the same way everywhere: the
//! record with the lower (stamp, name) is served, the other is hidden until it is removed.
//!
//! A record carries its author's CA attestation, so anyone can verify it even after the author left.
//! Must never: accept a record whose signature or attestation does not verify, or that fails
//! [`NetworkDef::validate`]; hold more than [`MAX_RECORDS`] records.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::attest::{Attestation, Signer};
use crate::identity::NodeId;
use crate::messages::MAX_VNI;

/// Domain string of network records (signed by the author's node key).
pub const DOMAIN_NETWORK: &[u8] = b"overlayd-network/1";
/// Longest network name (it becomes part of interface names and JSON).
pub const MAX_NAME_LEN: usize = 15;
/// Records (definitions + tombstones) held at most; beyond, new names are refused.
pub const MAX_RECORDS: usize = 1024;
/// At most 2^20 blocks per IPv4 network and 2^64 per IPv6 network (a /64 in /122 blocks is 2^58).
/// Allocation never walks them all: it stops at the first free block, so its cost is bounded by
/// the grants held (≤ [`crate::ipam::MAX_GRANTS`]).
pub const MAX_BLOCK_BITS_V4: u8 = 20;
pub const MAX_BLOCK_BITS_V6: u8 = 64;
/// Default IPAM block sizes.
pub const DEFAULT_BLOCK_PREFIX_V4: u8 = 26;
pub const DEFAULT_BLOCK_PREFIX_V6: u8 = 122;

/// One network as the whole cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkDef {
    /// 1–15 chars `[A-Za-z0-9_.-]`.
    pub name: String,
    /// 1..=2^24-1.
    pub vni: u32,
    /// Normalised (host bits zero).
    pub subnet: IpNet,
    pub mtu: Option<u32>,
    pub egress: bool,
    /// IPAM block size: the subnet is split into /block_prefix blocks.
    pub block_prefix: u8,
}

/// Why a network definition, creation or removal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid network name {0:?}: use 1-15 characters of A-Z a-z 0-9 _ . -")]
    Name(String),
    #[error("invalid VNI {0}: use 1..=16777215")]
    Vni(u32),
    #[error("invalid subnet {0}: give the network address (host bits zero), e.g. 10.20.0.0/16")]
    Subnet(IpNet),
    #[error("invalid block prefix /{block} for subnet {subnet}: it must be between the subnet's prefix and {max}, at most {MAX_BLOCK_BITS_V4} (IPv4) or {MAX_BLOCK_BITS_V6} (IPv6) bits longer than the subnet's")]
    BlockPrefix { subnet: IpNet, block: u8, max: u8 },
    #[error("invalid MTU {0}: use 576..=65535")]
    Mtu(u32),
    #[error("network {name:?} already exists with other parameters ({existing}); remove it first (`overlayctl network rm {name}`) or pick another name")]
    NameExists { name: String, existing: String },
    #[error("VNI {vni} is already used by network {by:?}; pick another VNI or remove that network first")]
    VniInUse { vni: u32, by: String },
    #[error("no network named {0:?} (see `overlayctl network ls`)")]
    NoSuchNetwork(String),
    #[error(
        "the catalog holds {MAX_RECORDS} records (networks and tombstones); no more networks can be created"
    )]
    Full,
    #[error("every address block of network {0:?} is taken; create a network with a larger subnet or free addresses on other hosts")]
    SubnetFull(String),
}

/// Is `name` a valid network name?
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl NetworkDef {
    /// A definition with defaults filled in (block prefix: /26 for IPv4, /122 for IPv6, or the
    /// subnet's own prefix if that is longer) and the subnet normalised; validated.
    pub fn new(
        name: &str,
        vni: u32,
        subnet: IpNet,
        mtu: Option<u32>,
        egress: bool,
        block_prefix: Option<u8>,
    ) -> Result<Self, NetworkError> {
        let subnet = subnet.trunc();
        let block_prefix = block_prefix.unwrap_or_else(|| Self::default_block_prefix(subnet));
        let d = NetworkDef {
            name: name.to_string(),
            vni,
            subnet,
            mtu,
            egress,
            block_prefix,
        };
        d.validate()?;
        Ok(d)
    }

    pub fn default_block_prefix(subnet: IpNet) -> u8 {
        let d = match subnet {
            IpNet::V4(_) => DEFAULT_BLOCK_PREFIX_V4,
            IpNet::V6(_) => DEFAULT_BLOCK_PREFIX_V6,
        };
        d.max(subnet.prefix_len())
    }

    /// Everything a receiver checks before accepting a definition.
    pub fn validate(&self) -> Result<(), NetworkError> {
        if !valid_name(&self.name) {
            return Err(NetworkError::Name(self.name.clone()));
        }
        if !(1..=MAX_VNI).contains(&self.vni) {
            return Err(NetworkError::Vni(self.vni));
        }
        if self.subnet.trunc() != self.subnet {
            return Err(NetworkError::Subnet(self.subnet));
        }
        // Leave room in a block for the network/gateway/broadcast addresses the host skips.
        let max = self.subnet.max_prefix_len().saturating_sub(2);
        let p = self.subnet.prefix_len();
        let bits = match self.subnet {
            IpNet::V4(_) => MAX_BLOCK_BITS_V4,
            IpNet::V6(_) => MAX_BLOCK_BITS_V6,
        };
        if self.block_prefix < p || self.block_prefix > max || self.block_prefix - p > bits {
            return Err(NetworkError::BlockPrefix {
                subnet: self.subnet,
                block: self.block_prefix,
                max,
            });
        }
        if let Some(m) = self.mtu.filter(|m| !(576..=65535).contains(m)) {
            return Err(NetworkError::Mtu(m));
        }
        Ok(())
    }

    /// Number of IPAM blocks (saturating at u64::MAX).
    pub fn block_count(&self) -> u64 {
        let bits = self.block_prefix.saturating_sub(self.subnet.prefix_len());
        1u64.checked_shl(u32::from(bits)).unwrap_or(u64::MAX)
    }

    /// The IPAM blocks in address order.
    pub fn blocks(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.subnet.subnets(self.block_prefix).into_iter().flatten()
    }

    /// Is `block` one of this network's blocks?
    pub fn has_block(&self, block: &IpNet) -> bool {
        block.prefix_len() == self.block_prefix && self.subnet.contains(block) && block.trunc() == *block
    }

    fn summary(&self) -> String {
        format!(
            "vni {}, subnet {}, mtu {:?}, egress {}, block /{}",
            self.vni, self.subnet, self.mtu, self.egress, self.block_prefix
        )
    }
}

/// A signed definition (`def` is Some) or tombstone (`def` is None) of one network name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub name: String,
    pub vni: u32,
    pub stamp: u64,
    pub def: Option<NetworkDef>,
    /// The author's CA attestation (node id and public key).
    pub author: Attestation,
    pub sig: Vec<u8>,
}

#[derive(Serialize)]
struct Signed<'a> {
    name: &'a str,
    vni: u32,
    stamp: u64,
    def: &'a Option<NetworkDef>,
    author: NodeId,
}

impl NetworkRecord {
    fn signed_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(&Signed {
            name: &self.name,
            vni: self.vni,
            stamp: self.stamp,
            def: &self.def,
            author: self.author.node,
        })
        .unwrap_or_default()
    }

    /// Sign a record with the author's node key.
    pub fn sign(
        signer: &Signer,
        author: Attestation,
        name: &str,
        vni: u32,
        stamp: u64,
        def: Option<NetworkDef>,
    ) -> Result<Self, crate::attest::AttestError> {
        let mut r = NetworkRecord {
            name: name.to_string(),
            vni,
            stamp,
            def,
            author,
            sig: Vec::new(),
        };
        r.sig = signer.sign(DOMAIN_NETWORK, &r.signed_bytes())?;
        Ok(r)
    }

    /// Fields consistent and in range (no signature check).
    pub fn well_formed(&self) -> bool {
        valid_name(&self.name)
            && (1..=MAX_VNI).contains(&self.vni)
            && match &self.def {
                Some(d) => d.name == self.name && d.vni == self.vni && d.validate().is_ok(),
                None => true,
            }
    }

    /// Well formed, author attested by the CA, signed by the author's key.
    pub fn verify(&self, ca_key: &[u8]) -> bool {
        self.well_formed()
            && self.author.verify(ca_key).is_ok()
            && self
                .author
                .verify_node(DOMAIN_NETWORK, &self.signed_bytes(), &self.sig)
    }

    /// Total order of records of one name: the greatest is current.
    pub fn rank(&self) -> (u64, bool, u64, Vec<u8>) {
        (
            self.stamp,
            self.def.is_none(),
            self.author.node.0,
            self.signed_bytes(),
        )
    }
}

/// All records this node holds, and the view last reported to the daemon.
#[derive(Debug, Default)]
pub struct Catalog {
    records: BTreeMap<String, NetworkRecord>,
    emitted: BTreeMap<String, NetworkDef>,
}

impl Catalog {
    /// Would `r` change state (newer than held, room for a new name)? Signature not checked here.
    pub fn admit(&self, r: &NetworkRecord) -> bool {
        match self.records.get(&r.name) {
            Some(old) => r.rank() > old.rank(),
            None => self.records.len() < MAX_RECORDS,
        }
    }

    /// Insert a record the caller verified; false if not admissible.
    pub fn insert(&mut self, r: NetworkRecord) -> bool {
        if !self.admit(&r) {
            return false;
        }
        self.records.insert(r.name.clone(), r);
        true
    }

    pub fn record(&self, name: &str) -> Option<&NetworkRecord> {
        self.records.get(name)
    }

    pub fn records(&self) -> impl Iterator<Item = &NetworkRecord> + '_ {
        self.records.values()
    }

    /// The networks served: live definitions, one per VNI (on a clash the lower (stamp, name) wins).
    pub fn effective(&self) -> BTreeMap<String, NetworkDef> {
        let mut by_vni: BTreeMap<u32, &NetworkRecord> = BTreeMap::new();
        for r in self.records.values().filter(|r| r.def.is_some()) {
            let e = by_vni.entry(r.vni).or_insert(r);
            if (r.stamp, &r.name) < (e.stamp, &e.name) {
                *e = r;
            }
        }
        by_vni
            .into_values()
            .filter_map(|r| r.def.clone().map(|d| (r.name.clone(), d)))
            .collect()
    }

    /// The served definition of `name`.
    pub fn get(&self, name: &str) -> Option<NetworkDef> {
        self.effective().remove(name)
    }

    /// Stamp for a new record of `name`: above everything held for it.
    pub fn next_stamp(&self, name: &str) -> u64 {
        self.records.get(name).map_or(1, |r| r.stamp.saturating_add(1))
    }

    /// Check a creation against the served view: Ok(true) = new, Ok(false) = identical (no-op).
    pub fn check_create(&self, def: &NetworkDef) -> Result<bool, NetworkError> {
        def.validate()?;
        let eff = self.effective();
        if let Some(old) = eff.get(&def.name) {
            if old == def {
                return Ok(false);
            }
            return Err(NetworkError::NameExists {
                name: def.name.clone(),
                existing: old.summary(),
            });
        }
        if let Some(other) = eff.values().find(|d| d.vni == def.vni) {
            return Err(NetworkError::VniInUse {
                vni: def.vni,
                by: other.name.clone(),
            });
        }
        if !self.records.contains_key(&def.name) && self.records.len() >= MAX_RECORDS {
            return Err(NetworkError::Full);
        }
        Ok(true)
    }

    /// Differences between the served view and what was last reported, as (upserts, removals).
    pub fn changes(&mut self) -> (Vec<NetworkDef>, Vec<(String, u32)>) {
        let now = self.effective();
        let mut removed = Vec::new();
        for (name, old) in &self.emitted {
            match now.get(name) {
                Some(d) if d.vni == old.vni => {}
                _ => removed.push((name.clone(), old.vni)),
            }
        }
        let upserts = now
            .iter()
            .filter(|(name, d)| self.emitted.get(*name) != Some(d))
            .map(|(_, d)| d.clone())
            .collect();
        self.emitted = now;
        (upserts, removed)
    }

    /// Summary for anti-entropy: equal catalogs give equal values.
    pub fn digest(&self) -> u64 {
        let mut h = crate::sync::Fnv::new();
        for r in self.records.values() {
            h.write(r.name.as_bytes());
            h.write(&[0]);
            h.write(&r.stamp.to_le_bytes());
            h.write(&r.author.node.0.to_le_bytes());
            h.write(&r.sig);
        }
        h.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::signer;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn validation() {
        let d = NetworkDef::new("blue", 10, net("10.20.3.4/16"), None, false, None).unwrap();
        assert_eq!(d.subnet, net("10.20.0.0/16"));
        assert_eq!(d.block_prefix, 26);
        assert_eq!(d.block_count(), 1024);
        assert_eq!(d.blocks().next(), Some(net("10.20.0.0/26")));
        assert!(d.has_block(&net("10.20.255.192/26")));
        assert!(!d.has_block(&net("10.21.0.0/26")) && !d.has_block(&net("10.20.0.0/27")));
        let small = NetworkDef::new("s", 1, net("10.0.0.0/28"), None, false, None).unwrap();
        assert_eq!((small.block_prefix, small.block_count()), (28, 1));
        let v6 = NetworkDef::new("v6", 2, net("fd00::/64"), Some(1400), true, None).unwrap();
        assert_eq!(v6.block_prefix, 122);
        for bad in ["", "sixteen-chars-xx", "a b", "é", "a/b"] {
            assert!(
                NetworkDef::new(bad, 1, net("10.0.0.0/8"), None, false, None).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            NetworkDef::new("a", 0, net("10.0.0.0/8"), None, false, None),
            Err(NetworkError::Vni(0))
        );
        assert!(NetworkDef::new("a", 1 << 24, net("10.0.0.0/8"), None, false, None).is_err());
        // Too many blocks, block larger than subnet, block too small, silly MTU.
        assert!(NetworkDef::new("a", 1, net("10.0.0.0/8"), None, false, Some(29)).is_err());
        assert!(NetworkDef::new("a", 1, net("10.0.0.0/8"), None, false, Some(26)).is_ok());
        assert!(NetworkDef::new("a", 1, net("10.0.0.0/16"), None, false, Some(15)).is_err());
        assert!(NetworkDef::new("a", 1, net("10.0.0.0/16"), None, false, Some(31)).is_err());
        assert!(NetworkDef::new("a", 1, net("10.0.0.0/16"), Some(100), false, None).is_err());
        // A received def with host bits set is refused.
        let mut x = d.clone();
        x.subnet = net("10.20.0.1/16");
        assert_eq!(x.validate(), Err(NetworkError::Subnet(x.subnet)));
    }

    fn author(ca: &Signer, k: &Signer, id: u64) -> Attestation {
        Attestation::issue(
            ca,
            NodeId(id),
            vec![std::net::IpAddr::from([10, 0, 0, id as u8])],
            false,
            k.public_key(),
        )
        .unwrap()
    }

    #[test]
    fn records_sign_order_and_tombstone() {
        let ca = signer();
        let (ka, kb) = (signer(), signer());
        let (a, b) = (author(&ca, &ka, 1), author(&ca, &kb, 2));
        let d = NetworkDef::new("blue", 10, net("10.20.0.0/16"), None, false, None).unwrap();
        let r1 = NetworkRecord::sign(&ka, a.clone(), "blue", 10, 1, Some(d.clone())).unwrap();
        assert!(r1.verify(&ca.public_key()));
        // Signed by another key than the attested one: refused. Modified: refused.
        let forged = NetworkRecord::sign(&kb, a.clone(), "blue", 10, 1, Some(d.clone())).unwrap();
        assert!(!forged.verify(&ca.public_key()));
        let mut m = r1.clone();
        m.stamp = 9;
        assert!(!m.verify(&ca.public_key()));
        let mut m = r1.clone();
        m.def.as_mut().unwrap().egress = true;
        assert!(!m.verify(&ca.public_key()));
        // Another CA's attestation: refused.
        let other = signer();
        let r = NetworkRecord::sign(&ka, author(&other, &ka, 1), "blue", 10, 1, Some(d.clone())).unwrap();
        assert!(!r.verify(&ca.public_key()));

        let mut c = Catalog::default();
        assert!(c.insert(r1.clone()));
        assert!(!c.insert(r1.clone()), "duplicate");
        assert_eq!(c.changes(), (vec![d.clone()], vec![]));
        assert_eq!(c.check_create(&d), Ok(false));
        let mut d2 = d.clone();
        d2.mtu = Some(1400);
        assert!(matches!(
            c.check_create(&d2),
            Err(NetworkError::NameExists { .. })
        ));
        let mut d3 = d.clone();
        d3.name = "red".into();
        assert!(matches!(
            c.check_create(&d3),
            Err(NetworkError::VniInUse { vni: 10, .. })
        ));
        // Tombstone by b wins over the definition; the old definition is not resurrected.
        let t = NetworkRecord::sign(&kb, b.clone(), "blue", 10, c.next_stamp("blue"), None).unwrap();
        assert!(c.insert(t.clone()));
        assert!(!c.insert(r1.clone()));
        assert_eq!(c.changes(), (vec![], vec![("blue".to_string(), 10)]));
        // Re-created later with other parameters: newer stamp wins.
        let d4 = NetworkDef::new("blue", 11, net("10.30.0.0/16"), None, true, None).unwrap();
        assert_eq!(c.check_create(&d4), Ok(true));
        let r4 =
            NetworkRecord::sign(&ka, a.clone(), "blue", 11, c.next_stamp("blue"), Some(d4.clone())).unwrap();
        assert!(c.insert(r4));
        assert_eq!(c.changes(), (vec![d4.clone()], vec![]));
        // Concurrent equal stamps: the tombstone wins, whatever the arrival order.
        let x = NetworkRecord::sign(
            &ka,
            a.clone(),
            "x",
            5,
            1,
            Some(NetworkDef::new("x", 5, net("10.1.0.0/16"), None, false, None).unwrap()),
        )
        .unwrap();
        let y = NetworkRecord::sign(&kb, b.clone(), "x", 5, 1, None).unwrap();
        let (mut c1, mut c2) = (Catalog::default(), Catalog::default());
        c1.insert(x.clone());
        c1.insert(y.clone());
        c2.insert(y);
        c2.insert(x);
        assert_eq!(c1.digest(), c2.digest());
        assert!(c1.effective().is_empty());
    }

    #[test]
    fn vni_clash_is_resolved_the_same_everywhere() {
        let ca = signer();
        let (ka, kb) = (signer(), signer());
        let a = NetworkDef::new("a", 7, net("10.1.0.0/16"), None, false, None).unwrap();
        let b = NetworkDef::new("b", 7, net("10.2.0.0/16"), None, false, None).unwrap();
        let ra = NetworkRecord::sign(&ka, author(&ca, &ka, 1), "a", 7, 2, Some(a)).unwrap();
        let rb = NetworkRecord::sign(&kb, author(&ca, &kb, 2), "b", 7, 1, Some(b.clone())).unwrap();
        let mut c = Catalog::default();
        c.insert(ra);
        c.insert(rb);
        assert_eq!(c.effective().into_values().collect::<Vec<_>>(), vec![b]);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any bytes: decoding a record never panics, and whatever decodes validates without panicking.
            #[test]
            fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                if let Ok(r) = postcard::from_bytes::<NetworkRecord>(&bytes) {
                    let _ = r.well_formed();
                    let _ = r.verify(&[4; 65]);
                    if let Some(d) = &r.def {
                        let _ = d.block_count();
                        let _ = d.blocks().take(3).count();
                    }
                }
            }

            /// Any field values: validate never panics, and a valid def has a sane block count.
            #[test]
            fn validate_never_panics(vni in any::<u32>(), a in any::<u32>(), p in 0u8..40, bp in any::<u8>(), mtu in proptest::option::of(any::<u32>())) {
                let subnet = IpNet::V4(ipnet::Ipv4Net::new(a.into(), p.min(32)).unwrap());
                let d = NetworkDef { name: "n".into(), vni, subnet, mtu, egress: false, block_prefix: bp };
                if d.validate().is_ok() {
                    prop_assert!(d.block_count() <= 1 << MAX_BLOCK_BITS_V4);
                    if d.block_count() <= 4096 {
                        prop_assert_eq!(d.blocks().count() as u64, d.block_count());
                    }
                    prop_assert!(d.has_block(&d.blocks().next().unwrap()));
                }
            }
        }
    }
}
