//! IPAM blocks: each network's subnet is split into /block_prefix blocks, and only an admitter (the
//! holder of the CA key) hands them out, as CA-signed [`BlockGrant`]s naming network, block and holder
//! node id. Grants are gossiped and repaired by anti-entropy like revocations; any member relays them,
//! none can forge one.
//!
//! Per (network, block) the record with the highest rank wins: `stamp` first (the admitter signs one
//! above what it held for that block, so a release supersedes its grant and a re-grant its release),
//! then a release over a grant, then the LOWER admitter id, then the lower holder id. One admitter
//! never grants a block its table shows as held, so with one admitter (or admitters that see each
//! other) no two holders ever share a block.
//! Residual risk with several admitters: two admitters that cannot see each other's grants (a
//! partition, or within one gossip round) may grant the same free block to two holders with the same
//! stamp. Once they hear of each other every node keeps the lower admitter's grant; the other holder
//! sees [`crate::Output::BlockReleased`] and must stop using it (addresses it handed out meanwhile may
//! collide until then). Requests go to the lowest-id alive admitter, which keeps this window rare.
//! Must never: accept a grant that does not verify under the CA key, or hold more than [`MAX_GRANTS`].

use std::cmp::Reverse;
use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::attest::{self, AttestError, Signer};
use crate::catalog::{valid_name, NetworkDef};
use crate::identity::NodeId;

/// Domain string of block grants and releases (signed by the CA key).
pub const DOMAIN_BLOCK_GRANT: &[u8] = b"overlayd-block-grant/1";
/// Grant records held at most (all networks).
pub const MAX_GRANTS: usize = 1 << 17;
/// Blocks one holder may ask for in one network.
pub const MAX_BLOCKS_PER_HOLDER: u32 = 256;

/// A CA-signed "`block` of `network` belongs to `holder`" (or, `released`, no longer does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockGrant {
    pub network: String,
    pub block: IpNet,
    pub holder: NodeId,
    pub stamp: u64,
    pub released: bool,
    /// The admitter that signed it (orders concurrent grants).
    pub admitter: NodeId,
    pub ca_sig: Vec<u8>,
}

#[derive(Serialize)]
struct Signed<'a> {
    network: &'a str,
    block: IpNet,
    holder: NodeId,
    stamp: u64,
    released: bool,
    admitter: NodeId,
}

/// Rank of a grant record: the greatest is current.
pub type GrantRank = (u64, bool, Reverse<u64>, Reverse<u64>);

impl BlockGrant {
    fn signed_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(&Signed {
            network: &self.network,
            block: self.block,
            holder: self.holder,
            stamp: self.stamp,
            released: self.released,
            admitter: self.admitter,
        })
        .unwrap_or_default()
    }

    /// Sign with the CA key (admitters only).
    pub fn issue(
        ca: &Signer,
        network: &str,
        block: IpNet,
        holder: NodeId,
        stamp: u64,
        released: bool,
        admitter: NodeId,
    ) -> Result<Self, AttestError> {
        let mut g = BlockGrant {
            network: network.to_string(),
            block,
            holder,
            stamp,
            released,
            admitter,
            ca_sig: Vec::new(),
        };
        g.ca_sig = ca.sign(DOMAIN_BLOCK_GRANT, &g.signed_bytes())?;
        Ok(g)
    }

    pub fn well_formed(&self) -> bool {
        valid_name(&self.network) && self.block.trunc() == self.block
    }

    /// Well formed and signed by the CA.
    pub fn verify(&self, ca_key: &[u8]) -> bool {
        self.well_formed() && attest::verify(ca_key, DOMAIN_BLOCK_GRANT, &self.signed_bytes(), &self.ca_sig)
    }

    pub fn rank(&self) -> GrantRank {
        (
            self.stamp,
            self.released,
            Reverse(self.admitter.0),
            Reverse(self.holder.0),
        )
    }

    fn key(&self) -> (String, IpNet) {
        (self.network.clone(), self.block)
    }
}

/// Every grant record this node holds, one per (network, block).
#[derive(Debug, Default)]
pub struct Grants {
    by_key: BTreeMap<(String, IpNet), BlockGrant>,
}

