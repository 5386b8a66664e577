//! Who a member is, and how anyone can check it: [`NodeId`], the signed [`NodeIdentity`] SWIM gossips,
//! the [`Verifier`] that checks identities (CA attestation, the node's own signature, VTEP and gossip
//! address bound to the attestation, not revoked) and [`VerifyingCodec`], the foca codec that refuses to
//! decode an identity that does not verify — so a forged identity never reaches foca's member table.
//!
//! What is signed: the node signs (id, gossip address, VTEP, generation) with the key its attestation
//! names. `renewal` (bumped by foca when a run was wrongly declared down) is not signed: a member can
//! replay a node's valid identity with a higher renewal, which other members treat as the same run
//! (same id, address, VTEP and generation, so the FDB is unaffected); the effect is that of a SWIM
//! suspicion (the victim refutes or renews), listed as a residual DoS in docs/SECURITY.md.
//! Must never: let an unverified identity out of the codec (except the join placeholder, only as a
//! packet's destination), or re-verify a cached identity (verifications are cached by SHA-256).

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use foca::{Codec, Header, Member, Message, PostcardCodec, State};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::attest::{AttestError, Attestation, Signer};

/// Domain string of a node's signature over its own identity.
pub const DOMAIN_IDENTITY: &[u8] = b"overlayd-identity/1";

/// Stable node identifier (derived from the node credential; constant across restarts).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for NodeId {
    type Err = std::num::ParseIntError;
    /// The hex form `peers --json` prints.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s.trim(), 16).map(NodeId)
    }
}

/// The CA's attestation of a node plus the node's signature over its identity fields.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdentityProof {
    pub attestation: Attestation,
    pub sig: Vec<u8>,
}

impl fmt::Debug for IdentityProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.attestation)
    }
}

/// A member as SWIM sees it. foca keys members by [`foca::Identity::addr`] (the gossip address) so a
/// joiner can announce itself to an address without knowing who listens there; two identities with the
/// same address are the same node at different times and the newer (generation, renewal) wins.
///
/// Equality and hashing ignore `proof`: the proof is evidence for the fields, not part of the name (ECDSA
/// signatures are randomised, so one run's identity signed twice differs only there). Every identity
/// that enters foca's member table has had its proof checked by [`VerifyingCodec`]; a packet's
/// destination needs none, since foca only compares it with the receiver's own identity.
#[derive(Clone, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub vtep: IpAddr,
    /// One per daemon start (the daemon uses wall-clock milliseconds at start or a persisted counter);
    /// anything about an older generation of the same node is ignored.
    pub generation: u64,
    /// Bumped by [`foca::Identity::renew`] when this run was wrongly declared down; not a new generation:
    /// the FDB state of the run is unchanged. Not signed (see the module comment).
    pub renewal: u32,
    /// `None` only for the join placeholder. Shared: foca clones identities often.
    #[serde(serialize_with = "ser_proof", deserialize_with = "de_proof")]
    pub proof: Option<Arc<IdentityProof>>,
}

impl PartialEq for NodeIdentity {
    fn eq(&self, o: &Self) -> bool {
        (self.id, self.addr, self.vtep, self.generation, self.renewal)
            == (o.id, o.addr, o.vtep, o.generation, o.renewal)
    }
}

impl Eq for NodeIdentity {}

impl std::hash::Hash for NodeIdentity {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (self.id, self.addr, self.vtep, self.generation, self.renewal).hash(h);
    }
}

fn ser_proof<S: Serializer>(p: &Option<Arc<IdentityProof>>, s: S) -> Result<S::Ok, S::Error> {
    p.as_deref().serialize(s)
}

fn de_proof<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<IdentityProof>>, D::Error> {
    Ok(Option::<IdentityProof>::deserialize(d)?.map(Arc::new))
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}/g{}.{}",
            self.id, self.addr, self.generation, self.renewal
        )
    }
}

#[derive(Serialize)]
struct SignedIdentityFields {
    id: NodeId,
    addr: SocketAddr,
    vtep: IpAddr,
    generation: u64,
}

fn identity_bytes(id: NodeId, addr: SocketAddr, vtep: IpAddr, generation: u64) -> Vec<u8> {
    postcard::to_allocvec(&SignedIdentityFields {
        id,
        addr,
        vtep,
        generation,
    })
    .unwrap_or_default()
}

impl NodeIdentity {
    /// This node's identity for one run, signed with its own key.
    pub fn signed(
        addr: SocketAddr,
        vtep: IpAddr,
        generation: u64,
        attestation: Attestation,
        signer: &Signer,
    ) -> Result<Self, AttestError> {
        let id = attestation.node;
        let sig = signer.sign(DOMAIN_IDENTITY, &identity_bytes(id, addr, vtep, generation))?;
        Ok(NodeIdentity {
            id,
            addr,
            vtep,
            generation,
            renewal: 0,
            proof: Some(Arc::new(IdentityProof { attestation, sig })),
        })
    }

