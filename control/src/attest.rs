//! Compact, self-verifying identity material for gossip: what lets any member check a claim about node X
//! with nothing but the cluster CA's public key, even when the claim was relayed by another member.
//!
//! - [`Attestation`]: the CA's signature over (node id, VTEP addresses, admitter flag, node public key).
//!   Issued by an admitter at admission, next to the X.509 certificate used for TLS. It is the gossip-sized
//!   equivalent of that certificate (~150 bytes instead of ~500), so it can ride inside every identity.
//! - [`Signer`]: a node's own key (the key of its TLS certificate), signing its own claims (identity,
//!   generation, FDB adverts, leave) under a per-purpose domain string.
//! - [`verify`]: check a node's signature against the public key its attestation names.
//!
//! Keys are ECDSA P-256 (the algorithm of the node certificates rcgen generates); signatures are the
//! fixed-width 64-byte form. Must never: accept a signature without its domain string (a signature made
//! for one purpose must not verify for another), panic on input, or log key material.

use std::fmt;
use std::net::IpAddr;

use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::{Deserialize, Serialize};

use crate::membership::NodeId;

/// Domain string of attestations (signed by the CA key).
pub const DOMAIN_ATTESTATION: &[u8] = b"overlayd-attestation/1";
/// Most VTEP addresses one attestation may name.
pub const MAX_VTEPS: usize = 4;
/// Length of an uncompressed P-256 public key and of a fixed-width P-256 signature.
pub const PUBLIC_KEY_LEN: usize = 65;
pub const SIGNATURE_LEN: usize = 64;

/// Why signing or verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    #[error("the key is not a PKCS#8 ECDSA P-256 key: {0} (the state dir's key file is corrupt; restore it or re-join the node)")]
    Key(String),
    #[error("signing failed (no randomness from the OS?)")]
    Sign,
    #[error("bad signature")]
    BadSignature,
    #[error("malformed attestation: {0}")]
    Malformed(&'static str),
}

/// A private P-256 key able to sign: the CA key (attestations, revocations) or a node key (own claims).
pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    /// From a PKCS#8 DER private key (what `rcgen::KeyPair::serialize_der` produces).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, AttestError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| AttestError::Key(e.to_string()))?;
        Ok(Signer { key, rng })
    }

    /// The uncompressed public point (65 bytes).
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// Sign `msg` for the purpose `domain`.
    pub fn sign(&self, domain: &[u8], msg: &[u8]) -> Result<Vec<u8>, AttestError> {
        let data = framed(domain, msg);
        self.key
            .sign(&self.rng, &data)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| AttestError::Sign)
    }
}

/// Domain-separated message: `len(domain) u8 || domain || msg`.
fn framed(domain: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + domain.len() + msg.len());
    v.push(domain.len().min(255) as u8);
    v.extend_from_slice(domain);
    v.extend_from_slice(msg);
    v
}

/// Does `sig` sign `msg` for `domain` under the P-256 `public_key`? Never panics.
pub fn verify(public_key: &[u8], domain: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    if public_key.len() != PUBLIC_KEY_LEN || sig.len() != SIGNATURE_LEN {
        return false;
    }
    let framed = framed(domain, msg);
    #[cfg(any(test, feature = "testing"))]
    if let Some(known) = memo::lookup(public_key, &framed, sig) {
        return known;
    }
    let ok = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key)
        .verify(&framed, sig)
        .is_ok();
    #[cfg(any(test, feature = "testing"))]
    memo::store(public_key, &framed, sig, ok);
    ok
}

/// The simulator's verification memo: N simulated nodes in one thread verify the same signatures N
/// times (every identity, every FDB entry), which makes a 1000-node run take hours. With the memo on
/// (only the simulator turns it on, for its own thread) a (key, message, signature) triple is verified
/// once and its result remembered; the result is the same by definition, so the simulation's behaviour
/// does not change. Not compiled into the daemon (feature `testing` only).
#[cfg(any(test, feature = "testing"))]
pub mod memo {
    use std::cell::RefCell;
    use std::collections::HashMap;