impl Grants {
    /// Would `g` change state? (signature not checked here)
    pub fn admit(&self, g: &BlockGrant) -> bool {
        match self.by_key.get(&g.key()) {
            Some(old) => g.rank() > old.rank(),
            None => self.by_key.len() < MAX_GRANTS,
        }
    }

    /// Insert a grant the caller verified; false if not admissible.
    pub fn insert(&mut self, g: BlockGrant) -> bool {
        if !self.admit(&g) {
            return false;
        }
        self.by_key.insert(g.key(), g);
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = &BlockGrant> + '_ {
        self.by_key.values()
    }

    /// Current (not released) grants of `network`.
    pub fn live(&self, network: &str) -> impl Iterator<Item = &BlockGrant> + '_ {
        let network = network.to_string();
        self.by_key
            .values()
            .filter(move |g| g.network == network && !g.released)
    }

    /// Current grants to `holder` in `network` that are blocks of `def`.
    pub fn held(&self, def: &NetworkDef, holder: NodeId) -> Vec<IpNet> {
        self.live(&def.name)
            .filter(|g| g.holder == holder && def.has_block(&g.block))
            .map(|g| g.block)
            .collect()
    }

    /// Stamp for a new record of (network, block).
    pub fn next_stamp(&self, network: &str, block: IpNet) -> u64 {
        self.by_key
            .get(&(network.to_string(), block))
            .map_or(1, |g| g.stamp.saturating_add(1))
    }

    /// The lowest block of `def` that no current grant holds.
    pub fn first_free(&self, def: &NetworkDef) -> Option<IpNet> {
        def.blocks().find(|b| {
            self.by_key
                .get(&(def.name.clone(), *b))
                .map_or(true, |g| g.released)
        })
    }

    /// Summary for anti-entropy.
    pub fn digest(&self) -> u64 {
        let mut h = crate::sync::Fnv::new();
        for g in self.by_key.values() {
            h.write(&g.ca_sig);
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
    fn grants_verify_order_and_allocate() {
        let ca = signer();
        let rogue = signer();
        let d = NetworkDef::new("blue", 1, net("10.0.0.0/24"), None, false, None).unwrap();
        let mut g = Grants::default();
        assert_eq!(g.first_free(&d), Some(net("10.0.0.0/26")));
        let a = BlockGrant::issue(&ca, "blue", net("10.0.0.0/26"), NodeId(5), 1, false, NodeId(1)).unwrap();
        assert!(a.verify(&ca.public_key()));
        let forged =
            BlockGrant::issue(&rogue, "blue", net("10.0.0.0/26"), NodeId(6), 1, false, NodeId(1)).unwrap();
        assert!(!forged.verify(&ca.public_key()));
        let mut m = a.clone();
        m.holder = NodeId(6);
        assert!(!m.verify(&ca.public_key()));
        assert!(g.insert(a.clone()));
        assert_eq!(g.first_free(&d), Some(net("10.0.0.64/26")));
        assert_eq!(g.held(&d, NodeId(5)), vec![net("10.0.0.0/26")]);
        // A concurrent grant of the same block by a higher admitter loses, in any order.
        let b = BlockGrant::issue(&ca, "blue", net("10.0.0.0/26"), NodeId(7), 1, false, NodeId(2)).unwrap();
        assert!(!g.insert(b.clone()));
        let mut g2 = Grants::default();
        g2.insert(b);
        g2.insert(a);
        assert_eq!(g.digest(), g2.digest());
        // Release, then re-grant.
        let r = BlockGrant::issue(
            &ca,
            "blue",
            net("10.0.0.0/26"),
            NodeId(5),
            g.next_stamp("blue", net("10.0.0.0/26")),
            true,
            NodeId(1),
        )
        .unwrap();
        assert!(g.insert(r));
        assert!(g.held(&d, NodeId(5)).is_empty());
        assert_eq!(g.first_free(&d), Some(net("10.0.0.0/26")));
        // Full subnet: nothing free.
        for (i, b) in d.blocks().enumerate() {
            let s = g.next_stamp("blue", b);
            g.insert(BlockGrant::issue(&ca, "blue", b, NodeId(i as u64), s, false, NodeId(1)).unwrap());
        }
        assert_eq!(g.first_free(&d), None);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
                if let Ok(g) = postcard::from_bytes::<BlockGrant>(&bytes) {
                    let _ = g.verify(&[4; 65]);
                    let _ = g.rank();
                }
            }
        }
    }
}