    /// Placeholder for "whoever listens at `addr`", used only as the destination of a join announce:
    /// foca accepts an Announce whose destination has the receiver's address.
    pub(crate) fn placeholder(addr: SocketAddr) -> Self {
        NodeIdentity {
            id: NodeId(0),
            addr,
            vtep: IpAddr::from([0, 0, 0, 0]),
            generation: 0,
            renewal: 0,
            proof: None,
        }
    }

    /// The attestation, if this is not a placeholder.
    pub fn attestation(&self) -> Option<&Attestation> {
        self.proof.as_deref().map(|p| &p.attestation)
    }

    /// Does `sig` sign `msg` for `domain` with this node's attested key?
    pub fn verify_own(&self, domain: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        self.attestation()
            .is_some_and(|a| a.verify_node(domain, msg, sig))
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeIdentity {
            renewal: self.renewal.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, self.renewal, self.id) > (adversary.generation, adversary.renewal, adversary.id)
    }
}

/// Why an identity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity carries no attestation")]
    Unattested,
    #[error("attestation not signed by this cluster's CA")]
    BadAttestation,
    #[error("identity id does not match its attestation")]
    WrongId,
    #[error("VTEP or gossip address not named in the attestation")]
    WrongAddress,
    #[error("identity signature invalid")]
    BadSignature,
    #[error("node {0} is revoked")]
    Revoked(NodeId),
}

/// Most cached verifications before the cache is cleared (≈ 32 B each; a 1000-node cluster with a few
/// renewals each fits many times).
const MAX_CACHED: usize = 16 * 1024;

/// Checks identities against the CA and the revocation list; shared by the codec and the node.
#[derive(Debug)]
pub struct Verifier {
    ca_key: Vec<u8>,
    revoked: HashSet<NodeId>,
    good: HashSet<[u8; 32]>,
    /// Full ECDSA verifications done (the rest were cache hits); for tests and stats.
    pub verifications: u64,
    /// Identities refused.
    pub refused: u64,
}

impl Verifier {
    pub fn new(ca_key: Vec<u8>) -> Self {
        Verifier {
            ca_key,
            revoked: HashSet::new(),
            good: HashSet::new(),
            verifications: 0,
            refused: 0,
        }
    }

    pub fn ca_key(&self) -> &[u8] {
        &self.ca_key
    }

    pub fn revoke(&mut self, id: NodeId) {
        self.revoked.insert(id);
    }

    pub fn is_revoked(&self, id: NodeId) -> bool {
        self.revoked.contains(&id)
    }

    /// Full check of a (non-placeholder) identity; cached on success.
    pub fn check(&mut self, ident: &NodeIdentity) -> Result<(), IdentityError> {
        let r = self.check_inner(ident);
        if r.is_err() {
            self.refused += 1;
        }
        r
    }

    fn check_inner(&mut self, ident: &NodeIdentity) -> Result<(), IdentityError> {
        if self.revoked.contains(&ident.id) {
            return Err(IdentityError::Revoked(ident.id));
        }
        let proof = ident.proof.as_deref().ok_or(IdentityError::Unattested)?;
        let key = cache_key(ident, proof);
        if self.good.contains(&key) {
            return Ok(());
        }
        let a = &proof.attestation;
        if a.node != ident.id {
            return Err(IdentityError::WrongId);
        }
        if !a.allows_vtep(ident.vtep) || !a.allows_vtep(ident.addr.ip()) {
            return Err(IdentityError::WrongAddress);
        }
        self.verifications += 1;
        a.verify(&self.ca_key)
            .map_err(|_| IdentityError::BadAttestation)?;
        let msg = identity_bytes(ident.id, ident.addr, ident.vtep, ident.generation);
        if !a.verify_node(DOMAIN_IDENTITY, &msg, &proof.sig) {
            return Err(IdentityError::BadSignature);
        }
        if self.good.len() >= MAX_CACHED {
            self.good.clear();
        }
        self.good.insert(key);
        Ok(())
    }
}

