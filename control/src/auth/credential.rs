//! This node's credential (key, certificate chain, attestation), a joiner's pending key, and decoding of
//! what a credential carries (the stored attestation, the node id in a certificate).

use std::fmt;
use std::path::PathBuf;

use rcgen::KeyPair;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::token::{fingerprint, hex};
use super::{AuthError, CA_CERT};
use crate::attest::{self, Attestation, Signer};
use crate::membership::NodeId;

/// This node's credential, ready for rustls.
pub struct NodeCredential {
    pub node_id: NodeId,
    /// [node certificate, CA certificate]: the CA travels in the chain so a joiner can pin it by fingerprint.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub ca: CertificateDer<'static>,
    /// The CA's statement about this node (id, VTEPs, admitter flag, public key).
    pub attestation: Attestation,
}

impl fmt::Debug for NodeCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NodeCredential {{ node_id: {}, ca: {} }}",
            self.node_id,
            hex(&fingerprint(&self.ca))
        )
    }
}

impl Clone for NodeCredential {
    fn clone(&self) -> Self {
        NodeCredential {
            node_id: self.node_id,
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            ca: self.ca.clone(),
            attestation: self.attestation.clone(),
        }
    }
}

/// A fresh node key pair; the public half goes to the issuing member.
#[derive(Debug)]
pub struct PendingKey {
    pub(super) key: KeyPair,
}

impl PendingKey {
    pub fn generate() -> Result<Self, AuthError> {
        Ok(PendingKey {
            key: KeyPair::generate()?,
        })
    }
    pub fn spki_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.key)
    }
    /// The uncompressed P-256 point (what an [`Attestation`] names).
    pub fn public_key_raw(&self) -> Vec<u8> {
        self.key.public_key_raw().to_vec()
    }
}

impl NodeCredential {
    /// This node's own key as a signer of its gossip claims.
    pub fn signer(&self) -> Result<Signer, AuthError> {
        Ok(Signer::from_pkcs8(self.key.secret_der())?)
    }

    /// The cluster CA's public key (what every attestation and revocation is checked against).
    pub fn ca_public_key(&self) -> Result<Vec<u8>, AuthError> {
        attest::certificate_public_key(&self.ca).ok_or_else(|| AuthError::Corrupt {
            path: PathBuf::from(CA_CERT),
            reason: "the CA certificate's key is not an ECDSA P-256 key".into(),
        })
    }
}

pub(super) fn encode_attestation(a: &Attestation) -> Vec<u8> {
    // postcard of plain fields cannot fail on a Vec sink.
    postcard::to_allocvec(a).unwrap_or_default()
}

/// Decode a stored attestation; `None` on garbage or trailing bytes. Never panics.
pub fn decode_attestation(bytes: &[u8]) -> Option<Attestation> {
    match postcard::take_from_bytes::<Attestation>(bytes) {
        Ok((a, [])) => Some(a),
        _ => None,
    }
}

/// Read the node id out of a node certificate's SAN (`node-<id>.overlayd`). None if the certificate
/// does not parse or carries no such name.
pub fn node_id_from_cert(der: &[u8]) -> Option<NodeId> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::DNSName(name) => name
            .strip_prefix("node-")
            .and_then(|r| r.strip_suffix(".overlayd"))
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .map(NodeId),
        _ => None,
    })
}
