//! Fixtures of the simulator: test keys, node addresses, MACs and VNIs, and SWIM packets built by hand
//! (with chosen identities, updates and broadcasts) for tests in which a node acts as a rogue.

use std::net::SocketAddr;

use foca::{Codec, Header, Member, Message, PostcardCodec};

use crate::attest::Signer;
use crate::membership::NodeIdentity;
use crate::messages;
use crate::{MacAddr, Vni};

/// The VNI [`super::Sim::set_macs`] advertises on (and that [`super::SimNode::fdb`] mirrors).
pub const SIM_VNI: u32 = 1;

/// [`SIM_VNI`] as a data-plane VNI.
pub fn sim_vni() -> Vni {
    vni(SIM_VNI)
}

/// A data-plane VNI for tests (panics if out of range).
pub fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap_or_else(|e| panic!("vni {v}: {e}"))
}

/// A fresh P-256 signer (test keys).
pub fn new_signer() -> Signer {
    let kp = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("keygen: {e}"));
    Signer::from_pkcs8(&kp.serialize_der()).unwrap_or_else(|e| panic!("key: {e}"))
}

/// A SWIM packet (with envelope) as foca would send it: header, membership updates, custom broadcasts.
pub fn swim_packet(
    src: &NodeIdentity,
    dst: &NodeIdentity,
    message: Message<NodeIdentity>,
    updates: &[Member<NodeIdentity>],
    broadcasts: &[messages::Broadcast],
) -> Vec<u8> {
    let mut buf = Vec::new();
    let header = Header {
        src: src.clone(),
        src_incarnation: 0,
        dst: dst.clone(),
        message,
    };
    let announce = matches!(header.message, Message::Announce);
    let _ = PostcardCodec.encode_header(&header, &mut buf);
    if announce {
        // foca's Announce is the header alone.
        return messages::encode_swim(&buf);
    }
    buf.extend_from_slice(&(updates.len() as u16).to_be_bytes());
    for m in updates {
        let _ = PostcardCodec.encode_member(m, &mut buf);
    }
    for b in broadcasts {
        let item = messages::encode_broadcast(b).unwrap_or_default();
        buf.extend_from_slice(&(item.len() as u16).to_be_bytes());
        buf.extend_from_slice(&item);
    }
    messages::encode_swim(&buf)
}

/// A locally administered unicast MAC for node `i`, entry `k`.
pub fn mac(i: usize, k: u8) -> MacAddr {
    MacAddr([0x02, 0, (i >> 8) as u8, i as u8, 0, k])
}

/// Node `i`'s gossip address.
pub(super) fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from((
        [10, 0, (i / 250) as u8, (i % 250 + 1) as u8],
        crate::DEFAULT_GOSSIP_PORT,
    ))
}