/// SHA-256 over everything the check depends on (renewal excluded: it is not signed).
fn cache_key(ident: &NodeIdentity, proof: &IdentityProof) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&identity_bytes(
        ident.id,
        ident.addr,
        ident.vtep,
        ident.generation,
    ));
    ctx.update(&postcard::to_allocvec(proof).unwrap_or_default());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Errors of [`VerifyingCodec`].
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Postcard(#[from] postcard::Error),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// foca's postcard codec plus identity verification on decode: the sender, every identity named in the
/// message and every membership update must verify; the destination may also be the join placeholder.
/// An update about a revoked node is turned into "down" rather than refused, so packets from members
/// that have not heard of the revocation yet still deliver their other updates (and broadcasts).
#[derive(Debug, Clone)]
pub struct VerifyingCodec {
    pub verifier: Arc<Mutex<Verifier>>,
}

impl VerifyingCodec {
    fn check(&self, ident: &NodeIdentity) -> Result<(), IdentityError> {
        let mut v = self.verifier.lock().unwrap_or_else(|e| e.into_inner());
        v.check(ident)
    }
}

impl Codec<NodeIdentity> for VerifyingCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<NodeIdentity>,
        buf: impl bytes::BufMut,
    ) -> Result<(), CodecError> {
        Ok(PostcardCodec.encode_header(header, buf)?)
    }

    fn decode_header(&mut self, buf: impl bytes::Buf) -> Result<Header<NodeIdentity>, CodecError> {
        let header: Header<NodeIdentity> = PostcardCodec.decode_header(buf)?;
        self.check(&header.src)?;
        if header.dst.proof.is_some() {
            self.check(&header.dst)?;
        }
        match &header.message {
            Message::PingReq { target: x, .. }
            | Message::IndirectPing { origin: x, .. }
            | Message::IndirectAck { target: x, .. }
            | Message::ForwardedAck { origin: x, .. } => self.check(x)?,
            _ => {}
        }
        Ok(header)
    }

    fn encode_member(
        &mut self,
        member: &Member<NodeIdentity>,
        buf: impl bytes::BufMut,
    ) -> Result<(), CodecError> {
        Ok(PostcardCodec.encode_member(member, buf)?)
    }

    fn decode_member(&mut self, buf: impl bytes::Buf) -> Result<Member<NodeIdentity>, CodecError> {
        let member: Member<NodeIdentity> = PostcardCodec.decode_member(buf)?;
        match self.check(member.id()) {
            Ok(()) => Ok(member),
            Err(IdentityError::Revoked(_)) => Ok(Member::new(
                member.id().clone(),
                member.incarnation(),
                State::Down,
            )),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn signer() -> Signer {
        let kp = rcgen::KeyPair::generate().unwrap();
        Signer::from_pkcs8(&kp.serialize_der()).unwrap()
    }

    pub(crate) fn ident(ca: &Signer, node: &Signer, id: u64, n: u8, generation: u64) -> NodeIdentity {
        let vtep = IpAddr::from([10, 0, 0, n]);
        let a = Attestation::issue(ca, NodeId(id), vec![vtep], false, node.public_key()).unwrap();
        NodeIdentity::signed(SocketAddr::new(vtep, 7948), vtep, generation, a, node).unwrap()
    }

    #[test]
    fn verifies_and_caches() {
        let ca = signer();
        let k = signer();
        let mut v = Verifier::new(ca.public_key());
        let i = ident(&ca, &k, 7, 7, 1);
        assert_eq!(v.check(&i), Ok(()));
        assert_eq!(v.check(&i), Ok(()));
        assert_eq!(v.verifications, 1, "second check is a cache hit");
        // Renewal is not signed: still valid, still cached.
        let mut r = i.clone();
        r.renewal = 5;
        assert_eq!(v.check(&r), Ok(()));
        assert_eq!(v.verifications, 1);
    }

    #[test]
    fn forgeries_refused() {
        let ca = signer();
        let k = signer();
        let mut v = Verifier::new(ca.public_key());
        let i = ident(&ca, &k, 7, 7, 1);
        let mut x = i.clone();
        x.generation = 2;
        assert_eq!(v.check(&x), Err(IdentityError::BadSignature));
        let mut x = i.clone();
        x.vtep = IpAddr::from([10, 0, 0, 8]);
        assert_eq!(v.check(&x), Err(IdentityError::WrongAddress));
        let mut x = i.clone();
        x.addr = SocketAddr::from(([10, 0, 0, 9], 7948));
        assert_eq!(v.check(&x), Err(IdentityError::WrongAddress));
        let mut x = i.clone();
        x.id = NodeId(8);
        assert_eq!(v.check(&x), Err(IdentityError::WrongId));
        assert_eq!(
            v.check(&NodeIdentity::placeholder(i.addr)),
            Err(IdentityError::Unattested)
        );
        // Signed by its own key but attested by another CA.
        let other = signer();
        let y = ident(&other, &k, 7, 7, 1);
        assert_eq!(v.check(&y), Err(IdentityError::BadAttestation));
        // Another node's attestation with the wrong key's signature.
        let k2 = signer();
        let a = i.attestation().unwrap().clone();
        let z = NodeIdentity::signed(i.addr, i.vtep, 3, a, &k2).unwrap();
        assert_eq!(v.check(&z), Err(IdentityError::BadSignature));
        v.revoke(NodeId(7));
        assert_eq!(v.check(&i), Err(IdentityError::Revoked(NodeId(7))));
    }

    #[test]
    fn serde_roundtrip_and_garbage() {
        let ca = signer();
        let i = ident(&ca, &signer(), 7, 7, 1);
        let b = postcard::to_allocvec(&i).unwrap();
        let back: NodeIdentity = postcard::from_bytes(&b).unwrap();
        assert_eq!(back, i);
        for n in 0..b.len() {
            assert!(postcard::from_bytes::<NodeIdentity>(&b[..n]).is_err());
        }
        for k in 0..b.len() {
            let mut c = b.clone();
            c[k] ^= 0x41;
            if let Ok(x) = postcard::from_bytes::<NodeIdentity>(&c) {
                let mut v = Verifier::new(ca.public_key());
                // A flipped byte either changes nothing that is checked (e.g. renewal) or fails.
                if x.renewal == i.renewal {
                    assert!((x == i && x.proof == i.proof) || v.check(&x).is_err(), "byte {k}");
                }
            }
        }
        println!("identity: {} bytes on the wire", b.len());
    }
}
