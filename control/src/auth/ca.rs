//! The cluster CA: generated at `--init-cluster`, loaded from PEM on admitters, issues node certificates.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, SubjectPublicKeyInfo,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::token::{fingerprint, hex};
use super::{AuthError, CA_KEY, CLUSTER_SERVER_NAME};
use crate::attest::Signer;
use crate::membership::NodeId;

/// The cluster CA, able to issue node certificates.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    pub(super) key_pem: String,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterCa {{ fingerprint: {} }}", hex(&self.fingerprint()))
    }
}

impl ClusterCa {
    pub fn generate() -> Result<Self, AuthError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "overlayd cluster CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Self::from_pem(&cert_pem, &key_pem, Path::new("<generated>"))
    }

    /// The CA from its certificate and private key (PEM); `path` names the key in errors.
    pub fn from_pem(cert_pem: &str, key_pem: &str, path: &Path) -> Result<Self, AuthError> {
        let corrupt = |reason: String| AuthError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let key = KeyPair::from_pem(key_pem).map_err(|e| corrupt(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| corrupt(e.to_string()))?;
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| corrupt(e.to_string()))?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer,
            key_pem: key_pem.to_string(),
        })
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.cert_der)
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key as an attestation [`Signer`].
    pub fn signer(&self) -> Result<Signer, AuthError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| AuthError::Corrupt {
            path: PathBuf::from(CA_KEY),
            reason: e.to_string(),
        })?;
        Ok(Signer::from_pkcs8(&key.serialize_der())?)
    }

    /// Sign a node certificate for `node` over the joiner's public key (SubjectPublicKeyInfo DER), naming
    /// the VTEP addresses it may use as SAN IP entries.
    pub fn issue(&self, node: NodeId, spki_der: &[u8], vteps: &[IpAddr]) -> Result<String, AuthError> {
        let spki = SubjectPublicKeyInfo::from_der(spki_der)?;
        let mut params = CertificateParams::new(vec![
            CLUSTER_SERVER_NAME.to_string(),
            format!("node-{node}.overlayd"),
        ])?;
        params
            .subject_alt_names
            .extend(vteps.iter().map(|ip| SanType::IpAddress(*ip)));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("overlayd node {node}"));
        params.distinguished_name = dn;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        Ok(params.signed_by(&spki, &self.issuer)?.pem())
    }
}