    thread_local! {
        static MEMO: RefCell<Option<HashMap<[u8; 32], bool>>> = const { RefCell::new(None) };
    }

    /// Turn the memo on for this thread (the simulator does, in [`crate::sim::Sim::new`]).
    pub fn enable() {
        MEMO.with(|m| {
            let mut m = m.borrow_mut();
            if m.is_none() {
                *m = Some(HashMap::new());
            }
        });
    }

    fn key(public_key: &[u8], framed: &[u8], sig: &[u8]) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [public_key, framed, sig] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part);
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(ctx.finish().as_ref());
        k
    }

    pub(super) fn lookup(public_key: &[u8], framed: &[u8], sig: &[u8]) -> Option<bool> {
        MEMO.with(|m| {
            let m = m.borrow();
            let m = m.as_ref()?;
            m.get(&key(public_key, framed, sig)).copied()
        })
    }

    pub(super) fn store(public_key: &[u8], framed: &[u8], sig: &[u8], ok: bool) {
        MEMO.with(|m| {
            if let Some(m) = m.borrow_mut().as_mut() {
                if m.len() >= 1 << 22 {
                    m.clear();
                }
                m.insert(key(public_key, framed, sig), ok);
            }
        });
    }
}

/// The public key inside a DER certificate (e.g. the CA's), if it is an uncompressed P-256 point.
pub fn certificate_public_key(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let key = cert.public_key().subject_public_key.data.to_vec();
    (key.len() == PUBLIC_KEY_LEN).then_some(key)
}

/// The CA's statement "node `node` owns `key`, may use `vteps`, and is (or is not) an admitter".
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attestation {
    pub node: NodeId,
    pub vteps: Vec<IpAddr>,
    pub admitter: bool,
    /// The node's public key (uncompressed P-256, the key of its TLS certificate).
    pub key: Vec<u8>,
    /// The CA's signature over the fields above (domain [`DOMAIN_ATTESTATION`]).
    pub ca_sig: Vec<u8>,
}

impl fmt::Debug for Attestation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Attestation {{ node: {}, vteps: {:?}, admitter: {} }}",
            self.node, self.vteps, self.admitter
        )
    }
}

#[derive(Serialize)]
struct AttestedFields<'a> {
    node: NodeId,
    vteps: &'a [IpAddr],
    admitter: bool,
    key: &'a [u8],
}

impl Attestation {
    fn signed_bytes(node: NodeId, vteps: &[IpAddr], admitter: bool, key: &[u8]) -> Vec<u8> {
        // postcard of plain fields cannot fail on a Vec sink.
        postcard::to_allocvec(&AttestedFields {
            node,
            vteps,
            admitter,
            key,
        })
        .unwrap_or_default()
    }

    /// Issue an attestation with the CA's `ca` signer (admitters only).
    pub fn issue(
        ca: &Signer,
        node: NodeId,
        vteps: Vec<IpAddr>,
        admitter: bool,
        key: Vec<u8>,
    ) -> Result<Self, AttestError> {
        if vteps.is_empty() || vteps.len() > MAX_VTEPS {
            return Err(AttestError::Malformed("1 to 4 VTEP addresses"));
        }
        if key.len() != PUBLIC_KEY_LEN {
            return Err(AttestError::Malformed(
                "node key is not an uncompressed P-256 point",
            ));
        }
        let ca_sig = ca.sign(
            DOMAIN_ATTESTATION,
            &Self::signed_bytes(node, &vteps, admitter, &key),
        )?;
        Ok(Attestation {
            node,
            vteps,
            admitter,
            key,
            ca_sig,
        })
    }

    /// Check the CA's signature against the CA public key (see [`certificate_public_key`]).
    pub fn verify(&self, ca_public_key: &[u8]) -> Result<(), AttestError> {
        if self.vteps.is_empty() || self.vteps.len() > MAX_VTEPS {
            return Err(AttestError::Malformed("1 to 4 VTEP addresses"));
        }
        let msg = Self::signed_bytes(self.node, &self.vteps, self.admitter, &self.key);
        if verify(ca_public_key, DOMAIN_ATTESTATION, &msg, &self.ca_sig) {
            Ok(())
        } else {
            Err(AttestError::BadSignature)
        }
    }

    /// Does `sig` sign `msg` for `domain` with the attested node's key?
    pub fn verify_node(&self, domain: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        verify(&self.key, domain, msg, sig)
    }

    /// May the node use `vtep`?
    pub fn allows_vtep(&self, vtep: IpAddr) -> bool {
        self.vteps.contains(&vtep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let kp = rcgen::KeyPair::generate().unwrap();
        Signer::from_pkcs8(&kp.serialize_der()).unwrap()
    }

    #[test]
    fn issue_verify_and_tamper() {
        let ca = signer();
        let node = signer();
        let vtep = IpAddr::from([10, 0, 0, 7]);
        let a = Attestation::issue(&ca, NodeId(7), vec![vtep], false, node.public_key()).unwrap();
        assert_eq!(a.verify(&ca.public_key()), Ok(()));
        assert!(a.allows_vtep(vtep));
        assert!(!a.allows_vtep(IpAddr::from([10, 0, 0, 8])));
        // Any changed field breaks the CA signature.
        let mut b = a.clone();
        b.node = NodeId(8);
        assert_eq!(b.verify(&ca.public_key()), Err(AttestError::BadSignature));
        let mut b = a.clone();
        b.vteps = vec![IpAddr::from([10, 0, 0, 9])];
        assert!(b.verify(&ca.public_key()).is_err());
        let mut b = a.clone();
        b.admitter = true;
        assert!(b.verify(&ca.public_key()).is_err());
        let mut b = a.clone();
        b.key = signer().public_key();
        assert!(b.verify(&ca.public_key()).is_err());
        // Another CA does not vouch for it.
        assert!(a.verify(&signer().public_key()).is_err());
        // Node signatures are domain-separated.
        let sig = node.sign(b"dom-a", b"msg").unwrap();
        assert!(a.verify_node(b"dom-a", b"msg", &sig));
        assert!(!a.verify_node(b"dom-b", b"msg", &sig));
        assert!(!a.verify_node(b"dom-a", b"msh", &sig));
    }

    #[test]
    fn garbage_never_verifies_or_panics() {
        let ca = signer();
        for len in [0, 1, 63, 64, 65, 200] {
            let junk = vec![0xa5; len];
            assert!(!verify(&junk, b"d", b"m", &junk));
            assert!(!verify(&ca.public_key(), b"d", b"m", &junk));
        }
        let a = Attestation {
            node: NodeId(1),
            vteps: vec![],
            admitter: false,
            key: vec![],
            ca_sig: vec![],
        };
        assert!(a.verify(&ca.public_key()).is_err());
    }

    #[test]
    fn ca_key_from_certificate() {
        let kp = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        let s = Signer::from_pkcs8(&kp.serialize_der()).unwrap();
        assert_eq!(certificate_public_key(cert.der()), Some(s.public_key()));
        assert_eq!(certificate_public_key(b"not a cert"), None);
    }

    /// What one P-256 verification and one signature cost on this machine (README "What formation costs
    /// this machine"): `cargo test --release -p control --lib signature_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: prints the cost, asserts only that the signatures verify"]
    fn signature_cost() {
        let s = signer();
        let (pk, n) = (s.public_key(), 2000u32);
        let sig = s.sign(b"domain", b"message").unwrap();
        let t = std::time::Instant::now();
        for _ in 0..n {
            assert!(verify(&pk, b"domain", b"message", &sig));
        }
        let per_verify = t.elapsed() / n;
        let t = std::time::Instant::now();
        for _ in 0..n {
            assert!(!s.sign(b"domain", b"message").unwrap().is_empty());
        }
        eprintln!("P-256: verify {per_verify:?}, sign {:?}", t.elapsed() / n);
    }
}
